// Launch helpers of the kernels that sync the whole grid between phases (csrc/cuda/spectral_norm*_cuda.cu).
#pragma once

#include <cuda_runtime.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <utility>

#include "stable_cuda.cuh"

namespace wgan_ext {
namespace coop {

// Co-resident blocks of `kernel` at `threads` per block on `device` (occupancy x SMs), and whether the device
// launches cooperatively; queried once per (kernel, device).
struct Residency {
  int blocks;
  bool cooperative;
};

template <typename Kernel>
Residency residency(Kernel kernel, int threads, int device) {
  static std::mutex mutex;
  static std::map<std::pair<const void*, int>, Residency> cache;
  const std::lock_guard<std::mutex> lock(mutex);
  const auto key = std::make_pair(reinterpret_cast<const void*>(kernel), device);
  auto it = cache.find(key);
  if (it == cache.end()) {
    int per_sm = 0, sms = 0, supported = 0;
    STD_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, 0));
    STD_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    STD_CUDA_CHECK(cudaDeviceGetAttribute(&supported, cudaDevAttrCooperativeLaunch, device));
    it = cache.emplace(key, Residency{per_sm * sms, supported != 0 && per_sm > 0}).first;
  }
  return it->second;
}

// WGAN_EXT_SN_TWO_LAUNCHES=1: run the phases as ordinary launches even where cooperative launches work (tests
// compare the two paths; also a way out should a driver refuse the cooperative one).
inline bool phases_as_launches() {
  const char* s = std::getenv("WGAN_EXT_SN_TWO_LAUNCHES");
  return s != nullptr && s[0] == '1';
}

// A cooperative launch of `blocks` blocks (at most the co-resident maximum) on `stream`. Cooperative launches can
// be captured into CUDA graphs: the runtime documents the cooperative launch attribute as valid for graph kernel
// nodes (cudaLaunchAttributeCooperative in driver_types.h), so capture needs no other path.
// Returns false, the error cleared, when the runtime finds the grid too large to be co-resident (a tool such as
// compute-sanitizer may change the kernel's resources after the occupancy query): the caller then runs the phases
// as ordinary launches. Any other error throws.
template <typename... Params, typename... Args>
bool launch(void (*kernel)(Params...), int blocks, int threads, cudaStream_t stream, Args... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(static_cast<unsigned>(blocks));
  config.blockDim = dim3(static_cast<unsigned>(threads));
  config.dynamicSmemBytes = 0;
  config.stream = stream;
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeCooperative;
  attribute[0].val.cooperative = 1;
  config.attrs = attribute;
  config.numAttrs = 1;
  const cudaError_t err = cudaLaunchKernelEx(&config, kernel, args...);
  if (err == cudaErrorCooperativeLaunchTooLarge) {
    (void)cudaGetLastError();
    return false;
  }
  STD_CUDA_CHECK(err);
  return true;
}

// Sum over a block of kWarps warps in a fixed order (warp shuffle tree, then the warps' sums in warp order),
// returned to every thread; every thread of the block must call it. `shared` holds kWarps values.
template <int kWarps, typename acc_t>
__device__ acc_t block_sum(acc_t x, acc_t* shared) {
  for (int offset = 16; offset > 0; offset /= 2) x += __shfl_down_sync(0xffffffffu, x, offset);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();  // `shared` may still be read from the previous call
  if (lane == 0) shared[warp] = x;
  __syncthreads();
  acc_t total = 0;
  for (int i = 0; i < kWarps; ++i) total += shared[i];
  return total;
}

}  // namespace coop
}  // namespace wgan_ext
