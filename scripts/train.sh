#!/usr/bin/env bash
# Train from a fresh clone in one command: makes (or reuses) the environment, builds and installs wgan_ext with
# its kernels (only when the sources changed since the last install), then runs `wgan-train` with the arguments
# given. No arguments: the embedded default (8 Gaussians, gradient penalty, about 2 minutes on 2 CPU cores).
#   bash scripts/train.sh                      # the default run
#   bash scripts/train.sh --lipschitz clip --dataset digits --iters 2000
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
source scripts/env.sh

wgan_ext_env requirements/test.txt
PY="$WGAN_EXT_PY"
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"

# Rebuild only when the package sources differ from what was installed last into this environment.
stamp_file="$(dirname "$(dirname "$PY")")/.wgan_ext-installed"
stamp=$( { cat setup.py pyproject.toml; find csrc wgan_ext -type f \( -name '*.py' -o -name '*.cpp' -o -name '*.cu' \
  -o -name '*.h' -o -name '*.cuh' \) -print0 | sort -z | xargs -0 cat; } | sha256sum | cut -c1-16)
if [ "$(cat "$stamp_file" 2>/dev/null)" != "$stamp" ]; then
  echo "[train] building and installing wgan_ext (MAX_JOBS=$MAX_JOBS; a few minutes the first time)" >&2
  "$PY" -m pip install -q --no-build-isolation --no-deps --force-reinstall . >&2
  echo "$stamp" > "$stamp_file"
fi
# Run from the checkout (run folders land in ./runs) with the installed package, not the source tree.
exec "$PY" -c 'import sys; sys.path.pop(0); from wgan_ext.train import main; sys.exit(main())' "$@"
