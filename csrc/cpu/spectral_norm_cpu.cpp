// CPU kernel of wgan_ext::spectral_norm_power_iteration_: for every layer, n steps of u <- normalize(W v),
// v <- normalize(W^T u), the products parallel over rows (W v) and over column blocks (W^T u), accumulated in
// float32 (float64 for float64 weights); normalization from csrc/ops/spectral_norm_math.h, shared with CUDA.

#include <algorithm>
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
    dispatch_floating(W.scalar_type(), "wgan_ext::spectral_norm_power_iteration_", [&](auto tag) {
      power_iteration_layer<decltype(tag)>(W, u, v, n_iterations, eps);
    });
    if (!us[i].is_contiguous()) torch::stable::copy_(us[i], u);
    if (!vs[i].is_contiguous()) torch::stable::copy_(vs[i], v);
  }
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(wgan_ext, CPU, m) {
  m.impl("spectral_norm_power_iteration_", TORCH_BOX(&power_iteration_cpu));
}

}  // namespace wgan_ext
