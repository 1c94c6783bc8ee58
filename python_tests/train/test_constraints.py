"""The Lipschitz constraints as pieces (wgan_ext/train/constraints/): each mode's defaults and checks live on its
class, and a new constraint is one class registered in CONSTRAINTS -- the loop, the CLI and checkpoints take it with
no other change (shown here with an R1 penalty defined in this file)."""

import json
import os

import pytest
import torch

import wgan_ext
from wgan_ext.train import CONSTRAINTS, ConfigError, Constraint, Trainer, TrainConfig, load_checkpoint, main, resolve
from wgan_ext.train.constraints import GradientPenalty, SpectralNormalization, WeightClipping, constraint_class


class R1(Constraint):
    """R1 (Mescheder et al. 2018) with weight 1: E ||grad D(real)||^2; its state is a step count."""

    name = "r1"
    summary = "r1 (R1 penalty on real data)"

    def __init__(self, config, critic, device):
        super().__init__(config, critic, device)
        self.steps = 0
        self.terms = []

    def critic_loss(self, critic, real, fake, extra, rng):
        self.steps += 1
        penalty = wgan_ext.r1_penalty(critic, real, weight=1.0)
        self.terms.append(penalty.detach())
        return penalty, {"r1": penalty.detach()}

    def metrics(self, outputs):
        return {"r1": outputs["r1"]}

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state["steps"]


@pytest.fixture
def r1(monkeypatch):
    monkeypatch.setitem(CONSTRAINTS, "r1", R1)
    return R1


def small(tmp_path, name="run", **kw) -> TrainConfig:
    base = dict(dataset="8gaussians", iters=3, batch_size=16, hidden=16, n_critic=2, out=str(tmp_path / name),
                progress=False, tensorboard=False, plots=False, n_samples=16)
    return resolve(TrainConfig(**{**base, **kw}))


def test_registry_and_per_mode_defaults():
    assert list(CONSTRAINTS) == ["clip", "gp", "sn"]
    assert (CONSTRAINTS["clip"], CONSTRAINTS["gp"], CONSTRAINTS["sn"]) == (WeightClipping, GradientPenalty,
                                                                       SpectralNormalization)
    for mode, (opt, norm, lr_toy, lr_img, decay_toy) in {
            "clip": ("rmsprop", "batch", 2e-4, 5e-5, "linear"),
            "gp": ("adam", "layer", 3e-4, 1e-4, "linear"),
            "sn": ("adam", "none", 3e-4, 1e-4, "linear")}.items():
        toy = resolve(TrainConfig(lipschitz=mode))
        img = resolve(TrainConfig(lipschitz=mode, dataset="digits", image_size=32))
        assert (toy.optimizer, img.critic_norm, toy.lr_d, img.lr_d, toy.lr_decay, img.lr_decay) == (
            opt, norm, lr_toy, lr_img, decay_toy, "none"), mode
    with pytest.raises(ConfigError, match="--lipschitz: 'lp' is not one of clip, gp, sn"):
        constraint_class("lp")
    with pytest.raises(ConfigError, match="--lipschitz"):
        resolve(TrainConfig(lipschitz="lp"))


def test_mode_checks_live_on_the_constraint():
    with pytest.raises(ConfigError, match="'batch' with --lipschitz gp"):
        resolve(TrainConfig(lipschitz="gp", dataset="digits", image_size=32, critic_norm="batch"))
    resolve(TrainConfig(lipschitz="sn", dataset="digits", image_size=32, critic_norm="batch"))  # fine for sn
    assert WeightClipping.graphs_unsupported(resolve(TrainConfig(lipschitz="clip", fused_optimizer=True)))
    assert WeightClipping.graphs_unsupported(resolve(TrainConfig(lipschitz="clip"))) is None


def test_a_new_constraint_is_one_class(tmp_path, r1):
    c = small(tmp_path, lipschitz="r1")
    assert (c.optimizer, c.lr_d) == ("adam", 3e-4)  # the base class's defaults
    t = Trainer(c)
    last = t.train()
    assert t.constraint.steps == 3 * 2  # its term was added at every critic step
    assert last["r1"] == pytest.approx(t.constraint.terms[-1].item())
    assert {"clip_saturation", "gp", "sigma_mean"}.isdisjoint(last)
    state = load_checkpoint(c.out)
    assert state["constraint"] == {"steps": 6}
    # resumed: its state comes back; the run continues from the checkpoint
    more = Trainer(resolve(TrainConfig(**{**state["config"], "iters": 5})), resume_state=state)
    assert more.constraint.steps == 6
    more.train()
    assert more.constraint.steps == 6 + 2 * 2


def test_the_cli_takes_a_registered_constraint(tmp_path, r1, capsys):
    out = tmp_path / "cli"
    assert main(["--lipschitz", "r1", "--iters", "2", "--hidden", "8", "--batch-size", "8", "--n-critic", "1",
                 "--no-plots", "--no-tensorboard", "--no-progress", "--out", str(out)]) == 0
    with open(out / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert [r["iteration"] for r in rows] == [1, 2] and all("r1" in r for r in rows)
    assert "r1 on 8gaussians" in capsys.readouterr().err


def test_a_stateless_constraint_refuses_a_foreign_state(tmp_path):
    t = Trainer(small(tmp_path, lipschitz="gp", iters=1))
    state = t.state_dict()
    assert state["constraint"] == {}
    state["constraint"] = {"steps": 1}
    with pytest.raises(ValueError, match="the gp constraint keeps no state.*steps"):
        Trainer(small(tmp_path, "again", lipschitz="gp", iters=1), resume_state=state)
