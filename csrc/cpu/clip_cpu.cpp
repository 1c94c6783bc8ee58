// CPU kernel of wgan_ext::clip_ and clip_count_: one parallel pass over the elements of all tensors.
//
// The tensors are cut into chunks of kChunk elements; one at::parallel_for runs over every chunk of every tensor, so
// 500 small tensors cost one parallel region rather than 500 dispatches. Each chunk is a tight loop over the shared
// per-element math (csrc/ops/clip_math.h), which the compiler vectorizes for float and double.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/zeros.h>
#include <c10/core/Scalar.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../ops/clip.h"
#include "../ops/clip_math.h"

namespace wgan_ext {
namespace {

constexpr int64_t kChunk = 16384;           // elements per task
constexpr int64_t kSerialBelow = 65536;     // below this many elements in all, one thread does it all

struct Chunk {
  void* data;              // first element of the chunk
  int64_t numel;
  int32_t tensor;          // index into the op's tensor list
  c10::ScalarType dtype;
};

template <typename scalar_t, bool kCount>
int64_t clamp_chunk(scalar_t* p, int64_t n, double min, double max) {
  using math_t = at::opmath_type<scalar_t>;
  // Round the bounds to the tensor's dtype first, exactly as torch.clamp does with scalar bounds.
  const math_t lo = static_cast<math_t>(c10::Scalar(min).to<scalar_t>());
  const math_t hi = static_cast<math_t>(c10::Scalar(max).to<scalar_t>());
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) {
    const math_t x = static_cast<math_t>(p[i]);
    if constexpr (kCount) count += clip_math::at_bound(x, lo, hi) ? 1 : 0;
    p[i] = static_cast<scalar_t>(clip_math::clamp(x, lo, hi));
  }
  return count;
}

template <bool kCount>
void clip_cpu_impl(at::TensorList tensors, double min, double max, int64_t* counts) {
  check_clip_args(tensors, min, max, c10::DeviceType::CPU);
  const DenseViews dense(tensors);

  std::vector<Chunk> chunks;
  int64_t total = 0;
  for (size_t i = 0; i < dense.views.size(); ++i) {
    const at::Tensor& t = dense.views[i];
    const int64_t n = t.numel();
    total += n;
    char* base = static_cast<char*>(t.data_ptr());
    const int64_t item = t.element_size();
    for (int64_t start = 0; start < n; start += kChunk) {
      chunks.push_back({base + start * item, std::min(kChunk, n - start), static_cast<int32_t>(i), t.scalar_type()});
    }
  }

  std::vector<int64_t> chunk_counts(kCount ? chunks.size() : 0, 0);
  const int64_t nchunks = static_cast<int64_t>(chunks.size());
  const int64_t grain = total < kSerialBelow ? std::max<int64_t>(nchunks, 1) : 1;
  at::parallel_for(0, nchunks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const Chunk& ch = chunks[c];
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ch.dtype, "wgan_ext::clip_ (CPU)", [&] {
        const int64_t k = clamp_chunk<scalar_t, kCount>(static_cast<scalar_t*>(ch.data), ch.numel, min, max);
        if constexpr (kCount) chunk_counts[c] = k;
      });
    }
  });

  dense.write_back(tensors);
  if constexpr (kCount) {
    for (size_t c = 0; c < chunks.size(); ++c) counts[chunks[c].tensor] += chunk_counts[c];
  }
}

void clip_cpu(at::TensorList tensors, double min, double max) {
  clip_cpu_impl<false>(tensors, min, max, nullptr);
}

at::Tensor clip_count_cpu(at::TensorList tensors, double min, double max) {
  at::Tensor counts = at::zeros({static_cast<int64_t>(tensors.size())}, at::TensorOptions().dtype(at::kLong));
  clip_cpu_impl<true>(tensors, min, max, counts.data_ptr<int64_t>());
  return counts;
}

}  // namespace

TORCH_LIBRARY_IMPL(wgan_ext, CPU, m) {
  m.impl("clip_", &clip_cpu);
  m.impl("clip_count_", &clip_count_cpu);
}

}  // namespace wgan_ext
