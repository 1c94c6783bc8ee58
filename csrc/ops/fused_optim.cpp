#include "fused_optim.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "clip.h"

#include <cmath>

namespace wgan_ext {

bool is_supported_optim_dtype(ScalarType t) { return is_floating(t); }

namespace {

// Element i of both tensors sits at offset i from their data pointers: both dense and non-overlapping, with the same
// strides along every dimension longer than 1 (a stride along a size-1 dimension is never used, and autograd's
// gradients may differ from the parameter there: AccumulateGrad's layout contract ignores those dimensions).
bool same_dense_layout(const Tensor& a, const Tensor& b) {
  if (a.numel() <= 1) return true;
  if (a.is_contiguous() && b.is_contiguous()) return true;  // the same shape was checked before
  if (!is_non_overlapping_and_dense(a) || !is_non_overlapping_and_dense(b)) return false;
  for (int64_t d = 0; d < a.dim(); ++d) {
    if (a.size(d) != 1 && a.stride(d) != b.stride(d)) return false;
  }
  return true;
}

void check_companion(const char* op, const Tensor& p, const Tensor& t, size_t i, const char* name) {
  WGAN_CHECK(t.defined(), op, ": ", name, " ", i, " is undefined");
  WGAN_CHECK(same_device(t, p), op, ": ", name, " ", i, " is on ", device_of(t),
                    " but its parameter is on ", device_of(p));
  WGAN_CHECK(is_strided(t), op, ": ", name, " ", i, " is not a dense (strided) tensor; only dense tensors "
                    "are supported (sparse gradients are not)");
  WGAN_CHECK(dtype_of(t) == dtype_of(p), op, ": ", name, " ", i, " has dtype ", dtype_name(dtype_of(t)),
                   " but its parameter has dtype ", dtype_name(dtype_of(p)));
  WGAN_CHECK(same_shape(t, p), op, ": ", name, " ", i, " has shape ", shape_of(t),
                    " but its parameter has shape ", shape_of(p));
  WGAN_CHECK(same_dense_layout(p, t), op, ": ",
                    name, " ", i, " has strides ", strides_of(t), " but its parameter has strides ", strides_of(p),
                    "; the fused step needs the same dense layout for both (the optimizers send such tensors to the "
                    "pure-torch reference)");
}

void check_clip_value(const char* op, std::optional<double> clip_value) {
  if (!clip_value.has_value()) return;
  const double c = *clip_value;
  WGAN_CHECK(std::isfinite(c) && c > 0, op, ": clip_value must be finite and > 0 (None: no clamp), got ", c);
}

}  // namespace

void check_optim_tensors(const char* op, const Tensors& params, const Tensors& grads, const Tensors& state1,
                         const char* state1_name, const Tensors& state2, const char* state2_name,
                         bool state2_required, DeviceType expected_device) {
  const size_t n = params.size();
  WGAN_CHECK(grads.size() == n && state1.size() == n, op, ": expected one grad and one ", state1_name,
                    " per parameter, got ", n, " params, ", grads.size(), " grads, ", state1.size(), " ",
                    state1_name);
  const bool with_state2 = state2_required || !state2.empty();
  WGAN_CHECK(!with_state2 || state2.size() == n, op, ": expected one ", state2_name, " per parameter, got ",
                    n, " params and ", state2.size(), " ", state2_name);
  if (n == 0) return;
  const DeviceKey device = device_key(params[0]);
  WGAN_CHECK(is_device_type(device, expected_device), op, ": expected tensors on ",
                    device_type_name(expected_device), ", got ", device_of(params[0]));
  for (size_t i = 0; i < n; ++i) {
    const Tensor& p = params[i];
    WGAN_CHECK(p.defined(), op, ": parameter ", i, " is undefined");
    WGAN_CHECK(device_key(p) == device, op, ": all tensors must be on one device; parameter 0 is on ",
                      device_of(params[0]), " but parameter ", i, " is on ", device_of(p));
    WGAN_CHECK(is_strided(p), op, ": parameter ", i, " is not a dense (strided) tensor; only dense tensors are "
                      "supported");
    WGAN_CHECK(is_supported_optim_dtype(dtype_of(p)), op, ": parameter ", i, " has dtype ",
                     dtype_name(dtype_of(p)), "; supported: float32, float64, float16, bfloat16");
    WGAN_CHECK(p.numel() <= 1 || is_non_overlapping_and_dense(p), op, ": parameter ", i,
                      " is not dense (a strided slice or an expanded view); the optimizers send such parameters to "
                      "the pure-torch reference");
    check_companion(op, p, grads[i], i, "grad");
    check_companion(op, p, state1[i], i, state1_name);
    if (with_state2) check_companion(op, p, state2[i], i, state2_name);
  }
}

void check_rmsprop_args(const Tensors& params, const Tensors& momentum_buffers, double lr, double alpha, double eps,
                        double weight_decay, double momentum, std::optional<double> clip_value) {
  constexpr const char* op = "wgan_ext::rmsprop_clip_step_";
  WGAN_CHECK(lr >= 0, op, ": lr must be >= 0, got ", lr);
  WGAN_CHECK(alpha >= 0, op, ": alpha must be >= 0, got ", alpha);
  WGAN_CHECK(eps >= 0, op, ": eps must be >= 0, got ", eps);
  WGAN_CHECK(weight_decay >= 0, op, ": weight_decay must be >= 0, got ", weight_decay);
  WGAN_CHECK(momentum >= 0, op, ": momentum must be >= 0, got ", momentum);
  check_clip_value(op, clip_value);
  if (momentum > 0) {
    WGAN_CHECK(momentum_buffers.size() == params.size(), op, ": momentum > 0 needs one momentum buffer per "
                      "parameter, got ", params.size(), " params and ", momentum_buffers.size(), " buffers");
  } else {
    WGAN_CHECK(momentum_buffers.empty(), op, ": momentum == 0 takes no momentum buffers (pass []), got ",
                      momentum_buffers.size());
  }
}

void check_adam_args(double lr, double beta1, double beta2, double eps, double weight_decay, int64_t step,
                     std::optional<double> clip_value) {
  constexpr const char* op = "wgan_ext::adam_clip_step_";
  WGAN_CHECK(lr >= 0, op, ": lr must be >= 0, got ", lr);
  WGAN_CHECK(beta1 >= 0 && beta1 < 1, op, ": beta1 must be in [0, 1), got ", beta1);
  WGAN_CHECK(beta2 >= 0 && beta2 < 1, op, ": beta2 must be in [0, 1), got ", beta2);
  WGAN_CHECK(eps >= 0, op, ": eps must be >= 0, got ", eps);
  WGAN_CHECK(weight_decay >= 0, op, ": weight_decay must be >= 0, got ", weight_decay);
  WGAN_CHECK(step >= 1, op, ": step (the count after this step) must be >= 1, got ", step);
  check_clip_value(op, clip_value);
}

template <typename T>
optim_math::AdamHyper<T> make_adam_hyper(double lr, double beta1, double beta2, double eps, double weight_decay,
                                          int64_t step, std::optional<double> clip_value) {
  // As torch.optim.Adam computes them in Python floats: 1 - beta ** step, lr / bias_correction1, bc2 ** 0.5.
  const double s = static_cast<double>(step);
  const double bias_correction1 = 1.0 - std::pow(beta1, s);
  const double bias_correction2 = 1.0 - std::pow(beta2, s);
  const double step_size = lr / bias_correction1;
  return optim_math::AdamHyper<T>{static_cast<T>(-step_size),
                                  static_cast<T>(1.0 - beta1),
                                  static_cast<T>(beta2),
                                  static_cast<T>(1.0 - beta2),
                                  static_cast<T>(std::pow(bias_correction2, 0.5)),
                                  static_cast<T>(eps),
                                  static_cast<T>(weight_decay),
                                  weight_decay != 0.0,
                                  make_clamp<T>(clip_value)};
}

template optim_math::AdamHyper<float> make_adam_hyper<float>(double, double, double, double, double, int64_t,
                                                             std::optional<double>);
template optim_math::AdamHyper<double> make_adam_hyper<double>(double, double, double, double, double, int64_t,
                                                               std::optional<double>);

namespace optim_plan {

Tensor make(const Tensors& params, const Tensors& grads, const Tensors& state1, const Tensors& state2, int64_t chunk,
            DeviceType device) {
  constexpr const char* op = "wgan_ext::_optim_plan";
  WGAN_CHECK(chunk >= 1, op, ": chunk must be >= 1, got ", chunk);
  check_optim_tensors(op, params, grads, state1, "state", state2, "second state", false, device);
  const bool with_state2 = !state2.empty();
  std::vector<int64_t> rows;
  for (size_t i = 0; i < params.size(); ++i) {
    const ScalarType dtype = dtype_of(params[i]);
    const int64_t item = dtype == kDouble ? 8 : (dtype == kFloat ? 4 : 2);
    const int64_t n = params[i].numel();
    auto address = [](const Tensor& t) { return static_cast<int64_t>(reinterpret_cast<uintptr_t>(t.data_ptr())); };
    const int64_t p = n ? address(params[i]) : 0, g = n ? address(grads[i]) : 0, s1 = n ? address(state1[i]) : 0;
    const int64_t s2 = n && with_state2 ? address(state2[i]) : 0;
    for (int64_t start = 0; start < n; start += chunk) {
      const int64_t off = start * item;
      rows.insert(rows.end(), {p + off, g + off, s1 + off, s2 ? s2 + off : 0, std::min(chunk, n - start),
                               static_cast<int64_t>(i), clip_plan::code_of(dtype), off});
    }
  }
  const int64_t nrows = static_cast<int64_t>(rows.size()) / kCols;
  Tensor plan = torch::stable::empty({nrows, kCols}, kLong);
  if (!rows.empty()) std::copy(rows.begin(), rows.end(), plan.mutable_data_ptr<int64_t>());
  return plan;
}

void check(const char* op, const Tensor& plan, int64_t num_tensors, int64_t dtypes, int64_t chunk,
           bool state2_required, DeviceType device) {
  clip_plan::check_header(op, "_optim_plan", plan, kCols, num_tensors, dtypes, device);
  if (device != DeviceType::CPU) return;
  const int64_t* r = plan.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < plan.size(0); ++i, r += kCols) {
    WGAN_CHECK(r[0] != 0 && r[1] != 0 && r[2] != 0 && (!state2_required || r[3] != 0) && r[4] >= 1 &&
                   r[4] <= chunk && r[5] >= 0 && r[5] < num_tensors && r[6] >= 0 && r[6] <= 3 &&
                   ((dtypes >> r[6]) & 1) && r[7] >= 0,
               op, ": row ", i, " of the plan is not one _optim_plan makes for ", num_tensors, " tensors",
               state2_required ? " with two states" : "");
  }
}

const int64_t* check_grad_ptrs(const char* op, const Tensor& plan, const Tensor& grad_ptrs, int64_t num_tensors) {
  WGAN_CHECK(is_strided(grad_ptrs) && dtype_of(grad_ptrs) == kLong && grad_ptrs.dim() == 1 &&
                 grad_ptrs.numel() == num_tensors && grad_ptrs.is_contiguous() &&
                 is_device_type(device_key(grad_ptrs), DeviceType::CPU),
             op, ": grad_ptrs must be a contiguous int64 CPU tensor of num_tensors (", num_tensors, ") addresses");
  const int64_t* g = grad_ptrs.const_data_ptr<int64_t>();
  const int64_t* r = plan.const_data_ptr<int64_t>();  // checked before: every row's index is < num_tensors
  for (int64_t i = 0; i < plan.size(0); ++i, r += kCols) {
    WGAN_CHECK(g[r[5]] != 0, op, ": grad_ptrs: the gradient address of tensor ", r[5], " is null");
  }
  return g;
}

}  // namespace optim_plan

}  // namespace wgan_ext
