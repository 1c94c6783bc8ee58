// CUDA kernels of wgan_ext::rmsprop_clip_step_ and adam_clip_step_: one multi-tensor launch per dtype (more only
// when the list is longer than one launch's argument struct holds). Each element of param, grad and state is read
// once and param and state written once, where torch's RMSprop(foreach=True) + two foreach clamps make 7 passes.
//
// Each block updates one chunk of one tensor; every thread keeps kIlp elements in flight, loads first, then math and
// stores (coalesced scalar accesses, as ATen's unaligned multi-tensor path). The per-element math is
// csrc/ops/fused_optim_math.h, the same code the CPU kernel runs, in float32 for float32/float16/bfloat16 and float64
// for float64.
//
// Status: compiled by nvcc for sm_90 on every CI run, never yet run on a GPU (scripts/gpu_check.sh runs its tests,
// compute-sanitizer and the benchmark on the next lent GPU).

#include <array>
#include <cstdint>
#include <optional>
#include <vector>

#include "../ops/clip.h"
#include "../ops/fused_optim.h"
#include "multi_tensor_apply.cuh"

namespace wgan_ext {
namespace {

constexpr int kIlp = 4;

template <typename storage_t, typename T, bool kMomentum>
struct RMSpropFunctor {
  __device__ __forceinline__ void operator()(void* const* data, int64_t start, int n, int32_t /*index*/,
                                             optim_math::RMSpropHyper<T> h) const {
    storage_t* p = static_cast<storage_t*>(data[0]) + start;
    const storage_t* g = static_cast<const storage_t*>(data[1]) + start;
    storage_t* sq = static_cast<storage_t*>(data[2]) + start;
    storage_t* buf = kMomentum ? static_cast<storage_t*>(data[3]) + start : nullptr;
    for (int base = 0; base < n; base += blockDim.x * kIlp) {
      T rp[kIlp], rg[kIlp], rs[kIlp], rb[kIlp];
#pragma unroll
      for (int j = 0; j < kIlp; ++j) {
        const int i = base + threadIdx.x + j * blockDim.x;
        rp[j] = rg[j] = rs[j] = rb[j] = T(0);
        if (i < n) {
          rp[j] = static_cast<T>(p[i]);
          rg[j] = static_cast<T>(g[i]);
          rs[j] = static_cast<T>(sq[i]);
          if constexpr (kMomentum) rb[j] = static_cast<T>(buf[i]);
        }
      }
#pragma unroll
      for (int j = 0; j < kIlp; ++j) {
        const int i = base + threadIdx.x + j * blockDim.x;
        if (i < n) {
          optim_math::rmsprop_clip_element<kMomentum>(rp[j], rg[j], rs[j], rb[j], h);
          p[i] = static_cast<storage_t>(rp[j]);
          sq[i] = static_cast<storage_t>(rs[j]);
          if constexpr (kMomentum) buf[i] = static_cast<storage_t>(rb[j]);
        }
      }
    }
  }
};

template <typename storage_t, typename T>
struct AdamFunctor {
  __device__ __forceinline__ void operator()(void* const* data, int64_t start, int n, int32_t /*index*/,
                                             optim_math::AdamHyper<T> h) const {
    storage_t* p = static_cast<storage_t*>(data[0]) + start;
    const storage_t* g = static_cast<const storage_t*>(data[1]) + start;
    storage_t* m = static_cast<storage_t*>(data[2]) + start;
    storage_t* v = static_cast<storage_t*>(data[3]) + start;
    for (int base = 0; base < n; base += blockDim.x * kIlp) {
      T rp[kIlp], rg[kIlp], rm[kIlp], rv[kIlp];
#pragma unroll
      for (int j = 0; j < kIlp; ++j) {
        const int i = base + threadIdx.x + j * blockDim.x;
        rp[j] = rg[j] = rm[j] = rv[j] = T(0);
        if (i < n) {
          rp[j] = static_cast<T>(p[i]);
          rg[j] = static_cast<T>(g[i]);
          rm[j] = static_cast<T>(m[i]);
          rv[j] = static_cast<T>(v[i]);
        }
      }
#pragma unroll
      for (int j = 0; j < kIlp; ++j) {
        const int i = base + threadIdx.x + j * blockDim.x;
        if (i < n) {
          optim_math::adam_clip_element(rp[j], rg[j], rm[j], rv[j], h);
          p[i] = static_cast<storage_t>(rp[j]);
          m[i] = static_cast<storage_t>(rm[j]);
          v[i] = static_cast<storage_t>(rv[j]);
        }
      }
    }
  }
};

// The items of the tensors of one dtype: Depth pointers each (param, grad, state...).
template <int Depth>
std::vector<mta::ItemN<Depth>> items_of_dtype(ScalarType dtype, const std::array<const Tensors*, Depth>& lists) {
  std::vector<mta::ItemN<Depth>> items;
  const Tensors& params = *lists[0];
  for (size_t i = 0; i < params.size(); ++i) {
    if (dtype_of(params[i]) != dtype || params[i].numel() == 0) continue;
    mta::ItemN<Depth> item{};
    for (int d = 0; d < Depth; ++d) item.data[d] = (*lists[d])[i].data_ptr();
    item.numel = params[i].numel();
    item.index = static_cast<int32_t>(i);
    items.push_back(item);
  }
  return items;
}

// Calls f(storage_t{}, T{}) for each dtype.
template <typename F>
void for_each_optim_dtype(const F& f) {
  f(kFloat, float{}, float{});
  f(kDouble, double{}, double{});
  f(kHalf, Half{}, float{});
  f(kBFloat16, BFloat16{}, float{});
}

void rmsprop_clip_step_cuda(Tensors params, Tensors grads, Tensors square_avgs, Tensors momentum_buffers, double lr,
                            double alpha, double eps, double weight_decay, double momentum,
                            std::optional<double> clip_value) {
  check_rmsprop_args(params, momentum_buffers, lr, alpha, eps, weight_decay, momentum, clip_value);
  check_optim_tensors("wgan_ext::rmsprop_clip_step_", params, grads, square_avgs, "square_avg", momentum_buffers,
                      "momentum_buffer", false, DeviceType::CUDA);
  if (params.empty()) return;
  const DeviceGuard guard(params[0].get_device_index());
  const cudaStream_t stream = current_stream(params[0]);
  const bool with_momentum = momentum > 0;
  for_each_optim_dtype([&](ScalarType dtype, auto storage, auto compute) {
    using storage_t = decltype(storage);
    using T = decltype(compute);
    const auto h = make_rmsprop_hyper<T>(lr, alpha, eps, weight_decay, momentum, clip_value);
    if (with_momentum) {
      const auto items = items_of_dtype<4>(dtype, {&params, &grads, &square_avgs, &momentum_buffers});
      if (!items.empty()) mta::multi_tensor_apply_n<4>(stream, items, RMSpropFunctor<storage_t, T, true>{}, h);
    } else {
      const auto items = items_of_dtype<3>(dtype, {&params, &grads, &square_avgs});
      if (!items.empty()) mta::multi_tensor_apply_n<3>(stream, items, RMSpropFunctor<storage_t, T, false>{}, h);
    }
  });
}

void adam_clip_step_cuda(Tensors params, Tensors grads, Tensors exp_avgs, Tensors exp_avg_sqs, double lr, double beta1,
                         double beta2, double eps, double weight_decay, int64_t step,
                         std::optional<double> clip_value) {
  check_adam_args(lr, beta1, beta2, eps, weight_decay, step, clip_value);
  check_optim_tensors("wgan_ext::adam_clip_step_", params, grads, exp_avgs, "exp_avg", exp_avg_sqs, "exp_avg_sq",
                      true, DeviceType::CUDA);
  if (params.empty()) return;
  const DeviceGuard guard(params[0].get_device_index());
  const cudaStream_t stream = current_stream(params[0]);
  for_each_optim_dtype([&](ScalarType dtype, auto storage, auto compute) {
    using storage_t = decltype(storage);
    using T = decltype(compute);
    const auto h = make_adam_hyper<T>(lr, beta1, beta2, eps, weight_decay, step, clip_value);
    const auto items = items_of_dtype<4>(dtype, {&params, &grads, &exp_avgs, &exp_avg_sqs});
    if (!items.empty()) mta::multi_tensor_apply_n<4>(stream, items, AdamFunctor<storage_t, T>{}, h);
  });
}

// The planned steps (optim_plan in csrc/ops/fused_optim.h): block b updates row b of the plan, which it reads from
// device memory, so one launch covers every parameter whatever their number and dtypes. A row that breaks the
// plan's rules (which the host cannot check without reading the plan back) is skipped as a whole block.
struct PlannedRow {
  void* data[4];
  int n;
  int64_t code;
};

__device__ __forceinline__ bool read_row(const int64_t* plan, int64_t num_tensors, int64_t dtypes, bool state2,
                                         PlannedRow* row) {
  const int64_t* r = plan + static_cast<int64_t>(blockIdx.x) * optim_plan::kCols;
  const int64_t n = r[4], index = r[5], code = r[6];
  if (r[0] == 0 || r[1] == 0 || r[2] == 0 || (state2 && r[3] == 0) || n < 1 || n > mta::kChunkSize || index < 0 ||
      index >= num_tensors || code < 0 || code > 3 || !((dtypes >> code) & 1) || r[7] < 0) {
    return false;
  }
  for (int d = 0; d < 4; ++d) row->data[d] = reinterpret_cast<void*>(static_cast<uintptr_t>(r[d]));
  row->n = static_cast<int>(n);
  row->code = code;
  return true;
}

template <bool kMomentum>
__global__ void __launch_bounds__(mta::kBlockSize) rmsprop_plan_kernel(const int64_t* __restrict__ plan,
                                                                       int64_t num_tensors, int64_t dtypes,
                                                                       optim_math::RMSpropHyper<float> h32,
                                                                       optim_math::RMSpropHyper<double> h64) {
  PlannedRow row;
  if (!read_row(plan, num_tensors, dtypes, kMomentum, &row)) return;
  switch (row.code) {
    case 0: RMSpropFunctor<float, float, kMomentum>{}(row.data, 0, row.n, 0, h32); break;
    case 1: RMSpropFunctor<double, double, kMomentum>{}(row.data, 0, row.n, 0, h64); break;
    case 2: RMSpropFunctor<Half, float, kMomentum>{}(row.data, 0, row.n, 0, h32); break;
    default: RMSpropFunctor<BFloat16, float, kMomentum>{}(row.data, 0, row.n, 0, h32); break;
  }
}

__global__ void __launch_bounds__(mta::kBlockSize) adam_plan_kernel(const int64_t* __restrict__ plan,
                                                                    int64_t num_tensors, int64_t dtypes,
                                                                    optim_math::AdamHyper<float> h32,
                                                                    optim_math::AdamHyper<double> h64) {
  PlannedRow row;
  if (!read_row(plan, num_tensors, dtypes, true, &row)) return;
  switch (row.code) {
    case 0: AdamFunctor<float, float>{}(row.data, 0, row.n, 0, h32); break;
    case 1: AdamFunctor<double, double>{}(row.data, 0, row.n, 0, h64); break;
    case 2: AdamFunctor<Half, float>{}(row.data, 0, row.n, 0, h32); break;
    default: AdamFunctor<BFloat16, float>{}(row.data, 0, row.n, 0, h32); break;
  }
}

// The launch geometry of a checked plan: one block per row.
unsigned plan_blocks(const char* op, const Tensor& plan) {
  const int64_t rows = plan.size(0);
  WGAN_CHECK(rows <= 0x7fffffff, op, ": a plan of ", rows, " rows is more than one launch holds");
  return static_cast<unsigned>(rows);
}

void check_no_grad_ptrs(const char* op, const std::optional<Tensor>& grad_ptrs) {
  WGAN_CHECK(!grad_ptrs.has_value(), op, ": grad_ptrs is for CPU plans; a CUDA plan holds its gradients' addresses "
             "(rebuild it when they move)");
}

void rmsprop_clip_planned_cuda(Tensor plan, std::optional<Tensor> grad_ptrs, int64_t num_tensors, int64_t dtypes,
                               double lr, double alpha, double eps, double weight_decay, double momentum,
                               std::optional<double> clip_value) {
  constexpr const char* op = "wgan_ext::_rmsprop_clip_planned_";
  check_no_grad_ptrs(op, grad_ptrs);
  check_rmsprop_args({}, {}, lr, alpha, eps, weight_decay, 0.0, clip_value);
  WGAN_CHECK(momentum >= 0, op, ": momentum must be >= 0, got ", momentum);
  optim_plan::check(op, plan, num_tensors, dtypes, mta::kChunkSize, momentum > 0, DeviceType::CUDA);
  const unsigned blocks = plan_blocks(op, plan);
  if (blocks == 0) return;
  const DeviceGuard guard(plan.get_device_index());
  const cudaStream_t stream = current_stream(plan);
  const auto h32 = make_rmsprop_hyper<float>(lr, alpha, eps, weight_decay, momentum, clip_value);
  const auto h64 = make_rmsprop_hyper<double>(lr, alpha, eps, weight_decay, momentum, clip_value);
  const int64_t* rows = plan.const_data_ptr<int64_t>();
  if (momentum > 0) {
    rmsprop_plan_kernel<true><<<blocks, mta::kBlockSize, 0, stream>>>(rows, num_tensors, dtypes, h32, h64);
  } else {
    rmsprop_plan_kernel<false><<<blocks, mta::kBlockSize, 0, stream>>>(rows, num_tensors, dtypes, h32, h64);
  }
  WGAN_CUDA_LAUNCH_CHECK();
}

void adam_clip_planned_cuda(Tensor plan, std::optional<Tensor> grad_ptrs, int64_t num_tensors, int64_t dtypes,
                            double lr, double beta1, double beta2, double eps, double weight_decay, int64_t step,
                            std::optional<double> clip_value) {
  constexpr const char* op = "wgan_ext::_adam_clip_planned_";
  check_no_grad_ptrs(op, grad_ptrs);
  check_adam_args(lr, beta1, beta2, eps, weight_decay, step, clip_value);
  optim_plan::check(op, plan, num_tensors, dtypes, mta::kChunkSize, true, DeviceType::CUDA);
  const unsigned blocks = plan_blocks(op, plan);
  if (blocks == 0) return;
  const DeviceGuard guard(plan.get_device_index());
  const cudaStream_t stream = current_stream(plan);
  const auto h32 = make_adam_hyper<float>(lr, beta1, beta2, eps, weight_decay, step, clip_value);
  const auto h64 = make_adam_hyper<double>(lr, beta1, beta2, eps, weight_decay, step, clip_value);
  adam_plan_kernel<<<blocks, mta::kBlockSize, 0, stream>>>(plan.const_data_ptr<int64_t>(), num_tensors, dtypes, h32,
                                                           h64);
  WGAN_CUDA_LAUNCH_CHECK();
}

Tensor optim_plan_cuda(Tensors params, Tensors grads, Tensors state1, Tensors state2) {
  return optim_plan::make(params, grads, state1, state2, mta::kChunkSize, DeviceType::CUDA);
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(wgan_ext, CUDA, m) {
  m.impl("rmsprop_clip_step_", TORCH_BOX(&rmsprop_clip_step_cuda));
  m.impl("adam_clip_step_", TORCH_BOX(&adam_clip_step_cuda));
  m.impl("_optim_plan", TORCH_BOX(&optim_plan_cuda));
  m.impl("_rmsprop_clip_planned_", TORCH_BOX(&rmsprop_clip_planned_cuda));
  m.impl("_adam_clip_planned_", TORCH_BOX(&adam_clip_planned_cuda));
}

}  // namespace wgan_ext
