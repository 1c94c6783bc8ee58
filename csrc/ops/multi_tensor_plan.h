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

namespace wgan_ext {
namespace mta {

// The same plan for ops that walk several lists in step (an optimizer reads param, grad and state tensors of the
// same size together): slot s holds Depth pointers, one per list. Fewer slots fit the 4 KB of kernel arguments as
// Depth grows (ATen's depth_to_max_tensors: 110, 64, 48, 36, 30).
template <int Depth>
struct DepthLimits {
  static_assert(Depth >= 1 && Depth <= 5, "depth 1 to 5");
  static constexpr int kMaxTensors = Depth == 1 ? 110 : Depth == 2 ? 64 : Depth == 3 ? 48 : Depth == 4 ? 36 : 30;
};

template <int Depth>
struct TensorListMetaN {
  static constexpr int kMaxTensors = DepthLimits<Depth>::kMaxTensors;
  void* data[Depth][kMaxTensors];
  int64_t numel[kMaxTensors];
  int32_t index[kMaxTensors];
  unsigned char block_slot[kMaxBlocks];
  int32_t block_chunk[kMaxBlocks];
};
// A few hundred bytes are left for the functor's own arguments (hyperparameters).
// (Depth 1, as TensorListMeta, leaves ~300 bytes: fine for clip_'s two pointers, not for hyperparameters.)
static_assert(sizeof(TensorListMetaN<1>) <= 4000, "kernel arguments must stay under the 4 KB limit");
static_assert(sizeof(TensorListMetaN<2>) <= 3600 && sizeof(TensorListMetaN<3>) <= 3600 &&
                  sizeof(TensorListMetaN<4>) <= 3600 && sizeof(TensorListMetaN<5>) <= 3600,
              "kernel arguments must stay under the 4 KB limit");

template <int Depth>
struct ItemN {
  void* data[Depth];
  int64_t numel;
  int32_t index;
};

// As plan() above, for items of Depth pointers each.
template <int Depth, typename Launch>
void plan_n(const std::vector<ItemN<Depth>>& items, Launch&& launch) {
  constexpr int kSlots = TensorListMetaN<Depth>::kMaxTensors;
  TensorListMetaN<Depth> meta;
  int slots = 0;
  int blocks = 0;
  auto set_slot = [&](int slot, void* const* data, int64_t numel, int32_t index) {
    for (int d = 0; d < Depth; ++d) meta.data[d][slot] = data[d];
    meta.numel[slot] = numel;
    meta.index[slot] = index;
  };
  for (const ItemN<Depth>& item : items) {
    if (item.numel == 0) continue;
    if (slots == kSlots) {
      if (blocks > 0) launch(meta, blocks);
      slots = 0;
      blocks = 0;
    }
    int slot = slots++;
    set_slot(slot, item.data, item.numel, item.index);
    const int64_t chunks = (item.numel + kChunkSize - 1) / kChunkSize;
    for (int64_t c = 0; c < chunks; ++c) {
      if (blocks == kMaxBlocks) {
        launch(meta, blocks);
        // The tensor in hand continues in the next launch, in slot 0.
        set_slot(0, item.data, item.numel, item.index);
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
