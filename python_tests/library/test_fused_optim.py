"""wgan_ext.ClippedRMSprop / ClippedAdam and the ops torch.ops.wgan_ext.rmsprop_clip_step_ / adam_clip_step_ against
torch.optim.RMSprop / Adam (foreach=False) followed by clamp_, and against the pure-torch reference."""

import copy
import math
import warnings

import pytest
import torch
from torch import nn

import wgan_ext
from wgan_ext import _ops, _reference

from conftest import DEVICES, compiled_path, fused_available, needs_cuda

CHUNK = 65536  # the CUDA launcher's chunk


def impl_for(device, op="rmsprop_clip_step_"):
    """The implementation under test: the compiled kernel where it exists (torch and the reference are oracles)."""
    return "fused" if fused_available(op, device) else pytest.skip(f"no compiled {op} kernel for {device}")


def tolerances(dtype, state=False):
    # The fused step performs torch's operations in torch's order; only FMA contraction inside torch's vectorized
    # CPU kernels (and rounding once instead of per op for float16/bfloat16) separates the two: a few ulp. Parameters
    # are ~0.01 (atol ~1e-5 of that); state tensors (g / avg in the momentum buffer) are O(1).
    if state:
        return {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-12, atol=1e-12)}[dtype]
    return {torch.float32: dict(rtol=1e-5, atol=1e-7), torch.float64: dict(rtol=1e-12, atol=1e-15),
            torch.float16: dict(rtol=2e-3, atol=1e-5), torch.bfloat16: dict(rtol=1.6e-2, atol=1e-4)}[dtype]


def make_params(device, dtype, seed=0, scale=0.02):
    """Parameters of many shapes: empty, 0-d, a chunk edge, a transposed (dense, not contiguous) one, and a strided
    slice (not dense: the optimizers send it to the reference)."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(device=device, dtype=dtype)

    tensors = [rand(7, 13), rand(0), rand(()), rand(CHUNK + 3), rand(2, 3, 5, 7), rand(0, 4), rand(33),
               rand(12, 10).t(), rand(8, 12)[:, ::3]]
    return [nn.Parameter(t) for t in tensors]


def clone_params(params):
    return [nn.Parameter(p.detach().clone(memory_format=torch.preserve_format)) for p in params]


def set_grads(params, step, skip=()):
    """Deterministic gradients for `step`; parameters whose index is in `skip` get grad None."""
    g = torch.Generator().manual_seed(1000 + step)
    for i, p in enumerate(params):
        if i in skip:
            p.grad = None
            continue
        grad = torch.randn(p.shape, generator=g, dtype=torch.float64).to(device=p.device, dtype=p.dtype)
        if i == 3:
            grad[:5] = 0.0  # zero gradients: 0 / (0 + eps)
        p.grad = torch.empty_like(p).copy_(grad)  # a dense parameter's layout, as autograd makes it


def assert_steps_match(ours, ours_p, theirs, theirs_p, steps: int = 3, clip_value: float = 0.01):
    """`steps` steps of ours and of torch's optimizer + the clamp on the same gradients; the parameters match."""
    for step in range(steps):
        set_grads(ours_p, step)
        set_grads(theirs_p, step)
        ours.step()
        torch_clip_step(theirs, theirs_p, clip_value)
    for a, e in zip(ours_p, theirs_p):
        torch.testing.assert_close(a, e, **tolerances(a.dtype))


def torch_clip_step(opt, params, clip_value):
    opt.step()
    if clip_value is not None:
        with torch.no_grad():
            for p in params:
                p.clamp_(-clip_value, clip_value)


def assert_params_close(actual, expected, dtype):
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert a.shape == e.shape and a.dtype == e.dtype, i
        torch.testing.assert_close(a.detach(), e.detach(), **tolerances(dtype), msg=lambda m: f"tensor {i}: {m}")


def assert_state_close(ours, theirs, params_ours, params_theirs, keys, dtype):
    for po, pt in zip(params_ours, params_theirs):
        so, st = ours.state.get(po, {}), theirs.state.get(pt, {})
        assert set(so) == set(st), (set(so), set(st))
        for key in keys:
            if key in st:
                torch.testing.assert_close(so[key], st[key], **tolerances(dtype, state=True), msg=key)
        if "step" in st:
            assert so["step"].dtype == st["step"].dtype and so["step"].device == st["step"].device
            assert so["step"].item() == st["step"].item()


# --- against torch.optim ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("momentum,weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.0, 0.1), (0.5, 0.01)])
@pytest.mark.parametrize("clip_value", [0.01, None])
@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_rmsprop_matches_torch_rmsprop_and_clamp(device, dtype, momentum, weight_decay, clip_value, impl):
    impl = impl_for(device) if impl == "fused" else impl
    ours_p = make_params(device, dtype)
    theirs_p = clone_params(ours_p)
    kwargs = dict(lr=1e-3, alpha=0.9, eps=1e-8, weight_decay=weight_decay, momentum=momentum)
    ours = wgan_ext.ClippedRMSprop(ours_p, clip_value=clip_value, impl=impl, **kwargs)
    theirs = torch.optim.RMSprop(theirs_p, foreach=False, **kwargs)
    for step in range(5):
        skip = {6} if step in (1, 2) else set()  # grad None: skipped, as torch does
        set_grads(ours_p, step, skip)
        set_grads(theirs_p, step, skip)
        ours.step()
        torch_clip_step(theirs, theirs_p, clip_value)
    assert_params_close(ours_p, theirs_p, dtype)
    assert_state_close(ours, theirs, ours_p, theirs_p, ("square_avg", "momentum_buffer"), dtype)
    if clip_value is not None:  # the clamp really bit: some parameters sit at the bound
        assert any((p.abs() == clip_value).any() for p in ours_p if p.numel())
    else:
        assert any((p.abs() > 0.05).any() for p in ours_p if p.numel())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("betas,weight_decay", [((0.9, 0.999), 0.0), ((0.5, 0.9), 0.0), ((0.0, 0.9), 0.05)])
@pytest.mark.parametrize("clip_value", [0.01, None])
@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_adam_matches_torch_adam_and_clamp(device, dtype, betas, weight_decay, clip_value, impl):
    impl = impl_for(device, "adam_clip_step_") if impl == "fused" else impl
    ours_p = make_params(device, dtype, seed=3)
    theirs_p = clone_params(ours_p)
    kwargs = dict(lr=1e-3, betas=betas, eps=1e-8, weight_decay=weight_decay)
    ours = wgan_ext.ClippedAdam(ours_p, clip_value=clip_value, impl=impl, **kwargs)
    theirs = torch.optim.Adam(theirs_p, foreach=False, **kwargs)
    for step in range(5):
        skip = {0, 6} if step in (1, 2) else set()  # parameters 0 and 6 end two steps behind: own bias corrections
        set_grads(ours_p, step, skip)
        set_grads(theirs_p, step, skip)
        ours.step()
        torch_clip_step(theirs, theirs_p, clip_value)
    assert ours.state[ours_p[0]]["step"].item() == 3 and ours.state[ours_p[3]]["step"].item() == 5
    assert_params_close(ours_p, theirs_p, dtype)
    assert_state_close(ours, theirs, ours_p, theirs_p, ("exp_avg", "exp_avg_sq"), dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_a_real_critic_trains_like_torch(device):
    # A DCGAN critic's parameters (convolutions and BatchNorm) with gradients from a real backward pass: both
    # optimizers see the same gradients at each step (computed once, copied), so the comparison is of the steps.
    from wgan_ext.train.models import DCGANCritic

    impl = impl_for(device)
    torch.manual_seed(0)
    critic = DCGANCritic(32).to(device)
    ours_p = list(critic.parameters())
    theirs_p = clone_params(ours_p)
    ours = wgan_ext.ClippedRMSprop(ours_p, lr=5e-4, clip_value=0.01, impl=impl)
    theirs = torch.optim.RMSprop(theirs_p, lr=5e-4, foreach=False)
    for _ in range(3):
        ours.zero_grad()
        critic(torch.randn(4, 3, 32, 32, device=device)).mean().backward()
        for a, b in zip(ours_p, theirs_p):
            b.grad = a.grad.clone()
        ours.step()
        torch_clip_step(theirs, theirs_p, 0.01)
    assert_params_close(ours_p, theirs_p, torch.float32)


@pytest.mark.parametrize("device", DEVICES)
def test_mixed_dtypes_are_grouped(device):
    impl = impl_for(device)
    ours_p = [nn.Parameter(torch.randn(50, device=device, dtype=dt) * 0.02)
              for dt in (torch.float32, torch.float64, torch.float32, torch.float64)]
    theirs_p = clone_params(ours_p)
    ours = wgan_ext.ClippedRMSprop(ours_p, lr=1e-3, momentum=0.9, impl=impl)
    theirs = torch.optim.RMSprop(theirs_p, lr=1e-3, momentum=0.9, foreach=False)
    assert_steps_match(ours, ours_p, theirs, theirs_p)


@needs_cuda
@pytest.mark.cuda
def test_parameters_on_cpu_and_cuda_are_grouped():
    ours_p = [nn.Parameter(torch.randn(40, device=d) * 0.02) for d in ("cpu", "cuda", "cpu", "cuda")]
    theirs_p = clone_params(ours_p)
    ours = wgan_ext.ClippedAdam(ours_p, lr=1e-3)
    theirs = torch.optim.Adam(theirs_p, lr=1e-3, foreach=False)
    assert_steps_match(ours, ours_p, theirs, theirs_p)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("opt_name", ["ClippedRMSprop", "ClippedAdam"])
def test_half_precision_matches_the_reference(device, dtype, opt_name):
    op = "rmsprop_clip_step_" if opt_name == "ClippedRMSprop" else "adam_clip_step_"
    impl = impl_for(device, op)
    fused_p = [nn.Parameter(torch.randn(s, device=device, dtype=torch.float64).mul(0.02).to(dtype))
               for s in [(300,), (17, 5), (0,)]]
    ref_p = clone_params(fused_p)
    cls = getattr(wgan_ext, opt_name)
    fused = cls(fused_p, lr=1e-3, weight_decay=0.01, clip_value=0.015, impl=impl)
    ref = cls(ref_p, lr=1e-3, weight_decay=0.01, clip_value=0.015, impl="reference")
    for step in range(4):
        set_grads(fused_p, step)
        set_grads(ref_p, step)
        fused.step()
        ref.step()
    for a, e in zip(fused_p, ref_p):
        assert a.dtype == dtype
        torch.testing.assert_close(a, e, **tolerances(dtype))
    # Still RMSprop / Adam: close to torch's own float32 result at half precision.
    assert all(p.abs().max() <= 0.015 for p in fused_p if p.numel())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", ["rmsprop_clip_step_", "adam_clip_step_"])
def test_compiled_op_matches_the_reference(device, op):
    impl_for(device, op)
    g = torch.Generator().manual_seed(5)

    def lists(dtype):
        shapes = [(3, 4), (CHUNK * 2 + 17,), (0,), (1,)]
        return [[(torch.randn(s, generator=g, dtype=torch.float64) * scale).to(device=device, dtype=dtype)
                 for s in shapes] for scale in (0.02, 1.0, 0.1, 0.1)]

    for dtype in (torch.float32, torch.float64):
        params, grads, s1, s2 = lists(dtype)
        s1 = [t.abs() for t in s1]
        s2 = [t.abs() for t in s2]
        work = [[t.clone() for t in lst] for lst in (params, grads, s1, s2)]
        if op == "rmsprop_clip_step_":
            args = (1e-3, 0.95, 1e-6, 0.01, 0.8, 0.05)
        else:
            args = (1e-3, 0.5, 0.9, 1e-6, 0.01, 7, 0.05)
        getattr(torch.ops.wgan_ext, op)(*work, *args)
        getattr(_reference, op)(params, grads, s1, s2, *args)
        for got, want in zip(work, (params, grads, s1, s2)):
            for a, e in zip(got, want):
                torch.testing.assert_close(a, e, **tolerances(dtype, state=True))


# --- the optimizer API ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pair", ["rmsprop", "adam"])
def test_state_dict_interchanges_with_torch(pair):
    impl = impl_for("cpu")
    if pair == "rmsprop":
        ours_cls, kwargs = wgan_ext.ClippedRMSprop, dict(lr=1e-3, momentum=0.5)
        theirs_cls = torch.optim.RMSprop
    else:
        ours_cls, kwargs = wgan_ext.ClippedAdam, dict(lr=1e-3, betas=(0.5, 0.9))
        theirs_cls = torch.optim.Adam
    params = make_params("cpu", torch.float32)
    ours = ours_cls(params, clip_value=0.01, impl=impl, **kwargs)
    for step in range(2):
        set_grads(params, step)
        ours.step()
    # Ours -> torch: torch continues where we left off, exactly as we continue ourselves.
    saved = copy.deepcopy(ours.state_dict())  # state_dict() shares the state tensors; load_state_dict keeps them
    continued = clone_params(params)
    theirs = theirs_cls(continued, foreach=False, **kwargs)
    theirs.load_state_dict(saved)
    assert set(theirs.state[continued[0]]) == set(saved["state"][0])
    for step in range(2, 4):
        set_grads(params, step)
        set_grads(continued, step)
        ours.step()
        torch_clip_step(theirs, continued, 0.01)
    assert_params_close(params, continued, torch.float32)
    # Torch -> ours: a fresh ClippedOptimizer keeps its clip_value and continues torch's state.
    again = clone_params(continued)
    resumed = ours_cls(again, clip_value=0.01, impl=impl, **kwargs)
    resumed.load_state_dict(copy.deepcopy(theirs.state_dict()))
    assert resumed.param_groups[0]["clip_value"] == 0.01
    set_grads(again, 4)
    set_grads(continued, 4)
    resumed.step()
    torch_clip_step(theirs, continued, 0.01)
    assert_params_close(again, continued, torch.float32)
    assert resumed.state[again[0]]["step"].item() == 5


def test_state_dict_round_trips_through_torch_save(tmp_path):
    params = make_params("cpu", torch.float32)
    opt = wgan_ext.ClippedRMSprop(params, lr=1e-3, momentum=0.9)
    set_grads(params, 0)
    opt.step()
    torch.save(opt.state_dict(), tmp_path / "opt.pt")
    loaded = torch.load(tmp_path / "opt.pt", weights_only=True)
    other = wgan_ext.ClippedRMSprop(clone_params(params), lr=1.0, momentum=0.9)
    other.load_state_dict(loaded)
    assert other.param_groups[0]["lr"] == 1e-3
    assert torch.equal(other.state[other.param_groups[0]["params"][0]]["square_avg"],
                       opt.state[params[0]]["square_avg"])


def test_params_without_grad_get_no_state_and_stay():
    a, b = nn.Parameter(torch.full((4,), 0.5)), nn.Parameter(torch.full((3,), 0.5))
    opt = wgan_ext.ClippedRMSprop([a, b], lr=1e-2, clip_value=0.01)
    a.grad = torch.ones(4)
    opt.step()
    assert b not in opt.state and torch.equal(b, torch.full((3,), 0.5))
    assert a.abs().max() <= 0.01 and opt.state[a]["step"].item() == 1


def test_closure_hooks_and_param_groups():
    a, b = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(3))
    opt = wgan_ext.ClippedRMSprop([{"params": [a]}, {"params": [b], "lr": 0.5, "clip_value": None}], lr=1e-3)
    calls = []
    opt.register_step_post_hook(lambda *args: calls.append("post"))

    def closure():
        opt.zero_grad()
        loss = (a.sum() - b.sum())
        loss.backward()
        return loss

    assert opt.step(closure) is not None and calls == ["post"]
    # a: one RMSprop step of lr 1e-3 is below the clip; b: lr 0.5, no clamp in its group.
    step_a = 1e-3 / (math.sqrt(0.01) + 1e-8)
    torch.testing.assert_close(a, torch.full((3,), -min(step_a, 0.01)))
    torch.testing.assert_close(b, torch.full((3,), 0.5 / (math.sqrt(0.01) + 1e-8)))


def test_version_counter_is_bumped():
    # Autograd must notice that a tensor it saved was updated in place.
    w = nn.Parameter(torch.randn(5) * 0.02)
    y = (w * w).sum()
    opt = wgan_ext.ClippedAdam([w], lr=1e-3)
    w.grad = torch.ones(5)
    opt.step()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


def test_clipper_and_the_trainer_style_loop_agree():
    # The fused optimizer gives what RMSprop + Clipper.attach gives (the paper's order).
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 1))
    twin = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 1))
    twin.load_state_dict(critic.state_dict())
    fused = wgan_ext.ClippedRMSprop(critic.parameters(), lr=1e-3, clip_value=0.05)
    plain = torch.optim.RMSprop(twin.parameters(), lr=1e-3)
    wgan_ext.Clipper(twin, c=0.05).attach(plain)
    x = torch.randn(64, 2)
    for _ in range(5):
        for model, opt in ((critic, fused), (twin, plain)):
            opt.zero_grad()
            model(x).mean().backward()
            opt.step()
    for p, q in zip(critic.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("cls,kwargs,error,match", [
    ("ClippedRMSprop", dict(lr=-1e-3), ValueError, "lr must be >= 0"),
    ("ClippedRMSprop", dict(lr=math.nan), ValueError, "lr must be finite"),
    ("ClippedRMSprop", dict(clip_value=0.0), ValueError, "clip_value must be > 0"),
    ("ClippedRMSprop", dict(clip_value=-0.01), ValueError, "clip_value must be > 0"),
    ("ClippedRMSprop", dict(clip_value="0.01"), TypeError, "clip_value must be a real number"),
    ("ClippedRMSprop", dict(alpha=1.5), ValueError, "alpha must be >= 0.0 and <= 1.0"),
    ("ClippedRMSprop", dict(eps=-1.0), ValueError, "eps must be >= 0"),
    ("ClippedRMSprop", dict(momentum=-0.1), ValueError, "momentum must be >= 0"),
    ("ClippedRMSprop", dict(weight_decay=-0.1), ValueError, "weight_decay must be >= 0"),
    ("ClippedRMSprop", dict(centered=True), ValueError, "centered=True is not supported"),
    ("ClippedRMSprop", dict(impl="fast"), ValueError, "impl must be one of"),
    ("ClippedAdam", dict(betas=(1.0, 0.9)), ValueError, r"betas\[0\] must be >= 0.0 and < 1.0"),
    ("ClippedAdam", dict(betas=(0.5, -0.1)), ValueError, r"betas\[1\] must be >= 0.0"),
    ("ClippedAdam", dict(betas=0.5), ValueError, "betas must be a pair"),
    ("ClippedAdam", dict(amsgrad=True), ValueError, "amsgrad=True is not supported"),
    ("ClippedAdam", dict(lr=-1.0), ValueError, "lr must be >= 0"),
    ("ClippedAdam", dict(clip_value=math.inf), ValueError, "clip_value must be finite"),
])
def test_bad_arguments_are_refused(cls, kwargs, error, match):
    with pytest.raises(error, match=match):
        getattr(wgan_ext, cls)([nn.Parameter(torch.zeros(2))], **kwargs)


def test_options_changed_later_are_checked_at_step():
    p = nn.Parameter(torch.zeros(2))
    opt = wgan_ext.ClippedRMSprop([p])
    p.grad = torch.ones(2)
    opt.param_groups[0]["lr"] = -1.0
    with pytest.raises(ValueError, match="lr must be >= 0"):
        opt.step()
    # A torch.optim.Adam checkpoint with amsgrad cannot be continued by ClippedAdam.
    q = nn.Parameter(torch.zeros(2))
    theirs = torch.optim.Adam([q], amsgrad=True)
    q.grad = torch.ones(2)
    theirs.step()
    ours = wgan_ext.ClippedAdam([q])
    ours.load_state_dict(theirs.state_dict())
    with pytest.raises(ValueError, match="amsgrad=True is not supported"):
        ours.step()


def test_sparse_and_complex_are_refused():
    emb = nn.Embedding(10, 3, sparse=True)
    emb(torch.tensor([1, 2])).sum().backward()
    opt = wgan_ext.ClippedRMSprop(emb.parameters())
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        opt.step()
    z = nn.Parameter(torch.zeros(3, dtype=torch.complex64))
    z.grad = torch.ones(3, dtype=torch.complex64)
    with pytest.raises(TypeError, match="dtype torch.complex64; supported"):
        wgan_ext.ClippedAdam([z]).step()


# --- the op layer: opcheck, checks, fallback ----------------------------------------------------------------------

def op_samples(device, momentum):
    def lists(*shapes, dtype=torch.float32, transform=lambda t: t):
        return [[transform(torch.rand(s, device=device, dtype=dtype) * 0.1) for s in shapes] for _ in range(4)]

    return [
        lists((10, 10), (3,)),
        lists((8, 6), (0,), transform=lambda t: t.t() if t.dim() == 2 else t),
        lists((5,), (CHUNK + 1,), dtype=torch.float64),
        lists((7,), dtype=torch.bfloat16),
    ]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", ["rmsprop_clip_step_", "adam_clip_step_"])
def test_opcheck(device, op):
    impl_for(device, op)
    for params, grads, s1, s2 in op_samples(device, momentum=True):
        if op == "rmsprop_clip_step_":
            torch.library.opcheck(torch.ops.wgan_ext.rmsprop_clip_step_.default,
                                  (params, grads, s1, s2, 1e-3, 0.99, 1e-8, 0.01, 0.9, 0.01))
            torch.library.opcheck(torch.ops.wgan_ext.rmsprop_clip_step_.default,
                                  (params, grads, s1, [], 1e-3, 0.99, 1e-8, 0.0, 0.0, None))
        else:
            torch.library.opcheck(torch.ops.wgan_ext.adam_clip_step_.default,
                                  (params, grads, s1, s2, 1e-3, 0.9, 0.999, 1e-8, 0.0, 3, 0.01))


@pytest.mark.parametrize("args,match", [
    (lambda p: ([p, p], [p], [p], [], 1e-3, 0.99, 1e-8, 0.0, 0.0, None), "one grad and one square_avg per parameter"),
    (lambda p: ([p], [p], [p], [p], 1e-3, 0.99, 1e-8, 0.0, 0.0, None), "momentum == 0 takes no momentum buffers"),
    (lambda p: ([p], [p], [p], [], 1e-3, 0.99, 1e-8, 0.0, 0.9, None), "momentum > 0 needs one momentum buffer"),
    (lambda p: ([p], [p.double()], [p], [], 1e-3, 0.99, 1e-8, 0.0, 0.0, None), "grad 0 has dtype Double"),
    (lambda p: ([p], [p[:3]], [p], [], 1e-3, 0.99, 1e-8, 0.0, 0.0, None), "grad 0 has shape"),
    (lambda p: ([p.view(2, 3)], [p.view(3, 2).t()], [p.view(2, 3)], [], 1e-3, 0.99, 1e-8, 0.0, 0.0, None),
     "has strides"),
    (lambda p: ([p.view(2, 3)[:, ::2]], [torch.zeros(2, 2)], [torch.zeros(2, 2)], [], 1e-3, 0.99, 1e-8, 0.0, 0.0,
                None), "is not dense"),
    (lambda p: ([p], [p], [p], [], -1e-3, 0.99, 1e-8, 0.0, 0.0, None), "lr must be >= 0"),
    (lambda p: ([p], [p], [p], [], 1e-3, 0.99, 1e-8, 0.0, 0.0, 0.0), "clip_value must be finite and > 0"),
    (lambda p: ([p.int()], [p.int()], [p.int()], [], 1e-3, 0.99, 1e-8, 0.0, 0.0, None), "dtype Int"),
])
def test_the_compiled_op_checks_its_arguments(args, match):
    impl_for("cpu")
    p = torch.zeros(6)
    with pytest.raises((ValueError, TypeError, RuntimeError), match=match):
        torch.ops.wgan_ext.rmsprop_clip_step_(*args(p))


@pytest.mark.parametrize("args,match", [
    (lambda p: ([p], [p], [p], [], 1e-3, 0.9, 0.999, 1e-8, 0.0, 1, None), "one exp_avg_sq per parameter"),
    (lambda p: ([p], [p], [p], [p], 1e-3, 0.9, 0.999, 1e-8, 0.0, 0, None), "step .* must be >= 1"),
    (lambda p: ([p], [p], [p], [p], 1e-3, 1.0, 0.999, 1e-8, 0.0, 1, None), r"beta1 must be in \[0, 1\)"),
])
def test_the_compiled_adam_op_checks_its_arguments(args, match):
    impl_for("cpu", "adam_clip_step_")
    p = torch.zeros(6)
    with pytest.raises((ValueError, RuntimeError), match=match):
        torch.ops.wgan_ext.adam_clip_step_(*args(p))


@compiled_path
def test_fallback_when_no_kernel_for_the_device(monkeypatch):
    monkeypatch.setattr(_ops, "KERNELS", {})
    params = make_params("cpu", torch.float32)
    twin = clone_params(params)
    opt = wgan_ext.ClippedRMSprop(params, lr=1e-3)
    theirs = torch.optim.RMSprop(twin, lr=1e-3, foreach=False)
    set_grads(params, 0)
    set_grads(twin, 0)
    with pytest.warns(RuntimeWarning, match="pure-torch reference for rmsprop_clip_step_ on cpu"):
        opt.step()
    torch_clip_step(theirs, twin, 0.01)
    assert_params_close(params, twin, torch.float32)
    with pytest.raises(RuntimeError, match="impl='fused'"):
        wgan_ext.ClippedRMSprop(params, impl="fused").step()


@compiled_path
def test_auto_uses_the_compiled_kernel_and_reference_can_be_forced(monkeypatch):
    impl_for("cpu")
    p = nn.Parameter(torch.zeros(5))
    p.grad = torch.ones(5)
    monkeypatch.setattr(_reference, "rmsprop_clip_step_", lambda *a: pytest.fail("the reference ran"))
    wgan_ext.ClippedRMSprop([p]).step()
    monkeypatch.undo()
    calls = []
    real = _reference.rmsprop_clip_step_
    monkeypatch.setattr(_reference, "rmsprop_clip_step_", lambda *a: (calls.append(1), real(*a)))
    monkeypatch.setenv(_ops.ENV_IMPL, "reference")
    wgan_ext.ClippedRMSprop([p]).step()
    assert calls == [1]


@compiled_path
def test_non_dense_parameters_go_to_the_reference(monkeypatch):
    impl_for("cpu")
    base = torch.randn(8, 12) * 0.02
    p = nn.Parameter(base[:, ::3])
    q = nn.Parameter(torch.randn(5) * 0.02)
    seen = []
    real = _reference.rmsprop_clip_step_
    monkeypatch.setattr(_reference, "rmsprop_clip_step_", lambda *a: (seen.append(len(a[0])), real(*a)))
    opt = wgan_ext.ClippedRMSprop([p, q], lr=1e-3)
    p.grad, q.grad = torch.ones(8, 4), torch.ones(5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step()
    assert seen == [1]  # only the strided slice; q went to the kernel


# --- the CUDA launcher's plan for 3 and 4 lists, checked on the CPU -----------------------------------------------

MAX_BLOCKS = 320


@pytest.mark.parametrize("depth,max_tensors", [(1, 110), (3, 48), (4, 36)])
def test_cuda_launch_plan_for_several_lists_covers_every_chunk_once(depth, max_tensors):
    impl_for("cpu")
    g = torch.Generator().manual_seed(depth)
    cases = [[], [0], [100] * max_tensors, [100] * (max_tensors + 1), [CHUNK * 320 + 1], [5] * 30 + [CHUNK * 700 + 3]]
    for _ in range(20):
        n = int(torch.randint(1, 200, (1,), generator=g))
        big = torch.randint(0, 3 * CHUNK, (n,), generator=g)
        cases.append(torch.where(torch.rand(n, generator=g) < 0.2, big, torch.randint(0, 50, (n,), generator=g))
                     .tolist())
    for numels in cases:
        rows = torch.ops.wgan_ext._multi_tensor_plan_depth(numels, depth).tolist()
        seen = set()
        launches = {}
        for launch, slot, index, chunk, numel in rows:
            assert numel == numels[index] and 0 <= slot < max_tensors and 0 <= chunk * CHUNK < numel
            assert (index, chunk) not in seen
            seen.add((index, chunk))
            blocks, slots = launches.setdefault(launch, [0, {}])
            launches[launch][0] = blocks + 1
            assert slots.setdefault(slot, index) == index
        assert seen == {(i, c) for i, n in enumerate(numels) for c in range(-(-n // CHUNK))}
        assert all(b <= MAX_BLOCKS and len(s) <= max_tensors for b, s in launches.values())
    if depth == 1:  # the same plan as the depth-1 launcher of clip_
        numels = [5] * 109 + [CHUNK * 700 + 3, 7]
        assert (torch.ops.wgan_ext._multi_tensor_plan_depth(numels, 1).tolist()
                == torch.ops.wgan_ext._multi_tensor_plan(numels).tolist())
    with pytest.raises(RuntimeError, match="depth must be 1 to 5"):
        torch.ops.wgan_ext._multi_tensor_plan_depth([1], 6)


@needs_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("cls", ["ClippedRMSprop", "ClippedAdam"])
def test_cuda_one_launch_for_a_dcgan_critic(cls):
    """The list path (cache_plan=False: by default the step goes through the kept plan, one planned launch, tested in
    test_optim_plan.py) also takes one multi-tensor launch for a DCGAN critic's 11 parameters."""
    from torch.profiler import ProfilerActivity, profile

    from wgan_ext.train.models import DCGANCritic

    params = list(DCGANCritic(64).cuda().parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    opt = getattr(wgan_ext, cls)(params, lr=1e-4, impl="fused", cache_plan=False)
    opt.step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        opt.step()
        torch.cuda.synchronize()
    kernels = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    assert len([k for k in kernels if "multi_tensor_kernel_n" in k]) == 1, kernels


def test_lr_scheduler_changes_the_step():
    impl = impl_for("cpu")
    ours_p, theirs_p = [nn.Parameter(torch.zeros(4))], [nn.Parameter(torch.zeros(4))]
    ours = wgan_ext.ClippedRMSprop(ours_p, lr=1e-3, clip_value=None, impl=impl)
    theirs = torch.optim.RMSprop(theirs_p, lr=1e-3, foreach=False)
    scheds = [torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.1) for o in (ours, theirs)]
    for step in range(3):
        for params, opt, sched in ((ours_p, ours, scheds[0]), (theirs_p, theirs, scheds[1])):
            params[0].grad = torch.ones(4)
            opt.step()
            sched.step()
    assert ours.param_groups[0]["lr"] == pytest.approx(1e-6)
    torch.testing.assert_close(ours_p[0], theirs_p[0], rtol=1e-6, atol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_grads_whose_strides_differ_only_along_size_one_dims(device):
    # Autograd may hand a (1, C, H, W) parameter (a DCGAN critic's last conv) a gradient whose stride along the
    # size-1 dimension differs from the parameter's; both are contiguous, and the fused step takes them.
    impl = impl_for(device)
    p = nn.Parameter(torch.randn(1, 8, 2, device=device) * 0.02)
    twin = clone_params([p])
    grad = torch.randn(8, 1, 2, device=device).transpose(0, 1)  # shape (1, 8, 2), strides (2, 2, 1)
    assert grad.is_contiguous() and grad.stride() != p.stride()
    p.grad, twin[0].grad = grad, grad.clone()
    wgan_ext.ClippedRMSprop([p], lr=1e-3, impl=impl).step()
    torch_clip_step(torch.optim.RMSprop(twin, lr=1e-3, foreach=False), twin, 0.01)
    torch.testing.assert_close(p, twin[0], **tolerances(torch.float32))


# ------------------------------------------------------------------------------- layouts, duplicates, loaded steps
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["ClippedRMSprop", "ClippedAdam"])
def test_channels_last_parameters_take_the_fused_kernel(device, name, monkeypatch):
    """A parameter, its gradient and state that share a dense non-contiguous layout (channels_last) are stepped by
    the kernel through permuted contiguous views, with the same result as torch's optimizer and the clamp."""
    impl_ok = fused_available("rmsprop_clip_step_" if name == "ClippedRMSprop" else "adam_clip_step_", device)
    if not impl_ok:
        pytest.skip("no compiled kernel here")
    if device == "cuda":  # the two models' gradients must not differ by TF32 rounding or a nondeterministic cuDNN algo
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
        monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3).to(device).to(memory_format=torch.channels_last)
    ref = copy.deepcopy(conv)
    assert not conv.weight.is_contiguous()
    make = {"ClippedRMSprop": (lambda ps: wgan_ext.ClippedRMSprop(ps, lr=1e-2, clip_value=0.05, impl="fused"),
                               lambda ps: torch.optim.RMSprop(ps, lr=1e-2, foreach=False)),
            "ClippedAdam": (lambda ps: wgan_ext.ClippedAdam(ps, lr=1e-2, clip_value=0.05, impl="fused"),
                            lambda ps: torch.optim.Adam(ps, lr=1e-2, foreach=False))}[name]
    ours, theirs = make[0](conv.parameters()), make[1](ref.parameters())
    op = "rmsprop_clip_step_" if name == "ClippedRMSprop" else "adam_clip_step_"

    def refuse(*a, **k):
        raise AssertionError("a channels_last parameter went to the per-tensor reference")

    monkeypatch.setattr(_reference, op, refuse)
    x = torch.randn(4, 3, 9, 9, device=device).contiguous(memory_format=torch.channels_last)
    for _ in range(3):
        for model, opt in ((conv, ours), (ref, theirs)):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
        with torch.no_grad():
            for p in ref.parameters():
                p.clamp_(-0.05, 0.05)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)  # the layout is kept
    for a, b in zip(conv.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_parameter_listed_twice_is_refused():
    p = nn.Parameter(torch.randn(3))
    for cls in (wgan_ext.ClippedRMSprop, wgan_ext.ClippedAdam):
        with pytest.raises(ValueError, match="lists the same parameter more than once"):
            cls([p, p])
        opt = cls([p])
        with pytest.raises(ValueError, match="more than once"):
            opt.add_param_group({"params": [nn.Parameter(torch.ones(1))] * 2})
    with pytest.raises(TypeError, match="ordered collections"):  # torch's own refusal of a set in a group stays
        wgan_ext.ClippedAdam([{"params": {p}}])


def test_a_capturable_checkpoints_steps_become_host_numbers():
    p = nn.Parameter(torch.randn(4))
    theirs = torch.optim.Adam([p], lr=1e-3)
    p.grad = torch.randn(4)
    theirs.step()
    sd = theirs.state_dict()
    sd["param_groups"][0]["capturable"] = True  # as a capturable (or fused) Adam on a GPU saves it
    ours = wgan_ext.ClippedAdam([p], lr=1e-3, clip_value=None)
    ours.load_state_dict(sd)
    assert ours.param_groups[0]["capturable"] is False
    step = ours.state[p]["step"]
    assert step.device.type == "cpu" and step.item() == 1.0
    ours.step()
    assert ours.state[p]["step"].item() == 2.0


@pytest.mark.cuda
@needs_cuda
def test_steps_loaded_onto_the_gpu_come_back_to_the_host():
    p = nn.Parameter(torch.randn(4, device="cuda"))
    theirs = torch.optim.Adam([p], lr=1e-3, capturable=True)
    p.grad = torch.randn(4, device="cuda")
    theirs.step()
    sd = theirs.state_dict()
    assert sd["state"][0]["step"].device.type == "cuda"
    ours = wgan_ext.ClippedAdam([p], lr=1e-3, clip_value=None)
    ours.load_state_dict(sd)
    assert ours.state[p]["step"].device.type == "cpu"
    ours.step()  # one host number per parameter, no device read
    assert ours.state[p]["step"].item() == 2.0


@needs_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("name, kwargs", [("ClippedRMSprop", dict(lr=1e-3, momentum=0.9, weight_decay=1e-2)),
                                          ("ClippedRMSprop", dict(lr=1e-3)),
                                          ("ClippedAdam", dict(lr=1e-3, betas=(0.5, 0.9), weight_decay=1e-2))])
@pytest.mark.parametrize("cache_plan", [False, True])
def test_cuda_kernel_gives_the_cpu_kernels_bits_across_launches(name, kwargs, cache_plan):
    """The CUDA and the CPU kernel run the same math header, each operation rounded on its own (no FMA contraction
    by nvcc), so they agree bit for bit: here over more tensors than one launch's slots hold, a tensor with more
    chunks than one launch's blocks, float16/bfloat16 tensors crossing a chunk boundary, and mixed dtypes in one
    call; through the per-list launches (several per dtype here) and through the cached plan (one launch)."""
    impl_for("cuda")
    impl_for("cpu")
    g = torch.Generator().manual_seed(3)
    shapes = [(5 + i % 7,) for i in range(80)]  # 80 tensors: more than the 30 to 48 slots of one launch
    shapes += [(320 * CHUNK + 11,)]  # more chunks than the 320 blocks of one launch
    shapes += [(CHUNK + 9,), (2 * CHUNK - 1,)]
    dtypes = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
    cpu = []
    for i, s in enumerate(shapes):
        dtype = torch.float32 if s[0] > 2 * CHUNK else dtypes[i % 4]
        cpu.append(nn.Parameter((torch.randn(s, generator=g, dtype=torch.float64) * 0.02).to(dtype)))
    cuda = [nn.Parameter(p.detach().cuda()) for p in cpu]
    opt_cpu = getattr(wgan_ext, name)(cpu, clip_value=0.01, impl="fused", cache_plan=cache_plan, **kwargs)
    opt_cuda = getattr(wgan_ext, name)(cuda, clip_value=0.01, impl="fused", cache_plan=cache_plan, **kwargs)
    for step in range(3):
        for a, b in zip(cpu, cuda):
            a.grad = (torch.randn(a.shape, generator=g, dtype=torch.float64) * 0.1).to(a.dtype)
            b.grad = a.grad.cuda()
        opt_cpu.step()
        opt_cuda.step()
        for i, (a, b) in enumerate(zip(cpu, cuda)):
            assert torch.equal(a.detach(), b.detach().cpu()), (step, i, a.dtype, a.shape)
            for key, value in opt_cpu.state[a].items():
                if key != "step":
                    assert torch.equal(value, opt_cuda.state[b][key].cpu()), (step, i, key)
