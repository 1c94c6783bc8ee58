"""The trainer and its CLI: every mode on toy data and digits, exact resume, atomic checkpoints, the NaN guard,
config errors, wgan-generate. Small models and a few iterations: this checks the machinery, not GAN quality."""

import json
import os

import pytest
import torch

from wgan_ext.train import checkpoint as ckpt
from wgan_ext.train import config as cfgmod
from wgan_ext.train.config import ConfigError, TrainConfig, resolve
from wgan_ext.train.generate import main as generate_main
from wgan_ext.train import Trainer, TrainingDiverged, build_parser, main

from conftest import fused_available, states_equal

MODES = ["clip", "gp", "sn"]


def small(tmp_path, name="run", **kw) -> TrainConfig:
    base = dict(dataset="8gaussians", iters=3, batch_size=16, hidden=32, n_critic=2, out=str(tmp_path / name),
                progress=False, tensorboard=False, plots=False, n_samples=32)
    base.update(kw)
    return resolve(TrainConfig(**base))


def read_metrics(run):
    with open(os.path.join(run, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


MODE_KEYS = {"clip": {"clip_saturation"}, "gp": {"gp", "grad_norm_mean", "grad_norm_std", "grad_norm_min",
                                                  "grad_norm_max"}, "sn": {"sigma_mean", "sigma_min", "sigma_max"}}


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_trains_on_the_pure_torch_fallback_as_on_the_kernels(tmp_path, monkeypatch, mode):
    """Where the compiled ops are missing (a failed build, WGAN_EXT_SKIP_NATIVE) every op falls back to its
    pure-torch reference: the trainer must run on it and follow the same trajectory (spectral norm's fallback once
    failed at the second forward of every critic step)."""
    runs = {}
    for impl in ("auto", "reference"):
        monkeypatch.setenv("WGAN_EXT_IMPL", impl)
        t = Trainer(small(tmp_path, impl, lipschitz=mode))
        t.train()
        runs[impl] = t
    for a, b in zip(runs["auto"].critic.state_dict().values(), runs["reference"].critic.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for a, b in zip(runs["auto"].generator.parameters(), runs["reference"].generator.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_on_toy_data(tmp_path, mode):
    c = small(tmp_path, lipschitz=mode, plots=True, tensorboard=True)
    t = Trainer(c)
    last = t.train()
    rows = read_metrics(c.out)
    assert [r["iteration"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert {"w_estimate", "loss_d", "loss_g", "seconds", "critic_iters"} | MODE_KEYS[mode] <= set(r)
        assert all(k not in r for other in MODES if other != mode for k in MODE_KEYS[other])
    assert last == rows[-1]
    if mode == "clip":  # every critic weight within [-c, c] after the clipped update
        assert all(p.abs().max() <= c.clip_value for p in t.critic.parameters())
        assert 0.0 <= rows[-1]["clip_saturation"] <= 1.0
    if mode == "sn":
        assert rows[-1]["sigma_min"] > 0
    # the resolved config, a weights_only-loadable checkpoint, plots, TensorBoard events
    with open(os.path.join(c.out, "config.json")) as f:
        assert json.load(f)["lipschitz"] == mode
    state = torch.load(os.path.join(c.out, "checkpoints", "last.pt"), weights_only=True)
    assert state["iteration"] == 3
    for png in ("w_estimate.png", "losses.png", "samples.png", "samples_000003.png"):
        with open(os.path.join(c.out, "plots", png), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(os.path.join(c.out, "tb")))


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_on_digits(tmp_path, mode):
    c = small(tmp_path, lipschitz=mode, dataset="digits", iters=2, batch_size=8)
    assert c.model == "mlp" and c.image_size == 8
    t = Trainer(c)
    t.train()
    assert len(read_metrics(c.out)) == 2
    assert t.sample(4).shape == (4, 1, 8, 8)


@pytest.mark.parametrize("mode", MODES)
def test_dcgan_on_upscaled_digits(tmp_path, mode):
    c = small(tmp_path, lipschitz=mode, dataset="digits", image_size=32, iters=1, batch_size=4, ngf=8, ndf=8,
              n_critic=1, plots=True)
    assert c.model == "dcgan"
    assert c.critic_norm == {"clip": "batch", "gp": "layer", "sn": "none"}[mode]
    t = Trainer(c)
    t.train()
    assert t.sample(2).shape == (2, 1, 32, 32)
    assert os.path.getsize(os.path.join(c.out, "plots", "samples.png")) > 0


def test_defaults_per_mode():
    gp = resolve(TrainConfig(out="x"))
    assert (gp.dataset, gp.lipschitz, gp.optimizer, gp.lr_d, gp.lr_g, gp.beta1, gp.beta2, gp.gp_weight,
            gp.n_critic, gp.batch_size, gp.lr_decay) == ("8gaussians", "gp", "adam", 3e-4, 3e-4, 0.5, 0.9, 0.1, 5,
                                                        64, "linear")  # toy data: tuned rate, decayed
    images = resolve(TrainConfig(dataset="digits", out="x"))
    assert (images.gp_weight, images.lr_d, images.lr_decay) == (10.0, 1e-4, "none")  # the paper's values
    clip = resolve(TrainConfig(lipschitz="clip", dataset="digits", out="x"))
    assert (clip.optimizer, clip.lr_d, clip.lr_g, clip.clip_value, clip.batch_size, clip.n_critic) == (
        "rmsprop", 5e-5, 5e-5, 0.01, 64, 5)
    sn = resolve(TrainConfig(lipschitz="sn", dataset="digits", out="x"))
    assert (sn.optimizer, sn.lr_d, sn.beta1, sn.beta2) == ("adam", 1e-4, 0.5, 0.9)
    toy_clip = resolve(TrainConfig(lipschitz="clip", out="x"))
    assert (toy_clip.lr_d, toy_clip.lr_g, toy_clip.lr_decay) == (2e-4, 2e-4, "linear")  # toy data: measured
    toy_sn = resolve(TrainConfig(lipschitz="sn", out="x"))
    assert (toy_sn.lr_d, toy_sn.beta1, toy_sn.beta2) == (3e-4, 0.0, 0.9)  # toy data: no momentum (measured)
    assert resolve(TrainConfig(lipschitz="sn", beta1=0.3, out="x")).beta1 == 0.3  # an explicit value wins


def test_iterations_per_dataset():
    # the mode-collapse benchmarks train longer (their linear decay would stop a sharpening generator at 1,500)
    assert resolve(TrainConfig(out="x")).iters == 1500  # the embedded default stays short
    assert resolve(TrainConfig(dataset="digits", out="x")).iters == 1500
    for name in ("ring", "grid"):
        for mode in ("clip", "gp", "sn"):
            assert resolve(TrainConfig(dataset=name, lipschitz=mode, out="x")).iters == 6000
        assert resolve(TrainConfig(dataset=name, iters=7, out="x")).iters == 7  # an explicit count wins
    # the CLI: no --iters means the dataset's default, and --help says so
    from wgan_ext.train.cli import build_parser, config_from_args
    cfg, _ = config_from_args(["--dataset", "grid", "--out", "x-does-not-exist"])
    assert cfg.iters == 6000
    assert "6000 on the ring and grid" in " ".join(build_parser().format_help().split())


def test_critic_activation_per_mode(tmp_path):
    # sn's MLP critic sorts pairs of units (MaxMin) by default; clip and gp keep ReLU; image critics keep theirs
    for mode, want in (("sn", "maxmin"), ("gp", "relu"), ("clip", "relu")):
        assert resolve(TrainConfig(lipschitz=mode, dataset="ring", out="x")).critic_activation == want
    assert resolve(TrainConfig(lipschitz="sn", critic_activation="relu", out="x")).critic_activation == "relu"
    assert resolve(TrainConfig(lipschitz="sn", dataset="digits", image_size=32, out="x")).critic_activation is None
    with pytest.raises(ConfigError, match="--critic-activation: the dcgan critic"):
        resolve(TrainConfig(lipschitz="gp", dataset="digits", image_size=32, critic_activation="maxmin", out="x"))
    with pytest.raises(ConfigError, match="--hidden: got 15; maxmin pairs"):
        resolve(TrainConfig(lipschitz="sn", hidden=15, out="x"))
    with pytest.raises(ConfigError, match="--critic-activation: 'tanh' is not one of relu, maxmin"):
        resolve(TrainConfig(critic_activation="tanh", out="x"))
    from wgan_ext.train.models import MaxMin
    t = Trainer(small(tmp_path, lipschitz="sn"))
    acts = [type(m) for m in t.critic.modules() if isinstance(m, (MaxMin, torch.nn.ReLU))]
    assert acts and set(acts) == {MaxMin}
    assert not any(isinstance(m, MaxMin) for m in t.generator.modules())
    t = Trainer(small(tmp_path, "gp", lipschitz="gp"))
    assert {type(m) for m in t.critic.modules() if isinstance(m, (MaxMin, torch.nn.ReLU))} == {torch.nn.ReLU}


def test_a_run_from_before_the_activation_option_continues_with_relu(tmp_path, capsys):
    cfg = small(tmp_path, lipschitz="sn", critic_activation="relu", iters=2, checkpoint_every=1)
    Trainer(cfg).train()
    state = ckpt.load_checkpoint(cfg.out)
    del state["config"]["critic_activation"]  # as a checkpoint made before the option existed
    torch.save(state, os.path.join(cfg.out, "checkpoints", "last.pt"))
    with open(os.path.join(cfg.out, "config.json")) as f:
        saved = json.load(f)
    del saved["critic_activation"]
    with open(os.path.join(cfg.out, "config.json"), "w") as f:
        json.dump(saved, f)
    assert main(["--resume", cfg.out, "--iters", "3", "--no-progress"]) == 0
    assert ckpt.load_checkpoint(cfg.out)["config"]["critic_activation"] == "relu"
    # the same command without --resume: today's default (maxmin) is not what the run was made with
    capsys.readouterr()
    assert main(["--lipschitz", "sn", "--dataset", cfg.dataset, "--out", cfg.out, "--no-progress"]) != 0
    assert "--critic-activation 'relu' there, 'maxmin' now" in capsys.readouterr().err


def test_optimizers_follow_the_mode(tmp_path):
    assert isinstance(Trainer(small(tmp_path, lipschitz="clip")).opt_d, torch.optim.RMSprop)
    t = Trainer(small(tmp_path, lipschitz="gp"))
    assert isinstance(t.opt_d, torch.optim.Adam) and t.opt_d.param_groups[0]["betas"] == (0.5, 0.9)


def test_official_diters_schedule(tmp_path):
    t = Trainer(small(tmp_path, lipschitz="clip", diters_schedule="official", n_critic=3))
    assert [t.critic_iterations(i) for i in (0, 24, 25, 499, 500, 501, 1000)] == [100, 100, 3, 3, 100, 3, 100]
    t2 = Trainer(small(tmp_path, lipschitz="clip", n_critic=3))
    assert t2.critic_iterations(0) == 3


@pytest.mark.parametrize("optimizer", ["rmsprop", "adam"])
def test_fused_optimizer_matches_optimizer_plus_clipper(tmp_path, optimizer):
    kw = dict(lipschitz="clip", optimizer=optimizer, iters=3, lr_d=5e-3)
    plain = Trainer(small(tmp_path, "plain", **kw))
    plain.train()
    fused = Trainer(small(tmp_path, "fused", fused_optimizer=True, **kw))
    fused.train()
    assert type(fused.opt_d).__name__ == {"rmsprop": "ClippedRMSprop", "adam": "ClippedAdam"}[optimizer]
    assert fused.constraint.clipper is None
    if fused_available(f"_{optimizer}_clip_planned_", "cpu"):  # both ran through their cached launch plans
        assert fused.opt_d._plans[0].rows is not None and plain.constraint.clipper._plan is not None
    for a, b in zip(plain.critic.parameters(), fused.critic.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(plain.generator.parameters(), fused.generator.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert all(p.abs().max() <= fused.config.clip_value for p in fused.critic.parameters())
    sat = [r["clip_saturation"] for r in read_metrics(fused.out)]
    assert sat == pytest.approx([r["clip_saturation"] for r in read_metrics(plain.out)], abs=1e-3)
    assert sat[-1] > 0  # lr 5e-3 against c 0.01: weights reach the bounds
    # its checkpoint is that of torch's optimizer: it resumes, and loads into torch.optim
    state = ckpt.load_checkpoint(fused.out)
    torch_cls = torch.optim.RMSprop if optimizer == "rmsprop" else torch.optim.Adam
    torch_cls(plain.critic.parameters()).load_state_dict(state["opt_d"])


def test_fused_optimizer_needs_clip_after(tmp_path):
    with pytest.raises(ConfigError, match="--fused-optimizer"):
        small(tmp_path, lipschitz="gp", fused_optimizer=True)
    with pytest.raises(ConfigError, match="--clip-order after"):
        small(tmp_path, lipschitz="clip", clip_order="before", fused_optimizer=True)


def test_clip_before_order_clamps_at_the_start(tmp_path):
    t = Trainer(small(tmp_path, lipschitz="clip", clip_order="before", lr_d=0.5, iters=1, n_critic=1))
    t.train()
    # with the official order the last critic update is not clamped afterwards: a large lr leaves weights outside
    assert max(p.abs().max().item() for p in t.critic.parameters()) > t.config.clip_value


def test_linear_lr_decay_follows_the_iteration_and_resumes_exactly(tmp_path):
    kw = dict(lipschitz="gp", iters=4, lr_decay="linear", lr_d=2e-4, lr_g=1e-4)
    full = Trainer(small(tmp_path, "full", **kw))
    full.train()
    # the last step ran at iteration 3 of 4: both optimizers at a quarter of their configured rate
    assert full.opt_d.param_groups[0]["lr"] == pytest.approx(0.25 * 2e-4)
    assert full.opt_g.param_groups[0]["lr"] == pytest.approx(0.25 * 1e-4)
    # interrupted after 2 iterations of the same run (same --iters), then resumed in a fresh trainer
    part = Trainer(small(tmp_path, "part", **kw))
    for _ in range(2):
        part.iteration_step()
        part.iteration += 1
    part.save()
    state = ckpt.load_checkpoint(part.out)
    resumed = Trainer(cfgmod.from_dict(state["config"]), resume_state=state)
    resumed.train()
    for key in ("generator", "critic", "opt_g", "opt_d"):
        assert states_equal(full.state_dict()[key], resumed.state_dict()[key]), key
    # without decay the rate stays as configured
    const = Trainer(small(tmp_path, "const", lipschitz="gp", iters=2, lr_d=2e-4, lr_decay="none"))
    const.train()
    assert const.opt_d.param_groups[0]["lr"] == 2e-4


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dataset", ["8gaussians", "digits"])
def test_resume_is_bitwise_identical(tmp_path, mode, dataset):
    # the interrupted run is one with --iters 3 resumed to 6: a constant rate (the decay ends at --iters; the
    # decayed schedule's resume is tested above)
    kw = dict(lipschitz=mode, dataset=dataset, iters=6, batch_size=8, checkpoint_every=3, lr_decay="none")
    full = Trainer(small(tmp_path, "full", **kw))
    full.train()
    part = Trainer(small(tmp_path, "part", **{**kw, "iters": 3}))
    part.train()
    # a new process would do this: everything comes from the checkpoint
    state = ckpt.load_checkpoint(part.out)
    assert state["iteration"] == 3
    cfg = cfgmod.from_dict({**state["config"], "iters": 6})
    resumed = Trainer(cfg, resume_state=state)
    torch.manual_seed(1234)  # whatever happened to the global RNG in between must not matter
    resumed.train()
    for key in ("generator", "critic", "opt_g", "opt_d", "data", "noise_rng"):
        assert states_equal(full.state_dict()[key], resumed.state_dict()[key]), key
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(full.out)]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(part.out)]


def test_resume_on_another_device_type_continues_with_a_derived_noise_seed(tmp_path):
    # a run saved on CUDA resumed on the CPU (--device may change): the CUDA generator's state (16 bytes of philox
    # seed and offset) does not fit a CPU generator; the run must continue, deterministically, and say so
    part = Trainer(small(tmp_path, "part", iters=4))
    for _ in range(2):
        part.iteration_step()
        part.iteration += 1
    part.save()
    assert ckpt.load_checkpoint(part.out)["noise_rng_device"] == "cpu"

    def saved_on_cuda():  # a fresh load each time: training mutates the optimizer state it was given
        return {**ckpt.load_checkpoint(part.out), "noise_rng": torch.arange(16, dtype=torch.uint8),
                "noise_rng_device": "cuda"}

    runs = []
    for name in ("a", "b"):
        state = saved_on_cuda()
        cfg = cfgmod.from_dict({**state["config"], "out": str(tmp_path / name)})
        with pytest.warns(RuntimeWarning, match="resuming on cpu a run whose noise generator was on cuda"):
            t = Trainer(cfg, resume_state=state)
        t.train()
        runs.append(t)
    assert runs[0].iteration == 4
    assert states_equal(runs[0].state_dict()["generator"], runs[1].state_dict()["generator"])
    # a checkpoint from before the device was recorded, and a state that does not fit: the same fallback
    state = saved_on_cuda()
    old = {k: v for k, v in state.items() if k != "noise_rng_device"}
    with pytest.warns(RuntimeWarning, match="another device"):
        Trainer(cfgmod.from_dict({**state["config"], "out": str(tmp_path / "c")}), resume_state=old)
    # the same device type with a broken state is an error, not a silent reseed
    bad = {**state, "noise_rng_device": "cpu"}
    with pytest.raises(RuntimeError, match="CPUGeneratorImplState"):
        Trainer(cfgmod.from_dict({**state["config"], "out": str(tmp_path / "d")}), resume_state=bad)


def test_resume_through_the_cli(tmp_path, capsys):
    out = str(tmp_path / "cli")
    common = ["--iters", "2", "--batch-size", "8", "--hidden", "16", "--n-critic", "1", "--out", out,
              "--no-progress", "--no-tensorboard", "--no-plots"]
    assert main(common) == 0
    assert main(["--resume", out, "--iters", "4", "--no-progress"]) == 0
    assert [r["iteration"] for r in read_metrics(out)] == [1, 2, 3, 4]
    assert ckpt.load_checkpoint(out)["iteration"] == 4
    # options that define the run cannot change on resume
    assert main(["--resume", out, "--iters", "5", "--lr-d", "0.1"]) == 2
    assert "--lr-d cannot change" in capsys.readouterr().err


def test_resuming_a_copied_run_folder_continues_in_the_copy(tmp_path):
    import shutil

    original = str(tmp_path / "original")
    assert main(["--iters", "2", "--batch-size", "8", "--hidden", "16", "--n-critic", "1", "--out", original,
                 "--no-progress", "--no-tensorboard", "--no-plots"]) == 0
    files = {name: open(os.path.join(original, name), "rb").read() for name in ("metrics.jsonl", "config.json")}
    before = open(os.path.join(original, ckpt.LAST), "rb").read()
    copy = str(tmp_path / "copy")
    shutil.copytree(original, copy)
    assert main(["--resume", copy, "--iters", "3", "--no-progress"]) == 0
    # the copy went on; the original is byte for byte as it was
    assert [r["iteration"] for r in read_metrics(copy)] == [1, 2, 3]
    assert ckpt.load_checkpoint(copy)["iteration"] == 3
    for name, data in files.items():
        assert open(os.path.join(original, name), "rb").read() == data, name
    assert open(os.path.join(original, ckpt.LAST), "rb").read() == before
    # resuming from the copy's checkpoint file continues in the copy too; --out sends it elsewhere
    assert main(["--resume", os.path.join(copy, ckpt.LAST), "--iters", "4", "--no-progress"]) == 0
    assert [r["iteration"] for r in read_metrics(copy)] == [1, 2, 3, 4]
    elsewhere = str(tmp_path / "elsewhere")
    assert main(["--resume", copy, "--iters", "5", "--out", elsewhere, "--no-progress"]) == 0
    assert [r["iteration"] for r in read_metrics(elsewhere)] == [5]
    assert ckpt.load_checkpoint(elsewhere)["iteration"] == 5
    assert ckpt.load_checkpoint(copy)["iteration"] == 4


def test_crash_during_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    c = small(tmp_path, iters=2, checkpoint_every=1)
    t = Trainer(c)
    t.train()
    path = os.path.join(c.out, "checkpoints", "last.pt")
    assert ckpt.load_checkpoint(path)["iteration"] == 2

    real_save = torch.save

    def crashing_save(obj, f, *a, **k):
        real_save({"partial": torch.zeros(1000)}, f)  # some bytes hit the temporary file, then the process dies
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(ckpt.torch, "save", crashing_save)
    t.config.iters = 3
    with pytest.raises(OSError, match="simulated"):
        t.train()
    monkeypatch.undo()
    state = ckpt.load_checkpoint(path)
    assert state["iteration"] == 2
    assert os.listdir(os.path.dirname(path)) == ["last.pt"]  # no temporary file left behind


def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "nan")
    real_step = Trainer.critic_step

    def step(self):
        if self.iteration == 3:  # the 4th generator iteration
            with torch.no_grad():
                next(self.critic.parameters()).fill_(float("nan"))
        return real_step(self)

    monkeypatch.setattr(Trainer, "critic_step", step)
    code = main(["--iters", "6", "--checkpoint-every", "2", "--batch-size", "8", "--hidden", "16", "--out", out,
                 "--no-progress", "--no-tensorboard", "--no-plots"])
    err = capsys.readouterr().err
    assert code == 1
    assert "generator iteration 4" in err and "non-finite" in err
    assert "last good checkpoint" in err and "iteration 2" in err
    assert ckpt.load_checkpoint(out)["iteration"] == 2
    assert [r["iteration"] for r in read_metrics(out)] == [1, 2, 3]


def test_nan_guard_names_a_parameter(tmp_path):
    t = Trainer(small(tmp_path))
    with torch.no_grad():
        t.generator.net[0].weight[0, 0] = float("inf")
    with pytest.raises(TrainingDiverged, match=r"generator parameter\(s\) net.0.weight"):
        t.check_finite({"iteration": 1, "w_estimate": 0.0})


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_finite_flags_find_every_non_finite_value_anywhere(tmp_path, bad):
    t = Trainer(small(tmp_path))
    named = t._named_parameters()
    assert t._finite_flags().tolist() == [True] * len(named)
    for k, (_, _, p) in enumerate(named):
        flat = p.detach().view(-1)
        for i in sorted({0, flat.numel() // 2, flat.numel() - 1}):  # first, a vectorized middle, the tail
            keep = flat[i].item()
            with torch.no_grad():
                flat[i] = bad
            flags = t._finite_flags().tolist()
            with torch.no_grad():
                flat[i] = keep
            assert flags == [j != k for j in range(len(named))], (k, i)


@pytest.mark.parametrize("args, message", [
    (["--lr-d", "-1"], "--lr-d: got -1.0; the learning rate must be a number > 0"),
    (["--lr-g", "0"], "--lr-g"),
    (["--n-critic", "0"], "--n-critic: got 0; must be an integer >= 1"),
    (["--clip-value", "0"], "--clip-value: got 0.0; the clip value c must be a number > 0"),
    (["--clip-value", "-0.01", "--lipschitz", "clip"], "--clip-value"),
    (["--dataset", "mnist", "--image-size", "48", "--model", "dcgan"], "--image-size: got 48; the DCGAN models"),
    (["--dataset", "digits", "--image-size", "12"], "--image-size: got 12; digits"),
    (["--dataset", "digits", "--image-size", "32", "--critic-norm", "batch"], "--critic-norm: 'batch' with"),
    (["--model", "dcgan"], "--model: got 'dcgan'; toy 2-D data trains MLPs"),
    (["--diters-schedule", "official"], "--diters-schedule official belongs to weight clipping"),
    (["--beta2", "1.0"], "--beta2: got 1.0; must be in [0, 1)"),
    (["--dataset", "folder"], "--data-root"),
    (["--device", "tpu"], "--device"),
])
def test_config_errors_name_the_option(tmp_path, capsys, args, message):
    assert main(args + ["--out", str(tmp_path / "x"), "--iters", "1"]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert not os.path.exists(tmp_path / "x")  # nothing started


def test_unknown_dataset_and_bad_numbers_are_usage_errors(capsys):
    for args in (["--dataset", "imagenet"], ["--iters", "many"]):
        with pytest.raises(SystemExit) as e:
            main(args)
        assert e.value.code == 2
    assert "invalid choice: 'imagenet'" in capsys.readouterr().err


def test_config_files_and_flag_precedence(tmp_path):
    from wgan_ext.train import config_from_args

    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("lipschitz: clip\nclip-value: 0.02\nn_critic: 3\ndataset: 25gaussians\n")
    c, _ = config_from_args(["--config", str(yaml_file), "--n-critic", "4", "--out", "o"])
    assert (c.lipschitz, c.clip_value, c.n_critic, c.dataset) == ("clip", 0.02, 4, "25gaussians")
    toml_file = tmp_path / "run.toml"
    toml_file.write_text('lipschitz = "sn"\nsn_power_iterations = 2\n')
    c, _ = config_from_args(["--config", str(toml_file), "--out", "o"])
    assert (c.lipschitz, c.sn_power_iterations) == ("sn", 2)
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="unknown option 'learning_rate'"):
        config_from_args(["--config", str(bad)])
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('n_critic = -2\n')
    with pytest.raises(ConfigError, match="--n-critic: got -2"):
        config_from_args(["--config", str(wrong), "--out", "o"])
    with pytest.raises(ConfigError, match="does not exist"):
        config_from_args(["--config", str(tmp_path / "missing.yaml")])


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for name in cfgmod.OPTIONS:
        assert "--" + name.replace("_", "-") in text, name
    assert "--config" in text and "--resume" in text


def test_generate_from_toy_and_image_runs(tmp_path):
    toy = small(tmp_path, "toy")
    Trainer(toy).train()
    assert generate_main([toy.out, "-n", "100", "-o", str(tmp_path / "toy.pt")]) == 0
    x = torch.load(tmp_path / "toy.pt", weights_only=True)
    assert x.shape == (100, 2) and torch.isfinite(x).all()
    assert generate_main([toy.out, "-n", "50", "-o", str(tmp_path / "toy.npy")]) == 0
    import numpy as np

    assert np.load(tmp_path / "toy.npy").shape == (50, 2)
    assert generate_main([toy.out, "-n", "50", "-o", str(tmp_path / "toy.png")]) == 0
    assert (tmp_path / "toy.png").read_bytes()[:4] == b"\x89PNG"
    # same seed, same samples; the generator is the trained one
    assert generate_main([toy.out, "-n", "100", "-o", str(tmp_path / "again.pt")]) == 0
    assert torch.equal(x, torch.load(tmp_path / "again.pt", weights_only=True))

    img = small(tmp_path, "img", dataset="digits", iters=1, batch_size=8)
    Trainer(img).train()
    assert generate_main([os.path.join(img.out, "checkpoints", "last.pt"), "-n", "16",
                          "-o", str(tmp_path / "grid.png")]) == 0
    from PIL import Image

    assert Image.open(tmp_path / "grid.png").size == (8 * 10 + 2, 2 * 10 + 2)  # make_grid: 8 per row, padding 2
    assert generate_main([img.out, "-n", "3", "-o", str(tmp_path / "each") + os.sep]) == 0
    assert sorted(os.listdir(tmp_path / "each")) == ["000000.png", "000001.png", "000002.png"]


def test_generate_errors(tmp_path, capsys):
    assert generate_main([str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    junk = tmp_path / "junk.pt"
    torch.save({"hello": 1}, junk)
    assert generate_main([str(junk)]) == 2
    assert "not a wgan_ext trainer checkpoint" in capsys.readouterr().err


def test_module_entry_point_runs(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "m"
    r = subprocess.run([sys.executable, "-m", "wgan_ext.train", "--iters", "1", "--batch-size", "4", "--hidden", "8",
                        "--n-critic", "1", "--out", str(out), "--no-progress", "--no-plots", "--no-tensorboard"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "checkpoint" in r.stderr and (out / "checkpoints" / "last.pt").exists()
