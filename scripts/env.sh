# Sourced by the repo's commands: makes (once) and reuses a virtual environment outside the checkout.
#
# The environment is keyed by the requirements file and the Python version, so every fresh clone on a machine
# shares one (the CUDA build of torch is ~5.5 GB; a venv per clone fills the disk). It is created under a lock,
# marked complete only once pip succeeded, and environments of other keys unused for 3 days are removed.
#   WGAN_EXT_ENV_ROOT  where environments live (default: ~/.cache/wgan_ext)
#   PYTHON             the interpreter to build them from (default: python3.11, else python3)

wgan_ext_env() {  # usage: wgan_ext_env REQUIREMENTS_FILE ; sets WGAN_EXT_PY to the environment's python
  local req="$1"
  local python="${PYTHON:-}"
  if [ -z "$python" ]; then
    if command -v python3.11 >/dev/null 2>&1; then python=python3.11; else python=python3; fi
  fi
  local root="${WGAN_EXT_ENV_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/wgan_ext}"
  local key
  key=$( { cat "$req"; "$python" --version; uname -m; } | sha256sum | cut -c1-16)
  local env="$root/env-$key"
  mkdir -p "$root"
  (
    flock 9
    if [ ! -f "$env/.complete" ]; then
      echo "[env] creating $env from $req (once per machine; torch is large)" >&2
      rm -rf "$env"
      "$python" -m venv "$env"
      "$env/bin/python" -m pip install -q --upgrade pip >&2
      "$env/bin/python" -m pip install -q -r "$req" >&2
      touch "$env/.complete"
    fi
    touch "$env/.complete"  # last use, for the clean-up below
    find "$root" -maxdepth 2 -name .complete -path "$root/env-*" -mtime +3 2>/dev/null | while read -r old; do
      d=$(dirname "$old"); [ "$d" != "$env" ] && echo "[env] removing stale $d" >&2 && rm -rf "$d"
    done
  ) 9>"$root/env.lock"
  WGAN_EXT_PY="$env/bin/python"
  export WGAN_EXT_PY
}

# True when a CUDA compiler is on this machine (then the CUDA kernels must be built).
wgan_ext_has_nvcc() {
  command -v nvcc >/dev/null 2>&1 || [ -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ]
}
