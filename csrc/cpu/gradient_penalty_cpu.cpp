// CPU kernels of wgan_ext::interpolate, gradient_norm_penalty and _gradient_norm_penalty_backward.
// Parallel over the flattened (N, D) elements (or over samples for the reduction); the per-element and
// per-sample math is csrc/ops/gradient_penalty_math.h, the same code the CUDA kernels run.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

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
template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
WGAN_CPU_CLONES acc_t sum_of_squares(const scalar_t* __restrict__ x, int64_t n) {
  acc_t s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += static_cast<acc_t>(x[i]) * static_cast<acc_t>(x[i]);
  return s;
}

at::Tensor interpolate_cpu(const at::Tensor& real, const at::Tensor& fake, const at::Tensor& alpha) {
  check_interpolate_args(real, fake, alpha);
  const at::Tensor r = real.contiguous(), f = fake.contiguous(), a = alpha.contiguous();
  at::Tensor out = at::empty_like(r, at::MemoryFormat::Contiguous);
  const int64_t N = r.size(0);
  const int64_t D = N == 0 ? 0 : r.numel() / N;
  if (r.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, r.scalar_type(), "wgan_ext::interpolate (CPU)", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* rp = r.const_data_ptr<scalar_t>();
    const scalar_t* fp = f.const_data_ptr<scalar_t>();
    const scalar_t* ap = a.const_data_ptr<scalar_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, N * D, kGrain, [&](int64_t begin, int64_t end) {
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

std::tuple<at::Tensor, at::Tensor> gradient_norm_penalty_cpu(const at::Tensor& grad, double target, bool one_sided,
                                                             double inv_scale, double eps) {
  check_penalty_args(grad, inv_scale, eps);
  const at::Tensor g = grad.contiguous();
  const int64_t N = g.size(0);
  const int64_t D = g.numel() / N;
  const auto acc_options = g.options().dtype(penalty_acc_dtype(g.scalar_type()));
  at::Tensor norms = at::empty({N}, acc_options);
  at::Tensor penalty = at::empty({}, acc_options);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(), "wgan_ext::gradient_norm_penalty (CPU)",
                                  [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    acc_t* np = norms.mutable_data_ptr<acc_t>();
    at::parallel_for(0, N, std::max<int64_t>(1, kGrain / std::max<int64_t>(D, 1)), [&](int64_t begin, int64_t end) {
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

at::Tensor gradient_norm_penalty_backward_cpu(const at::Tensor& grad_penalty, const at::Tensor& grad_norms,
                                              const at::Tensor& grad, const at::Tensor& norms, double target,
                                              bool one_sided, double inv_scale) {
  check_penalty_backward_args(grad_penalty, grad_norms, grad, norms);
  const at::Tensor g = grad.contiguous();
  const int64_t N = g.size(0);
  const int64_t D = N == 0 ? 0 : g.numel() / N;
  at::Tensor out = at::empty_like(g, at::MemoryFormat::Contiguous);
  if (g.numel() == 0) return out;
  const at::Tensor n_c = norms.contiguous(), gn_c = grad_norms.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(),
                                  "wgan_ext::_gradient_norm_penalty_backward (CPU)", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    const acc_t* np = n_c.const_data_ptr<acc_t>();
    const acc_t* gnp = gn_c.const_data_ptr<acc_t>();
    const acc_t gpen = *grad_penalty.const_data_ptr<acc_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, N * D, kGrain, [&](int64_t begin, int64_t end) {
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

TORCH_LIBRARY_IMPL(wgan_ext, CPU, m) {
  m.impl("interpolate", &interpolate_cpu);
  m.impl("gradient_norm_penalty", &gradient_norm_penalty_cpu);
  m.impl("_gradient_norm_penalty_backward", &gradient_norm_penalty_backward_cpu);
}

}  // namespace wgan_ext
