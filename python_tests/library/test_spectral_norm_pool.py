"""torch.ops.wgan_ext._spectral_norm_normalize_into (the batched normalize written into given tensors) and the
output pool of apply_spectral_norm's group on the CPU: outputs reused only once nothing holds them."""

import copy
import importlib

import pytest
import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as torch_spectral_norm

import wgan_ext
from wgan_ext import _ops, _reference

from conftest import compiled_path, fused_available

INTO = "_spectral_norm_normalize_into"
sn_mod = importlib.import_module("wgan_ext.spectral_norm")
SHAPES = [(5, 7), (1, 3), (64, 1), (33, 129), (16, 4100)]
TOL = {torch.float64: dict(rtol=1e-12, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=1e-6),
       torch.bfloat16: dict(rtol=2e-2, atol=2e-2), torch.float16: dict(rtol=2e-3, atol=2e-3)}


@pytest.fixture(autouse=True)
def need_into():
    if not fused_available(INTO, "cpu"):
        pytest.skip("no compiled _spectral_norm_normalize_into kernel for the CPU")


def layers(dtype, shapes=SHAPES, seed=0):
    g = torch.Generator().manual_seed(seed)
    Ws = [torch.randn(s, generator=g, dtype=torch.float64).to(dtype) for s in shapes]
    us = [nn.functional.normalize(torch.randn(s[0], generator=g, dtype=torch.float64), dim=0).to(dtype)
          for s in shapes]
    vs = [nn.functional.normalize(torch.randn(s[1], generator=g, dtype=torch.float64), dim=0).to(dtype)
          for s in shapes]
    return Ws, us, vs


def garbage_like(Ws):
    return [torch.full_like(W, float("nan"), memory_format=torch.contiguous_format) for W in Ws]


# ------------------------------------------------------------------------------------------------ the op

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
def test_into_writes_what_the_allocating_op_returns(dtype):
    Ws, us, vs = layers(dtype)
    outs = garbage_like(Ws)
    saved = torch.ops.wgan_ext._spectral_norm_normalize_into(Ws, us, vs, outs)
    want, want_saved = torch.ops.wgan_ext.spectral_norm_normalize(Ws, us, vs)
    for o, w in zip(outs, want):
        assert torch.equal(o, w)  # the same kernel: the same bits
    assert torch.equal(saved, want_saved)
    ref, ref_saved = _reference.spectral_norm_normalize(Ws, us, vs)
    for o, r in zip(outs, ref):
        torch.testing.assert_close(o, r, **TOL[dtype])
    torch.testing.assert_close(saved, ref_saved, **TOL[dtype])


def test_into_non_contiguous_weights_and_no_layers():
    Ws, us, vs = layers(torch.float64, shapes=[(6, 5), (4, 8)])
    Wt = [W.t() for W in Ws]
    outs = garbage_like(Wt)
    saved = torch.ops.wgan_ext._spectral_norm_normalize_into(Wt, vs, us, outs)
    ref, ref_saved = _reference.spectral_norm_normalize(Wt, vs, us)
    for o, r in zip(outs, ref):
        torch.testing.assert_close(o, r, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(saved, ref_saved, rtol=1e-12, atol=1e-12)


def test_into_bumps_the_outs_versions_and_passes_opcheck():
    Ws, us, vs = layers(torch.float32, shapes=[(3, 4), (6, 2)])
    outs = garbage_like(Ws)
    before = [o._version for o in outs]
    torch.ops.wgan_ext._spectral_norm_normalize_into(Ws, us, vs, outs)
    assert all(o._version > b for o, b in zip(outs, before))
    torch.library.opcheck(torch.ops.wgan_ext._spectral_norm_normalize_into.default, (Ws, us, vs, outs))


def test_into_refuses_bad_outs_before_writing():
    Ws, us, vs = layers(torch.float32, shapes=[(3, 4), (2, 5)])
    op = torch.ops.wgan_ext._spectral_norm_normalize_into
    good = garbage_like(Ws)
    flat = torch.full((22,), float("nan"))
    shared = torch.full((14,), float("nan"))
    shared[:3] = us[0]
    cases = [
        ("one out per layer", us, good[:1]),
        ("not contiguous", us, [torch.full((4, 3), float("nan")).t(), good[1]]),
        ("got \\[3, 4\\] Double", us, [good[0].double(), good[1]]),
        (r"got \[4, 3\]", us, [torch.full((4, 3), float("nan")), good[1]]),
        ("shares memory with a weight, u or v", us, [Ws[0], good[1]]),
        ("shares memory with a weight, u or v", [shared[:3], us[1]], [shared[2:].view(3, 4), good[1]]),
        ("overlaps another out", us, [flat[:12].view(3, 4), flat[2:12].view(2, 5)]),
    ]
    for pattern, us_in, outs in cases:
        with pytest.raises(RuntimeError, match=pattern):
            op(Ws, us_in, vs, outs)
    # nothing was written by the refused calls
    assert all(torch.isnan(o).all() for o in good) and torch.isnan(flat).all() and torch.isnan(shared[3:]).all()
    # adjacent is not overlapping: outs that touch each other and the u before them are accepted
    op(Ws, [shared[:3], us[1]], vs, [flat[:12].view(3, 4), flat[12:].view(2, 5)])
    adjacent = torch.empty(3 + 12)
    adjacent[:3] = us[0]
    op(Ws, [adjacent[:3], us[1]], vs, [adjacent[3:].view(3, 4), good[1]])
    torch.testing.assert_close(adjacent[3:].view(3, 4), _reference.spectral_norm_normalize(Ws, us, vs)[0][0])


def test_normalize_into_gradient():
    """NormalizeInto's backward is the gradient of W / sigma(W) with u, v constant (float64 gradcheck)."""
    Ws, us, vs = layers(torch.float64, shapes=[(3, 4), (2, 5)])
    Ws = [W.requires_grad_() for W in Ws]

    def f(*weights):
        return _ops.NormalizeInto.apply(us, vs, garbage_like(weights), *weights)[1:]

    assert torch.autograd.gradcheck(f, tuple(Ws))


# ------------------------------------------------------------------------------------ the group's pool

def critic(width=16):
    return nn.Sequential(nn.Linear(3, width), nn.LeakyReLU(0.2), nn.Linear(width, width), nn.LeakyReLU(0.2),
                         nn.Linear(width, 1)).double()


def pair(update="forward"):
    """torch's spectral_norm and ours on one critic, with the same u, v."""
    torch.manual_seed(0)
    base = critic()
    theirs, ours = copy.deepcopy(base), copy.deepcopy(base)
    for m in theirs:
        if isinstance(m, nn.Linear):
            torch_spectral_norm(m)
    group = wgan_ext.apply_spectral_norm(ours, update=update)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours, group


def spy(layer, record):
    """Calls record(w) with the normalized weight the layer's forward takes from the group's batched normalize."""
    sn = layer.parametrizations.weight[0]
    take = sn._take_pending

    def spied(weight):
        w = take(weight)
        assert w is not None  # the batched result was used
        record(w)
        return w
    sn._take_pending = spied


def expected_weight(layer):
    W = layer.parametrizations.weight.original
    sn = layer.parametrizations.weight[0]
    return W / torch.vdot(sn._u, torch.mv(W, sn._v))


@compiled_path
def test_outputs_are_reused_once_released():
    _, ours, group = pair()
    x = torch.randn(4, 3, dtype=torch.float64)
    used = []
    spy(ours[2], lambda w: used.append(w.data_ptr()))
    for _ in range(3):
        with torch.no_grad():
            ours(x)
    assert len(group._pool.slots) == 1
    assert used[0] == used[1] == used[2] == group._pool.slots[0].outs[1].data_ptr()
    for _ in range(2):
        ours(x).sum().backward()  # the graph holds the weights until backward, then lets them go
    assert len(group._pool.slots) == 1 and used[3] == used[4] == used[0]


@compiled_path
def test_a_held_result_is_never_overwritten():
    theirs, ours, group = pair(update="manual")
    x = torch.randn(4, 3, dtype=torch.float64)
    taken = {}
    spy(ours[0], lambda w: taken.setdefault("w", w))
    ours(x)
    held = taken["w"]  # the normalized weight of that forward, as a user's hook might keep it
    snapshot = held.detach().clone()
    assert any(held.data_ptr() == o.data_ptr() for s in group._pool.slots for o in s.outs)
    with torch.no_grad():
        for m in ours:
            if isinstance(m, nn.Linear):
                m.parametrizations.weight.original.mul_(1.5)
    group.power_iteration()
    taken.clear()
    ours(x)
    assert torch.equal(held, snapshot)  # the pool took other memory while `held` was alive
    assert taken["w"].data_ptr() != held.data_ptr()
    torch.testing.assert_close(taken["w"], expected_weight(ours[0]), rtol=1e-12, atol=1e-12)
    assert len(group._pool.slots) == 2


@compiled_path
def test_three_live_forwards_then_backward_match_torch_and_steady_state_allocates_nothing():
    """A critic step with a gradient penalty: real, fake and interpolate forwards alive until one backward."""
    theirs, ours, group = pair()
    opts = [torch.optim.SGD(m.parameters(), lr=0.05) for m in (theirs, ours)]
    g = torch.Generator().manual_seed(3)
    slots_after_first = None
    for step in range(4):
        real, fake = (torch.randn(6, 3, generator=g, dtype=torch.float64) for _ in range(2))
        losses = []
        for model, opt in zip((theirs, ours), opts):
            opt.zero_grad()
            alpha = torch.rand(6, 1, generator=torch.Generator().manual_seed(step), dtype=torch.float64)
            x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_()
            out = model(x_hat)
            grad, = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
            penalty = ((grad.norm(dim=1) - 1) ** 2).mean()
            loss = model(fake).mean() - model(real).mean() + 10 * penalty
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        torch.testing.assert_close(losses[0], losses[1], rtol=1e-10, atol=1e-12)
        if slots_after_first is None:
            slots_after_first = [id(s) for s in group._pool.slots]
            assert len(slots_after_first) == 3
        assert [id(s) for s in group._pool.slots] == slots_after_first  # reused, none added
    for a, b in zip(theirs.parameters(), ours.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@compiled_path
def test_past_the_limit_forwards_allocate_and_stay_right():
    _, ours, group = pair(update="manual")
    x = torch.randn(4, 3, dtype=torch.float64)
    outs = [ours(x) for _ in range(group._pool.limit + 2)]  # every graph holds its forward's weights
    assert len(group._pool.slots) == group._pool.limit
    ref = ours(x).detach()
    for y in outs:
        torch.testing.assert_close(y.detach(), ref, rtol=1e-12, atol=1e-12)


@compiled_path
def test_a_dtype_change_gets_new_outputs():
    _, ours, group = pair(update="manual")
    x = torch.randn(4, 3, dtype=torch.float64)
    with torch.no_grad():
        ours(x)
    ours.float()
    with torch.no_grad():
        y = ours(x.float())
    assert len(group._pool.slots) == 1 and group._pool.slots[0].outs[0].dtype == torch.float32
    h = x.float()
    linears = [m for m in ours if isinstance(m, nn.Linear)]
    for i, m in enumerate(linears):
        h = nn.functional.linear(h, expected_weight(m), m.bias)
        if i < len(linears) - 1:
            h = nn.functional.leaky_relu(h, 0.2)
    torch.testing.assert_close(y, h, rtol=1e-5, atol=1e-6)


@compiled_path
def test_inference_mode_before_and_between_training_forwards():
    theirs, ours, group = pair()
    x = torch.randn(4, 3, dtype=torch.float64)
    for model in (theirs, ours):
        with torch.inference_mode():  # memory taken here would be an inference tensor, unusable by autograd later
            model(x)
    assert group._pool.slots == []
    for _ in range(2):
        ya, yb = theirs(x), ours(x)
        torch.testing.assert_close(ya, yb, rtol=1e-10, atol=1e-12)
        ya.sum().backward()
        yb.sum().backward()
        with torch.inference_mode():
            torch.testing.assert_close(theirs(x), ours(x), rtol=1e-10, atol=1e-12)
    for a, b in zip(theirs.parameters(), ours.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)
    assert len(group._pool.slots) == 1


def test_torch_func_transforms_leave_the_pool_alone():
    """vmap(grad) of the critic w.r.t. its input, as a per-sample gradient penalty takes it, works as without it."""
    theirs, ours, group = pair(update="manual")
    x = torch.randn(4, 3, dtype=torch.float64)
    got = torch.func.vmap(torch.func.grad(lambda xi: ours(xi[None]).sum()))(x)
    want = torch.func.vmap(torch.func.grad(lambda xi: theirs.eval()(xi[None]).sum()))(x)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert group._pool.slots == []


@compiled_path
def test_copies_start_with_an_empty_pool():
    _, ours, group = pair()
    x = torch.randn(4, 3, dtype=torch.float64)
    ours(x).sum().backward()
    assert group._pool.slots
    for _ in range(2):
        clone = copy.deepcopy(ours)
        hooks = list(clone._forward_pre_hooks.values())
        pool = hooks[0].__self__._pool
        assert pool.slots == [] and pool.limit == group._pool.limit
        torch.testing.assert_close(clone(x), ours(x), rtol=1e-12, atol=1e-12)
        assert len(pool.slots) == 1


def test_without_the_use_count_function_nothing_is_pooled(monkeypatch):
    monkeypatch.setattr(sn_mod, "_USE_COUNT", None)
    theirs, ours, group = pair()
    x = torch.randn(4, 3, dtype=torch.float64)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-10, atol=1e-12)
    assert group._pool.slots == []


def test_the_reference_impl_uses_no_kept_outputs():
    torch.manual_seed(0)
    model = critic()
    group = wgan_ext.apply_spectral_norm(model, impl="reference")
    model(torch.randn(4, 3, dtype=torch.float64)).sum().backward()
    assert group._pool.slots == []
