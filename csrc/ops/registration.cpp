// Schemas of every wgan_ext op, in one TORCH_LIBRARY block, and the Python module that loading them needs.
//
// Kernels live beside their op: csrc/cpu/<op>_cpu.cpp and csrc/cuda/<op>_cuda.cu register themselves with
// TORCH_LIBRARY_IMPL. Autograd formulas and fake (meta) kernels are registered from Python (wgan_ext/_ops.py).

#include <Python.h>
#include <ATen/Parallel.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>
#include <torch/version.h>

#include "multi_tensor_plan.h"

#include <algorithm>
#include <atomic>
#include <string>
#include <vector>

namespace wgan_ext {

#ifdef WGAN_EXT_WITH_CUDA
std::string cuda_build_info();  // csrc/cuda/clip_cuda.cu
#endif

namespace {

std::string build_info() {
  std::string info = "torch=" TORCH_VERSION;
#ifdef INTRA_OP_PARALLEL
  info += ";cpu_parallel=1";  // at::parallel_for in the CPU kernels runs on torch's intra-op threads
#else
  info += ";cpu_parallel=0";  // compiled without OpenMP: at::parallel_for runs its range on the calling thread
#endif
#ifdef WGAN_EXT_WITH_CUDA
  info += ";cuda=1;" + cuda_build_info();
#else
  info += ";cuda=0";
#endif
  return info;
}

// The CUDA launcher's plan for tensors of the given sizes, one row per block: (launch, slot, tensor index, chunk,
// the slot's numel). Lets the CPU tests check the plan that the CUDA kernels run (every chunk once, limits kept).
at::Tensor multi_tensor_plan(c10::IntArrayRef numels) {
  std::vector<mta::Item> items;
  for (size_t i = 0; i < numels.size(); ++i) {
    TORCH_CHECK_VALUE(numels[i] >= 0, "wgan_ext::_multi_tensor_plan: numel must be >= 0, got ", numels[i]);
    items.push_back({nullptr, numels[i], static_cast<int32_t>(i)});
  }
  std::vector<int64_t> rows;
  int64_t launch = 0;
  mta::plan(items, [&](const mta::TensorListMeta& meta, int blocks) {
    for (int b = 0; b < blocks; ++b) {
      const int slot = meta.block_slot[b];
      rows.insert(rows.end(), {launch, slot, meta.index[slot], meta.block_chunk[b], meta.numel[slot]});
    }
    ++launch;
  });
  const int64_t n = static_cast<int64_t>(rows.size()) / 5;
  at::Tensor out = at::empty({n, 5}, at::TensorOptions().dtype(at::kLong));
  std::copy(rows.begin(), rows.end(), out.data_ptr<int64_t>());
  return out;
}

template <int Depth>
std::vector<int64_t> plan_rows_depth(c10::IntArrayRef numels) {
  std::vector<mta::ItemN<Depth>> items;
  for (size_t i = 0; i < numels.size(); ++i) {
    mta::ItemN<Depth> item{};
    item.numel = numels[i];
    item.index = static_cast<int32_t>(i);
    items.push_back(item);
  }
  std::vector<int64_t> rows;
  int64_t launch = 0;
  mta::plan_n<Depth>(items, [&](const mta::TensorListMetaN<Depth>& meta, int blocks) {
    for (int b = 0; b < blocks; ++b) {
      const int slot = meta.block_slot[b];
      rows.insert(rows.end(), {launch, slot, meta.index[slot], meta.block_chunk[b], meta.numel[slot]});
    }
    ++launch;
  });
  return rows;
}

at::Tensor multi_tensor_plan_depth(c10::IntArrayRef numels, int64_t depth) {
  for (size_t i = 0; i < numels.size(); ++i) {
    TORCH_CHECK_VALUE(numels[i] >= 0, "wgan_ext::_multi_tensor_plan_depth: numel must be >= 0, got ", numels[i]);
  }
  std::vector<int64_t> rows;
  switch (depth) {
    case 1: rows = plan_rows_depth<1>(numels); break;
    case 2: rows = plan_rows_depth<2>(numels); break;
    case 3: rows = plan_rows_depth<3>(numels); break;
    case 4: rows = plan_rows_depth<4>(numels); break;
    case 5: rows = plan_rows_depth<5>(numels); break;
    default: TORCH_CHECK_VALUE(false, "wgan_ext::_multi_tensor_plan_depth: depth must be 1 to 5, got ", depth);
  }
  const int64_t n = static_cast<int64_t>(rows.size()) / 5;
  at::Tensor out = at::empty({n, 5}, at::TensorOptions().dtype(at::kLong));
  std::copy(rows.begin(), rows.end(), out.data_ptr<int64_t>());
  return out;
}

// How many distinct threads run an at::parallel_for of `tasks` tasks (grain 1), as the CPU kernels call it: the test
// that they are parallel (a build without OpenMP gives 1 however many threads torch has).
int64_t parallel_threads(int64_t tasks) {
  TORCH_CHECK_VALUE(tasks >= 1, "wgan_ext::_parallel_threads: tasks must be >= 1, got ", tasks);
  std::vector<std::atomic<int64_t>> seen(static_cast<size_t>(std::max(at::get_num_threads(), 1)));
  at::parallel_for(0, tasks, 1, [&](int64_t, int64_t) {
    const int tid = at::get_thread_num();
    if (tid >= 0 && static_cast<size_t>(tid) < seen.size()) seen[tid].store(1);
  });
  int64_t n = 0;
  for (const auto& s : seen) n += s.load();
  return n;
}

// ADInplaceOrView kernel shared by every op that writes its inputs: runs the op below this key, then bumps the version
// counter of every argument the schema marks as written (Tensor(a!) / Tensor(a!)[]), as ATen's in-place ops do. So
// autograd notices when a tensor it saved for backward was clamped in place, instead of computing a wrong gradient.
void bump_written_versions(const c10::OperatorHandle& op, c10::DispatchKeySet keys, torch::jit::Stack* stack) {
  const auto& arguments = op.schema().arguments();
  std::vector<at::Tensor> written;
  const auto inputs = torch::jit::last(*stack, arguments.size());
  for (size_t i = 0; i < arguments.size(); ++i) {
    const auto* alias = arguments[i].alias_info();
    if (alias == nullptr || !alias->isWrite()) continue;
    if (inputs[i].isTensor()) {
      written.push_back(inputs[i].toTensor());
    } else if (inputs[i].isTensorList()) {
      for (const at::Tensor& t : inputs[i].toTensorList()) written.push_back(t);
    }
  }
  {
    const at::AutoDispatchBelowADInplaceOrView guard;
    op.redispatchBoxed(keys & c10::after_ADInplaceOrView_keyset, stack);
  }
  for (const at::Tensor& t : written) t.unsafeGetTensorImpl()->bump_version();
}

}  // namespace

TORCH_LIBRARY(wgan_ext, m) {
  // Clamps every element of every tensor to [min, max] in place, exactly like torch.clamp_ (NaN stays NaN).
  m.def("clip_(Tensor(a!)[] tensors, float min, float max) -> ()");
  // Same, and returns an int64 tensor (len(tensors),): per tensor, how many elements sit at a bound afterwards.
  m.def("clip_count_(Tensor(a!)[] tensors, float min, float max) -> Tensor");
  // x_hat = real + alpha[n] * (fake - real), alpha one value per sample, broadcast over the trailing dims.
  m.def("interpolate(Tensor real, Tensor fake, Tensor alpha) -> Tensor");
  // Per-sample norms sqrt(inv_scale^2 * sum(grad_n^2) + eps) over all non-batch dims, and the mean of
  // (norm - target)^2 (one_sided: max(0, norm - target)^2). Returns (penalty, norms) in float32 (float64 input:
  // float64).
  m.def("gradient_norm_penalty(Tensor grad, float target, bool one_sided, float inv_scale, float eps) -> "
        "(Tensor, Tensor)");
  // The gradient of gradient_norm_penalty w.r.t. grad, given the gradients of its two outputs.
  m.def("_gradient_norm_penalty_backward(Tensor grad_penalty, Tensor grad_norms, Tensor grad, Tensor norms, "
        "float target, bool one_sided, float inv_scale) -> Tensor");
  // Spectral norm: for every layer i (weight viewed as a matrix (h, w)), n steps of u <- normalize(W v),
  // v <- normalize(W^T u) with F.normalize's eps, updating us[i] and vs[i] in place.
  m.def("spectral_norm_power_iteration_(Tensor[] weights, Tensor(a!)[] us, Tensor(b!)[] vs, int n_power_iterations, "
        "float eps) -> ()");
  // One step of torch.optim.RMSprop (centered=False, maximize=False) on every parameter, in place, then the clamp of
  // each parameter to [-clip_value, clip_value] (None: no clamp), in one pass. momentum_buffers: one per parameter
  // when momentum > 0, else []. Float16/bfloat16 computed in float32.
  m.def("rmsprop_clip_step_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] square_avgs, "
        "Tensor(c!)[] momentum_buffers, float lr, float alpha, float eps, float weight_decay, float momentum, "
        "float? clip_value) -> ()");
  // One step of torch.optim.Adam (amsgrad=False, L2 weight decay) with the bias corrections of step count `step`
  // (1 on the first step), then the clamp, in one pass.
  m.def("adam_clip_step_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, Tensor(c!)[] exp_avg_sqs, "
        "float lr, float beta1, float beta2, float eps, float weight_decay, int step, float? clip_value) -> ()");
  // "key=value;..." description of how this library was built (torch version, CUDA runtime and archs).
  m.def("_build_info() -> str", &build_info);
  // Distinct threads that ran an at::parallel_for of `tasks` tasks (are the CPU kernels parallel?); for tests.
  m.def("_parallel_threads(int tasks) -> int", &parallel_threads);
  // (launch, slot, tensor index, chunk, numel) per block of the CUDA multi-tensor launcher's plan; for tests.
  m.def("_multi_tensor_plan(int[] numels) -> Tensor", &multi_tensor_plan);
  // The same for the launcher of ops that walk `depth` lists in step (1 to 5; the fused optimizers use 3 and 4).
  m.def("_multi_tensor_plan_depth(int[] numels, int depth) -> Tensor", &multi_tensor_plan_depth);
}

TORCH_LIBRARY_IMPL(wgan_ext, ADInplaceOrView, m) {
  m.impl("clip_", torch::CppFunction::makeFromBoxedFunction<&bump_written_versions>());
  m.impl("clip_count_", torch::CppFunction::makeFromBoxedFunction<&bump_written_versions>());
  m.impl("spectral_norm_power_iteration_", torch::CppFunction::makeFromBoxedFunction<&bump_written_versions>());
  m.impl("rmsprop_clip_step_", torch::CppFunction::makeFromBoxedFunction<&bump_written_versions>());
  m.impl("adam_clip_step_", torch::CppFunction::makeFromBoxedFunction<&bump_written_versions>());
}

}  // namespace wgan_ext

// `import wgan_ext._C` loads this shared library, which runs the registrations above. No Python functions: the
// ops are reached through torch.ops.wgan_ext.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "wgan_ext compiled ops (see torch.ops.wgan_ext)",
                                          -1, nullptr};
  return PyModule_Create(&module_def);
}
