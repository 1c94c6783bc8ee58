"""The README and the docs/ pages: every Python snippet runs as written (each in a fresh namespace with a small critic
and batches), the option table of docs/training.md is complete, and every relative link points to a file that
exists."""

import glob
import os
import re
from collections import OrderedDict

import pytest
import torch
from torch import nn

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
README = "README.md"
TRAINING = "docs/training.md"


def pages():
    """README.md and every docs/*.md, as paths relative to the repository root."""
    docs = sorted(os.path.relpath(p, ROOT).replace(os.sep, "/") for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
    return [README] + docs


def read(page):
    with open(os.path.join(ROOT, page), encoding="utf-8") as f:
        return f.read()


def python_blocks(page):
    return re.findall(r"```python\n(.*?)```", read(page), flags=re.S)


def snippets():
    return [pytest.param(page, i, id=f"{page}:{i}") for page in pages() for i in range(len(python_blocks(page)))]


def prelude():
    torch.manual_seed(0)
    critic = nn.Sequential(OrderedDict(body=nn.Linear(2, 16), act=nn.ReLU(), head=nn.Linear(16, 1)))
    return {"torch": torch, "nn": nn, "critic": critic, "real": torch.randn(8, 2), "fake": torch.randn(8, 2),
            "critic_optimizer": torch.optim.RMSprop(critic.parameters(), lr=5e-5), "gamma": 10.0}


def test_the_readme_has_snippets():
    blocks = python_blocks(README)
    assert len(blocks) >= 3
    assert any("for step in range" in b for b in blocks)  # the whole-loop example


@pytest.mark.parametrize("page, index", snippets())
def test_snippet_runs(page, index):
    code = python_blocks(page)[index]
    ns = prelude()
    exec(compile(code, f"{page} python block {index}", "exec"), ns)
    if "loss_g" in ns:  # the whole loop trained: every value finite
        assert torch.isfinite(ns["loss_g"]) and torch.isfinite(ns["loss_d"])
        assert all(torch.isfinite(p).all() for p in ns["G"].parameters())


def test_the_cli_reference_lists_every_option():
    from wgan_ext.train.config import OPTIONS

    text = read(TRAINING)
    for name, f in OPTIONS.items():
        flag = name.replace("_", "-")
        row = f"| `--[no-]{flag}` |" if str(f.type) == "bool" else f"| `--{flag}` |"
        assert row in text, f"{TRAINING}'s option table has no row for --{flag}"


# ------------------------------------------------------------------------------------------------------ links
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _prose(text):
    """The text outside code blocks and code spans (a code span that is a link's text, [`x`](x), stays)."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.sub(r"`[^`\n]*`(?!\])", "", text)


def relative_links(page):
    """The targets of [text](target) in a page, leaving out http(s) and mailto links."""
    return [t for t in LINK.findall(_prose(read(page))) if not re.match(r"(https?:|mailto:)", t)]


def anchors(page):
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces to hyphens, -1, -2 on
    repeats."""
    seen, out = {}, set()
    for heading in re.findall(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.sub(r"```.*?```", "", read(page), flags=re.S),
                              flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")
        out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return out


def test_the_pages_have_relative_links():  # the link test below would pass vacuously if the pattern broke
    assert relative_links(README) and all(relative_links(p) for p in pages()[1:])
    assert "all-three-in-one-loop" in anchors(README)


@pytest.mark.parametrize("page", pages())
def test_every_relative_link_points_to_a_file(page):
    base = os.path.dirname(os.path.join(ROOT, page))
    bad = []
    for target in relative_links(page):
        file, _, anchor = target.partition("#")
        path = os.path.normpath(os.path.join(base, file)) if file else os.path.join(ROOT, page)
        if os.path.commonpath([ROOT, path]) != ROOT or not os.path.exists(path):
            bad.append(f"{target} (no such file)")
        elif anchor and path.endswith(".md") and anchor not in anchors(os.path.relpath(path, ROOT)):
            bad.append(f"{target} (no such heading)")
    assert not bad, f"{page}: broken links: {bad}"
