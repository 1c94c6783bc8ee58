// Host-side checks shared by the CPU and CUDA kernels of wgan_ext::interpolate and wgan_ext::gradient_norm_penalty.
#pragma once

#include "../stable.h"

namespace wgan_ext {

void check_interpolate_args(const Tensor& real, const Tensor& fake, const Tensor& alpha);
void check_penalty_args(const Tensor& grad, double inv_scale, double eps);
void check_penalty_backward_args(const Tensor& grad_penalty, const Tensor& grad_norms, const Tensor& grad,
                                 const Tensor& norms);

// The dtype of the penalty, the norms and the per-sample math: double for double, float for the others.
ScalarType penalty_acc_dtype(ScalarType grad_dtype);


}  // namespace wgan_ext
