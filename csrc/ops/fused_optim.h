// Host-side pieces of wgan_ext::rmsprop_clip_step_ / adam_clip_step_ shared by the CPU and the CUDA kernel: argument
// checks and the hyperparameters in the compute type.
#pragma once

#include <optional>

#include "../stable.h"
#include "fused_optim_math.h"

namespace wgan_ext {

// The dtypes the fused steps accept (float16/bfloat16 computed in float32, float64 in float64).
bool is_supported_optim_dtype(ScalarType t);

// Checks what the kernels rely on: equal list lengths (`state2` may be empty unless `state2_required`), every tensor
// defined, strided, on `expected_device` (one device for all), of a supported dtype, and grad and state tensors of
// the same dtype, shape and strides as their parameter, all non-overlapping and dense, so that the kernels walk the
// element i of each as the same flat index. The Python optimizers pass anything else to the pure-torch reference.
void check_optim_tensors(const char* op, const Tensors& params, const Tensors& grads, const Tensors& state1,
                         const char* state1_name, const Tensors& state2, const char* state2_name,
                         bool state2_required, DeviceType expected_device);

void check_rmsprop_args(const Tensors& params, const Tensors& momentum_buffers, double lr, double alpha, double eps,
                        double weight_decay, double momentum, std::optional<double> clip_value);

void check_adam_args(double lr, double beta1, double beta2, double eps, double weight_decay, int64_t step,
                     std::optional<double> clip_value);

template <typename T>
optim_math::Clamp<T> make_clamp(std::optional<double> clip_value) {
  const double c = clip_value.has_value() ? *clip_value : 0.0;
  return optim_math::Clamp<T>{clip_value.has_value(), static_cast<T>(-c), static_cast<T>(c)};
}

// Scalars are rounded to T from the doubles that torch's Python code computes (1 - alpha, -lr, ...), as torch's
// tensor ops round their Python-float arguments.
template <typename T>
optim_math::RMSpropHyper<T> make_rmsprop_hyper(double lr, double alpha, double eps, double weight_decay,
                                                double momentum, std::optional<double> clip_value) {
  return optim_math::RMSpropHyper<T>{static_cast<T>(-lr),        static_cast<T>(alpha),
                                     static_cast<T>(1.0 - alpha), static_cast<T>(eps),
                                     static_cast<T>(weight_decay), weight_decay != 0.0,
                                     static_cast<T>(momentum),    make_clamp<T>(clip_value)};
}

// step: the step count after this step's increment (1 on the first step), for the bias corrections.
template <typename T>
optim_math::AdamHyper<T> make_adam_hyper(double lr, double beta1, double beta2, double eps, double weight_decay,
                                          int64_t step, std::optional<double> clip_value);

// A cached launch plan of a fused optimizer step (ClippedRMSprop / ClippedAdam keep one per parameter group,
// wgan_ext/optim.py): one row per chunk of every parameter, kCols int64 each: the addresses of the chunk's first
// element in the parameter, its gradient and its one or two state tensors (0 where there is no second state), the
// chunk's element count, the parameter's position in the list, its dtype code (clip_plan::code_of), and the chunk's
// byte offset in its tensor. A plan holds raw addresses: its owner keeps the tensors alive and checks before each
// step that none has moved. On the CPU the gradients' column can be overridden per step by `grad_ptrs` (the first
// address of each parameter's gradient; the chunk's gradient is then grad_ptrs[index] + offset): autograd allocates
// new gradients at every backward after zero_grad(set_to_none=True), and the rest of the plan stays.
namespace optim_plan {

constexpr int64_t kCols = 8;

// The plan of these lists (checked as the fused steps check them: same device, dtype, shape and dense layout for
// a parameter and its companions), cut into chunks of at most `chunk` elements; an int64 CPU tensor (rows, kCols).
// state2 may be empty (RMSprop without momentum).
Tensor make(const Tensors& params, const Tensors& grads, const Tensors& state1, const Tensors& state2, int64_t chunk,
            DeviceType device);

// Checks what the planned kernels rely on before they read `plan` (see clip_plan::check): on the CPU also every row,
// its pointers non-null (the second state's too when `state2_required`).
void check(const char* op, const Tensor& plan, int64_t num_tensors, int64_t dtypes, int64_t chunk,
           bool state2_required, DeviceType device);

// Checks `grad_ptrs` against a checked CPU plan: a contiguous int64 CPU tensor of num_tensors addresses, non-zero
// for every tensor the plan has rows for (an empty tensor's gradient has no address). Returns its data.
const int64_t* check_grad_ptrs(const char* op, const Tensor& plan, const Tensor& grad_ptrs, int64_t num_tensors);

}  // namespace optim_plan

}  // namespace wgan_ext
