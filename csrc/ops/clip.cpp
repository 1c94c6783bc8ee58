#include "clip.h"

#include <ATen/MemoryOverlap.h>
#include <c10/util/Exception.h>

#include <cmath>

namespace wgan_ext {

bool is_supported_clip_dtype(c10::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

void check_clip_args(at::TensorList tensors, double min, double max, c10::DeviceType expected_device) {
  TORCH_CHECK_VALUE(!std::isnan(min) && !std::isnan(max), "wgan_ext::clip_: bounds must not be NaN, got min=", min,
                    ", max=", max);
  TORCH_CHECK_VALUE(min <= max, "wgan_ext::clip_: min must be <= max, got min=", min, ", max=", max);
  if (tensors.empty()) return;
  const c10::Device device = tensors[0].device();
  TORCH_CHECK_VALUE(device.type() == expected_device, "wgan_ext::clip_: expected tensors on ",
                    c10::DeviceTypeName(expected_device), ", got ", device);
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& t = tensors[i];
    TORCH_CHECK_VALUE(t.defined(), "wgan_ext::clip_: tensor ", i, " is undefined");
    TORCH_CHECK_VALUE(t.device() == device, "wgan_ext::clip_: all tensors must be on one device; tensor 0 is on ",
                      device, " but tensor ", i, " is on ", t.device());
    TORCH_CHECK_VALUE(t.layout() == at::kStrided, "wgan_ext::clip_: tensor ", i, " has layout ", t.layout(),
                      "; only dense (strided) tensors are supported");
    TORCH_CHECK_TYPE(is_supported_clip_dtype(t.scalar_type()), "wgan_ext::clip_: tensor ", i, " has dtype ",
                     t.scalar_type(), "; supported: float32, float64, float16, bfloat16");
    TORCH_CHECK_VALUE(at::has_internal_overlap(t) != at::MemOverlap::Yes, "wgan_ext::clip_: tensor ", i,
                      " has elements that share memory (an expanded view?); clamp a tensor that owns its elements");
  }
}

DenseViews::DenseViews(at::TensorList tensors) {
  views.reserve(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& t = tensors[i];
    if (t.is_non_overlapping_and_dense()) {
      views.push_back(t);
    } else {
      views.push_back(t.contiguous());
      copied.push_back(i);
    }
  }
}

void DenseViews::write_back(at::TensorList tensors) const {
  for (size_t i : copied) {
    // The input tensor's storage is written through its own strides; autograd is not involved (the op is called
    // under no_grad by the Python layer, and its kernels run below the autograd key).
    at::Tensor target = tensors[i];
    target.copy_(views[i]);
  }
}

}  // namespace wgan_ext
