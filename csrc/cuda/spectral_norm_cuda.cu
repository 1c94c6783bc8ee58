// CUDA kernel of wgan_ext::spectral_norm_power_iteration_: every layer of a dtype in ONE launch (up to
// sn_plan::kMaxLayers layers per launch), each layer spread over as many blocks as its size asks for, so that a
// large layer uses the whole GPU. Each power-iteration step runs three phases with a grid sync after each
// (csrc/ops/spectral_norm_plan.h, PowerTable, has the split):
//   A  W v: one warp per row piece (coalesced, warp-shuffle sums) into a workspace;
//   B  every block recomputes ||W v|| of its layers from the pieces (fixed order), rounds u for its row block
//      (u rounded to the weight dtype, as torch's buffer) and writes its partial W^T u for its column tile;
//   C  one block per column tile: v_raw = the row blocks' partials added in order, and the tile's sum of squares;
// then the next step's A rebuilds v = v_raw / max(||v_raw||, eps) (rounded to the weight dtype) where it reads it,
// and after the last step every column tile writes v. Products accumulate in float32 (float64 for float64); the
// normalization is sn_math::inv_norm, shared with the CPU kernel. Every sum has a fixed order, so the results are
// the same bits on every call and whatever the grid. The launch is cooperative, its grid capped at the
// co-resident maximum; without cooperative launches (or WGAN_EXT_SN_TWO_LAUNCHES=1) each phase is a launch of its
// own, with the same split and the same bits.

#include <cooperative_groups.h>

#include <algorithm>
#include <vector>

#include "../ops/spectral_norm.h"
#include "../ops/spectral_norm_math.h"
#include "../ops/spectral_norm_plan.h"
#include "cooperative_launch.cuh"
#include "stable_cuda.cuh"

namespace wgan_ext {
namespace {

namespace cg = cooperative_groups;
using sn_plan::kRowBlock;
using sn_plan::kThreads;
using sn_plan::kWarps;
using sn_plan::PowerTable;

// (W v)_r of layer l: its pieces added in column order.
template <typename acc_t>
__device__ acc_t row_sum(const acc_t* pieces, int64_t r, int64_t segs) {
  acc_t s = 0;
  for (int64_t k = 0; k < segs; ++k) s += pieces[r * segs + k];
  return s;
}

// 1 / max(||v_raw||, eps) of layer l: the column tiles' sums of squares added in tile order (one thread).
template <typename acc_t>
__device__ acc_t v_inv_norm(const PowerTable& t, int l, const acc_t* tile_ss, acc_t eps) {
  acc_t s = 0;
  for (int64_t k = t.tile_offset[l]; k < t.tile_offset[l + 1]; ++k) s += tile_ss[k];
  return sn_math::inv_norm(s, eps);
}

// Step `step` of 3 n + 1: A, B, C of iteration step / 3, then E (write v) as step 3 n.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) power_iteration_kernel(PowerTable t, acc_t* ws, int64_t n_iterations,
                                                                   int64_t step_begin, int64_t step_end, acc_t eps) {
  __shared__ acc_t shared[kWarps];
  __shared__ acc_t u_rows[kRowBlock];
  acc_t* u_pieces = ws + t.ws_u;
  acc_t* v_parts = ws + t.ws_v;
  acc_t* v_raw = ws + t.ws_raw;
  acc_t* tile_ss = ws + t.ws_ss;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int64_t step = step_begin; step < step_end; ++step) {
    // only a cooperative launch runs more than one step; every block reaches each sync
    if (step > step_begin) cg::this_grid().sync();
    const int phase = step == 3 * n_iterations ? 3 : static_cast<int>(step % 3);
    if (phase == 0) {  // A: pieces of W v
      const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarps, n_pieces = t.piece_offset[t.n];
      for (int64_t p = static_cast<int64_t>(blockIdx.x) * kWarps + warp; p < n_pieces; p += warps) {
        const sn_plan::Piece x = sn_plan::piece_of(t, p);
        const int l = x.layer;
        const scalar_t* row = static_cast<const scalar_t*>(t.weight[l]) + x.row * t.w[l];
        acc_t s = 0;
        if (step == 0) {
          const scalar_t* v = static_cast<const scalar_t*>(t.v[l]);
          for (int64_t c = x.col_begin + lane; c < x.col_end; c += 32) {
            s += static_cast<acc_t>(row[c]) * static_cast<acc_t>(v[c]);
          }
        } else {
          const acc_t inv = v_inv_norm(t, l, tile_ss, eps);
          const acc_t* vr = v_raw + t.col_offset[l];
          for (int64_t c = x.col_begin + lane; c < x.col_end; c += 32) {
            s += static_cast<acc_t>(row[c]) * static_cast<acc_t>(static_cast<scalar_t>(vr[c] * inv));
          }
        }
        for (int offset = 16; offset > 0; offset /= 2) s += __shfl_down_sync(0xffffffffu, s, offset);
        if (lane == 0) u_pieces[p] = s;
      }
    } else if (phase == 1) {  // B: u of a row block, partial W^T u of a column tile
      const sn_plan::Range range = sn_plan::block_range(blockIdx.x, gridDim.x, t.task_offset[t.n]);
      int cached = -1;
      acc_t inv = 0;
      for (int64_t k = range.begin; k < range.end; ++k) {
        const sn_plan::Task x = sn_plan::task_of(t, k);
        const int l = x.layer;
        const int64_t h = t.h[l], w = t.w[l], segs = sn_plan::segments(w);
        const acc_t* pieces = u_pieces + t.piece_offset[l];
        if (l != cached) {  // block-uniform
          cached = l;
          acc_t ss = 0;
          for (int64_t r = threadIdx.x; r < h; r += kThreads) {
            const acc_t ur = row_sum(pieces, r, segs);
            ss += ur * ur;
          }
          inv = sn_math::inv_norm(coop::block_sum<kWarps>(ss, shared), eps);
        }
        __syncthreads();  // u_rows may still be read for the previous task
        if (threadIdx.x < x.row_end - x.row_begin) {
          const int64_t r = x.row_begin + threadIdx.x;
          const scalar_t ur = static_cast<scalar_t>(row_sum(pieces, r, segs) * inv);
          u_rows[threadIdx.x] = static_cast<acc_t>(ur);
          if (x.tile == 0) static_cast<scalar_t*>(t.u[l])[r] = ur;
        }
        __syncthreads();
        const int64_t c = x.col_begin + threadIdx.x;
        if (c < x.col_end) {
          const scalar_t* W = static_cast<const scalar_t*>(t.weight[l]);
          acc_t s = 0;
          for (int64_t r = x.row_begin; r < x.row_end; ++r) {
            s += static_cast<acc_t>(W[r * w + c]) * u_rows[r - x.row_begin];
          }
          v_parts[t.vpart_offset[l] + x.row_block * w + c] = s;
        }
      }
    } else if (phase == 2) {  // C: v_raw of a column tile and its sum of squares
      const sn_plan::Range range = sn_plan::block_range(blockIdx.x, gridDim.x, t.tile_offset[t.n]);
      for (int64_t k = range.begin; k < range.end; ++k) {
        const sn_plan::Tile x = sn_plan::tile_of(t, k);
        const int l = x.layer;
        const int64_t w = t.w[l], row_blocks = sn_plan::row_blocks(t.h[l]);
        const int64_t c = x.col_begin + threadIdx.x;
        acc_t sq = 0;
        if (c < x.col_end) {
          acc_t s = 0;
          for (int64_t rb = 0; rb < row_blocks; ++rb) s += v_parts[t.vpart_offset[l] + rb * w + c];
          v_raw[t.col_offset[l] + c] = s;
          sq = s * s;
        }
        sq = coop::block_sum<kWarps>(sq, shared);
        if (threadIdx.x == 0) tile_ss[k] = sq;
      }
    } else {  // E: v written out
      const sn_plan::Range range = sn_plan::block_range(blockIdx.x, gridDim.x, t.tile_offset[t.n]);
      for (int64_t k = range.begin; k < range.end; ++k) {
        const sn_plan::Tile x = sn_plan::tile_of(t, k);
        const int l = x.layer;
        const int64_t c = x.col_begin + threadIdx.x;
        if (c < x.col_end) {
          const acc_t inv = v_inv_norm(t, l, tile_ss, eps);
          static_cast<scalar_t*>(t.v[l])[c] = static_cast<scalar_t>(v_raw[t.col_offset[l] + c] * inv);
        }
      }
    }
  }
}

void power_iteration_cuda(Tensors weights, Tensors us, Tensors vs, int64_t n_iterations, double eps) {
  check_power_iteration_args(weights, us, vs, n_iterations, eps, DeviceType::CUDA);
  if (weights.empty() || n_iterations == 0) return;
  const int device = weights[0].get_device_index();
  const DeviceGuard guard(device);
  const cudaStream_t stream = current_stream(weights[0]);
  Tensors W, u, v;
  for (size_t i = 0; i < weights.size(); ++i) {
    W.push_back(as_contiguous(weights[i]));
    u.push_back(as_contiguous(us[i]));
    v.push_back(as_contiguous(vs[i]));
  }
  for (const ScalarType dtype : {kFloat, kDouble, kHalf, kBFloat16}) {
    std::vector<size_t> group;  // empty layers too: h = 0 sets v to 0 and w = 0 sets u to 0, as the CPU kernel
    for (size_t i = 0; i < W.size(); ++i) {
      if (dtype_of(W[i]) == dtype) group.push_back(i);
    }
    for (size_t start = 0; start < group.size(); start += sn_plan::kMaxLayers) {
      const size_t count = std::min<size_t>(sn_plan::kMaxLayers, group.size() - start);
      std::vector<int64_t> hs, ws;
      for (size_t k = 0; k < count; ++k) {
        hs.push_back(W[group[start + k]].size(0));
        ws.push_back(W[group[start + k]].size(1));
      }
      PowerTable t = sn_plan::make_power_table(hs, ws);
      for (size_t k = 0; k < count; ++k) {
        const size_t i = group[start + k];
        t.weight[k] = W[i].const_data_ptr();
        t.u[k] = u[i].mutable_data_ptr();
        t.v[k] = v[i].mutable_data_ptr();
      }
      dispatch_floating(dtype, "wgan_ext::spectral_norm_power_iteration_", [&](auto tag) {
        using scalar_t = decltype(tag);
        using acc_t = acc_t_of<scalar_t>;
        const Tensor workspace = new_empty(W[group[start]], {std::max<int64_t>(1, t.ws_size)}, scalar_type_of<acc_t>());
        acc_t* wp = static_cast<acc_t*>(workspace.mutable_data_ptr());
        const auto kernel = &power_iteration_kernel<scalar_t, acc_t>;
        const coop::Residency r = coop::residency(kernel, kThreads, device);
        const int64_t wanted = sn_plan::blocks_wanted(t), steps = 3 * n_iterations + 1;
        if (!(r.cooperative && !coop::phases_as_launches() &&
              coop::launch(kernel, static_cast<int>(std::min<int64_t>(wanted, r.blocks)), kThreads, stream, t, wp,
                           n_iterations, int64_t{0}, steps, static_cast<acc_t>(eps)))) {
          const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(wanted, std::max(r.blocks, 1) * 4));
          for (int64_t s = 0; s < steps; ++s) {
            kernel<<<blocks, kThreads, 0, stream>>>(t, wp, n_iterations, s, s + 1, static_cast<acc_t>(eps));
            WGAN_CUDA_LAUNCH_CHECK();
          }
        }
      });
    }
  }
  for (size_t i = 0; i < weights.size(); ++i) {
    if (!us[i].is_contiguous()) torch::stable::copy_(us[i], u[i]);
    if (!vs[i].is_contiguous()) torch::stable::copy_(vs[i], v[i]);
  }
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(wgan_ext, CUDA, m) {
  m.impl("spectral_norm_power_iteration_", TORCH_BOX(&power_iteration_cuda));
}

}  // namespace wgan_ext
