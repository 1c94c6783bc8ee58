#include "spectral_norm.h"

#include <c10/util/Exception.h>

#include <cmath>

namespace wgan_ext {

void check_power_iteration_args(at::TensorList weights, at::TensorList us, at::TensorList vs, int64_t n_iterations,
                                double eps, c10::DeviceType expected_device) {
  TORCH_CHECK_VALUE(weights.size() == us.size() && weights.size() == vs.size(),
                    "wgan_ext::spectral_norm_power_iteration_: weights, us and vs must have the same length, got ",
                    weights.size(), ", ", us.size(), ", ", vs.size());
  TORCH_CHECK_VALUE(n_iterations >= 0, "wgan_ext::spectral_norm_power_iteration_: n_power_iterations must be >= 0, "
                    "got ", n_iterations);
  TORCH_CHECK_VALUE(std::isfinite(eps) && eps > 0, "wgan_ext::spectral_norm_power_iteration_: eps must be finite "
                    "and > 0, got ", eps);
  for (size_t i = 0; i < weights.size(); ++i) {
    const at::Tensor &W = weights[i], &u = us[i], &v = vs[i];
    TORCH_CHECK_VALUE(W.dim() == 2 && u.dim() == 1 && v.dim() == 1 && u.size(0) == W.size(0) &&
                          v.size(0) == W.size(1),
                      "wgan_ext::spectral_norm_power_iteration_: layer ", i, ": expected a matrix (h, w), u (h,) and "
                      "v (w,), got ", W.sizes(), ", ", u.sizes(), ", ", v.sizes());
    const at::ScalarType t = W.scalar_type();
    TORCH_CHECK_TYPE((t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16) &&
                         u.scalar_type() == t && v.scalar_type() == t,
                     "wgan_ext::spectral_norm_power_iteration_: layer ", i, ": weight, u and v must share one "
                     "floating dtype (float32, float64, float16, bfloat16), got ", t, ", ", u.scalar_type(), ", ",
                     v.scalar_type());
    TORCH_CHECK_VALUE(W.device().type() == expected_device && u.device() == W.device() && v.device() == W.device() &&
                          W.device() == weights[0].device(),
                      "wgan_ext::spectral_norm_power_iteration_: layer ", i, ": all tensors must be on one ",
                      c10::DeviceTypeName(expected_device), " device, got ", W.device(), ", ", u.device(), ", ",
                      v.device());
  }
}

}  // namespace wgan_ext
