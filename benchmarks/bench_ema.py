"""The generator EMA on the mode-collapse benchmarks: sample quality of the raw generator and of its averages with
several decays, all from the same training runs (the averages do not change training).

Each run trains `wgan-train`'s default for its mode and dataset (plus --iters and --seed) with EMA copies of the
generator updated after every generator step (wgan_ext.train.ema.ModelEMA: decay min(d, (1+t)/(10+t))), then
evaluates the raw generator and every average with the PacGAN protocol (2,500 samples: modes captured, % high
quality within 3 std) and the exact W1 to the data. This is the measurement behind the --g-ema default.

    python benchmarks/bench_ema.py [--datasets ring,grid] [--seeds 3] [--iters 2000] [--decays 0.99,0.995,0.999]
    python benchmarks/bench_ema.py --quick        # a smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, environment, markdown_table, write_results  # noqa: E402


def run_one(mode: str, dataset: str, seed: int, iters: int, decays: list[float], quick: bool, folder: str) -> list:
    from wgan_ext.eval import N_TOY, toy_metrics
    from wgan_ext.train import Trainer, TrainConfig, resolve
    from wgan_ext.train.data import toy_distribution
    from wgan_ext.train.ema import ModelEMA

    small = dict(hidden=32, batch_size=16, n_critic=1) if quick else {}
    cfg = resolve(TrainConfig(lipschitz=mode, dataset=dataset, seed=seed, iters=iters, g_ema=0.0, device="cpu",
                              out=f"{folder}/{mode}-{dataset}-{seed}", progress=False, tensorboard=False,
                              plots=False, **small))
    trainer = Trainer(cfg)
    averages = {d: ModelEMA(trainer.generator, d) for d in decays}
    step = trainer.generator_step

    def generator_step():
        loss = step()
        for ema in averages.values():
            ema.update(trainer.iteration)
        return loss

    trainer.generator_step = generator_step
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    noise = torch.randn(N_TOY, cfg.nz, generator=torch.Generator().manual_seed(seed + 5))
    dist = toy_distribution(dataset)
    rows = []
    for name, g in [("raw", trainer.generator)] + [(f"ema {d:g}", e.model) for d, e in averages.items()]:
        g.eval()
        with torch.no_grad():
            m = toy_metrics(g(noise).float(), dist, seed)
        rows.append({"mode": mode, "dataset": dataset, "seed": seed, "iters": iters, "generator": name,
                     "seconds": seconds, "modes": m["modes"], "hq": m["hq"], "w1": m["w1"],
                     "w1_floor": m["w1_floor"]})
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()}), flush=True)
    return rows


def _mean_std(values: list[float]) -> str:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.3g} ± {std:.2g}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: tiny models, 4 iterations, 1 seed")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--iters", type=int, default=2000)
    p.add_argument("--modes", default="gp")
    p.add_argument("--datasets", default="ring,grid")
    p.add_argument("--decays", default="0.99,0.995,0.999")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    decays = [float(d) for d in args.decays.split(",")]
    seeds = 1 if args.quick else args.seeds
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for ds in args.datasets.split(","):
            for mode in args.modes.split(","):
                for seed in range(seeds):
                    rows += run_one(mode, ds, seed, 4 if args.quick else args.iters, decays, args.quick, folder)
    summary = []
    for ds in args.datasets.split(","):
        for mode in args.modes.split(","):
            for name in ["raw"] + [f"ema {d:g}" for d in decays]:
                rs = [r for r in rows if r["dataset"] == ds and r["mode"] == mode and r["generator"] == name]
                summary.append({"dataset": ds, "mode": mode, "generator": name, "seeds": len(rs),
                                "modes": _mean_std([r["modes"] for r in rs]),
                                "hq": _mean_std([100 * r["hq"] for r in rs]),
                                "w1": _mean_std([r["w1"] for r in rs]),
                                "floor": _mean_std([r["w1_floor"] for r in rs])})
    table = markdown_table(summary, [("dataset", "data", "s"), ("mode", "mode", "s"), ("generator", "samples of", "s"),
                                     ("seeds", "seeds", "d"), ("modes", "modes captured", "s"),
                                     ("hq", "HQ samples %", "s"), ("w1", "exact W1", "s"),
                                     ("floor", "W1 real vs real", "s")])
    settings = {"quick": args.quick, "seeds": seeds, "iters": args.iters, "decays": decays, "modes": args.modes,
                "datasets": args.datasets}
    write_results("ema", "cpu", environment("cpu"), settings, rows, table, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
