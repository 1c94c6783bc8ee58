// Host-side pieces of wgan_ext::clip_ / clip_count_ shared by the CPU and the CUDA kernel: argument checks and the
// dense views that the kernels walk as flat arrays.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

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

}  // namespace wgan_ext
