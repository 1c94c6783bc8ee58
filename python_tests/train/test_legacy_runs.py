"""Runs made by older code stay valid: the checkpoints in data/<commit>/ (made by data/make_legacy_runs.py at that
commit) resume, and the same seeds give the same metrics and models as that code gave, in every mode.

Bit for bit where this machine matches the one that made the data (same torch, CPU capability and architecture:
the CPU kernels give the same bits on any thread count); elsewhere to float rounding, since another torch or
another vector unit may order a sum differently."""

import json
import os
import platform
import shutil
import sys

import pytest
import torch

from wgan_ext.train import Trainer, from_dict, load_checkpoint
from wgan_ext.train.config import before_it_existed

from conftest import REQUIRE_OPS, states_equal

DATA = os.path.join(os.path.dirname(__file__), "data")
sys.path.insert(0, DATA)
import make_legacy_runs as legacy  # noqa: E402  (the configurations the data was made with)

COMMIT = "e3980c0"
MADE = json.load(open(os.path.join(DATA, COMMIT, "made_with.json")))
SAME_MACHINE = (MADE["torch"] == str(torch.__version__) and MADE["machine"] == platform.machine()
                and MADE["cpu_capability"] == torch.backends.cpu.get_cpu_capability())
# the data was made with the compiled CPU kernels; the pure-torch fallback agrees only to rounding
EXACT = SAME_MACHINE and REQUIRE_OPS


def expected(name):
    with open(os.path.join(DATA, COMMIT, f"{name}-metrics.json")) as f:
        return json.load(f)


def metrics(run):
    with open(os.path.join(run, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in f]


def exact_for(name):
    # spectral norm's sigma and W / sigma come from one op since commit 8eedddb (torch's mv + vdot before): the same
    # math, summed in another order, so those runs agree to rounding, not bit for bit
    return EXACT and not name.startswith("sn")


def check_metrics(got, want, exact=True):
    assert [m["iteration"] for m in got] == [m["iteration"] for m in want]
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        if exact:
            assert g == w
        else:
            assert g == pytest.approx(w, rel=1e-4, abs=1e-6)


def check_models(t, name):
    final = torch.load(os.path.join(DATA, COMMIT, f"{name}-final.pt"), weights_only=True)
    for label in ("generator", "critic"):
        got = getattr(t, label).state_dict()
        if exact_for(name):
            assert states_equal(got, final[label]), label
        else:
            assert got.keys() == final[label].keys()
            for k in got:
                torch.testing.assert_close(got[k], final[label][k], rtol=1e-4, atol=1e-6)


# Defaults changed since the data was made, given explicitly so that the same options run again: sn's MLP critic
# has had MaxMin activations by default since 2026-12-03 (and on toy data Adam's beta1 0 since), and clip on toy
# data a linear learning-rate decay from a 4x higher rate (wgan_ext/train/constraints/).
CLIP_TOY = {"lr_decay": "none", "lr_d": 5e-5}
CHANGED_DEFAULTS = {"sn": {"critic_activation": "relu", "beta1": 0.5}, "clip": CLIP_TOY, "clip-before": CLIP_TOY,
                    "clip-fused": CLIP_TOY}


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the data's run folder is the relative "run"
    return tmp_path


@pytest.mark.parametrize("name", list(legacy.CONFIGS))
def test_same_seeds_same_run(in_tmp, name):
    t = Trainer(legacy.config(name, **CHANGED_DEFAULTS.get(name, {})))
    t.train()
    check_metrics(metrics("run"), expected(name), exact_for(name))
    check_models(t, name)


@pytest.mark.parametrize("name", list(legacy.CONFIGS))
def test_old_checkpoint_resumes_to_the_same_run(in_tmp, name):
    state = load_checkpoint(os.path.join(DATA, COMMIT, f"{name}-it3.pt"))
    assert state["iteration"] == 3 and "constraint" not in state  # made before the constraints had a state
    want = expected(name)
    os.makedirs("run")
    with open(os.path.join("run", "metrics.jsonl"), "w") as f:  # the old run's first three lines
        f.writelines(json.dumps(m) + "\n" for m in want[:3])
    # what wgan-train --resume merges: options the old config lacks get the values they had before they existed
    t = Trainer(from_dict({**before_it_existed(state["config"]), **state["config"], "iters": 6}), resume_state=state)
    t.train()
    check_metrics(metrics("run"), want, exact_for(name))
    check_models(t, name)
    shutil.rmtree("run")
