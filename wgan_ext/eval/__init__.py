"""Evaluation of WGAN runs: the application side that judges samples, apart from the library and the trainer.

    toy.py      exact Wasserstein-1 (POT) and mode coverage on 2-D toy data
    images.py   digits: a Fréchet classifier distance and class coverage (offline), FID where torchmetrics can
    runs.py     evaluate_samples / evaluate_run (a checkpoint's metrics, the W estimate's correlation with
                quality over a run) and the wgan-eval command (also: python -m wgan_ext.eval)
"""

from .runs import QUALITY, evaluate_run, evaluate_samples, main, quality_key, spearman, w_estimate_at
from .toy import N_TOY, mode_coverage, toy_metrics, wasserstein1

__all__ = ["N_TOY", "QUALITY", "evaluate_run", "evaluate_samples", "main", "mode_coverage", "quality_key",
           "spearman", "toy_metrics", "w_estimate_at", "wasserstein1"]
