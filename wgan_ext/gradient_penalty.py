"""Gradient penalties for Lipschitz critics: WGAN-GP (Gulrajani et al. 2017), its one-sided variant, R1 and R2.

``gradient_penalty`` returns the term to add to the critic loss: ``weight * mean_n (||grad_x D(x_hat_n)|| - target)^2``
at per-sample random interpolates ``x_hat_n = real_n + alpha_n (fake_n - real_n)``, the norm taken over all
non-batch dims of each sample (any input shape, any channel count). Interpolation, per-sample norms and the mean are
fused ops, with an eps inside the square root so an all-zero gradient stays finite, and the AMP recipe (unscaling
inside the penalty) built in. The critic's parameters get the penalty's gradient through the create_graph gradient,
exactly as with the plain recipe.

Critics with BatchNorm work but are slow (double backward through BatchNorm) and not per-sample (BatchNorm mixes
the samples of a batch, so the penalty no longer constrains each sample's gradient): use LayerNorm or no norm, as
the WGAN-GP paper does.
"""

from __future__ import annotations

import math
import numbers
import warnings
import weakref

import torch
from torch import nn

from . import _ops, _reference, _watch

_SUPPORTED = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_warned_batchnorm = False
# critic -> (registration count when its modules were walked, its BatchNorm layers): a penalty call then checks
# only those layers' training flags instead of walking every module (5-7 us per call on the toy and DCGAN critics)
_BATCHNORMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _check_number(value, name: str, minimum: float | None = None, allow_zero: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    value = float(value)
    if minimum is not None and (value < minimum or (not allow_zero and value == minimum)):
        raise ValueError(f"{name} must be {'>=' if allow_zero else '>'} {minimum}, got {value}")
    return value


def _check_batch(x, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(x).__name__}")
    if x.dtype not in _SUPPORTED:
        raise TypeError(f"{name} has dtype {x.dtype}; supported: float32, float64, float16, bfloat16")
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a batch (N, *) with N > 0, got shape {tuple(x.shape)}")


def _capturing(t: torch.Tensor) -> bool:
    """Whether `t` is a CUDA tensor and the current stream is capturing a CUDA graph."""
    return t.is_cuda and torch.cuda.is_current_stream_capturing()


def _warn_batchnorm(critic) -> None:
    global _warned_batchnorm
    if _warned_batchnorm or not isinstance(critic, nn.Module):
        return
    _watch.watch()
    seen = _BATCHNORMS.get(critic)
    if seen is None or seen[0] != _watch.REGISTRATIONS[0]:  # first call, or a module or parameter was added since
        seen = (_watch.REGISTRATIONS[0],
                tuple(m for m in critic.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)))
        _BATCHNORMS[critic] = seen
    if any(m.training for m in seen[1]):
        _warned_batchnorm = True
        warnings.warn("gradient penalty with a BatchNorm critic: slow (double backward through BatchNorm) and not "
                      "per-sample; use LayerNorm or no normalization in the critic", RuntimeWarning, stacklevel=3)


def interpolate(real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor, *, impl: str | None = None):
    """``real + alpha[n] * (fake - real)``: one fused pass, alpha of shape (N,) broadcast over the trailing dims."""
    fn = torch.ops.wgan_ext.interpolate if _ops.use_fused("interpolate", real.device.type, impl) else \
        _reference.interpolate
    return fn(real, fake, alpha)


def gradient_norm_penalty(grad: torch.Tensor, target: float = 1.0, *, one_sided: bool = False,
                          inv_scale: float = 1.0, eps: float = 1e-12, impl: str | None = None):
    """(mean of (norm_n - target)^2, norms) for a gradient batch (N, *); the op under ``gradient_penalty``.

    ``norm_n = sqrt(inv_scale^2 * sum(grad_n^2) + eps)``; one-sided: ``max(0, norm_n - target)^2``. Differentiable
    w.r.t. ``grad`` (so, through a create_graph gradient, w.r.t. the critic's parameters).
    """
    _check_batch(grad, "grad")
    target = _check_number(target, "target", 0.0)
    inv_scale = _check_number(inv_scale, "inv_scale", 0.0, allow_zero=False)
    eps = _check_number(eps, "eps", 0.0, allow_zero=False)
    if _ops.use_fused("gradient_norm_penalty", grad.device.type, impl):
        return torch.ops.wgan_ext.gradient_norm_penalty(grad, target, bool(one_sided), inv_scale, eps)
    return _reference.gradient_norm_penalty(grad, target, bool(one_sided), inv_scale, eps)


def _critic_gradient(critic, x: torch.Tensor, scaler) -> tuple[torch.Tensor, float]:
    """grad_x sum(critic(x)) with create_graph=True, and the inverse loss scale to apply to it."""
    out = critic(x)
    n = x.shape[0]
    if not isinstance(out, torch.Tensor) or tuple(out.shape) not in ((n,), (n, 1)):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the critic must return one score per sample, shape ({n},) or ({n}, 1); got {shape}")
    if scaler is not None and scaler.is_enabled():
        # The AMP recipe: differentiate a scaled output so fp16 gradients do not underflow, unscale inside the
        # penalty. Scaling the float32 mean rather than the sum keeps the gradient entering the fp16 graph at
        # scale / N per sample instead of scale (2^16 by default, which is already inf in fp16).
        total = scaler.scale(out.float().mean())
        inv_scale = n / scaler.get_scale()
    else:
        total, inv_scale = out.sum(), 1.0
    (grad,) = torch.autograd.grad(total, x, create_graph=True)
    return grad, inv_scale


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, weight: float = 10.0, target: float = 1.0,
                     one_sided: bool = False, alpha: torch.Tensor | None = None,
                     generator: torch.Generator | None = None, scaler=None, return_norms: bool = False,
                     eps: float = 1e-12, impl: str | None = None, check_alpha: bool = True):
    """The WGAN-GP term to add to the critic loss.

    Args:
        critic: any callable mapping a batch (N, *) to scores (N,) or (N, 1), usually the critic module.
        real, fake: batches of the same shape (N, *), dtype and device; detached here (fake's generator gets no
            gradient from the penalty).
        weight: lambda (paper: 10; the official toy script uses 0.1). target: the norm aimed at (1).
        one_sided: penalize only norms above target (max(0, norm - target)^2).
        alpha: per-sample interpolation weights (N,) in [0, 1]; default U[0, 1) per sample, drawn with `generator`
            when given (reproducible).
        scaler: a ``torch.amp.GradScaler`` when training with fp16 autocast: the gradient is taken of the scaled
            output and unscaled inside the penalty (PyTorch's AMP "gradient penalty" recipe). Call the critic loss's
            ``scaler.scale(loss).backward()`` as usual afterwards.
        return_norms: also return the per-sample gradient norms (detached, for logging).
        check_alpha: check that a given `alpha` lies in [0, 1]. The check reads alpha on the host, a device
            synchronization on a GPU: pass False for alphas that are in range by construction (torch.rand) in a
            loop that should not wait for the GPU. Skipped anyway while a CUDA graph is being captured.
    """
    _check_batch(real, "real")
    _check_batch(fake, "fake")
    if real.shape != fake.shape or real.dtype != fake.dtype or real.device != fake.device:
        raise ValueError(f"real and fake must match in shape, dtype and device; got {tuple(real.shape)} "
                         f"{real.dtype} {real.device} vs {tuple(fake.shape)} {fake.dtype} {fake.device}")
    weight = _check_number(weight, "weight", 0.0)
    n = real.shape[0]
    if alpha is None:
        device = generator.device if generator is not None else real.device
        alpha = torch.rand(n, generator=generator, device=device).to(device=real.device, dtype=real.dtype)
    else:
        if not isinstance(alpha, torch.Tensor) or tuple(alpha.shape) not in ((n,), (n, *[1] * (real.dim() - 1))):
            shape = tuple(alpha.shape) if isinstance(alpha, torch.Tensor) else type(alpha).__name__
            raise ValueError(f"alpha must have shape ({n},) (one weight per sample), got {shape}")
        if not alpha.is_floating_point():
            raise ValueError(f"alpha must be floating point with every value in [0, 1], got dtype {alpha.dtype}")
        # the value check reads alpha on the host, which CUDA graph capture forbids: skipped only while capturing
        if check_alpha and not _capturing(alpha) and bool((alpha < 0).any() | (alpha > 1).any()
                                                          | alpha.isnan().any()):
            raise ValueError("alpha must be floating point with every value in [0, 1]")
        alpha = alpha.detach().reshape(n).to(device=real.device, dtype=real.dtype)
    _warn_batchnorm(critic)
    x_hat = interpolate(real.detach(), fake.detach(), alpha, impl=impl).requires_grad_(True)
    grad, inv_scale = _critic_gradient(critic, x_hat, scaler)
    penalty, norms = gradient_norm_penalty(grad, target, one_sided=one_sided, inv_scale=inv_scale, eps=eps,
                                           impl=impl)
    result = weight * penalty
    return (result, norms.detach()) if return_norms else result


def r1_penalty(critic, real: torch.Tensor, weight: float = 1.0, scaler=None, return_norms: bool = False,
               eps: float = 1e-12, impl: str | None = None):
    """R1 (Mescheder et al. 2018): ``weight * mean_n ||grad_x D(real_n)||^2`` on real data (for R1's gamma/2
    convention pass weight=gamma/2). The same fused op as ``gradient_penalty``, with target 0 and no interpolation."""
    _check_batch(real, "real")
    weight = _check_number(weight, "weight", 0.0)
    x = real.detach().requires_grad_(True)
    _warn_batchnorm(critic)
    grad, inv_scale = _critic_gradient(critic, x, scaler)
    penalty, norms = gradient_norm_penalty(grad, 0.0, inv_scale=inv_scale, eps=eps, impl=impl)
    return (weight * penalty, norms.detach()) if return_norms else weight * penalty


def r2_penalty(critic, fake: torch.Tensor, weight: float = 1.0, scaler=None, return_norms: bool = False,
               eps: float = 1e-12, impl: str | None = None):
    """R2: the R1 penalty on generated data."""
    return r1_penalty(critic, fake, weight, scaler=scaler, return_norms=return_norms, eps=eps, impl=impl)
