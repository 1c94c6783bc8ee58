#include "spectral_norm.h"

#include <cmath>

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
