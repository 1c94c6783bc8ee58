"""Toy-data evaluation on constructed samples with known answers, the correlation over a run, and wgan-eval."""

import json
import math
import os

import numpy as np
import pytest
import torch

from wgan_ext import eval as ev
from wgan_ext.train.config import TrainConfig, resolve
from wgan_ext.train.data import toy_distribution
from wgan_ext.train import Trainer

HQ_PERFECT = 1 - math.exp(-4.5)  # P(|N(0, I_2)| <= 3): a perfect sampler's HQ fraction, 0.98889


def test_w1_of_a_translate_is_the_shift_length():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 2, generator=g, dtype=torch.float64)
    shift = torch.tensor([0.3, -0.4], dtype=torch.float64)
    assert ev.wasserstein1(x, x + shift) == pytest.approx(0.5, abs=1e-12)
    assert ev.wasserstein1(x, x) == pytest.approx(0.0, abs=1e-12)


def test_w1_between_point_masses_and_unequal_sizes():
    a = np.zeros((4, 2))
    b = np.array([[3.0, 4.0]] * 6)
    assert ev.wasserstein1(a, b) == pytest.approx(5.0)
    two = np.array([[0.0, 0.0], [2.0, 0.0]])
    assert ev.wasserstein1(two, np.array([[1.0, 0.0]])) == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["ring", "grid", "8gaussians", "25gaussians"])
def test_a_perfect_sampler_covers_every_mode(name):
    dist = toy_distribution(name)
    fake = dist.sample(2500, torch.Generator().manual_seed(1))
    m = ev.toy_metrics(fake, dist, seed=2)
    assert m["modes"] == m["n_modes"] == len(dist.centers)
    assert m["hq"] == pytest.approx(HQ_PERFECT, abs=0.01)
    # a real sample is about as far from the data as another real sample (mode counts fluctuate between samples)
    assert m["w1"] < 3 * m["w1_floor"]


def test_a_collapsed_sampler_covers_one_mode():
    dist = toy_distribution("ring")
    fake = dist.centers[3].float() + 0.01 * torch.randn(2500, 2, generator=torch.Generator().manual_seed(0))
    m = ev.toy_metrics(fake, dist)
    assert m["modes"] == 1 and m["hq_per_mode"][3] > 0
    assert m["hq"] > 0.95  # HQ alone rewards collapse: that is why modes are reported beside it
    assert m["w1"] > 10 * m["w1_floor"]


def test_samples_off_the_modes_are_not_high_quality():
    dist = toy_distribution("grid")
    fake = dist.centers.float() + 1.0  # halfway between modes: 20 std away from every centre
    m = ev.mode_coverage(fake, dist.centers, dist.std)
    assert m["hq"] == 0.0 and m["modes"] == 0


def test_w1_ranks_better_samplers_lower():
    dist = toy_distribution("8gaussians")
    g = torch.Generator().manual_seed(0)
    good = dist.sample(1000, g)
    noisy = good + 0.3 * torch.randn(1000, 2, generator=g)
    noise = 2 * torch.randn(1000, 2, generator=g)
    w = [ev.toy_metrics(x, dist)["w1"] for x in (good, noisy, noise)]
    assert w[0] < w[1] < w[2]


def test_spearman():
    assert ev.spearman([1, 2, 3, 4], [10, 20, 25, 100]) == pytest.approx(1.0)
    assert ev.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(ev.spearman([1, 2], [1, 2]))
    assert math.isnan(ev.spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="different lengths"):
        ev.spearman([1, 2, 3], [1, 2])


def test_w_estimate_at_takes_the_median_of_the_window():
    metrics = [{"iteration": i, "w_estimate": float(i)} for i in range(1, 101)]
    assert ev.w_estimate_at(metrics, [50], window=21) == [40.0]
    assert ev.w_estimate_at(metrics, [1], window=21) == [1.0]


def test_bad_points():
    with pytest.raises(ValueError, match="shape"):
        ev.wasserstein1(np.zeros(3), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="same dimension"):
        ev.wasserstein1(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        ev.wasserstein1(np.array([[np.nan, 0.0]]), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="no offline metric"):
        ev.evaluate_samples(torch.zeros(4, 3, 32, 32), "cifar10")


def test_eval_during_training_and_wgan_eval(tmp_path, capsys):
    c = resolve(TrainConfig(iters=6, eval_every=2, batch_size=16, hidden=32, n_critic=1, out=str(tmp_path / "run"),
                            progress=False, tensorboard=False, plots=False))
    Trainer(c).train()
    with open(os.path.join(c.out, "eval.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert [r["iteration"] for r in rows] == [2, 4, 6]
    assert all(r["n"] == ev.N_TOY and r["w1"] > 0 and 0 <= r["modes"] <= 8 for r in rows)
    assert ev.main([c.out, "-n", "500"]) == 0
    out = capsys.readouterr().out
    assert "w1" in out and "Spearman(W estimate, w1)" in out
    with open(os.path.join(c.out, "eval.json")) as f:
        result = json.load(f)
    assert result["checkpoint_iteration"] == 6 and result["metrics"]["n"] == 500
    corr = result["correlation"]
    assert corr["points"] == 3 and corr["iterations"] == [2, 4, 6] and -1 <= corr["spearman"] <= 1
    assert os.path.getsize(os.path.join(c.out, "plots", "w_vs_quality.png")) > 0


@pytest.mark.parametrize("mode", ["clip", "gp", "sn"])
@pytest.mark.parametrize("dataset", ["ring", "digits"])
def test_wgan_eval_on_runs_of_every_mode(tmp_path, capsys, mode, dataset):
    c = resolve(TrainConfig(lipschitz=mode, dataset=dataset, iters=3, eval_every=1, batch_size=16, hidden=32,
                            n_critic=1, out=str(tmp_path / "run"), progress=False, tensorboard=False, plots=False))
    Trainer(c).train()
    key = "w1" if dataset == "ring" else "fcd"
    assert ev.main([c.out, "-n", "200"]) == 0
    assert f"Spearman(W estimate, {key})" in capsys.readouterr().out
    with open(os.path.join(c.out, "eval.json")) as f:
        assert json.load(f)["correlation"]["points"] == 3
    # on the checkpoint file itself (no run history there: no correlation), with its own output file
    out = str(tmp_path / "ckpt.json")
    assert ev.main([os.path.join(c.out, "checkpoints", "last.pt"), "-n", "200", "-o", out]) == 0
    with open(out) as f:
        result = json.load(f)
    assert result["lipschitz"] == mode and result["checkpoint_iteration"] == 3 and "correlation" not in result
    m = result["metrics"]
    assert m["n"] == 200
    if dataset == "ring":
        assert m["w1"] > 0 and 0 <= m["modes"] <= 8
    else:
        assert m["fcd"] >= 0 and 0 <= m["classes_covered"] <= 10


def test_eval_does_not_change_training(tmp_path):
    kw = dict(iters=4, batch_size=16, hidden=32, n_critic=1, progress=False, tensorboard=False, plots=False)
    a = Trainer(resolve(TrainConfig(out=str(tmp_path / "a"), **kw)))
    a.train()
    b = Trainer(resolve(TrainConfig(out=str(tmp_path / "b"), eval_every=1, **kw)))
    b.train()
    for (n, p), (_, q) in zip(a.generator.named_parameters(), b.generator.named_parameters()):
        assert torch.equal(p, q), n


def test_eval_every_needs_an_offline_metric():
    from wgan_ext.train.config import ConfigError

    with pytest.raises(ConfigError, match="--eval-every"):
        resolve(TrainConfig(dataset="cifar10", eval_every=10, out="x"))


def test_wgan_eval_errors(tmp_path, capsys):
    assert ev.main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
