"""Shared pieces of the benchmark scripts: environment facts, timing, copy bandwidth, result files.

Timing: on the CPU, torch.utils.benchmark's blocked_autorange (median and IQR over blocks); on CUDA, CUDA events
around repeated calls after a warm-up (median and IQR over repeats). Variants compared with each other can be
timed in alternating rounds instead (time_interleaved), so a drifting shared machine slows all of them alike. Results are written as JSON (environment,
settings, rows) and as a Markdown table headed by the device, torch version, commit, date and command line.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def git_commit() -> str:
    """Short commit of the checkout (+"-dirty" with uncommitted changes); $WGAN_EXT_COMMIT overrides."""
    if os.environ.get("WGAN_EXT_COMMIT"):
        return os.environ["WGAN_EXT_COMMIT"]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"{cpu_name()} ({torch.get_num_threads()} threads)"


def _repo_relative(arg: str) -> str:
    """A command-line argument as committed results should show it: paths inside the repository relative to it,
    other absolute paths (a machine's own folders, such as the GPU machine's output folder) as <DIR>/their name."""
    path = Path(arg)
    if path.is_absolute():
        try:
            return str(path.resolve().relative_to(ROOT))
        except ValueError:
            return f"<DIR>/{path.name}" if path.name else "<DIR>"
    return arg


def environment(device: str) -> dict:
    import wgan_ext

    return {
        "device": device,
        "device_name": device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": sys.version.split()[0],
        "commit": git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "wgan_ext_build": wgan_ext.build_info(),
        "time_scale": time_scale(),
        "command": " ".join([Path(sys.argv[0]).name] + [_repo_relative(a) for a in sys.argv[1:]]),
    }


def time_scale() -> float:
    """``$WGAN_EXT_BENCH_TIME_SCALE``: every timing window (``min_run_time``) is multiplied by it (default 1).
    ``scripts/gpu_check.sh`` shortens the windows so that every benchmark fits a lent GPU's minutes; the results
    record the factor (``env["time_scale"]``, and in the table's header when it is not 1)."""
    raw = os.environ.get("WGAN_EXT_BENCH_TIME_SCALE", "1")
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 100:
        raise SystemExit(f"WGAN_EXT_BENCH_TIME_SCALE must be a number in (0, 100], got {raw!r}")
    return value


def time_fn(fn, device: str, min_run_time: float = 1.0, warmup: int = 3) -> dict:
    """Median and IQR of one call of `fn`, in microseconds (over about min_run_time x time_scale() seconds)."""
    min_run_time *= time_scale()
    for _ in range(warmup):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
        # Calls per measurement: enough for ~1 ms, so event resolution does not matter.
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        once_ms = max(start.elapsed_time(end), 1e-3)
        calls = max(1, int(1.0 / once_ms))
        samples = []
        repeats = max(10, int(min_run_time * 1e3 / (once_ms * calls)))
        for _ in range(repeats):
            start.record()
            for _ in range(calls):
                fn()
            end.record()
            torch.cuda.synchronize()
            samples.append(start.elapsed_time(end) * 1e3 / calls)
        q = statistics.quantiles(samples, n=4)
        return {"median_us": statistics.median(samples), "iqr_us": q[2] - q[0], "measurements": len(samples)}
    from torch.utils.benchmark import Timer

    # Timer runs on 1 thread unless told: time on the threads the device row names (environment())
    m = Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads()).blocked_autorange(
        min_run_time=min_run_time)
    return {"median_us": m.median * 1e6, "iqr_us": m.iqr * 1e6, "measurements": len(m.times)}


def time_interleaved(fns: dict, device: str, min_run_time: float = 2.0, rounds: int = 15) -> dict:
    """Median and IQR (µs per call) of each of several functions, timed in alternating rounds.

    For comparisons on a shared, drifting machine: every round times a block of calls of each function in turn,
    so slow phases hit all variants alike. Returns {name: {"median_us", "iqr_us", "measurements"}}. The rounds
    take about min_run_time x time_scale() seconds together.
    """
    min_run_time *= time_scale()
    for fn in fns.values():
        fn()
        fn()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for fn in fns.values():
        fn()
    sync()
    once = max((time.perf_counter() - t0) / len(fns), 1e-7)
    calls = max(1, int(min_run_time / (rounds * len(fns) * once)))
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            sync()
            samples[name].append((time.perf_counter() - start) / calls * 1e6)
    out = {}
    for name, values in samples.items():
        q = statistics.quantiles(values, n=4)
        out[name] = {"median_us": statistics.median(values), "iqr_us": q[2] - q[0], "measurements": len(values)}
    return out


def events_per_call(fn, device: str) -> int:
    """Kernel launches (CUDA) or top-level operator calls (CPU) of one call of fn, from torch.profiler: on a GPU
    the launches bound what fusing ops can save where a step is launch-bound."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
    if device == "cuda":
        return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
    return sum(1 for e in prof.events() if e.cpu_parent is None and e.name.startswith(("aten::", "wgan_ext::")))


# ATen ops that launch no kernel: views, metadata, allocations (left out of count_compute_ops)
_NO_KERNEL = {"view", "t", "expand", "transpose", "detach", "_unsafe_view", "alias", "as_strided", "unsqueeze",
              "squeeze", "permute", "select", "slice", "reshape", "_reshape_alias", "empty", "empty_like",
              "empty_strided", "new_empty", "new_empty_strided", "lift_fresh", "size", "sym_size", "stride",
              "is_same_size"}


def count_compute_ops(fn) -> int:
    """ATen operator calls of one call of fn that compute something (views and allocations left out), backward
    included: on a GPU each is about one kernel launch."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket.__name__ not in _NO_KERNEL:
                Count.n += 1
            return func(*args, **(kwargs or {}))

    with Count():
        fn()
    return Count.n


def measure_copy_bandwidth(nbytes: int, device: str, min_run_time: float = 1.0) -> float:
    """Achieved bandwidth of dst.copy_(src) on `nbytes` of float32, in GB/s counting bytes read + written."""
    n = max(1, nbytes // 4)
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    t = time_fn(lambda: dst.copy_(src), device, min_run_time)
    return 2 * n * 4 / (t["median_us"] * 1e-6) / 1e9


def markdown_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """columns: (key, header, format spec); missing or None values print as "-"."""
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for key, _, spec in columns:
            value = row.get(key)
            cells.append("-" if value is None else format(value, spec))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(name: str, device: str, env: dict, settings: dict, rows: list[dict], table: str,
                  out_dir: Path) -> tuple[Path, Path]:
    """Writes <out_dir>/<name>-<device>.json and .md, and prints the table and the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{name}-{device}.json"
    md_path = out_dir / f"{name}-{device}.md"
    json_path.write_text(json.dumps({"env": env, "settings": settings, "rows": rows}, indent=2) + "\n")
    header = (f"Device: {env['device_name']} · torch {env['torch']} (CUDA {env['cuda']}) · commit {env['commit']} · "
              f"{env['date']}\n\nCommand: `{env['command']}`")
    if settings.get("quick"):
        header += "\n\n**quick (smoke run, not a measurement)**"
    if env.get("time_scale", 1) != 1:
        header += f"\n\nTiming windows × {env['time_scale']:g} (WGAN_EXT_BENCH_TIME_SCALE)"
    md_path.write_text(f"### {name} on {device}\n\n{header}\n\n{table}\n")
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}")
    return json_path, md_path


def run_cli(description: str, run_device, argv=None, add_arguments=None) -> int:
    """The benchmark scripts' command line: --device cpu|cuda|all, --quick, --out; calls
    run_device(device, quick, out_dir) for each device that is there. With ``add_arguments(parser)`` a script
    adds its own options, and run_device gets the parsed arguments as a fourth argument."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and short timing: a smoke run")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    for device in (["cpu", "cuda"] if args.device == "all" else [args.device]):
        if device == "cuda" and not torch.cuda.is_available():
            if args.device == "cuda":
                print("error: --device cuda but no CUDA device is visible", file=sys.stderr)
                return 1
            print("note: no CUDA device visible; CUDA rows not measured (not yet run on a GPU)")
            continue
        run_device(device, args.quick, args.out, *([args] if add_arguments is not None else []))
    return 0
