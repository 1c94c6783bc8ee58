// CPU kernel of wgan_ext::spectral_norm_power_iteration_: for every layer, n steps of u <- normalize(W v),
// v <- normalize(W^T u), the products parallel over rows (W v) and over column blocks (W^T u), accumulated in
// float32 (float64 for float64 weights); normalization from csrc/ops/spectral_norm_math.h, shared with CUDA.

#include <algorithm>
#include <tuple>
#include <type_traits>
#include <vector>

#include "../macros.h"
#include "../ops/spectral_norm.h"
#include "../ops/spectral_norm_math.h"

namespace wgan_ext {
namespace {

constexpr int64_t kGrainElements = 32768;

// sum_i a[i] * b[i]; the simd reduction lets the compiler reassociate it into vector lanes (setup.py passes
// -fopenmp-simd): several times faster than a sequential sum, deterministic for a given build and CPU.
template <typename scalar_t, typename acc_t>
WGAN_CPU_CLONES acc_t dot(const scalar_t* __restrict__ a, const acc_t* __restrict__ b, int64_t n) {
  acc_t s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += static_cast<acc_t>(a[i]) * b[i];
  return s;
}

// The dot products of kRows consecutive rows (stride w) with b, in one pass over b. Each row's sum is reduced as
// `dot` reduces it, but the kRows sums are independent chains: one chain is bound by the add latency, not by memory
// (measured: the 1024 x 8192 case ran at 35 GB/s with one, below MKL's gemv).
constexpr int64_t kRows = 4;

template <typename scalar_t, typename acc_t>
WGAN_CPU_CLONES void dot_rows(const scalar_t* __restrict__ a, int64_t w, const acc_t* __restrict__ b, int64_t n,
                              acc_t* __restrict__ out) {
  const scalar_t* __restrict__ a0 = a;
  const scalar_t* __restrict__ a1 = a + w;
  const scalar_t* __restrict__ a2 = a + 2 * w;
  const scalar_t* __restrict__ a3 = a + 3 * w;
  acc_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
  for (int64_t i = 0; i < n; ++i) {
    const acc_t x = b[i];
    s0 += static_cast<acc_t>(a0[i]) * x;
    s1 += static_cast<acc_t>(a1[i]) * x;
    s2 += static_cast<acc_t>(a2[i]) * x;
    s3 += static_cast<acc_t>(a3[i]) * x;
  }
  out[0] = s0;
  out[1] = s1;
  out[2] = s2;
  out[3] = s3;
}

// out[c] += a * row[c] for c < n.
template <typename scalar_t, typename acc_t>
WGAN_CPU_CLONES void axpy(acc_t* __restrict__ out, const scalar_t* __restrict__ row, acc_t a, int64_t n) {
  for (int64_t c = 0; c < n; ++c) out[c] += static_cast<acc_t>(row[c]) * a;
}

// kRows axpys of consecutive rows (stride w) in one pass over out, added in row order (the same rounding as kRows
// calls of axpy, with a quarter of the loads and stores of out).
template <typename scalar_t, typename acc_t>
WGAN_CPU_CLONES void axpy_rows(acc_t* __restrict__ out, const scalar_t* __restrict__ rows, int64_t w,
                               const acc_t* __restrict__ a, int64_t n) {
  const scalar_t* __restrict__ r0 = rows;
  const scalar_t* __restrict__ r1 = rows + w;
  const scalar_t* __restrict__ r2 = rows + 2 * w;
  const scalar_t* __restrict__ r3 = rows + 3 * w;
  const acc_t a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
  for (int64_t c = 0; c < n; ++c) {
    acc_t o = out[c];
    o += static_cast<acc_t>(r0[c]) * a0;
    o += static_cast<acc_t>(r1[c]) * a1;
    o += static_cast<acc_t>(r2[c]) * a2;
    o += static_cast<acc_t>(r3[c]) * a3;
    out[c] = o;
  }
}

// out[i] = W[i] / sigma for i in [begin, end).
template <typename scalar_t, typename acc_t>
WGAN_CPU_CLONES void normalize_range(const scalar_t* __restrict__ W, scalar_t* __restrict__ out, int64_t begin,
                                     int64_t end, acc_t sigma) {
  for (int64_t i = begin; i < end; ++i) out[i] = sn_math::normalize_element<scalar_t, acc_t>(W[i], sigma);
}

// sum_i a[i] * b[i] of two arrays of the storage type, in acc_t.
template <typename scalar_t, typename acc_t = acc_t_of<scalar_t>>
WGAN_CPU_CLONES acc_t dot_same(const scalar_t* __restrict__ a, const scalar_t* __restrict__ b, int64_t n) {
  acc_t s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += static_cast<acc_t>(a[i]) * static_cast<acc_t>(b[i]);
  return s;
}

// One layer: W (h, w) contiguous, u (h,) and v (w,) contiguous, updated in place.
template <typename scalar_t>
void power_iteration_layer(const Tensor& W, Tensor& u, Tensor& v, int64_t n_iterations, double eps) {
  using acc_t = acc_t_of<scalar_t>;
  const int64_t h = W.size(0), w = W.size(1);
  const scalar_t* wp = static_cast<const scalar_t*>(W.const_data_ptr());
  scalar_t* up = static_cast<scalar_t*>(u.mutable_data_ptr());
  scalar_t* vp = static_cast<scalar_t*>(v.mutable_data_ptr());
  const acc_t e = static_cast<acc_t>(eps);
  std::vector<acc_t> uu(h), vv(w);  // u, v as the products see them (rounded to scalar_t, like torch's buffers)
  // Rows per task of W^T u: enough work per task, at most 16 partial sums.
  const int64_t rows_per_task = std::max<int64_t>({1, kGrainElements / std::max<int64_t>(w, 1), (h + 15) / 16});
  std::vector<acc_t> partial(((h + rows_per_task - 1) / rows_per_task) * w);
  for (int64_t c = 0; c < w; ++c) vv[c] = static_cast<acc_t>(vp[c]);
  for (int64_t it = 0; it < n_iterations; ++it) {
    // u <- normalize(W v), in groups of kRows rows (fixed by the row index, so results do not depend on the
    // thread count); the rows past the last full group one by one
    const int64_t groups = h / kRows;
    torch::stable::parallel_for(0, groups, std::max<int64_t>(1, kGrainElements / std::max<int64_t>(kRows * w, 1)),
                     [&](int64_t b, int64_t e_) {
      for (int64_t g = b; g < e_; ++g) dot_rows(wp + g * kRows * w, w, vv.data(), w, uu.data() + g * kRows);
    });
    for (int64_t r = groups * kRows; r < h; ++r) uu[r] = dot(wp + r * w, vv.data(), w);
    acc_t ss = 0;
    for (int64_t r = 0; r < h; ++r) ss += uu[r] * uu[r];
    acc_t inv = sn_math::inv_norm(ss, e);
    for (int64_t r = 0; r < h; ++r) {
      up[r] = static_cast<scalar_t>(uu[r] * inv);
      uu[r] = static_cast<acc_t>(up[r]);
    }
    // v <- normalize(W^T u): each task streams through a block of rows into its own partial sum of length w;
    // the partials are then added in task order (deterministic whatever the thread count).
    const int64_t tasks = (h + rows_per_task - 1) / rows_per_task;
    std::fill(partial.begin(), partial.end(), acc_t(0));
    torch::stable::parallel_for(0, tasks, 1, [&](int64_t b, int64_t e_) {
      for (int64_t t = b; t < e_; ++t) {
        acc_t* out = partial.data() + t * w;
        const int64_t end = std::min(h, (t + 1) * rows_per_task);
        int64_t r = t * rows_per_task;
        for (; r + kRows <= end; r += kRows) axpy_rows(out, wp + r * w, w, uu.data() + r, w);
        for (; r < end; ++r) axpy(out, wp + r * w, uu[r], w);
      }
    });
    std::fill(vv.begin(), vv.end(), acc_t(0));
    for (int64_t t = 0; t < tasks; ++t) axpy(vv.data(), partial.data() + t * w, acc_t(1), w);
    ss = 0;
    for (int64_t c = 0; c < w; ++c) ss += vv[c] * vv[c];
    inv = sn_math::inv_norm(ss, e);
    for (int64_t c = 0; c < w; ++c) {
      vp[c] = static_cast<scalar_t>(vv[c] * inv);
      vv[c] = static_cast<acc_t>(vp[c]);
    }
  }
}

void power_iteration_cpu(Tensors weights, Tensors us, Tensors vs, int64_t n_iterations, double eps) {
  check_power_iteration_args(weights, us, vs, n_iterations, eps, DeviceType::CPU);
  for (size_t i = 0; i < weights.size(); ++i) {
    const Tensor W = as_contiguous(weights[i]);
    Tensor u = as_contiguous(us[i]);
    Tensor v = as_contiguous(vs[i]);
    dispatch_floating(dtype_of(W), "wgan_ext::spectral_norm_power_iteration_", [&](auto tag) {
      power_iteration_layer<decltype(tag)>(W, u, v, n_iterations, eps);
    });
    if (!us[i].is_contiguous()) torch::stable::copy_(us[i], u);
    if (!vs[i].is_contiguous()) torch::stable::copy_(vs[i], v);
  }
}

// ---- spectral_norm_normalize and its backward: every layer in two parallel passes (not one per layer).

// One layer as the passes see it: the contiguous matrix (h, w) and where its rows / elements start in the tasks.
struct Layer {
  Tensor W;
  int64_t h, w;
  ScalarType dtype;
  int64_t wv_offset;  // this layer's (W v) in the row buffer
};

// A range of rows (pass over rows) or of elements (elementwise pass) of one layer.
struct Task {
  int32_t layer;
  int64_t begin, end;
};

// Rows per task of W v: enough work per task, in groups of kRows (fixed by the shapes, not the thread count).
std::vector<Task> row_tasks(const std::vector<Layer>& layers) {
  std::vector<Task> tasks;
  for (size_t l = 0; l < layers.size(); ++l) {
    const int64_t h = layers[l].h, w = layers[l].w;
    const int64_t rows = std::max<int64_t>(kRows, (kGrainElements / std::max<int64_t>(w, 1)) / kRows * kRows);
    for (int64_t r = 0; r < h; r += rows) tasks.push_back({static_cast<int32_t>(l), r, std::min(h, r + rows)});
  }
  return tasks;
}

std::vector<Task> element_tasks(const std::vector<Layer>& layers) {
  std::vector<Task> tasks;
  for (size_t l = 0; l < layers.size(); ++l) {
    const int64_t n = layers[l].h * layers[l].w;
    for (int64_t i = 0; i < n; i += kGrainElements) {
      tasks.push_back({static_cast<int32_t>(l), i, std::min(n, i + kGrainElements)});
    }
  }
  return tasks;
}

// Writes every layer's W / sigma into outs (allocated here when `outs` is empty) and returns `saved`.
Tensor normalize_into(const Tensors& weights, const Tensors& us, const Tensors& vs, Tensors& outs) {
  const size_t L = weights.size();
  std::vector<Layer> layers;
  int64_t rows_total = 0, uv_total = 0;
  for (size_t l = 0; l < L; ++l) {
    const Tensor W = as_contiguous(weights[l]);
    layers.push_back({W, W.size(0), W.size(1), dtype_of(W), rows_total});
    rows_total += W.size(0);
    uv_total += W.size(0) + W.size(1);
  }
  Tensor saved = L == 0 ? torch::stable::empty({0}, kDouble)
                        : new_empty(weights[0], {static_cast<int64_t>(L) + uv_total}, kDouble);
  if (L == 0) return saved;
  double* sv = static_cast<double*>(saved.mutable_data_ptr());
  // u and v, as float64 (exact) for the backward, and in each layer's acc_t for the products
  double* uv = sv + L;  // written straight into `saved`, read back below
  {
    int64_t o = 0;
    for (size_t l = 0; l < L; ++l) {
      const Tensor u = as_contiguous(us[l]), v = as_contiguous(vs[l]);
      dispatch_floating(layers[l].dtype, "wgan_ext::spectral_norm_normalize", [&](auto tag) {
        using scalar_t = decltype(tag);
        const scalar_t* up = static_cast<const scalar_t*>(u.const_data_ptr());
        const scalar_t* vp = static_cast<const scalar_t*>(v.const_data_ptr());
        for (int64_t r = 0; r < layers[l].h; ++r) {
          uv[o + r] = static_cast<double>(static_cast<acc_t_of<scalar_t>>(up[r]));
        }
        for (int64_t c = 0; c < layers[l].w; ++c) {
          uv[o + layers[l].h + c] = static_cast<double>(static_cast<acc_t_of<scalar_t>>(vp[c]));
        }
      });
      o += layers[l].h + layers[l].w;
    }
  }
  // v in acc_t per layer (float or double), for the row products
  std::vector<float> v32;
  std::vector<double> v64;
  std::vector<int64_t> v_at(L);
  {
    int64_t o = 0;
    for (size_t l = 0; l < L; ++l) {
      const double* v = uv + o + layers[l].h;
      if (layers[l].dtype == kDouble) {
        v_at[l] = static_cast<int64_t>(v64.size());
        v64.insert(v64.end(), v, v + layers[l].w);
      } else {
        v_at[l] = static_cast<int64_t>(v32.size());
        for (int64_t c = 0; c < layers[l].w; ++c) v32.push_back(static_cast<float>(v[c]));
      }
      o += layers[l].h + layers[l].w;
    }
  }
  // pass 1: W v, every row of every layer
  std::vector<double> wv(static_cast<size_t>(rows_total));
  const std::vector<Task> rows = row_tasks(layers);
  torch::stable::parallel_for(0, static_cast<int64_t>(rows.size()), 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const Task& task = rows[t];
      const Layer& layer = layers[task.layer];
      dispatch_floating(layer.dtype, "wgan_ext::spectral_norm_normalize", [&](auto tag) {
        using scalar_t = decltype(tag);
        using acc_t = acc_t_of<scalar_t>;
        const scalar_t* W = static_cast<const scalar_t*>(layer.W.const_data_ptr());
        const acc_t* v;
        if constexpr (std::is_same_v<acc_t, double>) v = v64.data() + v_at[task.layer]; else v = v32.data() + v_at[task.layer];
        acc_t out[kRows];
        int64_t r = task.begin;
        for (; r + kRows <= task.end; r += kRows) {
          dot_rows(W + r * layer.w, layer.w, v, layer.w, out);
          for (int64_t k = 0; k < kRows; ++k) wv[layer.wv_offset + r + k] = static_cast<double>(out[k]);
        }
        for (; r < task.end; ++r) wv[layer.wv_offset + r] = static_cast<double>(dot(W + r * layer.w, v, layer.w));
      });
    }
  });
  // sigma = u^T (W v) per layer, in row order, rounded to the weight's dtype (as torch's vdot returns it)
  {
    int64_t o = 0;
    for (size_t l = 0; l < L; ++l) {
      dispatch_floating(layers[l].dtype, "wgan_ext::spectral_norm_normalize", [&](auto tag) {
        using scalar_t = decltype(tag);
        using acc_t = acc_t_of<scalar_t>;
        acc_t sigma = 0;
        for (int64_t r = 0; r < layers[l].h; ++r) {
          sigma += static_cast<acc_t>(uv[o + r]) * static_cast<acc_t>(wv[layers[l].wv_offset + r]);
        }
        sv[l] = static_cast<double>(sn_math::rounded_sigma<scalar_t, acc_t>(sigma));
      });
      o += layers[l].h + layers[l].w;
    }
  }
  // pass 2: W / sigma, every element of every layer
  if (outs.empty()) {
    for (size_t l = 0; l < L; ++l) outs.push_back(empty_contiguous_like(layers[l].W));
  }
  const std::vector<Task> elems = element_tasks(layers);
  torch::stable::parallel_for(0, static_cast<int64_t>(elems.size()), 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const Task& task = elems[t];
      dispatch_floating(layers[task.layer].dtype, "wgan_ext::spectral_norm_normalize", [&](auto tag) {
        using scalar_t = decltype(tag);
        using acc_t = acc_t_of<scalar_t>;
        const scalar_t* W = static_cast<const scalar_t*>(layers[task.layer].W.const_data_ptr());
        scalar_t* out = static_cast<scalar_t*>(outs[task.layer].mutable_data_ptr());
        normalize_range<scalar_t, acc_t>(W, out, task.begin, task.end, static_cast<acc_t>(sv[task.layer]));
      });
    }
  });
  return saved;
}

std::tuple<Tensors, Tensor> normalize_cpu(Tensors weights, Tensors us, Tensors vs) {
  check_normalize_args(weights, us, vs, DeviceType::CPU);
  Tensors outs;
  Tensor saved = normalize_into(weights, us, vs, outs);
  return {outs, saved};
}

// The same into given tensors (the layer keeps them between calls: no fresh allocation per forward).
Tensor normalize_into_cpu(Tensors weights, Tensors us, Tensors vs, Tensors outs) {
  check_normalize_args(weights, us, vs, DeviceType::CPU);
  check_normalize_outs(weights, us, vs, outs);
  return normalize_into(weights, us, vs, outs);
}

Tensors normalize_backward_cpu(Tensors grads, Tensors weights, Tensor saved) {
  check_normalize_backward_args(grads, weights, saved, DeviceType::CPU);
  const size_t L = weights.size();
  std::vector<Layer> layers;
  Tensors gs;
  for (size_t l = 0; l < L; ++l) {
    const Tensor W = as_contiguous(weights[l]);
    layers.push_back({W, W.size(0), W.size(1), dtype_of(W), 0});
    gs.push_back(as_contiguous(grads[l]));
  }
  const Tensor sv_t = as_contiguous(saved);
  const double* sv = static_cast<const double*>(sv_t.const_data_ptr());
  std::vector<int64_t> uv_at(L);
  for (size_t l = 0, o = L; l < L; ++l) {
    uv_at[l] = static_cast<int64_t>(o);
    o += static_cast<size_t>(layers[l].h + layers[l].w);
  }
  // pass 1: <G, W> per layer, as partial sums per task added in task order
  const std::vector<Task> elems = element_tasks(layers);
  std::vector<double> partial(elems.size());
  torch::stable::parallel_for(0, static_cast<int64_t>(elems.size()), 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const Task& task = elems[t];
      dispatch_floating(layers[task.layer].dtype, "wgan_ext::_spectral_norm_normalize_backward", [&](auto tag) {
        using scalar_t = decltype(tag);
        const scalar_t* W = static_cast<const scalar_t*>(layers[task.layer].W.const_data_ptr());
        const scalar_t* G = static_cast<const scalar_t*>(gs[task.layer].const_data_ptr());
        partial[t] = static_cast<double>(dot_same(W + task.begin, G + task.begin, task.end - task.begin));
      });
    }
  });
  std::vector<double> grad_sigma(L, 0.0);
  {
    std::vector<double> g_dot_w(L, 0.0);
    for (size_t t = 0; t < elems.size(); ++t) {
      const size_t l = static_cast<size_t>(elems[t].layer);
      dispatch_floating(layers[l].dtype, "wgan_ext::_spectral_norm_normalize_backward", [&](auto tag) {
        using acc_t = acc_t_of<decltype(tag)>;
        g_dot_w[l] = static_cast<double>(static_cast<acc_t>(g_dot_w[l]) + static_cast<acc_t>(partial[t]));
      });
    }
    for (size_t l = 0; l < L; ++l) {
      dispatch_floating(layers[l].dtype, "wgan_ext::_spectral_norm_normalize_backward", [&](auto tag) {
        using acc_t = acc_t_of<decltype(tag)>;
        grad_sigma[l] = static_cast<double>(
            sn_math::grad_sigma_of<acc_t>(static_cast<acc_t>(g_dot_w[l]), static_cast<acc_t>(sv[l])));
      });
    }
  }
  // pass 2: dW = G / sigma + grad_sigma * u v^T
  Tensors outs;
  for (size_t l = 0; l < L; ++l) outs.push_back(empty_contiguous_like(layers[l].W));
  torch::stable::parallel_for(0, static_cast<int64_t>(elems.size()), 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const Task& task = elems[t];
      const size_t l = static_cast<size_t>(task.layer);
      dispatch_floating(layers[l].dtype, "wgan_ext::_spectral_norm_normalize_backward", [&](auto tag) {
        using scalar_t = decltype(tag);
        using acc_t = acc_t_of<scalar_t>;
        const scalar_t* G = static_cast<const scalar_t*>(gs[l].const_data_ptr());
        scalar_t* out = static_cast<scalar_t*>(outs[l].mutable_data_ptr());
        const double* u = sv + uv_at[l];
        const double* v = u + layers[l].h;
        const acc_t sigma = static_cast<acc_t>(sv[l]), gs_l = static_cast<acc_t>(grad_sigma[l]);
        const int64_t w = layers[l].w;
        for (int64_t i = task.begin; i < task.end;) {
          const int64_t r = i / w, stop = std::min(task.end, (r + 1) * w);
          const acc_t u_r = static_cast<acc_t>(u[r]);
          for (int64_t c = i - r * w; i < stop; ++i, ++c) {
            out[i] = sn_math::backward_element<scalar_t, acc_t>(G[i], sigma, gs_l, u_r, static_cast<acc_t>(v[c]));
          }
        }
      });
    }
  });
  return outs;
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(wgan_ext, CPU, m) {
  m.impl("spectral_norm_power_iteration_", TORCH_BOX(&power_iteration_cpu));
  m.impl("spectral_norm_normalize", TORCH_BOX(&normalize_cpu));
  m.impl("_spectral_norm_normalize_into", TORCH_BOX(&normalize_into_cpu));
  m.impl("_spectral_norm_normalize_backward", TORCH_BOX(&normalize_backward_cpu));
}

}  // namespace wgan_ext
