// Host-side checks shared by the CPU and CUDA kernels of wgan_ext::spectral_norm_power_iteration_,
// spectral_norm_normalize and its backward.
#pragma once

#include "../stable.h"

namespace wgan_ext {

// Every layer: W a matrix (h, w), u (h,), v (w,), one floating dtype per layer, all on one device of the type.
void check_layers(const char* op, const Tensors& weights, const Tensors& us, const Tensors& vs,
                  DeviceType expected_device);

void check_power_iteration_args(const Tensors& weights, const Tensors& us, const Tensors& vs, int64_t n_iterations,
                                double eps, DeviceType expected_device);

void check_normalize_args(const Tensors& weights, const Tensors& us, const Tensors& vs, DeviceType expected_device);

// _spectral_norm_normalize_into's outs: one per layer, contiguous, the layer's matrix shape, dtype and device, and
// sharing no memory with any weight, u, v or other out (the kernel reads every weight before it writes any out).
void check_normalize_outs(const Tensors& weights, const Tensors& us, const Tensors& vs, const Tensors& outs);

// The length of spectral_norm_normalize's `saved` output: the L sigmas, then each layer's u (h) and v (w).
int64_t saved_size(const Tensors& weights);

void check_normalize_backward_args(const Tensors& grads, const Tensors& weights, const Tensor& saved,
                                   DeviceType expected_device);

}  // namespace wgan_ext
