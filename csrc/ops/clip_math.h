// Per-element math of the fused clamp, shared by the CPU and the CUDA kernel.
//
// Everything here works in the op's "math type" (float for float16/bfloat16, the dtype itself otherwise). The
// bounds are first rounded to the tensor's dtype (as torch.clamp does with scalar bounds) and then widened to the
// math type, so the results are bit-identical to torch.clamp.
#pragma once

#include "../macros.h"

namespace wgan_ext {
namespace clip_math {

// torch.clamp semantics: NaN stays NaN, otherwise min(max(x, lo), hi). Written as selects so that compilers
// vectorize it.
template <typename T>
WGAN_HOST_DEVICE WGAN_INLINE T clamp(T x, T lo, T hi) {
  const T below = x < lo ? lo : x;
  const T clamped = below > hi ? hi : below;
  return x != x ? x : clamped;
}

// True when the clamped value of x sits at one of the bounds (x <= lo or x >= hi). NaN is never at a bound.
template <typename T>
WGAN_HOST_DEVICE WGAN_INLINE bool at_bound(T x, T lo, T hi) {
  return (x <= lo) | (x >= hi);
}

}  // namespace clip_math
}  // namespace wgan_ext
