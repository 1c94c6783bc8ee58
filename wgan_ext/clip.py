"""Weight clipping (WGAN, Arjovsky et al. 2017, Algorithm 1 line 7): clamp every critic parameter to [-c, c].

``clip_`` clamps a whole list of tensors in one op call (one multi-tensor launch per device and dtype on CUDA, one
parallel pass on CPU) instead of one ``clamp_`` per tensor. ``Clipper`` holds a critic's parameters and the bound,
and can hook itself after every step of the critic's optimizer.
"""

from __future__ import annotations

import fnmatch
import math
import numbers
import warnings
import weakref
from typing import Iterable

import torch
from torch import nn

from . import _ops, _reference, _watch

SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_SUPPORTED = frozenset(SUPPORTED_DTYPES)
_DTYPE_NAMES = "float32, float64, float16, bfloat16"


def _real(value, name: str) -> float:
    """`value` as a finite float, or a ValueError/TypeError naming `name`."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value} (leave min or max as None for no bound on that side)")
    return value


def clip_bounds(c=None, min=None, max=None) -> tuple[float, float]:  # noqa: A002
    """The (lo, hi) of a clamp given either c (> 0: [-c, c]) or min and/or max (None: unbounded on that side)."""
    if c is not None:
        if min is not None or max is not None:
            raise ValueError("give either c (clamp to [-c, c]) or min=/max=, not both")
        c = _real(c, "c")
        if c <= 0:
            raise ValueError(f"c must be > 0 (parameters are clamped to [-c, c]), got {c}")
        return -c, c
    if min is None and max is None:
        raise TypeError("give the bound: c (clamp to [-c, c]) or min=/max=")
    lo = -math.inf if min is None else _real(min, "min")
    hi = math.inf if max is None else _real(max, "max")
    if lo > hi:
        raise ValueError(f"min must be <= max, got min={lo}, max={hi}")
    return lo, hi


_TENSOR_TYPES = (torch.Tensor, nn.Parameter)


def _check_tensors(tensors: list) -> None:
    """Raises the error a user can act on for the first bad item; returns when every item is acceptable."""
    for i, t in enumerate(tensors):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"clip_: item {i} is a {type(t).__name__}, not a tensor; pass tensors or "
                            "module.parameters()")
        if t.dtype not in _SUPPORTED:
            raise TypeError(f"clip_: item {i} has dtype {t.dtype}; supported: {_DTYPE_NAMES}")
        if t.layout != torch.strided:
            raise ValueError(f"clip_: item {i} has layout {t.layout}; only dense (strided) tensors are supported")
        if t.is_meta:
            raise ValueError(f"clip_: item {i} is a meta tensor (it has no data to clamp)")
        if not t.is_contiguous() and torch._debug_has_internal_overlap(t) == 1:
            raise ValueError(f"clip_: item {i} has elements that share memory (an expanded view?); clamp the tensor "
                             "that owns them")


def _check_bounds(tensors: list, lo: float, hi: float) -> None:
    """Refuses a finite bound beyond the range of a tensor's dtype (as the compiled ops do, and as torch's clamp_
    does for float16 and bfloat16), before anything is written: the pure-torch path clamps tensor by tensor."""
    for dtype in {t.dtype for t in tensors}:
        info = torch.finfo(dtype)
        for bound in (lo, hi):
            if math.isfinite(bound) and not info.min <= bound <= info.max:
                raise ValueError(f"clip_: the bound {bound} is outside the range of {str(dtype)[6:]} ({info.min} to "
                                 f"{info.max}), the dtype of a tensor to clamp")


def _dense(t: torch.Tensor) -> bool:
    """Whether t's elements fill one flat range exactly once (any memory order): what a plan can cover."""
    dims = [(st, sz) for st, sz in zip(t.stride(), t.shape) if sz != 1]
    if any(sz == 0 for sz in t.shape):
        return True
    expected = 1
    for st, sz in sorted(dims):
        if st != expected:
            return False
        expected *= sz
    return True


def _single_device(tensors: list):
    """The device of all tensors when they share one (and are all tensors), else None."""
    device = None
    for t in tensors:
        if type(t) not in _TENSOR_TYPES and not isinstance(t, torch.Tensor):
            return None
        if device is None:
            device = t.device
        elif t.device != device:
            return None
    return device


def clip_(params: Iterable[torch.Tensor], c: float | None = None, *, min: float | None = None,  # noqa: A002
          max: float | None = None, return_counts: bool = False, impl: str | None = None):  # noqa: A002
    """Clamp every tensor of `params` in place to [-c, c] (or [min, max]) in one fused pass.

    Args:
        params: tensors or parameters, any iterable (``model.parameters()`` works). Float32, float64, float16 and
            bfloat16; any shape and strides; leaf parameters that require grad are fine (the clamp is not
            recorded by autograd). Tensors on several devices are clamped per device.
        c: clamp to [-c, c]; c > 0 and finite. Or give ``min=`` and/or ``max=`` instead (None: no bound there).
        return_counts: also return, from the same pass, an int64 tensor of shape ``(len(params),)``: per tensor,
            how many elements sit at a bound after the clamp (the clip's saturation). It lives on the first
            tensor's device; reading it synchronizes.
        impl: "auto" (default, or $WGAN_EXT_IMPL), "fused" or "reference"; see ``wgan_ext._ops``.

    Results equal ``torch.clamp`` bit for bit (bounds rounded to each tensor's dtype; NaN stays NaN). Bad input
    raises before anything is written. Returns None, or the counts when ``return_counts``.
    """
    lo, hi = clip_bounds(c, min, max)
    tensors = list(params)
    if not tensors:
        return torch.zeros(0, dtype=torch.int64) if return_counts else None
    op = "clip_count_" if return_counts else "clip_"

    first = tensors[0]
    if isinstance(first, torch.Tensor) and not first.is_meta and _ops.use_fused(op, first.device.type, impl):
        # The common case, kept cheap: nothing here looks at every tensor. The compiled op checks devices, dtypes,
        # layouts and overlaps itself before it writes anything (a list that also holds meta tensors reaches the
        # meta kernel, which refuses it in _ops); on any refusal the Python checks below name the bad item, or
        # send tensors on several devices to the per-device path.
        with torch.no_grad():
            try:
                return _ops.inplace(op)(tensors, lo, hi)
            except (TypeError, ValueError, RuntimeError, NotImplementedError):
                _check_tensors(tensors)
                _check_bounds(tensors, lo, hi)
                if _single_device(tensors) is not None:
                    raise
    elif (device := _single_device(tensors)) is not None and device.type != "meta":
        with torch.no_grad():
            if _ops.use_fused(op, device.type, impl):  # (only when the first tensor is not a tensor: refused here)
                try:
                    return _ops.inplace(op)(tensors, lo, hi)
                except (TypeError, ValueError, RuntimeError, NotImplementedError):
                    _check_tensors(tensors)
                    _check_bounds(tensors, lo, hi)
                    raise
            _check_tensors(tensors)
            _check_bounds(tensors, lo, hi)
            return getattr(_reference, op)(tensors, lo, hi)

    # Several devices (or something to refuse): check everything first, so that nothing is written on refusal.
    _check_tensors(tensors)
    _check_bounds(tensors, lo, hi)
    first = tensors[0].device
    groups: dict[torch.device, list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault(t.device, []).append(i)
    counts = torch.zeros(len(tensors), dtype=torch.int64, device=first) if return_counts else None
    with torch.no_grad():
        for dev, index in groups.items():
            group = [tensors[i] for i in index]
            fn = _ops.inplace(op) if _ops.use_fused(op, dev.type, impl) else getattr(_reference, op)
            part = fn(group, lo, hi)
            if return_counts:
                counts[torch.tensor(index, device=first)] = part.to(first)
    return counts


_DATA_PTR = torch.Tensor.data_ptr
_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}


def _dtype_mask(tensors) -> int:
    """The planned ops' `dtypes` argument: a bit per dtype code present (csrc/ops/clip.h, clip_plan::code_of)."""
    return sum(1 << code for code in {_CODES[t.dtype] for t in tensors})

_PLANNED_OPS: dict[bool, object] = {False: None, True: None}  # count -> the planned op's OpOverload
_increment_version = torch._C._increment_version


class _ClipPlan:
    """A cached launch plan of the clamp for a list of tensors that stays the same between calls (a Clipper's
    parameters): one row per chunk, the chunk's address, size, tensor and dtype (csrc/ops/clip.h, clip_plan), built
    once by the compiled op ``_clip_plan`` and moved to the tensors' device, where one launch reads it.

    A call costs one op call whatever the number of tensors, plus two passes over the list in torch's C code: the
    check that every tensor still starts at the address the plan holds, and the version-counter bump that an
    in-place op owes autograd. The plan keeps every planned storage alive, so while it exists no other tensor can be
    allocated at a planned address: a tensor that starts where the plan says is the planned tensor's memory.
    Anything that moves a tensor (``.data`` or ``set_`` to other memory, ``.to()``, ``.half()``, a swap) changes
    its address, and the owner rebuilds the plan. ``load_state_dict`` copies in place and keeps the plan.
    Not seen (documented in Clipper): re-pointing a tensor into its own storage at the same first address with
    another size or dtype (``p.data = p.data[:k]``).
    """

    __slots__ = ("tensors", "ptrs", "storages", "rows", "dtypes", "device", "captured", "bump")

    def __init__(self, tensors: tuple[torch.Tensor, ...], flat_buffers: tuple[torch.Tensor, ...] = ()):
        self.tensors = tensors
        # Whose version counters a call bumps: the tensors', or, when they are views of flat buffers (_flatten_),
        # the buffers' (one counter per buffer, shared by every tensor that views it).
        self.bump = flat_buffers or tensors
        self.ptrs = list(map(_DATA_PTR, tensors))
        self.storages = tuple(t.untyped_storage() for t in tensors)
        self.device = tensors[0].device
        self.dtypes = _dtype_mask(tensors)
        with torch.no_grad():
            rows = torch.ops.wgan_ext._clip_plan(list(tensors))
        self.rows = rows.to(self.device) if self.device.type != "cpu" else rows
        self.captured = False  # whether a CUDA graph recorded a launch that reads `rows`

    def valid(self) -> bool:
        return list(map(_DATA_PTR, self.tensors)) == self.ptrs

    def __call__(self, lo: float, hi: float, count: bool):
        if not self.captured and self.device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            self.captured = True
        op = _PLANNED_OPS[count]
        if op is None:  # resolved once (the library loads after this module is imported)
            op = _PLANNED_OPS[count] = getattr(torch.ops.wgan_ext, "_clip_count_planned_" if count
                                               else "_clip_planned_").default
        out = op(self.rows, len(self.tensors), self.dtypes, lo, hi)
        _increment_version(self.bump)  # as clip_'s in-place schema would (autograd's saved-tensor check)
        return out


def _flatten_(tensors: tuple[torch.Tensor, ...], names: list[str]) -> tuple[torch.Tensor, ...]:
    """Re-lays out `tensors` (one device, all dense) in place as views of one buffer per dtype, keeping each tensor
    object (``torch.utils.swap_tensors``), its values, shape, strides, ``requires_grad`` and ``.grad``. Every view
    of a buffer shares the buffer's autograd version counter, so one bump of each buffer's counter is the bump that
    an in-place write owes all of its tensors. Returns the buffers. Checks everything before it moves anything."""
    for name, t in zip(names, tensors):
        if type(t) not in _TENSOR_TYPES:
            raise TypeError(f"Clipper(flatten=True): parameter {name!r} is a {type(t).__name__}; only nn.Parameter "
                            "and plain tensors can be re-laid out (use flatten=False)")
        if t.grad_fn is not None:
            raise ValueError(f"Clipper(flatten=True): {name!r} is the result of an autograd operation, not a leaf "
                             "tensor; only parameters and leaf tensors can be re-laid out")
        if t._backward_hooks or getattr(t, "_post_accumulate_grad_hooks", None):
            raise ValueError(f"Clipper(flatten=True): parameter {name!r} has hooks, which re-laying it out would "
                             "drop; build the Clipper before registering hooks or wrapping the model in DDP/FSDP")
        if weakref.getweakrefs(t):
            raise ValueError(f"Clipper(flatten=True): something holds a weak reference to parameter {name!r} "
                             "(torch.compile, a hook); build the Clipper before that")
        if t._use_count() > 2:  # 2: its AccumulateGrad node, which swap_tensors handles
            raise ValueError(f"Clipper(flatten=True): parameter {name!r} is referenced from C++ (an autograd graph "
                             "that has not run backward yet?); build the Clipper between steps")
    sizes: dict[torch.dtype, int] = {}
    offsets = []
    for t in tensors:
        step = max(1, _ops.ALIGN_BYTES // t.element_size())
        start = -(-sizes.get(t.dtype, 0) // step) * step
        offsets.append(start)
        sizes[t.dtype] = start + t.numel()
    device = tensors[0].device
    buffers = {dtype: torch.zeros(n, dtype=dtype, device=device) for dtype, n in sizes.items()}
    for t, start in zip(tensors, offsets):
        with torch.no_grad():
            view = buffers[t.dtype].as_strided(t.shape, t.stride(), start)
            view.copy_(t)
        new = (nn.Parameter(view, requires_grad=t.requires_grad) if type(t) is nn.Parameter
               else view.detach().requires_grad_(t.requires_grad))
        if t.grad is not None:
            new.grad = t.grad
        new.__dict__.update(t.__dict__)
        torch.utils.swap_tensors(t, new)
    return tuple(buffers.values())


def _named_params(module: nn.Module, exclude: Iterable[str], exclude_types: tuple) -> list[tuple[str, nn.Parameter]]:
    named = list(module.named_parameters())
    skip = set()
    for pattern in exclude:
        hits = {name for name, _ in named if fnmatch.fnmatchcase(name, pattern)}
        if not hits:
            examples = ", ".join(name for name, _ in named[:5])
            raise ValueError(f"Clipper: exclude pattern {pattern!r} matches no parameter (names look like: "
                             f"{examples})")
        skip |= hits
    if exclude_types:
        for mod_name, sub in module.named_modules():
            if isinstance(sub, exclude_types):
                skip |= {name for name, _ in sub.named_parameters(prefix=mod_name)}
    return [(name, p) for name, p in named if name not in skip]


class Clipper:
    """Weight clipping for a critic: ``clipper()`` clamps all its parameters in one fused pass.

    Args:
        params: the critic (an ``nn.Module``) or an iterable of its parameters.
        c: clamp to [-c, c] (paper default 0.01). Or ``min=``/``max=`` (then c is ignored unless given).
        exclude: name patterns (``fnmatch``, e.g. ``"*.bias"``, ``"main.1.*"``) of parameters to leave alone;
            needs a module. A pattern that matches nothing is an error (it is usually a typo).
        exclude_types: module classes whose parameters are left alone, e.g. ``(nn.BatchNorm2d,)``. The official
            WGAN code clamps BatchNorm's weight and bias too, which is what the default does.
        track_saturation: count, in the same pass, the elements at a bound; see ``saturation()``.
        impl: "auto" | "fused" | "reference" (see ``clip_``).
        cache_plan: keep a launch plan of the parameters between calls (default): a call is then one op call and
            one launch whatever the number of parameters, plus two cheap passes over them in torch's C code (is
            every parameter where the plan says? bump their autograd version counters). False: pass the list to
            ``clip_`` on every call.
        flatten: with the plan, also re-lay out the parameters as views of one flat buffer per dtype (the same
            ``nn.Parameter`` objects, values, shapes, strides and gradients; ``parameters()``, ``state_dict`` and
            optimizers see no difference). They then share one autograd version counter, so a call bumps one
            counter instead of one per parameter: the lowest host cost per call (measured in docs/benchmarks.md).
            The price: an in-place change to any one of them counts as a change to all of them in autograd's
            saved-tensor check. Build the Clipper before registering tensor hooks or wrapping the model in
            DDP/FSDP (re-laying out drops hooks; refused with an error). A parameter moved later is re-laid out
            with the rest at the next call. Without a plan to use (``impl="reference"``, or no compiled planned
            kernel for the device, as after a failed build) it warns and clips the parameters as they are.

    The plan is rebuilt on the next call when a parameter moves (``.data`` or ``set_`` to other memory, ``.to()``,
    ``.half()``, a swap); ``load_state_dict`` copies in place and keeps it. Built from a module, the Clipper follows
    it: parameters registered later (a layer added or replaced, ``load_state_dict(assign=True)``) are clipped from
    the next call on; the plan keeps the planned storages alive until then. Not noticed: a parameter re-pointed into
    its own storage at the same first address with another size or dtype (``p.data = p.data[:k]``), and a
    parameter removed from the module (``del``; it is still clipped).

    When to clip: the paper (Algorithm 1) clamps right *after* each critic update; the official code clamps at the
    *start* of each critic iteration, before the forward pass. ``attach(optimizer)`` gives the paper's order (one
    line added to a loop); for the official order call ``clipper()`` before each critic step instead. The two
    differ only in whether the generator step and the first critic forward see freshly clamped weights.
    """

    def __init__(self, params, c: float | None = 0.01, *, min: float | None = None,  # noqa: A002
                 max: float | None = None, exclude: Iterable[str] = (), exclude_types=(),  # noqa: A002
                 track_saturation: bool = False, impl: str | None = None, cache_plan: bool = True,
                 flatten: bool = False):
        if min is not None or max is not None:
            c = None
        self.min, self.max = clip_bounds(c, min, max)
        exclude = [exclude] if isinstance(exclude, str) else list(exclude)
        exclude_types = tuple(exclude_types) if isinstance(exclude_types, (list, tuple)) else (exclude_types,)
        if isinstance(params, nn.Module):
            named = _named_params(params, exclude, exclude_types)
        else:
            if exclude or exclude_types:
                raise TypeError("Clipper: exclude= and exclude_types= need the module itself, not its parameters")
            named = [(str(i), p) for i, p in enumerate(params)]
        _check_tensors([p for _, p in named])
        _check_bounds([p for _, p in named], self.min, self.max)
        self.names = [name for name, _ in named]
        self.params = [p for _, p in named]
        self.track_saturation = track_saturation
        self.impl = _ops.resolve_impl(impl)
        self.last_counts: torch.Tensor | None = None
        # A module is followed: parameters registered on it later (a layer replaced, load_state_dict(assign=True))
        # are clipped from the next call on.
        self._module = params if isinstance(params, nn.Module) else None
        self._exclude, self._exclude_types = exclude, exclude_types
        if self._module is not None:
            _watch.watch()
        self._seen = _watch.REGISTRATIONS[0]
        self.cache_plan = bool(cache_plan)
        self._plan: _ClipPlan | None = None
        self._retired: list[torch.Tensor] = []
        self._unplanned: list | None = None  # the parameters' addresses when the last try found no plan
        self.flatten = bool(flatten)
        if self.flatten:
            if not self.cache_plan:
                raise ValueError("Clipper: flatten=True works through the cached plan; it needs cache_plan=True")
            device = _single_device(self.params)
            if device is not None and (self.impl == "reference" or not _ops.has_kernel("_clip_planned_", device.type)):
                # a speed option only: where the implementation has no plan, clip the parameters as they are
                why = ("impl='reference'" if self.impl == "reference"
                       else _ops._missing_reason("_clip_planned_", device.type))
                warnings.warn("Clipper(flatten=True): the parameters are not re-laid out and are clipped as they "
                              f"are, through clip_: {why}", RuntimeWarning, stacklevel=2)
                self.flatten = False
            elif self._planned() is None:
                raise ValueError("Clipper(flatten=True): no launch plan applies to these parameters (they must be "
                                 "dense and on one device)")

    def _refresh(self) -> None:
        """Re-reads the module's parameters after a registration somewhere (cheap: only then)."""
        self._seen = _watch.REGISTRATIONS[0]
        named = _named_params(self._module, self._exclude, self._exclude_types)
        params = [p for _, p in named]
        if len(params) != len(self.params) or any(a is not b for a, b in zip(params, self.params)):
            _check_tensors(params)
            self.names = [name for name, _ in named]
            self.params = params
            if self._plan is not None and self._plan.captured:
                self._retired.append(self._plan.rows)  # a captured graph still reads these rows when replayed
            self._plan = None
            self._unplanned = None

    def _planned(self) -> _ClipPlan | None:
        """The cached plan for the current parameters, rebuilt when any of them moved; None where a plan does not
        apply (the reference, several devices, a device without the planned kernel, a parameter that is not dense,
        under torch.compile): then the call goes through clip_."""
        plan = self._plan
        if plan is not None and plan.valid():
            return plan
        if plan is not None and plan.captured:
            self._retired.append(plan.rows)  # a captured graph still reads these rows when replayed
        if self._unplanned is not None and self._unplanned == list(map(_DATA_PTR, self.params)):
            return None  # nothing moved since the last try found no plan
        self._plan = plan = None
        params = tuple(self.params)
        _check_bounds(params, self.min, self.max)  # a parameter may have changed dtype (.half())
        device = _single_device(self.params)
        if device is not None and device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            return None  # a plan is copied to the device from pageable memory, which a capture refuses: clip_ here
        if (params and device is not None and self.impl != "reference" and
                _ops.has_kernel("_clip_planned_", device.type) and
                all(p.is_contiguous() or _dense(p) for p in params)):
            buffers = _flatten_(params, self.names) if self.flatten else ()
            plan = self._plan = _ClipPlan(params, buffers)
        self._unplanned = None if plan is not None else list(map(_DATA_PTR, params))
        return plan

    def __call__(self) -> torch.Tensor | None:
        """Clamp every parameter now. Returns the per-parameter counts at a bound when tracking saturation."""
        if self._module is not None and self._seen != _watch.REGISTRATIONS[0]:
            self._refresh()
        plan = None if not self.cache_plan or torch.compiler.is_compiling() else self._planned()
        if plan is not None:
            counts = plan(self.min, self.max, self.track_saturation)
        else:
            counts = clip_(self.params, min=self.min, max=self.max, return_counts=self.track_saturation,
                           impl=self.impl)
        self.last_counts = counts
        return counts

    def saturation(self) -> float:
        """Fraction of all clipped elements that sat at a bound after the last call (synchronizes with the device)."""
        return float(self.saturation_tensor().item())

    def saturation_tensor(self) -> torch.Tensor:
        """``saturation()`` as a 0-dim float64 tensor on the counts' device, without synchronizing: for logging it
        with other values in one device-to-host transfer."""
        if self.last_counts is None:
            raise RuntimeError("Clipper.saturation(): build the Clipper with track_saturation=True and call it first")
        total = sum(p.numel() for p in self.params)
        if not total:
            return torch.zeros((), dtype=torch.float64, device=self.last_counts.device)
        return self.last_counts.sum().double() / total

    def saturation_per_parameter(self) -> dict[str, float]:
        """Per parameter name, the fraction of its elements at a bound after the last call."""
        if self.last_counts is None:
            raise RuntimeError("Clipper.saturation_per_parameter(): build the Clipper with track_saturation=True "
                               "and call it first")
        counts = self.last_counts.tolist()
        return {n: (k / p.numel() if p.numel() else 0.0) for n, p, k in zip(self.names, self.params, counts)}

    def attach(self, optimizer: torch.optim.Optimizer):
        """Clamp after every ``optimizer.step()`` (the paper's order). Returns a handle; ``handle.remove()`` detaches.

        The optimizer must hold at least one of the clipped parameters (attach to the critic's optimizer).
        """
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        if self.params and not any(id(p) in held for p in self.params):
            raise ValueError("Clipper.attach: the optimizer holds none of the clipped parameters; attach the Clipper "
                             "to the critic's optimizer")
        return optimizer.register_step_post_hook(lambda opt, args, kwargs: self())

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.params)
        return (f"Clipper(min={self.min}, max={self.max}, tensors={len(self.params)}, elements={n}, "
                f"impl={self.impl!r})")
