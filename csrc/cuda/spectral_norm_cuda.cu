// CUDA kernel of wgan_ext::spectral_norm_power_iteration_: one launch for all layers of a dtype (up to kMaxLayers
// per launch), one block per layer running every power-iteration step of that layer:
//   u_raw = W v      one warp per row, lanes stride the row (coalesced), warp-shuffle sums;
//   u = u_raw / max(||u_raw||, eps)   block reduction, then u rounded to the weight dtype like torch's buffer;
//   v_raw = W^T u    one thread per column, walking the rows (coalesced across threads);
//   v = v_raw / max(||v_raw||, eps).
// The raw products live in a float32 (float64) workspace. Normalization: csrc/ops/spectral_norm_math.h, shared with
// the CPU kernel. A layer is limited to one SM: fine for the small and medium critics of WGAN training; splitting
// large layers over blocks is future work (see README).

#include <algorithm>
#include <vector>

#include "../ops/spectral_norm.h"
#include "../ops/spectral_norm_math.h"
#include "stable_cuda.cuh"

namespace wgan_ext {
namespace {

constexpr int kThreads = 512;
constexpr int kMaxLayers = 48;

struct LayerList {
  const void* weight[kMaxLayers];
  void* u[kMaxLayers];
  void* v[kMaxLayers];
  int64_t h[kMaxLayers];
  int64_t w[kMaxLayers];
  int64_t workspace_offset[kMaxLayers];  // u_raw at offset, v_raw after it
};
static_assert(sizeof(LayerList) <= 3900, "kernel arguments must stay under the 4 KB limit");

// Sum over the block, returned to every thread.
template <typename acc_t>
__device__ acc_t block_sum_all(acc_t x, acc_t* shared) {
  for (int offset = 16; offset > 0; offset /= 2) x += __shfl_down_sync(0xffffffffu, x, offset);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();  // `shared` may still be read from the previous call
  if (lane == 0) shared[warp] = x;
  __syncthreads();
  acc_t total = 0;
  for (int i = 0; i < static_cast<int>(blockDim.x / 32); ++i) total += shared[i];
  return total;
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) power_iteration_kernel(LayerList layers, acc_t* workspace,
                                                                   int64_t n_iterations, acc_t eps) {
  __shared__ acc_t shared[kThreads / 32];
  const int l = blockIdx.x;
  const scalar_t* W = static_cast<const scalar_t*>(layers.weight[l]);
  scalar_t* u = static_cast<scalar_t*>(layers.u[l]);
  scalar_t* v = static_cast<scalar_t*>(layers.v[l]);
  const int64_t h = layers.h[l], w = layers.w[l];
  acc_t* u_raw = workspace + layers.workspace_offset[l];
  acc_t* v_raw = u_raw + h;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  for (int64_t it = 0; it < n_iterations; ++it) {
    // u <- normalize(W v)
    for (int64_t r = warp; r < h; r += warps) {
      const scalar_t* row = W + r * w;
      acc_t s = 0;
      for (int64_t c = lane; c < w; c += 32) s += static_cast<acc_t>(row[c]) * static_cast<acc_t>(v[c]);
      for (int offset = 16; offset > 0; offset /= 2) s += __shfl_down_sync(0xffffffffu, s, offset);
      if (lane == 0) u_raw[r] = s;
    }
    __syncthreads();
    acc_t ss = 0;
    for (int64_t r = threadIdx.x; r < h; r += blockDim.x) ss += u_raw[r] * u_raw[r];
    acc_t inv = sn_math::inv_norm(block_sum_all(ss, shared), eps);
    for (int64_t r = threadIdx.x; r < h; r += blockDim.x) u[r] = static_cast<scalar_t>(u_raw[r] * inv);
    __syncthreads();
    // v <- normalize(W^T u)
    for (int64_t c = threadIdx.x; c < w; c += blockDim.x) {
      acc_t s = 0;
      for (int64_t r = 0; r < h; ++r) s += static_cast<acc_t>(W[r * w + c]) * static_cast<acc_t>(u[r]);
      v_raw[c] = s;
    }
    __syncthreads();
    ss = 0;
    for (int64_t c = threadIdx.x; c < w; c += blockDim.x) ss += v_raw[c] * v_raw[c];
    inv = sn_math::inv_norm(block_sum_all(ss, shared), eps);
    for (int64_t c = threadIdx.x; c < w; c += blockDim.x) v[c] = static_cast<scalar_t>(v_raw[c] * inv);
    __syncthreads();
  }
}

void power_iteration_cuda(Tensors weights, Tensors us, Tensors vs, int64_t n_iterations, double eps) {
  check_power_iteration_args(weights, us, vs, n_iterations, eps, DeviceType::CUDA);
  if (weights.empty() || n_iterations == 0) return;
  const DeviceGuard guard(weights[0].get_device_index());
  const cudaStream_t stream = current_stream(weights[0]);
  Tensors W, u, v;
  for (size_t i = 0; i < weights.size(); ++i) {
    W.push_back(as_contiguous(weights[i]));
    u.push_back(as_contiguous(us[i]));
    v.push_back(as_contiguous(vs[i]));
  }
  for (const ScalarType dtype : {kFloat, kDouble, kHalf, kBFloat16}) {
    std::vector<size_t> group;
    for (size_t i = 0; i < W.size(); ++i) {
      if (dtype_of(W[i]) == dtype && W[i].numel() > 0) group.push_back(i);
    }
    for (size_t start = 0; start < group.size(); start += kMaxLayers) {
      const size_t count = std::min<size_t>(kMaxLayers, group.size() - start);
      LayerList layers;
      int64_t offset = 0;
      for (size_t k = 0; k < count; ++k) {
        const size_t i = group[start + k];
        layers.weight[k] = W[i].const_data_ptr();
        layers.u[k] = u[i].mutable_data_ptr();
        layers.v[k] = v[i].mutable_data_ptr();
        layers.h[k] = W[i].size(0);
        layers.w[k] = W[i].size(1);
        layers.workspace_offset[k] = offset;
        offset += W[i].size(0) + W[i].size(1);
      }
      dispatch_floating(dtype, "wgan_ext::spectral_norm_power_iteration_", [&](auto tag) {
        using scalar_t = decltype(tag);
        using acc_t = acc_t_of<scalar_t>;
        const Tensor workspace = new_empty(W[group[start]], {offset}, scalar_type_of<acc_t>());
        power_iteration_kernel<scalar_t, acc_t><<<static_cast<unsigned>(count), kThreads, 0, stream>>>(
            layers, static_cast<acc_t*>(workspace.mutable_data_ptr()), n_iterations, static_cast<acc_t>(eps));
        WGAN_CUDA_LAUNCH_CHECK();
      });
    }
  }
  for (size_t i = 0; i < weights.size(); ++i) {
    if (!us[i].is_contiguous()) torch::stable::copy_(us[i], u[i]);
    if (!vs[i].is_contiguous()) torch::stable::copy_(vs[i], v[i]);
  }
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(wgan_ext, CUDA, m) {
  m.impl("spectral_norm_power_iteration_", TORCH_BOX(&power_iteration_cuda));
}

}  // namespace wgan_ext
