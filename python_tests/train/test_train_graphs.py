"""CUDA graphs in the trainer (--cuda-graphs; GraphedStep itself: library/test_graphs.py).

On the CPU: the refusals and the trainer's graph-mode data flow (inputs drawn outside the step, static buffers)
bitwise against eager -- everything but the capture.
On a GPU (marked cuda): captured and replayed steps against eager in every mode, and their checkpoints."""

import pytest
import torch

from wgan_ext import graphs
from wgan_ext.train import Trainer, build_parser, main
from wgan_ext.train import checkpoint as ckpt
from wgan_ext.train import config as cfgmod
from wgan_ext.train import trainer as trainer_module
from wgan_ext.train.config import ConfigError, TrainConfig, resolve

from conftest import needs_cuda, states_equal

MODES = ["clip", "gp", "sn"]


def small(tmp_path, name="run", **kw) -> TrainConfig:
    """A small run, eager unless cuda_graphs says otherwise."""
    base = dict(dataset="8gaussians", iters=6, batch_size=16, hidden=32, n_critic=2, out=str(tmp_path / name),
                progress=False, tensorboard=False, plots=False, n_samples=32, checkpoint_every=3, cuda_graphs="off")
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
    (("cpu", 1, "gp"), "needs a CUDA device"),
    (("cuda", 2, "gp"), "runs in one process; this run has 2"),
    (("cuda", 1, "fused"), "--fused-optimizer"),
])
def test_check_supported_names_the_problem(args, message):
    device, world, mode = args
    kw = dict(lipschitz="clip", fused_optimizer=True) if mode == "fused" else dict(lipschitz=mode)
    with pytest.raises(ConfigError, match=message):
        trainer_module.check_graphs_supported(resolve(TrainConfig(**kw)), torch.device(device), world)
    for mode in ("clip", "gp", "sn"):  # the supported cases raise nothing
        trainer_module.check_graphs_supported(resolve(TrainConfig(lipschitz=mode)), torch.device("cuda"), 1)


def test_cuda_graphs_option_auto_on_off():
    assert TrainConfig().cuda_graphs == "auto"  # the default
    assert TrainConfig(cuda_graphs=True).cuda_graphs == "on"  # configs and checkpoints of the flag days
    assert TrainConfig(cuda_graphs=False).cuda_graphs == "off"
    with pytest.raises(ConfigError, match="--cuda-graphs: 'yes' is not one of auto, on, off"):
        resolve(TrainConfig(cuda_graphs="yes"))
    assert "cuda_graphs" in cfgmod.RESUMABLE
    parse = lambda *a: vars(build_parser().parse_args(list(a))).get("cuda_graphs")  # noqa: E731
    assert (parse(), parse("--cuda-graphs"), parse("--cuda-graphs", "auto"), parse("--no-cuda-graphs"),
            parse("--cuda-graphs", "off")) == (None, "on", "auto", "off", "off")


@pytest.mark.parametrize("mode, kw", [("auto", {}), ("auto", dict(lipschitz="clip", fused_optimizer=True)),
                                      ("off", {})])
def test_auto_and_off_train_eagerly_where_graphs_do_not_apply(tmp_path, mode, kw):
    t = Trainer(small(tmp_path, cuda_graphs=mode, device="cpu", **kw))  # auto on the CPU: eager, silently
    assert t.critic_graph is None and t.generator_graph is None


def test_use_graphs_decides_by_mode():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert trainer_module.use_graphs(resolve(TrainConfig(cuda_graphs="auto")), cuda, 1)
    assert not trainer_module.use_graphs(resolve(TrainConfig(cuda_graphs="auto")), cuda, 2)
    assert not trainer_module.use_graphs(resolve(TrainConfig(cuda_graphs="auto", lipschitz="clip",
                                                             fused_optimizer=True)), cuda, 1)
    assert not trainer_module.use_graphs(resolve(TrainConfig(cuda_graphs="off")), cuda, 1)
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        trainer_module.use_graphs(resolve(TrainConfig(cuda_graphs="on")), cpu, 1)


# ------------------------------------------------------------------------------------------------ trainer, CPU
@pytest.fixture
def graphs_on_cpu(monkeypatch):
    """Let --cuda-graphs through on the CPU: the graph-mode data flow runs without the capture."""
    monkeypatch.setattr(trainer_module, "check_graphs_supported", lambda *args: None)


@pytest.mark.parametrize("kw", [dict(lipschitz="clip"), dict(lipschitz="clip", clip_order="before"),
                                dict(lipschitz="gp"), dict(lipschitz="sn"), dict(lipschitz="gp", lr_decay="linear"),
                                dict(lipschitz="clip", diters_schedule="official", iters=2)],
                         ids=["clip", "clip-before", "gp", "sn", "gp-decay", "clip-official"])
def test_graph_data_flow_is_bitwise_eager_on_the_cpu(tmp_path, graphs_on_cpu, kw):
    kw = {"lr_decay": "none", **kw}
    eager = Trainer(small(tmp_path, "eager", **kw))
    graphed = Trainer(small(tmp_path, "graphed", cuda_graphs="on", **kw))
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
    part = Trainer(small(tmp_path, "part", cuda_graphs="on", **kw))  # the same run, interrupted after 2 iterations
    metrics(part, 2)
    part.save()
    state = ckpt.load_checkpoint(part.out)
    assert state["config"]["cuda_graphs"] == "on"
    # resumed without graphs (cuda_graphs is resumable), then on with them again
    resumed = Trainer(cfgmod.from_dict({**state["config"], "iters": 6, "cuda_graphs": "off"}), resume_state=state)
    for _ in range(2):
        resumed.iteration_step()
        resumed.iteration += 1
    resumed.save()
    state = ckpt.load_checkpoint(resumed.out)
    again = Trainer(cfgmod.from_dict({**state["config"], "cuda_graphs": "on"}), resume_state=state)
    again.train()
    for key in ("generator", "critic", "opt_g", "opt_d", "data", "noise_rng"):
        assert states_equal(full.state_dict()[key], again.state_dict()[key]), key


@pytest.mark.parametrize("mode", ["auto", "on"])
def test_a_failed_capture_falls_back_to_eager_under_auto(tmp_path, graphs_on_cpu, monkeypatch, mode):
    """A capture failing at the 4th call of a step (after the 3 warm-ups): auto warns once and goes on eagerly,
    repeating that step, so the run equals an eager one bit for bit; on stops with the capture's error."""
    real = graphs.GraphedStep.__call__

    def call(self, *inputs):
        if self.calls + 1 == 4 and getattr(self.fn, "__name__", "") == "_critic_update":
            self.calls += 1
            raise graphs.GraphCaptureError("CUDA graph capture of _critic_update failed (simulated)")
        return real(self, *inputs)

    monkeypatch.setattr(graphs.GraphedStep, "__call__", call)
    kw = dict(lipschitz="gp", iters=4)
    eager = Trainer(small(tmp_path, "eager", **kw))
    eager.train()
    run = Trainer(small(tmp_path, "graphed", cuda_graphs=mode, **kw))
    if mode == "on":
        with pytest.raises(graphs.GraphCaptureError, match="simulated"):
            run.train()
        return
    with pytest.warns(RuntimeWarning, match="--cuda-graphs auto: CUDA graph capture of _critic_update failed "
                                            r"\(simulated\); training goes on without CUDA graphs") as seen:
        run.train()
    assert len([w for w in seen if "cuda-graphs" in str(w.message)]) == 1
    assert run.critic_graph is None and run.generator_graph is None
    for key in ("generator", "critic", "opt_g", "opt_d", "data", "noise_rng"):
        assert states_equal(eager.state_dict()[key], run.state_dict()[key]), key


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
    graphed = Trainer(small(tmp_path, "graphed", cuda_graphs="on", **kw))
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
    if kw["lipschitz"] == "clip" and kw.get("clip_order", "after") == "after":  # before: the last step comes after
        assert all(p.abs().max() <= kw.get("clip_value", 0.01) for p in graphed.critic.parameters())


@pytest.mark.cuda
@needs_cuda
def test_gpu_graph_checkpoint_resumes_on_the_cpu_without_graphs(tmp_path):
    run = Trainer(small(tmp_path, "gpu", lipschitz="gp", lr_decay="linear", device="cuda", cuda_graphs="on",
                        iters=5))
    run.train()
    assert run.critic_graph.replays > 0
    state = ckpt.load_checkpoint(run.out)
    for opt in ("opt_d", "opt_g"):
        group = state[opt]["param_groups"][0]
        assert group["capturable"] is False and isinstance(group["lr"], float)
        assert all(s["step"].device.type == "cpu" for s in state[opt]["state"].values())
    cpu = Trainer(cfgmod.from_dict({**state["config"], "iters": 7, "device": "cpu", "cuda_graphs": "off"}),
                  resume_state=state)
    last = cpu.train()
    assert cpu.iteration == 7 and last is not None


@pytest.mark.cuda
@needs_cuda
def test_a_graphed_gpu_run_resumes_with_graphs(tmp_path):
    kw = dict(lipschitz="gp", device="cuda", cuda_graphs="on", lr_decay="none", iters=8, checkpoint_every=4)
    full = Trainer(small(tmp_path, "full", **kw))
    full.train()
    part = Trainer(small(tmp_path, "part", **{**kw, "iters": 4}))
    part.train()
    state = ckpt.load_checkpoint(part.out)
    resumed = Trainer(cfgmod.from_dict({**state["config"], "iters": 8}), resume_state=state)  # prepared after loading
    assert all(g["capturable"] for opt in (resumed.opt_d, resumed.opt_g) for g in opt.param_groups)
    resumed.train()
    assert resumed.critic_graph.replays > 0
    _close(full.critic.state_dict(), resumed.critic.state_dict(), rtol=1e-4, atol=1e-6)
    _close(full.generator.state_dict(), resumed.generator.state_dict(), rtol=1e-4, atol=1e-6)


@pytest.mark.cuda
@needs_cuda
def test_graphs_with_file_backed_data_and_loader_workers(tmp_path):
    """Pinned host memory is allocated by the DataLoader's pin-memory thread while the steps are captured: with
    capture_error_mode "thread_local" that does not invalidate the capture."""
    pytest.importorskip("torchvision")
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(64):
        Image.new("RGB", (32, 32), (i * 3, 255 - i * 3, i)).save(folder / f"{i:03d}.png")
    run = Trainer(small(tmp_path, "folder", dataset="folder", data_root=str(folder), image_size=32, model="dcgan",
                        ngf=8, ndf=8, batch_size=8, num_workers=2, lipschitz="gp", device="cuda", cuda_graphs="on",
                        iters=6))
    last = run.train()
    assert run.critic_graph.replays > 0 and run.generator_graph.replays > 0
    assert all(v == v for v in last.values() if isinstance(v, float))  # finite: no NaN

