#!/usr/bin/env bash
# The GPU machine's software stack on this CPU machine: Python 3.12 and torch 2.11.0 (+cu130, as there) in a second
# cached environment, wgan_ext built in it (CUDA kernels for sm_90, as the lent H100/H200 runs them), then pytest
# with the given arguments (default: the whole suite). Catches uses of torch or Python features newer than the GPU
# machine's before a GPU session spends its minutes on them. Not part of CI (about 15 minutes on 2 cores).
#   bash scripts/device_stack_check.sh                       # the whole suite
#   bash scripts/device_stack_check.sh python_tests/library   # the op tests only
# The extension is built here for this stack (the LibTorch stable ABI, issue 21, would let one build serve both).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ENV="${WGAN_EXT_ENV_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/wgan_ext}/device-stack-py312-torch2.11"
if [ ! -f "$ENV/.complete" ]; then
  rm -rf "$ENV"
  PYENV_VERSION="${PYENV_VERSION:-3.12.1}" python3.12 -m venv "$ENV"
  "$ENV/bin/python" -m pip install -q --upgrade pip
  "$ENV/bin/python" -m pip install -q "torch==2.11.0" "torchvision==0.26.0" numpy scipy pytest hypothesis expecttest \
    setuptools wheel ninja matplotlib scikit-learn pot tensorboard tqdm pyyaml pillow
  touch "$ENV/.complete"
fi
BUILD=$(mktemp -d)
trap 'rm -rf "$BUILD"' EXIT
git -C "$ROOT" archive HEAD | tar -x -C "$BUILD"  # the committed tree, built apart from the checkout's own build
source "$ROOT/scripts/env.sh"
if wgan_ext_has_nvcc; then export WGAN_EXT_FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"; fi
(cd "$BUILD" && MAX_JOBS="${MAX_JOBS:-$(nproc)}" "$ENV/bin/python" -m pip install -q --no-build-isolation --no-deps --force-reinstall .)
(cd /tmp && "$ENV/bin/python" -m wgan_ext.info)
# from outside the tree, so that the installed build is imported and not the sources (which have no _C)
args=()
for a in "${@:-python_tests}"; do [[ "$a" == -* ]] && args+=("$a") || args+=("$BUILD/$a"); done
cd /tmp
WGAN_EXT_REQUIRE_OPS=1 "$ENV/bin/python" -m pytest -q -p no:cacheprovider "${args[@]}"
