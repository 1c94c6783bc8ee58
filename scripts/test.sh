#!/usr/bin/env bash
# The whole test suite from a fresh clone, in one command: makes (or reuses) the environment, builds wgan_ext with its
# CPU and CUDA kernels once (a wheel), installs it, checks the build, runs every test, the library's tests again on
# the pure-torch fallback (WGAN_EXT_IMPL=reference), then the whole suite again with the same wheel under the GPU
# machine's Python and torch (scripts/device_stack_check.sh; WGAN_EXT_SKIP_DEVICE_STACK=1 skips that part) and checks
# an isolated `pip install .` into another torch (scripts/isolated_install_check.sh; WGAN_EXT_SKIP_ISOLATED_INSTALL=1
# skips it). Exits non-zero on any failure.
# Where nvcc is present the CUDA kernels must compile (WGAN_EXT_FORCE_CUDA) and be registered (info --require-cuda).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
source scripts/env.sh

start=$(date +%s)
wgan_ext_env requirements/test.txt
PY="$WGAN_EXT_PY"

export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
if wgan_ext_has_nvcc; then
  export WGAN_EXT_FORCE_CUDA=1 WGAN_EXT_EXPECT_CUDA_KERNELS=1
fi
# One build, as a wheel (cp310-abi3: the extension is on the LibTorch stable ABI), installed here and, unchanged, into
# the GPU machine's stack by scripts/device_stack_check.sh below.
WHEELS="$ROOT/dist"
rm -rf "$WHEELS"
echo "[test] building wgan_ext (MAX_JOBS=$MAX_JOBS)" >&2
"$PY" -m pip wheel -q --no-build-isolation --no-deps -w "$WHEELS" . >&2
WHEEL=$(ls "$WHEELS"/wgan_ext-*.whl)
"$PY" -m pip install -q --no-deps --force-reinstall "$WHEEL" >&2
rm -f "$(dirname "$(dirname "$PY")")/.wgan_ext-installed"  # scripts/train.sh's stamp: its next run reinstalls
echo "[test] built in $(( $(date +%s) - start )) s since start" >&2

# Check the installed build from outside the checkout, so the source tree cannot shadow it.
(cd /tmp && "$PY" -m wgan_ext.info ${WGAN_EXT_EXPECT_CUDA_KERNELS:+--require-cuda})

export WGAN_EXT_REQUIRE_OPS=1
"$(dirname "$PY")/pytest" python_tests -q -p no:cacheprovider "$@"
echo "[test] suite passed in $(( $(date +%s) - start )) s" >&2
# The library's tests again on the pure-torch fallback, what a user whose build failed runs (WGAN_EXT_IMPL=reference;
# the tests that assert the compiled path is taken skip; about 30 s).
WGAN_EXT_IMPL=reference "$(dirname "$PY")/pytest" python_tests/library -q -p no:cacheprovider
echo "[test] the library's tests on the pure-torch fallback passed" >&2

# The same wheel under Python 3.12 + torch 2.11 (the GPU machine's stack): loads without a rebuild, and the whole
# suite passes there too (the trainer, evaluation and benchmarks included: the GPU machine runs them on torch 2.11).
if [ "${WGAN_EXT_SKIP_DEVICE_STACK:-0}" != 1 ]; then
  bash scripts/device_stack_check.sh --wheel "$WHEEL" --same-as "$PY" python_tests
fi
# `pip install .` with build isolation, installed into another torch (2.13): loads and runs.
if [ "${WGAN_EXT_SKIP_ISOLATED_INSTALL:-0}" != 1 ]; then
  bash scripts/isolated_install_check.sh
fi
echo "[test] all passed in $(( $(date +%s) - start )) s" >&2
