"""The README's Python snippets run as written (each in a fresh namespace with a small critic and batches)."""

import os
import re
from collections import OrderedDict

import pytest
import torch
from torch import nn

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def python_blocks():
    with open(README) as f:
        text = f.read()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def prelude():
    torch.manual_seed(0)
    critic = nn.Sequential(OrderedDict(body=nn.Linear(2, 16), act=nn.ReLU(), head=nn.Linear(16, 1)))
    return {"torch": torch, "nn": nn, "critic": critic, "real": torch.randn(8, 2), "fake": torch.randn(8, 2),
            "critic_optimizer": torch.optim.RMSprop(critic.parameters(), lr=5e-5), "gamma": 10.0}


def test_the_readme_has_snippets():
    blocks = python_blocks()
    assert len(blocks) >= 4
    assert any("for step in range" in b for b in blocks)  # the whole-loop example


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_snippet_runs(index):
    code = python_blocks()[index]
    ns = prelude()
    exec(compile(code, f"README.md python block {index}", "exec"), ns)
    if "loss_g" in ns:  # the whole loop trained: every value finite
        assert torch.isfinite(ns["loss_g"]) and torch.isfinite(ns["loss_d"])
        assert all(torch.isfinite(p).all() for p in ns["G"].parameters())


def test_the_cli_reference_lists_every_option():
    from wgan_ext.config import OPTIONS

    with open(README) as f:
        text = f.read()
    for name, f in OPTIONS.items():
        flag = name.replace("_", "-")
        row = f"| `--[no-]{flag}` |" if str(f.type) == "bool" else f"| `--{flag}` |"
        assert row in text, f"README's option table has no row for --{flag}"
