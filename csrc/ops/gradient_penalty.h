// Host-side checks shared by the CPU and CUDA kernels of wgan_ext::interpolate and wgan_ext::gradient_norm_penalty.
#pragma once

#include <ATen/core/Tensor.h>

namespace wgan_ext {

void check_interpolate_args(const at::Tensor& real, const at::Tensor& fake, const at::Tensor& alpha);
void check_penalty_args(const at::Tensor& grad, double inv_scale, double eps);
void check_penalty_backward_args(const at::Tensor& grad_penalty, const at::Tensor& grad_norms, const at::Tensor& grad,
                                 const at::Tensor& norms);

// The dtype of the penalty, the norms and the per-sample math: double for double, float for the others.
at::ScalarType penalty_acc_dtype(at::ScalarType grad_dtype);

}  // namespace wgan_ext
