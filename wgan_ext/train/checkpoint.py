"""Checkpoints of the trainer: atomic writes, loads with ``torch.load(weights_only=True)``, RNG states.

    save_checkpoint(state, path)      write to a temporary file in the same folder, fsync, then rename over `path`:
                                      a crash mid-write leaves the previous checkpoint as it was
    load_checkpoint(path)             torch.load(weights_only=True) plus a format check; a run folder finds
                                      checkpoints/last.pt
    rng_state() / set_rng_state(s)    torch (CPU and every CUDA device), numpy and Python's `random`, as plain
                                      tensors, lists and ints (nothing that weights_only refuses)
"""

from __future__ import annotations

import os
import random
import tempfile

import torch

FORMAT = "wgan_ext.checkpoint/1"
LAST = os.path.join("checkpoints", "last.pt")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says which file and why."""


def save_checkpoint(state: dict, path: str) -> None:
    """Write `state` to `path` atomically (temporary file + fsync + os.replace)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def remove_stale_temporaries(folder: str) -> None:
    """Remove the temporary files of checkpoint writes that were cut off (a process killed mid-write): only a live
    save_checkpoint has one open, and the trainer calls this before it writes any."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return
    for name in names:
        if name.startswith(".tmp-") and name.endswith(".pt"):
            try:
                os.unlink(os.path.join(folder, name))
            except FileNotFoundError:
                pass


def resolve_checkpoint_path(path: str) -> str:
    """A checkpoint file, or a run folder (then its checkpoints/last.pt)."""
    if os.path.isdir(path):
        candidate = os.path.join(path, LAST)
        if not os.path.exists(candidate):
            raise CheckpointError(f"no checkpoint in run folder {path!r} (looked for {LAST})")
        return candidate
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    return path


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """Load a trainer checkpoint (file or run folder) with ``weights_only=True``."""
    path = resolve_checkpoint_path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated files, foreign pickles
        raise CheckpointError(f"cannot load checkpoint {path!r}: {type(e).__name__}: {e}") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path!r} is not a wgan_ext trainer checkpoint (format {FORMAT})")
    return state


def rng_state() -> dict:
    """Every global RNG the training could touch, in a weights_only-loadable form."""
    state = {"torch": torch.get_rng_state(), "python": _to_lists(random.getstate())}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np
    except ImportError:
        pass
    else:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = {"kind": kind, "keys": torch.from_numpy(keys.astype("int64")), "pos": int(pos),
                          "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    if "numpy" in state:
        import numpy as np

        s = state["numpy"]
        np.random.set_state((s["kind"], s["keys"].numpy().astype("uint32"), s["pos"], s["has_gauss"],
                             s["cached_gaussian"]))


def _to_lists(value):
    if isinstance(value, tuple):
        return [_to_lists(v) for v in value]
    return value


def _to_tuples(value):
    if isinstance(value, list):
        return tuple(_to_tuples(v) for v in value)
    return value
