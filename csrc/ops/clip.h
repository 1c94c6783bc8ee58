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
  // The same for the dtypes whose plan codes (clip_plan::code_of) are set in the bit mask `dtypes`.
  ClampSet(int64_t dtypes, double min, double max);

  clip_math::ValueClamp<float> f32{};
  clip_math::ValueClamp<double> f64{};
  clip_math::Bits16Clamp f16{};
  clip_math::Bits16Clamp bf16{};
};

// A cached launch plan (wgan_ext.Clipper keeps one per parameter set, wgan_ext/clip.py): the chunks of every
// tensor, one row of kCols int64 each: the address of the chunk's first element, its element count (1 to the
// chunk size), its tensor's position in the list, and its dtype code. The CPU kernel walks the rows with
// parallel_for, the CUDA kernel gives each row one block and reads the rows from device memory, so a call costs the
// same whatever the number of tensors. The plan holds raw addresses: its owner keeps the tensors' storages alive
// and checks before every call that every tensor still starts where the plan says (see _ClipPlan in clip.py).
namespace clip_plan {

constexpr int64_t kCols = 4;
constexpr int64_t kAllDtypes = 0xf;

// The inverse of code_of, for a code already checked to be 0-3.
inline ScalarType dtype_of_code(int64_t code) {
  switch (code) {
    case 0: return kFloat;
    case 1: return kDouble;
    case 2: return kHalf;
    default: return kBFloat16;
  }
}

inline int64_t code_of(ScalarType t) {
  switch (t) {
    case kFloat: return 0;
    case kDouble: return 1;
    case kHalf: return 2;
    default: return 3;  // kBFloat16 (the only other dtype check_clip_args accepts)
  }
}

// The plan of `tensors` (checked as clip_ checks them, and each non-overlapping and dense: a strided slice has no
// flat range to plan), cut into chunks of at most `chunk` elements; an int64 CPU tensor (rows, kCols). Empty
// tensors have no rows.
Tensor make(const Tensors& tensors, int64_t chunk, DeviceType device);

// The checks every plan (this one, optim_plan's) passes before a planned kernel reads it: an int64 contiguous tensor
// of shape (rows, cols) on `device`, num_tensors >= 0, dtypes a non-empty mask of the four codes. `maker` names the
// op that makes such plans, for the message.
void check_header(const char* op, const char* maker, const Tensor& plan, int64_t cols, int64_t num_tensors,
                  int64_t dtypes, DeviceType device);

// Checks what the planned kernels rely on before they read `plan`: int64, contiguous, (rows, kCols), on `device`;
// num_tensors >= 0; dtypes a non-empty mask of the four codes. On the CPU (where the rows can be read without a
// device round trip) also every row: element count in [1, chunk], tensor index in [0, num_tensors), dtype in the
// mask. Returns the number of elements the plan covers (CPU) or 0 (CUDA, whose kernel skips a row that breaks
// these rules instead).
int64_t check(const Tensor& plan, int64_t num_tensors, int64_t dtypes, int64_t chunk, DeviceType device);

}  // namespace clip_plan

}  // namespace wgan_ext
