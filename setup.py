"""Build of wgan_ext and its compiled ops (wgan_ext._C).

The CPU kernels are always built. The CUDA kernels are built whenever the installed torch is a CUDA build and nvcc
is found, whether or not a GPU is visible. Knobs (environment variables):

  WGAN_EXT_SKIP_NATIVE=1   install the pure-Python package only (every op runs its pure-torch reference)
  WGAN_EXT_FORCE_CUDA=1    build the CUDA kernels or fail (no silent CPU-only build)
  WGAN_EXT_NO_CUDA=1       build the CPU kernels only, even if nvcc is there
  WGAN_EXT_NO_OPENMP=1     compile the CPU kernels without -fopenmp (they then run on one thread)
  TORCH_CUDA_ARCH_LIST     CUDA archs, e.g. "8.0;9.0+PTX". Default: the visible GPUs' archs, or 8.0;9.0+PTX
                           when none is visible (9.0 is the H100/H200)
  CUDA_HOME                CUDA toolkit root. Default: torch's guess, or /usr/local/cuda when that exists
  MAX_JOBS                 parallel compile jobs (torch's own knob)

Install against the torch you run with: `pip install --no-build-isolation .` (see README).
"""

import glob
import os
import shutil
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCHS = "8.0;9.0+PTX"


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
    cxx_flags = (["-O3"] if sys.platform == "win32"
                 else ["-O3", "-fopenmp-simd", "-ffp-contract=off", "-fno-math-errno"])
    # -fopenmp where torch itself runs on OpenMP (Linux wheels): ATen's at::parallel_for is a header template that
    # is only parallel when the including code is compiled with OpenMP; without the flag every CPU kernel here ran
    # on one thread (measured: the fused clamp took as long on 2 threads as on 1). The runtime is torch's own
    # libgomp.so.1, already loaded by `import torch` (same soname), so torch.set_num_threads governs ours too.
    link_flags = []
    if sys.platform.startswith("linux") and torch.backends.openmp.is_available() and not _flag("WGAN_EXT_NO_OPENMP"):
        cxx_flags.append("-fopenmp")
        link_flags.append("-fopenmp")
    macros = []
    if with_cuda:
        sources += sorted(glob.glob(os.path.join(csrc, "cuda", "*.cu")))
        macros.append(("WGAN_EXT_WITH_CUDA", None))
        ext_cls = CUDAExtension
        extra = {"cxx": cxx_flags, "nvcc": ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]}
    else:
        ext_cls = CppExtension
        extra = {"cxx": cxx_flags}

    _log(f"torch {torch.__version__} (CUDA {torch_cuda}), python {sys.version.split()[0]}")
    _log(f"CUDA kernels: {'yes' if with_cuda else 'no'} ({why})")
    if with_cuda:
        _log(f"CUDA_HOME={os.environ.get('CUDA_HOME', '(torch default)')}, "
             f"TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST', '(visible GPUs)')}")
    _log(f"CPU kernels: {'-fopenmp (parallel over torch threads)' if link_flags else 'no -fopenmp'}")
    _log(f"MAX_JOBS={os.environ.get('MAX_JOBS', '(torch default)')}, sources: {len(sources)}")

    ext = ext_cls(
        name="wgan_ext._C",
        sources=sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        define_macros=macros,
        extra_compile_args=extra,
        extra_link_args=link_flags,
        py_limited_api=False,
    )
    return [ext], {"build_ext": BuildExtension.with_options(no_python_abi_suffix=False)}


ext_modules, cmdclass = _ext_modules()

setup(
    packages=find_packages(include=["wgan_ext", "wgan_ext.*"]),
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
