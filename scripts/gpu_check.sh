#!/usr/bin/env bash
# On a GPU machine (see docs/gpu.md), in one call that fits the lent machine's time: use the carried build (or build
# in place); run the CUDA tests (every test marked `cuda`: kernels, fused optimizers, CUDA graphs, the trainer) with
# compute-sanitizer memcheck, synccheck and racecheck over the kernel tests alongside; then the benchmarks on CUDA,
# those never measured on a GPU first (train, train_compile, fused_optim), the torch.profiler tables of the GP/SN
# steps and the trainer (scripts/profile_steps.py), then spectral_norm, clip and gradient_penalty, each with
# shortened timing windows and its own time limit. Everything runs against one deadline (GPU_CHECK_DEADLINE): a
# step gets at most what is left, the sanitizers at most their share, and a benchmark is skipped (and said so) when
# too little is left. Writes its log and results under $OUT (default ./gpu_check_out), at most 8 files, one folder
# deep, as the device tool brings back.
# Uses the machine's own Python and torch (no network there): nothing is installed but wgan_ext, built in place.
#   WGAN_EXT_COMMIT     the commit being checked (the copy on the GPU machine may have no .git)
#   GPU_CHECK_STEPS     which parts to run, comma-separated: tests, sanitizer, bench, suite (default: tests,
#                       sanitizer,bench; suite = the whole suite instead of only the CUDA tests, which CI's CPU run
#                       already covers otherwise). The build always runs (a no-op when the in-place build is current)
#   GPU_CHECK_DEADLINE  seconds from the start for everything (default 450: call the device tool with timeout_s
#                       480, which leaves about 5 of a session's 15 device minutes for start-up and one rerun)
#   SANITIZER_SHARE     seconds the tests and sanitizers may take together (default 170)
#   PYTEST_ARGS         extra pytest arguments for the test step (e.g. "-n 6" with pytest-xdist)
#   WGAN_EXT_BENCH_TIME_SCALE  the benchmarks' timing windows times this (default here 0.4; 1 = as on the CPU)
#   GPU_CHECK_BUILD=1   build in place even when a carried wgan_ext/_C.abi3.so loads
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
START=$(date +%s)
END=$(( START + ${GPU_CHECK_DEADLINE:-450} ))
left() { echo $(( END - $(date +%s) )); }
status=0
step() {  # usage: step NAME LOGFILE LIMIT CMD... ; runs CMD for at most LIMIT s (and never past the deadline),
          # appends its output to LOGFILE, records failure
  local name="$1" file="$2" limit="$3"; shift 3
  local l; l=$(left); [ "$limit" -gt "$l" ] && limit=$l
  if [ "$limit" -le 5 ]; then echo "=== $name: NOT RUN (deadline reached)" | tee -a "$LOG"; status=1; return 124; fi
  echo "=== $name (limit $limit s): $*" | tee -a "$LOG"
  local t0; t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >>"$file" 2>&1
  local rc=$?
  [ $rc -eq 124 ] && echo "=== $name: stopped after $limit s" | tee -a "$LOG"
  echo "=== $name: exit $rc in $(( $(date +%s) - t0 )) s (t+$(( $(date +%s) - START )) s)" | tee -a "$LOG"
  [ $rc -eq 0 ] || status=1
  return $rc
}

{ echo "commit $WGAN_EXT_COMMIT"; date -u; grep PRETTY_NAME /etc/os-release; ldd --version | head -1; nvidia-smi
  nvcc --version
  "$PY" -c 'import torch,sys; print(sys.version); print("torch", torch.__version__, torch.version.cuda)'; } >>"$LOG" 2>&1

# A carried build first: wgan_ext/_C.abi3.so built on the CPU machine (scripts/prepare_carry.sh) and brought along
# by the device tool's `carry`. The extension is on the LibTorch stable ABI, so it loads into this machine's torch
# (2.11) and Python (3.12) as it is; it is used when it loads and has CUDA kernels for this GPU's arch (`python -m
# wgan_ext.info --require-gpu`). Otherwise (or with GPU_CHECK_BUILD=1) build in place for the GPU here, CUDA required.
export WGAN_EXT_FORCE_CUDA=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if [ "${GPU_CHECK_BUILD:-0}" != 1 ] && [ -f wgan_ext/_C.abi3.so ] \
   && step carried-build "$LOG" 60 "$PY" -m wgan_ext.info --require-gpu; then
  echo "=== using the carried build: no compile on this machine" | tee -a "$LOG"
else
  status=0  # no usable carried build is not a failure: build here
  rm -f wgan_ext/_C*.so
  { echo "CC=${CC:-} CXX=${CXX:-}"; for c in c++ g++ gcc; do echo "$c -> $(command -v $c)"; done; c++ --version | head -1; } >>"$LOG" 2>&1
  step build "$LOG" 400 "$PY" setup.py build_ext --inplace || { echo "build failed; see $LOG"; exit 1; }
fi
{ echo "libstdc++ symbols defined in _C: $(nm -D --defined-only wgan_ext/_C*.so | grep -c 'St13basic_ostream\|codecvt')"
  ldd wgan_ext/_C*.so | grep -i 'stdc++\|gcc_s'; } >>"$LOG" 2>&1

# A C++ error from the ops must reach Python as an exception. Seen on the lent GPU image (2026-11-22): its default
# compiler (/opt/gcc/bin/g++) gave an extension in which formatting a number into an error message segfaults
# (inside a libstdc++ copy linked into _C). If that happens, rebuild with the system compiler and check again.
if ! step error-smoke "$LOG" 60 "$PY" scripts/error_smoke.py; then
  for cxx in /usr/bin/g++ /usr/bin/clang++; do
    [ -x "$cxx" ] || continue
    export CXX=$cxx CC=${cxx/%++/}; [ "$CC" = /usr/bin/g ] && CC=/usr/bin/gcc
    echo "=== rebuilding with CXX=$CXX CC=$CC" | tee -a "$LOG"
    rm -rf build wgan_ext/_C*.so
    step rebuild "$LOG" 400 "$PY" setup.py build_ext --inplace || continue
    if step error-smoke-again "$LOG" 60 "$PY" scripts/error_smoke.py; then
      echo "=== the extension is built with CXX=$CXX; the first build's failure is kept in the log" | tee -a "$LOG"
      status=0
      break
    fi
  done
fi
step info "$LOG" 60 "$PY" -m wgan_ext.info --require-cuda

# The CUDA tests (or the whole suite) and compute-sanitizer, at once: the sanitizers are slow on the CPU side and
# leave the GPU mostly idle. Each writes its own log; the sanitizers' go into the main log afterwards. memcheck,
# synccheck and racecheck first run scripts/kernel_smoke.py (every kernel once per representative case: they
# finish), then memcheck and synccheck the kernel tests, the fused optimizers' first (never sanitized before).
# The profiler test is left out (CUPTI and the sanitizer conflict), and so is test_graphs.py (the sanitizers do not
# support graph capture well, and it runs no kernel of ours that the kernel tests do not). Nothing timed runs
# meanwhile: the benchmarks come after.
export WGAN_EXT_REQUIRE_OPS=1 WGAN_EXT_EXPECT_CUDA_KERNELS=1
SANITIZER=$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")
SHARE=${SANITIZER_SHARE:-170}
KERNEL_TESTS="python_tests/library/test_optim_plan.py python_tests/library/test_clip_plan.py
python_tests/library/test_fused_optim.py python_tests/library/test_clip.py python_tests/library/test_gradient_penalty.py
python_tests/library/test_spectral_norm.py"
# The test files in this order: those never run on a GPU first (the trainer, CUDA graphs, the fused optimizers,
# spectral norm's CUDA paths), then the rest, so that a test step stopped at its share loses what ran on the H100.
FIRST_TESTS="python_tests/train/test_train_graphs.py python_tests/train/test_precision.py
python_tests/train/test_data.py python_tests/library/test_graphs.py python_tests/library/test_fused_optim.py python_tests/library/test_optim_plan.py
python_tests/library/test_spectral_norm_cuda.py python_tests/library/test_spectral_norm_normalize.py"
TEST_FILES=()
for f in $FIRST_TESTS; do [ -f "$f" ] && TEST_FILES+=("$f"); done
while IFS= read -r f; do
  [[ " ${TEST_FILES[*]} " == *" $f "* ]] || TEST_FILES+=("$f")
done < <(find python_tests -name 'test_*.py' | sort)
pids=() logs=()  # a background step and its log (the sanitizers': checked for a GPU they do not support)
san_unsupported=0
if want tests || want suite; then
  marker=(-m cuda); want suite && marker=()
  step tests "$OUT/tests.log" "$SHARE" "$PY" -m pytest "${TEST_FILES[@]}" "${marker[@]}" -v -rs --durations=25 \
    -p no:cacheprovider ${PYTEST_ARGS:-} & pids+=($!); logs+=("")
fi
if want sanitizer; then
  # every kernel once per representative case (scripts/kernel_smoke.py: a few dozen launches) under each tool:
  # these finish (racecheck over the kernel tests did not, in 420 s); memcheck and synccheck also over the kernel
  # tests, for breadth, as far as the time allows
  for tool in memcheck synccheck racecheck; do
    step "sanitizer-$tool-smoke" "$OUT/.san-$tool-smoke.log" "$SHARE" "$SANITIZER" --tool "$tool" --error-exitcode 9 \
      "$PY" scripts/kernel_smoke.py --device cuda &
    pids+=($!); logs+=("$OUT/.san-$tool-smoke.log")
  done
  for tool in memcheck synccheck; do
    # shellcheck disable=SC2086
    step "sanitizer-$tool-tests" "$OUT/.san-$tool.log" "$SHARE" "$SANITIZER" --tool "$tool" --error-exitcode 9 \
      --target-processes all "$PY" -m pytest $KERNEL_TESTS -m cuda -q -p no:cacheprovider -k "not one_launch" &
    pids+=($!); logs+=("$OUT/.san-$tool.log")
  done
fi
# compute-sanitizer refuses the GPU on some of the lent machines ("Device not supported", seen on gVisor ones): then
# the sanitizers did not run, which is said at the end, and is not counted as a failure of the code checked
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" && continue
  if [ -n "${logs[$i]}" ] && grep -q "Device not supported" "${logs[$i]}"; then san_unsupported=1; else status=1; fi
done
for f in "$OUT"/tests.log "$OUT"/.san-*.log; do [ -f "$f" ] && { echo "--- $f"; cat "$f"; rm -f "$f"; } >>"$LOG"; done

# Benchmarks on CUDA, each with its own time limit, in this order: those never measured on a GPU (train; then
# train_compile, the toy case again with the torch.compile(mode="reduce-overhead") loops, a run of its own so that
# compiling cannot cost the first its rows; fused_optim), the torch.profiler tables (scripts/profile_steps.py, into
# the main log), then spectral_norm, clip and gradient_penalty. Their timing windows are shortened
# (WGAN_EXT_BENCH_TIME_SCALE, default 0.4 here, recorded in every result) so that as many as possible fit after the
# tests. Each benchmark's JSON goes into $OUT and its table into bench-cuda.md as soon as it finishes (bench_train
# also writes after every case and mode), so a run cut off at the deadline keeps what finished. At most 8 files
# come back (the device tool's limit): gpu_check.log (the tests' and sanitizers' logs appended), bench-cuda.md and
# 6 JSONs.
if want bench; then
  export WGAN_EXT_BENCH_TIME_SCALE="${WGAN_EXT_BENCH_TIME_SCALE:-0.4}"
  BENCH_TMP="$OUT/.bench"
  mkdir -p "$BENCH_TMP"
  for bench in train train_compile fused_optim profile spectral_norm clip gradient_penalty; do
    case "$bench" in
      train) limit=100 ;; train_compile) limit=70 ;; spectral_norm|profile) limit=60 ;; fused_optim) limit=50 ;;
      *) limit=35 ;;
    esac
    if [ "$bench" = profile ]; then
      step "profile-steps-cuda" "$LOG" "$limit" "$PY" scripts/profile_steps.py --device cuda
    elif [ "$bench" = train_compile ]; then
      step "bench-$bench-cuda" "$LOG" "$limit" "$PY" benchmarks/bench_train.py --device cuda --cases toy-mlp \
        --compile --name train_compile --out "$BENCH_TMP"
    else
      step "bench-$bench-cuda" "$LOG" "$limit" "$PY" "benchmarks/bench_$bench.py" --device cuda --out "$BENCH_TMP"
    fi
    for f in "$BENCH_TMP"/*.json; do [ -f "$f" ] && mv "$f" "$OUT/"; done
    for f in "$BENCH_TMP"/*.md; do [ -f "$f" ] && { cat "$f"; echo; } >>"$OUT/bench-cuda.md" && rm -f "$f"; done
  done
  rm -rf "$BENCH_TMP"
fi

if [ $san_unsupported -eq 1 ]; then
  echo "=== compute-sanitizer does not support this machine's GPU (\"Device not supported\"):" \
    "NOT CHECKED by the sanitizers" | tee -a "$LOG"
fi
echo "gpu_check: $([ $status -eq 0 ] && echo all steps passed || echo SOME STEPS FAILED)$([ $san_unsupported -eq 1 ] \
  && echo ", the sanitizers not run") (commit $WGAN_EXT_COMMIT)" | tee -a "$LOG"
ls -la "$OUT" >>"$LOG"
exit $status
