// CPU kernel of wgan_ext::spectral_norm_power_iteration_: for every layer, n steps of u <- normalize(W v),
// v <- normalize(W^T u), the products parallel over rows (W v) and over column blocks (W^T u), accumulated in
// float32 (float64 for float64 weights); normalization from csrc/ops/spectral_norm_math.h, shared with CUDA.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../ops/spectral_norm.h"
#include "../ops/spectral_norm_math.h"

namespace wgan_ext {
namespace {

constexpr int64_t kGrainElements = 32768;
constexpr int64_t kColumnBlock = 256;

template <typename scalar_t, typename acc_t>
acc_t dot(const scalar_t* a, const acc_t* b, int64_t n) {
  acc_t s[8] = {0, 0, 0, 0, 0, 0, 0, 0};  // independent partial sums: vectorizes
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int k = 0; k < 8; ++k) s[k] += static_cast<acc_t>(a[i + k]) * b[i + k];
  }
  for (; i < n; ++i) s[0] += static_cast<acc_t>(a[i]) * b[i];
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
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
    // v <- normalize(W^T u): each task owns a block of columns and walks the rows (contiguous reads).
    const int64_t blocks = (w + kColumnBlock - 1) / kColumnBlock;
    at::parallel_for(0, blocks, std::max<int64_t>(1, kGrainElements / std::max<int64_t>(h * kColumnBlock, 1)),
                     [&](int64_t b, int64_t e_) {
      for (int64_t blk = b; blk < e_; ++blk) {
        const int64_t c0 = blk * kColumnBlock, c1 = std::min(w, c0 + kColumnBlock);
        acc_t* out = vv.data();
        for (int64_t c = c0; c < c1; ++c) out[c] = 0;
        for (int64_t r = 0; r < h; ++r) {
          const acc_t ur = uu[r];
          const scalar_t* row = wp + r * w;
          for (int64_t c = c0; c < c1; ++c) out[c] += static_cast<acc_t>(row[c]) * ur;
        }
      }
    });
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
