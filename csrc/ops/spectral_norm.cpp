#include "spectral_norm.h"

#include <cmath>

namespace wgan_ext {

void check_power_iteration_args(const Tensors& weights, const Tensors& us, const Tensors& vs, int64_t n_iterations,
                                double eps, DeviceType expected_device) {
  WGAN_CHECK(weights.size() == us.size() && weights.size() == vs.size(),
                    "wgan_ext::spectral_norm_power_iteration_: weights, us and vs must have the same length, got ",
                    weights.size(), ", ", us.size(), ", ", vs.size());
  WGAN_CHECK(n_iterations >= 0, "wgan_ext::spectral_norm_power_iteration_: n_power_iterations must be >= 0, "
                    "got ", n_iterations);
  WGAN_CHECK(std::isfinite(eps) && eps > 0, "wgan_ext::spectral_norm_power_iteration_: eps must be finite "
                    "and > 0, got ", eps);
  for (size_t i = 0; i < weights.size(); ++i) {
    const Tensor &W = weights[i], &u = us[i], &v = vs[i];
    WGAN_CHECK(W.dim() == 2 && u.dim() == 1 && v.dim() == 1 && u.size(0) == W.size(0) &&
                          v.size(0) == W.size(1),
                      "wgan_ext::spectral_norm_power_iteration_: layer ", i, ": expected a matrix (h, w), u (h,) and "
                      "v (w,), got ", shape_of(W), ", ", shape_of(u), ", ", shape_of(v));
    const ScalarType t = W.scalar_type();
    WGAN_CHECK(is_floating(t) &&
                         u.scalar_type() == t && v.scalar_type() == t,
                     "wgan_ext::spectral_norm_power_iteration_: layer ", i, ": weight, u and v must share one "
                     "floating dtype (float32, float64, float16, bfloat16), got ", dtype_name(t), ", ",
                     dtype_name(u.scalar_type()), ", ", dtype_name(v.scalar_type()));
    WGAN_CHECK(W.device().type() == expected_device && u.device() == W.device() && v.device() == W.device() &&
                          W.device() == weights[0].device(),
                      "wgan_ext::spectral_norm_power_iteration_: layer ", i, ": all tensors must be on one ",
                      device_type_name(expected_device), " device, got ", device_of(W), ", ", device_of(u), ", ",
                      device_of(v));
  }
}

}  // namespace wgan_ext
