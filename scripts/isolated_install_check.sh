#!/usr/bin/env bash
# `pip install .` as users type it, with build isolation: pip builds wgan_ext in a fresh environment holding the
# newest torch it may take (torch >= 2.11 from pyproject.toml; on these machines pip's constraints cap it at 2.14.1),
# and installs the result into an environment with another torch (USER_TORCH, default 2.13.0, the CPU wheel on local
# disk). The check: the extension loads there, reports that it was built against a different torch, and an op runs.
# That is what the LibTorch stable ABI buys; before it, such an install did not load. scripts/test.sh runs it
# (WGAN_EXT_SKIP_ISOLATED_INSTALL=1 skips it). About 3 minutes; the environments are temporary.
#   WGAN_EXT_NO_CUDA  default 1 here: the CPU kernels are enough to show the binary loads, and take a minute less
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
USER_TORCH="${USER_TORCH:-2.13.0}"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
start=$(date +%s)

"$PYTHON" -m venv "$TMP/env"
"$TMP/env/bin/python" -m pip install -q "torch==$USER_TORCH" numpy 2>&1 | grep -v "^WARNING: Location" >&2 || true
"$TMP/env/bin/python" -c "import torch" || { echo "[isolated-install] torch $USER_TORCH did not install" >&2; exit 1; }
# a copy of the tree, so that the build leaves nothing in the checkout
git -C "$ROOT" ls-files -z | (cd "$ROOT" && tar --null -T - -cf -) | tar -xf - -C "$TMP" --one-top-level=src
echo "[isolated-install] pip install . (build isolation) into torch $USER_TORCH" >&2
# (scripts/test.sh exports WGAN_EXT_FORCE_CUDA for its own build: not for this one)
(cd "$TMP/src" && env -u WGAN_EXT_FORCE_CUDA WGAN_EXT_NO_CUDA="${WGAN_EXT_NO_CUDA:-1}" \
  "$TMP/env/bin/python" -m pip install -v --no-cache-dir . \
  > "$TMP/build.log" 2>&1) || { grep -v "^WARNING: Location" "$TMP/build.log" | tail -40 >&2; exit 1; }
grep "\[wgan_ext build\]" "$TMP/build.log" | awk '!seen[$0]++' >&2 || true

cd "$TMP"
"$TMP/env/bin/python" - <<'PY'
import torch

import wgan_ext
from wgan_ext import _ops

assert _ops.has_ops(), f"the compiled library did not load: {_ops.LOAD_ERROR}"
built = _ops.build_info()["torch"]
running = torch.__version__.split("+")[0]
print(f"[isolated-install] built against torch {built}, running torch {running}: loaded")
assert built != running, "the isolated build used the same torch as the user's environment: nothing was shown"
x = torch.linspace(-3, 3, 101)
wgan_ext.clip_([x], 1.0, impl="fused")
assert x.min() == -1 and x.max() == 1, "the fused clamp gave a wrong result"
grad = torch.randn(8, 5, dtype=torch.float64)
penalty, norms = torch.ops.wgan_ext.gradient_norm_penalty(grad, 1.0, False, 1.0, 1e-12)
torch.testing.assert_close(norms, grad.norm(dim=1))
print("[isolated-install] ops run")
PY
echo "[isolated-install] passed in $(( $(date +%s) - start )) s" >&2
