"""The generator EMA (--g-ema, wgan_ext/train/ema.py): the update's arithmetic, its use for samples, plots,
evaluation, wgan-generate and wgan-eval (--raw: the generator itself), checkpoints and exact resume, and runs made
before it existed."""

import json
import os

import pytest
import torch
from torch import nn

from wgan_ext.train import ConfigError, Trainer, TrainConfig, load_checkpoint, resolve
from wgan_ext.train import config as cfgmod
from wgan_ext.train.ema import ModelEMA
from wgan_ext.train.generate import generate, load_generator

from conftest import states_equal


def small(tmp_path, name="run", **kw) -> TrainConfig:
    base = dict(dataset="8gaussians", iters=4, batch_size=16, hidden=16, n_critic=1, out=str(tmp_path / name),
                progress=False, tensorboard=False, plots=False, lr_decay="none", checkpoint_every=2)
    return resolve(TrainConfig(**{**base, **kw}))


def test_the_update_is_a_ramped_lerp_and_copies_buffers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = ModelEMA(model, 0.9)
    assert not any(p.requires_grad for p in ema.model.parameters()) and not ema.model.training
    start = [p.detach().clone() for p in model.parameters()]
    for t in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        model(torch.randn(5, 3))  # BatchNorm statistics move
        ema.update(t)
    expected = start
    for t in range(3):
        d = min(0.9, (1 + t) / (10 + t))
        expected = [d * e + (1 - d) * (s + t + 1) for e, s in zip(expected, start)]
    for got, want in zip(ema.model.parameters(), expected):
        torch.testing.assert_close(got, want)
    assert torch.equal(ema.model[1].running_mean, model[1].running_mean)
    assert (ema.decay_at(0), ema.decay_at(10**6)) == (0.1, 0.9)
    with pytest.raises(ValueError, match=r"decay must be in \(0, 1\)"):
        ModelEMA(model, 1.0)


def test_samples_evaluation_and_generate_use_the_ema(tmp_path):
    c = small(tmp_path, g_ema=0.9)
    t = Trainer(c)
    t.train()
    noise = torch.randn(50, c.nz)
    with torch.no_grad():
        assert torch.equal(t.sample(noise=noise), t.ema.model(noise))
        assert torch.equal(t.sample(noise=noise, raw=True), t.generator.eval()(noise))
    assert not torch.equal(t.sample(noise=noise), t.sample(noise=noise, raw=True))
    state = load_checkpoint(c.out)
    assert states_equal(state["generator_ema"], t.ema.state_dict())
    g, _ = load_generator(c.out)
    assert states_equal(g.state_dict(), t.ema.state_dict())
    g, _ = load_generator(c.out, raw=True)
    assert states_equal(g.state_dict(), t.generator.state_dict())
    assert not torch.equal(generate(c.out, 20), generate(c.out, 20, raw=True))
    from wgan_ext.eval import evaluate_run
    assert evaluate_run(c.out)["sampled"] == "generator EMA"
    assert evaluate_run(c.out, raw=True)["sampled"] == "generator"


def test_exact_resume_with_the_ema(tmp_path):
    full = Trainer(small(tmp_path, "full", g_ema=0.99))
    full.train()
    part = Trainer(small(tmp_path, "part", g_ema=0.99, iters=2))
    part.train()
    state = load_checkpoint(part.out)
    resumed = Trainer(cfgmod.from_dict({**state["config"], "iters": 4}), resume_state=state)
    resumed.train()
    assert states_equal(full.ema.state_dict(), resumed.ema.state_dict())
    assert states_equal(full.generator.state_dict(), resumed.generator.state_dict())


def test_the_ema_does_not_change_training(tmp_path):
    a = Trainer(small(tmp_path, "a", g_ema=0.0))
    b = Trainer(small(tmp_path, "b", g_ema=0.999))
    a.train()
    b.train()
    assert a.ema is None and b.ema is not None
    assert states_equal(a.generator.state_dict(), b.generator.state_dict())
    assert states_equal(a.critic.state_dict(), b.critic.state_dict())


def test_old_runs_had_no_ema(tmp_path):
    old = small(tmp_path, "old", g_ema=0.0)
    Trainer(old).train()
    with open(os.path.join(old.out, "config.json")) as f:
        saved = json.load(f)
    del saved["g_ema"]  # as a run made before the option existed
    with open(os.path.join(old.out, "config.json"), "w") as f:
        json.dump(saved, f)
    state = load_checkpoint(old.out)
    del state["config"]["g_ema"]
    del state["generator_ema"]
    torch.save(state, os.path.join(old.out, "checkpoints", "last.pt"))
    from wgan_ext.train import main
    assert main(["--resume", old.out, "--iters", "5", "--no-progress"]) == 0  # continues without an EMA
    assert load_checkpoint(old.out)["config"]["g_ema"] == 0.0
    with pytest.raises(ConfigError, match="--g-ema"):
        resolve(TrainConfig(g_ema=1.0))
