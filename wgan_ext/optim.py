"""Fused optimizer steps with weight clipping: RMSprop / Adam and the WGAN clamp in one pass over the parameters.

``ClippedRMSprop`` and ``ClippedAdam`` are ``torch.optim.Optimizer`` subclasses that compute exactly what
``torch.optim.RMSprop`` / ``torch.optim.Adam`` compute, followed by ``p.clamp_(-clip_value, clip_value)`` for every
parameter (Algorithm 1 of the WGAN paper: critic update, then clip). One op call per (device, dtype) reads each
parameter, gradient and state element once and writes parameter and state once (torch.ops.wgan_ext.rmsprop_clip_step_
/ adam_clip_step_; CPU and CUDA kernels, pure-torch reference elsewhere). Their ``state_dict`` uses torch's keys
(``step``, ``square_avg``, ``momentum_buffer`` / ``exp_avg``, ``exp_avg_sq``), so checkpoints load into the torch
optimizers and back.

    opt_d = wgan_ext.ClippedRMSprop(critic.parameters(), lr=5e-5, clip_value=0.01)
    # replaces: opt_d = torch.optim.RMSprop(critic.parameters(), lr=5e-5)
    #           ... opt_d.step(); for p in critic.parameters(): p.data.clamp_(-0.01, 0.01)

Not supported (refused with a ValueError): RMSprop ``centered=True``; Adam ``amsgrad=True`` and decoupled weight
decay (AdamW); ``maximize=True``; sparse gradients; complex parameters.
"""

from __future__ import annotations

import torch

from . import _ops, _reference
from .clip import _real

SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_SUPPORTED = frozenset(SUPPORTED_DTYPES)


def _scalar_dtype() -> torch.dtype:
    # The dtype torch.optim keeps "step" in (torch.optim.optimizer._get_scalar_dtype, without the private import).
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _check_real(value, name: str, *, low: float = 0.0, high: float | None = None, high_open: bool = False) -> float:
    """`value` as a finite float in [low, high] (or [low, high)), else a ValueError/TypeError naming the option."""
    value = _real(value, name)
    too_high = high is not None and (value >= high if high_open else value > high)
    if value < low or too_high:
        bound = "" if high is None else (f" and < {high}" if high_open else f" and <= {high}")
        raise ValueError(f"{name} must be >= {low}{bound}, got {value}")
    return value


def _check_clip_value(clip_value) -> float | None:
    if clip_value is None:
        return None
    c = _real(clip_value, "clip_value")
    if c <= 0:
        raise ValueError(f"clip_value must be > 0 (parameters are clamped to [-clip_value, clip_value]) or None "
                         f"(no clamp), got {c}")
    return c


def _clip_arg(clip_value) -> float | None:
    return None if clip_value is None else float(clip_value)


def _flat_views(tensors: list[torch.Tensor]) -> list[torch.Tensor] | None:
    """Contiguous views of tensors that share one dense layout (a parameter, its gradient and state: channels_last
    ones, say), so that the kernels can walk them as flat arrays element for element; None where they do not."""
    first = tensors[0]
    if all(t.is_contiguous() for t in tensors):
        return tensors
    if any(t.shape != first.shape or t.stride() != first.stride() for t in tensors):
        return None
    perm = sorted(range(first.dim()), key=lambda d: (-first.stride(d), d))  # outermost dimension first
    views = [t.permute(perm) for t in tensors]
    return views if all(v.is_contiguous() for v in views) else None


class _ClippedOptimizer(torch.optim.Optimizer):
    """What the two optimizers share: lazy state, grouping by device and dtype, the fused/reference dispatch."""

    _op: str = ""
    _state_names: tuple[str, ...] = ()  # per-parameter state tensors besides "step", in the op's order
    _uses_step = False  # whether the op takes the step count (Adam's bias corrections)
    _own_keys = ("clip_value",)  # param-group keys torch's optimizers do not have (kept across load_state_dict)

    def __init__(self, params, defaults: dict, impl: str | None):
        self.impl = _ops.resolve_impl(impl)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        """torch's add_param_group, refusing a parameter listed twice (torch only warns; the fused step would update
        it twice in one launch, racing with itself)."""
        params = param_group["params"]
        if not isinstance(params, (torch.Tensor, set)):  # torch itself refuses sets (no order)
            params = list(params)
            if len({id(p) for p in params}) != len(params):
                raise ValueError(f"{type(self).__name__}: a parameter group lists the same parameter more than "
                                 "once; list each parameter once")
            param_group = {**param_group, "params": params}
        super().add_param_group(param_group)

    # -- the parts each optimizer defines --
    def _check_group(self, group: dict) -> None:
        raise NotImplementedError

    def _state_tensors(self, group: dict, state: dict, p: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def _call(self, fn, group: dict, step: int, lists: list[list[torch.Tensor]]) -> None:
        raise NotImplementedError

    # -- shared --
    def load_state_dict(self, state_dict: dict) -> None:
        """torch's load_state_dict, keeping this optimizer's own options (clip_value) where the loaded groups lack
        them (a torch.optim.RMSprop / Adam checkpoint)."""
        own = [{k: g[k] for k in self._own_keys if k in g} for g in self.param_groups]
        super().load_state_dict(state_dict)
        for group, keep in zip(self.param_groups, own):
            for key, value in keep.items():
                group.setdefault(key, value)
            # a capturable or fused torch checkpoint puts "step" on the parameters' device: reading it there
            # would wait for the device once per parameter and step; it is a host number here (read once, now)
            for flag in ("capturable", "fused"):
                if group.get(flag):
                    group[flag] = False
        for state in self.state.values():
            step = state.get("step")
            if isinstance(step, torch.Tensor) and step.device.type != "cpu":
                state["step"] = step.detach().to("cpu", _scalar_dtype())

    def _init_state(self, state: dict, p: torch.Tensor) -> None:
        state["step"] = torch.tensor(0.0, dtype=_scalar_dtype())
        for name in self._state_names:
            state[name] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _check_param(self, p: torch.Tensor, grad: torch.Tensor) -> None:
        name = type(self).__name__
        if grad.is_sparse:
            raise RuntimeError(f"{name} does not support sparse gradients (parameter of shape {tuple(p.shape)}); "
                               "use torch.optim.SparseAdam, or a dense gradient")
        if p.dtype not in _SUPPORTED:
            raise TypeError(f"{name}: parameter of shape {tuple(p.shape)} has dtype {p.dtype}; supported: float32, "
                            "float64, float16, bfloat16")
        if grad.dtype != p.dtype or grad.device != p.device or grad.shape != p.shape:
            raise RuntimeError(f"{name}: a gradient must match its parameter's dtype, device and shape; got "
                               f"{grad.dtype} {grad.device} {tuple(grad.shape)} for a parameter "
                               f"{p.dtype} {p.device} {tuple(p.shape)}")

    @torch.no_grad()
    def step(self, closure=None):
        """One optimizer step and the clamp, for every parameter with a gradient (others are left alone)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._check_group(group)
            # (device, dtype, step) -> [params, grads, state lists...]; tensors the kernels cannot walk as one flat
            # array with their gradient and state (layouts that differ, or are not dense) go to the reference one by
            # one. Dense layouts that they share (channels_last) go to the kernels as permuted contiguous views.
            buckets: dict[tuple, list[list[torch.Tensor]]] = {}
            odd: list[tuple] = []
            steps: list[torch.Tensor] = []
            members: list[tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]] = []
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                self._check_param(p, grad)
                state = self.state[p]
                if len(state) == 0:
                    self._init_state(state, p)
                steps.append(state["step"])
                members.append((p, grad, self._state_tensors(group, state, p)))
            if not members:
                continue
            torch._foreach_add_(steps, 1)
            for (p, grad, tensors), step_t in zip(members, steps):
                step = int(step_t.item()) if self._uses_step else 0
                views = _flat_views([p, grad, *tensors])  # contiguous, or one dense layout seen as contiguous
                if views is not None:
                    lists = buckets.get((p.device, p.dtype, step))
                    if lists is None:
                        lists = buckets[(p.device, p.dtype, step)] = [[] for _ in range(2 + len(tensors))]
                    for k, t in enumerate(views):
                        lists[k].append(t)
                else:
                    odd.append((step, [[p], [grad]] + [[t] for t in tensors]))
            for (device, _, step), lists in buckets.items():
                fused = _ops.use_fused(self._op, device.type, self.impl)
                fn = _ops.inplace(self._op) if fused else getattr(_reference, self._op)
                self._call(fn, group, step, lists)
            for step, lists in odd:
                self._call(getattr(_reference, self._op), group, step, lists)
        return loss


class ClippedRMSprop(_ClippedOptimizer):
    """``torch.optim.RMSprop`` followed by clamping every parameter to [-clip_value, clip_value], fused.

    Args:
        params: parameters or parameter groups, as for any torch optimizer.
        lr: learning rate (>= 0; the WGAN paper's 5e-5 by default).
        alpha: smoothing constant of the squared-gradient average, in [0, 1].
        eps: added to the root of the average (>= 0).
        weight_decay: L2 penalty added to the gradient (>= 0).
        momentum: momentum factor (>= 0); > 0 keeps a ``momentum_buffer`` per parameter as torch does.
        centered: must be False (the centered variant is not fused; use torch.optim.RMSprop + wgan_ext.clip_).
        clip_value: clamp bound c > 0 (the paper's 0.01), or None for no clamp (then this is plain RMSprop).
        impl: "auto" (default, or $WGAN_EXT_IMPL), "fused" or "reference"; see ``wgan_ext._ops``.

    Matches ``torch.optim.RMSprop(..., foreach=False)`` + ``p.clamp_(-c, c)`` to float rounding (float16/bfloat16
    are computed in float32 and rounded once, so they are closer to the exact result than torch's op-by-op
    rounding). Parameters without a gradient are skipped; their state is not created or advanced.
    """

    _op = "rmsprop_clip_step_"
    _state_names = ("square_avg",)

    def __init__(self, params, lr: float = 5e-5, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0,
                 momentum: float = 0, centered: bool = False, clip_value: float | None = 0.01, *,
                 impl: str | None = None):
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum, centered=centered,
                        maximize=False, clip_value=clip_value)
        self._check_group(defaults)
        super().__init__(params, defaults, impl)

    def _check_group(self, group: dict) -> None:
        if group.get("centered", False):
            raise ValueError("ClippedRMSprop: centered=True is not supported (the centered variant is not fused); "
                             "use torch.optim.RMSprop(centered=True) and wgan_ext.clip_ after each step")
        if group.get("maximize", False):
            raise ValueError("ClippedRMSprop: maximize=True is not supported; negate the loss instead")
        _check_real(group["lr"], "lr")
        _check_real(group["alpha"], "alpha", high=1.0)
        _check_real(group["eps"], "eps")
        _check_real(group["weight_decay"], "weight_decay")
        _check_real(group["momentum"], "momentum")
        _check_clip_value(group.get("clip_value"))

    def _state_tensors(self, group: dict, state: dict, p: torch.Tensor) -> list[torch.Tensor]:
        if group["momentum"] > 0:
            if "momentum_buffer" not in state:  # momentum switched on after the state was made
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            return [state["square_avg"], state["momentum_buffer"]]
        return [state["square_avg"]]

    def _call(self, fn, group: dict, step: int, lists: list[list[torch.Tensor]]) -> None:
        params, grads, square_avgs = lists[0], lists[1], lists[2]
        buffers = lists[3] if len(lists) > 3 else []
        fn(params, grads, square_avgs, buffers, float(group["lr"]), float(group["alpha"]), float(group["eps"]),
           float(group["weight_decay"]), float(group["momentum"]), _clip_arg(group["clip_value"]))


class ClippedAdam(_ClippedOptimizer):
    """``torch.optim.Adam`` (L2 weight decay, amsgrad=False) followed by clamping every parameter to
    [-clip_value, clip_value], fused.

    Args:
        params: parameters or parameter groups.
        lr: learning rate (>= 0).
        betas: (beta1, beta2), each in [0, 1). The WGAN-GP paper uses (0, 0.9), its code (0.5, 0.9).
        eps: added to the denominator (>= 0).
        weight_decay: L2 penalty added to the gradient (>= 0), as torch.optim.Adam (not AdamW).
        amsgrad: must be False (not fused; use torch.optim.Adam(amsgrad=True) + wgan_ext.clip_).
        clip_value: clamp bound c > 0, or None for no clamp (then this is plain Adam).
        impl: "auto" | "fused" | "reference".

    Matches ``torch.optim.Adam(..., foreach=False)`` + ``p.clamp_(-c, c)`` to float rounding, bias corrections
    from each parameter's own ``step`` (parameters with different step counts, e.g. after loading a checkpoint, are
    stepped in separate calls).
    """

    _op = "adam_clip_step_"
    _state_names = ("exp_avg", "exp_avg_sq")
    _uses_step = True

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, amsgrad: bool = False, clip_value: float | None = 0.01, *,
                 impl: str | None = None):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=False,
                        clip_value=clip_value)
        self._check_group(defaults)
        super().__init__(params, defaults, impl)

    def _check_group(self, group: dict) -> None:
        if group.get("amsgrad", False):
            raise ValueError("ClippedAdam: amsgrad=True is not supported (not fused); use "
                             "torch.optim.Adam(amsgrad=True) and wgan_ext.clip_ after each step")
        if group.get("maximize", False):
            raise ValueError("ClippedAdam: maximize=True is not supported; negate the loss instead")
        if group.get("decoupled_weight_decay", False):
            raise ValueError("ClippedAdam: decoupled weight decay (AdamW) is not supported; ClippedAdam adds "
                             "weight_decay * p to the gradient as torch.optim.Adam does")
        _check_real(group["lr"], "lr")
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        _check_real(betas[0], "betas[0]", high=1.0, high_open=True)
        _check_real(betas[1], "betas[1]", high=1.0, high_open=True)
        _check_real(group["eps"], "eps")
        _check_real(group["weight_decay"], "weight_decay")
        _check_clip_value(group.get("clip_value"))

    def _state_tensors(self, group: dict, state: dict, p: torch.Tensor) -> list[torch.Tensor]:
        return [state["exp_avg"], state["exp_avg_sq"]]

    def _call(self, fn, group: dict, step: int, lists: list[list[torch.Tensor]]) -> None:
        beta1, beta2 = group["betas"]
        fn(lists[0], lists[1], lists[2], lists[3], float(group["lr"]), float(beta1), float(beta2),
           float(group["eps"]), float(group["weight_decay"]), step, _clip_arg(group["clip_value"]))


__all__ = ["ClippedRMSprop", "ClippedAdam"]
