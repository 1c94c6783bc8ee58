"""Every public command and import of the package works as installed: the console scripts, the python -m forms,
and the names users import (the drop-ins from wgan_ext, the trainer and evaluation from their packages)."""

import os
import subprocess
import sys

import pytest

BIN = os.path.dirname(sys.executable)


def run(*cmd):
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=120, cwd=os.path.expanduser("~"))


@pytest.mark.parametrize("cmd, prog", [
    ([os.path.join(BIN, "wgan-train")], "wgan-train"),
    ([os.path.join(BIN, "wgan-generate")], "wgan-generate"),
    ([os.path.join(BIN, "wgan-eval")], "wgan-eval"),
    ([sys.executable, "-m", "wgan_ext.train"], "wgan-train"),
    ([sys.executable, "-m", "wgan_ext.eval"], "wgan-eval"),
    ([sys.executable, "-m", "wgan_ext.train.generate"], "wgan-generate"),
], ids=["wgan-train", "wgan-generate", "wgan-eval", "-m wgan_ext.train", "-m wgan_ext.eval", "-m generate"])
def test_command_runs(cmd, prog):
    if not os.path.exists(cmd[0]):
        pytest.skip(f"{cmd[0]} is not installed here (pip install . puts it next to the interpreter)")
    r = run(*cmd, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: {prog}")


def test_the_public_names_import():
    from wgan_ext import (Clipper, ClippedAdam, ClippedRMSprop, SpectralNorm, SpectralNormGroup,  # noqa: F401
                          apply_spectral_norm, build_info, clip_, gradient_penalty, has_ops, r1_penalty, r2_penalty,
                          spectral_norm)
    from wgan_ext.eval import evaluate_run, evaluate_samples, mode_coverage, wasserstein1  # noqa: F401
    from wgan_ext.eval.images import frechet_distance, image_metrics  # noqa: F401
    from wgan_ext.graphs import GraphedStep  # noqa: F401
    from wgan_ext.train import (ConfigError, Trainer, TrainConfig, TrainingDiverged, load_checkpoint,  # noqa: F401
                                main, resolve)
    from wgan_ext.train.generate import generate, load_generator  # noqa: F401
