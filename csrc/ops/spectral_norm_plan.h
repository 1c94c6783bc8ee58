// How the CUDA kernels of spectral_norm_normalize and its backward split the work of many layers over the blocks of
// one launch, kept free of CUDA so that the CPU tests can check it (through wgan_ext::_spectral_norm_plan).
//
// Every split depends on the layer shapes only, never on the grid size, so results are the same bits whatever grid
// the device allows, and on the cooperative and the two-launch path alike:
//   * pieces: row r of layer l cut into column segments of kSegment; one warp computes one piece's dot product
//     (W v over those columns) into workspace slot piece_offset[l] + r * segments(w) + s. A row's pieces sit side
//     by side in column order, rows in row order: the order in which sigma adds them up.
//   * chunks: the h * w elements of layer l cut into kChunk elements (at least one chunk, even when empty, so that
//     every layer has a chunk 0 that writes its sigma); one block handles one chunk. The backward keeps one partial
//     <G, W> per chunk, chunk_offset[l] + k, added in chunk order.
// Warps take pieces grid-stride (piece p by global warp p mod warps); blocks take one contiguous range of chunks
// (block_range), so that a block meets few layers and recomputes few sigmas.
#pragma once

#include <cstdint>
#include <vector>

#include "../macros.h"

namespace wgan_ext {
namespace sn_plan {

constexpr int kThreads = 256;  // threads per block
constexpr int kWarps = kThreads / 32;
constexpr int64_t kSegment = 2048;  // columns per piece
constexpr int64_t kChunk = 4096;    // elements per chunk
constexpr int kMaxLayers = 36;      // layers per launch (kernel arguments under 4 KB)

WGAN_HOST_DEVICE WGAN_INLINE int64_t segments(int64_t w) { return (w + kSegment - 1) / kSegment; }

WGAN_HOST_DEVICE WGAN_INLINE int64_t chunks(int64_t numel) { return numel > 0 ? (numel + kChunk - 1) / kChunk : 1; }

// The layer l with offsets[l] <= i < offsets[l + 1], for 0 <= i < offsets[n]; offsets nondecreasing, offsets[0] = 0.
// Empty ranges are skipped: the largest l with offsets[l] <= i is the one whose range holds i.
WGAN_HOST_DEVICE WGAN_INLINE int find_layer(const int64_t* offsets, int n, int64_t i) {
  int lo = 0, hi = n - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (offsets[mid] <= i) lo = mid; else hi = mid - 1;
  }
  return lo;
}

// Block b of g takes chunks [begin, end): contiguous, sizes differing by at most one.
struct Range {
  int64_t begin, end;
};
WGAN_HOST_DEVICE WGAN_INLINE Range block_range(int64_t b, int64_t g, int64_t n) { return {n * b / g, n * (b + 1) / g}; }

// Piece p (global index) as (layer, row, first column, end column).
struct Piece {
  int layer;
  int64_t row, col_begin, col_end;
};

// The kernel arguments of one launch: up to kMaxLayers layers of one dtype.
struct Table {
  int n;  // layers in this launch
  const void* weight[kMaxLayers];
  const void* grad[kMaxLayers];  // backward: G
  const void* u[kMaxLayers];     // forward: u, v
  const void* v[kMaxLayers];
  void* out[kMaxLayers];  // W / sigma, or dW
  int64_t h[kMaxLayers];
  int64_t w[kMaxLayers];
  int64_t sigma_at[kMaxLayers];  // where the layer's sigma sits in `saved` (its position in the caller's list)
  int64_t uv_at[kMaxLayers];     // where its u (then v) starts in `saved`
  int64_t piece_offset[kMaxLayers + 1];
  int64_t chunk_offset[kMaxLayers + 1];
  int64_t uv_offset[kMaxLayers + 1];  // prefix of h + w: the u, v elements the forward copies into `saved`
};
static_assert(sizeof(Table) <= 3900, "kernel arguments must stay under the 4 KB limit");

WGAN_HOST_DEVICE WGAN_INLINE Piece piece_of(const Table& t, int64_t p) {
  const int l = find_layer(t.piece_offset, t.n, p);
  const int64_t segs = segments(t.w[l]), local = p - t.piece_offset[l];
  const int64_t s = local % segs, c0 = s * kSegment;
  return {l, local / segs, c0, c0 + kSegment < t.w[l] ? c0 + kSegment : t.w[l]};
}

// Chunk k (global index) as (layer, index within the layer, element range).
struct Chunk {
  int layer;
  int64_t local, begin, end;
};

WGAN_HOST_DEVICE WGAN_INLINE Chunk chunk_of(const Table& t, int64_t k) {
  const int l = find_layer(t.chunk_offset, t.n, k);
  const int64_t local = k - t.chunk_offset[l], numel = t.h[l] * t.w[l], b = local * kChunk;
  return {l, local, b, b + kChunk < numel ? b + kChunk : numel};
}

// The shapes and offsets of layers [first, first + count) of `hs`, `ws` (pointers left null); sigma_at / uv_at
// follow the caller's list `positions` (index into the whole list) and `uv_starts` (offset of u in `saved`).
inline Table make_table(const std::vector<int64_t>& hs, const std::vector<int64_t>& ws,
                        const std::vector<int64_t>& positions, const std::vector<int64_t>& uv_starts) {
  Table t{};
  t.n = static_cast<int>(hs.size());
  t.piece_offset[0] = t.chunk_offset[0] = t.uv_offset[0] = 0;
  for (int l = 0; l < t.n; ++l) {
    t.h[l] = hs[l];
    t.w[l] = ws[l];
    t.sigma_at[l] = positions[l];
    t.uv_at[l] = uv_starts[l];
    t.piece_offset[l + 1] = t.piece_offset[l] + hs[l] * segments(ws[l]);
    t.chunk_offset[l + 1] = t.chunk_offset[l] + chunks(hs[l] * ws[l]);
    t.uv_offset[l + 1] = t.uv_offset[l] + hs[l] + ws[l];
  }
  return t;
}

// Blocks one launch needs to keep every warp (phase 1) and every block (phase 2) busy; at least 1.
inline int64_t blocks_wanted(const Table& t) {
  const int64_t piece_blocks = (t.piece_offset[t.n] + kWarps - 1) / kWarps;
  const int64_t c = t.chunk_offset[t.n];
  int64_t b = piece_blocks > c ? piece_blocks : c;
  return b > 0 ? b : 1;
}

// ---- the power iteration: n steps of u <- normalize(W v), v <- normalize(W^T u) for every layer in one launch.
// Per step three phases, a grid sync after each:
//   A  pieces (as above): W v into ws_u; from the second step on, v is rebuilt from ws_raw and the layer's norm
//   B  tasks (row block rb of kRowBlock rows, column tile of kThreads columns): the block recomputes u's norm from
//      ws_u, rounds u for its rows (the tile-0 task writes them out), and writes its partial W^T u for its columns
//      into ws_v[vpart_offset[l] + rb * w + c]
//   C  column tiles: v_raw_c = sum over the row blocks in order into ws_raw; each tile's sum of squares into ws_ss
// then, after the last step, E: v written out from ws_raw and the norm (ws_ss of the layer added in tile order).
// Every layer has at least one B task, even when empty, so that u (all zeros when w = 0) is always written.
constexpr int64_t kRowBlock = 64;

struct PowerTable {
  int n;
  const void* weight[kMaxLayers];
  void* u[kMaxLayers];
  void* v[kMaxLayers];
  int64_t h[kMaxLayers];
  int64_t w[kMaxLayers];
  int64_t piece_offset[kMaxLayers + 1];  // phase A
  int64_t task_offset[kMaxLayers + 1];   // phase B
  int64_t vpart_offset[kMaxLayers + 1];  // ws_v slots: row blocks x w per layer
  int64_t col_offset[kMaxLayers + 1];    // ws_raw slots: w per layer
  int64_t tile_offset[kMaxLayers + 1];   // phases C and E: column tiles; ws_ss slots
  int64_t ws_u, ws_v, ws_raw, ws_ss, ws_size;  // where each part of the workspace starts, and its size
};
static_assert(sizeof(PowerTable) <= 3900, "kernel arguments must stay under the 4 KB limit");

WGAN_HOST_DEVICE WGAN_INLINE int64_t row_blocks(int64_t h) { return h > 0 ? (h + kRowBlock - 1) / kRowBlock : 1; }
WGAN_HOST_DEVICE WGAN_INLINE int64_t col_tiles(int64_t w) { return (w + kThreads - 1) / kThreads; }

WGAN_HOST_DEVICE WGAN_INLINE Piece piece_of(const PowerTable& t, int64_t p) {
  const int l = find_layer(t.piece_offset, t.n, p);
  const int64_t segs = segments(t.w[l]), local = p - t.piece_offset[l];
  const int64_t s = local % segs, c0 = s * kSegment;
  return {l, local / segs, c0, c0 + kSegment < t.w[l] ? c0 + kSegment : t.w[l]};
}

// A phase-B task: rows [row_begin, row_end) x columns [col_begin, col_end) of one layer.
struct Task {
  int layer;
  int64_t row_block, tile, row_begin, row_end, col_begin, col_end;
};

WGAN_HOST_DEVICE WGAN_INLINE Task task_of(const PowerTable& t, int64_t k) {
  const int l = find_layer(t.task_offset, t.n, k);
  const int64_t tiles = col_tiles(t.w[l]) > 0 ? col_tiles(t.w[l]) : 1, local = k - t.task_offset[l];
  const int64_t rb = local / tiles, ct = local % tiles, r0 = rb * kRowBlock, c0 = ct * kThreads;
  return {l, rb, ct, r0, r0 + kRowBlock < t.h[l] ? r0 + kRowBlock : t.h[l], c0, c0 + kThreads < t.w[l] ? c0 + kThreads : t.w[l]};
}

// A column tile of phases C and E: columns [col_begin, col_end) of one layer.
struct Tile {
  int layer;
  int64_t tile, col_begin, col_end;
};

WGAN_HOST_DEVICE WGAN_INLINE Tile tile_of(const PowerTable& t, int64_t k) {
  const int l = find_layer(t.tile_offset, t.n, k);
  const int64_t local = k - t.tile_offset[l], c0 = local * kThreads;
  return {l, local, c0, c0 + kThreads < t.w[l] ? c0 + kThreads : t.w[l]};
}

inline PowerTable make_power_table(const std::vector<int64_t>& hs, const std::vector<int64_t>& ws) {
  PowerTable t{};
  t.n = static_cast<int>(hs.size());
  for (int l = 0; l < t.n; ++l) {
    const int64_t h = hs[l], w = ws[l], tiles = col_tiles(w);
    t.h[l] = h;
    t.w[l] = w;
    t.piece_offset[l + 1] = t.piece_offset[l] + h * segments(w);
    t.task_offset[l + 1] = t.task_offset[l] + row_blocks(h) * (tiles > 0 ? tiles : 1);
    t.vpart_offset[l + 1] = t.vpart_offset[l] + row_blocks(h) * w;
    t.col_offset[l + 1] = t.col_offset[l] + w;
    t.tile_offset[l + 1] = t.tile_offset[l] + tiles;
  }
  t.ws_u = 0;
  t.ws_v = t.ws_u + t.piece_offset[t.n];
  t.ws_raw = t.ws_v + t.vpart_offset[t.n];
  t.ws_ss = t.ws_raw + t.col_offset[t.n];
  t.ws_size = t.ws_ss + t.tile_offset[t.n];
  return t;
}

inline int64_t blocks_wanted(const PowerTable& t) {
  int64_t b = (t.piece_offset[t.n] + kWarps - 1) / kWarps;
  if (t.task_offset[t.n] > b) b = t.task_offset[t.n];
  if (t.tile_offset[t.n] > b) b = t.tile_offset[t.n];
  return b > 0 ? b : 1;
}

}  // namespace sn_plan
}  // namespace wgan_ext
