"""The trainer's steady state reads nothing back from the device (issue 14, item 1): the metrics of --log-every
iterations come back in one transfer with the parameters' finiteness (one multi-tensor reduction), and the NaN/Inf
guard acts on those blocks. Counted on the CPU by recording every device-to-host read that the package's own code
makes (.item(), .tolist(), bool(), float(), int() of a tensor): on a GPU each of them waits for the device."""

import json
import os
import sys

import pytest
import torch

from wgan_ext.train import Trainer, TrainConfig, TrainingDiverged, load_checkpoint, resolve

READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")
PACKAGE = os.path.dirname(os.path.dirname(sys.modules["wgan_ext.train"].__file__))


@pytest.fixture
def host_reads(monkeypatch):
    """(where, what) of each host read of a tensor made directly by wgan_ext's code."""
    seen = []
    for name in READS:
        real = getattr(torch.Tensor, name)

        def read(self, *a, _real=real, _name=name, **k):
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(PACKAGE):
                seen.append((f"{os.path.relpath(caller, PACKAGE)}:{sys._getframe(1).f_lineno}", _name))
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, read)
    return seen


def small(tmp_path, **kw):
    base = dict(dataset="8gaussians", batch_size=16, hidden=16, n_critic=2, out=str(tmp_path), progress=False,
                tensorboard=False, plots=False, checkpoint_every=1000, checkpoint_minutes=0)
    return resolve(TrainConfig(**{**base, **kw}))


@pytest.mark.parametrize("mode, extra", [("clip", {}), ("clip", {"fused_optimizer": True}), ("gp", {}), ("sn", {})])
def test_one_read_per_block_of_iterations(tmp_path, host_reads, mode, extra):
    t = Trainer(small(tmp_path, lipschitz=mode, iters=40, log_every=20, **extra))
    t.train()
    assert [what for _, what in host_reads] == ["tolist", "tolist"], host_reads  # iterations 20 and 40
    with open(os.path.join(tmp_path, "metrics.jsonl")) as f:
        assert [json.loads(line)["iteration"] for line in f] == list(range(1, 41))


def test_blocks_also_end_where_a_checkpoint_is_due(tmp_path, host_reads):
    Trainer(small(tmp_path, iters=12, log_every=100, checkpoint_every=5)).train()
    assert len(host_reads) == 3  # iterations 5, 10 (checkpoints) and 12 (the end)
    assert load_checkpoint(str(tmp_path))["iteration"] == 12


@pytest.mark.parametrize("where", ["metric", "parameter"])
def test_the_nan_guard_stops_at_the_first_bad_block_and_keeps_the_last_good_checkpoint(tmp_path, where):
    t = Trainer(small(tmp_path, lipschitz="clip", iters=40, log_every=4, checkpoint_every=8))
    real_step = t._step

    def step():
        row, d = real_step()
        if where == "metric" and t.iteration == 13:  # the W estimate of generator iteration 14
            row = row.clone()
            row[0] = float("nan")
        if where == "parameter" and t.iteration == 15:  # a weight, after the last step of the block 13-16
            with torch.no_grad():
                next(t.critic.parameters())[0] = float("inf")
        return row, d

    t._step = step
    with pytest.raises(TrainingDiverged) as e:
        t.train()
    with open(os.path.join(tmp_path, "metrics.jsonl")) as f:
        its = [json.loads(line)["iteration"] for line in f]
    if where == "metric":  # the exact iteration; its line and those after it are not written
        assert "generator iteration 14: w_estimate became non-finite" in str(e.value)
        assert its == list(range(1, 14))
    else:  # parameters are checked at the block's end (a bad weight also shows in the next metrics)
        assert "generator iteration 16: critic parameter(s) net.0.weight became non-finite" in str(e.value)
        assert its == list(range(1, 17))
    assert load_checkpoint(str(tmp_path))["iteration"] == 8  # the last good one (16 was never written)


def test_all_finite_is_one_reduction_that_sees_nan_and_inf_anywhere(tmp_path):
    t = Trainer(small(tmp_path, iters=1))
    assert bool(t._all_finite())
    for value in (float("nan"), float("inf"), float("-inf")):
        for _, _, p in t._named_parameters():
            for index in (0, p.numel() // 2, p.numel() - 1):
                with torch.no_grad():
                    old = p.view(-1)[index].clone()
                    p.view(-1)[index] = value
                    assert not bool(t._all_finite()), (value, index)
                    p.view(-1)[index] = old
    assert bool(t._all_finite())
