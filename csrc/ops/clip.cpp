#include "clip.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
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

namespace {

int64_t dtype_mask(const DenseViews& dense) {
  int64_t mask = 0;
  for (const DenseViews::Flat& f : dense.flat) mask |= int64_t{1} << clip_plan::code_of(f.dtype);
  return mask;
}

}  // namespace

ClampSet::ClampSet(const DenseViews& dense, double min, double max) : ClampSet(dtype_mask(dense), min, max) {}

ClampSet::ClampSet(int64_t dtypes, double min, double max) {
  const bool present[4] = {(dtypes & 1) != 0, (dtypes & 2) != 0, (dtypes & 4) != 0, (dtypes & 8) != 0};
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

namespace clip_plan {

Tensor make(const Tensors& tensors, int64_t chunk, DeviceType device) {
  WGAN_CHECK(chunk >= 1, "wgan_ext::_clip_plan: chunk must be >= 1, got ", chunk);
  check_clip_args(tensors, 0.0, 0.0, device);
  std::vector<int64_t> rows;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    WGAN_CHECK(is_non_overlapping_and_dense(t), "wgan_ext::_clip_plan: tensor ", i, " (shape ", shape_of(t),
               ", strides ", strides_of(t), ") is not dense; a plan covers dense tensors only (clip_ takes any)");
    const ScalarType dtype = dtype_of(t);
    const int64_t item = dtype == kDouble ? 8 : (dtype == kFloat ? 4 : 2);
    const int64_t n = t.numel();
    const int64_t base = static_cast<int64_t>(reinterpret_cast<uintptr_t>(t.data_ptr()));
    for (int64_t start = 0; start < n; start += chunk) {
      rows.insert(rows.end(), {base + start * item, std::min(chunk, n - start), static_cast<int64_t>(i),
                               code_of(dtype)});
    }
  }
  const int64_t nrows = static_cast<int64_t>(rows.size()) / kCols;
  Tensor plan = torch::stable::empty({nrows, kCols}, kLong);
  if (!rows.empty()) std::copy(rows.begin(), rows.end(), plan.mutable_data_ptr<int64_t>());
  return plan;
}

void check_header(const char* op, const char* maker, const Tensor& plan, int64_t cols, int64_t num_tensors,
                  int64_t dtypes, DeviceType device) {
  WGAN_CHECK(plan.defined() && is_strided(plan) && dtype_of(plan) == kLong && plan.dim() == 2 &&
                 plan.size(1) == cols && plan.is_contiguous(),
             op, ": plan must be a contiguous int64 tensor of shape (rows, ", cols, ") made by ", maker);
  WGAN_CHECK(is_device_type(device_key(plan), device), op, ": expected the plan on ", device_type_name(device),
             ", got ", device_of(plan));
  WGAN_CHECK(num_tensors >= 0, op, ": num_tensors must be >= 0, got ", num_tensors);
  WGAN_CHECK(dtypes > 0 && dtypes <= kAllDtypes, op, ": dtypes must be a mask of the codes 0-3 (float32, float64, "
             "float16, bfloat16), got ", dtypes);
}

int64_t check(const Tensor& plan, int64_t num_tensors, int64_t dtypes, int64_t chunk, DeviceType device) {
  constexpr const char* op = "wgan_ext::_clip_planned_";
  check_header(op, "_clip_plan", plan, kCols, num_tensors, dtypes, device);
  if (device != DeviceType::CPU) return 0;
  const int64_t* r = plan.const_data_ptr<int64_t>();
  int64_t total = 0;
  for (int64_t i = 0; i < plan.size(0); ++i, r += kCols) {
    WGAN_CHECK(r[1] >= 1 && r[1] <= chunk && r[2] >= 0 && r[2] < num_tensors && r[3] >= 0 && r[3] <= 3 &&
                   ((dtypes >> r[3]) & 1),
               op, ": row ", i, " of the plan is not one _clip_plan makes for ", num_tensors, " tensors (count ",
               r[1], ", tensor ", r[2], ", dtype code ", r[3], ")");
    total += r[1];
  }
  return total;
}

}  // namespace clip_plan

}  // namespace wgan_ext
