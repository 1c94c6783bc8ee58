#include "gradient_penalty.h"

#include <c10/util/Exception.h>

#include <cmath>

namespace wgan_ext {
namespace {

bool is_supported(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

}  // namespace

void check_interpolate_args(const at::Tensor& real, const at::Tensor& fake, const at::Tensor& alpha) {
  TORCH_CHECK_VALUE(real.dim() >= 1 && real.size(0) > 0, "wgan_ext::interpolate: real must be (N, *) with N > 0, "
                    "got shape ", real.sizes());
  TORCH_CHECK_VALUE(real.sizes() == fake.sizes(), "wgan_ext::interpolate: real and fake shapes differ: ",
                    real.sizes(), " vs ", fake.sizes());
  TORCH_CHECK_VALUE(alpha.dim() == 1 && alpha.size(0) == real.size(0), "wgan_ext::interpolate: alpha must be (N,) "
                    "with N = ", real.size(0), ", got shape ", alpha.sizes());
  TORCH_CHECK_TYPE(is_supported(real.scalar_type()) && real.scalar_type() == fake.scalar_type() &&
                       real.scalar_type() == alpha.scalar_type(),
                   "wgan_ext::interpolate: real, fake and alpha must share one floating dtype (float32, float64, "
                   "float16, bfloat16), got ", real.scalar_type(), ", ", fake.scalar_type(), ", ",
                   alpha.scalar_type());
  TORCH_CHECK_VALUE(real.device() == fake.device() && real.device() == alpha.device(),
                    "wgan_ext::interpolate: real, fake and alpha must be on one device, got ", real.device(), ", ",
                    fake.device(), ", ", alpha.device());
}

void check_penalty_args(const at::Tensor& grad, double inv_scale, double eps) {
  TORCH_CHECK_VALUE(grad.dim() >= 1 && grad.size(0) > 0, "wgan_ext::gradient_norm_penalty: the gradient must be "
                    "(N, *) with N > 0, got shape ", grad.sizes());
  TORCH_CHECK_TYPE(is_supported(grad.scalar_type()), "wgan_ext::gradient_norm_penalty: unsupported dtype ",
                   grad.scalar_type(), "; supported: float32, float64, float16, bfloat16");
  TORCH_CHECK_VALUE(std::isfinite(inv_scale) && inv_scale > 0, "wgan_ext::gradient_norm_penalty: inv_scale must be "
                    "finite and > 0, got ", inv_scale);
  TORCH_CHECK_VALUE(std::isfinite(eps) && eps > 0, "wgan_ext::gradient_norm_penalty: eps must be finite and > 0, "
                    "got ", eps);
}

void check_penalty_backward_args(const at::Tensor& grad_penalty, const at::Tensor& grad_norms, const at::Tensor& grad,
                                 const at::Tensor& norms) {
  const at::ScalarType acc = penalty_acc_dtype(grad.scalar_type());
  const bool ok = grad.dim() >= 1 && norms.dim() == 1 && norms.size(0) == grad.size(0) &&
                  norms.scalar_type() == acc && grad_norms.sizes() == norms.sizes() &&
                  grad_norms.scalar_type() == acc && grad_penalty.numel() == 1 && grad_penalty.scalar_type() == acc &&
                  norms.device() == grad.device() && grad_norms.device() == grad.device() &&
                  grad_penalty.device() == grad.device();
  TORCH_CHECK_VALUE(ok, "wgan_ext::_gradient_norm_penalty_backward: expected grad (N, *), norms and grad_norms (N,) "
                    "and a one-element grad_penalty, all on grad's device, in ", acc, "; got grad ", grad.sizes(),
                    ", norms ", norms.sizes(), " ", norms.scalar_type(), ", grad_norms ", grad_norms.sizes(),
                    ", grad_penalty ", grad_penalty.sizes());
}

at::ScalarType penalty_acc_dtype(at::ScalarType grad_dtype) {
  return grad_dtype == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace wgan_ext
