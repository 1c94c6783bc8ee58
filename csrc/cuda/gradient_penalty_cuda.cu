// CUDA kernels of wgan_ext::interpolate, gradient_norm_penalty and _gradient_norm_penalty_backward.
//   interpolate, backward: one elementwise grid-stride pass over the flattened (N, D) elements.
//   penalty: one block per sample reduces its sum of squares (norms), then one block reduces the per-sample terms
//            to the mean, in a fixed order (deterministic, no atomics).
// The per-element and per-sample math is csrc/ops/gradient_penalty_math.h, the same code the CPU kernels run.

#include <algorithm>
#include <tuple>

#include "../ops/gradient_penalty.h"
#include "../ops/gradient_penalty_math.h"
#include "stable_cuda.cuh"

namespace wgan_ext {
namespace {

constexpr int kThreads = 256;

int elementwise_blocks(int64_t n) {
  return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, 65535LL * 8));
}

template <typename scalar_t, typename acc_t>
__global__ void interpolate_kernel(const scalar_t* __restrict__ real, const scalar_t* __restrict__ fake,
                                   const scalar_t* __restrict__ alpha, scalar_t* __restrict__ out, int64_t total,
                                   int64_t D) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const acc_t al = static_cast<acc_t>(alpha[i / D]);
    out[i] = static_cast<scalar_t>(
        gp_math::interpolate<acc_t>(static_cast<acc_t>(real[i]), static_cast<acc_t>(fake[i]), al));
  }
}

// Sum over the block; the result is valid in thread 0.
template <typename acc_t>
__device__ acc_t block_sum(acc_t v) {
  __shared__ acc_t partial[kThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = threadIdx.x < blockDim.x / 32 ? partial[threadIdx.x] : acc_t(0);
  if (warp == 0) {
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  }
  return v;
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) sample_norms_kernel(const scalar_t* __restrict__ grad,
                                                                acc_t* __restrict__ norms, acc_t* __restrict__ terms,
                                                                int64_t D, acc_t target, bool one_sided,
                                                                acc_t inv_scale, acc_t eps) {
  const scalar_t* row = grad + blockIdx.x * D;
  acc_t s = 0;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    const acc_t x = static_cast<acc_t>(row[i]);
    s += x * x;
  }
  s = block_sum(s);
  if (threadIdx.x == 0) {
    const acc_t nrm = gp_math::norm<acc_t>(s, inv_scale, eps);
    norms[blockIdx.x] = nrm;
    terms[blockIdx.x] = gp_math::term<acc_t>(nrm, target, one_sided);
  }
}

template <typename acc_t>
__global__ void __launch_bounds__(kThreads) mean_kernel(const acc_t* __restrict__ terms, int64_t N,
                                                        acc_t* __restrict__ out) {
  acc_t s = 0;
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) s += terms[i];
  s = block_sum(s);
  if (threadIdx.x == 0) *out = s / static_cast<acc_t>(N);
}

template <typename scalar_t, typename acc_t>
__global__ void penalty_backward_kernel(const scalar_t* __restrict__ grad, const acc_t* __restrict__ norms,
                                        const acc_t* __restrict__ grad_norms, const acc_t* __restrict__ grad_penalty,
                                        scalar_t* __restrict__ out, int64_t total, int64_t N, int64_t D,
                                        acc_t target, bool one_sided, acc_t inv_scale) {
  const acc_t gpen = *grad_penalty;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = i / D;
    const acc_t coef = gp_math::backward_coef<acc_t>(norms[n], target, one_sided, inv_scale, gpen, grad_norms[n],
                                                     static_cast<acc_t>(N));
    out[i] = static_cast<scalar_t>(coef * static_cast<acc_t>(grad[i]));
  }
}

Tensor interpolate_cuda(Tensor real, Tensor fake, Tensor alpha) {
  check_interpolate_args(real, fake, alpha);
  const DeviceGuard guard(real.get_device_index());
  const Tensor r = as_contiguous(real), f = as_contiguous(fake), a = as_contiguous(alpha);
  Tensor out = empty_contiguous_like(r);
  const int64_t total = r.numel();
  if (total == 0) return out;
  const int64_t D = total / r.size(0);
  const cudaStream_t stream = current_stream(r);
  dispatch_floating(dtype_of(r), "wgan_ext::interpolate", [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = acc_t_of<scalar_t>;
    interpolate_kernel<scalar_t, acc_t><<<elementwise_blocks(total), kThreads, 0, stream>>>(
        static_cast<const scalar_t*>(r.const_data_ptr()), static_cast<const scalar_t*>(f.const_data_ptr()),
        static_cast<const scalar_t*>(a.const_data_ptr()), static_cast<scalar_t*>(out.mutable_data_ptr()), total, D);
    WGAN_CUDA_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<Tensor, Tensor> gradient_norm_penalty_cuda(Tensor grad, double target, bool one_sided, double inv_scale,
                                                      double eps) {
  check_penalty_args(grad, inv_scale, eps);
  const DeviceGuard guard(grad.get_device_index());
  const Tensor g = as_contiguous(grad);
  const int64_t N = g.size(0);
  const int64_t D = g.numel() / N;
  WGAN_CHECK(N <= 2147483647LL, "wgan_ext::gradient_norm_penalty: batch too large for one launch: ", N);
  const ScalarType acc_dtype = penalty_acc_dtype(dtype_of(g));
  Tensor norms = new_empty(g, {N}, acc_dtype);
  Tensor terms = new_empty(g, {N}, acc_dtype);
  Tensor penalty = new_empty(g, {}, acc_dtype);
  const cudaStream_t stream = current_stream(g);
  dispatch_floating(dtype_of(g), "wgan_ext::gradient_norm_penalty", [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = acc_t_of<scalar_t>;
    sample_norms_kernel<scalar_t, acc_t><<<static_cast<unsigned>(N), kThreads, 0, stream>>>(
        static_cast<const scalar_t*>(g.const_data_ptr()), static_cast<acc_t*>(norms.mutable_data_ptr()),
        static_cast<acc_t*>(terms.mutable_data_ptr()), D, static_cast<acc_t>(target), one_sided,
        static_cast<acc_t>(inv_scale), static_cast<acc_t>(eps));
    WGAN_CUDA_LAUNCH_CHECK();
    mean_kernel<acc_t><<<1, kThreads, 0, stream>>>(static_cast<const acc_t*>(terms.const_data_ptr()), N,
                                                   static_cast<acc_t*>(penalty.mutable_data_ptr()));
    WGAN_CUDA_LAUNCH_CHECK();
  });
  return {penalty, norms};
}

Tensor gradient_norm_penalty_backward_cuda(Tensor grad_penalty, Tensor grad_norms, Tensor grad, Tensor norms,
                                           double target, bool one_sided, double inv_scale) {
  check_penalty_backward_args(grad_penalty, grad_norms, grad, norms);
  const DeviceGuard guard(grad.get_device_index());
  const Tensor g = as_contiguous(grad);
  const int64_t N = g.size(0);
  Tensor out = empty_contiguous_like(g);
  const int64_t total = g.numel();
  if (total == 0) return out;
  const int64_t D = total / N;
  const Tensor n_c = as_contiguous(norms), gn_c = as_contiguous(grad_norms), gp_c = as_contiguous(grad_penalty);
  const cudaStream_t stream = current_stream(g);
  dispatch_floating(dtype_of(g), "wgan_ext::_gradient_norm_penalty_backward", [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = acc_t_of<scalar_t>;
    penalty_backward_kernel<scalar_t, acc_t><<<elementwise_blocks(total), kThreads, 0, stream>>>(
        static_cast<const scalar_t*>(g.const_data_ptr()), static_cast<const acc_t*>(n_c.const_data_ptr()),
        static_cast<const acc_t*>(gn_c.const_data_ptr()), static_cast<const acc_t*>(gp_c.const_data_ptr()),
        static_cast<scalar_t*>(out.mutable_data_ptr()), total, N, D, static_cast<acc_t>(target), one_sided,
        static_cast<acc_t>(inv_scale));
    WGAN_CUDA_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(wgan_ext, CUDA, m) {
  m.impl("interpolate", TORCH_BOX(&interpolate_cuda));
  m.impl("gradient_norm_penalty", TORCH_BOX(&gradient_norm_penalty_cuda));
  m.impl("_gradient_norm_penalty_backward", TORCH_BOX(&gradient_norm_penalty_backward_cuda));
}

}  // namespace wgan_ext
