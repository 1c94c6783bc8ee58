"""scripts/gpu_check.sh, the one call a lent GPU session makes, run here with stand-ins for the GPU machine's tools:
a fake interpreter (PYTHON) that records each command and plays its part (the carried build loads or not, a step
fails or runs past its limit, a benchmark writes its JSON and table), and a fake compute-sanitizer that runs what it
is given. What is checked is the script's own logic: which build it uses, what it runs, what it brings back and what
it reports; a mistake there costs a lent session its 15 minutes. The steps themselves are tested elsewhere."""

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# the benchmarks' results in the order they run (the profiler tables run after fused_optim, into the log)
BENCHES = ["train", "train_compile", "fused_optim", "spectral_norm", "clip", "gradient_penalty"]
TEST_FILES = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "python_tests").rglob("test_*.py"))

FAKE_PYTHON = r"""#!/usr/bin/env bash
# every command the check runs through its interpreter: recorded, then played as the test asks (FAKE_* variables)
echo "python $*" >> "$FAKE_CALLS"
case "$*" in
  *"wgan_ext.info --require-gpu"*) exit "${FAKE_CARRIED_RC:-0}" ;;
  *"setup.py build_ext"*)  # an old build left in place could shadow the new one (another file name): must be gone
    ls wgan_ext/_C*.so >/dev/null 2>&1 && { echo "an earlier _C*.so is still there" >&2; exit 3; }
    echo built > wgan_ext/_C.abi3.so; exit "${FAKE_BUILD_RC:-0}" ;;
  *error_smoke.py*) [ -n "${CXX:-}" ] && exit 0; exit "${FAKE_SMOKE_RC:-0}" ;;
  *"-m pytest python_tests/train/"*) echo "the CUDA tests' output"; exit "${FAKE_TESTS_RC:-0}" ;;
  *"-m pytest"*) exit "${FAKE_TESTS_RC:-0}" ;;
  *benchmarks/bench_*.py*)
    name=${1#benchmarks/bench_}; name=${name%.py}
    while [ $# -gt 0 ]; do [ "$1" = --out ] && out=$2; [ "$1" = --name ] && name=$2; shift; done
    echo "{\"bench\": \"$name\"}" > "$out/$name-cuda.json"
    echo "| $name table |" > "$out/$name-cuda.md"
    [ "$name" = "${FAKE_SLOW_BENCH:-}" ] && exec sleep 60
    exit 0 ;;
esac
exit 0
"""

FAKE_SANITIZER = r"""#!/usr/bin/env bash
echo "sanitizer $*" >> "$FAKE_CALLS"
[ "${FAKE_SAN_UNSUPPORTED:-0}" = 1 ] && { echo "========= Error: Device not supported" >&2; exit 9; }
[ -n "${FAKE_SAN_RC:-}" ] && { echo "========= ERROR SUMMARY: 1 error" >&2; exit "$FAKE_SAN_RC"; }
while [[ "$1" == --* ]]; do shift 2; done  # --tool T, --error-exitcode N, --target-processes all
exec "$@"
"""


def _executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def run_check(tmp_path, carried=True, **fake):
    """gpu_check.sh in a scratch tree (it deletes and rebuilds wgan_ext/_C*.so) with a carried build present or
    not. Returns (exit code, the commands run, the files it brought back under $OUT, its main log)."""
    tree = tmp_path / "tree"
    (tree / "scripts").mkdir(parents=True)
    (tree / "wgan_ext").mkdir()
    shutil.copy(ROOT / "scripts" / "gpu_check.sh", tree / "scripts")
    if carried:
        (tree / "wgan_ext" / "_C.abi3.so").write_text("carried")
    for test in TEST_FILES:  # the suite's files (empty): the check orders them
        (tree / test).parent.mkdir(parents=True, exist_ok=True)
        (tree / test).touch()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python = _executable(bin_dir / "python", FAKE_PYTHON)
    _executable(bin_dir / "compute-sanitizer", FAKE_SANITIZER)
    calls, out = tmp_path / "calls.txt", tmp_path / "out"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GPU_CHECK_", "FAKE_", "WGAN_EXT_")) and k not in ("CC", "CXX", "OUT")}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", PYTHON=str(python), OUT=str(out), FAKE_CALLS=str(calls),
               WGAN_EXT_COMMIT="abc1234", **{k: str(v) for k, v in fake.items()})
    r = subprocess.run(["bash", str(tree / "scripts" / "gpu_check.sh")], cwd=tree, env=env, capture_output=True,
                       text=True, timeout=120)
    brought = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    return r.returncode, calls.read_text().splitlines(), brought, (out / "gpu_check.log").read_text(), tree


def test_a_carried_build_that_runs_here_is_used_and_everything_comes_back(tmp_path):
    rc, calls, brought, log, tree = run_check(tmp_path)
    assert rc == 0, log
    assert "=== using the carried build: no compile on this machine" in log
    assert not any("setup.py" in c for c in calls), "compiled although the carried build runs"
    assert (tree / "wgan_ext" / "_C.abi3.so").read_text() == "carried"
    # exactly what the device tool brings back: at most 8 files, none hidden, nothing in a subfolder
    assert brought == sorted(["gpu_check.log", "bench-cuda.md"] + [f"{b}-cuda.json" for b in BENCHES])
    assert "the CUDA tests' output" in log  # the tests' log, appended to the main one
    # the CUDA tests, the sanitizers over the smoke cases (all three tools) and over the kernel tests
    tests = [c.split() for c in calls if c.startswith("python -m pytest python_tests/train/")]
    assert len(tests) == 1 and tests[0][-7:] == ["-m", "cuda", "-v", "-rs", "--durations=25", "-p", "no:cacheprovider"]
    files = [a for a in tests[0] if a.endswith(".py")]
    # every test file once, those never run on a GPU first (the trainer's, the graphs', the fused optimizers')
    assert sorted(files) == TEST_FILES and len(set(files)) == len(files)
    assert files[:5] == ["python_tests/train/test_train_graphs.py", "python_tests/train/test_precision.py",
                         "python_tests/train/test_data.py", "python_tests/library/test_graphs.py",
                         "python_tests/library/test_fused_optim.py"]
    for tool in ("memcheck", "synccheck", "racecheck"):
        assert sum(c.startswith(f"sanitizer --tool {tool}") for c in calls) == (1 if tool == "racecheck" else 2)
    assert sum(c == "python scripts/kernel_smoke.py --device cuda" for c in calls) == 3
    # the benchmarks on CUDA in their order, the profiler last; every table in bench-cuda.md in that order
    bench_calls = [c for c in calls if "benchmarks/bench_" in c or "profile_steps.py" in c]
    assert [c.split()[1] for c in bench_calls] == [
        "benchmarks/bench_train.py", "benchmarks/bench_train.py", "benchmarks/bench_fused_optim.py",
        "scripts/profile_steps.py", "benchmarks/bench_spectral_norm.py", "benchmarks/bench_clip.py",
        "benchmarks/bench_gradient_penalty.py"]
    assert all("--device cuda" in c for c in bench_calls)
    assert "--cases toy-mlp --compile --name train_compile" in bench_calls[1] and "--compile" not in bench_calls[0]
    tables = (tmp_path / "out" / "bench-cuda.md").read_text()
    assert [line for line in tables.splitlines() if line] == [f"| {b} table |" for b in BENCHES]
    assert "gpu_check: all steps passed (commit abc1234)" in log


def test_without_a_usable_carried_build_it_builds_here_and_that_is_no_failure(tmp_path):
    for carried in (False, True):  # none carried; one carried that does not run on this GPU
        rc, calls, brought, log, tree = run_check(tmp_path / str(carried), carried=carried, FAKE_CARRIED_RC=1)
        assert rc == 0, log
        assert any(c.startswith("python setup.py build_ext --inplace") for c in calls)
        assert any("--require-gpu" in c for c in calls) == carried
        assert (tree / "wgan_ext" / "_C.abi3.so").read_text() == "built\n"
        assert "using the carried build" not in log and "all steps passed" in log
    rc, calls, *_ = run_check(tmp_path / "forced", GPU_CHECK_BUILD=1)
    assert rc == 0 and any("setup.py build_ext" in c for c in calls)
    assert not any("--require-gpu" in c for c in calls)


def test_a_build_whose_errors_crash_is_rebuilt_with_the_system_compiler(tmp_path):
    if not os.access("/usr/bin/g++", os.X_OK):
        pytest.skip("no /usr/bin/g++ here")
    rc, calls, _, log, _ = run_check(tmp_path, carried=False, FAKE_SMOKE_RC=1)
    assert rc == 0, log
    assert sum("setup.py build_ext" in c for c in calls) == 2
    assert "=== the extension is built with CXX=/usr/bin/g++" in log


def test_a_failing_build_stops_the_check(tmp_path):
    rc, calls, _, log, _ = run_check(tmp_path, carried=False, FAKE_BUILD_RC=1)
    assert rc == 1
    assert not any("pytest" in c or "bench_" in c for c in calls)


def test_a_failing_step_fails_the_check_and_the_benchmarks_still_run(tmp_path):
    rc, calls, brought, log, _ = run_check(tmp_path, FAKE_TESTS_RC=1)
    assert rc == 1
    assert "gpu_check: SOME STEPS FAILED (commit abc1234)" in log
    assert all(f"{b}-cuda.json" in brought for b in BENCHES)


def test_at_the_deadline_what_finished_is_kept_and_the_rest_is_reported_not_run(tmp_path):
    # bench_train writes its result as it goes, then runs past what is left of a short deadline
    rc, calls, brought, log, _ = run_check(tmp_path, GPU_CHECK_DEADLINE=8, FAKE_SLOW_BENCH="train")
    assert rc == 1
    assert "=== bench-train-cuda: stopped after" in log
    assert "train-cuda.json" in brought and "bench-cuda.md" in brought
    for later in ("train_compile", "fused_optim", "spectral_norm", "clip", "gradient_penalty"):
        assert f"=== bench-{later}-cuda: NOT RUN (deadline reached)" in log
        assert f"{later}-cuda.json" not in brought
    assert "=== profile-steps-cuda: NOT RUN (deadline reached)" in log
    assert not any(p.startswith(".") for p in brought), brought
    assert "SOME STEPS FAILED" in log


def test_a_gpu_the_sanitizer_does_not_support_is_reported_not_failed_and_a_sanitizer_error_fails(tmp_path):
    rc, _, _, log, _ = run_check(tmp_path / "unsupported", FAKE_SAN_UNSUPPORTED=1)
    assert rc == 0, log
    assert "=== compute-sanitizer does not support this machine's GPU" in log and "NOT CHECKED" in log
    assert "gpu_check: all steps passed, the sanitizers not run (commit abc1234)" in log
    rc, _, _, log, _ = run_check(tmp_path / "error", FAKE_SAN_RC=9)
    assert rc == 1 and "ERROR SUMMARY: 1 error" in log
    assert "gpu_check: SOME STEPS FAILED (commit abc1234)" in log and "NOT CHECKED" not in log
