"""Two builds of wgan_ext, the same benchmarks, one run: is a change to the extension's build speed-neutral?

    python benchmarks/compare_builds.py --before DIR --after DIR [--benchmarks clip,fused_optim,...] [--rounds 3]
                                        [--match AFTER=BEFORE ...] [--name STEM]

DIR is a package root (a folder holding wgan_ext/ with its compiled _C), e.g. a `git archive` of the old commit with
its build copied in. Each round runs every benchmark script (`bench_<name>.py --device cpu`) once per build,
alternating the order from round to round so that drift in the machine's speed falls on both. For every row and
every time it reports (median, forward, SN overhead ...), the table gives the median over rounds of each build's
value and their ratio: the rows of the compiled op (`fused`, `ours`, `clipper`, `wgan_ext` ...) compare the builds,
the pure-PyTorch rows are the same code in both and show the noise. `--match clipper-flat=clipper` also compares
the after build's `clipper-flat` rows with the before build's `clipper` rows of the same case (a variant the old
build does not have, against what it ran instead). Writes STEM-cpu.json and .md (default build_compare) under --out
(default benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import device_name, git_commit  # noqa: E402

ID_KEYS_SKIP = {"iqr_us"}


def row_key(row: dict) -> tuple:
    """What identifies a row: its text fields (case, variant, layer ...), in order."""
    return tuple((k, v) for k, v in row.items() if isinstance(v, str) and k not in ID_KEYS_SKIP)


def run_once(root: Path, bench: str, out: Path) -> list[dict]:
    env = dict(os.environ, PYTHONPATH=str(root))
    cmd = [sys.executable, str(HERE / f"bench_{bench}.py"), "--device", "cpu", "--out", str(out)]
    subprocess.run(cmd, env=env, check=True, cwd=tempfile.gettempdir(), stdout=subprocess.DEVNULL)
    return json.loads((out / f"{bench}-cpu.json").read_text())["rows"]


def matched_variants(pairs: list[str]) -> dict[str, list[str]]:
    """--match AFTER=BEFORE pairs as {before variant: [after variants compared with it]}."""
    out: dict[str, list[str]] = {}
    for pair in pairs:
        after, sep, before = pair.partition("=")
        if not sep or not after or not before:
            raise SystemExit(f"--match takes AFTER=BEFORE (two variant names), got {pair!r}")
        out.setdefault(before, []).append(after)
    return out


def keys_of(row: dict, side: str, matched: dict[str, list[str]]) -> list[tuple]:
    """The identities a row's times are filed under: its own, and on the before side, for a variant named in
    --match, the identity of each after-build variant it stands against (labelled "after <- before")."""
    variant = row.get("variant")
    if side == "before":
        labels = [f"{after} <- {variant}" for after in matched.get(variant, [])]
    else:
        labels = [f"{variant} <- {before}" for before, afters in matched.items() if variant in afters]
    return [row_key(row)] + [row_key(dict(row, variant=label)) for label in labels]


def build_of(root: Path) -> dict:
    code = "import json; from wgan_ext import _ops; print(json.dumps(_ops.build_info()))"
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(root)),
                         cwd=tempfile.gettempdir(), check=True, capture_output=True, text=True).stdout
    info = json.loads(out)
    if not info:
        raise SystemExit(f"{root}: the compiled library does not load there")
    return info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--after", type=Path, required=True)
    parser.add_argument("--benchmarks", default="clip,fused_optim,gradient_penalty,spectral_norm")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--label-before", default="before")
    parser.add_argument("--label-after", default="after")
    parser.add_argument("--match", action="append", default=[], metavar="AFTER=BEFORE",
                        help="also compare the after build's variant AFTER with the before build's BEFORE")
    parser.add_argument("--name", default="build_compare", help="stem of the result files")
    args = parser.parse_args(argv)
    matched = matched_variants(args.match)
    builds = {"before": build_of(args.before), "after": build_of(args.after)}
    roots = {"before": args.before, "after": args.after}
    benches = [b for b in args.benchmarks.split(",") if b]
    medians: dict[tuple, dict[str, list[float]]] = {}
    order: list[tuple] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for bench in benches:
                sides = ["before", "after"] if r % 2 == 0 else ["after", "before"]
                for side in sides:
                    out = Path(tmp) / f"{side}-{bench}-{r}"
                    out.mkdir()
                    print(f"round {r + 1}/{args.rounds}: {bench} ({side})", file=sys.stderr, flush=True)
                    for row in run_once(roots[side], bench, out):
                        for metric, value in row.items():
                            # every time the row measured (median_us, or forward_us, sn_overhead_us ...)
                            if not metric.endswith("_us") or metric in ID_KEYS_SKIP or value is None:
                                continue
                            for identity in keys_of(row, side, matched):
                                key = (bench, *identity, ("metric", metric.removesuffix("_us")))
                                if key not in medians:
                                    medians[key] = {"before": [], "after": []}
                                    order.append(key)
                                medians[key][side].append(value)
    rows = []
    for key in order:
        m = medians[key]
        if not m["before"] or not m["after"]:
            continue
        before, after = statistics.median(m["before"]), statistics.median(m["after"])
        rows.append({"benchmark": key[0], "row": " · ".join(str(v) for _, v in key[1:]),
                     "before_us": before, "after_us": after, "before_over_after": before / after})
    import datetime

    import torch

    env = {"device": "cpu", "device_name": device_name("cpu"), "torch": torch.__version__,
           "python": sys.version.split()[0], "commit": git_commit(),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           # the two package roots are folders of this machine: named by their labels
           "command": f"compare_builds.py --before <{args.label_before}> --after <{args.label_after}> "
                      f"--benchmarks {','.join(benches)} --rounds {args.rounds}"
                      + "".join(f" --match {m}" for m in args.match)
                      + (f" --name {args.name}" if args.name != "build_compare" else "")}
    settings = {"rounds": args.rounds, "benchmarks": benches, "labels": [args.label_before, args.label_after],
                "builds": builds}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}-cpu.json").write_text(
        json.dumps({"env": env, "settings": settings, "rows": rows}, indent=2) + "\n")
    lines = [f"### {args.label_before} against {args.label_after}, on cpu", "",
             f"Device: {env['device_name']} · torch {env['torch']} · commit {env['commit']} · {env['date']}", "",
             f"Builds: before = {builds['before']}; after = {builds['after']}. Each row: the median over "
             f"{args.rounds} alternating rounds of each build's median; before/after > 1: the new build is faster.",
             "", "| benchmark | row | before µs | after µs | before/after |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['benchmark']} | {row['row']} | {row['before_us']:.1f} | {row['after_us']:.1f} | "
                     f"{row['before_over_after']:.2f} |")
    (args.out / f"{args.name}-cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
