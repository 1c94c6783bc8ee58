// A small multi-tensor launcher in the style of ATen's MultiTensorApply.cuh and apex's multi_tensor_apply.cuh.
//
// The element ranges of many tensors are cut into chunks of kChunkSize elements. Pointers, sizes and a
// block -> (tensor slot, chunk) map are packed into one kernel-argument struct (under the 4 KB argument limit), so
// one launch covers up to kMaxTensors tensors and kMaxBlocks chunks; longer lists take more launches. The functor
// receives (block's pointer to its chunk, number of elements in the chunk, slot's user index) and does the work.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>
#include <vector>

namespace wgan_ext {
namespace mta {

constexpr int kChunkSize = 65536;  // elements per block
constexpr int kBlockSize = 512;    // threads per block
constexpr int kMaxTensors = 110;
constexpr int kMaxBlocks = 320;

struct TensorListMeta {
  void* data[kMaxTensors];
  int64_t numel[kMaxTensors];
  int32_t index[kMaxTensors];              // the tensor's position in the caller's list
  unsigned char block_slot[kMaxBlocks];    // which slot each block works on
  int32_t block_chunk[kMaxBlocks];         // which chunk of that slot's tensor
};
static_assert(sizeof(TensorListMeta) <= 4000, "kernel arguments must stay under the 4 KB limit");

template <typename Functor, typename... Args>
__global__ void __launch_bounds__(kBlockSize) multi_tensor_kernel(TensorListMeta meta, Functor f, Args... args) {
  const int slot = meta.block_slot[blockIdx.x];
  const int64_t chunk = meta.block_chunk[blockIdx.x];
  const int64_t start = chunk * kChunkSize;
  const int64_t remaining = meta.numel[slot] - start;
  const int n = static_cast<int>(remaining < kChunkSize ? remaining : kChunkSize);
  f(meta.data[slot], start, n, meta.index[slot], args...);
}

struct Item {
  void* data;
  int64_t numel;
  int32_t index;
};

// Launches `f` over every chunk of every item on the current stream, as few launches as the argument struct allows.
template <typename Functor, typename... Args>
void multi_tensor_apply(const std::vector<Item>& items, Functor f, Args... args) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  TensorListMeta meta;
  int slots = 0;
  int blocks = 0;
  auto launch = [&]() {
    multi_tensor_kernel<<<blocks, kBlockSize, 0, stream>>>(meta, f, args...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  for (const Item& item : items) {
    if (item.numel == 0) continue;
    if (slots == kMaxTensors) {
      if (blocks > 0) launch();
      slots = 0;
      blocks = 0;
    }
    int slot = slots++;
    meta.data[slot] = item.data;
    meta.numel[slot] = item.numel;
    meta.index[slot] = item.index;
    const int64_t chunks = (item.numel + kChunkSize - 1) / kChunkSize;
    for (int64_t c = 0; c < chunks; ++c) {
      if (blocks == kMaxBlocks) {
        launch();
        // The tensor in hand continues in the next launch, in slot 0.
        meta.data[0] = meta.data[slot];
        meta.numel[0] = meta.numel[slot];
        meta.index[0] = meta.index[slot];
        slot = 0;
        slots = 1;
        blocks = 0;
      }
      meta.block_slot[blocks] = static_cast<unsigned char>(slot);
      meta.block_chunk[blocks] = static_cast<int32_t>(c);
      ++blocks;
    }
  }
  if (blocks > 0) launch();
}

}  // namespace mta
}  // namespace wgan_ext
