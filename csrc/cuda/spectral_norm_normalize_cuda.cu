// CUDA kernels of wgan_ext::spectral_norm_normalize and its backward: every layer of a dtype in ONE launch (up to
// sn_plan::kMaxLayers layers per launch), the work of each layer spread over many blocks.
//
// Forward, per launch:   phase 1  one warp per piece (a row segment of W): W v into a workspace; u, v into `saved`;
//                        grid sync;
//                        phase 2  each block walks its contiguous range of chunks; for every layer it meets it
//                                 recomputes sigma = sum_r u_r (W v)_r in a fixed order (h values), then writes its
//                                 chunks of W / sigma; chunk 0 of a layer writes sigma into `saved`.
// Backward, per launch:  phase 1  one block per chunk: the chunk's partial <G, W> into a workspace;
//                        grid sync;
//                        phase 2  every block meeting a layer adds that layer's partials in a fixed order, then
//                                 writes dW = G / sigma + grad_sigma u_r v_c for its chunks.
// The split (csrc/ops/spectral_norm_plan.h) depends on the shapes only and every sum has a fixed order with a fixed
// block size, so the results are the same bits whatever the grid, no atomics. The grid sync needs every block
// resident: the launch is cooperative with the grid capped at the co-resident maximum. Without cooperative launch
// support (or with WGAN_EXT_SN_TWO_LAUNCHES=1) the two phases run as two ordinary launches: same split, same bits.
// Element math: csrc/ops/spectral_norm_math.h, shared with the CPU kernel.

#include <cooperative_groups.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <tuple>
#include <vector>

#include "../ops/spectral_norm.h"
#include "../ops/spectral_norm_math.h"
#include "../ops/spectral_norm_plan.h"
#include "cooperative_launch.cuh"
#include "stable_cuda.cuh"

namespace wgan_ext {
namespace {

namespace cg = cooperative_groups;
using sn_plan::kThreads;
using sn_plan::kWarps;
using sn_plan::Table;

constexpr int kPhase1 = 1, kPhase2 = 2, kBothPhases = 3;  // kBothPhases: cooperative launch, grid sync between

// sigma of layer l from the pieces of W v, rounded to the weight dtype; block-wide (every thread calls it).
template <typename scalar_t, typename acc_t>
__device__ acc_t layer_sigma(const Table& t, int l, const acc_t* part, acc_t* shared) {
  const int64_t h = t.h[l], segs = sn_plan::segments(t.w[l]);
  const acc_t* p = part + t.piece_offset[l];
  const scalar_t* u = static_cast<const scalar_t*>(t.u[l]);
  acc_t s = 0;
  for (int64_t r = threadIdx.x; r < h; r += kThreads) {
    acc_t wv = 0;
    for (int64_t k = 0; k < segs; ++k) wv += p[r * segs + k];
    s += static_cast<acc_t>(u[r]) * wv;
  }
  return sn_math::rounded_sigma<scalar_t, acc_t>(coop::block_sum<kWarps>(s, shared));
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) normalize_kernel(Table t, acc_t* part, double* saved, int phases) {
  __shared__ acc_t shared[kWarps];
  if (phases & kPhase1) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarps, n_pieces = t.piece_offset[t.n];
    for (int64_t p = static_cast<int64_t>(blockIdx.x) * kWarps + warp; p < n_pieces; p += warps) {
      const sn_plan::Piece x = sn_plan::piece_of(t, p);
      const scalar_t* row = static_cast<const scalar_t*>(t.weight[x.layer]) + x.row * t.w[x.layer];
      const scalar_t* v = static_cast<const scalar_t*>(t.v[x.layer]);
      acc_t s = 0;
      for (int64_t c = x.col_begin + lane; c < x.col_end; c += 32) {
        s += static_cast<acc_t>(row[c]) * static_cast<acc_t>(v[c]);
      }
      for (int offset = 16; offset > 0; offset /= 2) s += __shfl_down_sync(0xffffffffu, s, offset);
      if (lane == 0) part[p] = s;
    }
    // u and v as this call used them, for the backward
    const int64_t n_uv = t.uv_offset[t.n], stride = static_cast<int64_t>(gridDim.x) * kThreads;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n_uv; i += stride) {
      const int l = sn_plan::find_layer(t.uv_offset, t.n, i);
      const int64_t k = i - t.uv_offset[l];
      const scalar_t x = k < t.h[l] ? static_cast<const scalar_t*>(t.u[l])[k]
                                    : static_cast<const scalar_t*>(t.v[l])[k - t.h[l]];
      saved[t.uv_at[l] + k] = static_cast<double>(static_cast<acc_t>(x));
    }
  }
  if (phases == kBothPhases) cg::this_grid().sync();  // every block reaches it exactly once
  if (phases & kPhase2) {
    const sn_plan::Range range = sn_plan::block_range(blockIdx.x, gridDim.x, t.chunk_offset[t.n]);
    int cached = -1;
    acc_t sigma = 0;
    for (int64_t k = range.begin; k < range.end; ++k) {
      const sn_plan::Chunk c = sn_plan::chunk_of(t, k);
      if (c.layer != cached) {  // block-uniform
        cached = c.layer;
        sigma = layer_sigma<scalar_t, acc_t>(t, c.layer, part, shared);
      }
      if (c.local == 0 && threadIdx.x == 0) saved[t.sigma_at[c.layer]] = static_cast<double>(sigma);
      const scalar_t* W = static_cast<const scalar_t*>(t.weight[c.layer]);
      scalar_t* out = static_cast<scalar_t*>(t.out[c.layer]);
      for (int64_t e = c.begin + threadIdx.x; e < c.end; e += kThreads) {
        out[e] = sn_math::normalize_element<scalar_t, acc_t>(W[e], sigma);
      }
    }
  }
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) normalize_backward_kernel(Table t, acc_t* part, const double* saved,
                                                                      int phases) {
  __shared__ acc_t shared[kWarps];
  const sn_plan::Range range = sn_plan::block_range(blockIdx.x, gridDim.x, t.chunk_offset[t.n]);
  if (phases & kPhase1) {
    for (int64_t k = range.begin; k < range.end; ++k) {
      const sn_plan::Chunk c = sn_plan::chunk_of(t, k);
      const scalar_t* W = static_cast<const scalar_t*>(t.weight[c.layer]);
      const scalar_t* G = static_cast<const scalar_t*>(t.grad[c.layer]);
      acc_t s = 0;
      for (int64_t e = c.begin + threadIdx.x; e < c.end; e += kThreads) {
        s += static_cast<acc_t>(G[e]) * static_cast<acc_t>(W[e]);
      }
      s = coop::block_sum<kWarps>(s, shared);
      if (threadIdx.x == 0) part[k] = s;
    }
  }
  if (phases == kBothPhases) cg::this_grid().sync();  // every block reaches it exactly once
  if (phases & kPhase2) {
    int cached = -1;
    acc_t sigma = 0, grad_sigma = 0;
    for (int64_t k = range.begin; k < range.end; ++k) {
      const sn_plan::Chunk c = sn_plan::chunk_of(t, k);
      const int l = c.layer;
      if (l != cached) {  // block-uniform
        cached = l;
        acc_t s = 0;
        for (int64_t j = t.chunk_offset[l] + threadIdx.x; j < t.chunk_offset[l + 1]; j += kThreads) s += part[j];
        const acc_t g_dot_w = coop::block_sum<kWarps>(s, shared);
        sigma = static_cast<acc_t>(saved[t.sigma_at[l]]);
        grad_sigma = sn_math::grad_sigma_of<acc_t>(g_dot_w, sigma);
      }
      const scalar_t* G = static_cast<const scalar_t*>(t.grad[l]);
      scalar_t* out = static_cast<scalar_t*>(t.out[l]);
      const double* u = saved + t.uv_at[l];
      const double* v = u + t.h[l];
      const int64_t w = t.w[l];
      if (c.end <= INT32_MAX) {  // 32-bit division: several times cheaper than 64-bit
        const uint32_t w32 = static_cast<uint32_t>(w);
        for (int64_t e = c.begin + threadIdx.x; e < c.end; e += kThreads) {
          const uint32_t r = static_cast<uint32_t>(e) / w32;
          out[e] = sn_math::backward_element<scalar_t, acc_t>(G[e], sigma, grad_sigma, static_cast<acc_t>(u[r]),
                                                              static_cast<acc_t>(v[static_cast<uint32_t>(e) - r * w32]));
        }
      } else {
        for (int64_t e = c.begin + threadIdx.x; e < c.end; e += kThreads) {
          const int64_t r = e / w;
          out[e] = sn_math::backward_element<scalar_t, acc_t>(G[e], sigma, grad_sigma, static_cast<acc_t>(u[r]),
                                                              static_cast<acc_t>(v[e - r * w]));
        }
      }
    }
  }
}

// One cooperative launch running both phases, or two ordinary launches (phase 1, phase 2) on the same stream.
template <typename scalar_t, typename acc_t, typename Pointer>
void launch(void (*kernel)(Table, acc_t*, Pointer, int), const Table& t, acc_t* part, Pointer saved, int device,
            cudaStream_t stream) {
  const coop::Residency r = coop::residency(kernel, kThreads, device);
  const int64_t wanted = sn_plan::blocks_wanted(t);
  if (!(r.cooperative && !coop::phases_as_launches() &&
        coop::launch(kernel, static_cast<int>(std::min<int64_t>(wanted, r.blocks)), kThreads, stream, t, part,
                     saved, kBothPhases))) {
    // no grid sync here: any grid size works; the results do not depend on it
    const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(wanted, std::max(r.blocks, 1) * 4));
    kernel<<<blocks, kThreads, 0, stream>>>(t, part, saved, kPhase1);
    WGAN_CUDA_LAUNCH_CHECK();
    kernel<<<blocks, kThreads, 0, stream>>>(t, part, saved, kPhase2);
    WGAN_CUDA_LAUNCH_CHECK();
  }
}

// Where each layer's u starts in `saved` (after the L sigmas).
std::vector<int64_t> uv_starts(const Tensors& weights) {
  std::vector<int64_t> at;
  int64_t o = static_cast<int64_t>(weights.size());
  for (const Tensor& W : weights) {
    at.push_back(o);
    o += W.size(0) + W.size(1);
  }
  return at;
}

// Calls f(table of layers `ids` of dtype) per launch: the layers of each dtype in groups of kMaxLayers.
template <typename F>
void for_each_launch(const Tensors& W, const std::vector<int64_t>& uv_at, const F& f) {
  for (const ScalarType dtype : {kFloat, kDouble, kHalf, kBFloat16}) {
    std::vector<size_t> group;
    for (size_t i = 0; i < W.size(); ++i) {
      if (dtype_of(W[i]) == dtype) group.push_back(i);
    }
    for (size_t start = 0; start < group.size(); start += sn_plan::kMaxLayers) {
      const std::vector<size_t> ids(group.begin() + start,
                                    group.begin() + std::min(group.size(), start + sn_plan::kMaxLayers));
      std::vector<int64_t> hs, ws, positions, uvs;
      for (const size_t i : ids) {
        hs.push_back(W[i].size(0));
        ws.push_back(W[i].size(1));
        positions.push_back(static_cast<int64_t>(i));
        uvs.push_back(uv_at[i]);
      }
      f(dtype, ids, sn_plan::make_table(hs, ws, positions, uvs));
    }
  }
}

// Writes every layer's W / sigma into outs (allocated here when `outs` is empty) and returns `saved`.
Tensor normalize_into(const Tensors& weights, const Tensors& us, const Tensors& vs, Tensors& outs) {
  if (weights.empty()) return torch::stable::empty({0}, kDouble);
  const int device = weights[0].get_device_index();
  const DeviceGuard guard(device);
  const cudaStream_t stream = current_stream(weights[0]);
  const bool allocate = outs.empty();
  Tensors W, u, v;
  for (size_t i = 0; i < weights.size(); ++i) {
    W.push_back(as_contiguous(weights[i]));
    u.push_back(as_contiguous(us[i]));
    v.push_back(as_contiguous(vs[i]));
    if (allocate) outs.push_back(empty_contiguous_like(W[i]));
  }
  Tensor saved = new_empty(weights[0], {saved_size(weights)}, kDouble);
  double* sp = static_cast<double*>(saved.mutable_data_ptr());
  for_each_launch(W, uv_starts(W), [&](ScalarType dtype, const std::vector<size_t>& ids, Table t) {
    for (size_t k = 0; k < ids.size(); ++k) {
      t.weight[k] = W[ids[k]].const_data_ptr();
      t.u[k] = u[ids[k]].const_data_ptr();
      t.v[k] = v[ids[k]].const_data_ptr();
      t.out[k] = outs[ids[k]].mutable_data_ptr();
    }
    dispatch_floating(dtype, "wgan_ext::spectral_norm_normalize", [&](auto tag) {
      using scalar_t = decltype(tag);
      using acc_t = acc_t_of<scalar_t>;
      const Tensor part = new_empty(W[ids[0]], {std::max<int64_t>(1, t.piece_offset[t.n])}, scalar_type_of<acc_t>());
      launch<scalar_t, acc_t>(&normalize_kernel<scalar_t, acc_t>, t, static_cast<acc_t*>(part.mutable_data_ptr()),
                              sp, device, stream);
    });
  });
  return saved;
}

std::tuple<Tensors, Tensor> normalize_cuda(Tensors weights, Tensors us, Tensors vs) {
  check_normalize_args(weights, us, vs, DeviceType::CUDA);
  Tensors outs;
  Tensor saved = normalize_into(weights, us, vs, outs);
  return {outs, saved};
}

Tensor normalize_into_cuda(Tensors weights, Tensors us, Tensors vs, Tensors outs) {
  check_normalize_args(weights, us, vs, DeviceType::CUDA);
  check_normalize_outs(weights, us, vs, outs);
  return normalize_into(weights, us, vs, outs);
}

Tensors normalize_backward_cuda(Tensors grads, Tensors weights, Tensor saved) {
  check_normalize_backward_args(grads, weights, saved, DeviceType::CUDA);
  if (weights.empty()) return {};
  const int device = weights[0].get_device_index();
  const DeviceGuard guard(device);
  const cudaStream_t stream = current_stream(weights[0]);
  Tensors W, G, outs;
  for (size_t i = 0; i < weights.size(); ++i) {
    W.push_back(as_contiguous(weights[i]));
    G.push_back(as_contiguous(grads[i]));
    outs.push_back(empty_contiguous_like(W[i]));
  }
  const Tensor sv = as_contiguous(saved);
  const double* sp = static_cast<const double*>(sv.const_data_ptr());
  for_each_launch(W, uv_starts(W), [&](ScalarType dtype, const std::vector<size_t>& ids, Table t) {
    for (size_t k = 0; k < ids.size(); ++k) {
      t.weight[k] = W[ids[k]].const_data_ptr();
      t.grad[k] = G[ids[k]].const_data_ptr();
      t.out[k] = outs[ids[k]].mutable_data_ptr();
    }
    dispatch_floating(dtype, "wgan_ext::_spectral_norm_normalize_backward", [&](auto tag) {
      using scalar_t = decltype(tag);
      using acc_t = acc_t_of<scalar_t>;
      const Tensor part = new_empty(W[ids[0]], {t.chunk_offset[t.n]}, scalar_type_of<acc_t>());
      launch<scalar_t, acc_t>(&normalize_backward_kernel<scalar_t, acc_t>, t,
                              static_cast<acc_t*>(part.mutable_data_ptr()), sp, device, stream);
    });
  });
  return outs;
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(wgan_ext, CUDA, m) {
  m.impl("spectral_norm_normalize", TORCH_BOX(&normalize_cuda));
  m.impl("_spectral_norm_normalize_into", TORCH_BOX(&normalize_into_cuda));
  m.impl("_spectral_norm_normalize_backward", TORCH_BOX(&normalize_backward_cuda));
}

}  // namespace wgan_ext
