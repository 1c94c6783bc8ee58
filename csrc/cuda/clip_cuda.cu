// CUDA kernel of wgan_ext::clip_ and clip_count_: one multi-tensor launch per dtype (more only when the list is
// longer than one launch's argument struct holds), one read and one write per element.
//
// Each block clamps one chunk of one tensor: an aligned path that moves 16-byte vectors with 4 vectors in flight per
// thread, and a scalar path for the tail and for chunks whose start is not 16-byte aligned (views at odd offsets).
// The per-element math is csrc/ops/clip_math.h, the same code the CPU kernel runs (float16/bfloat16 on their bits).

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "../ops/clip.h"
#include "multi_tensor_apply.cuh"

namespace wgan_ext {
namespace {

constexpr int kVecBytes = 16;
constexpr int kIlp = 4;

template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T val[N];
};

template <bool kCount, typename storage_t, typename Clamp>
struct ClampFunctor {
  __device__ __forceinline__ void operator()(void* data, int64_t start, int n, int32_t index, Clamp clamp,
                                             unsigned long long* counts) const {
    storage_t* p = static_cast<storage_t*>(data) + start;
    unsigned long long count = 0;
    int scalar_from = 0;
    if (reinterpret_cast<uintptr_t>(p) % kVecBytes == 0) {
      constexpr int kVec = kVecBytes / sizeof(storage_t);
      using V = Vec<storage_t, kVec>;
      V* pv = reinterpret_cast<V*>(p);
      const int nvec = n / kVec;
      for (int base = threadIdx.x; base < nvec; base += blockDim.x * kIlp) {
        V v[kIlp];
#pragma unroll
        for (int j = 0; j < kIlp; ++j) {
          const int i = base + j * blockDim.x;
          if (i < nvec) v[j] = pv[i];
        }
#pragma unroll
        for (int j = 0; j < kIlp; ++j) {
          const int i = base + j * blockDim.x;
          if (i < nvec) {
#pragma unroll
            for (int k = 0; k < kVec; ++k) {
              if (kCount) count += clamp.at_bound(v[j].val[k]) ? 1 : 0;
              v[j].val[k] = clamp(v[j].val[k]);
            }
            pv[i] = v[j];
          }
        }
      }
      scalar_from = nvec * kVec;
    }
    for (int i = scalar_from + threadIdx.x; i < n; i += blockDim.x) {
      const storage_t x = p[i];
      if (kCount) count += clamp.at_bound(x) ? 1 : 0;
      p[i] = clamp(x);
    }
    if (kCount) block_add(count, counts + index);
  }

  // Sums `count` over the block and adds it to *out with one atomic per block.
  __device__ __forceinline__ static void block_add(unsigned long long count, unsigned long long* out) {
    __shared__ unsigned long long warp_sums[mta::kBlockSize / 32];
    for (int offset = 16; offset > 0; offset /= 2) count += __shfl_down_sync(0xffffffffu, count, offset);
    const int lane = threadIdx.x % 32;
    const int warp = threadIdx.x / 32;
    if (lane == 0) warp_sums[warp] = count;
    __syncthreads();
    if (warp == 0) {
      count = lane < static_cast<int>(blockDim.x / 32) ? warp_sums[lane] : 0;
      for (int offset = 16; offset > 0; offset /= 2) count += __shfl_down_sync(0xffffffffu, count, offset);
      if (lane == 0 && count > 0) atomicAdd(out, count);
    }
  }
};

template <bool kCount, typename storage_t, typename Clamp>
void launch_clamp(cudaStream_t stream, const std::vector<mta::Item>& items, const Clamp& clamp,
                  unsigned long long* counts) {
  mta::multi_tensor_apply(stream, items, ClampFunctor<kCount, storage_t, Clamp>{}, clamp, counts);
}

template <bool kCount>
void clip_cuda_impl(const Tensors& tensors, double min, double max, Tensor* counts) {
  check_clip_args(tensors, min, max, DeviceType::CUDA);
  if (tensors.empty()) return;
  const DeviceGuard guard(tensors[0].get_device_index());
  const cudaStream_t stream = current_stream(tensors[0]);
  const DenseViews dense(tensors);
  const ClampSet clamps(dense, min, max);
  if (kCount) {
    STD_CUDA_CHECK(cudaMemsetAsync(counts->data_ptr(), 0, sizeof(int64_t) * tensors.size(), stream));
  }

  // One multi-tensor apply per dtype present in the list.
  const std::array<ScalarType, 4> dtypes = {kFloat, kDouble, kHalf, kBFloat16};
  for (const ScalarType dtype : dtypes) {
    std::vector<mta::Item> items;
    for (size_t i = 0; i < dense.flat.size(); ++i) {
      const DenseViews::Flat& t = dense.flat[i];
      if (t.dtype == dtype && t.numel > 0) items.push_back({t.data, t.numel, static_cast<int32_t>(i)});
    }
    if (items.empty()) continue;
    unsigned long long* out = kCount ? static_cast<unsigned long long*>(counts->data_ptr()) : nullptr;
    switch (dtype) {
      case kFloat: launch_clamp<kCount, float>(stream, items, clamps.f32, out); break;
      case kDouble: launch_clamp<kCount, double>(stream, items, clamps.f64, out); break;
      case kHalf: launch_clamp<kCount, uint16_t>(stream, items, clamps.f16, out); break;
      default: launch_clamp<kCount, uint16_t>(stream, items, clamps.bf16, out); break;
    }
  }
  dense.write_back(tensors);
}

// The planned pass (clip_plan in csrc/ops/clip.h): block b clamps row b of the plan, which it reads from device
// memory, so one launch covers every tensor whatever their number and dtypes. A row that breaks the plan's rules
// (which the host cannot check without reading the plan back) is skipped; every thread of a block reads the same
// row, so the block returns or works as a whole (the count's block reduction needs all its threads).
template <bool kCount>
__global__ void __launch_bounds__(mta::kBlockSize) clip_plan_kernel(const int64_t* __restrict__ plan,
                                                                    int64_t num_tensors, int64_t dtypes,
                                                                    ClampSet clamps, unsigned long long* counts) {
  const int64_t* r = plan + static_cast<int64_t>(blockIdx.x) * clip_plan::kCols;
  void* data = reinterpret_cast<void*>(static_cast<uintptr_t>(r[0]));
  const int64_t n = r[1], index = r[2], code = r[3];
  if (n < 1 || n > mta::kChunkSize || index < 0 || index >= num_tensors || code < 0 || code > 3 ||
      !((dtypes >> code) & 1)) {
    return;
  }
  const int32_t i = static_cast<int32_t>(index);
  const int count = static_cast<int>(n);
  switch (code) {
    case 0: ClampFunctor<kCount, float, clip_math::ValueClamp<float>>{}(data, 0, count, i, clamps.f32, counts); break;
    case 1: ClampFunctor<kCount, double, clip_math::ValueClamp<double>>{}(data, 0, count, i, clamps.f64, counts); break;
    case 2: ClampFunctor<kCount, uint16_t, clip_math::Bits16Clamp>{}(data, 0, count, i, clamps.f16, counts); break;
    default: ClampFunctor<kCount, uint16_t, clip_math::Bits16Clamp>{}(data, 0, count, i, clamps.bf16, counts); break;
  }
}

template <bool kCount>
void clip_planned_cuda_impl(const Tensor& plan, int64_t num_tensors, int64_t dtypes, double min, double max,
                            Tensor* counts) {
  clip_plan::check(plan, num_tensors, dtypes, mta::kChunkSize, DeviceType::CUDA);
  const ClampSet clamps(dtypes, min, max);  // bounds checked before anything is written
  const DeviceGuard guard(plan.get_device_index());
  const cudaStream_t stream = current_stream(plan);
  unsigned long long* out = nullptr;
  if (kCount) {
    out = static_cast<unsigned long long*>(counts->data_ptr());
    if (num_tensors > 0) STD_CUDA_CHECK(cudaMemsetAsync(out, 0, sizeof(int64_t) * num_tensors, stream));
  }
  const int64_t rows = plan.size(0);
  WGAN_CHECK(rows <= 0x7fffffff, "wgan_ext::_clip_planned_: a plan of ", rows, " rows is more than one launch holds");
  if (rows == 0) return;
  clip_plan_kernel<kCount><<<static_cast<unsigned>(rows), mta::kBlockSize, 0, stream>>>(
      plan.const_data_ptr<int64_t>(), num_tensors, dtypes, clamps, out);
  WGAN_CUDA_LAUNCH_CHECK();
}

Tensor clip_plan_cuda(Tensors tensors) { return clip_plan::make(tensors, mta::kChunkSize, DeviceType::CUDA); }

void clip_planned_cuda(Tensor plan, int64_t num_tensors, int64_t dtypes, double min, double max) {
  clip_planned_cuda_impl<false>(plan, num_tensors, dtypes, min, max, nullptr);
}

Tensor clip_count_planned_cuda(Tensor plan, int64_t num_tensors, int64_t dtypes, double min, double max) {
  WGAN_CHECK(num_tensors >= 0, "wgan_ext::_clip_count_planned_: num_tensors must be >= 0, got ", num_tensors);
  Tensor counts = new_empty(plan, {num_tensors}, kLong);  // zeroed on the stream
  clip_planned_cuda_impl<true>(plan, num_tensors, dtypes, min, max, &counts);
  return counts;
}

void clip_cuda(Tensors tensors, double min, double max) {
  clip_cuda_impl<false>(tensors, min, max, nullptr);
}

Tensor clip_count_cuda(Tensors tensors, double min, double max) {
  WGAN_CHECK(!tensors.empty(), "wgan_ext::clip_count_: needs at least one tensor");
  Tensor counts = new_empty(tensors[0], {static_cast<int64_t>(tensors.size())}, kLong);  // zeroed on the stream
  clip_cuda_impl<true>(tensors, min, max, &counts);
  return counts;
}

}  // namespace

#define WGAN_STR_(...) #__VA_ARGS__
#define WGAN_STR(...) WGAN_STR_(__VA_ARGS__)

// What this CUDA translation unit was compiled for, from nvcc's own macros (reported by python -m wgan_ext.info).
std::string cuda_build_info() {
  std::string info = "cuda_runtime=" + std::to_string(CUDART_VERSION / 1000) + "." +
                     std::to_string((CUDART_VERSION % 1000) / 10);
#ifdef __CUDA_ARCH_LIST__
  info += ";cuda_archs=" WGAN_STR(__CUDA_ARCH_LIST__);
#endif
  return info;
}

STABLE_TORCH_LIBRARY_IMPL(wgan_ext, CUDA, m) {
  m.impl("clip_", TORCH_BOX(&clip_cuda));
  m.impl("clip_count_", TORCH_BOX(&clip_count_cuda));
  m.impl("_clip_plan", TORCH_BOX(&clip_plan_cuda));
  m.impl("_clip_planned_", TORCH_BOX(&clip_planned_cuda));
  m.impl("_clip_count_planned_", TORCH_BOX(&clip_count_planned_cuda));
}

}  // namespace wgan_ext
