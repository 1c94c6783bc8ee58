"""Evaluation of WGAN runs and checkpoints, and the paper's claim that the critic's estimate tracks sample quality.
The metrics themselves: toy.py (exact W1, mode coverage), images.py (digits: Fréchet classifier distance).

    evaluate_samples(fake, dataset, ...)        the metrics of a dataset's kind (toy or digits)
    evaluate_run(run_dir)                       metrics of the last checkpoint, and the Spearman correlation between
                                                the logged W estimate and the quality metric over the run (from
                                                eval.jsonl, written by the trainer with --eval-every N)
    wgan-eval RUN_DIR_OR_CHECKPOINT             prints and writes eval.json (console script)
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

from ..train.data import TOY_DATASETS, toy_distribution
from .toy import N_TOY, toy_metrics

QUALITY = {"toy": "w1", "digits": "fcd"}  # the quality metric (lower is better) correlated with the W estimate


def evaluate_samples(fake: torch.Tensor, dataset: str, seed: int = 0) -> dict:
    """The metrics for samples of `dataset`: toy metrics for 2-D data, classifier metrics for digits."""
    if dataset in TOY_DATASETS:
        return toy_metrics(fake, toy_distribution(dataset), seed)
    if dataset == "digits":
        from .images import image_metrics

        return image_metrics(fake)
    raise ValueError(f"no offline metric for {dataset!r}: toy data ({', '.join(TOY_DATASETS)}) and digits have "
                     f"one; for other images see wgan_ext.eval.images.inception_fid (needs torchmetrics and Inception "
                     f"weights)")


def quality_key(dataset: str) -> str:
    return QUALITY["toy"] if dataset in TOY_DATASETS else QUALITY.get(dataset, "fcd")


def spearman(a, b) -> float:
    """Spearman's rank correlation (NaN when either series is constant or shorter than 3)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) != len(b):
        raise ValueError(f"series of different lengths: {len(a)} and {len(b)}")
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def _read_jsonl(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def w_estimate_at(metrics: list[dict], iterations: list[int], window: int = 21) -> list[float]:
    """The logged W estimate around each iteration: the median over `window` generator iterations ending there
    (the raw per-iteration value is noisy; the paper plots it median-filtered)."""
    by_it = {m["iteration"]: m["w_estimate"] for m in metrics}
    out = []
    for it in iterations:
        values = [by_it[i] for i in range(max(1, it - window + 1), it + 1) if i in by_it]
        out.append(float(np.median(values)) if values else float("nan"))
    return out


def evaluate_run(path: str, n: int | None = None, seed: int = 0, device: str = "cpu", raw: bool = False) -> dict:
    """Metrics of a run's last checkpoint (or of a checkpoint file) and, for a run folder with eval.jsonl, the
    correlation between the critic's W estimate and the quality metric over the run."""
    from ..train.generate import generate, load_generator

    _, cfg = load_generator(path)
    dataset = cfg["dataset"]
    from ..train.checkpoint import load_checkpoint

    state = load_checkpoint(path)
    iteration = state["iteration"]
    sampled = "generator" if (raw or state.get("generator_ema") is None) else "generator EMA"
    n = n or (N_TOY if dataset in TOY_DATASETS else 1000)
    fake = generate(path, n, seed=seed + 7, device=device, raw=raw)
    result = {"checkpoint_iteration": iteration, "dataset": dataset, "lipschitz": cfg["lipschitz"], "sampled": sampled,
              "metrics": evaluate_samples(fake, dataset, seed)}
    run = path if os.path.isdir(path) else None
    if run:
        history = _read_jsonl(os.path.join(run, "eval.jsonl"))
        key = quality_key(dataset)
        if len(history) >= 3:
            its = [h["iteration"] for h in history]
            w = w_estimate_at(_read_jsonl(os.path.join(run, "metrics.jsonl")), its)
            q = [h[key] for h in history]
            result["correlation"] = {"quality_metric": key, "points": len(its), "spearman": spearman(w, q),
                                     "iterations": its, "w_estimate": w, key: q}
            _plot_correlation(its, w, q, key, os.path.join(run, "plots", "w_vs_quality.png"))
        elif history:
            result["correlation"] = {"quality_metric": key, "points": len(history),
                                     "note": "fewer than 3 evaluations in eval.jsonl: train with --eval-every N"}
    return result


def _plot_correlation(its, w, q, key, path) -> None:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return
    from ..train.plots import _save_figure

    fig = Figure(figsize=(7, 3.8), layout="constrained")
    ax = fig.subplots()
    ax.plot(its, w, color="tab:blue", marker="o", ms=3, label="W estimate (median of 21 iterations)")
    ax.set_xlabel("generator iterations")
    ax.set_ylabel("W estimate  E[f(real)] − E[f(fake)]", color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(its, q, color="tab:red", marker="s", ms=3, label=key)
    ax2.set_ylabel({"w1": "exact W1 to the data", "fcd": "Fréchet classifier distance"}.get(key, key),
                   color="tab:red")
    rho = spearman(w, q)
    ax.set_title(f"critic estimate vs sample quality (Spearman {rho:.3f})")
    _save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="wgan-eval", description="Evaluate a wgan-train run or checkpoint: exact W1 "
                                "and mode coverage (toy data), Fréchet classifier distance and class coverage "
                                "(digits), and the correlation of the W estimate with quality over the run.")
    p.add_argument("path", help="a run folder (uses checkpoints/last.pt and eval.jsonl) or a checkpoint file")
    p.add_argument("-n", type=int, default=None, help=f"samples to evaluate (default {N_TOY} for toy data, 1000 "
                                                      "for digits)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise and of the real reference samples")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("-o", "--output", default=None, help="JSON file to write (default RUN_DIR/eval.json)")
    p.add_argument("--raw", action="store_true", help="evaluate the generator itself, not its EMA (runs with --g-ema)")
    args = p.parse_args(argv)
    from ..train.checkpoint import CheckpointError

    try:
        result = evaluate_run(args.path, n=args.n, seed=args.seed, device=args.device, raw=args.raw)
    except (CheckpointError, ValueError, ImportError) as e:
        print(f"wgan-eval: error: {e}", file=sys.stderr)
        return 2
    out = args.output or (os.path.join(args.path, "eval.json") if os.path.isdir(args.path) else None)
    if out:
        with open(out, "w") as f:
            json.dump(result, f, indent=2)
    m = result["metrics"]
    lines = [f"{result['dataset']}, {result['lipschitz']}, checkpoint at iteration {result['checkpoint_iteration']} "
             f"({result['sampled']})"]
    for k, v in m.items():
        if not isinstance(v, list):
            lines.append(f"  {k:16s} {v:.4f}" if isinstance(v, float) else f"  {k:16s} {v}")
    corr = result.get("correlation")
    if corr and "spearman" in corr:
        lines.append(f"  Spearman(W estimate, {corr['quality_metric']}) = {corr['spearman']:.3f} over "
                     f"{corr['points']} evaluations")
    elif corr:
        lines.append(f"  {corr['note']}")
    if out:
        lines.append(f"  written to {out}")
    print("\n".join(lines))
    return 0

