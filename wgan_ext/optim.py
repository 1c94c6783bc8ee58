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

Each parameter group keeps a launch plan between steps (the addresses and chunks of every parameter, gradient and
state tensor, on the parameters' device): a step is then one op call whatever the number of parameters, plus three
passes over the lists in torch's C code (gather the gradients; have parameters or gradients moved?; bump the
version counters of what was written). Gradients that a backward after ``zero_grad(set_to_none=True)`` allocated
elsewhere are followed: a CPU plan takes their addresses in a small tensor (after checking that they have their
parameters' strides), a CUDA plan is rebuilt (expected to be rare: torch's caching allocator tends to hand the same
addresses out again; not yet measured on a GPU). Anything else that moves a tensor (``.data`` reassigned, ``.to()``, ``load_state_dict``, a cleared
``state``, momentum switched on) rebuilds the plan on the next step; a step where some parameter has no gradient,
parameters on several devices, or layouts the kernels cannot walk flat go through the per-list path. Each
parameter's ``state["step"]`` becomes a 0-d view of one per-group counter (one add per step). Not noticed: a state
tensor replaced by hand in ``optimizer.state[p]`` (use ``load_state_dict``), and a tensor re-pointed into its own
memory at the same first address with another size, dtype or layout.

Not supported (refused with a ValueError): RMSprop ``centered=True``; Adam ``amsgrad=True`` and decoupled weight
decay (AdamW); ``maximize=True``; sparse gradients; complex parameters.
"""

from __future__ import annotations

import itertools
import operator

import torch

from . import _ops, _reference
from .clip import _DATA_PTR, _dtype_mask, _real

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


_GRAD = operator.attrgetter("grad")
_STRIDE = torch.Tensor.stride


class _GroupPlan:
    """A parameter group's cached launch plan (csrc/ops/fused_optim.h, optim_plan): the chunks of every parameter,
    its gradient and its state, built once by the compiled op ``_optim_plan`` and moved to the parameters' device,
    where one launch per step reads it. A step then costs one op call whatever the number of parameters, plus a few
    passes over the lists in torch's C code (have the parameters or gradients moved? bump the written tensors'
    version counters). The plan holds every planned tensor, so none of the planned memory can be reused while it
    exists. ``rows`` is None when the group cannot be planned (the reason is kept; the step then goes through the
    list ops until something moves)."""

    __slots__ = ("pptrs", "gptrs", "pstrides", "grad_ptrs", "state", "state_len", "momentum", "rows", "n", "dtypes",
                 "steps", "step", "written", "held", "why", "captured")

    def params_valid(self, params, state, momentum: bool) -> bool:
        """Whether the parameters and states are those planned (the gradients are checked apart)."""
        if state is not self.state or len(state) != self.state_len or momentum != self.momentum:
            return False
        return list(map(_DATA_PTR, params)) == self.pptrs

    def follow_grads(self, grads) -> bool:
        """Whether this step's gradients can be used: where the plan has them, or (CPU plans) anywhere with their
        parameters' strides, their addresses then handed to the op in `grad_ptrs` (autograd keeps a gradient's dtype
        and shape those of its parameter). False: rebuild."""
        try:
            gptrs = list(map(_DATA_PTR, grads))
        except RuntimeError:  # a tensor without storage (a sparse gradient): the checks of a rebuild say what
            return False
        if gptrs == self.gptrs:
            return True
        if self.grad_ptrs is None or list(map(_STRIDE, grads)) != self.pstrides:
            return False
        self.gptrs = gptrs
        self.grad_ptrs = torch.tensor(gptrs, dtype=torch.int64)
        return True


class _ClippedOptimizer(torch.optim.Optimizer):
    """What the two optimizers share: lazy state, grouping by device and dtype, the fused/reference dispatch."""

    _op: str = ""
    _state_names: tuple[str, ...] = ()  # per-parameter state tensors besides "step", in the op's order
    _uses_step = False  # whether the op takes the step count (Adam's bias corrections)
    _own_keys = ("clip_value",)  # param-group keys torch's optimizers do not have (kept across load_state_dict)

    def __init__(self, params, defaults: dict, impl: str | None, cache_plan: bool = True):
        self.impl = _ops.resolve_impl(impl)
        self.cache_plan = bool(cache_plan)
        self._plans: dict[int, _GroupPlan] = {}
        self._retired: list[torch.Tensor] = []
        super().__init__(params, defaults)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._plans = {}  # plans hold raw addresses: never carried over by a copy or a pickle
        self._retired = []

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
        if hasattr(self, "_plans"):
            self._forget_plans()

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
        self._forget_plans()
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
        for index, group in enumerate(self.param_groups):
            self._check_group(group)
            if self._step_planned(index, group):
                continue
            plan = self._plans.get(index)
            if plan is not None and plan.rows is not None:
                self._forget_plans(index)  # the list path below advances the steps itself
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


    # -- the planned path: one op call per group and step --
    def _forget_plans(self, index: int | None = None) -> None:
        """Drops the plan of group `index` (None: every group), keeping the rows a CUDA graph captured alive."""
        dropped = list(self._plans.values()) if index is None else [self._plans.get(index)]
        for plan in dropped:
            if plan is not None and plan.captured:
                self._retired.append(plan.rows)
        if index is None:
            self._plans.clear()
        else:
            self._plans.pop(index, None)

    def _momentum_on(self, group: dict) -> bool:
        return False

    def _call_planned(self, plan: _GroupPlan, group: dict) -> None:
        raise NotImplementedError

    def _step_planned(self, index: int, group: dict) -> bool:
        """One step of `group` through its cached plan, built or rebuilt here when needed. False (nothing done) where
        no plan applies: the reference, torch.compile, a parameter without gradient this step, parameters on
        several devices, a device without the planned kernel, layouts the kernels cannot walk flat, Adam steps that
        differ between parameters."""
        params = group["params"]
        if not params or not self.cache_plan or self.impl == "reference" or torch.compiler.is_compiling():
            return False
        grads = list(map(_GRAD, params))
        if any(map(operator.is_, grads, itertools.repeat(None))):
            return False
        momentum = self._momentum_on(group)
        plan = self._plans.get(index)
        if plan is None or not plan.params_valid(params, self.state, momentum) or not plan.follow_grads(grads):
            if params[0].is_cuda and torch.cuda.is_current_stream_capturing():
                return False  # a plan is copied to the device from pageable memory, which a capture refuses
            if plan is not None and plan.captured:
                self._retired.append(plan.rows)  # a captured graph still reads these rows when replayed
            plan = self._plans[index] = self._build_plan(group, params, grads, momentum)
            plan.state_len = len(self.state)  # after the build, which creates the states it lacks
        if plan.rows is None:
            return False
        if not plan.captured and params[0].is_cuda and torch.cuda.is_current_stream_capturing():
            plan.captured = True
        plan.steps.add_(1)
        plan.step += 1
        self._call_planned(plan, group)
        torch._C._increment_version(plan.written)  # as the list ops' in-place schemas would
        return True

    def _build_plan(self, group: dict, params: list, grads: list, momentum: bool) -> _GroupPlan:
        for p, grad in zip(params, grads):
            self._check_param(p, grad)
        plan = _GroupPlan()
        plan.pptrs = list(map(_DATA_PTR, params))
        plan.gptrs = list(map(_DATA_PTR, grads))
        plan.pstrides = list(map(_STRIDE, params))
        plan.grad_ptrs = None
        plan.momentum = momentum
        plan.rows = None
        plan.captured = False
        plan.state = self.state
        device = params[0].device
        planned_op = "_adam_clip_planned_" if self._uses_step else "_rmsprop_clip_planned_"
        if any(p.device != device for p in params):
            plan.why = "parameters on several devices"
            return plan
        if not _ops.has_kernel(planned_op, device.type):
            plan.why = f"no planned kernel for {device.type}"
            return plan
        states = []
        for p in params:
            state = self.state[p]
            if len(state) == 0:
                self._init_state(state, p)
            states.append(self._state_tensors(group, state, p))
        steps = [self.state[p]["step"] for p in params]
        # the step counts live on the host (load_state_dict brings a GPU-held one back once): reading them waits
        # for no device, and numpy() would refuse a device tensor rather than synchronize
        values = torch.stack([s.detach().to(torch.float64).reshape(()) for s in steps]).numpy().tolist()
        if self._uses_step and len(set(values)) > 1:
            plan.why = "parameters at different step counts"
            return plan
        s1 = [t[0] for t in states]
        s2 = [t[1] for t in states] if len(states[0]) > 1 else []
        try:
            rows = torch.ops.wgan_ext._optim_plan(params, grads, s1, s2)
        except RuntimeError as exc:  # a layout the kernels cannot walk flat: the list path sorts it out
            plan.why = str(exc)
            return plan
        # One step counter for the whole group: each parameter's state["step"] becomes a 0-d view of it, so that a
        # step advances all of them with one add (state_dict and torch's optimizers see ordinary 0-d tensors).
        buf = torch.tensor(values, dtype=steps[0].dtype)
        for i, p in enumerate(params):
            self.state[p]["step"] = buf[i]
        plan.steps = buf
        plan.step = int(values[0]) if values else 0
        plan.rows = rows.to(device) if device.type != "cpu" else rows
        if device.type == "cpu":  # gradients that move are followed without a rebuild (CUDA plans rebuild)
            plan.grad_ptrs = torch.tensor(plan.gptrs, dtype=torch.int64)
        plan.n = len(params)
        plan.dtypes = _dtype_mask(params)
        plan.written = tuple(params) + tuple(s1) + tuple(s2)
        # The parameters' and states' storages stay alive while the plan points at them (an address that still
        # matches is then the same memory). The gradients are not held: autograd replaces them every backward with
        # zero_grad(set_to_none=True), and holding the old ones would keep their memory from being reused at the
        # same addresses; their addresses are checked before every step instead (autograd keeps a gradient's dtype
        # and shape those of its parameter).
        plan.held = tuple(t.untyped_storage() for t in plan.written)
        plan.why = None
        return plan


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
        cache_plan: keep each parameter group's launch plan between steps (default; see the module docstring);
            False: pass the lists to the op on every step.

    Matches ``torch.optim.RMSprop(..., foreach=False)`` + ``p.clamp_(-c, c)`` to float rounding (float16/bfloat16
    are computed in float32 and rounded once, so they are closer to the exact result than torch's op-by-op
    rounding). Parameters without a gradient are skipped; their state is not created or advanced.
    """

    _op = "rmsprop_clip_step_"
    _state_names = ("square_avg",)

    def __init__(self, params, lr: float = 5e-5, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0,
                 momentum: float = 0, centered: bool = False, clip_value: float | None = 0.01, *,
                 impl: str | None = None, cache_plan: bool = True):
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum, centered=centered,
                        maximize=False, clip_value=clip_value)
        self._check_group(defaults)
        super().__init__(params, defaults, impl, cache_plan)

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

    def _momentum_on(self, group: dict) -> bool:
        return group["momentum"] > 0

    def _call_planned(self, plan: _GroupPlan, group: dict) -> None:
        torch.ops.wgan_ext._rmsprop_clip_planned_(
            plan.rows, plan.grad_ptrs, plan.n, plan.dtypes, float(group["lr"]), float(group["alpha"]), float(group["eps"]),
            float(group["weight_decay"]), float(group["momentum"]), _clip_arg(group["clip_value"]))

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
        cache_plan: as for ``ClippedRMSprop``.

    Matches ``torch.optim.Adam(..., foreach=False)`` + ``p.clamp_(-c, c)`` to float rounding, bias corrections
    from each parameter's own ``step`` (parameters with different step counts, e.g. after loading a checkpoint, are
    stepped in separate calls).
    """

    _op = "adam_clip_step_"
    _state_names = ("exp_avg", "exp_avg_sq")
    _uses_step = True

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, amsgrad: bool = False, clip_value: float | None = 0.01, *,
                 impl: str | None = None, cache_plan: bool = True):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=False,
                        clip_value=clip_value)
        self._check_group(defaults)
        super().__init__(params, defaults, impl, cache_plan)

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

    def _call_planned(self, plan: _GroupPlan, group: dict) -> None:
        beta1, beta2 = group["betas"]
        torch.ops.wgan_ext._adam_clip_planned_(
            plan.rows, plan.grad_ptrs, plan.n, plan.dtypes, float(group["lr"]), float(beta1), float(beta2), float(group["eps"]),
            float(group["weight_decay"]), plan.step, _clip_arg(group["clip_value"]))

    def _call(self, fn, group: dict, step: int, lists: list[list[torch.Tensor]]) -> None:
        beta1, beta2 = group["betas"]
        fn(lists[0], lists[1], lists[2], lists[3], float(group["lr"]), float(beta1), float(beta2),
           float(group["eps"]), float(group["weight_decay"]), step, _clip_arg(group["clip_value"]))


__all__ = ["ClippedRMSprop", "ClippedAdam"]
