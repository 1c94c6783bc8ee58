// Per-element math of the fused clamp, shared by the CPU and the CUDA kernel.
//
// Both forms return, for each element, either the element itself or a bound already rounded to the tensor's dtype
// (as torch.clamp rounds scalar bounds), so results are bit-identical to torch.clamp: NaN stays the same NaN, and a
// value equal to a bound (-0.0 against +0.0 included) is kept as it is. Written as selects so compilers vectorize.
#pragma once

#include <cstdint>

#include "../macros.h"

namespace wgan_ext {
namespace clip_math {

// float and double: compare values. Every comparison with NaN is false, so NaN is returned unchanged.
template <typename T>
struct ValueClamp {
  T lo;
  T hi;

  // max(lo, x) then min(hi, .), each spelled as the select that x86 max/min instructions compute exactly (the
  // second operand wins on NaN or equality), so compilers emit them: NaN and a value equal to a bound stay x.
  WGAN_HOST_DEVICE WGAN_INLINE T operator()(T x) const {
    const T at_least_lo = lo > x ? lo : x;
    return hi < at_least_lo ? hi : at_least_lo;
  }

  // True when the clamped value sits at a bound (x <= lo or x >= hi); never for NaN.
  WGAN_HOST_DEVICE WGAN_INLINE bool at_bound(T x) const { return (x <= lo) | (x >= hi); }
};

// float16 and bfloat16, on their bit patterns: an order-preserving integer key (sign-magnitude to two's
// complement; +0 and -0 both map to 0) replaces the conversion to float, which costs more than the clamp on CPUs
// without F16C. Magnitudes above the infinity pattern are NaN.
struct Bits16Clamp {
  int16_t lo_key;
  int16_t hi_key;
  uint16_t lo;        // bit pattern of the lower bound
  uint16_t hi;        // bit pattern of the upper bound
  uint16_t inf_bits;  // 0x7c00 for float16, 0x7f80 for bfloat16

  // Keys fit 16 bits (magnitudes are at most 0x7fff), so CPUs compare 8 or 16 lanes per instruction.
  WGAN_HOST_DEVICE WGAN_INLINE static int16_t key(uint16_t bits) {
    const int16_t magnitude = static_cast<int16_t>(bits & 0x7fff);
    return (bits & 0x8000) ? static_cast<int16_t>(-magnitude) : magnitude;
  }

  WGAN_HOST_DEVICE WGAN_INLINE static bool is_nan(uint16_t bits, uint16_t inf_bits) {
    return static_cast<uint16_t>(bits & 0x7fff) > inf_bits;
  }

  WGAN_HOST_DEVICE WGAN_INLINE static Bits16Clamp make(uint16_t lo_bits, uint16_t hi_bits, uint16_t inf_bits) {
    return Bits16Clamp{key(lo_bits), key(hi_bits), lo_bits, hi_bits, inf_bits};
  }

  WGAN_HOST_DEVICE WGAN_INLINE uint16_t operator()(uint16_t bits) const {
    const int16_t k = key(bits);
    const uint16_t clamped = k < lo_key ? lo : (k > hi_key ? hi : bits);
    return is_nan(bits, inf_bits) ? bits : clamped;
  }

  WGAN_HOST_DEVICE WGAN_INLINE bool at_bound(uint16_t bits) const {
    const int16_t k = key(bits);
    return ((k <= lo_key) | (k >= hi_key)) & !is_nan(bits, inf_bits);
  }
};

}  // namespace clip_math
}  // namespace wgan_ext
