// Host-side plan of a multi-tensor launch, kept free of CUDA so that the CPU tests can check it (through the
// private op wgan_ext::_multi_tensor_plan) on machines without a GPU.
//
// The element ranges of many tensors are cut into chunks of kChunkSize elements. One launch covers up to
// kMaxTensors tensors ("slots") and kMaxBlocks chunks (one block each); longer lists take more launches, and a
// tensor whose chunks do not fit continues in slot 0 of the next launch.
#pragma once

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

struct Item {
  void* data;
  int64_t numel;
  int32_t index;
};

// Fills `meta` launch by launch and calls launch(meta, number_of_blocks) for each; empty items are skipped.
template <typename Launch>
void plan(const std::vector<Item>& items, Launch&& launch) {
  TensorListMeta meta;
  int slots = 0;
  int blocks = 0;
  for (const Item& item : items) {
    if (item.numel == 0) continue;
    if (slots == kMaxTensors) {
      if (blocks > 0) launch(meta, blocks);
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
        launch(meta, blocks);
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
  if (blocks > 0) launch(meta, blocks);
}

}  // namespace mta
}  // namespace wgan_ext
