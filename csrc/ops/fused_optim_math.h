// Per-element math of the fused optimizer steps with weight clipping (wgan_ext::rmsprop_clip_step_ and
// wgan_ext::adam_clip_step_), shared by the CPU and the CUDA kernel.
//
// One element of torch.optim.RMSprop (centered=False) / torch.optim.Adam (amsgrad=False, L2 weight decay), followed by
// the WGAN clamp of the parameter to [-c, c]. Each update is written in the order of torch's single-tensor
// (foreach=False) implementation, operation by operation, so float32/float64 results agree with torch to a few ulp.
// T is the compute type ("opmath"): float for float32/float16/bfloat16 parameters, double for float64. The kernels
// load each element to T, call these functions, and round the results once to the storage dtype.
//
// Every product and sum is rounded on its own (csrc/ops/rounding.h: nvcc would fuse a * b + c into an FMA), so the
// CUDA kernel gives the CPU kernel's bits. Everything is written as selects rather than branches, so the CPU loops vectorize (sqrt and division included).
#pragma once

#include <cmath>

#include "../macros.h"
#include "rounding.h"

namespace wgan_ext {
namespace optim_math {

using rounding::add_rn;
using rounding::mul_rn;
using rounding::sub_rn;

// Correctly rounded square roots (IEEE sqrt on both sides: nvcc's default -prec-sqrt=true).
WGAN_HOST_DEVICE WGAN_INLINE float sqrt_(float x) {
#ifdef __CUDA_ARCH__
  return ::sqrtf(x);
#else
  return std::sqrt(x);
#endif
}

WGAN_HOST_DEVICE WGAN_INLINE double sqrt_(double x) {
#ifdef __CUDA_ARCH__
  return ::sqrt(x);
#else
  return std::sqrt(x);
#endif
}

// The clamp applied after the update (bounds already in the compute type).
template <typename T>
struct Clamp {
  bool enabled;  // false: clip_value=None, the parameter is not clamped
  T lo;          // -c
  T hi;          // +c

  // max(lo, x) then min(hi, .), as torch.clamp: NaN stays NaN, a value equal to a bound is kept.
  WGAN_HOST_DEVICE WGAN_INLINE T operator()(T x) const {
    const T at_least_lo = lo > x ? lo : x;
    const T clamped = hi < at_least_lo ? hi : at_least_lo;
    return enabled ? clamped : x;
  }
};

// The hyperparameters of one call, already in the compute type. Host code fills them (csrc/ops/fused_optim.h).
template <typename T>
struct RMSpropHyper {
  T neg_lr;             // -lr
  T alpha;              // smoothing constant of square_avg
  T one_minus_alpha;    // 1 - alpha, computed in double on the host as Python computes it
  T eps;
  T weight_decay;
  bool has_weight_decay;  // weight_decay != 0 (torch skips the term otherwise: 0 * inf would be NaN)
  T momentum;
  Clamp<T> clamp;
};

// One element of RMSprop. `buf` is read and written only when has_momentum (the caller passes a dummy otherwise).
//   g   = grad + weight_decay * p                      (grad.add(param, alpha=weight_decay))
//   sq  = sq * alpha + (1 - alpha) * g * g             (square_avg.mul_(alpha).addcmul_(g, g, value=1-alpha))
//   avg = sqrt(sq) + eps                               (square_avg.sqrt().add_(eps))
//   momentum: buf = buf * momentum + g / avg; p = p + (-lr) * buf      (buf.mul_(m).addcdiv_(g, avg);
//                                                                       param.add_(buf, alpha=-lr))
//   else:     p = p + (-lr) * g / avg                  (param.addcdiv_(g, avg, value=-lr))
//   p   = clamp(p, -c, c)
template <bool kMomentum, typename T>
WGAN_HOST_DEVICE WGAN_INLINE void rmsprop_clip_element(T& p, T grad, T& sq, T& buf, const RMSpropHyper<T>& h) {
  const T g = h.has_weight_decay ? add_rn(grad, mul_rn(h.weight_decay, p)) : grad;
  const T decayed = mul_rn(sq, h.alpha);
  sq = add_rn(decayed, mul_rn(mul_rn(h.one_minus_alpha, g), g));
  const T avg = add_rn(sqrt_(sq), h.eps);
  T updated;
  if constexpr (kMomentum) {
    const T scaled = mul_rn(buf, h.momentum);
    buf = add_rn(scaled, g / avg);
    updated = add_rn(p, mul_rn(h.neg_lr, buf));
  } else {
    updated = add_rn(p, mul_rn(h.neg_lr, g) / avg);
  }
  p = h.clamp(updated);
}

template <typename T>
struct AdamHyper {
  T neg_step_size;        // -lr / (1 - beta1^step)
  T one_minus_beta1;      // lerp weight of exp_avg
  T beta2;
  T one_minus_beta2;
  T bias_correction2_sqrt;  // sqrt(1 - beta2^step)
  T eps;
  T weight_decay;
  bool has_weight_decay;
  Clamp<T> clamp;
};

// torch.lerp's formula (aten/src/ATen/native/Lerp.h): the weight's side picks the form that is exact at weight 1.
template <typename T>
WGAN_HOST_DEVICE WGAN_INLINE T lerp(T self, T end, T weight) {
  const T diff = sub_rn(end, self);
  const bool small = (weight < T(0.5)) & (weight > T(-0.5));
  return small ? add_rn(self, mul_rn(weight, diff)) : sub_rn(end, mul_rn(diff, sub_rn(T(1), weight)));
}

// One element of Adam (torch.optim.Adam, non-capturable single-tensor path):
//   g     = grad + weight_decay * p
//   m     = lerp(m, g, 1 - beta1)                     (exp_avg.lerp_(g, 1 - beta1))
//   v     = v * beta2 + (1 - beta2) * g * g           (exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2))
//   denom = sqrt(v) / sqrt(1 - beta2^step) + eps
//   p     = p + (-step_size) * m / denom              (param.addcdiv_(exp_avg, denom, value=-step_size))
//   p     = clamp(p, -c, c)
template <typename T>
WGAN_HOST_DEVICE WGAN_INLINE void adam_clip_element(T& p, T grad, T& m, T& v, const AdamHyper<T>& h) {
  const T g = h.has_weight_decay ? add_rn(grad, mul_rn(h.weight_decay, p)) : grad;
  m = lerp(m, g, h.one_minus_beta1);
  const T decayed = mul_rn(v, h.beta2);
  v = add_rn(decayed, mul_rn(mul_rn(h.one_minus_beta2, g), g));
  const T denom = add_rn(sqrt_(v) / h.bias_correction2_sqrt, h.eps);
  p = h.clamp(add_rn(p, mul_rn(h.neg_step_size, m) / denom));
}

}  // namespace optim_math
}  // namespace wgan_ext
