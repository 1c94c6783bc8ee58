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


def spectral_norm_normalize(weights: list[torch.Tensor], us: list[torch.Tensor], vs: list[torch.Tensor]
                            ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """torch.ops.wgan_ext.spectral_norm_normalize: per layer sigma = vdot(u, mv(W, v)) and W / sigma, as torch's
    parametrization computes them; `saved` holds the sigmas, then every layer's u and v (float64). Differentiable
    w.r.t. the weights (u, v constant): the reference of the op's backward too."""
    outs, sigmas, uvs = [], [], []
    for W, u, v in zip(weights, us, vs):
        # copies, as torch's parametrization takes: autograd saves u and v for the backward, and the next forward's
        # power iteration updates them in place before it (two forwards, real and fake, then one backward)
        u, v = u.detach().clone(), v.detach().clone()
        sigma = torch.vdot(u, torch.mv(W, v))
        outs.append((W / sigma).contiguous())
        sigmas.append(sigma.detach().double().reshape(1))
        uvs += [u.double(), v.double()]
    device = weights[0].device if weights else "cpu"
    saved = torch.cat(sigmas + uvs) if weights else torch.zeros(0, dtype=torch.float64, device=device)
    return outs, saved


def spectral_norm_normalize_backward(grads: list[torch.Tensor], weights: list[torch.Tensor], saved: torch.Tensor
                                     ) -> list[torch.Tensor]:
    """torch.ops.wgan_ext._spectral_norm_normalize_backward: dW = G / sigma - <G, W> / sigma^2 u v^T (u, v and
    sigma from `saved`), in each weight's accumulation dtype."""
    L = len(weights)
    out, offset = [], L
    for i, (G, W) in enumerate(zip(grads, weights)):
        h, w = W.shape
        acc = _opmath(W).dtype
        u, v = saved[offset:offset + h].to(acc), saved[offset + h:offset + h + w].to(acc)
        offset += h + w
        sigma = saved[i].to(acc)
        grad_sigma = -(G.to(acc) * W.to(acc)).sum() / (sigma * sigma)
        out.append((G.to(acc) / sigma + grad_sigma * torch.outer(u, v)).to(W.dtype))
    return out


def _opmath(t: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 computed in float32, as the kernels do (a no-op view for float32/float64)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def rmsprop_clip_step_(params: list[torch.Tensor], grads: list[torch.Tensor], square_avgs: list[torch.Tensor],
                       momentum_buffers: list[torch.Tensor], lr: float, alpha: float, eps: float,
                       weight_decay: float, momentum: float, clip_value: float | None) -> None:
    """torch.ops.wgan_ext.rmsprop_clip_step_: torch.optim.RMSprop's single-tensor step (centered=False), then
    clamp_(-clip_value, clip_value). Float16/bfloat16 are computed in float32 and rounded once, as the kernels do."""
    with torch.no_grad():
        for i, (param, grad, square_avg) in enumerate(zip(params, grads, square_avgs)):
            p, g, sq = _opmath(param), _opmath(grad), _opmath(square_avg)
            if weight_decay != 0:
                g = g.add(p, alpha=weight_decay)
            sq.mul_(alpha).addcmul_(g, g, value=1 - alpha)
            avg = sq.sqrt().add_(eps)
            if momentum > 0:
                buf = _opmath(momentum_buffers[i])
                buf.mul_(momentum).addcdiv_(g, avg)
                p.add_(buf, alpha=-lr)
                if buf is not momentum_buffers[i]:
                    momentum_buffers[i].copy_(buf)
            else:
                p.addcdiv_(g, avg, value=-lr)
            if clip_value is not None:
                p.clamp_(-clip_value, clip_value)
            if p is not param:
                param.copy_(p)
                square_avg.copy_(sq)


def adam_clip_step_(params: list[torch.Tensor], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor],
                    exp_avg_sqs: list[torch.Tensor], lr: float, beta1: float, beta2: float, eps: float,
                    weight_decay: float, step: int, clip_value: float | None) -> None:
    """torch.ops.wgan_ext.adam_clip_step_: torch.optim.Adam's single-tensor step (amsgrad=False, L2 weight decay)
    with the bias corrections of step count `step` (after this step's increment), then the clamp."""
    bias_correction1 = 1 - beta1 ** step
    bias_correction2 = 1 - beta2 ** step
    step_size = lr / bias_correction1
    bias_correction2_sqrt = bias_correction2 ** 0.5
    with torch.no_grad():
        for param, grad, exp_avg, exp_avg_sq in zip(params, grads, exp_avgs, exp_avg_sqs):
            p, g, m, v = _opmath(param), _opmath(grad), _opmath(exp_avg), _opmath(exp_avg_sq)
            if weight_decay != 0:
                g = g.add(p, alpha=weight_decay)
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            denom = (v.sqrt() / bias_correction2_sqrt).add_(eps)
            p.addcdiv_(m, denom, value=-step_size)
            if clip_value is not None:
                p.clamp_(-clip_value, clip_value)
            if p is not param:
                param.copy_(p)
                exp_avg.copy_(m)
                exp_avg_sq.copy_(v)
