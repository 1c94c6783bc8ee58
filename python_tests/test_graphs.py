"""CUDA graphs in the trainer (--cuda-graphs, wgan_ext/graphs.py).

On the CPU: the refusals, the GraphedStep data flow, the portable optimizer state, and the trainer's graph-mode
data flow (inputs drawn outside the step, static buffers) bitwise against eager -- everything but the capture.
On a GPU (marked cuda): captured and replayed steps against eager in every mode, and their checkpoints."""

import pytest
import torch

from wgan_ext import checkpoint as ckpt
from wgan_ext import config as cfgmod
from wgan_ext import graphs
from wgan_ext.config import ConfigError, TrainConfig, resolve
from wgan_ext.train import Trainer, main

from conftest import needs_cuda, states_equal

MODES = ["clip", "gp", "sn"]


def small(tmp_path, name="run", **kw) -> TrainConfig:
    base = dict(dataset="8gaussians", iters=6, batch_size=16, hidden=32, n_critic=2, out=str(tmp_path / name),
                progress=False, tensorboard=False, plots=False, n_samples=32, checkpoint_every=3)
    base.update(kw)
    return resolve(TrainConfig(**base))


def metrics(trainer, n):
    rows = []
    for _ in range(n):
        m = trainer.iteration_step()
        trainer.iteration += 1
        rows.append(m)
    return rows


# ------------------------------------------------------------------------------------------------ refusals
def test_cli_refuses_cuda_graphs_on_the_cpu(tmp_path, capsys):
    code = main(["--cuda-graphs", "--device", "cpu", "--iters", "1", "--out", str(tmp_path / "r"), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--cuda-graphs needs a CUDA device" in err and "cpu" in err


@pytest.mark.parametrize("args, message", [
    (("cpu", 1, False), "needs a CUDA device"),
    (("cuda", 2, False), "runs in one process; this run has 2"),
    (("cuda", 1, True), "--fused-optimizer"),
])
def test_check_supported_names_the_problem(args, message):
    device, world, fused = args
    with pytest.raises(ConfigError, match=message):
        graphs.check_supported(torch.device(device), world, fused)
    graphs.check_supported(torch.device("cuda"), 1, False)  # the supported case raises nothing


def test_cuda_graphs_is_a_boolean_option_and_resumable():
    with pytest.raises(ConfigError, match="--cuda-graphs"):
        resolve(TrainConfig(cuda_graphs="yes"))
    assert "cuda_graphs" in cfgmod.RESUMABLE


# ------------------------------------------------------------------------------------------------ GraphedStep
def test_graphed_step_without_capture_runs_on_static_buffers():
    seen = []

    def fn(x, y):
        seen.append((x.data_ptr(), y.data_ptr()))
        return {"sum": x + y}

    step = graphs.GraphedStep(fn, capture=False)
    a, b = torch.ones(3), torch.full((3,), 2.0)
    assert torch.equal(step(a, b)["sum"], torch.full((3,), 3.0))
    assert torch.equal(step(torch.zeros(3), b)["sum"], b)  # new values reach fn through the same buffers
    assert seen[0] == seen[1] and seen[0] != (a.data_ptr(), b.data_ptr())
    assert step.calls == 2 and step.graph is None and step.replays == 0
    with pytest.raises(ValueError, match=r"input 0 is \(4,\).*recorded with \(3,\)"):
        step(torch.ones(4), b)
    with pytest.raises(ValueError, match="called with 1 inputs, recorded with 2"):
        step(a)
    with pytest.raises(ValueError, match="warmup must be >= 1"):
        graphs.GraphedStep(fn, capture=False, warmup=0)


# ------------------------------------------------------------------------------------------------ optimizers
@pytest.mark.parametrize("kind", ["rmsprop", "adam"])
def test_portable_state_dict_is_the_plain_optimizers(kind):
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(5))
    make = (lambda ps: torch.optim.RMSprop(ps, lr=1e-3)) if kind == "rmsprop" else (
        lambda ps: torch.optim.Adam(ps, lr=1e-3, betas=(0.5, 0.9)))
    opt = make([p])
    p.grad = torch.randn(5)
    opt.step()
    plain = opt.state_dict()
    graphs.prepare_optimizer(opt, tensor_lr=True)
    group = opt.param_groups[0]
    assert group["capturable"] is True and isinstance(group["lr"], torch.Tensor)
    graphs.set_lr(group, 5e-4)
    assert group["lr"].item() == pytest.approx(5e-4)
    portable = graphs.portable_state_dict(opt)
    assert opt.param_groups[0]["capturable"] is True  # the live optimizer is left as it is
    assert portable["param_groups"][0]["lr"] == pytest.approx(5e-4)
    assert isinstance(portable["param_groups"][0]["lr"], float)
    expected = {**plain["param_groups"][0], "lr": portable["param_groups"][0]["lr"]}
    assert portable["param_groups"][0] == expected
    assert states_equal(portable["state"], plain["state"])
    fresh = make([torch.nn.Parameter(p.detach().clone())])
    fresh.load_state_dict(portable)  # loads into torch's own optimizer
    assert fresh.param_groups[0]["capturable"] is False
    graphs.set_lr(fresh.param_groups[0], 1e-2)
    assert fresh.param_groups[0]["lr"] == 1e-2


def test_prepare_optimizer_refuses_one_without_a_capturable_mode():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    with pytest.raises(ConfigError, match="SGD has no capturable mode"):
        graphs.prepare_optimizer(opt, tensor_lr=False)


# ------------------------------------------------------------------------------------------------ trainer, CPU
@pytest.fixture
def graphs_on_cpu(monkeypatch):
    """Let --cuda-graphs through on the CPU: the graph-mode data flow runs without the capture."""
    monkeypatch.setattr(graphs, "check_supported", lambda *args: None)


@pytest.mark.parametrize("kw", [dict(lipschitz="clip"), dict(lipschitz="clip", clip_order="before"),
                                dict(lipschitz="gp"), dict(lipschitz="sn"), dict(lipschitz="gp", lr_decay="linear"),
                                dict(lipschitz="clip", diters_schedule="official", iters=2)],
                         ids=["clip", "clip-before", "gp", "sn", "gp-decay", "clip-official"])
def test_graph_data_flow_is_bitwise_eager_on_the_cpu(tmp_path, graphs_on_cpu, kw):
    kw = {"lr_decay": "none", **kw}
    eager = Trainer(small(tmp_path, "eager", **kw))
    graphed = Trainer(small(tmp_path, "graphed", cuda_graphs=True, **kw))
    assert eager.critic_graph is None and graphed.critic_graph is not None
    n = eager.config.iters
    assert metrics(eager, n) == metrics(graphed, n)
    for key in ("generator", "critic", "opt_g", "opt_d", "data", "noise_rng", "rng"):
        assert states_equal(eager.state_dict()[key], graphed.state_dict()[key]), key
    per_iter = eager.critic_iterations(0)
    assert graphed.critic_graph.calls >= n * min(per_iter, eager.config.n_critic)
    assert graphed.generator_graph.calls == n


def test_a_graph_run_resumes_without_graphs_and_back(tmp_path, graphs_on_cpu):
    kw = dict(lipschitz="gp", lr_decay="linear")
    full = Trainer(small(tmp_path, "full", **kw))
    full.train()
    part = Trainer(small(tmp_path, "part", cuda_graphs=True, **kw))  # the same run, interrupted after 2 iterations
    metrics(part, 2)
    part.save()
    state = ckpt.load_checkpoint(part.out)
    assert state["config"]["cuda_graphs"] is True
    # resumed without graphs (cuda_graphs is resumable), then on with them again
    resumed = Trainer(cfgmod.from_dict({**state["config"], "iters": 6, "cuda_graphs": False}), resume_state=state)
    for _ in range(2):
        resumed.iteration_step()
        resumed.iteration += 1
    resumed.save()
    state = ckpt.load_checkpoint(resumed.out)
    again = Trainer(cfgmod.from_dict({**state["config"], "cuda_graphs": True}), resume_state=state)
    again.train()
    for key in ("generator", "critic", "opt_g", "opt_d", "data", "noise_rng"):
        assert states_equal(full.state_dict()[key], again.state_dict()[key]), key


@pytest.mark.cuda
@needs_cuda
def test_a_step_that_cannot_be_captured_fails_with_a_clear_message():
    def syncs(x):
        return x * float(x.sum().item())  # a host read: refused during capture

    step = graphs.GraphedStep(syncs, capture=True, warmup=1)
    x = torch.ones(4, device="cuda")
    assert torch.equal(step(x), torch.full((4,), 4.0, device="cuda"))  # the eager warm-up call works
    with pytest.raises(RuntimeError, match="CUDA graph capture of syncs failed.*without CUDA graphs"):
        step(x)


@pytest.mark.cuda
@needs_cuda
def test_graphed_step_replays_new_inputs_on_the_gpu():
    def fn(x, y):
        return {"out": x * 2 + y}

    step = graphs.GraphedStep(fn, capture=True, warmup=2)
    for i in range(6):
        x, y = torch.full((5,), float(i), device="cuda"), torch.arange(5.0, device="cuda")
        out = step(x, y)["out"]
        torch.testing.assert_close(out, 2 * x + y)
    assert step.graph is not None and step.replays == 4


# ------------------------------------------------------------------------------------------------ trainer, GPU
def _close(a, b, rtol, atol):
    for (name, x), y in zip(a.items(), b.values()):
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            torch.testing.assert_close(x.cpu(), y.cpu(), rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


GPU_CASES = [dict(lipschitz="clip"), dict(lipschitz="clip", clip_order="before"), dict(lipschitz="gp"),
             dict(lipschitz="sn"), dict(lipschitz="gp", lr_decay="linear"), dict(lipschitz="clip", lr_decay="linear"),
             dict(lipschitz="clip", optimizer="adam"),
             dict(lipschitz="clip", dataset="digits", image_size=32, model="dcgan", ngf=8, ndf=8, batch_size=8),
             dict(lipschitz="gp", dataset="digits", image_size=32, model="dcgan", ngf=8, ndf=8, batch_size=8)]
GPU_IDS = ["clip", "clip-before", "gp", "sn", "gp-decay", "clip-decay", "clip-adam", "clip-dcgan", "gp-dcgan"]


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("kw", GPU_CASES, ids=GPU_IDS)
def test_captured_steps_match_eager_on_the_gpu(tmp_path, kw):
    if kw.get("dataset") == "digits":
        pytest.importorskip("sklearn")  # the GPU image may lack scikit-learn
    kw = {"lr_decay": "none", "device": "cuda", "iters": 8, **kw}
    eager = Trainer(small(tmp_path, "eager", **kw))
    graphed = Trainer(small(tmp_path, "graphed", cuda_graphs=True, **kw))
    n = eager.config.iters
    rows_e, rows_g = metrics(eager, n), metrics(graphed, n)
    # the steps were really captured and replayed (3 eager warm-up calls each, then the capture)
    assert graphed.critic_graph.graph is not None and graphed.critic_graph.replays == n * 2 - 3
    assert graphed.generator_graph.graph is not None and graphed.generator_graph.replays == n - 3
    for re_, rg in zip(rows_e, rows_g):
        assert re_.keys() == rg.keys()
        for k in re_:
            assert rg[k] == pytest.approx(re_[k], rel=1e-3, abs=2e-3 if k == "clip_saturation" else 1e-5), k
    _close(eager.critic.state_dict(), graphed.critic.state_dict(), rtol=1e-4, atol=1e-6)
    _close(eager.generator.state_dict(), graphed.generator.state_dict(), rtol=1e-4, atol=1e-6)
    assert states_equal(eager.noise_rng.get_state(), graphed.noise_rng.get_state())  # the same random stream
    if kw["lipschitz"] == "clip":
        assert all(p.abs().max() <= kw.get("clip_value", 0.01) for p in graphed.critic.parameters())


@pytest.mark.cuda
@needs_cuda
def test_gpu_graph_checkpoint_resumes_on_the_cpu_without_graphs(tmp_path):
    run = Trainer(small(tmp_path, "gpu", lipschitz="gp", lr_decay="linear", device="cuda", cuda_graphs=True,
                        iters=5))
    run.train()
    assert run.critic_graph.replays > 0
    state = ckpt.load_checkpoint(run.out)
    for opt in ("opt_d", "opt_g"):
        group = state[opt]["param_groups"][0]
        assert group["capturable"] is False and isinstance(group["lr"], float)
        assert all(s["step"].device.type == "cpu" for s in state[opt]["state"].values())
    cpu = Trainer(cfgmod.from_dict({**state["config"], "iters": 7, "device": "cpu", "cuda_graphs": False}),
                  resume_state=state)
    last = cpu.train()
    assert cpu.iteration == 7 and last is not None
