// Per-vector math of the spectral-norm power iteration, shared by the CPU and CUDA kernels.
//
// One step, as torch.nn.utils.parametrizations.spectral_norm does it (weight viewed as a matrix W of (h, w)):
//   u <- normalize(W v),   v <- normalize(W^T u),   normalize(x) = x / max(||x||_2, eps)   (F.normalize)
// The kernels compute the matrix-vector products in the accumulation type (float for float16/bfloat16) and round
// u and v to the weight's dtype after each normalization, as torch's buffers are.
#pragma once

#include <cmath>

#include "../macros.h"

namespace wgan_ext {
namespace sn_math {

// 1 / max(sqrt(sum_of_squares), eps): the factor F.normalize applies.
template <typename acc_t>
WGAN_HOST_DEVICE WGAN_INLINE acc_t inv_norm(acc_t sum_of_squares, acc_t eps) {
#ifdef __CUDA_ARCH__
  const acc_t norm = ::sqrt(sum_of_squares);
#else
  const acc_t norm = std::sqrt(sum_of_squares);
#endif
  return acc_t(1) / (norm > eps ? norm : eps);
}

}  // namespace sn_math
}  // namespace wgan_ext
