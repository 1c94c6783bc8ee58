#!/usr/bin/env bash
# The whole test suite from a fresh clone, in one command: makes (or reuses) the environment, builds and installs
# wgan_ext with its CPU and CUDA kernels, checks the build, runs every test. Exits non-zero on any failure.
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
echo "[test] building and installing wgan_ext (MAX_JOBS=$MAX_JOBS)" >&2
"$PY" -m pip install -q --no-build-isolation --no-deps --force-reinstall . >&2
rm -f "$(dirname "$(dirname "$PY")")/.wgan_ext-installed"  # scripts/train.sh's stamp: its next run reinstalls
echo "[test] built in $(( $(date +%s) - start )) s since start" >&2

# Check the installed build from outside the checkout, so the source tree cannot shadow it.
(cd /tmp && "$PY" -m wgan_ext.info ${WGAN_EXT_EXPECT_CUDA_KERNELS:+--require-cuda})

export WGAN_EXT_REQUIRE_OPS=1
"$(dirname "$PY")/pytest" python_tests -q -p no:cacheprovider "$@"
echo "[test] all passed in $(( $(date +%s) - start )) s" >&2
