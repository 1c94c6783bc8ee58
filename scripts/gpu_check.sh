#!/usr/bin/env bash
# On a GPU machine (see README, "Checking the CUDA kernels on a GPU"): build in place, run the CUDA tests, run
# compute-sanitizer (memcheck, racecheck, synccheck) over the kernel tests (every test marked `cuda`: the fused
# optimizer kernels' tests in test_fused_optim*.py included), run the benchmarks (bench_fused_optim.py included). Writes its logs and
# results under $OUT (default ./gpu_check_out), at most 8 files, one folder deep, as the device tool brings back.
# Uses the machine's own Python and torch (no network there): nothing is installed but wgan_ext, built in place.
#   WGAN_EXT_COMMIT  the commit being checked (the copy on the GPU machine may have no .git)
#   GPU_CHECK_STEPS  which parts to run, comma-separated: tests, sanitizer, bench (default: all three). The build
#                    always runs (a no-op when the in-place build is current), so the parts can be split over calls.
#   PYTEST_ARGS      extra pytest arguments for the full-suite step (e.g. "-n 6" with pytest-xdist: a test that
#                    crashes its process is then reported as failed and the rest still run)
#   STEP_TIMEOUT     seconds any one step may take before it is stopped and counted as failed (default 300)
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
OUT="${OUT:-$ROOT/gpu_check_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
LOG="$OUT/gpu_check.log"
export WGAN_EXT_COMMIT="${WGAN_EXT_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
STEPS=",${GPU_CHECK_STEPS:-tests,sanitizer,bench},"
want() { [[ "$STEPS" == *",$1,"* ]]; }
status=0
step() {  # usage: step NAME LOGFILE CMD... ; runs CMD, appends its output to LOGFILE, records failure
  local name="$1" file="$2"; shift 2
  echo "=== $name: $*" | tee -a "$LOG"
  local t0; t0=$(date +%s)
  timeout --kill-after=10 "${STEP_TIMEOUT:-300}" "$@" >>"$file" 2>&1
  local rc=$?
  [ $rc -eq 124 ] && echo "=== $name: stopped after ${STEP_TIMEOUT:-300} s" | tee -a "$LOG"
  echo "=== $name: exit $rc in $(( $(date +%s) - t0 )) s" | tee -a "$LOG"
  [ $rc -eq 0 ] || status=1
  return $rc
}

{ echo "commit $WGAN_EXT_COMMIT"; date -u; nvidia-smi; nvcc --version; "$PY" -c 'import torch,sys; print(sys.version); print("torch", torch.__version__, torch.version.cuda)'; } >>"$LOG" 2>&1

# Build in place for the GPU that is here (TORCH_CUDA_ARCH_LIST from the visible device), CUDA required.
export WGAN_EXT_FORCE_CUDA=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}"
{ echo "CC=${CC:-} CXX=${CXX:-}"; for c in c++ g++ gcc; do echo "$c -> $(command -v $c)"; done; c++ --version | head -1; } >>"$LOG" 2>&1
step build "$LOG" "$PY" setup.py build_ext --inplace || { echo "build failed; see $LOG"; exit 1; }
{ echo "libstdc++ symbols defined in _C: $(nm -D --defined-only wgan_ext/_C*.so | grep -c 'St13basic_ostream\|codecvt')"
  ldd wgan_ext/_C*.so | grep -i 'stdc++\|gcc_s'; } >>"$LOG" 2>&1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# A C++ error from the ops must reach Python as an exception. Seen on the lent GPU image (2026-11-22): its default
# compiler (/opt/gcc/bin/g++) gave an extension in which formatting a number into an error message segfaults
# (inside a libstdc++ copy linked into _C). If that happens, rebuild with the system compiler and check again.
if ! step error-smoke "$LOG" "$PY" scripts/error_smoke.py; then
  for cxx in /usr/bin/g++ /usr/bin/clang++; do
    [ -x "$cxx" ] || continue
    export CXX=$cxx CC=${cxx/%++/}; [ "$CC" = /usr/bin/g ] && CC=/usr/bin/gcc
    echo "=== rebuilding with CXX=$CXX CC=$CC" | tee -a "$LOG"
    rm -rf build wgan_ext/_C*.so
    step rebuild "$LOG" "$PY" setup.py build_ext --inplace || continue
    if step error-smoke-again "$LOG" "$PY" scripts/error_smoke.py; then
      echo "=== the extension is built with CXX=$CXX; the first build's failure is kept in the log" | tee -a "$LOG"
      status=0
      break
    fi
  done
fi
step info "$LOG" "$PY" -m wgan_ext.info --require-cuda

# The whole suite (CUDA tests included: they run where a GPU is visible) and compute-sanitizer (memcheck, racecheck,
# synccheck) over the CUDA kernel tests, all at once: the sanitizers are slow on the CPU side and leave the GPU mostly
# idle. Each writes its own log; the sanitizers' go into the main log afterwards. (The profiler test is left out of
# the sanitizer runs: CUPTI and the sanitizer conflict.) Nothing timed runs meanwhile: the benchmarks come after.
export WGAN_EXT_REQUIRE_OPS=1 WGAN_EXT_EXPECT_CUDA_KERNELS=1
SANITIZER=$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")
pids=()
if want tests; then
  step tests "$OUT/tests.log" "$PY" -m pytest python_tests -v -rs -p no:cacheprovider ${PYTEST_ARGS:-} & pids+=($!)
fi
if want sanitizer; then
  for tool in memcheck racecheck synccheck; do
    step "sanitizer-$tool" "$OUT/.san-$tool.log" "$SANITIZER" --tool "$tool" --error-exitcode 9 \
      --target-processes all "$PY" -m pytest python_tests -m cuda -q -p no:cacheprovider -k "not one_launch" &
    pids+=($!)
  done
fi
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
for f in "$OUT"/.san-*.log; do [ -f "$f" ] && { echo "--- $f"; cat "$f"; rm -f "$f"; } >>"$LOG"; done

# Benchmarks on CUDA. At most 8 files come back: 2 logs, each benchmark's JSON, and its Markdown tables joined into
# one bench-cuda.md (five benchmarks at 2 files each would be 12).
if want bench; then
  BENCH_TMP="$OUT/.bench"
  mkdir -p "$BENCH_TMP"
  for bench in clip gradient_penalty spectral_norm fused_optim train; do
    step "bench-$bench-cuda" "$LOG" "$PY" "benchmarks/bench_$bench.py" --device cuda --out "$BENCH_TMP"
  done
  for f in "$BENCH_TMP"/*.json; do [ -f "$f" ] && mv "$f" "$OUT/"; done
  for f in "$BENCH_TMP"/*.md; do [ -f "$f" ] && { cat "$f"; echo; }; done >"$OUT/bench-cuda.md"
  rm -rf "$BENCH_TMP"
fi

echo "gpu_check: $([ $status -eq 0 ] && echo all steps passed || echo SOME STEPS FAILED) (commit $WGAN_EXT_COMMIT)" | tee -a "$LOG"
ls -la "$OUT" >>"$LOG"
exit $status
