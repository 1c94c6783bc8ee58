"""torch.ops.wgan_ext.spectral_norm_normalize (every layer's W / sigma in one call) and its backward, against the
reference and torch's spectral_norm, and the batched path of apply_spectral_norm that uses it."""

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as torch_spectral_norm
from torch.profiler import ProfilerActivity, profile

import wgan_ext
from wgan_ext import _reference
from wgan_ext.spectral_norm import normalize

from conftest import DEVICES, compiled_path, fused_available

OP = "spectral_norm_normalize"
INTO = "_spectral_norm_normalize_into"
SHAPES = [(5, 7), (1, 3), (64, 1), (33, 129), (16, 4100)]  # rows of 1 to 64, a tail of kRows, > one task
TOL = {torch.float64: dict(rtol=1e-12, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=1e-6),
       torch.bfloat16: dict(rtol=2e-2, atol=2e-2), torch.float16: dict(rtol=2e-3, atol=2e-3)}


def need_op(device, op=OP):
    if not fused_available(op, device):
        pytest.skip(f"no compiled {op} kernel for {device}")


def layers(device, dtype, shapes=SHAPES, seed=0):
    g = torch.Generator().manual_seed(seed)
    Ws = [torch.randn(s, generator=g, dtype=torch.float64).to(device=device, dtype=dtype) for s in shapes]
    us = [torch.nn.functional.normalize(torch.randn(s[0], generator=g, dtype=torch.float64), dim=0)
          .to(device=device, dtype=dtype) for s in shapes]
    vs = [torch.nn.functional.normalize(torch.randn(s[1], generator=g, dtype=torch.float64), dim=0)
          .to(device=device, dtype=dtype) for s in shapes]
    return Ws, us, vs


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
def test_normalize_matches_the_reference(device, dtype):
    need_op(device)
    Ws, us, vs = layers(device, dtype)
    outs, saved = torch.ops.wgan_ext.spectral_norm_normalize(Ws, us, vs)
    ref_outs, ref_saved = _reference.spectral_norm_normalize(Ws, us, vs)
    assert saved.dtype == torch.float64 and saved.shape == ref_saved.shape
    for o, r, W in zip(outs, ref_outs, Ws):
        assert o.dtype == W.dtype and o.shape == W.shape and o.is_contiguous()
        torch.testing.assert_close(o, r, **TOL[dtype])
    torch.testing.assert_close(saved, ref_saved, **TOL[dtype])
    L = len(Ws)
    torch.testing.assert_close(saved[L:], torch.cat([t.double() for u, v in zip(us, vs) for t in (u, v)]),
                               rtol=0, atol=0)  # u, v kept exactly


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_backward_matches_the_reference(device, dtype):
    need_op(device, "_spectral_norm_normalize_backward")
    Ws, us, vs = layers(device, dtype)
    _, saved = _reference.spectral_norm_normalize(Ws, us, vs)
    g = torch.Generator().manual_seed(3)
    grads = [torch.randn(W.shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype) for W in Ws]
    got = torch.ops.wgan_ext._spectral_norm_normalize_backward(grads, Ws, saved)
    want = _reference.spectral_norm_normalize_backward(grads, Ws, saved)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **TOL[dtype])


@pytest.mark.parametrize("device", DEVICES)
def test_backward_is_the_gradient_of_w_over_sigma(device):
    # against autograd through torch's own ops (vdot, mv, div), u and v constant: the formula torch's
    # spectral_norm differentiates
    need_op(device)
    Ws, us, vs = layers(device, torch.float64)
    Ws = [W.requires_grad_() for W in Ws]
    outs, _ = normalize(Ws, us, vs, impl="fused")
    g = torch.Generator().manual_seed(4)
    weights = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(device) for o in outs]
    got = torch.autograd.grad(sum((o * w).sum() for o, w in zip(outs, weights)), Ws)
    want = torch.autograd.grad(sum(((W / torch.vdot(u, torch.mv(W, v))) * w).sum()
                                   for W, u, v, w in zip(Ws, us, vs, weights)), Ws)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_gradcheck():
    need_op("cpu")
    Ws, us, vs = layers("cpu", torch.float64, shapes=[(3, 4), (2, 5)])
    Ws = [W.requires_grad_() for W in Ws]

    def f(*weights):
        outs, _ = torch.ops.wgan_ext.spectral_norm_normalize(list(weights), us, vs)
        return tuple(outs)

    assert torch.autograd.gradcheck(f, tuple(Ws))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    need_op(device)
    Ws, us, vs = layers(device, torch.float32, shapes=[(3, 4), (6, 2)])
    torch.library.opcheck(torch.ops.wgan_ext.spectral_norm_normalize.default, (Ws, us, vs))
    Wg = [W.clone().requires_grad_() for W in Ws]
    torch.library.opcheck(torch.ops.wgan_ext.spectral_norm_normalize.default, (Wg, us, vs))
    _, saved = torch.ops.wgan_ext.spectral_norm_normalize(Ws, us, vs)
    torch.library.opcheck(torch.ops.wgan_ext._spectral_norm_normalize_backward.default,
                          ([torch.ones_like(W) for W in Ws], Ws, saved))


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_and_empty_inputs(device):
    need_op(device)
    Ws, us, vs = layers(device, torch.float64, shapes=[(6, 5), (4, 8)])
    Wt = [W.t() for W in Ws]  # (5, 6), (8, 4): strided views
    ut, vt = vs, us
    outs, saved = torch.ops.wgan_ext.spectral_norm_normalize(Wt, ut, vt)
    ref, ref_saved = _reference.spectral_norm_normalize(Wt, ut, vt)
    for o, r in zip(outs, ref):
        torch.testing.assert_close(o, r, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(saved, ref_saved, rtol=1e-12, atol=1e-12)
    outs, saved = normalize([], [], [])  # no tensor to dispatch on: the wrapper answers
    assert outs == [] and saved.numel() == 0


def test_bad_arguments_are_refused():
    need_op("cpu")
    Ws, us, vs = layers("cpu", torch.float32, shapes=[(3, 4)])
    op = torch.ops.wgan_ext.spectral_norm_normalize
    with pytest.raises(RuntimeError, match="same length"):
        op(Ws, us, [])
    with pytest.raises(RuntimeError, match="expected a matrix"):
        op(Ws, vs, us)
    with pytest.raises(RuntimeError, match="share one floating dtype"):
        op(Ws, [us[0].double()], vs)
    _, saved = op(Ws, us, vs)
    backward = torch.ops.wgan_ext._spectral_norm_normalize_backward
    with pytest.raises(RuntimeError, match="must match its weight"):
        backward([torch.ones(4, 3)], Ws, saved)
    with pytest.raises(RuntimeError, match="saved"):
        backward([torch.ones(3, 4)], Ws, saved[:-1])
    with pytest.raises(RuntimeError, match="one gradient per weight"):
        backward([], Ws, saved)


# ------------------------------------------------------------------------------- apply_spectral_norm uses it

def critic(n_layers=4, width=16):
    mods = [nn.Linear(3, width)]
    for _ in range(n_layers - 2):
        mods += [nn.LeakyReLU(0.2), nn.Linear(width, width)]
    mods += [nn.LeakyReLU(0.2), nn.Linear(width, 1)]
    return nn.Sequential(*mods).double()


def calls(fn, names):
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {n: sum(1 for e in prof.events() if e.name == f"wgan_ext::{n}") for n in names}


@pytest.mark.parametrize("n_layers", [2, 6])
@compiled_path
def test_one_normalize_call_per_forward_and_one_per_backward(n_layers):
    need_op("cpu")
    model = critic(n_layers)
    wgan_ext.apply_spectral_norm(model)
    x = torch.randn(5, 3, dtype=torch.float64)
    # on the CPU the group writes into its kept outputs (_spectral_norm_normalize_into)
    names = [OP, INTO, "_spectral_norm_normalize_backward", "spectral_norm_power_iteration_"]
    y = None

    def forward():
        nonlocal y
        y = model(x).sum()

    assert calls(forward, names) == {OP: 0, INTO: 1, "_spectral_norm_normalize_backward": 0,
                                     "spectral_norm_power_iteration_": 1}
    assert calls(lambda: y.backward(), names) == {OP: 0, INTO: 0, "_spectral_norm_normalize_backward": 1,
                                                  "spectral_norm_power_iteration_": 0}
    # torch's per-layer ops are gone from the forward: no mv / vdot / div per layer
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model(x)
    names_seen = [e.name for e in prof.events()]
    assert names_seen.count("aten::mv") == 0 and names_seen.count("aten::vdot") == 0


@pytest.mark.parametrize("update", ["forward", "step", "manual"])
def test_batched_matches_torch_over_training_steps_with_several_forwards(update):
    need_op("cpu")
    torch.manual_seed(0)
    base = critic(4)
    theirs, ours = copy.deepcopy(base), copy.deepcopy(base)
    for m in theirs:
        if isinstance(m, nn.Linear):
            torch.manual_seed(7)
            torch_spectral_norm(m)
    torch.manual_seed(7)
    group = wgan_ext.apply_spectral_norm(ours, update=update)
    # same initial u, v: copy torch's buffers into ours
    ours.load_state_dict(theirs.state_dict())
    opts = [torch.optim.SGD(m.parameters(), lr=0.05) for m in (theirs, ours)]
    if update == "step":
        group.attach(opts[1])
    g = torch.Generator().manual_seed(5)
    for _ in range(3):
        real, fake = (torch.randn(6, 3, generator=g, dtype=torch.float64) for _ in range(2))
        losses = []
        for model, opt in zip((theirs, ours), opts):
            opt.zero_grad()
            if update != "forward" and model is theirs:
                # torch's parametrization always updates in training forwards: compare in eval mode there
                model.eval()
            loss = model(fake).mean() - model(real).mean()
            loss.backward()
            opt.step()
            losses.append(loss.detach())
            if update == "manual" and model is ours:
                group.power_iteration()
            model.train()
        if update != "forward":
            for m in theirs:  # torch's u, v: one update per step, from the stepped weights, as ours
                if isinstance(m, nn.Linear):
                    sn = m.parametrizations.weight[0]
                    with torch.no_grad():
                        sn._power_method(m.parametrizations.weight.original, 1)
        torch.testing.assert_close(losses[0], losses[1], rtol=1e-10, atol=1e-12)
    for (k, a), b in zip(theirs.state_dict().items(), ours.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=k)


def test_a_weight_changed_after_the_batched_normalize_is_normalized_afresh():
    need_op("cpu")
    model = critic(3)
    group = wgan_ext.apply_spectral_norm(model, update="manual")
    layer = model[0]
    group.normalize()  # what the pre-hook does; then the weight changes before the layer runs
    with torch.no_grad():
        layer.parametrizations.weight.original.mul_(2.0)
    W = layer.parametrizations.weight.original
    sn = layer.parametrizations.weight[0]
    want = W / torch.vdot(sn._u, torch.mv(W, sn._v))
    torch.testing.assert_close(layer.weight, want, rtol=1e-12, atol=1e-12)
    group.normalize()
    with torch.no_grad():
        sn._u.mul_(-1.0)  # u changed too: not the pending one either
    torch.testing.assert_close(layer.weight, W / torch.vdot(sn._u, torch.mv(W, sn._v)), rtol=1e-12, atol=1e-12)


def test_conv_transpose_weights_come_back_in_their_layout():
    need_op("cpu")
    torch.manual_seed(0)
    base = nn.Sequential(nn.ConvTranspose2d(4, 3, 3), nn.ReLU(), nn.Conv2d(3, 2, 3)).double()
    theirs, ours = copy.deepcopy(base), copy.deepcopy(base)
    for m in theirs:
        if isinstance(m, (nn.ConvTranspose2d, nn.Conv2d)):
            torch_spectral_norm(m)
    wgan_ext.apply_spectral_norm(ours)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    ya, yb = theirs(x), ours(x)
    torch.testing.assert_close(ya, yb, rtol=1e-10, atol=1e-12)
    ya.sum().backward()
    yb.sum().backward()
    for a, b in zip(theirs.parameters(), ours.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)


def test_a_frozen_weight_held_as_a_buffer_is_batched_too():
    need_op("cpu")
    torch.manual_seed(0)
    base = critic(3)
    for m in base:
        if isinstance(m, nn.Linear):
            w = m.weight.detach().clone()
            del m.weight
            m.register_buffer("weight", w)
    theirs, ours = copy.deepcopy(base), copy.deepcopy(base)
    for m in theirs:
        if isinstance(m, nn.Linear):
            torch_spectral_norm(m)
    wgan_ext.apply_spectral_norm(ours)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(4, 3, dtype=torch.float64)
    for _ in range(2):
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-10, atol=1e-12)
