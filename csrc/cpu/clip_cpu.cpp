// CPU kernel of wgan_ext::clip_ and clip_count_: one parallel pass over the elements of all tensors.
//
// The tensors are cut into chunks of kChunk elements; one parallel_for runs over every chunk of every tensor, so
// 500 small tensors cost one parallel region rather than 500 dispatches. Each chunk is a tight loop over the shared
// per-element math (csrc/ops/clip_math.h), which the compiler vectorizes.

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "../ops/clip.h"

namespace wgan_ext {
namespace {

constexpr int64_t kChunk = 16384;           // elements per task
constexpr int64_t kSerialBelow = 65536;     // below this many elements in all, one thread does it all

struct Chunk {
  void* data;              // first element of the chunk
  int64_t numel;
  int32_t tensor;          // index into the op's tensor list
  ScalarType dtype;
};

template <bool kCount, typename storage_t, typename Clamp>
WGAN_CPU_CLONES int64_t clamp_chunk(void* data, int64_t n, const Clamp& clamp_in) {
  storage_t* __restrict__ p = static_cast<storage_t*>(data);
  const Clamp clamp = clamp_in;  // a local copy: the stores through p cannot alias it, so the loop vectorizes
  if constexpr (!kCount) {
    for (int64_t i = 0; i < n; ++i) p[i] = clamp(p[i]);
    return 0;
  } else {
    // Count in sub-blocks with a counter as wide as the element, so the count vectorizes with the clamp.
    using block_count_t = std::conditional_t<sizeof(storage_t) == 2, uint16_t,
                                             std::conditional_t<sizeof(storage_t) == 4, int32_t, int64_t>>;
    constexpr int64_t kBlock = 4096;  // < 65536: a 16-bit counter cannot overflow
    int64_t count = 0;
    for (int64_t b = 0; b < n; b += kBlock) {
      const int64_t e = std::min(b + kBlock, n);
      block_count_t block = 0;
      for (int64_t i = b; i < e; ++i) {
        const storage_t x = p[i];
        block += static_cast<block_count_t>(clamp.at_bound(x));
        p[i] = clamp(x);
      }
      count += block;
    }
    return count;
  }
}

template <bool kCount>
int64_t clamp_chunk(const Chunk& ch, const ClampSet& clamps) {
  switch (ch.dtype) {
    case kFloat: return clamp_chunk<kCount, float>(ch.data, ch.numel, clamps.f32);
    case kDouble: return clamp_chunk<kCount, double>(ch.data, ch.numel, clamps.f64);
    case kHalf: return clamp_chunk<kCount, uint16_t>(ch.data, ch.numel, clamps.f16);
    case kBFloat16: return clamp_chunk<kCount, uint16_t>(ch.data, ch.numel, clamps.bf16);
    default: WGAN_CHECK(false, "wgan_ext::clip_: unsupported dtype ", dtype_name(ch.dtype));  // checked before
  }
}

template <bool kCount>
void clip_cpu_impl(const Tensors& tensors, double min, double max, int64_t* counts) {
  check_clip_args(tensors, min, max, DeviceType::CPU);
  const DenseViews dense(tensors);

  std::vector<Chunk> chunks;
  int64_t total = 0;
  for (size_t i = 0; i < dense.flat.size(); ++i) {
    const DenseViews::Flat& t = dense.flat[i];
    const int64_t n = t.numel;
    total += n;
    char* base = static_cast<char*>(t.data);
    const int64_t item = (t.dtype == kDouble) ? 8 : (t.dtype == kFloat ? 4 : 2);
    for (int64_t start = 0; start < n; start += kChunk) {
      chunks.push_back({base + start * item, std::min(kChunk, n - start), static_cast<int32_t>(i), t.dtype});
    }
  }

  const ClampSet clamps(dense, min, max);
  std::vector<int64_t> chunk_counts(kCount ? chunks.size() : 0, 0);
  const int64_t nchunks = static_cast<int64_t>(chunks.size());
  const int64_t grain = total < kSerialBelow ? std::max<int64_t>(nchunks, 1) : 1;
  torch::stable::parallel_for(0, nchunks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const int64_t k = clamp_chunk<kCount>(chunks[c], clamps);
      if constexpr (kCount) chunk_counts[c] = k;
    }
  });

  dense.write_back(tensors);
  if constexpr (kCount) {
    for (size_t c = 0; c < chunks.size(); ++c) counts[chunks[c].tensor] += chunk_counts[c];
  }
}

// The same pass over a cached plan (clip_plan in csrc/ops/clip.h): no per-tensor work on the host.
template <bool kCount>
void clip_planned_cpu_impl(const Tensor& plan, int64_t num_tensors, int64_t dtypes, double min, double max,
                           int64_t* counts) {
  const int64_t total = clip_plan::check(plan, num_tensors, dtypes, kChunk, DeviceType::CPU);
  const ClampSet clamps(dtypes, min, max);
  const int64_t* rows = plan.const_data_ptr<int64_t>();
  const int64_t nrows = plan.size(0);
  std::vector<int64_t> row_counts(kCount ? nrows : 0, 0);
  const int64_t grain = total < kSerialBelow ? std::max<int64_t>(nrows, 1) : 1;
  torch::stable::parallel_for(0, nrows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const int64_t* r = rows + c * clip_plan::kCols;
      const Chunk chunk{reinterpret_cast<void*>(static_cast<uintptr_t>(r[0])), r[1], static_cast<int32_t>(r[2]),
                        clip_plan::dtype_of_code(r[3])};
      const int64_t k = clamp_chunk<kCount>(chunk, clamps);
      if constexpr (kCount) row_counts[c] = k;
    }
  });
  if constexpr (kCount) {
    for (int64_t c = 0; c < nrows; ++c) counts[rows[c * clip_plan::kCols + 2]] += row_counts[c];
  }
}

Tensor clip_plan_cpu(Tensors tensors) { return clip_plan::make(tensors, kChunk, DeviceType::CPU); }

void clip_planned_cpu(Tensor plan, int64_t num_tensors, int64_t dtypes, double min, double max) {
  clip_planned_cpu_impl<false>(plan, num_tensors, dtypes, min, max, nullptr);
}

Tensor clip_count_planned_cpu(Tensor plan, int64_t num_tensors, int64_t dtypes, double min, double max) {
  WGAN_CHECK(num_tensors >= 0, "wgan_ext::_clip_count_planned_: num_tensors must be >= 0, got ", num_tensors);
  Tensor counts = torch::stable::empty({num_tensors}, kLong);
  int64_t* out = counts.mutable_data_ptr<int64_t>();
  std::fill(out, out + num_tensors, int64_t{0});
  clip_planned_cpu_impl<true>(plan, num_tensors, dtypes, min, max, out);
  return counts;
}

void clip_cpu(Tensors tensors, double min, double max) {
  clip_cpu_impl<false>(tensors, min, max, nullptr);
}

Tensor clip_count_cpu(Tensors tensors, double min, double max) {
  Tensor counts = torch::stable::empty({static_cast<int64_t>(tensors.size())}, kLong);
  int64_t* out = counts.mutable_data_ptr<int64_t>();
  std::fill(out, out + tensors.size(), int64_t{0});
  clip_cpu_impl<true>(tensors, min, max, out);
  return counts;
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(wgan_ext, CPU, m) {
  m.impl("clip_", TORCH_BOX(&clip_cpu));
  m.impl("clip_count_", TORCH_BOX(&clip_count_cpu));
  m.impl("_clip_plan", TORCH_BOX(&clip_plan_cpu));
  m.impl("_clip_planned_", TORCH_BOX(&clip_planned_cpu));
  m.impl("_clip_count_planned_", TORCH_BOX(&clip_count_planned_cpu));
}

}  // namespace wgan_ext
