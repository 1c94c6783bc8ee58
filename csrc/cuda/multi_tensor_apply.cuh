// A small multi-tensor launcher in the style of ATen's MultiTensorApply.cuh and apex's multi_tensor_apply.cuh.
//
// Pointers, sizes and a block -> (tensor slot, chunk) map are packed into one kernel-argument struct by the host
// plan (csrc/ops/multi_tensor_plan.h, tested on the CPU). The functor receives (the tensor's data, the chunk's
// first element, the number of elements in the chunk, the tensor's index in the caller's list) and does the work.
#pragma once

#include <cstdint>
#include <vector>

#include "../ops/multi_tensor_plan.h"
#include "stable_cuda.cuh"

namespace wgan_ext {
namespace mta {

template <typename Functor, typename... Args>
__global__ void __launch_bounds__(kBlockSize) multi_tensor_kernel(TensorListMeta meta, Functor f, Args... args) {
  const int slot = meta.block_slot[blockIdx.x];
  const int64_t chunk = meta.block_chunk[blockIdx.x];
  const int64_t start = chunk * kChunkSize;
  const int64_t remaining = meta.numel[slot] - start;
  const int n = static_cast<int>(remaining < kChunkSize ? remaining : kChunkSize);
  f(meta.data[slot], start, n, meta.index[slot], args...);
}

// Launches `f` over every chunk of every item on `stream`, as few launches as the argument struct allows.
template <typename Functor, typename... Args>
void multi_tensor_apply(cudaStream_t stream, const std::vector<Item>& items, Functor f, Args... args) {
  plan(items, [&](const TensorListMeta& meta, int blocks) {
    multi_tensor_kernel<<<blocks, kBlockSize, 0, stream>>>(meta, f, args...);
    WGAN_CUDA_LAUNCH_CHECK();
  });
}

// Depth lists in step (csrc/ops/multi_tensor_plan.h, plan_n): the functor receives (the Depth data pointers of the
// slot's tensors, the chunk's first element, the number of elements in the chunk, the tensor's index).
template <int Depth, typename Functor, typename... Args>
__global__ void __launch_bounds__(kBlockSize) multi_tensor_kernel_n(TensorListMetaN<Depth> meta, Functor f,
                                                                   Args... args) {
  const int slot = meta.block_slot[blockIdx.x];
  const int64_t start = static_cast<int64_t>(meta.block_chunk[blockIdx.x]) * kChunkSize;
  const int64_t remaining = meta.numel[slot] - start;
  const int n = static_cast<int>(remaining < kChunkSize ? remaining : kChunkSize);
  void* data[Depth];
#pragma unroll
  for (int d = 0; d < Depth; ++d) data[d] = meta.data[d][slot];
  f(data, start, n, meta.index[slot], args...);
}

template <int Depth, typename Functor, typename... Args>
void multi_tensor_apply_n(cudaStream_t stream, const std::vector<ItemN<Depth>>& items, Functor f, Args... args) {
  plan_n<Depth>(items, [&](const TensorListMetaN<Depth>& meta, int blocks) {
    multi_tensor_kernel_n<Depth><<<blocks, kBlockSize, 0, stream>>>(meta, f, args...);
    WGAN_CUDA_LAUNCH_CHECK();
  });
}

}  // namespace mta
}  // namespace wgan_ext
