"""Evaluation of WGAN runs: exact Wasserstein-1 and mode coverage on toy data, a Fréchet classifier distance and
class coverage on digits, and the paper's claim that the critic's estimate tracks sample quality.

    wasserstein1(x, y)                          exact W1 between two point clouds (POT's ot.emd2, uniform weights,
                                                Euclidean cost)
    mode_coverage(samples, centers, std)        modes captured and fraction of high-quality samples (VEEGAN/PacGAN:
                                                a sample is HQ within 3 std of its nearest mode; a mode is captured
                                                when it is the nearest mode of at least one HQ sample)
    toy_metrics(fake, dist, seed)               both, plus the real-vs-real W1 floor at the same n
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

from .data import TOY_DATASETS, ToyDistribution, toy_distribution

N_TOY = 2500  # samples per toy evaluation (the mode-collapse protocol's)
QUALITY = {"toy": "w1", "digits": "fcd"}
_FLOORS: dict = {}  # the quality metric (lower is better) correlated with the W estimate


def _points(x, name: str) -> np.ndarray:
    a = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 1:
        raise ValueError(f"{name} must be a (n, d) array of points with n >= 1, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} has non-finite values")
    return a


def wasserstein1(x, y) -> float:
    """Exact W1 between the empirical distributions of x (n, d) and y (m, d): uniform weights, Euclidean cost."""
    try:
        import ot
    except ImportError as e:
        raise ImportError("the exact Wasserstein distance needs POT: pip install pot") from e
    a, b = _points(x, "x"), _points(y, "y")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {a.shape[1]} and {b.shape[1]}")
    from scipy.spatial.distance import cdist

    cost = cdist(a, b)  # direct differences: ot.dist's |a|^2 + |b|^2 - 2ab form leaves ~1e-9 where points coincide
    wa, wb = np.full(len(a), 1.0 / len(a)), np.full(len(b), 1.0 / len(b))
    return float(ot.emd2(wa, wb, cost, numItermax=10_000_000))


def mode_coverage(samples, centers, std: float, k: float = 3.0) -> dict:
    """Modes captured and the fraction of high-quality samples (within k·std of the nearest centre)."""
    s, c = _points(samples, "samples"), _points(centers, "centers")
    if not std > 0:
        raise ValueError(f"std must be > 0, got {std}")
    d = np.sqrt(((s[:, None, :] - c[None, :, :]) ** 2).sum(-1))
    nearest = d.argmin(1)
    hq = d[np.arange(len(s)), nearest] <= k * std
    per_mode = np.bincount(nearest[hq], minlength=len(c))
    return {"modes": int((per_mode > 0).sum()), "n_modes": len(c), "hq": float(hq.mean()),
            "hq_per_mode": per_mode.tolist()}


def toy_metrics(fake, dist: ToyDistribution, seed: int = 0) -> dict:
    """W1 to a fresh real sample of the same size, the real-vs-real floor, and mode coverage (mixtures)."""
    n = len(fake)
    g = torch.Generator().manual_seed(seed)
    real_a, real_b = dist.sample(n, g), dist.sample(n, g)
    key = (dist.name, n, seed)
    if key not in _FLOORS:  # the same reference samples every time: compute the floor once per process
        _FLOORS[key] = wasserstein1(real_b, real_a)
    out = {"n": n, "w1": wasserstein1(fake, real_a), "w1_floor": _FLOORS[key]}
    if dist.centers is not None:
        out.update(mode_coverage(fake, dist.centers, dist.std))
    return out


def evaluate_samples(fake: torch.Tensor, dataset: str, seed: int = 0) -> dict:
    """The metrics for samples of `dataset`: toy metrics for 2-D data, classifier metrics for digits."""
    if dataset in TOY_DATASETS:
        return toy_metrics(fake, toy_distribution(dataset), seed)
    if dataset == "digits":
        from .eval_images import image_metrics

        return image_metrics(fake)
    raise ValueError(f"no offline metric for {dataset!r}: toy data ({', '.join(TOY_DATASETS)}) and digits have "
                     f"one; for other images see eval_images.inception_fid (needs torchmetrics and Inception "
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


def evaluate_run(path: str, n: int | None = None, seed: int = 0, device: str = "cpu") -> dict:
    """Metrics of a run's last checkpoint (or of a checkpoint file) and, for a run folder with eval.jsonl, the
    correlation between the critic's W estimate and the quality metric over the run."""
    from .generate import generate, load_generator

    _, cfg = load_generator(path)
    dataset = cfg["dataset"]
    from .checkpoint import load_checkpoint

    iteration = load_checkpoint(path)["iteration"]
    n = n or (N_TOY if dataset in TOY_DATASETS else 1000)
    fake = generate(path, n, seed=seed + 7, device=device)
    result = {"checkpoint_iteration": iteration, "dataset": dataset, "lipschitz": cfg["lipschitz"],
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
    from .plots import _save_figure

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
    args = p.parse_args(argv)
    from .checkpoint import CheckpointError

    try:
        result = evaluate_run(args.path, n=args.n, seed=args.seed, device=args.device)
    except (CheckpointError, ValueError, ImportError) as e:
        print(f"wgan-eval: error: {e}", file=sys.stderr)
        return 2
    out = args.output or (os.path.join(args.path, "eval.json") if os.path.isdir(args.path) else None)
    if out:
        with open(out, "w") as f:
            json.dump(result, f, indent=2)
    m = result["metrics"]
    lines = [f"{result['dataset']}, {result['lipschitz']}, checkpoint at iteration {result['checkpoint_iteration']}"]
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


if __name__ == "__main__":
    sys.exit(main())
