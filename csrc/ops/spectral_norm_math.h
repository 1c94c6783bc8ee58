// Per-vector math of the spectral-norm power iteration, shared by the CPU and CUDA kernels.
//
// One step, as torch.nn.utils.parametrizations.spectral_norm does it (weight viewed as a matrix W of (h, w)):
//   u <- normalize(W v),   v <- normalize(W^T u),   normalize(x) = x / max(||x||_2, eps)   (F.normalize)
// The kernels compute the matrix-vector products in the accumulation type (float for float16/bfloat16) and round
// u and v to the weight's dtype after each normalization, as torch's buffers are.
#pragma once

#include <cmath>

#include "../macros.h"

namespace wgan_ext {
namespace sn_math {

// 1 / max(sqrt(sum_of_squares), eps): the factor F.normalize applies.
template <typename acc_t>
WGAN_HOST_DEVICE WGAN_INLINE acc_t inv_norm(acc_t sum_of_squares, acc_t eps) {
#ifdef __CUDA_ARCH__
  const acc_t norm = ::sqrt(sum_of_squares);
#else
  const acc_t norm = std::sqrt(sum_of_squares);
#endif
  return acc_t(1) / (norm > eps ? norm : eps);
}

// The normalized weight W / sigma, sigma = u^T W v (u, v held constant), as torch's parametrization computes it:
// sigma accumulated in acc_t (float for float16/bfloat16/float32, double for float64) and, as torch's vdot returns
// it, rounded to the weight's dtype; each element divided by it in acc_t and rounded back.
template <typename scalar_t, typename acc_t>
WGAN_HOST_DEVICE WGAN_INLINE acc_t rounded_sigma(acc_t sigma) {
  return static_cast<acc_t>(static_cast<scalar_t>(sigma));
}

template <typename scalar_t, typename acc_t>
WGAN_HOST_DEVICE WGAN_INLINE scalar_t normalize_element(scalar_t w, acc_t sigma) {
  return static_cast<scalar_t>(static_cast<acc_t>(w) / sigma);
}

// The backward with u, v held constant, as autograd differentiates W / sigma and sigma = vdot(u, mv(W, v)):
//   dW[r, c] = G[r, c] / sigma + grad_sigma * u[r] * v[c],   grad_sigma = -<G, W> / sigma^2,
// i.e. (G - <G, W / sigma> u v^T) / sigma. grad_sigma_of takes <G, W> accumulated in acc_t.
template <typename acc_t>
WGAN_HOST_DEVICE WGAN_INLINE acc_t grad_sigma_of(acc_t g_dot_w, acc_t sigma) {
  return -(g_dot_w / (sigma * sigma));
}

template <typename scalar_t, typename acc_t>
WGAN_HOST_DEVICE WGAN_INLINE scalar_t backward_element(scalar_t g, acc_t sigma, acc_t grad_sigma, acc_t u_r,
                                                       acc_t v_c) {
  return static_cast<scalar_t>(static_cast<acc_t>(g) / sigma + grad_sigma * u_r * v_c);
}

}  // namespace sn_math
}  // namespace wgan_ext
