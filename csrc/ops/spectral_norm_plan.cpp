// wgan_ext::_spectral_norm_plan / _spectral_norm_power_plan: the split that the CUDA kernels of
// spectral_norm_normalize, its backward and spectral_norm_power_iteration_ use
// (csrc/ops/spectral_norm_plan.h), computed by the same functions, so that the CPU tests can check it.

#include <algorithm>
#include <tuple>
#include <vector>

#include "../stable.h"
#include "spectral_norm_plan.h"

namespace wgan_ext {
namespace {

Tensor rows_tensor(const std::vector<int64_t>& rows, int64_t cols) {
  Tensor out = torch::stable::empty({static_cast<int64_t>(rows.size()) / cols, cols}, kLong);
  std::copy(rows.begin(), rows.end(), out.mutable_data_ptr<int64_t>());
  return out;
}

// pieces: (piece, global warp that computes it, layer, row, first column, end column), the piece's index being its
// workspace slot; chunks: (chunk, block, layer, index in the layer, first element, end element), in the order each
// block walks them.
std::tuple<Tensor, Tensor> spectral_norm_plan(std::vector<int64_t> heights, std::vector<int64_t> widths,
                                              int64_t blocks) {
  constexpr const char* op = "wgan_ext::_spectral_norm_plan";
  WGAN_CHECK(heights.size() == widths.size(), op, ": heights and widths must have the same length");
  WGAN_CHECK(!heights.empty() && heights.size() <= static_cast<size_t>(sn_plan::kMaxLayers), op, ": 1 to ",
             sn_plan::kMaxLayers, " layers, got ", heights.size());
  WGAN_CHECK(blocks >= 1, op, ": blocks must be >= 1, got ", blocks);
  std::vector<int64_t> positions, uv_starts;
  for (size_t l = 0; l < heights.size(); ++l) {
    WGAN_CHECK(heights[l] >= 0 && widths[l] >= 0, op, ": sizes must be >= 0");
    positions.push_back(static_cast<int64_t>(l));
    uv_starts.push_back(0);
  }
  const sn_plan::Table t = sn_plan::make_table(heights, widths, positions, uv_starts);
  std::vector<int64_t> pieces, chunks;
  const int64_t warps = blocks * sn_plan::kWarps;
  for (int64_t p = 0; p < t.piece_offset[t.n]; ++p) {
    const sn_plan::Piece x = sn_plan::piece_of(t, p);
    pieces.insert(pieces.end(), {p, p % warps, x.layer, x.row, x.col_begin, x.col_end});
  }
  for (int64_t b = 0; b < blocks; ++b) {
    const sn_plan::Range r = sn_plan::block_range(b, blocks, t.chunk_offset[t.n]);
    for (int64_t k = r.begin; k < r.end; ++k) {
      const sn_plan::Chunk c = sn_plan::chunk_of(t, k);
      chunks.insert(chunks.end(), {k, b, c.layer, c.local, c.begin, c.end});
    }
  }
  return {rows_tensor(pieces, 6), rows_tensor(chunks, 6)};
}

// The power iteration's split: pieces as above (phase A), tasks (phase B: task, block, layer, row block, column
// tile, first row, end row, first column, end column), column tiles (phases C and E: tile, block, layer, tile in the
// layer, first column, end column).
std::tuple<Tensor, Tensor, Tensor> spectral_norm_power_plan(std::vector<int64_t> heights, std::vector<int64_t> widths,
                                                            int64_t blocks) {
  constexpr const char* op = "wgan_ext::_spectral_norm_power_plan";
  WGAN_CHECK(heights.size() == widths.size(), op, ": heights and widths must have the same length");
  WGAN_CHECK(!heights.empty() && heights.size() <= static_cast<size_t>(sn_plan::kMaxLayers), op, ": 1 to ",
             sn_plan::kMaxLayers, " layers, got ", heights.size());
  WGAN_CHECK(blocks >= 1, op, ": blocks must be >= 1, got ", blocks);
  for (size_t l = 0; l < heights.size(); ++l) WGAN_CHECK(heights[l] >= 0 && widths[l] >= 0, op, ": sizes must be >= 0");
  const sn_plan::PowerTable t = sn_plan::make_power_table(heights, widths);
  std::vector<int64_t> pieces, tasks, tiles;
  const int64_t warps = blocks * sn_plan::kWarps;
  for (int64_t p = 0; p < t.piece_offset[t.n]; ++p) {
    const sn_plan::Piece x = sn_plan::piece_of(t, p);
    pieces.insert(pieces.end(), {p, p % warps, x.layer, x.row, x.col_begin, x.col_end});
  }
  for (int64_t b = 0; b < blocks; ++b) {
    const sn_plan::Range r = sn_plan::block_range(b, blocks, t.task_offset[t.n]);
    for (int64_t k = r.begin; k < r.end; ++k) {
      const sn_plan::Task x = sn_plan::task_of(t, k);
      tasks.insert(tasks.end(), {k, b, x.layer, x.row_block, x.tile, x.row_begin, x.row_end, x.col_begin, x.col_end});
    }
    const sn_plan::Range c = sn_plan::block_range(b, blocks, t.tile_offset[t.n]);
    for (int64_t k = c.begin; k < c.end; ++k) {
      const sn_plan::Tile x = sn_plan::tile_of(t, k);
      tiles.insert(tiles.end(), {k, b, x.layer, x.tile, x.col_begin, x.col_end});
    }
  }
  return {rows_tensor(pieces, 6), rows_tensor(tasks, 9), rows_tensor(tiles, 6)};
}

}  // namespace

STABLE_TORCH_LIBRARY_FRAGMENT(wgan_ext, m) {
  // The CUDA spectral-norm kernels' split of layers of the given shapes over `blocks` blocks; for tests.
  m.def("_spectral_norm_plan(int[] heights, int[] widths, int blocks) -> (Tensor, Tensor)");
  // The same for the power iteration kernel: (pieces, tasks, column tiles); for tests.
  m.def("_spectral_norm_power_plan(int[] heights, int[] widths, int blocks) -> (Tensor, Tensor, Tensor)");
}

STABLE_TORCH_LIBRARY_IMPL(wgan_ext, CompositeExplicitAutograd, m) {
  m.impl("_spectral_norm_plan", TORCH_BOX(&spectral_norm_plan));
  m.impl("_spectral_norm_power_plan", TORCH_BOX(&spectral_norm_power_plan));
}

}  // namespace wgan_ext
