// CPU kernels of wgan_ext::rmsprop_clip_step_ and adam_clip_step_: one parallel pass over the elements of all
// parameters, reading param, grad and state once and writing param and state once.
//
// As in clip_cpu.cpp, the tensors are cut into chunks; one parallel_for runs over every chunk of every tensor.
// Each chunk is a tight loop over the shared per-element math (csrc/ops/fused_optim_math.h), in float32 for
// float32/float16/bfloat16 and float64 for float64, which the compiler vectorizes (sqrt and division included).

#include <algorithm>
#include <array>
#include <cstdint>
#include <optional>
#include <vector>

#include "../ops/clip.h"
#include "../ops/fused_optim.h"

namespace wgan_ext {
namespace {

constexpr int64_t kChunk = 16384;        // elements per task
constexpr int64_t kSerialBelow = 65536;  // below this many elements in all, one thread does it all

// One tensor's data pointers (param, grad, state 1, state 2 or null) and dtype, read once on the host so that the
// parallel loop touches no tensor handle.
struct Slot {
  void* data[4];
  ScalarType dtype;
};

struct Chunk {
  int32_t slot;
  int64_t start;
  int64_t numel;
};

// The slots and chunks of every tensor, and their total element count.
void make_chunks(const std::array<const Tensors*, 4>& lists, std::vector<Slot>* slots, std::vector<Chunk>* chunks,
                 int64_t* total) {
  const Tensors& params = *lists[0];
  *total = 0;
  slots->reserve(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    Slot slot{{nullptr, nullptr, nullptr, nullptr}, dtype_of(params[i])};
    for (size_t d = 0; d < lists.size(); ++d) {
      if (lists[d] != nullptr) slot.data[d] = (*lists[d])[i].data_ptr();
    }
    slots->push_back(slot);
    const int64_t n = params[i].numel();
    *total += n;
    for (int64_t start = 0; start < n; start += kChunk) {
      chunks->push_back({static_cast<int32_t>(i), start, std::min(kChunk, n - start)});
    }
  }
}

template <typename F>
void for_each_chunk(const std::vector<Chunk>& chunks, int64_t total, const F& f) {
  const int64_t nchunks = static_cast<int64_t>(chunks.size());
  const int64_t grain = total < kSerialBelow ? std::max<int64_t>(nchunks, 1) : 1;
  torch::stable::parallel_for(0, nchunks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) f(chunks[c]);
  });
}

// Loads from the storage type to the compute type T and back (float16/bfloat16 through c10's conversions).
template <typename storage_t, typename T>
inline T load(storage_t x) {
  return static_cast<T>(x);
}

template <bool kMomentum, typename storage_t, typename T>
WGAN_CPU_CLONES void rmsprop_chunk(storage_t* __restrict__ p, const storage_t* __restrict__ g,
                                   storage_t* __restrict__ sq, storage_t* __restrict__ buf, int64_t n,
                                   const optim_math::RMSpropHyper<T>& h_in) {
  const optim_math::RMSpropHyper<T> h = h_in;  // a local copy: stores through the pointers cannot alias it
  for (int64_t i = 0; i < n; ++i) {
    T pi = load<storage_t, T>(p[i]);
    T si = load<storage_t, T>(sq[i]);
    T bi = T(0);
    if constexpr (kMomentum) bi = load<storage_t, T>(buf[i]);
    optim_math::rmsprop_clip_element<kMomentum>(pi, load<storage_t, T>(g[i]), si, bi, h);
    p[i] = static_cast<storage_t>(pi);
    sq[i] = static_cast<storage_t>(si);
    if constexpr (kMomentum) buf[i] = static_cast<storage_t>(bi);
  }
}

template <typename storage_t, typename T>
WGAN_CPU_CLONES void adam_chunk(storage_t* __restrict__ p, const storage_t* __restrict__ g,
                                storage_t* __restrict__ m, storage_t* __restrict__ v, int64_t n,
                                const optim_math::AdamHyper<T>& h_in) {
  const optim_math::AdamHyper<T> h = h_in;
  for (int64_t i = 0; i < n; ++i) {
    T pi = load<storage_t, T>(p[i]);
    T mi = load<storage_t, T>(m[i]);
    T vi = load<storage_t, T>(v[i]);
    optim_math::adam_clip_element(pi, load<storage_t, T>(g[i]), mi, vi, h);
    p[i] = static_cast<storage_t>(pi);
    m[i] = static_cast<storage_t>(mi);
    v[i] = static_cast<storage_t>(vi);
  }
}

template <typename storage_t>
storage_t* at_offset(void* data, int64_t start) {
  return static_cast<storage_t*>(data) + start;
}

// Calls f.template operator()<storage_t, T>() for the tensor's dtype.
template <typename F>
void dispatch_optim_dtype(ScalarType dtype, const F& f) {
  switch (dtype) {
    case kFloat: f(float{}, float{}); break;
    case kDouble: f(double{}, double{}); break;
    case kHalf: f(Half{}, float{}); break;
    case kBFloat16: f(BFloat16{}, float{}); break;
    default: WGAN_CHECK(false, "wgan_ext: unsupported dtype ", dtype_name(dtype));  // checked before
  }
}

void rmsprop_clip_step_cpu(Tensors params, Tensors grads, Tensors square_avgs, Tensors momentum_buffers, double lr,
                           double alpha, double eps, double weight_decay, double momentum,
                           std::optional<double> clip_value) {
  check_rmsprop_args(params, momentum_buffers, lr, alpha, eps, weight_decay, momentum, clip_value);
  check_optim_tensors("wgan_ext::rmsprop_clip_step_", params, grads, square_avgs, "square_avg", momentum_buffers,
                      "momentum_buffer", false, DeviceType::CPU);
  const bool with_momentum = momentum > 0;
  const auto h32 = make_rmsprop_hyper<float>(lr, alpha, eps, weight_decay, momentum, clip_value);
  const auto h64 = make_rmsprop_hyper<double>(lr, alpha, eps, weight_decay, momentum, clip_value);
  int64_t total = 0;
  std::vector<Slot> slots;
  std::vector<Chunk> chunks;
  make_chunks({&params, &grads, &square_avgs, with_momentum ? &momentum_buffers : nullptr}, &slots, &chunks, &total);
  for_each_chunk(chunks, total, [&](const Chunk& ch) {
    const Slot& slot = slots[static_cast<size_t>(ch.slot)];
    dispatch_optim_dtype(slot.dtype, [&](auto storage, auto compute) {
      using storage_t = decltype(storage);
      using T = decltype(compute);
      const optim_math::RMSpropHyper<T>* h;
      if constexpr (std::is_same_v<T, float>) h = &h32; else h = &h64;
      storage_t* p = at_offset<storage_t>(slot.data[0], ch.start);
      const storage_t* g = at_offset<storage_t>(slot.data[1], ch.start);
      storage_t* sq = at_offset<storage_t>(slot.data[2], ch.start);
      if (with_momentum) {
        rmsprop_chunk<true>(p, g, sq, at_offset<storage_t>(slot.data[3], ch.start), ch.numel, *h);
      } else {
        rmsprop_chunk<false>(p, g, sq, static_cast<storage_t*>(nullptr), ch.numel, *h);
      }
    });
  });
}

void adam_clip_step_cpu(Tensors params, Tensors grads, Tensors exp_avgs, Tensors exp_avg_sqs, double lr, double beta1,
                        double beta2, double eps, double weight_decay, int64_t step,
                        std::optional<double> clip_value) {
  check_adam_args(lr, beta1, beta2, eps, weight_decay, step, clip_value);
  check_optim_tensors("wgan_ext::adam_clip_step_", params, grads, exp_avgs, "exp_avg", exp_avg_sqs, "exp_avg_sq",
                      true, DeviceType::CPU);
  const auto h32 = make_adam_hyper<float>(lr, beta1, beta2, eps, weight_decay, step, clip_value);
  const auto h64 = make_adam_hyper<double>(lr, beta1, beta2, eps, weight_decay, step, clip_value);
  int64_t total = 0;
  std::vector<Slot> slots;
  std::vector<Chunk> chunks;
  make_chunks({&params, &grads, &exp_avgs, &exp_avg_sqs}, &slots, &chunks, &total);
  for_each_chunk(chunks, total, [&](const Chunk& ch) {
    const Slot& slot = slots[static_cast<size_t>(ch.slot)];
    dispatch_optim_dtype(slot.dtype, [&](auto storage, auto compute) {
      using storage_t = decltype(storage);
      using T = decltype(compute);
      const optim_math::AdamHyper<T>* h;
      if constexpr (std::is_same_v<T, float>) h = &h32; else h = &h64;
      adam_chunk(at_offset<storage_t>(slot.data[0], ch.start), at_offset<storage_t>(slot.data[1], ch.start),
                 at_offset<storage_t>(slot.data[2], ch.start), at_offset<storage_t>(slot.data[3], ch.start),
                 ch.numel, *h);
    });
  });
}

// The same steps over a cached plan (optim_plan in csrc/ops/fused_optim.h): no per-tensor work on the host.
// Calls f(row, gradient address, storage_t{}, T{}) for every row of a checked plan, in parallel over rows; the
// gradient's address from `grads` (one per tensor, plus the row's offset) when given, else from the row.
template <typename F>
void for_each_row(const Tensor& plan, const int64_t* grads, const F& f) {
  const int64_t* rows = plan.const_data_ptr<int64_t>();
  const int64_t nrows = plan.size(0);
  int64_t total = 0;
  for (int64_t c = 0; c < nrows; ++c) total += rows[c * optim_plan::kCols + 4];
  const int64_t grain = total < kSerialBelow ? std::max<int64_t>(nrows, 1) : 1;
  torch::stable::parallel_for(0, nrows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const int64_t* r = rows + c * optim_plan::kCols;
      const int64_t g = grads ? grads[r[5]] + r[7] : r[1];
      dispatch_optim_dtype(clip_plan::dtype_of_code(r[6]), [&](auto storage, auto compute) { f(r, g, storage, compute); });
    }
  });
}

template <typename storage_t>
storage_t* row_ptr(int64_t address) {
  return reinterpret_cast<storage_t*>(static_cast<uintptr_t>(address));
}

void rmsprop_clip_planned_cpu(Tensor plan, std::optional<Tensor> grad_ptrs, int64_t num_tensors, int64_t dtypes,
                              double lr, double alpha, double eps, double weight_decay, double momentum,
                              std::optional<double> clip_value) {
  constexpr const char* op = "wgan_ext::_rmsprop_clip_planned_";
  check_rmsprop_args({}, {}, lr, alpha, eps, weight_decay, 0.0, clip_value);
  WGAN_CHECK(momentum >= 0, op, ": momentum must be >= 0, got ", momentum);
  const bool with_momentum = momentum > 0;
  optim_plan::check(op, plan, num_tensors, dtypes, kChunk, with_momentum, DeviceType::CPU);
  const int64_t* grads = grad_ptrs ? optim_plan::check_grad_ptrs(op, plan, *grad_ptrs, num_tensors) : nullptr;
  const auto h32 = make_rmsprop_hyper<float>(lr, alpha, eps, weight_decay, momentum, clip_value);
  const auto h64 = make_rmsprop_hyper<double>(lr, alpha, eps, weight_decay, momentum, clip_value);
  for_each_row(plan, grads, [&](const int64_t* r, int64_t g, auto storage, auto compute) {
    using storage_t = decltype(storage);
    using T = decltype(compute);
    const optim_math::RMSpropHyper<T>* h;
    if constexpr (std::is_same_v<T, float>) h = &h32; else h = &h64;
    if (with_momentum) {
      rmsprop_chunk<true>(row_ptr<storage_t>(r[0]), row_ptr<const storage_t>(g), row_ptr<storage_t>(r[2]),
                          row_ptr<storage_t>(r[3]), r[4], *h);
    } else {
      rmsprop_chunk<false>(row_ptr<storage_t>(r[0]), row_ptr<const storage_t>(g), row_ptr<storage_t>(r[2]),
                           static_cast<storage_t*>(nullptr), r[4], *h);
    }
  });
}

void adam_clip_planned_cpu(Tensor plan, std::optional<Tensor> grad_ptrs, int64_t num_tensors, int64_t dtypes,
                           double lr, double beta1, double beta2, double eps, double weight_decay, int64_t step,
                           std::optional<double> clip_value) {
  constexpr const char* op = "wgan_ext::_adam_clip_planned_";
  check_adam_args(lr, beta1, beta2, eps, weight_decay, step, clip_value);
  optim_plan::check(op, plan, num_tensors, dtypes, kChunk, true, DeviceType::CPU);
  const int64_t* grads = grad_ptrs ? optim_plan::check_grad_ptrs(op, plan, *grad_ptrs, num_tensors) : nullptr;
  const auto h32 = make_adam_hyper<float>(lr, beta1, beta2, eps, weight_decay, step, clip_value);
  const auto h64 = make_adam_hyper<double>(lr, beta1, beta2, eps, weight_decay, step, clip_value);
  for_each_row(plan, grads, [&](const int64_t* r, int64_t g, auto storage, auto compute) {
    using storage_t = decltype(storage);
    using T = decltype(compute);
    const optim_math::AdamHyper<T>* h;
    if constexpr (std::is_same_v<T, float>) h = &h32; else h = &h64;
    adam_chunk(row_ptr<storage_t>(r[0]), row_ptr<const storage_t>(g), row_ptr<storage_t>(r[2]),
               row_ptr<storage_t>(r[3]), r[4], *h);
  });
}

Tensor optim_plan_cpu(Tensors params, Tensors grads, Tensors state1, Tensors state2) {
  return optim_plan::make(params, grads, state1, state2, kChunk, DeviceType::CPU);
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(wgan_ext, CPU, m) {
  m.impl("rmsprop_clip_step_", TORCH_BOX(&rmsprop_clip_step_cpu));
  m.impl("adam_clip_step_", TORCH_BOX(&adam_clip_step_cpu));
  m.impl("_optim_plan", TORCH_BOX(&optim_plan_cpu));
  m.impl("_rmsprop_clip_planned_", TORCH_BOX(&rmsprop_clip_planned_cpu));
  m.impl("_adam_clip_planned_", TORCH_BOX(&adam_clip_planned_cpu));
}

}  // namespace wgan_ext
