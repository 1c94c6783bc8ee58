#!/usr/bin/env bash
# Prepares the build that scripts/gpu_check.sh uses on a lent GPU machine instead of compiling there: builds
# wgan_ext/_C.abi3.so in place (git-ignored) in the test environment, with CUDA kernels for sm_90 (H100/H200) and
# sm_80, then checks that the same file loads and passes the op tests under the GPU machine's stack (Python 3.12 +
# torch 2.11, scripts/device_stack_check.sh's environment). The device call then names it in `carry`:
#   carry: ["wgan_ext/_C.abi3.so"], command: "bash scripts/gpu_check.sh", timeout_s: 480 (its deadline is 450 s)
# (docs/gpu.md). On the GPU machine the check uses it when it loads and has kernels for the GPU's arch, and builds
# there otherwise.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
source scripts/env.sh
wgan_ext_env requirements/test.txt
PY="$WGAN_EXT_PY"
wgan_ext_has_nvcc || { echo "[carry] nvcc not found: the carried build needs the CUDA kernels" >&2; exit 1; }
export WGAN_EXT_FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-8.0;9.0+PTX}" MAX_JOBS="${MAX_JOBS:-$(nproc)}"
rm -f wgan_ext/_C*.so
"$PY" setup.py -q build_ext --inplace >&2
ls -la wgan_ext/_C.abi3.so >&2
# the newest glibc it needs (the machine it runs on must have at least that; gpu_check.sh logs the GPU machine's)
if command -v objdump >/dev/null; then
  echo "[carry] needs $(objdump -T wgan_ext/_C.abi3.so | grep -o 'GLIBC_[0-9.]*' | sort -V | tail -1)" >&2
fi
# the GPU machine's stack: the same file, from the source tree (PYTHONPATH), op tests
export PYENV_VERSION="${PYENV_VERSION:-3.12.1}"
PYTHON="${DEVICE_STACK_PYTHON:-python3.12}" wgan_ext_env requirements/device-stack.txt
cd /tmp
PYTHONPATH="$ROOT" "$WGAN_EXT_PY" -m wgan_ext.info
PYTHONPATH="$ROOT" WGAN_EXT_REQUIRE_OPS=1 WGAN_EXT_EXPECT_CUDA_KERNELS=1 "$WGAN_EXT_PY" -m pytest -q -p no:cacheprovider \
  "$ROOT/python_tests/library"
echo "[carry] wgan_ext/_C.abi3.so is ready: carry [\"wgan_ext/_C.abi3.so\"] in the device call" >&2
