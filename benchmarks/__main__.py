"""All the speed benchmarks in one command, then benchmarks/RESULTS.md from their tables.

    python -m benchmarks [--device cpu|cuda|all] [--quick] [--compile] [--only clip,train,...] [--out DIR]
    python -m benchmarks --compose-only          # only rebuild RESULTS.md from the tables already written

Runs, each in its own process, the per-op benchmarks (clip, spectral_norm, gradient_penalty, fused_optim where the
script exists) and the end-to-end training throughput (train), each against pure PyTorch in the same run, on the
CPU and on CUDA when a GPU is visible. Every script writes <name>-<device>.json and .md under --out (default
benchmarks/results). RESULTS.md (beside --out's folder for the default, else inside --out) is then rebuilt from all
the tables found there, so CUDA tables written on a GPU machine stay in it when the CPU rows are refreshed here.
The sample-quality benchmarks (bench_quality.py, an hour of training; bench_ema.py) are not run from here; their
tables, when present, are included.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["clip", "spectral_norm", "gradient_penalty", "fused_optim", "train"]
TITLES = {"clip": "Weight clipping (per op)", "spectral_norm": "Spectral norm (per op)",
          "gradient_penalty": "Gradient penalty (per op)", "fused_optim": "Fused optimizer step with clip",
          "train": "End-to-end training throughput",
          "train_compile": "End-to-end training throughput with torch.compile loops (bench_train.py --compile)",
          "quality": "Sample quality (bench_quality.py)",
          "ema": "Generator EMA (bench_ema.py)"}


def available() -> list[str]:
    return [b for b in BENCHMARKS if (HERE / f"bench_{b}.py").exists()]


def compose(out: Path, results: Path) -> str:
    """RESULTS.md from the Markdown tables under `out`."""
    parts = ["# Benchmark results",
             "",
             "Written by `python -m benchmarks` from the tables in "
             f"`{out.relative_to(results.parent) if out.is_relative_to(results.parent) else out}/`; each table "
             "names the device, torch version, commit and command that produced it. Ratios compare variants "
             "measured in the same run. Tables marked quick are smoke runs, not measurements."]
    for name in BENCHMARKS + ["train_compile", "quality", "ema"]:
        tables = sorted(out.glob(f"{name}-*.md"))
        if not tables:
            continue
        parts += ["", f"## {TITLES[name]}"]
        for t in tables:
            text = t.read_text().strip()
            lines = text.splitlines()
            if lines and lines[0].startswith("#"):
                lines[0] = "###" + lines[0].lstrip("#")
            parts += ["", "\n".join(lines)]
    notes = sorted(out.glob("gpu_check-*.md"))
    if notes:
        parts += ["", "## GPU check notes", ""] + [f"- [{n.name}]({n.relative_to(results.parent)})"
                                                    if n.is_relative_to(results.parent) else f"- {n}" for n in notes]
    return "\n".join(parts) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Run the speed benchmarks and rebuild RESULTS.md")
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and short timing: a smoke run")
    parser.add_argument("--compile", action="store_true", help="add torch.compile variants to the training benchmark")
    parser.add_argument("--only", default="", help="comma-separated subset of: " + ", ".join(BENCHMARKS))
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--compose-only", action="store_true",
                        help="run nothing: only rebuild RESULTS.md from the tables under --out")
    args = parser.parse_args(argv)
    chosen = [] if args.compose_only else available()
    if args.only:
        wanted = [b.strip() for b in args.only.split(",") if b.strip()]
        unknown = [b for b in wanted if b not in chosen]
        if unknown:
            parser.error(f"--only: unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(chosen)}")
        chosen = wanted
    failed = []
    for name in chosen:
        cmd = [sys.executable, str(HERE / f"bench_{name}.py"), "--device", args.device, "--out", str(args.out)]
        cmd += ["--quick"] if args.quick else []
        cmd += ["--compile"] if args.compile and name == "train" else []
        print(f"[benchmarks] {' '.join(cmd[1:])}", flush=True)
        if subprocess.run(cmd).returncode != 0:
            failed.append(name)
    args.out.mkdir(parents=True, exist_ok=True)
    results = HERE / "RESULTS.md" if args.out.resolve() == (HERE / "results").resolve() else args.out / "RESULTS.md"
    results.write_text(compose(args.out.resolve(), results.resolve()))
    print(f"[benchmarks] wrote {results}")
    if failed:
        print(f"[benchmarks] failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
