// CPU kernels of wgan_ext::interpolate, gradient_norm_penalty and _gradient_norm_penalty_backward.
// Parallel over the flattened (N, D) elements (or over samples for the reduction); the per-element and
// per-sample math is csrc/ops/gradient_penalty_math.h, the same code the CUDA kernels run.

#include <algorithm>
#include <tuple>

#include "../macros.h"
#include "../ops/gradient_penalty.h"
#include "../ops/gradient_penalty_math.h"

namespace wgan_ext {
namespace {

constexpr int64_t kGrain = 32768;

// Calls f(n, begin, end) for the parts of samples n that fall in the flat range [begin, end) of an (N, D) tensor.
template <typename F>
void for_each_sample_part(int64_t begin, int64_t end, int64_t D, const F& f) {
  int64_t i = begin;
  while (i < end) {
    const int64_t n = i / D;
    const int64_t stop = std::min(end, (n + 1) * D);
    f(n, i, stop);
    i = stop;
  }
}

// sum_i x[i]^2 in acc_t; the simd reduction lets the compiler reassociate it into vector lanes (-fopenmp-simd).
template <typename scalar_t, typename acc_t = acc_t_of<scalar_t>>
WGAN_CPU_CLONES acc_t sum_of_squares(const scalar_t* __restrict__ x, int64_t n) {
  acc_t s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += static_cast<acc_t>(x[i]) * static_cast<acc_t>(x[i]);
  return s;
}

Tensor interpolate_cpu(Tensor real, Tensor fake, Tensor alpha) {
  check_interpolate_args(real, fake, alpha);
  const Tensor r = as_contiguous(real), f = as_contiguous(fake), a = as_contiguous(alpha);
  Tensor out = empty_contiguous_like(r);
  const int64_t N = r.size(0);
  const int64_t D = N == 0 ? 0 : r.numel() / N;
  if (r.numel() == 0) return out;
  dispatch_floating(dtype_of(r), "wgan_ext::interpolate", [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = acc_t_of<scalar_t>;
    const scalar_t* rp = r.const_data_ptr<scalar_t>();
    const scalar_t* fp = f.const_data_ptr<scalar_t>();
    const scalar_t* ap = a.const_data_ptr<scalar_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    torch::stable::parallel_for(0, N * D, kGrain, [&](int64_t begin, int64_t end) {
      for_each_sample_part(begin, end, D, [&](int64_t n, int64_t lo, int64_t hi) {
        const acc_t al = static_cast<acc_t>(ap[n]);
        for (int64_t i = lo; i < hi; ++i) {
          op[i] = static_cast<scalar_t>(
              gp_math::interpolate<acc_t>(static_cast<acc_t>(rp[i]), static_cast<acc_t>(fp[i]), al));
        }
      });
    });
  });
  return out;
}

std::tuple<Tensor, Tensor> gradient_norm_penalty_cpu(Tensor grad, double target, bool one_sided, double inv_scale,
                                                     double eps) {
  check_penalty_args(grad, inv_scale, eps);
  const Tensor g = as_contiguous(grad);
  const int64_t N = g.size(0);
  const int64_t D = g.numel() / N;
  const ScalarType acc_dtype = penalty_acc_dtype(dtype_of(g));
  Tensor norms = new_empty(g, {N}, acc_dtype);
  Tensor penalty = new_empty(g, {}, acc_dtype);
  dispatch_floating(dtype_of(g), "wgan_ext::gradient_norm_penalty", [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = acc_t_of<scalar_t>;
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    acc_t* np = norms.mutable_data_ptr<acc_t>();
    torch::stable::parallel_for(0, N, std::max<int64_t>(1, kGrain / std::max<int64_t>(D, 1)), [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) {
        np[n] = gp_math::norm<acc_t>(sum_of_squares(gp + n * D, D), static_cast<acc_t>(inv_scale),
                                     static_cast<acc_t>(eps));
      }
    });
    acc_t total = 0;
    for (int64_t n = 0; n < N; ++n) total += gp_math::term<acc_t>(np[n], static_cast<acc_t>(target), one_sided);
    *penalty.mutable_data_ptr<acc_t>() = total / static_cast<acc_t>(N);
  });
  return {penalty, norms};
}

Tensor gradient_norm_penalty_backward_cpu(Tensor grad_penalty, Tensor grad_norms, Tensor grad, Tensor norms,
                                          double target, bool one_sided, double inv_scale) {
  check_penalty_backward_args(grad_penalty, grad_norms, grad, norms);
  const Tensor g = as_contiguous(grad);
  const int64_t N = g.size(0);
  const int64_t D = N == 0 ? 0 : g.numel() / N;
  Tensor out = empty_contiguous_like(g);
  if (g.numel() == 0) return out;
  const Tensor n_c = as_contiguous(norms), gn_c = as_contiguous(grad_norms);
  dispatch_floating(dtype_of(g), "wgan_ext::_gradient_norm_penalty_backward", [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = acc_t_of<scalar_t>;
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    const acc_t* np = n_c.const_data_ptr<acc_t>();
    const acc_t* gnp = gn_c.const_data_ptr<acc_t>();
    const acc_t gpen = *grad_penalty.const_data_ptr<acc_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    torch::stable::parallel_for(0, N * D, kGrain, [&](int64_t begin, int64_t end) {
      for_each_sample_part(begin, end, D, [&](int64_t n, int64_t lo, int64_t hi) {
        const acc_t coef = gp_math::backward_coef<acc_t>(np[n], static_cast<acc_t>(target), one_sided,
                                                         static_cast<acc_t>(inv_scale), gpen, gnp[n],
                                                         static_cast<acc_t>(N));
        for (int64_t i = lo; i < hi; ++i) op[i] = static_cast<scalar_t>(coef * static_cast<acc_t>(gp[i]));
      });
    });
  });
  return out;
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(wgan_ext, CPU, m) {
  m.impl("interpolate", TORCH_BOX(&interpolate_cpu));
  m.impl("gradient_norm_penalty", TORCH_BOX(&gradient_norm_penalty_cpu));
  m.impl("_gradient_norm_penalty_backward", TORCH_BOX(&gradient_norm_penalty_backward_cpu));
}

}  // namespace wgan_ext
