// Host-side pieces of wgan_ext::clip_ / clip_count_ shared by the CPU and the CUDA kernel: argument checks, the
// dense views that the kernels walk as flat arrays, and the bounds in each dtype.
#pragma once

#include <utility>
#include <vector>

#include "../stable.h"
#include "clip_math.h"

namespace wgan_ext {

// Checks what the kernels rely on. The Python wrapper validates first with friendlier messages; these checks keep
// a direct torch.ops.wgan_ext call from reading or writing memory it should not.
void check_clip_args(const Tensors& tensors, double min, double max, DeviceType expected_device);

// A flat, dense view of every tensor. A tensor that is non-overlapping and dense (any memory order) is its own view:
// its elements are exactly [data_ptr, data_ptr + numel). Any other tensor (a strided slice, say) is copied to a
// contiguous buffer, clamped there, and written back.
// The kernels see only `flat` (pointers, sizes and dtypes read once, so the per-tensor host work stays small).
struct DenseViews {
  explicit DenseViews(const Tensors& tensors);
  void write_back(const Tensors& tensors) const;

  struct Flat {
    void* data;
    int64_t numel;
    ScalarType dtype;
  };
  std::vector<Flat> flat;                          // same order as the input
  std::vector<std::pair<size_t, Tensor>> copies;   // (index, contiguous copy) of the tensors that are not dense
};

// The four dtypes the op accepts.
bool is_supported_clip_dtype(ScalarType t);

// The clamp of each dtype present in the list, its bounds rounded to that dtype exactly as torch.clamp rounds scalar
// bounds (double -> float -> float16/bfloat16); a bound outside a present dtype's range is an error, as it is for
// torch.clamp. float16 and bfloat16 are clamped on their bit patterns (stored as uint16_t).
struct ClampSet {
  ClampSet(const DenseViews& dense, double min, double max);

  clip_math::ValueClamp<float> f32{};
  clip_math::ValueClamp<double> f64{};
  clip_math::Bits16Clamp f16{};
  clip_math::Bits16Clamp bf16{};
};

}  // namespace wgan_ext
