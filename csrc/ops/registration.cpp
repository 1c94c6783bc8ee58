// Schemas of every wgan_ext op, in one STABLE_TORCH_LIBRARY block, and the Python module that loading them needs.
//
// Kernels live beside their op: csrc/cpu/<op>_cpu.cpp and csrc/cuda/<op>_cuda.cu register themselves with
// STABLE_TORCH_LIBRARY_IMPL. Autograd formulas, fake (meta) kernels and the version-counter bump of the in-place
// ops (ADInplaceOrView) are registered from Python (wgan_ext/_ops.py): the stable ABI has no boxed kernels over
// c10 types.

#include <Python.h>

#include <torch/headeronly/version.h>

#include "../stable.h"
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

#define WGAN_STR_(x) #x
#define WGAN_STR(x) WGAN_STR_(x)

std::string build_info() {
  // torch: the headers it was compiled against; stable_abi: the oldest torch it loads into (TORCH_TARGET_VERSION)
  std::string info = "torch=" WGAN_STR(TORCH_VERSION_MAJOR) "." WGAN_STR(TORCH_VERSION_MINOR) "." WGAN_STR(
      TORCH_VERSION_PATCH) ";stable_abi=" + std::to_string(TORCH_TARGET_VERSION >> 56) + "." +
                     std::to_string((TORCH_TARGET_VERSION >> 48) & 0xff);
  info += ";cpu_parallel=1";  // the CPU kernels run torch's own parallel_for (torch's intra-op threads)
#ifdef WGAN_EXT_WITH_CUDA
  info += ";cuda=1;" + cuda_build_info();
#else
  info += ";cuda=0";
#endif
  return info;
}

// The CUDA launcher's plan for tensors of the given sizes, one row per block: (launch, slot, tensor index, chunk,
// the slot's numel). Lets the CPU tests check the plan that the CUDA kernels run (every chunk once, limits kept).
Tensor rows_tensor(const std::vector<int64_t>& rows) {
  const int64_t n = static_cast<int64_t>(rows.size()) / 5;
  Tensor out = torch::stable::empty({n, 5}, kLong);
  std::copy(rows.begin(), rows.end(), out.mutable_data_ptr<int64_t>());
  return out;
}

Tensor multi_tensor_plan(std::vector<int64_t> numels) {
  std::vector<mta::Item> items;
  for (size_t i = 0; i < numels.size(); ++i) {
    WGAN_CHECK(numels[i] >= 0, "wgan_ext::_multi_tensor_plan: numel must be >= 0, got ", numels[i]);
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
  return rows_tensor(rows);
}

template <int Depth>
std::vector<int64_t> plan_rows_depth(const std::vector<int64_t>& numels) {
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

Tensor multi_tensor_plan_depth(std::vector<int64_t> numels, int64_t depth) {
  for (size_t i = 0; i < numels.size(); ++i) {
    WGAN_CHECK(numels[i] >= 0, "wgan_ext::_multi_tensor_plan_depth: numel must be >= 0, got ", numels[i]);
  }
  std::vector<int64_t> rows;
  switch (depth) {
    case 1: rows = plan_rows_depth<1>(numels); break;
    case 2: rows = plan_rows_depth<2>(numels); break;
    case 3: rows = plan_rows_depth<3>(numels); break;
    case 4: rows = plan_rows_depth<4>(numels); break;
    case 5: rows = plan_rows_depth<5>(numels); break;
    default: WGAN_CHECK(false, "wgan_ext::_multi_tensor_plan_depth: depth must be 1 to 5, got ", depth);
  }
  return rows_tensor(rows);
}

// How many distinct threads run a parallel_for of `tasks` tasks (grain 1), as the CPU kernels call it: the test
// that they are parallel.
int64_t parallel_threads(int64_t tasks) {
  WGAN_CHECK(tasks >= 1, "wgan_ext::_parallel_threads: tasks must be >= 1, got ", tasks);
  std::vector<std::atomic<int64_t>> seen(std::max<size_t>(torch::stable::get_num_threads(), 1));
  torch::stable::parallel_for(0, tasks, 1, [&](int64_t, int64_t) {
    uint32_t tid = 0;
    if (torch_get_thread_idx(&tid) == AOTI_TORCH_SUCCESS && tid < seen.size()) seen[tid].store(1);
  });
  int64_t n = 0;
  for (const auto& s : seen) n += s.load();
  return n;
}

}  // namespace

STABLE_TORCH_LIBRARY(wgan_ext, m) {
  // Clamps every element of every tensor to [min, max] in place, exactly like torch.clamp_ (NaN stays NaN).
  m.def("clip_(Tensor(a!)[] tensors, float min, float max) -> ()");
  // Same, and returns an int64 tensor (len(tensors),): per tensor, how many elements sit at a bound afterwards.
  m.def("clip_count_(Tensor(a!)[] tensors, float min, float max) -> Tensor");
  // A cached launch plan of clip_ for a list of dense tensors that does not change between calls (wgan_ext.Clipper):
  // one row per chunk (csrc/ops/clip.h, clip_plan), an int64 CPU tensor whatever the tensors' device. The plan holds
  // raw addresses: whoever keeps it keeps the tensors alive and checks that they have not moved (Clipper does).
  m.def("_clip_plan(Tensor[] tensors) -> Tensor");
  // clip_ / clip_count_ over a plan (moved to the tensors' device): one pass, one CUDA launch, whatever the number of
  // tensors. `dtypes`: the mask of the dtype codes present (bit 0 float32, 1 float64, 2 float16, 3 bfloat16), whose
  // bounds are converted as clip_ converts them. The written tensors are not in the schema: never traced or compiled
  // (Clipper calls clip_ under torch.compile), and their version counters are bumped by the caller.
  m.def("_clip_planned_(Tensor plan, int num_tensors, int dtypes, float min, float max) -> ()");
  m.def("_clip_count_planned_(Tensor plan, int num_tensors, int dtypes, float min, float max) -> Tensor");
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
  // Spectral norm, the normalized weights of all layers in one call: for every layer (weight viewed as the matrix
  // W (h, w); u (h,), v (w,) held constant) sigma = u^T W v and W / sigma (csrc/ops/spectral_norm_math.h). Returns
  // the normalized matrices (contiguous, the weights' dtypes) and `saved`, float64: the L sigmas, then each layer's
  // u and v as this call used them (its backward needs them; the next forward may update u, v in place first).
  m.def("spectral_norm_normalize(Tensor[] weights, Tensor[] us, Tensor[] vs) -> (Tensor[], Tensor)");
  // The gradient of spectral_norm_normalize w.r.t. the weights given the normalized matrices' gradients (u, v
  // constant, as torch's spectral_norm): dW = G / sigma - <G, W> / sigma^2 u v^T, all layers in one call.
  m.def("_spectral_norm_normalize_backward(Tensor[] grads, Tensor[] weights, Tensor saved) -> Tensor[]");
  // spectral_norm_normalize writing the normalized matrices into `outs` (one contiguous tensor per layer, the
  // matrix's shape and dtype, no memory shared with the inputs) instead of new tensors; returns `saved`. The nn
  // layer uses it on the CPU, where a fresh weight-sized tensor per forward is what costs (the allocator returns it
  // to the OS and takes it back page by page); the CUDA caching allocator reuses memory as it is.
  m.def("_spectral_norm_normalize_into(Tensor[] weights, Tensor[] us, Tensor[] vs, Tensor(a!)[] outs) -> Tensor");
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
  // A cached launch plan of the fused optimizer steps for lists that do not change between steps (ClippedRMSprop and
  // ClippedAdam keep one per parameter group): one row per chunk (csrc/ops/fused_optim.h, optim_plan), an int64 CPU
  // tensor. state2: [] for RMSprop without momentum. Holds raw addresses, as _clip_plan.
  m.def("_optim_plan(Tensor[] params, Tensor[] grads, Tensor[] state1, Tensor[] state2) -> Tensor");
  // rmsprop_clip_step_ / adam_clip_step_ over a plan moved to the tensors' device: one pass, one CUDA launch. The
  // written tensors are not in the schema (never traced; the optimizers bump their version counters). grad_ptrs
  // (CPU plans only): each parameter's gradient address this step, in place of the plan's.
  m.def("_rmsprop_clip_planned_(Tensor plan, Tensor? grad_ptrs, int num_tensors, int dtypes, float lr, float alpha, "
        "float eps, float weight_decay, float momentum, float? clip_value) -> ()");
  m.def("_adam_clip_planned_(Tensor plan, Tensor? grad_ptrs, int num_tensors, int dtypes, float lr, float beta1, "
        "float beta2, float eps, float weight_decay, int step, float? clip_value) -> ()");
  // "key=value;..." description of how this library was built (torch version, CUDA runtime and archs).
  m.def("_build_info() -> str");
  // Distinct threads that ran a parallel_for of `tasks` tasks (are the CPU kernels parallel?); for tests.
  m.def("_parallel_threads(int tasks) -> int");
  // (launch, slot, tensor index, chunk, numel) per block of the CUDA multi-tensor launcher's plan; for tests.
  m.def("_multi_tensor_plan(int[] numels) -> Tensor");
  // The same for the launcher of ops that walk `depth` lists in step (1 to 5; the fused optimizers use 3 and 4).
  m.def("_multi_tensor_plan_depth(int[] numels, int depth) -> Tensor");
}

// The ops without tensor arguments: one kernel for every backend.
STABLE_TORCH_LIBRARY_IMPL(wgan_ext, CompositeExplicitAutograd, m) {
  m.impl("_build_info", TORCH_BOX(&build_info));
  m.impl("_parallel_threads", TORCH_BOX(&parallel_threads));
  m.impl("_multi_tensor_plan", TORCH_BOX(&multi_tensor_plan));
  m.impl("_multi_tensor_plan_depth", TORCH_BOX(&multi_tensor_plan_depth));
}

}  // namespace wgan_ext

// `import wgan_ext._C` loads this shared library, which runs the registrations above. No Python functions: the
// ops are reached through torch.ops.wgan_ext.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "wgan_ext compiled ops (see torch.ops.wgan_ext)",
                                          -1, nullptr};
  return PyModule_Create(&module_def);
}
