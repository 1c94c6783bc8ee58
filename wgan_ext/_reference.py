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


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def interpolate(real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """torch.ops.wgan_ext.interpolate: real + alpha[n] * (fake - real), computed in float32 (float64) and rounded
    once to the inputs' dtype, as the kernels do."""
    acc = _acc_dtype(real.dtype)
    a = alpha.to(acc).view(-1, *([1] * (real.dim() - 1)))
    r = real.to(acc)
    return (r + a * (fake.to(acc) - r)).to(real.dtype)


def gradient_norm_penalty(grad: torch.Tensor, target: float, one_sided: bool, inv_scale: float,
                          eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.ops.wgan_ext.gradient_norm_penalty: (mean of (norm - target)^2, per-sample norms); differentiable by
    autograd (it is the plain recipe)."""
    g = grad.to(_acc_dtype(grad.dtype)).reshape(grad.shape[0], -1)
    norms = torch.sqrt(inv_scale * inv_scale * (g * g).sum(dim=1) + eps)
    excess = norms - target
    if one_sided:
        excess = excess.clamp_min(0)
    return (excess * excess).mean(), norms


def spectral_norm_power_iteration_(weights: list[torch.Tensor], us: list[torch.Tensor], vs: list[torch.Tensor],
                                   n_power_iterations: int, eps: float) -> None:
    """torch.ops.wgan_ext.spectral_norm_power_iteration_: torch's own power method, layer by layer."""
    with torch.no_grad():
        for W, u, v in zip(weights, us, vs):
            for _ in range(n_power_iterations):
                u.copy_(torch.nn.functional.normalize(torch.mv(W, v), dim=0, eps=eps))
                v.copy_(torch.nn.functional.normalize(torch.mv(W.H, u), dim=0, eps=eps))
