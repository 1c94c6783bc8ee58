"""``python -m wgan_ext.info``: what this install of wgan_ext was built with and which kernels it has.

Options:
  --json           print the same facts as JSON
  --require-cuda   exit with status 1 unless every op has a CUDA kernel (CI uses this where nvcc is present)
  --require-gpu    exit with status 1 unless, in addition, a GPU is visible and the build holds machine code for its
                   architecture (scripts/gpu_check.sh uses this to decide whether a carried build can be used as it is)
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from . import __version__, _ops


def collect() -> dict:
    info = _ops.build_info()
    return {
        "wgan_ext": __version__,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "compiled_library": "loaded" if _ops.has_ops() else f"not loaded: {_ops.LOAD_ERROR}",
        "built_against_torch": info.get("torch"),
        "cuda_kernels_built": info.get("cuda") == "1",
        "cpu_parallel": info.get("cpu_parallel") == "1",
        "cpu_threads": torch.get_num_threads(),
        "cuda_runtime": info.get("cuda_runtime"),
        "cuda_archs": [a for a in info.get("cuda_archs", "").split(",") if a],
        "kernels": {op: {dev: _ops.has_kernel(op, dev) for dev in _ops.DEVICE_KEYS} for op in _ops.OP_NAMES},
        "impl_default": _ops.resolve_impl(None),
    }


def _arch_names(archs: list[str]) -> str:
    # nvcc's __CUDA_ARCH_LIST__ spells sm_90 as 900.
    return ", ".join(f"sm_{int(a) // 10}" for a in archs) if archs else "-"


def gpu_problem(facts: dict) -> str | None:
    """Why this build cannot run its CUDA kernels on the first visible GPU as built (None: it can). Machine code for
    the GPU's own architecture is required: a build for another arch would run only through the driver compiling
    embedded PTX at start-up, if the build holds any, and without that arch's instructions."""
    if not facts["cuda_kernels_built"]:
        return f"the build has no CUDA kernels ({facts['compiled_library']})"
    if not torch.cuda.is_available():
        return "no GPU is visible to torch"
    major, minor = torch.cuda.get_device_capability(0)
    arch = f"{major}{minor}0"  # nvcc's __CUDA_ARCH__ spelling of sm_{major}{minor}
    if arch not in facts["cuda_archs"]:
        return (f"the build has no machine code for this GPU ({facts['gpu']}, sm_{major}{minor}); it has "
                f"{_arch_names(facts['cuda_archs'])}: rebuild with TORCH_CUDA_ARCH_LIST={major}.{minor}")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wgan_ext.info", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--require-cuda", action="store_true",
                        help="exit 1 unless every op has a CUDA kernel")
    parser.add_argument("--require-gpu", action="store_true",
                        help="exit 1 unless every op has a CUDA kernel built for the GPU that is here")
    args = parser.parse_args(argv)
    facts = collect()
    if args.json:
        print(json.dumps(facts, indent=2))
    else:
        print(f"wgan_ext {facts['wgan_ext']}")
        print(f"torch {facts['torch']} (CUDA {facts['torch_cuda']}), CUDA available: {facts['cuda_available']}"
              + (f" ({facts['gpu']})" if facts["gpu"] else ""))
        print(f"compiled library: {facts['compiled_library']}")
        if _ops.has_ops():
            print(f"  built against torch {facts['built_against_torch']}; CUDA kernels built: "
                  f"{facts['cuda_kernels_built']}"
                  + (f" (CUDA runtime {facts['cuda_runtime']}, archs {_arch_names(facts['cuda_archs'])})"
                     if facts["cuda_kernels_built"] else ""))
            threads = (f"parallel over torch's {facts['cpu_threads']} thread(s)" if facts["cpu_parallel"]
                       else "one thread (built without OpenMP)")
            print(f"  CPU kernels: {threads}")
        print(f"default impl: {facts['impl_default']} (set {_ops.ENV_IMPL}=auto|fused|reference)")
        width = max(len(op) for op in facts["kernels"]) + 2
        print(f"{'op':<{width}}{'CPU':<6}CUDA")
        for op, kernels in facts["kernels"].items():
            print(f"{op:<{width}}{'yes' if kernels['cpu'] else 'no':<6}{'yes' if kernels['cuda'] else 'no'}")
    if args.require_cuda or args.require_gpu:
        missing = [op for op, k in facts["kernels"].items() if not k["cuda"]]
        if missing:
            flag = "--require-gpu" if args.require_gpu else "--require-cuda"
            print(f"error: {flag}: no CUDA kernel for {', '.join(missing)} "
                  f"({facts['compiled_library']}; CUDA kernels built: {facts['cuda_kernels_built']})",
                  file=sys.stderr)
            return 1
    if args.require_gpu:
        problem = gpu_problem(facts)
        if problem:
            print(f"error: --require-gpu: {problem}", file=sys.stderr)
            return 1
        print(f"the build runs on this GPU: built against torch {facts['built_against_torch']}, running in torch "
              f"{facts['torch']}, machine code for {_arch_names(facts['cuda_archs'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
