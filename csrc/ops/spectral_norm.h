// Host-side checks shared by the CPU and CUDA kernels of wgan_ext::spectral_norm_power_iteration_.
#pragma once

#include "../stable.h"

namespace wgan_ext {

void check_power_iteration_args(const Tensors& weights, const Tensors& us, const Tensors& vs, int64_t n_iterations,
                                double eps, DeviceType expected_device);

}  // namespace wgan_ext
