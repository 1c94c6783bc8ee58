// Schemas of every wgan_ext op, in one TORCH_LIBRARY block, and the Python module that loading them needs.
//
// Kernels live beside their op: csrc/cpu/<op>_cpu.cpp and csrc/cuda/<op>_cuda.cu register themselves with
// TORCH_LIBRARY_IMPL. Autograd formulas and fake (meta) kernels are registered from Python (wgan_ext/_ops.py).

#include <Python.h>
#include <torch/library.h>
#include <torch/version.h>

#include <string>

namespace wgan_ext {

#ifdef WGAN_EXT_WITH_CUDA
std::string cuda_build_info();  // csrc/cuda/clip_cuda.cu
#endif

namespace {

std::string build_info() {
  std::string info = "torch=" TORCH_VERSION;
#ifdef WGAN_EXT_WITH_CUDA
  info += ";cuda=1;" + cuda_build_info();
#else
  info += ";cuda=0";
#endif
  return info;
}

}  // namespace

TORCH_LIBRARY(wgan_ext, m) {
  // Clamps every element of every tensor to [min, max] in place, exactly like torch.clamp_ (NaN stays NaN).
  m.def("clip_(Tensor(a!)[] tensors, float min, float max) -> ()");
  // Same, and returns an int64 tensor (len(tensors),): per tensor, how many elements sit at a bound afterwards.
  m.def("clip_count_(Tensor(a!)[] tensors, float min, float max) -> Tensor");
  // "key=value;..." description of how this library was built (torch version, CUDA runtime and archs).
  m.def("_build_info() -> str", &build_info);
}

}  // namespace wgan_ext

// `import wgan_ext._C` loads this shared library, which runs the registrations above. No Python functions: the
// ops are reached through torch.ops.wgan_ext.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "wgan_ext compiled ops (see torch.ops.wgan_ext)",
                                          -1, nullptr};
  return PyModule_Create(&module_def);
}
