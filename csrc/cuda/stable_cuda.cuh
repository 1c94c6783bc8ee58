// The CUDA side of csrc/stable.h: device guard, current stream and launch checks through the stable ABI only
// (setup.py compiles the CUDA sources with USE_CUDA, which declares the shim's CUDA functions).
#pragma once

#include <cuda_runtime.h>
#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/macros.h>

#include "../stable.h"

namespace wgan_ext {

using DeviceGuard = torch::stable::accelerator::DeviceGuard;

// The stream torch would launch on for t's device (torch.cuda.current_stream), so our kernels order with torch's
// ops and are captured by CUDA graphs.
inline cudaStream_t current_stream(const Tensor& t) {
  void* stream = nullptr;
  TORCH_ERROR_CODE_CHECK(aoti_torch_get_current_cuda_stream(t.get_device_index(), &stream));
  return static_cast<cudaStream_t>(stream);
}

}  // namespace wgan_ext

// After every launch: a launch error (bad configuration, no kernel image for the GPU) becomes a RuntimeError.
#define WGAN_CUDA_LAUNCH_CHECK() STD_CUDA_KERNEL_LAUNCH_CHECK()
