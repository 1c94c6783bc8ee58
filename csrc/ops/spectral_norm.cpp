#include "spectral_norm.h"

#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

namespace wgan_ext {

void check_layers(const char* op, const Tensors& weights, const Tensors& us, const Tensors& vs,
                  DeviceType expected_device) {
  WGAN_CHECK(weights.size() == us.size() && weights.size() == vs.size(), op,
             ": weights, us and vs must have the same length, got ", weights.size(), ", ", us.size(), ", ",
             vs.size());
  for (size_t i = 0; i < weights.size(); ++i) {
    const Tensor &W = weights[i], &u = us[i], &v = vs[i];
    WGAN_CHECK(W.dim() == 2 && u.dim() == 1 && v.dim() == 1 && u.size(0) == W.size(0) && v.size(0) == W.size(1),
               op, ": layer ", i, ": expected a matrix (h, w), u (h,) and v (w,), got ", shape_of(W), ", ",
               shape_of(u), ", ", shape_of(v));
    const ScalarType t = dtype_of(W);
    WGAN_CHECK(is_floating(t) && dtype_of(u) == t && dtype_of(v) == t, op, ": layer ", i,
               ": weight, u and v must share one floating dtype (float32, float64, float16, bfloat16), got ",
               dtype_name(t), ", ", dtype_name(dtype_of(u)), ", ", dtype_name(dtype_of(v)));
    WGAN_CHECK(W.device().type() == expected_device && u.device() == W.device() && v.device() == W.device() &&
                   W.device() == weights[0].device(),
               op, ": layer ", i, ": all tensors must be on one ", device_type_name(expected_device),
               " device, got ", device_of(W), ", ", device_of(u), ", ", device_of(v));
  }
}

void check_power_iteration_args(const Tensors& weights, const Tensors& us, const Tensors& vs, int64_t n_iterations,
                                double eps, DeviceType expected_device) {
  constexpr const char* op = "wgan_ext::spectral_norm_power_iteration_";
  WGAN_CHECK(n_iterations >= 0, op, ": n_power_iterations must be >= 0, got ", n_iterations);
  WGAN_CHECK(std::isfinite(eps) && eps > 0, op, ": eps must be finite and > 0, got ", eps);
  check_layers(op, weights, us, vs, expected_device);
}

void check_normalize_args(const Tensors& weights, const Tensors& us, const Tensors& vs,
                          DeviceType expected_device) {
  check_layers("wgan_ext::spectral_norm_normalize", weights, us, vs, expected_device);
}

namespace {

// [first, last) byte address of a strided tensor's elements (empty tensors: an empty range).
std::pair<uintptr_t, uintptr_t> byte_range(const Tensor& t) {
  const uintptr_t start = reinterpret_cast<uintptr_t>(t.const_data_ptr());
  if (t.numel() == 0) return {start, start};
  int64_t last = 0;
  for (int64_t d = 0; d < t.dim(); ++d) last += (t.size(d) - 1) * t.stride(d);
  return {start, start + static_cast<uintptr_t>((last + 1) * static_cast<int64_t>(t.element_size()))};
}

}  // namespace

void check_normalize_outs(const Tensors& weights, const Tensors& us, const Tensors& vs, const Tensors& outs) {
  constexpr const char* op = "wgan_ext::_spectral_norm_normalize_into";
  WGAN_CHECK(outs.size() == weights.size(), op, ": expected one out per layer, got ", outs.size(), " outs for ",
             weights.size(), " layers");
  std::vector<std::pair<uintptr_t, uintptr_t>> inputs;
  for (size_t i = 0; i < weights.size(); ++i) {
    for (const Tensor* t : {&weights[i], &us[i], &vs[i]}) inputs.push_back(byte_range(*t));
  }
  std::vector<std::pair<uintptr_t, uintptr_t>> written;
  for (size_t i = 0; i < outs.size(); ++i) {
    const Tensor &W = weights[i], &out = outs[i];
    WGAN_CHECK(same_shape(out, W) && dtype_of(out) == dtype_of(W) && out.device() == W.device() &&
                   out.is_contiguous(),
               op, ": out ", i, " must be a contiguous ", shape_of(W), " ", dtype_name(dtype_of(W)), " tensor on ",
               device_of(W), " (its layer's matrix), got ", shape_of(out), " ", dtype_name(dtype_of(out)), " on ",
               device_of(out), (out.is_contiguous() ? "" : ", not contiguous"));
    const auto r = byte_range(out);
    for (const auto& other : inputs) {
      WGAN_CHECK(r.first == r.second || other.first == other.second || r.second <= other.first ||
                     other.second <= r.first,
                 op, ": out ", i, " shares memory with a weight, u or v; outs must be separate memory");
    }
    for (const auto& other : written) {
      WGAN_CHECK(r.first == r.second || other.first == other.second || r.second <= other.first ||
                     other.second <= r.first,
                 op, ": out ", i, " overlaps another out");
    }
    written.push_back(r);
  }
}

int64_t saved_size(const Tensors& weights) {
  int64_t n = static_cast<int64_t>(weights.size());
  for (const Tensor& W : weights) n += W.size(0) + W.size(1);
  return n;
}

void check_normalize_backward_args(const Tensors& grads, const Tensors& weights, const Tensor& saved,
                                   DeviceType expected_device) {
  constexpr const char* op = "wgan_ext::_spectral_norm_normalize_backward";
  WGAN_CHECK(grads.size() == weights.size(), op, ": expected one gradient per weight, got ", grads.size(), " and ",
             weights.size());
  for (size_t i = 0; i < weights.size(); ++i) {
    const Tensor &W = weights[i], &G = grads[i];
    WGAN_CHECK(W.dim() == 2 && is_floating(dtype_of(W)) && W.device().type() == expected_device &&
                   W.device() == weights[0].device(),
               op, ": layer ", i, ": expected a floating matrix on ", device_type_name(expected_device), ", got ",
               shape_of(W), " ", dtype_name(dtype_of(W)), " on ", device_of(W));
    WGAN_CHECK(same_shape(G, W) && dtype_of(G) == dtype_of(W) && G.device() == W.device(), op, ": layer ",
               i, ": the gradient must match its weight (", shape_of(W), " ", dtype_name(dtype_of(W)), " on ",
               device_of(W), "), got ", shape_of(G), " ", dtype_name(dtype_of(G)), " on ", device_of(G));
  }
  const int64_t n = saved_size(weights);
  WGAN_CHECK(saved.dim() == 1 && saved.size(0) == n && dtype_of(saved) == kDouble &&
                 (weights.empty() || saved.device() == weights[0].device()),
             op, ": `saved` must be the float64 (", n, ",) tensor that spectral_norm_normalize returned, got ",
             shape_of(saved), " ", dtype_name(dtype_of(saved)), " on ", device_of(saved));
}

}  // namespace wgan_ext
