"""What a run folder (--out) already holds, so that no run is ever overwritten by accident.

    existing_run(out) -> ExistingRun | None   the run in a folder: its saved options and whether it has a checkpoint
    differences(config, saved) -> list         the options that differ from the saved run, where they may not
    clear(out)                                 remove what a run writes there (--overwrite); nothing else is touched

A folder holds a run when it has a checkpoint, a non-empty metrics.jsonl or a config.json. Starting wgan-train
there continues that run when the options match (as --resume would), and refuses otherwise.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

from .checkpoint import LAST

# what a run writes into its folder (and all that --overwrite removes)
RUN_FILES = ("config.json", "metrics.jsonl", "eval.jsonl", "eval.json")
RUN_FOLDERS = ("checkpoints", "plots", "tb")


@dataclasses.dataclass
class ExistingRun:
    folder: str
    config: dict | None      # the saved options (config.json), None when only other files are there
    checkpoint: str | None   # checkpoints/last.pt when it exists
    metrics_lines: int       # lines in metrics.jsonl


def existing_run(out: str) -> ExistingRun | None:
    if not os.path.isdir(out):
        return None
    checkpoint = os.path.join(out, LAST)
    checkpoint = checkpoint if os.path.exists(checkpoint) else None
    config = None
    try:
        with open(os.path.join(out, "config.json")) as f:
            config = json.load(f)
    except (OSError, ValueError):
        pass
    lines = 0
    try:
        with open(os.path.join(out, "metrics.jsonl")) as f:
            lines = sum(1 for line in f if line.strip())
    except OSError:
        pass
    if checkpoint is None and config is None and lines == 0:
        return None
    return ExistingRun(out, config if isinstance(config, dict) else None, checkpoint, lines)


def differences(config: dict, saved: dict, fields: dict, may_change) -> list[tuple[str, object, object]]:
    """(option, saved value, new value) for every option outside `may_change` whose value differs; an option the
    saved run predates counts with its default."""
    out = []
    for name, f in fields.items():
        if name in may_change:
            continue
        before = saved.get(name, f.default)
        if config.get(name) != before:
            out.append((name, before, config.get(name)))
    return out


def clear(out: str) -> None:
    for name in RUN_FILES:
        try:
            os.unlink(os.path.join(out, name))
        except FileNotFoundError:
            pass
    for name in RUN_FOLDERS:
        shutil.rmtree(os.path.join(out, name), ignore_errors=True)
