#include "gradient_penalty.h"

#include <cmath>

namespace wgan_ext {
namespace {

bool is_supported(ScalarType t) { return is_floating(t); }

}  // namespace


void check_interpolate_args(const Tensor& real, const Tensor& fake, const Tensor& alpha) {
  WGAN_CHECK(real.dim() >= 1 && real.size(0) > 0, "wgan_ext::interpolate: real must be (N, *) with N > 0, "
                    "got shape ", shape_of(real));
  WGAN_CHECK(same_shape(real, fake), "wgan_ext::interpolate: real and fake shapes differ: ",
                    shape_of(real), " vs ", shape_of(fake));
  WGAN_CHECK(alpha.dim() == 1 && alpha.size(0) == real.size(0), "wgan_ext::interpolate: alpha must be (N,) "
                    "with N = ", real.size(0), ", got shape ", shape_of(alpha));
  WGAN_CHECK(is_supported(dtype_of(real)) && dtype_of(real) == dtype_of(fake) &&
                       dtype_of(real) == dtype_of(alpha),
                   "wgan_ext::interpolate: real, fake and alpha must share one floating dtype (float32, float64, "
                   "float16, bfloat16), got ", dtype_name(dtype_of(real)), ", ", dtype_name(dtype_of(fake)),
                   ", ", dtype_name(dtype_of(alpha)));
  WGAN_CHECK(real.device() == fake.device() && real.device() == alpha.device(),
                    "wgan_ext::interpolate: real, fake and alpha must be on one device, got ", device_of(real), ", ",
                    device_of(fake), ", ", device_of(alpha));
}

void check_penalty_args(const Tensor& grad, double inv_scale, double eps) {
  WGAN_CHECK(grad.dim() >= 1 && grad.size(0) > 0, "wgan_ext::gradient_norm_penalty: the gradient must be "
                    "(N, *) with N > 0, got shape ", shape_of(grad));
  WGAN_CHECK(is_supported(dtype_of(grad)), "wgan_ext::gradient_norm_penalty: unsupported dtype ",
                   dtype_name(dtype_of(grad)), "; supported: float32, float64, float16, bfloat16");
  WGAN_CHECK(std::isfinite(inv_scale) && inv_scale > 0, "wgan_ext::gradient_norm_penalty: inv_scale must be "
                    "finite and > 0, got ", inv_scale);
  WGAN_CHECK(std::isfinite(eps) && eps > 0, "wgan_ext::gradient_norm_penalty: eps must be finite and > 0, "
                    "got ", eps);
}

void check_penalty_backward_args(const Tensor& grad_penalty, const Tensor& grad_norms, const Tensor& grad,
                                 const Tensor& norms) {
  const ScalarType acc = penalty_acc_dtype(dtype_of(grad));
  const bool ok = grad.dim() >= 1 && norms.dim() == 1 && norms.size(0) == grad.size(0) &&
                  dtype_of(norms) == acc && same_shape(grad_norms, norms) &&
                  dtype_of(grad_norms) == acc && grad_penalty.numel() == 1 && dtype_of(grad_penalty) == acc &&
                  norms.device() == grad.device() && grad_norms.device() == grad.device() &&
                  grad_penalty.device() == grad.device();
  WGAN_CHECK(ok, "wgan_ext::_gradient_norm_penalty_backward: expected grad (N, *), norms and grad_norms (N,) "
                    "and a one-element grad_penalty, all on grad's device, in ", dtype_name(acc), "; got grad ",
                    shape_of(grad), ", norms ", shape_of(norms), " ", dtype_name(dtype_of(norms)), ", grad_norms ",
                    shape_of(grad_norms), ", grad_penalty ", shape_of(grad_penalty));
}

ScalarType penalty_acc_dtype(ScalarType grad_dtype) {
  return grad_dtype == kDouble ? kDouble : kFloat;
}

}  // namespace wgan_ext
