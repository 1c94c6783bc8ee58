"""Spectral normalization (Miyato et al. 2018) as a drop-in for ``torch.nn.utils.parametrizations.spectral_norm``,
and batched over a whole critic.

``spectral_norm(module)`` registers ``SpectralNorm``, a parametrization with torch's semantics and torch's state_dict
keys (``parametrizations.weight.original``, ``parametrizations.weight.0._u``, ``..._v``), so checkpoints move between
the two both ways. ``apply_spectral_norm(model)`` puts it on every Linear / Conv / ConvTranspose of a model and runs
the power iteration of all those layers in one op call per model forward (one CUDA launch per dtype), instead of
about ten small kernels per layer.
"""

from __future__ import annotations

import fnmatch
import numbers
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from . import _ops, _reference

_SUPPORTED = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d) + _TRANSPOSED


def power_iteration_(weights: list[torch.Tensor], us: list[torch.Tensor], vs: list[torch.Tensor],
                     n_power_iterations: int, eps: float, impl: str | None = None) -> None:
    """For every layer: n steps of u <- normalize(W v), v <- normalize(W^T u), in place (no autograd)."""
    if not weights:
        return
    with torch.no_grad():
        if _ops.use_fused("spectral_norm_power_iteration_", weights[0].device.type, impl):
            _ops.inplace("spectral_norm_power_iteration_")(weights, us, vs, n_power_iterations, eps)
        else:
            _reference.spectral_norm_power_iteration_(weights, us, vs, n_power_iterations, eps)


def normalize(weights: list[torch.Tensor], us: list[torch.Tensor], vs: list[torch.Tensor],
              impl: str | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Every layer's ``W / sigma``, sigma = u^T W v (u, v constant), in one op call (and one call for its
    backward); differentiable w.r.t. the weights. Returns the normalized matrices and the op's `saved` tensor (the
    sigmas first)."""
    if weights and _ops.use_fused("spectral_norm_normalize", weights[0].device.type, impl):
        op = torch.ops.wgan_ext.spectral_norm_normalize.default
        if not torch.compiler.is_compiling() and not (torch.is_grad_enabled()
                                                      and any(w.requires_grad for w in weights)):
            with torch._C._AutoDispatchBelowAutograd():  # nothing to record: skip the Python autograd kernel
                outs, saved = op(weights, us, vs)
        else:
            outs, saved = op(weights, us, vs)
        return list(outs), saved
    return _reference.spectral_norm_normalize(weights, us, vs)


_USE_COUNT = getattr(torch._C, "_storage_Use_Count", None)  # references to a storage (private; in torch >= 2.0)


def _functorch_active() -> bool:
    """Whether a torch.func transform (grad, vmap, ...) is running."""
    return torch._C._functorch.peek_interpreter_stack() is not None


class _Slot:
    """One set of output matrices (views of one byte buffer, 64-byte aligned), and how many references to the
    buffer's storage exist while nothing outside the pool holds any of them."""

    __slots__ = ("key", "outs", "storage", "idle_count")

    def __init__(self, key: tuple, device: torch.device):
        offsets, n = [], 0
        for dtype, shape in key:
            n = -(-n // _ops.ALIGN_BYTES) * _ops.ALIGN_BYTES
            offsets.append(n)
            n += shape[0] * shape[1] * dtype.itemsize
        buffer = torch.empty(max(n, 1), dtype=torch.uint8, device=device)
        self.key = key
        self.outs = [buffer[o:o + shape[0] * shape[1] * dtype.itemsize].view(dtype).view(shape)
                     for o, (dtype, shape) in zip(offsets, key)]
        self.storage = buffer.untyped_storage()
        del buffer  # the views keep the storage
        self.idle_count = _USE_COUNT(self.storage._cdata)

    def idle(self) -> bool:
        return _USE_COUNT(self.storage._cdata) == self.idle_count


class _OutputPool:
    """Where a group's CPU normalize writes the normalized weights: output sets kept between forwards and reused
    once nothing holds their previous results (no tensor or autograd graph refers to their memory any more, seen
    from the storage's use count), instead of a fresh weight-sized tensor per layer and forward. On the CPU that
    fresh memory is what SN costs most: the allocator hands large blocks back to the OS when they are freed and the
    next forward takes them back page by page (measured in docs/benchmarks.md). Holds at most `limit` sets (a
    critic step with a gradient penalty keeps three forwards alive until its backward); past that, and where the
    private use-count function is missing, a forward allocates as before."""

    def __init__(self, limit: int = 4):
        self.limit = limit
        self.slots: list[_Slot] = []

    def take(self, matrices: list[torch.Tensor]) -> list[torch.Tensor] | None:
        if _USE_COUNT is None:
            return None
        key = tuple((m.dtype, tuple(m.shape)) for m in matrices)
        for slot in self.slots:
            if slot.key == key and slot.idle():
                return slot.outs
        self.slots = [slot for slot in self.slots if slot.key == key]  # the layers changed: drop the old sets
        if len(self.slots) >= self.limit:
            return None
        slot = _Slot(key, matrices[0].device)
        self.slots.append(slot)
        return slot.outs

    def __getstate__(self):  # copies and pickles of a model start with an empty pool
        return {"limit": self.limit}

    def __setstate__(self, state):
        self.limit = state["limit"]
        self.slots = []


class SpectralNorm(nn.Module):
    """The spectral-norm parametrization: ``weight / sigma(weight)``, sigma by power iteration on ``weight`` viewed
    as a matrix (out, rest) along ``dim``. Same buffers, initialization (15 iterations) and semantics as torch's:
    u, v are updated in place in training mode, under no_grad; no gradient flows through them (dsigma/dW = u v^T);
    1-D weights are just normalized."""

    def __init__(self, weight: torch.Tensor, n_power_iterations: int = 1, dim: int = 0, eps: float = 1e-12,
                 impl: str | None = None):
        super().__init__()
        ndim = weight.ndim
        self.dim = dim if dim >= 0 else dim + ndim
        self.eps = eps
        self.impl = impl
        self.batched = False  # True when a SpectralNormGroup runs the power iteration for this layer
        # (weight, versions of weight, u, v, normalized matrix): set by a SpectralNormGroup's batched normalize
        # before the model's forward, used by this layer's next forward if nothing changed since
        self._pending = None
        if ndim > 1:
            self.n_power_iterations = n_power_iterations
            weight_mat = self._reshape_weight_to_matrix(weight.detach())
            h, w = weight_mat.size()
            u = weight_mat.new_empty(h).normal_(0, 1)
            v = weight_mat.new_empty(w).normal_(0, 1)
            self.register_buffer("_u", F.normalize(u, dim=0, eps=self.eps))
            self.register_buffer("_v", F.normalize(v, dim=0, eps=self.eps))
            power_iteration_([weight_mat], [self._u], [self._v], 15, self.eps, self.impl)

    def _reshape_weight_to_matrix(self, weight: torch.Tensor) -> torch.Tensor:
        if self.dim == 0 and weight.dim() == 2:
            return weight  # a Linear's weight is its matrix (this runs for every layer and forward)
        if self.dim != 0:
            weight = weight.permute(self.dim, *(d for d in range(weight.dim()) if d != self.dim))
        return weight.flatten(1)

    def _matrix_to_weight(self, matrix: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The inverse of _reshape_weight_to_matrix (a view, or the matrix itself for a Linear's weight)."""
        if self.dim == 0:
            return matrix if matrix.shape == weight.shape else matrix.view(weight.shape)
        rest = [d for d in range(weight.dim()) if d != self.dim]
        permuted = matrix.view([weight.shape[self.dim]] + [weight.shape[d] for d in rest])
        inverse = [0] * weight.dim()
        for position, d in enumerate([self.dim] + rest):
            inverse[d] = position
        return permuted.permute(inverse)

    def _take_pending(self, weight: torch.Tensor) -> torch.Tensor | None:
        # (runs once per layer and forward: __dict__ and _buffers directly, not nn.Module's attribute machinery)
        pending = self._pending
        if pending is None:
            return None
        self.__dict__["_pending"] = None
        w, versions, matrix = pending
        buffers = self._buffers
        if w is not weight or versions != (weight._version, buffers["_u"]._version, buffers["_v"]._version):
            return None  # the weight, u or v changed since the group normalized them
        return self._matrix_to_weight(matrix, weight)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if weight.ndim == 1:
            return F.normalize(weight, dim=0, eps=self.eps)
        batched = self._take_pending(weight)
        if batched is not None:
            return batched
        weight_mat = self._reshape_weight_to_matrix(weight)
        if self.training and not self.batched:
            power_iteration_([weight_mat.detach()], [self._u], [self._v], self.n_power_iterations, self.eps,
                             self.impl)
        # Clones: u and v may be updated in place by the next forward before this one's backward (pytorch#66363).
        u = self._u.clone(memory_format=torch.contiguous_format)
        v = self._v.clone(memory_format=torch.contiguous_format)
        sigma = torch.vdot(u, torch.mv(weight_mat, v))
        return weight / sigma

    def right_inverse(self, value: torch.Tensor) -> torch.Tensor:
        return value


def _is_spectral_norm(p) -> bool:
    return isinstance(p, SpectralNorm) or type(p).__name__ == "_SpectralNorm"


def spectral_norm(module: nn.Module, name: str = "weight", n_power_iterations: int = 1, eps: float = 1e-12,
                  dim: int | None = None, impl: str | None = None) -> nn.Module:
    """Drop-in for ``torch.nn.utils.parametrizations.spectral_norm`` (same arguments, semantics, state_dict keys).

    ``dim`` defaults to 1 for ConvTranspose modules and 0 otherwise. Returns the module.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"spectral_norm: module must be an nn.Module, got {type(module).__name__}")
    weight = getattr(module, name, None)
    if not isinstance(weight, torch.Tensor):
        raise ValueError(f"spectral_norm: {type(module).__name__} has no parameter or buffer named {name!r}")
    if weight.dtype not in _SUPPORTED:
        raise TypeError(f"spectral_norm: {name} has dtype {weight.dtype}; supported: float32, float64, float16, "
                        "bfloat16")
    if weight.numel() == 0:
        raise ValueError(f"spectral_norm: {name} is empty (shape {tuple(weight.shape)})")
    if isinstance(n_power_iterations, bool) or not isinstance(n_power_iterations, int) or n_power_iterations < 1:
        raise ValueError(f"spectral_norm: n_power_iterations must be an int >= 1, got {n_power_iterations!r}")
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps > 0 or eps == float("inf"):
        raise ValueError(f"spectral_norm: eps must be a finite number > 0, got {eps!r}")
    if parametrize.is_parametrized(module, name) and any(
            _is_spectral_norm(p) for p in module.parametrizations[name]):
        raise ValueError(f"spectral_norm: {type(module).__name__}.{name} already has spectral normalization")
    if dim is None:
        dim = 1 if isinstance(module, _TRANSPOSED) else 0
    if not -weight.ndim <= dim < max(weight.ndim, 1):
        raise ValueError(f"spectral_norm: dim {dim} is out of range for a {weight.ndim}-D {name}")
    parametrize.register_parametrization(module, name, SpectralNorm(weight, n_power_iterations, dim, eps, impl))
    return module


class SpectralNormGroup:
    """Spectral norm on many layers, with one batched power-iteration op call for all of them.

    Made by ``apply_spectral_norm``. With ``update="forward"`` (torch's behaviour) a forward pre-hook on the model
    updates every layer's u, v once per training-mode forward; with ``update="step"`` call ``attach(optimizer)``
    (u, v then change once per optimizer step, so the real, fake and interpolate forwards of one critic step see
    the same sigma); ``update="manual"``: call ``power_iteration()`` yourself. In every mode the pre-hook then
    computes every layer's W / sigma in one op call (``normalize``), which the layers' forwards use; its backward is
    one call for all layers too.
    """

    def __init__(self, model: nn.Module, layers: list[tuple[str, nn.Module]], update: str, impl: str | None):
        self.model = model
        self.layers = layers
        self.impl = impl
        self.update = update
        # each layer's parametrization list (holds `original`) and its SpectralNorm, looked up once: the pre-hook
        # runs every forward, and nn.Module attribute lookups cost microseconds each
        self._holders = [m.parametrizations["weight"] for _, m in layers]
        self._sns = [h[0] for h in self._holders]
        self._handles = [model.register_forward_pre_hook(self._pre_forward)]
        self._pool = _OutputPool()

    def _pre_forward(self, module, args):
        if not self._sns:
            return
        tensors = self._layer_tensors()  # read once for both (the power iteration updates u, v in place)
        if self.update == "forward" and module.training:
            self._power_iteration(tensors)
        self._normalize(tensors)

    def normalize(self) -> None:
        """Every layer's W / sigma in one op call, for the layers' next forward (done before each model forward)."""
        if self._sns:
            self._normalize(self._layer_tensors())

    def _normalize(self, tensors) -> None:
        sns = self._sns
        originals, us, vs, matrices = tensors
        outs = self._normalize_pooled(matrices, us, vs)
        if outs is None:
            outs, _ = normalize(matrices, us, vs, self.impl)
        for sn, w, u, v, out in zip(sns, originals, us, vs, outs):
            sn.__dict__["_pending"] = (w, (w._version, u._version, v._version), out)

    def _layer_tensors(self):
        """Every layer's raw weight, u, v and weight matrix, read from the modules' dicts: this runs at every
        forward, and each nn.Module attribute lookup costs about a microsecond."""
        originals = [h._parameters.get("original") for h in self._holders]
        if any(w is None for w in originals):  # a parametrized buffer
            originals = [h.original for h in self._holders]
        us = [sn._buffers["_u"] for sn in self._sns]
        vs = [sn._buffers["_v"] for sn in self._sns]
        matrices = [sn._reshape_weight_to_matrix(w) for sn, w in zip(self._sns, originals)]
        return originals, us, vs, matrices

    def _normalize_pooled(self, matrices, us, vs) -> list[torch.Tensor] | None:
        """normalize() into the pool's tensors on the CPU (None where that does not apply)."""
        device = matrices[0].device
        if (device.type != "cpu" or torch.compiler.is_compiling() or torch.is_inference_mode_enabled() or
                _functorch_active() or _ops.resolve_impl(self.impl) == "reference" or
                not _ops.has_kernel("_spectral_norm_normalize_into", "cpu")):
            # (memory taken under inference_mode could never be used by autograd afterwards; torch.func's wrapped
            # tensors have no storage to count)
            return None
        outs = self._pool.take(matrices)
        if outs is None:
            return None
        if torch.is_grad_enabled() and any(m.requires_grad for m in matrices):
            return list(_ops.NormalizeInto.apply(us, vs, outs, *matrices)[1:])
        _ops.inplace("_spectral_norm_normalize_into")(matrices, us, vs, outs)
        return [out.detach() for out in outs]

    def parametrizations(self) -> list[SpectralNorm]:
        return list(self._sns)

    def power_iteration(self) -> None:
        """One update of every layer's u, v (n_power_iterations steps each), in one op call."""
        if self._sns:
            self._power_iteration(self._layer_tensors())

    def _power_iteration(self, tensors) -> None:
        sns = self._sns
        _, us, vs, matrices = tensors
        power_iteration_(matrices, us, vs, sns[0].n_power_iterations, sns[0].eps, self.impl)  # (under no_grad)

    def attach(self, optimizer: torch.optim.Optimizer):
        """Update u, v after every ``optimizer.step()`` (for ``update="step"``). Returns a removable handle."""
        handle = optimizer.register_step_post_hook(lambda opt, args, kwargs: self.power_iteration())
        self._handles.append(handle)
        return handle

    def sigmas(self) -> dict[str, float]:
        """Per layer, the current estimate of the weight's largest singular value (synchronizes once)."""
        return dict(zip((name for name, _ in self.layers), self.sigma_tensor().tolist()))

    def sigma_tensor(self) -> torch.Tensor:
        """The layers' sigma estimates (float64, in the order of ``layers``) without synchronizing: for logging them
        with other values in one device-to-host transfer."""
        values = []
        with torch.no_grad():
            _, us, vs, matrices = self._layer_tensors()
            for W, u, v in zip(matrices, us, vs):
                values.append(torch.vdot(u, torch.mv(W, v)).double())
        if not values:
            return torch.zeros(0, dtype=torch.float64)
        return torch.stack([v.to(values[0].device) for v in values])

    def remove(self) -> None:
        """Stop the batched updates (the parametrizations stay; each layer then updates itself like torch's)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for sn in self.parametrizations():
            sn.batched = False
            sn._pending = None


def apply_spectral_norm(model: nn.Module, n_power_iterations: int = 1, eps: float = 1e-12,
                        exclude: Iterable[str] = (), exclude_types=(), update: str = "forward",
                        impl: str | None = None) -> SpectralNormGroup:
    """Put spectral norm on every Linear, Conv1d/2d/3d and ConvTranspose1d/2d/3d of `model` (its ``weight``;
    ConvTranspose along dim 1), with one batched power iteration per model forward. Returns the group.

    exclude: module name patterns (fnmatch over ``named_modules()``, e.g. ``"main.0"``, ``"*.head"``) to leave
        alone; a pattern that matches no layer is an error. exclude_types: module classes to leave alone.
    update: "forward" (default, torch's behaviour), "step" (with ``group.attach(optimizer)``) or "manual".
    """
    if update not in ("forward", "step", "manual"):
        raise ValueError(f"update must be 'forward', 'step' or 'manual', got {update!r}")
    exclude = [exclude] if isinstance(exclude, str) else list(exclude)
    exclude_types = tuple(exclude_types) if isinstance(exclude_types, (list, tuple)) else (exclude_types,)
    candidates = [(n, m) for n, m in model.named_modules() if isinstance(m, LAYER_TYPES)]
    skip = set()
    for pattern in exclude:
        hits = {n for n, _ in candidates if fnmatch.fnmatchcase(n, pattern)}
        if not hits:
            raise ValueError(f"apply_spectral_norm: exclude pattern {pattern!r} matches no layer (layers: "
                             f"{', '.join(n for n, _ in candidates[:6])})")
        skip |= hits
    layers = [(n, m) for n, m in candidates if n not in skip and not (exclude_types and isinstance(m, exclude_types))]
    for _, m in layers:
        spectral_norm(m, n_power_iterations=n_power_iterations, eps=eps, impl=impl)
        m.parametrizations["weight"][0].batched = True
    return SpectralNormGroup(model, layers, update, impl)
