"""Sample quality of the trainer's three modes on the mode-collapse benchmarks, beside the published results.

    python benchmarks/bench_quality.py                       # {clip, gp, sn} x {ring, grid} x 5 seeds, and digits
    python benchmarks/bench_quality.py --seeds 3 --iters 2000 --datasets ring,grid   # shorter runs
    python benchmarks/bench_quality.py --quick               # a smoke run (tiny models, a few iterations)

Each run trains with `wgan-train`'s defaults for its mode and dataset (the iterations too, unless --iters is given;
plus --seed) and evaluates every iters/10 generator iterations (eval.jsonl): ring and grid with the VEEGAN/PacGAN
protocol (2,500 samples; modes captured and % high-quality samples within 3 std of a mode) and the exact W1 to the
data beside the real-vs-real floor; digits with the locally trained classifier (Fréchet classifier distance, classes
covered, class KL). The Spearman correlation between the critic's W estimate and the quality metric is taken over
each run's evaluations.
Writes quality-cpu.json and quality-cpu.md (mean ± std over seeds; --name NAME: NAME-cpu.*) under --out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, environment, markdown_table  # noqa: E402

PUBLISHED = [  # (dataset, method, modes, HQ %) from the papers, as collected in the project's reference notes
    ("ring", "GAN (VEEGAN paper)", 1.0, 99.3), ("ring", "Unrolled GAN", 7.6, 35.6), ("ring", "VEEGAN", 8.0, 52.9),
    ("ring", "WGAN-GP (GDPP paper, Table 1)", 6.8, 59.6), ("ring", "PacGAN4", 7.8, 95.9),
    ("grid", "GAN (VEEGAN paper)", 3.3, 0.5), ("grid", "Unrolled GAN", 23.6, 16.0), ("grid", "VEEGAN", 24.6, 40.0),
    ("grid", "WGAN-GP (GDPP paper, Table 1)", 24.2, 28.7), ("grid", "PacGAN4", 24.8, 93.6),
]


def run_one(mode: str, dataset: str, seed: int, iters: int | None, quick: bool, device: str, folder: str) -> dict:
    from wgan_ext.train.config import TrainConfig, resolve
    from wgan_ext.eval import quality_key, spearman, w_estimate_at
    from wgan_ext.train import Trainer

    small = dict(hidden=32, batch_size=16, n_critic=1) if quick else {}
    cfg = resolve(TrainConfig(lipschitz=mode, dataset=dataset, seed=seed, iters=iters,  # None: wgan-train's default
                              out=f"{folder}/{mode}-{dataset}-{seed}",
                              device=device, progress=False, tensorboard=False, plots=False, **small))
    cfg.eval_every = max(1, cfg.iters // 10)
    t0 = time.perf_counter()
    trainer = Trainer(cfg)
    trainer.train()
    with open(f"{cfg.out}/eval.jsonl") as f:
        evals = [json.loads(line) for line in f]
    with open(f"{cfg.out}/metrics.jsonl") as f:
        metrics = [json.loads(line) for line in f]
    key = quality_key(dataset)
    its = [e["iteration"] for e in evals]
    row = {"mode": mode, "dataset": dataset, "seed": seed, "iters": cfg.iters, "seconds": time.perf_counter() - t0,
           "critic_activation": cfg.critic_activation, "lr_decay": cfg.lr_decay,
           **{k: v for k, v in evals[-1].items() if k != "iteration"},
           "spearman": spearman(w_estimate_at(metrics, its), [e[key] for e in evals])}
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    return row


def _mean_std(values: list[float]) -> str:
    values = [v for v in values if v == v]  # NaN-free
    if not values:
        return "-"
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.3g} ± {std:.2g}"


def summarize(rows: list[dict]) -> str:
    out = []
    toy = [r for r in rows if r["dataset"] in ("ring", "grid")]
    if toy:
        lines = []
        for ds in ("ring", "grid"):
            for mode in ("clip", "gp", "sn"):
                rs = [r for r in toy if r["dataset"] == ds and r["mode"] == mode]
                if rs:
                    lines.append({"dataset": ds, "method": f"wgan_ext {mode} ({len(rs)} seeds)",
                                  "modes": _mean_std([r["modes"] for r in rs]),
                                  "hq": _mean_std([100 * r["hq"] for r in rs]),
                                  "w1": _mean_std([r["w1"] for r in rs]),
                                  "floor": _mean_std([r["w1_floor"] for r in rs]),
                                  "rho": _mean_std([r["spearman"] for r in rs])})
            for d, method, modes, hq in PUBLISHED:
                if d == ds:
                    lines.append({"dataset": ds, "method": f"published: {method}", "modes": f"{modes:g}",
                                  "hq": f"{hq:g}"})
        out.append(markdown_table(lines, [("dataset", "data", "s"), ("method", "method", "s"),
                                          ("modes", "modes captured", "s"), ("hq", "HQ samples %", "s"),
                                          ("w1", "exact W1", "s"), ("floor", "W1 real vs real", "s"),
                                          ("rho", "Spearman(W estimate, W1)", "s")]))
    digits = [r for r in rows if r["dataset"] == "digits"]
    if digits:
        lines = []
        for mode in ("clip", "gp", "sn"):
            rs = [r for r in digits if r["mode"] == mode]
            if rs:
                lines.append({"method": f"wgan_ext {mode} ({len(rs)} seeds)",
                              "fcd": _mean_std([r["fcd"] for r in rs]),
                              "classes": _mean_std([r["classes_covered"] for r in rs]),
                              "kl": _mean_std([r["class_kl"] for r in rs]),
                              "rho": _mean_std([r["spearman"] for r in rs])})
        out.append(markdown_table(lines, [("method", "digits", "s"), ("fcd", "Fréchet classifier distance", "s"),
                                          ("classes", "classes covered", "s"), ("kl", "class KL", "s"),
                                          ("rho", "Spearman(W estimate, FCD)", "s")]))
    return "\n\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: tiny models, 4 iterations, 1 seed")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--iters", type=int, default=None,
                   help="generator iterations per toy run (default: wgan-train's for the dataset, 6000 on ring "
                        "and grid)")
    p.add_argument("--digits-iters", type=int, default=3000, help="generator iterations per digits run")
    p.add_argument("--modes", default="clip,gp,sn")
    p.add_argument("--datasets", default="ring,grid,digits")
    p.add_argument("--device", default="cpu")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs in parallel, each in its own process with (CPU threads / jobs) torch threads")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--name", default="quality",
                   help="results file name before -<device>.md/.json (a partial rerun beside the full table)")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")
    seeds = 1 if args.quick else args.seeds
    env = environment(args.device)
    settings = {"quick": args.quick, "seeds": seeds, "jobs": args.jobs, "iters": args.iters,
                "digits_iters": args.digits_iters, "modes": args.modes, "datasets": args.datasets}
    with tempfile.TemporaryDirectory() as folder:
        runs = [(mode, ds, seed, 4 if args.quick else (args.digits_iters if ds == "digits" else args.iters),
                 args.quick, args.device, folder)
                for ds in args.datasets.split(",") for mode in args.modes.split(",") for seed in range(seeds)]
        rows, md = [], ""
        threads = max(1, torch.get_num_threads() // args.jobs)
        pool = (ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"),
                                    initializer=torch.set_num_threads, initargs=(threads,))
                if args.jobs > 1 else contextlib.nullcontext())
        with pool:
            mapper = pool.map if args.jobs > 1 else map
            for row in mapper(run_one, *zip(*runs)):  # results in the order of `runs`
                rows.append(row)
                md = write(args, env, settings, rows, len(runs))
    print(md)
    return 0


def write(args, env: dict, settings: dict, rows: list[dict], total: int) -> str:
    """The JSON and Markdown results of the runs finished so far (rewritten after each run, so an interrupted
    benchmark leaves what it measured, marked partial). Returns the Markdown."""
    args.out.mkdir(parents=True, exist_ok=True)
    settings = {**settings, "runs_finished": len(rows), "runs_planned": total}
    (args.out / f"{args.name}-{args.device}.json").write_text(json.dumps({"env": env, "settings": settings,
                                                                        "rows": rows}, indent=2) + "\n")
    header = (f"Device: {env['device_name']} · torch {env['torch']} · commit {env['commit']} · {env['date']}\n\n"
              f"Command: `{env['command']}`")
    if args.quick:
        header += "\n\n**quick (smoke run, not a measurement)**"
    if len(rows) < total:
        header += f"\n\n**partial: {len(rows)} of {total} runs finished**"
    md = f"### sample quality on {args.device}\n\n{header}\n\n{summarize(rows)}\n"
    (args.out / f"{args.name}-{args.device}.md").write_text(md)
    return md


if __name__ == "__main__":
    sys.exit(main())
