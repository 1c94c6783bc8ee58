// Arithmetic rounded after every operation on both sides: nvcc contracts a * b + c into one FMA by default (one
// rounding instead of two), which changes the last bit; the host compiler is told not to (-ffp-contract=off in
// setup.py). The kernels whose math promises torch's operation-by-operation rounding (the interpolate, the fused
// optimizer steps) spell their products and sums with these, so the CUDA and the CPU kernel give the same bits.
#pragma once

#include "../macros.h"

namespace wgan_ext {
namespace rounding {

WGAN_HOST_DEVICE WGAN_INLINE float mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
WGAN_HOST_DEVICE WGAN_INLINE double mul_rn(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
WGAN_HOST_DEVICE WGAN_INLINE float add_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
WGAN_HOST_DEVICE WGAN_INLINE double add_rn(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
WGAN_HOST_DEVICE WGAN_INLINE float sub_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
WGAN_HOST_DEVICE WGAN_INLINE double sub_rn(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dsub_rn(a, b);
#else
  return a - b;
#endif
}

}  // namespace rounding
}  // namespace wgan_ext
