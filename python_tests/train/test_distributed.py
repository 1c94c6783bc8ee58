"""Data-parallel training under torchrun: two CPU processes with gloo, every mode.

One torchrun launch (python_tests/train/_ddp_worker.py) trains small runs of clip, gp and sn on 2 ranks and saves what
each rank ended with; the tests compare the ranks with each other (bitwise) and with the single-process run on the
same global batch (within float32 round-off: the two halves' gradients are summed in a different order). Another
launch runs the README's command line. Plus the pieces that need no processes: batch shares, the batch-size error.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from wgan_ext.train import distributed
from wgan_ext.train.config import ConfigError, TrainConfig, resolve
from wgan_ext.train.data import Batches, image_data, toy_distribution
from wgan_ext.train import Trainer, config_from_args, main

MODES = ["clip", "gp", "sn"]
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
# float32 round-off only: measured max |DDP - single process| over all weights after 3-4 generator iterations is
# 1.5e-8 to 9.6e-8 (clip, gp, sn). A wrong share, a missing average or a different sample moves weights by about a
# learning-rate step (5e-5 to 1e-4): measured 4e-4 when both ranks used the same noise share.
# Adam's update lr * m / (sqrt(v) + eps) turns round-off in a near-zero gradient into up to a whole lr step, so
# the comparisons use a constant lr of 1e-4 (with the toy default of 3e-4 one sn weight differs by 2e-4) and
# beta1 0.5 (with sn's toy default of 0, m is the last gradient alone, and the sn critics differed by up to 8.3e-5).
ATOL = 2e-6


def torchrun(*args, timeout=180):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the installed wgan_ext, as in the tests themselves
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    r = torchrun(os.path.join(HERE, "_ddp_worker.py"), str(root))
    assert r.returncode == 0, r.stdout + r.stderr
    return root, [torch.load(root / f"rank{k}.pt", weights_only=True) for k in (0, 1)]


def small(out, **kw) -> TrainConfig:
    base = dict(dataset="8gaussians", iters=3, batch_size=16, hidden=32, n_critic=2, progress=False, lr_decay="none",
                lr_d=1e-4, beta1=0.5,  # see ATOL
                tensorboard=False, plots=False, n_samples=32, out=str(out))
    base.update(kw)
    return resolve(TrainConfig(**base))


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def assert_same_models(got: dict, want: dict, atol: float):
    for part in ("generator", "critic"):
        d = max_diff(got[part], want[part])
        assert d <= atol, f"{part}: max |DDP - single process| = {d:.3g} > {atol}"


@pytest.mark.parametrize("mode", MODES)
def test_ranks_stay_identical(ranks, mode):
    """Parameters and buffers (SN's u, v; nothing is re-broadcast during training except BatchNorm statistics)."""
    _, (r0, r1) = ranks
    assert r0["world_size"] == r1["world_size"] == 2
    for part in ("generator", "critic", "generator_ema"):  # the generator's EMA too (--g-ema)
        a, b = r0["runs"][mode][part], r1["runs"][mode][part]
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{mode} {part}.{k} differs between the ranks"
    if mode == "sn":
        assert any(k.endswith("_u") for k in r0["runs"][mode]["critic"])
    assert r0["runs"][mode]["last"] == {**r1["runs"][mode]["last"], "seconds": r0["runs"][mode]["last"]["seconds"]}


@pytest.mark.parametrize("mode", MODES)
def test_ddp_equals_single_process(ranks, mode, tmp_path):
    _, (r0, _) = ranks
    c = small(tmp_path / "single", lipschitz=mode)
    t = Trainer(c)
    start = {"generator": {k: v.clone() for k, v in t.generator.state_dict().items()},
             "critic": {k: v.clone() for k, v in t.critic.state_dict().items()}}
    last = t.train()
    single = {"generator": t.generator.state_dict(), "critic": t.critic.state_dict()}
    ddp = r0["runs"][mode]
    assert_same_models(ddp, single, ATOL)
    # the comparison means something: training moved the weights far more than the tolerance
    assert max_diff(single["critic"], start["critic"]) > 100 * ATOL
    assert max_diff(single["generator"], start["generator"]) > 100 * ATOL
    # the logged values are those of the global batch
    for k, v in last.items():
        if k not in ("seconds", "iteration", "critic_iters"):
            assert ddp["last"][k] == pytest.approx(v, rel=1e-4, abs=1e-5), k


def test_rank_0_alone_writes(ranks):
    root, _ = ranks
    for mode in MODES:
        assert not (root / f"{mode}-rank1").exists(), f"rank 1 wrote {mode}-rank1"
        assert (root / f"{mode}-rank0" / "checkpoints" / "last.pt").exists()
    gp = root / "gp-rank0"
    assert (gp / "plots" / "samples.png").exists() and any((gp / "tb").iterdir())
    with open(gp / "metrics.jsonl") as f:
        assert [json.loads(line)["iteration"] for line in f] == [1, 2, 3]


@pytest.mark.parametrize("mode", MODES)
def test_resume_under_another_world_size(ranks, mode, tmp_path):
    """2 iterations on 2 processes, then 2 more in one: the same as 4 in one process (within round-off)."""
    root, (r0, _) = ranks
    cfg, state = config_from_args(["--resume", str(root / f"copy-{mode}"), "--iters", "4"])
    assert state["iteration"] == 2
    t = Trainer(cfg, resume_state=state)
    assert_same_models({"generator": t.generator.state_dict(), "critic": t.critic.state_dict()},
                       r0["resume"][mode], 0.0)  # the checkpoint is rank 0's models exactly
    t.train()
    s = Trainer(small(tmp_path / "single", lipschitz=mode, iters=4))
    s.train()
    assert_same_models({"generator": t.generator.state_dict(), "critic": t.critic.state_dict()},
                       {"generator": s.generator.state_dict(), "critic": s.critic.state_dict()}, ATOL)


@pytest.mark.parametrize("mode", MODES)
def test_resume_under_the_same_world_size_is_exact(ranks, mode):
    """2 iterations on 2 processes, resumed on 2 processes to 3: bitwise the uninterrupted 3-iteration run."""
    _, (r0, r1) = ranks
    for r in (r0, r1):
        assert_same_models(r["resume_same"][mode], r0["runs"][mode], 0.0)


def test_nan_on_one_rank_stops_every_rank(ranks):
    _, (r0, r1) = ranks
    assert r1["nan_guard"] is not None and "critic parameter" in r1["nan_guard"]
    assert r0["nan_guard"] is not None and "another process" in r0["nan_guard"]


def test_shutdown_frees_the_process_group(ranks):
    """Not kept alive past destroy_process_group (by torch.distributed.nn, imported after the group's creation):
    its gloo threads would then outlive it, and now and then abort a finished run at exit."""
    _, (r0, r1) = ranks
    assert r0["group_freed"] and r1["group_freed"]


def test_the_documented_command_runs(tmp_path):
    with open(os.path.join(ROOT, "docs", "training.md")) as f:
        lines = [ln.strip() for ln in f if ln.strip().startswith("torchrun --standalone --nproc_per_node 2")]
    assert lines, "docs/training.md: no CPU two-process command"
    args = lines[0].split("#")[0].split()[4:]  # after 'torchrun --standalone --nproc_per_node 2'
    assert args[:2] == ["-m", "wgan_ext.train"] and "--device" in args
    out = tmp_path / "run"
    r = torchrun(*args, "--iters", "2", "--hidden", "16", "--n-critic", "1", "--no-plots", "--no-tensorboard",
                 "--no-progress", "--out", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr.count("wgan-train: done") == 1  # rank 0 alone speaks
    assert "2 processes" in r.stderr
    with open(out / "metrics.jsonl") as f:
        assert [json.loads(line)["iteration"] for line in f] == [1, 2]  # written once, not once per rank
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["iteration"] == 2


# ------------------------------------------------------------------------------------------- no processes needed
def test_batch_shares_make_up_the_global_batch(tmp_path):
    from test_data import _write_pngs

    _write_pngs(tmp_path / "imgs", 29, size=(8, 8))
    folder = image_data("folder", root=str(tmp_path / "imgs"), image_size=8)  # read through a DataLoader
    for source, steps in ((toy_distribution("8gaussians"), 20), (image_data("digits", image_size=8), 200),
                          (folder, 7)):
        whole = Batches(source, 12, seed=3)
        parts = [Batches(source, 12, seed=3, rank=r, world_size=3) for r in range(3)]
        for _ in range(steps):  # image data: several epochs (the last incomplete batch dropped)
            want = whole.next()
            got = torch.cat([p.next() for p in parts])
            assert torch.equal(got, want)
        assert all(p.state_dict().keys() == whole.state_dict().keys() for p in parts)
    with pytest.raises(ValueError, match="divisible"):
        Batches(toy_distribution("8gaussians"), 10, seed=0, rank=0, world_size=3)


def test_batch_size_must_divide_over_the_processes(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    argv = ["--batch-size", "15", "--iters", "1", "--out", str(tmp_path / "run"), "--device", "cpu"]
    for rank, says in (("0", True), ("1", False)):  # refused before joining the group; rank 0 alone says why
        monkeypatch.setenv("RANK", rank)
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert ("--batch-size: 15 is not divisible by the world size 2" in err) == says
    assert not (tmp_path / "run").exists()
    assert not torch.distributed.is_initialized()


def test_launch_info(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert distributed.launch_info() == (0, 1, 0)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(ConfigError, match="inconsistent"):
        distributed.launch_info()
    assert distributed.Distributed(rank=1, world_size=4).shard(16) == slice(4, 8)


def _fake_gpus(monkeypatch, count=2, current=1):
    """This process as if torch saw `count` GPUs with cuda:`current` current (nothing here touches CUDA)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)


@pytest.mark.parametrize("name, index", [("cuda", 1), ("auto", 1), ("cuda:0", 0), ("cuda:1", 1)])
def test_a_cuda_device_always_has_its_index(name, index, monkeypatch):
    """torch.cuda.set_device (which the trainer calls) refuses a bare "cuda"; every CUDA device picked has an index."""
    _fake_gpus(monkeypatch)
    device = distributed.pick_device(name)
    assert device == torch.device("cuda", index)
    assert torch.cuda._utils._get_device_index(device) == index  # what set_device does with it


def test_a_cuda_index_beyond_the_gpus_is_refused(monkeypatch):
    _fake_gpus(monkeypatch)
    with pytest.raises(ConfigError, match=r"'cuda:2', but torch sees 2 CUDA device\(s\): cuda:0 to cuda:1"):
        distributed.pick_device("cuda:2")


@pytest.mark.parametrize("device", ["auto", "cuda"])
def test_the_trainer_sets_a_cuda_device_torch_accepts(device, monkeypatch, tmp_path):
    """The first thing a Trainer does on a GPU (it crashed there with --device auto or cuda: set_device got a bare
    "cuda"); faked here up to that call, which is replaced by torch's own argument check."""
    _fake_gpus(monkeypatch, count=1, current=0)
    seen = []

    class Stop(Exception):
        pass

    def set_device(d):
        seen.append(torch.cuda._utils._get_device_index(d))  # raises on a device without an index, as set_device
        raise Stop
    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    cfg = resolve(TrainConfig(dataset="8gaussians", iters=1, batch_size=8, hidden=8, device=device,
                              out=str(tmp_path / "run"), progress=False, tensorboard=False, plots=False))
    with pytest.raises(Stop):
        Trainer(cfg)
    assert seen == [0]
