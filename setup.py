"""Build of wgan_ext and its compiled ops (wgan_ext._C).

The CPU kernels are always built. The CUDA kernels are built whenever the installed torch is a CUDA build and nvcc
is found, whether or not a GPU is visible. Knobs (environment variables):

  WGAN_EXT_SKIP_NATIVE=1   install the pure-Python package only (every op runs its pure-torch reference)
  WGAN_EXT_FORCE_CUDA=1    build the CUDA kernels or fail (no silent CPU-only build)
  WGAN_EXT_NO_CUDA=1       build the CPU kernels only, even if nvcc is there
  TORCH_CUDA_ARCH_LIST     CUDA archs, e.g. "8.0;9.0+PTX". Default: the visible GPUs' archs, or 8.0;9.0+PTX
                           when none is visible (9.0 is the H100/H200)
  CUDA_HOME                CUDA toolkit root. Default: torch's guess, or /usr/local/cuda when that exists
  MAX_JOBS                 parallel compile jobs (torch's own knob)

The extension uses only the LibTorch stable ABI (TORCH_TARGET_VERSION = 2.11) and the Python limited API (abi3,
Python >= 3.10): one build loads into every torch >= 2.11 on every Python >= 3.10, so a plain `pip install .` (build
isolation: pip builds against the newest torch it finds) works; `pip install --no-build-isolation .` is the faster
path when torch is already installed. docs/install.md says more.
"""

import glob
import os
import shutil
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCHS = "8.0;9.0+PTX"
# The oldest torch the build loads into: only the stable-ABI functions of that release may be used (the headers of
# any later torch enforce it; including an ATen/c10 header is then a compile error).
TORCH_TARGET = (2, 11)
TORCH_TARGET_VERSION = f"0x{TORCH_TARGET[0]:02x}{TORCH_TARGET[1]:02x}000000000000"


def _flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _log(msg):
    print(f"[wgan_ext build] {msg}", file=sys.stderr, flush=True)


def _find_nvcc():
    """The nvcc that torch's build helpers would use, or None."""
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home:
        nvcc = os.path.join(home, "bin", "nvcc")
        return nvcc if os.path.exists(nvcc) else None
    return shutil.which("nvcc")


def _prepare_cuda_home():
    # torch derives CUDA_HOME from `which nvcc`; where nvcc is a wrapper in /usr/local/bin that gives /usr/local and
    # the link fails with "cannot find -lcudart". Prefer the real toolkit root when the user did not choose one.
    if not os.environ.get("CUDA_HOME") and os.path.exists("/usr/local/cuda/bin/nvcc"):
        os.environ["CUDA_HOME"] = "/usr/local/cuda"


def _ext_modules():
    if _flag("WGAN_EXT_SKIP_NATIVE"):
        _log("WGAN_EXT_SKIP_NATIVE=1: installing the pure-Python package, no compiled ops")
        return [], {}

    _prepare_cuda_home()
    import torch
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    nvcc = _find_nvcc()
    torch_cuda = torch.version.cuda
    if _flag("WGAN_EXT_NO_CUDA"):
        with_cuda, why = False, "WGAN_EXT_NO_CUDA=1"
    elif torch_cuda is None:
        with_cuda, why = False, f"torch {torch.__version__} is a CPU-only build"
    elif nvcc is None:
        with_cuda, why = False, "nvcc not found (set CUDA_HOME)"
    else:
        with_cuda, why = True, f"torch CUDA {torch_cuda}, nvcc at {nvcc}"
    if _flag("WGAN_EXT_FORCE_CUDA") and not with_cuda:
        raise RuntimeError(f"WGAN_EXT_FORCE_CUDA=1 but the CUDA kernels cannot be built: {why}")

    if with_cuda and not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        # With no GPU visible torch would compile for every arch it knows (slow).
        os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_ARCHS

    csrc = os.path.join("csrc")
    sources = sorted(glob.glob(os.path.join(csrc, "ops", "*.cpp")) + glob.glob(os.path.join(csrc, "cpu", "*.cpp")))
    # -fopenmp-simd: honour the `omp simd reduction` pragmas of the CPU kernels (no OpenMP runtime involved).
    # -ffp-contract=off: no a*b+c fused into an FMA behind our back (the interpolate equals torch bit for bit).
    # -fno-math-errno: sqrt without the errno branch GCC puts around each call otherwise, so loops with a sqrt (the
    # fused optimizer steps) vectorize; same IEEE results, only errno is left alone. (A per-function
    # `#pragma GCC optimize` does not reach the inlined math; GCC 12 measured.)
    # -fvisibility=hidden: the module exports PyInit__C only (and the stable-ABI types are hidden types).
    cxx_flags = (["-O3"] if sys.platform == "win32"
                 else ["-O3", "-fopenmp-simd", "-ffp-contract=off", "-fno-math-errno", "-fvisibility=hidden"])
    # The CPU kernels run in parallel through torch's own parallel_for (a stable-ABI call into libtorch), so this
    # build needs no OpenMP runtime of its own.
    # (torch's build helper defines Py_LIMITED_API itself for a py_limited_api extension.)
    macros = [("TORCH_TARGET_VERSION", TORCH_TARGET_VERSION)]
    if with_cuda:
        sources += sorted(glob.glob(os.path.join(csrc, "cuda", "*.cu")))
        macros.append(("WGAN_EXT_WITH_CUDA", None))
        ext_cls = CUDAExtension
        extra = {"cxx": cxx_flags, "nvcc": ["-O3", "--expt-relaxed-constexpr", "-lineinfo",
                                                  "-Xcompiler=-fvisibility=hidden",
                                                  "-DUSE_CUDA"]}  # declares the shim's CUDA functions
    else:
        ext_cls = CppExtension
        extra = {"cxx": cxx_flags}

    _log(f"torch {torch.__version__} (CUDA {torch_cuda}), python {sys.version.split()[0]}")
    _log(f"CUDA kernels: {'yes' if with_cuda else 'no'} ({why})")
    if with_cuda:
        _log(f"CUDA_HOME={os.environ.get('CUDA_HOME', '(torch default)')}, "
             f"TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST', '(visible GPUs)')}")
    _log(f"stable ABI: loads into torch >= {TORCH_TARGET[0]}.{TORCH_TARGET[1]}, Python >= 3.10 (abi3)")
    _log(f"MAX_JOBS={os.environ.get('MAX_JOBS', '(torch default)')}, sources: {len(sources)}")

    ext = ext_cls(
        name="wgan_ext._C",
        sources=sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        define_macros=macros,
        extra_compile_args=extra,
        py_limited_api=True,  # also: no link against libtorch_python
    )
    return [ext], {"build_ext": BuildExtension.with_options(no_python_abi_suffix=False)}


ext_modules, cmdclass = _ext_modules()

setup(
    packages=find_packages(include=["wgan_ext", "wgan_ext.*"]),
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    # wheels tagged cp310-abi3: one wheel for every CPython >= 3.10
    options={"bdist_wheel": {"py_limited_api": "cp310"}} if ext_modules else {},
)
