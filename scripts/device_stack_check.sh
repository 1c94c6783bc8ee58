#!/usr/bin/env bash
# The GPU machine's software stack on this CPU machine: Python 3.12 and torch 2.11.0 (+cu130, as there) in a second
# cached environment (requirements/device-stack.txt), into which the wheel that scripts/test.sh built (against the
# test environment's torch and Python) is installed as it is: no rebuild. Then pytest with the given arguments
# (default: the op tests, python_tests/library; python_tests for the whole suite). Proves that one build of the
# stable-ABI extension loads into an older torch on another Python, and catches uses of torch or Python features
# newer than the GPU machine's before a GPU session spends its minutes on them. scripts/test.sh (and so CI) runs it.
#   bash scripts/device_stack_check.sh [--wheel dist/wgan_ext-*.whl] [--same-as PYTHON] [pytest args...]
#   --same-as PYTHON: also check that PYTHON's installed _C is byte for byte the one installed here
#   DEVICE_STACK_PYTHON  the interpreter to build the environment from (default: python3.12, pyenv's 3.12.1)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
source scripts/env.sh

wheel="" same_as="" args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheel) wheel="$2"; shift 2 ;;
    --same-as) same_as="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
if [ -z "$wheel" ]; then
  wheel=$(ls "$ROOT"/dist/wgan_ext-*.whl 2>/dev/null | head -1 || true)
  [ -n "$wheel" ] || { echo "[device-stack] no wheel in dist/: run scripts/test.sh first (or pass --wheel)" >&2; exit 2; }
fi

start=$(date +%s)
export PYENV_VERSION="${PYENV_VERSION:-3.12.1}"  # where python3.12 is a pyenv shim
py312="${DEVICE_STACK_PYTHON:-python3.12}"
if ! "$py312" --version >/dev/null 2>&1; then
  # CI must run it; elsewhere a machine without Python 3.12 skips it, saying so
  if [ "${CI:-}" = true ]; then echo "[device-stack] $py312 not found" >&2; exit 1; fi
  echo "[device-stack] SKIPPED: $py312 not found (set DEVICE_STACK_PYTHON)" >&2
  exit 0
fi
PYTHON="$py312" wgan_ext_env requirements/device-stack.txt
PY312="$WGAN_EXT_PY"
echo "[device-stack] $("$PY312" -c 'import sys, torch; print("Python", sys.version.split()[0], "torch", torch.__version__)'), wheel $(basename "$wheel")" >&2
"$PY312" -m pip install -q --no-deps --force-reinstall "$wheel" >&2

# From /tmp, so that the installed package is imported and not the sources.
so_of() { (cd /tmp && "$1" -c 'import pathlib, wgan_ext; print(next(pathlib.Path(wgan_ext.__file__).parent.glob("_C*.so")))'); }
here=$(so_of "$PY312")
echo "[device-stack] $here: $(sha256sum "$here" | cut -c1-16)" >&2
if [ -n "$same_as" ]; then
  there=$(so_of "$same_as")
  cmp -s "$here" "$there" || { echo "[device-stack] $here differs from $there: not the same build" >&2; exit 1; }
  echo "[device-stack] the same file as $there" >&2
fi
(cd /tmp && "$PY312" -m wgan_ext.info)

tests=()
for a in "${args[@]:-python_tests/library}"; do [[ "$a" == -* ]] && tests+=("$a") || tests+=("$ROOT/$a"); done
cd /tmp
WGAN_EXT_REQUIRE_OPS=1 "$PY312" -m pytest -q -p no:cacheprovider "${tests[@]}"
echo "[device-stack] passed in $(( $(date +%s) - start )) s" >&2
