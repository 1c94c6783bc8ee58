// Host-side checks shared by the CPU and CUDA kernels of wgan_ext::spectral_norm_power_iteration_.
#pragma once

#include <ATen/core/Tensor.h>

namespace wgan_ext {

void check_power_iteration_args(at::TensorList weights, at::TensorList us, at::TensorList vs, int64_t n_iterations,
                                double eps, c10::DeviceType expected_device);

}  // namespace wgan_ext
