// Host-side pieces of wgan_ext::clip_ / clip_count_ shared by the CPU and the CUDA kernel: argument checks and the
// dense views that the kernels walk as flat arrays.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Scalar.h>

#include <vector>

#include "clip_math.h"

namespace wgan_ext {

// Checks what the kernels rely on. The Python wrapper validates first with friendlier messages; these checks keep
// a direct torch.ops.wgan_ext call from reading or writing memory it should not.
void check_clip_args(at::TensorList tensors, double min, double max, c10::DeviceType expected_device);

// A flat, dense view of every tensor. A tensor that is non-overlapping and dense (any memory order) is its own view:
// its elements are exactly [data_ptr, data_ptr + numel). Any other tensor (a strided slice, say) is copied to a
// contiguous buffer, clamped there, and written back.
struct DenseViews {
  explicit DenseViews(at::TensorList tensors);
  void write_back(at::TensorList tensors) const;

  std::vector<at::Tensor> views;      // same order as the input
  std::vector<size_t> copied;         // indices whose view is a copy
};

// The four dtypes the op accepts.
bool is_supported_clip_dtype(c10::ScalarType t);

// The clamp of each dtype, its bounds rounded to that dtype exactly as torch.clamp rounds scalar bounds.
// float16 and bfloat16 are clamped on their bit patterns (stored as uint16_t).
struct ClampSet {
  ClampSet(double min, double max)
      : f32{c10::Scalar(min).to<float>(), c10::Scalar(max).to<float>()},
        f64{min, max},
        f16(clip_math::Bits16Clamp::make(c10::Scalar(min).to<at::Half>().x, c10::Scalar(max).to<at::Half>().x,
                                         0x7c00)),
        bf16(clip_math::Bits16Clamp::make(c10::Scalar(min).to<at::BFloat16>().x,
                                          c10::Scalar(max).to<at::BFloat16>().x, 0x7f80)) {}

  clip_math::ValueClamp<float> f32;
  clip_math::ValueClamp<double> f64;
  clip_math::Bits16Clamp f16;
  clip_math::Bits16Clamp bf16;
};

}  // namespace wgan_ext
