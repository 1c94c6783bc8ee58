// Per-sample math of the gradient-norm penalty (WGAN-GP, one-sided GP, R1/R2), shared by the CPU and CUDA kernels.
//
// For a gradient g of shape (N, *), per sample n:   norm_n = sqrt(s^2 * sum_i g_ni^2 + eps)
//   penalty = mean_n term(norm_n),   term = (norm - target)^2, or max(0, norm - target)^2 when one-sided,
// where s is an inverse loss scale (the AMP recipe: the gradient of a scaled output is unscaled inside) and eps
// keeps the norm's derivative finite at g = 0 (pytorch#2534). The backward w.r.t. g is one elementwise pass:
//   dL/dg_ni = coef_n * g_ni,  coef_n = s^2 / norm_n * (dL/dpenalty * 2 (norm_n - target)[+] / N + dL/dnorm_n).
// All of it runs in the accumulation type: double for double inputs, float for the others.
#pragma once

#include <cmath>

#include "../macros.h"
#include "rounding.h"

namespace wgan_ext {
namespace gp_math {

WGAN_HOST_DEVICE WGAN_INLINE float square_root(float x) {
#ifdef __CUDA_ARCH__
  return sqrtf(x);
#else
  return std::sqrt(x);
#endif
}

WGAN_HOST_DEVICE WGAN_INLINE double square_root(double x) {
#ifdef __CUDA_ARCH__
  return ::sqrt(x);
#else
  return std::sqrt(x);
#endif
}

template <typename acc_t>
WGAN_HOST_DEVICE WGAN_INLINE acc_t norm(acc_t sum_of_squares, acc_t inv_scale, acc_t eps) {
  return square_root(inv_scale * inv_scale * sum_of_squares + eps);
}

// Each operation rounded on its own (csrc/ops/rounding.h): the interpolate is promised to equal torch's eager ops
// bit for bit.
using rounding::add_rn;
using rounding::mul_rn;

// real + alpha * (fake - real), the interpolate x_hat of WGAN-GP, rounded after every operation as torch's eager
// ops are.
template <typename acc_t>
WGAN_HOST_DEVICE WGAN_INLINE acc_t interpolate(acc_t real, acc_t fake, acc_t alpha) {
  return add_rn(real, mul_rn(alpha, fake - real));
}

template <typename acc_t>
WGAN_HOST_DEVICE WGAN_INLINE acc_t excess(acc_t norm, acc_t target, bool one_sided) {
  const acc_t d = norm - target;
  return (one_sided && d < acc_t(0)) ? acc_t(0) : d;
}

template <typename acc_t>
WGAN_HOST_DEVICE WGAN_INLINE acc_t term(acc_t norm, acc_t target, bool one_sided) {
  const acc_t d = excess(norm, target, one_sided);
  return d * d;
}

template <typename acc_t>
WGAN_HOST_DEVICE WGAN_INLINE acc_t backward_coef(acc_t norm, acc_t target, bool one_sided, acc_t inv_scale,
                                                 acc_t grad_penalty, acc_t grad_norm, acc_t batch) {
  const acc_t d = excess(norm, target, one_sided);
  return inv_scale * inv_scale / norm * (grad_penalty * acc_t(2) * d / batch + grad_norm);
}

}  // namespace gp_math
}  // namespace wgan_ext
