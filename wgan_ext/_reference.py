"""Pure-torch references of the compiled ops: the fallback where a kernel is missing, and the tests' oracle.

Each function has the compiled op's signature and semantics; none validates its arguments (the public API does).
"""

from __future__ import annotations

import torch


def clip_(tensors: list[torch.Tensor], min: float, max: float) -> None:  # noqa: A002
    """torch.ops.wgan_ext.clip_: clamp every tensor in place to [min, max]."""
    with torch.no_grad():
        for t in tensors:
            t.clamp_(min, max)


def clip_count_(tensors: list[torch.Tensor], min: float, max: float) -> torch.Tensor:  # noqa: A002
    """torch.ops.wgan_ext.clip_count_: clamp in place; per tensor, the number of elements at a bound afterwards."""
    counts = []
    with torch.no_grad():
        for t in tensors:
            t.clamp_(min, max)
            # The scalar bounds are rounded to t's dtype for the comparison, as the clamp rounded them.
            counts.append(((t <= min) | (t >= max)).sum(dtype=torch.int64))
    if not counts:
        return torch.zeros(0, dtype=torch.int64)
    return torch.stack([c.to(tensors[0].device) for c in counts])
