#include "clip.h"

#include <cmath>
#include <limits>

namespace wgan_ext {

bool is_supported_clip_dtype(ScalarType t) { return is_floating(t); }

void check_clip_args(const Tensors& tensors, double min, double max, DeviceType expected_device) {
  WGAN_CHECK(!std::isnan(min) && !std::isnan(max), "wgan_ext::clip_: bounds must not be NaN, got min=", min,
             ", max=", max);
  WGAN_CHECK(min <= max, "wgan_ext::clip_: min must be <= max, got min=", min, ", max=", max);
  if (tensors.empty()) return;
  const DeviceKey device = device_key(tensors[0]);
  WGAN_CHECK(is_device_type(device, expected_device), "wgan_ext::clip_: expected tensors on ",
             device_type_name(expected_device), ", got ", device_of(tensors[0]));
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    WGAN_CHECK(t.defined(), "wgan_ext::clip_: tensor ", i, " is undefined");
    WGAN_CHECK(device_key(t) == device, "wgan_ext::clip_: all tensors must be on one device; tensor 0 is on ",
               device_of(tensors[0]), " but tensor ", i, " is on ", device_of(t));
    WGAN_CHECK(is_strided(t), "wgan_ext::clip_: tensor ", i, " is not a dense (strided) tensor; only dense tensors "
               "are supported");
    WGAN_CHECK(is_supported_clip_dtype(dtype_of(t)), "wgan_ext::clip_: tensor ", i, " has dtype ",
               dtype_name(dtype_of(t)), "; supported: float32, float64, float16, bfloat16");
    WGAN_CHECK(!has_internal_overlap(t), "wgan_ext::clip_: tensor ", i,
               " has elements that share memory (an expanded view?); clamp a tensor that owns its elements");
  }
}

DenseViews::DenseViews(const Tensors& tensors) {
  flat.reserve(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    const ScalarType dtype = dtype_of(t);
    if (is_non_overlapping_and_dense(t)) {
      flat.push_back({t.data_ptr(), t.numel(), dtype});
    } else {
      copies.emplace_back(i, torch::stable::contiguous(t));
      flat.push_back({copies.back().second.data_ptr(), t.numel(), dtype});
    }
  }
}

void DenseViews::write_back(const Tensors& tensors) const {
  for (const auto& [i, copy] : copies) {
    // The input tensor's storage is written through its own strides; autograd is not involved (the op is called
    // under no_grad by the Python layer, and its kernels run below the autograd key).
    Tensor target = tensors[i];
    torch::stable::copy_(target, copy);
  }
}

namespace {

// c10::Scalar(bound).to<T>() for a floating T: the bound rounded to T (through float for the 16-bit types), or an
// error when it overflows T's range (infinities convert).
template <typename T>
T bound_to(double bound, const char* dtype) {
  const double lowest = static_cast<double>(std::numeric_limits<T>::lowest());
  const double highest = static_cast<double>(std::numeric_limits<T>::max());
  WGAN_CHECK(!std::isfinite(bound) || (bound >= lowest && bound <= highest), "wgan_ext::clip_: the bound ", bound,
             " is outside the range of ", dtype, " (", lowest, " to ", highest, "), the dtype of a tensor to clamp");
  if constexpr (std::is_same_v<T, double>) {
    return bound;
  } else if constexpr (std::is_same_v<T, float>) {
    return static_cast<float>(bound);
  } else {
    return T(static_cast<float>(bound));
  }
}

}  // namespace

ClampSet::ClampSet(const DenseViews& dense, double min, double max) {
  bool present[4] = {false, false, false, false};
  for (const DenseViews::Flat& f : dense.flat) {
    const ScalarType s = f.dtype;
    present[0] |= s == kFloat;
    present[1] |= s == kDouble;
    present[2] |= s == kHalf;
    present[3] |= s == kBFloat16;
  }
  if (present[0]) f32 = {bound_to<float>(min, "float32"), bound_to<float>(max, "float32")};
  if (present[1]) f64 = {min, max};
  if (present[2]) {
    f16 = clip_math::Bits16Clamp::make(bound_to<Half>(min, "float16").x, bound_to<Half>(max, "float16").x, 0x7c00);
  }
  if (present[3]) {
    bf16 = clip_math::Bits16Clamp::make(bound_to<BFloat16>(min, "bfloat16").x, bound_to<BFloat16>(max, "bfloat16").x,
                                        0x7f80);
  }
}

}  // namespace wgan_ext
