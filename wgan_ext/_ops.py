"""The op layer: loads the compiled library, registers fake kernels, and picks fused kernel or reference per call.

Selection, per op and device:
  * ``impl="auto"`` (default): the compiled kernel when the library loaded and has a kernel for the tensors' device,
    else the pure-torch reference, with one warning per (op, reason).
  * ``impl="fused"``: the compiled kernel or a RuntimeError saying why it is missing.
  * ``impl="reference"``: always the pure-torch reference (also the test oracle).
The default can be set with the environment variable ``WGAN_EXT_IMPL`` (auto | fused | reference).
"""

from __future__ import annotations

import os
import warnings

import torch

IMPLS = ("auto", "fused", "reference")
ENV_IMPL = "WGAN_EXT_IMPL"

# Compiled ops and the device types they may have kernels for.
OP_NAMES = ("clip_", "clip_count_", "_clip_planned_", "interpolate", "gradient_norm_penalty",
            "_gradient_norm_penalty_backward", "spectral_norm_power_iteration_", "spectral_norm_normalize",
            "_spectral_norm_normalize_backward", "_spectral_norm_normalize_into",
            "rmsprop_clip_step_", "adam_clip_step_", "_rmsprop_clip_planned_", "_adam_clip_planned_")
DEVICE_KEYS = {"cpu": "CPU", "cuda": "CUDA"}

# Where each tensor starts in a buffer the Python layer lays out for the kernels (Clipper's flat layout, spectral
# norm's kept outputs): a multiple of 64 bytes, for vector loads on CUDA and whole cache lines on the CPU.
ALIGN_BYTES = 64

LOAD_ERROR: BaseException | None = None
try:
    # Loading the library registers torch.ops.wgan_ext.*. It is built on the LibTorch stable ABI and the Python
    # limited API (_C.abi3.so): one build loads into every torch >= 2.11 on every Python >= 3.10.
    from . import _C  # noqa: F401
except (ImportError, OSError) as exc:  # missing, or a torch older than the stable ABI it needs
    LOAD_ERROR = exc


def has_ops() -> bool:
    """True when the compiled library loaded."""
    return LOAD_ERROR is None


def _kernel_table() -> dict[tuple[str, str], bool]:
    table = {}
    for op in OP_NAMES:
        for device, key in DEVICE_KEYS.items():
            table[(op, device)] = has_ops() and torch._C._dispatch_has_kernel_for_dispatch_key(f"wgan_ext::{op}", key)
    return table


# Computed once: a dict lookup is cheap in the hot path and traceable by torch.compile.
KERNELS = _kernel_table()


def has_kernel(op: str, device_type: str) -> bool:
    """True when the compiled op `op` has a kernel for tensors on `device_type` ("cpu", "cuda", ...)."""
    return KERNELS.get((op, device_type), False)


def build_info() -> dict[str, str]:
    """How the compiled library was built ({} when it did not load)."""
    if not has_ops():
        return {}
    text = torch.ops.wgan_ext._build_info()
    return dict(item.split("=", 1) for item in text.split(";") if item)


def _missing_reason(op: str, device_type: str) -> str:
    if LOAD_ERROR is not None:
        return (f"the compiled library wgan_ext._C could not be loaded ({type(LOAD_ERROR).__name__}: {LOAD_ERROR}). "
                "It needs torch >= 2.11 (the LibTorch stable ABI); reinstall with pip install . "
                "(or pip install --no-build-isolation . against the torch you run with)")
    return (f"wgan_ext was built without a {device_type} kernel for {op} "
            "(python -m wgan_ext.info lists what was built)")


_warned: set[tuple[str, str]] = set()


def resolve_impl(impl: str | None) -> str:
    """The implementation asked for: the argument, else $WGAN_EXT_IMPL, else "auto"; validated."""
    if impl is None:
        impl = os.environ.get(ENV_IMPL, "auto").strip().lower() or "auto"
        source = f"environment variable {ENV_IMPL}"
    else:
        source = "impl"
    if impl not in IMPLS:
        raise ValueError(f"{source} must be one of {', '.join(IMPLS)}; got {impl!r}")
    return impl


def use_fused(op: str, device_type: str, impl: str | None) -> bool:
    """Whether to run the compiled `op` for tensors on `device_type` (see the module docstring)."""
    impl = resolve_impl(impl)
    if impl == "reference":
        return False
    if has_kernel(op, device_type):
        return True
    if impl == "fused":
        raise RuntimeError(f"wgan_ext: impl='fused' was asked for {op} on {device_type}, but "
                           f"{_missing_reason(op, device_type)}")
    key = (op, device_type)
    if key not in _warned:
        _warned.add(key)
        warnings.warn(f"wgan_ext: using the pure-torch reference for {op} on {device_type}: "
                      f"{_missing_reason(op, device_type)}", RuntimeWarning, stacklevel=3)
    return False


def _written(op) -> list[int]:
    """The positions of the arguments an op's schema marks as written (Tensor(a!) / Tensor(a!)[])."""
    return [i for i, arg in enumerate(op._schema.arguments) if arg.alias_info is not None and arg.alias_info.is_write]


_INPLACE: dict = {}


def inplace(name: str):
    """The compiled in-place op `name` as the Python layer calls it: below the ADInplaceOrView key (whose Python
    kernel, registered below for direct torch.ops calls, costs microseconds per call and per tensor), then the
    version counters of the written arguments bumped here, as that kernel would. Under torch.compile, the plain op."""
    fn = _INPLACE.get(name)
    if fn is None:
        op = getattr(torch.ops.wgan_ext, name).default
        written = _written(op)
        below = torch._C._AutoDispatchBelowADInplaceOrView
        increment = torch._C._increment_version

        def fn(*args):
            if torch.compiler.is_compiling():
                return op(*args)
            with below():
                out = op(*args)
            for i in written:
                increment(args[i])  # a list of tensors
            return out

        _INPLACE[name] = fn
    return fn


def _bump_written_versions(lib: torch.library.Library, name: str) -> None:
    """ADInplaceOrView kernel of the in-place op `name`: run the op below this key, then bump the version counter of
    every tensor its schema marks as written (Tensor(a!) / Tensor(a!)[]), as ATen's in-place ops do, so autograd
    notices when a tensor it saved for backward was updated in place instead of computing a wrong gradient. (Written
    here because the stable ABI the kernels are built on offers no boxed kernel over c10 types.)"""
    op = getattr(torch.ops.wgan_ext, name).default
    written = _written(op)
    below = torch._C._after_ADInplaceOrView_keyset

    def kernel(keyset, *args):
        with torch._C._AutoDispatchBelowADInplaceOrView():
            out = op.redispatch(keyset & below, *args)
        for i in written:
            torch.autograd.graph.increment_version(args[i])  # a tensor or a list of tensors
        return out

    lib.impl(name, kernel, "ADInplaceOrView", with_keyset=True)


if has_ops():
    _LIB = torch.library.Library("wgan_ext", "IMPL")
    for _name in ("clip_", "clip_count_", "spectral_norm_power_iteration_", "rmsprop_clip_step_", "adam_clip_step_",
                  "_spectral_norm_normalize_into"):
        _bump_written_versions(_LIB, _name)


# Fake (meta) kernels, so the ops work under torch.compile and FakeTensor tracing.
if has_ops():

    from torch._subclasses.fake_tensor import FakeTensor

    def _refuse_real_data(name: str, tensors) -> None:
        """The meta kernel of an in-place op is reached by fake tensors (tracing), by meta tensors, and by a list of
        real tensors that also holds a meta tensor (the meta key outranks the devices'): refuse the last, which would
        otherwise silently write nothing."""
        for i, t in enumerate(tensors):
            if not t.is_meta and not isinstance(t, FakeTensor):
                raise RuntimeError(f"wgan_ext::{name}: all tensors must be on one device; tensor {i} is on "
                                   f"{t.device} but the list also holds meta tensors")

    @torch.library.register_fake("wgan_ext::clip_")
    def _clip_fake(tensors, min, max):  # noqa: A002
        _refuse_real_data("clip_", tensors)
        return None

    @torch.library.register_fake("wgan_ext::clip_count_")
    def _clip_count_fake(tensors, min, max):  # noqa: A002
        _refuse_real_data("clip_count_", tensors)
        return tensors[0].new_empty((len(tensors),), dtype=torch.int64)

    @torch.library.register_fake("wgan_ext::spectral_norm_power_iteration_")
    def _power_iteration_fake(weights, us, vs, n_power_iterations, eps):
        return None

    @torch.library.register_fake("wgan_ext::rmsprop_clip_step_")
    def _rmsprop_clip_step_fake(params, grads, square_avgs, momentum_buffers, lr, alpha, eps, weight_decay, momentum,
                                clip_value):
        return None

    @torch.library.register_fake("wgan_ext::adam_clip_step_")
    def _adam_clip_step_fake(params, grads, exp_avgs, exp_avg_sqs, lr, beta1, beta2, eps, weight_decay, step,
                             clip_value):
        return None

    def _acc_dtype(dtype):
        return torch.float64 if dtype == torch.float64 else torch.float32

    @torch.library.register_fake("wgan_ext::interpolate")
    def _interpolate_fake(real, fake, alpha):
        return torch.empty_like(real, memory_format=torch.contiguous_format)

    @torch.library.register_fake("wgan_ext::gradient_norm_penalty")
    def _penalty_fake(grad, target, one_sided, inv_scale, eps):
        acc = _acc_dtype(grad.dtype)
        return grad.new_empty((), dtype=acc), grad.new_empty((grad.shape[0],), dtype=acc)

    @torch.library.register_fake("wgan_ext::_gradient_norm_penalty_backward")
    def _penalty_backward_fake(grad_penalty, grad_norms, grad, norms, target, one_sided, inv_scale):
        return torch.empty_like(grad, memory_format=torch.contiguous_format)

    # Autograd. interpolate's backward is plain torch (it is rarely needed: real and fake are detached in GP).
    def _interpolate_setup(ctx, inputs, output):
        real, fake, alpha = inputs
        ctx.save_for_backward(real, fake, alpha)

    def _interpolate_backward(ctx, grad):
        real, fake, alpha = ctx.saved_tensors
        a = alpha.view(-1, *([1] * (real.dim() - 1)))
        grad_real = grad * (1 - a) if ctx.needs_input_grad[0] else None
        grad_fake = grad * a if ctx.needs_input_grad[1] else None
        grad_alpha = (grad * (fake - real)).reshape(real.shape[0], -1).sum(1) if ctx.needs_input_grad[2] else None
        return grad_real, grad_fake, grad_alpha

    torch.library.register_autograd("wgan_ext::interpolate", _interpolate_backward, setup_context=_interpolate_setup)

    # The penalty's backward is one fused elementwise pass. Its result flows on into the graph that produced
    # `grad` (autograd.grad(..., create_graph=True)), which is how the critic's parameters get the penalty's gradient.
    def _penalty_setup(ctx, inputs, output):
        grad, target, one_sided, inv_scale, _ = inputs
        ctx.save_for_backward(grad, output[1])
        ctx.args = (target, one_sided, inv_scale)

    def _penalty_backward(ctx, grad_penalty, grad_norms):
        grad, norms = ctx.saved_tensors
        if grad_penalty is None:
            grad_penalty = norms.new_zeros(())
        if grad_norms is None:
            grad_norms = torch.zeros_like(norms)
        d_grad = torch.ops.wgan_ext._gradient_norm_penalty_backward(
            grad_penalty.contiguous(), grad_norms.contiguous(), grad, norms, *ctx.args)
        return d_grad, None, None, None, None

    torch.library.register_autograd("wgan_ext::gradient_norm_penalty", _penalty_backward,
                                    setup_context=_penalty_setup)

    def _saved_like(weights):
        """The normalize ops' `saved` output: the L sigmas, then every layer's u and v, float64."""
        n = len(weights) + sum(W.shape[0] + W.shape[1] for W in weights)
        device = weights[0].device if weights else torch.device("cpu")
        return torch.empty((n,), dtype=torch.float64, device=device)

    @torch.library.register_fake("wgan_ext::spectral_norm_normalize")
    def _normalize_fake(weights, us, vs):
        return [torch.empty_like(W, memory_format=torch.contiguous_format) for W in weights], _saved_like(weights)

    @torch.library.register_fake("wgan_ext::_spectral_norm_normalize_into")
    def _normalize_into_fake(weights, us, vs, outs):
        return _saved_like(weights)

    @torch.library.register_fake("wgan_ext::_spectral_norm_normalize_backward")
    def _normalize_backward_fake(grads, weights, saved):
        return [torch.empty_like(W, memory_format=torch.contiguous_format) for W in weights]

    # Spectral norm's W / sigma for all layers: the backward is one call for all layers too (u, v constant).
    def _normalize_setup(ctx, inputs, output):
        weights = inputs[0]
        ctx.save_for_backward(output[1], *weights)

    def _normalize_backward(ctx, grads, grad_saved):
        d_weights = _weight_grads(ctx, grads)
        none = [None] * len(d_weights)
        return d_weights, none, none  # the inputs' structure: no gradient for u, v

    torch.library.register_autograd("wgan_ext::spectral_norm_normalize", _normalize_backward,
                                    setup_context=_normalize_setup)


def _weight_grads(ctx, grads) -> list[torch.Tensor]:
    """The weights' gradients of a batched normalize, whose context saved (`saved`, *weights); one op call."""
    saved, *weights = ctx.saved_tensors
    grads = [torch.zeros_like(W) if g is None else g for g, W in zip(grads, weights)]
    return torch.ops.wgan_ext._spectral_norm_normalize_backward(grads, weights, saved)


class NormalizeInto(torch.autograd.Function):
    """``spectral_norm_normalize`` written into the caller's tensors (``_spectral_norm_normalize_into``), with the
    same gradient w.r.t. the weights (one ``_spectral_norm_normalize_backward`` call for all layers; none for u, v).
    Returns aliases of ``outs`` (new tensor objects on the same memory, with this call's autograd history), so the
    caller keeps ``outs`` untouched and can see from their storage's use count when nothing holds a result any more.

    ``NormalizeInto.apply(us, vs, outs, *weights)`` -> ``(saved, *normalized)``."""

    @staticmethod
    def forward(ctx, us, vs, outs, *weights):
        saved = inplace("_spectral_norm_normalize_into")(list(weights), us, vs, outs)
        ctx.save_for_backward(saved, *weights)
        ctx.mark_non_differentiable(saved)
        return (saved, *(out.detach() for out in outs))

    @staticmethod
    def backward(ctx, _grad_saved, *grads):
        return (None, None, None, *_weight_grads(ctx, grads))

