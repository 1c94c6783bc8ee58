"""Sample quality on 2-D toy data: the exact Wasserstein-1 distance and mode coverage.

    wasserstein1(x, y)                          exact W1 between two point clouds (POT's ot.emd2, uniform weights,
                                                Euclidean cost)
    mode_coverage(samples, centers, std)        modes captured and fraction of high-quality samples (VEEGAN/PacGAN:
                                                a sample is HQ within 3 std of its nearest mode; a mode is captured
                                                when it is the nearest mode of at least one HQ sample)
    toy_metrics(fake, dist, seed)               both, plus the real-vs-real W1 floor at the same n
"""

from __future__ import annotations

import numpy as np
import torch

from ..train.data import ToyDistribution

N_TOY = 2500  # samples per toy evaluation (the mode-collapse protocol's)
_FLOORS: dict = {}  # the real-vs-real W1 per (dataset, n, seed), computed once per process


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
