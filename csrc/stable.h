// What every translation unit takes from torch: the LibTorch stable ABI only (torch >= 2.11), so that one build of
// wgan_ext._C loads into every later torch. setup.py defines TORCH_TARGET_VERSION (2.11), under which including any
// ATen/c10 header is a compile error; nothing here may reach past the stable headers.
//
// What the stable ABI lacks and how this file makes up for it (docs/install.md lists the same):
//   * errors: only std::runtime_error crosses the boundary, so a failed check is a RuntimeError in Python (the
//     Python layer checks first and raises ValueError/TypeError); WGAN_CHECK keeps the messages free of file names.
//   * at::has_internal_overlap, Tensor::is_non_overlapping_and_dense: recomputed from sizes and strides below.
//   * at::opmath_type: acc_t below (float for float16/bfloat16/float32, double for float64).
//   * printing sizes and devices: small formatters below.
#pragma once

#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Half.h>

#include <cstdint>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace wgan_ext {

using Tensor = torch::stable::Tensor;
using Tensors = std::vector<Tensor>;
using ScalarType = torch::headeronly::ScalarType;
using DeviceType = torch::headeronly::DeviceType;
using Half = c10::Half;
using BFloat16 = c10::BFloat16;

constexpr ScalarType kFloat = ScalarType::Float;
constexpr ScalarType kDouble = ScalarType::Double;
constexpr ScalarType kHalf = ScalarType::Half;
constexpr ScalarType kBFloat16 = ScalarType::BFloat16;
constexpr ScalarType kLong = ScalarType::Long;

namespace detail {
template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream out;
  ((out << args), ...);
  return out.str();
}
}  // namespace detail

// Throws std::runtime_error with the concatenated message (RuntimeError in Python) when cond is false.
#define WGAN_CHECK(cond, ...)                                                    \
  do {                                                                           \
    if (!(cond)) throw std::runtime_error(::wgan_ext::detail::cat(__VA_ARGS__)); \
  } while (0)

// The compute type of a storage type (ATen's opmath_type for the four dtypes here).
template <typename scalar_t>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};
template <typename scalar_t>
using acc_t_of = typename AccType<scalar_t>::type;

template <typename T>
constexpr ScalarType scalar_type_of();
template <>
constexpr ScalarType scalar_type_of<float>() { return kFloat; }
template <>
constexpr ScalarType scalar_type_of<double>() { return kDouble; }

// Calls f(scalar_t{}) for the tensor's dtype, one of the four floating dtypes (checked before).
template <typename F>
void dispatch_floating(ScalarType dtype, const char* op, const F& f) {
  switch (dtype) {
    case kFloat: f(float{}); break;
    case kDouble: f(double{}); break;
    case kHalf: f(Half{}); break;
    case kBFloat16: f(BFloat16{}); break;
    default: WGAN_CHECK(false, op, ": unsupported dtype ", torch::headeronly::toString(dtype));
  }
}

namespace detail {
// The shim's codes of the dtypes and device types used here, read once (they are functions of the shim).
struct ShimCodes {
  int32_t f32 = aoti_torch_dtype_float32(), f64 = aoti_torch_dtype_float64(), f16 = aoti_torch_dtype_float16(),
          bf16 = aoti_torch_dtype_bfloat16(), cpu = aoti_torch_device_type_cpu(),
          cuda = aoti_torch_device_type_cuda();
};
inline const ShimCodes& shim_codes() {
  static const ShimCodes codes;
  return codes;
}
}  // namespace detail

// t.scalar_type() in one shim call: Tensor::scalar_type() converts the shim's code by calling the shim's dtype
// functions one by one (seven calls for float32), which the per-tensor host work of a 500-tensor call notices.
inline ScalarType dtype_of(const Tensor& t) {
  int32_t code = 0;
  TORCH_ERROR_CODE_CHECK(aoti_torch_get_dtype(t.get(), &code));
  const detail::ShimCodes& c = detail::shim_codes();
  if (code == c.f32) return ScalarType::Float;
  if (code == c.f64) return ScalarType::Double;
  if (code == c.f16) return ScalarType::Half;
  if (code == c.bf16) return ScalarType::BFloat16;
  return t.scalar_type();
}

// A tensor's device as the shim's (type code, index), for cheap comparisons.
struct DeviceKey {
  int32_t type = 0;
  int32_t index = 0;
  bool operator==(const DeviceKey& o) const { return type == o.type && index == o.index; }
  bool operator!=(const DeviceKey& o) const { return !(*this == o); }
};

inline DeviceKey device_key(const Tensor& t) {
  DeviceKey k;
  TORCH_ERROR_CODE_CHECK(aoti_torch_get_device_type(t.get(), &k.type));
  TORCH_ERROR_CODE_CHECK(aoti_torch_get_device_index(t.get(), &k.index));
  return k;
}

inline bool is_device_type(const DeviceKey& k, DeviceType type) {
  const detail::ShimCodes& c = detail::shim_codes();
  return type == DeviceType::CPU ? k.type == c.cpu : type == DeviceType::CUDA ? k.type == c.cuda : false;
}

inline bool same_device(const Tensor& a, const Tensor& b) { return device_key(a) == device_key(b); }

inline bool is_floating(ScalarType t) { return t == kFloat || t == kDouble || t == kHalf || t == kBFloat16; }

inline const char* dtype_name(ScalarType t) { return torch::headeronly::toString(t); }

// "[3, 2]", as torch prints sizes.
inline std::string shape_of(const Tensor& t) {
  std::ostringstream out;
  out << "[";
  for (int64_t d = 0; d < t.dim(); ++d) out << (d ? ", " : "") << t.size(d);
  out << "]";
  return out.str();
}

inline std::string strides_of(const Tensor& t) {
  std::ostringstream out;
  out << "[";
  for (int64_t d = 0; d < t.dim(); ++d) out << (d ? ", " : "") << t.stride(d);
  out << "]";
  return out.str();
}

inline bool same_shape(const Tensor& a, const Tensor& b) {
  const auto sa = a.sizes(), sb = b.sizes();  // two shim calls each, not one per dimension
  if (sa.size() != sb.size()) return false;
  for (size_t d = 0; d < sa.size(); ++d) {
    if (sa[d] != sb[d]) return false;
  }
  return true;
}

inline const char* device_type_name(DeviceType type) {
  switch (type) {
    case DeviceType::CPU: return "cpu";
    case DeviceType::CUDA: return "cuda";
    default: return "another device type";
  }
}

// "cpu", "cuda:0", as torch prints devices.
inline std::string device_of(const Tensor& t) {
  const torch::stable::Device d = t.device();
  std::string s = device_type_name(d.type());
  if (d.type() != DeviceType::CPU && d.index() >= 0) s += ":" + std::to_string(d.index());
  return s;
}

inline bool is_strided(const Tensor& t) { return t.layout() == torch::headeronly::Layout::Strided; }

// Tensor::is_non_overlapping_and_dense: the elements fill [data_ptr, data_ptr + numel) exactly once, in some order
// of the dimensions (c10's rule: sort the dimensions by stride, size-1 dimensions ignored, and require each stride
// to be the product of the sizes below it).
inline bool is_non_overlapping_and_dense(const Tensor& t) {
  if (t.is_contiguous()) return true;  // the common case, one shim call
  const auto sizes = t.sizes(), strides = t.strides();
  std::vector<size_t> order;
  for (size_t d = 0; d < sizes.size(); ++d) {
    if (sizes[d] == 0) return true;  // no elements
    if (sizes[d] != 1) order.push_back(d);
  }
  // insertion sort by stride (a tensor has few dimensions)
  for (size_t i = 1; i < order.size(); ++i) {
    for (size_t j = i; j > 0 && strides[order[j]] < strides[order[j - 1]]; --j) std::swap(order[j], order[j - 1]);
  }
  int64_t expected = 1;
  for (const size_t d : order) {
    if (strides[d] != expected) return false;
    expected *= sizes[d];
  }
  return true;
}

// at::has_internal_overlap(t) == MemOverlap::Yes: some element is reached by two indices (a stride of 0 along a
// dimension longer than 1, as an expanded view has).
inline bool has_internal_overlap(const Tensor& t) {
  if (is_non_overlapping_and_dense(t)) return false;  // empty tensors included
  const auto sizes = t.sizes(), strides = t.strides();
  for (size_t d = 0; d < sizes.size(); ++d) {
    if (sizes[d] > 1 && strides[d] == 0) return true;
  }
  return false;
}

// The shim's code for a dtype.
inline int32_t shim_dtype(ScalarType t) {
  switch (t) {
    case kFloat: return aoti_torch_dtype_float32();
    case kDouble: return aoti_torch_dtype_float64();
    case kHalf: return aoti_torch_dtype_float16();
    case kBFloat16: return aoti_torch_dtype_bfloat16();
    case kLong: return aoti_torch_dtype_int64();
    default: WGAN_CHECK(false, "wgan_ext: no shim dtype for ", dtype_name(t));
  }
  return 0;
}

// An uninitialized contiguous tensor of the given sizes and dtype on like's device: one shim call, no trip through
// the boxed dispatcher (torch::stable::empty takes one), which matters for ops that take microseconds.
inline Tensor new_empty(const Tensor& like, const std::vector<int64_t>& sizes, ScalarType dtype) {
  std::vector<int64_t> strides(sizes.size());
  int64_t stride = 1;
  for (size_t d = sizes.size(); d-- > 0;) {
    strides[d] = stride;
    stride *= sizes[d] > 1 ? sizes[d] : 1;
  }
  int32_t device_type = 0, device_index = 0;
  TORCH_ERROR_CODE_CHECK(aoti_torch_get_device_type(like.get(), &device_type));
  TORCH_ERROR_CODE_CHECK(aoti_torch_get_device_index(like.get(), &device_index));
  AtenTensorHandle out = nullptr;
  TORCH_ERROR_CODE_CHECK(aoti_torch_empty_strided(static_cast<int64_t>(sizes.size()), sizes.data(), strides.data(),
                                                  shim_dtype(dtype), device_type, device_index, &out));
  return Tensor(out);
}

// Like t (sizes, dtype, device), contiguous, uninitialized.
inline Tensor empty_contiguous_like(const Tensor& t) {
  std::vector<int64_t> sizes(static_cast<size_t>(t.dim()));
  for (int64_t d = 0; d < t.dim(); ++d) sizes[d] = t.size(d);
  return new_empty(t, sizes, t.scalar_type());
}

// t itself when it is contiguous, else a contiguous copy (torch::stable::contiguous always goes through the
// dispatcher).
inline Tensor as_contiguous(const Tensor& t) { return t.is_contiguous() ? t : torch::stable::contiguous(t); }

}  // namespace wgan_ext
