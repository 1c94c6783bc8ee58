// CPU kernel of wgan_ext::spectral_norm_power_iteration_: for every layer, n steps of u <- normalize(W v),
// v <- normalize(W^T u), the products parallel over rows (W v) and over column blocks (W^T u), accumulated in
// float32 (float64 for float64 weights); normalization from csrc/ops/spectral_norm_math.h, shared with CUDA.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

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

// out[c] += a * row[c] for c < n.
template <typename scalar_t, typename acc_t>
WGAN_CPU_CLONES void axpy(acc_t* __restrict__ out, const scalar_t* __restrict__ row, acc_t a, int64_t n) {
  for (int64_t c = 0; c < n; ++c) out[c] += static_cast<acc_t>(row[c]) * a;
}

// One layer: W (h, w) contiguous, u (h,) and v (w,) contiguous, updated in place.
template <typename scalar_t>
void power_iteration_layer(const at::Tensor& W, at::Tensor& u, at::Tensor& v, int64_t n_iterations, double eps) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t h = W.size(0), w = W.size(1);
  const scalar_t* wp = W.const_data_ptr<scalar_t>();
  scalar_t* up = u.mutable_data_ptr<scalar_t>();
  scalar_t* vp = v.mutable_data_ptr<scalar_t>();
  const acc_t e = static_cast<acc_t>(eps);
  std::vector<acc_t> uu(h), vv(w);  // u, v as the products see them (rounded to scalar_t, like torch's buffers)
  // Rows per task of W^T u: enough work per task, at most 16 partial sums.
  const int64_t rows_per_task = std::max<int64_t>({1, kGrainElements / std::max<int64_t>(w, 1), (h + 15) / 16});
  std::vector<acc_t> partial(((h + rows_per_task - 1) / rows_per_task) * w);
  for (int64_t c = 0; c < w; ++c) vv[c] = static_cast<acc_t>(vp[c]);
  for (int64_t it = 0; it < n_iterations; ++it) {
    // u <- normalize(W v)
    at::parallel_for(0, h, std::max<int64_t>(1, kGrainElements / std::max<int64_t>(w, 1)), [&](int64_t b, int64_t e_) {
      for (int64_t r = b; r < e_; ++r) uu[r] = dot(wp + r * w, vv.data(), w);
    });
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
    at::parallel_for(0, tasks, 1, [&](int64_t b, int64_t e_) {
      for (int64_t t = b; t < e_; ++t) {
        acc_t* out = partial.data() + t * w;
        for (int64_t r = t * rows_per_task; r < std::min(h, (t + 1) * rows_per_task); ++r) {
          axpy(out, wp + r * w, uu[r], w);
        }
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

void power_iteration_cpu(at::TensorList weights, at::TensorList us, at::TensorList vs, int64_t n_iterations,
                         double eps) {
  check_power_iteration_args(weights, us, vs, n_iterations, eps, c10::DeviceType::CPU);
  for (size_t i = 0; i < weights.size(); ++i) {
    const at::Tensor W = weights[i].contiguous();
    at::Tensor u = us[i].is_contiguous() ? us[i] : us[i].contiguous();
    at::Tensor v = vs[i].is_contiguous() ? vs[i] : vs[i].contiguous();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, W.scalar_type(),
                                    "wgan_ext::spectral_norm_power_iteration_ (CPU)", [&] {
      power_iteration_layer<scalar_t>(W, u, v, n_iterations, eps);
    });
    if (!us[i].is_contiguous()) at::Tensor(us[i]).copy_(u);
    if (!vs[i].is_contiguous()) at::Tensor(vs[i]).copy_(v);
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(wgan_ext, CPU, m) {
  m.impl("spectral_norm_power_iteration_", &power_iteration_cpu);
}

}  // namespace wgan_ext
