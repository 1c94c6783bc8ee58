"""wgan_ext.spectral_norm / apply_spectral_norm and the op spectral_norm_power_iteration_, against torch's own
torch.nn.utils.parametrizations.spectral_norm and the pure-torch reference."""

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as torch_spectral_norm
from torch.profiler import ProfilerActivity, profile

import wgan_ext
from wgan_ext import _reference
from wgan_ext.spectral_norm import SpectralNorm, power_iteration_

from conftest import DEVICES, compiled_path, fused_available

OP = "spectral_norm_power_iteration_"


def need_op(device):
    if not fused_available(OP, device):
        pytest.skip(f"no compiled {OP} kernel for {device}")


def sn_of(module):
    return module.parametrizations.weight[0]


LAYERS = {
    "Linear": lambda: nn.Linear(7, 5),
    "Conv1d": lambda: nn.Conv1d(3, 4, 3),
    "Conv2d": lambda: nn.Conv2d(3, 6, 3),
    "Conv3d": lambda: nn.Conv3d(2, 3, 2),
    "ConvTranspose2d": lambda: nn.ConvTranspose2d(4, 3, 3),
}
INPUTS = {"Linear": (4, 7), "Conv1d": (4, 3, 9), "Conv2d": (4, 3, 6, 6), "Conv3d": (4, 2, 4, 4, 4),
          "ConvTranspose2d": (4, 4, 5, 5)}


def twin_layers(kind, device, dtype):
    """The same layer with torch's spectral norm and with ours, from the same RNG state (same initial u, v)."""
    torch.manual_seed(0)
    base = LAYERS[kind]().to(device=device, dtype=dtype)
    theirs, ours = copy.deepcopy(base), copy.deepcopy(base)
    torch.manual_seed(1)
    torch_spectral_norm(theirs)
    torch.manual_seed(1)
    wgan_ext.spectral_norm(ours)
    return theirs, ours


# float32: the two accumulate in different orders; the gradient of W / sigma amplifies that a little.
TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=2e-3, atol=2e-3)}


def train_steps(layer, x, steps=3):
    """Outputs, weight gradients and u, v after each of `steps` training forwards and backwards."""
    out = []
    for _ in range(steps):
        layer.zero_grad()
        y = layer(x)
        y.square().sum().backward()
        out.append((y.detach().clone(), layer.parametrizations.weight.original.grad.clone(), sn_of(layer)._u.clone(),
                    sn_of(layer)._v.clone()))
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind", list(LAYERS))
def test_drop_in_matches_torch_outputs_and_gradients(device, dtype, kind):
    need_op(device)
    theirs, ours = twin_layers(kind, device, dtype)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    x = torch.randn(INPUTS[kind], device=device, dtype=dtype)
    for step_theirs, step_ours in zip(train_steps(theirs, x), train_steps(ours, x)):
        for a, b in zip(step_theirs, step_ours):
            torch.testing.assert_close(a, b, **TOL[dtype])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", list(LAYERS))
def test_bfloat16_is_as_accurate_as_torch(device, kind):
    # In bfloat16 the two round differently (we accumulate in float32 and round u, v once per step), so both are
    # compared with the float64 computation: ours may not be further from it than torch's (with some slack).
    need_op(device)
    theirs, ours = twin_layers(kind, device, torch.bfloat16)
    truth, _ = twin_layers(kind, device, torch.float64)  # torch's, in float64: independent of our kernels
    x = torch.randn(INPUTS[kind], device=device, dtype=torch.float64)
    exact = train_steps(truth, x)
    for layer in (theirs, ours):
        layer.to(torch.bfloat16)
    errors = {}
    for name, layer in (("torch", theirs), ("ours", ours)):
        steps = train_steps(layer, x.to(torch.bfloat16))
        errors[name] = max((a.double() - e).abs().max().item() / (e.abs().max().item() + 1e-12)
                           for s, se in zip(steps, exact) for a, e in zip(s, se))
    assert errors["ours"] <= 2 * errors["torch"] + 1e-2, errors


def dcgan_critic(nc=3, ndf=16):
    return nn.Sequential(
        nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2),
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.LeakyReLU(0.2),
        nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.LeakyReLU(0.2),
        nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.LeakyReLU(0.2),
        nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Flatten(0))


def twin_critics(device, dtype=torch.float64, update="forward", impl=None):
    torch.manual_seed(0)
    base = dcgan_critic().to(device=device, dtype=dtype)
    theirs, ours = copy.deepcopy(base), copy.deepcopy(base)
    torch.manual_seed(1)
    for m in theirs.modules():
        if isinstance(m, nn.Conv2d):
            torch_spectral_norm(m)
    torch.manual_seed(1)
    group = wgan_ext.apply_spectral_norm(ours, update=update, impl=impl)
    return theirs, ours, group


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", [None, "reference"])  # the reference: what runs where the compiled ops are missing
def test_batched_dcgan_critic_matches_torch_over_training_steps(device, impl):
    if impl is None:
        need_op(device)
    theirs, ours, group = twin_critics(device, impl=impl)
    assert len(group.layers) == 5
    opts = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in (theirs, ours)]
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        real = torch.randn(4, 3, 64, 64, generator=g, dtype=torch.float64).to(device)
        fake = torch.randn(4, 3, 64, 64, generator=g, dtype=torch.float64).to(device)
        losses = []
        for critic, opt in zip((theirs, ours), opts):
            opt.zero_grad()
            # Several forwards (real, fake), then one backward (pytorch#66363).
            loss = critic(fake).mean() - critic(real).mean()
            loss.backward()
            opt.step()
            losses.append(loss)
        torch.testing.assert_close(losses[0], losses[1], rtol=1e-9, atol=1e-9)
    for a, b in zip(theirs.state_dict().values(), ours.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@compiled_path
def test_one_power_iteration_call_per_forward_for_all_layers():
    need_op("cpu")
    _, ours, group = twin_critics("cpu", torch.float32)
    x = torch.randn(2, 3, 64, 64)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        ours(x)
        ours(x)
    calls = [e for e in prof.events() if e.name == f"wgan_ext::{OP}"]
    assert len(calls) == 2  # two forwards, five layers: one call each
    ours.eval()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        ours(x)
    assert not [e for e in prof.events() if e.name == f"wgan_ext::{OP}"]


@pytest.mark.parametrize("device", DEVICES)
def test_sigma_converges_to_the_spectral_norm(device):
    need_op(device)
    torch.manual_seed(0)
    ours = dcgan_critic().to(device=device, dtype=torch.float64)
    group = wgan_ext.apply_spectral_norm(ours, n_power_iterations=500)
    for _ in range(20):  # 10,000 steps: enough even where the top two singular values are close
        group.power_iteration()
    for (name, m), sigma in zip(group.layers, group.sigmas().values()):
        W = m.parametrizations.weight.original.detach().flatten(1)
        assert sigma == pytest.approx(torch.linalg.matrix_norm(W, 2).item(), rel=1e-6), name
        # and the normalized weight has spectral norm 1
        assert torch.linalg.matrix_norm(m.weight.detach().flatten(1), 2).item() == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("batched", [False, True])
def test_eval_mode_does_not_update_u_v(batched):
    if batched:
        _, model, _ = twin_critics("cpu")
    else:
        _, model = twin_layers("Conv2d", "cpu", torch.float64)
    sns = [m for m in model.modules() if isinstance(m, SpectralNorm)]
    x = torch.randn((2, 3, 64, 64) if batched else INPUTS["Conv2d"], dtype=torch.float64)
    model.eval()
    before = [(s._u.clone(), s._v.clone()) for s in sns]
    model(x)
    assert all(torch.equal(s._u, u) and torch.equal(s._v, v) for s, (u, v) in zip(sns, before))
    model.train()
    model(x)
    assert not all(torch.equal(s._u, u) for s, (u, _) in zip(sns, before))


def test_state_dict_round_trip_with_torch_both_ways():
    theirs, ours, _ = twin_critics("cpu")
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    theirs.train()(x)  # move theirs away from ours
    # torch -> ours
    ours.load_state_dict(theirs.state_dict(), strict=True)
    theirs.eval(), ours.eval()
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-12, atol=1e-12)
    # ours -> torch
    ours.train()(x)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    theirs.eval(), ours.eval()
    torch.testing.assert_close(theirs(x), ours(x), rtol=1e-12, atol=1e-12)


def test_update_once_per_optimizer_step():
    _, ours, group = twin_critics("cpu", update="step")
    opt = torch.optim.SGD(ours.parameters(), lr=0.1)
    group.attach(opt)
    sn = group.parametrizations()[0]
    u0 = sn._u.clone()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    loss = ours(x).sum() + ours(x * 2).sum()  # forwards do not touch u, v
    assert torch.equal(sn._u, u0)
    loss.backward()
    opt.step()
    assert not torch.equal(sn._u, u0)


def test_exclude_layers():
    torch.manual_seed(0)
    model = dcgan_critic()
    group = wgan_ext.apply_spectral_norm(model, exclude=["8"])  # the last conv
    assert [n for n, _ in group.layers] == ["0", "2", "4", "6"]
    assert not hasattr(model[8], "parametrizations")
    with pytest.raises(ValueError, match="matches no layer"):
        wgan_ext.apply_spectral_norm(dcgan_critic(), exclude=["head"])
    model = nn.Sequential(nn.Linear(3, 4), nn.Conv1d(1, 1, 2))
    group = wgan_ext.apply_spectral_norm(model, exclude_types=nn.Linear)
    assert [n for n, _ in group.layers] == ["1"]


def test_group_remove_returns_to_per_layer_updates():
    _, ours, group = twin_critics("cpu")
    group.remove()
    sn = group.parametrizations()[0]
    u0 = sn._u.clone()
    ours(torch.randn(2, 3, 64, 64, dtype=torch.float64))
    assert not torch.equal(sn._u, u0) and not sn.batched


# --- the op -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
def test_power_iteration_op_matches_the_reference(device, dtype):
    need_op(device)
    g = torch.Generator().manual_seed(0)
    shapes = [(5, 7), (1, 9), (64, 3), (33, 300), (1, 1)]
    weights = [torch.randn(s, generator=g).to(device, dtype) for s in shapes]
    us = [torch.nn.functional.normalize(torch.randn(s[0], generator=g), dim=0).to(device, dtype) for s in shapes]
    vs = [torch.nn.functional.normalize(torch.randn(s[1], generator=g), dim=0).to(device, dtype) for s in shapes]
    ref_us, ref_vs = [u.clone() for u in us], [v.clone() for v in vs]
    power_iteration_(weights, us, vs, 3, 1e-12, impl="fused")
    _reference.spectral_norm_power_iteration_(weights, ref_us, ref_vs, 3, 1e-12)
    tol = {torch.float64: 1e-12, torch.float32: 1e-5}.get(dtype, 2e-2)
    for a, b in zip(us + vs, ref_us + ref_vs):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("device", DEVICES)
def test_power_iteration_op_zero_weight_and_non_contiguous_buffers(device):
    need_op(device)
    W = torch.zeros(4, 6, device=device)
    u, v = torch.ones(8, device=device)[::2], torch.ones(6, device=device)  # u is a strided view
    power_iteration_([W], [u], [v], 1, 1e-12, impl="fused")
    assert torch.isfinite(u).all() and torch.isfinite(v).all() and u.abs().sum() == 0  # 0 / max(0, eps) = 0


@pytest.mark.parametrize("device", DEVICES)
def test_power_iteration_opcheck(device):
    need_op(device)
    ws = [torch.randn(5, 7, device=device), torch.randn(3, 2, device=device, dtype=torch.float64)]
    us = [torch.randn(5, device=device), torch.randn(3, device=device, dtype=torch.float64)]
    vs = [torch.randn(7, device=device), torch.randn(2, device=device, dtype=torch.float64)]
    torch.library.opcheck(torch.ops.wgan_ext.spectral_norm_power_iteration_.default, (ws, us, vs, 2, 1e-12))


def test_gradcheck_of_the_parametrization():
    need_op("cpu")
    W = torch.randn(4, 3, 2, dtype=torch.float64)
    sn = SpectralNorm(W, dim=0).eval()  # eval: u, v fixed, so the map W -> W / sigma(W) is a function
    assert torch.autograd.gradcheck(sn, (W.clone().requires_grad_(True),))


def test_reference_and_fused_agree_through_the_api():
    need_op("cpu")
    torch.manual_seed(0)
    a, b = dcgan_critic().double(), None
    b = copy.deepcopy(a)
    torch.manual_seed(1)
    wgan_ext.apply_spectral_norm(a, impl="fused")
    torch.manual_seed(1)
    wgan_ext.apply_spectral_norm(b, impl="reference")
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    torch.testing.assert_close(a(x), b(x), rtol=1e-10, atol=1e-10)


# --- bad input ------------------------------------------------------------------------------------------------------

class WithBuffer(nn.Module):
    def __init__(self, t):
        super().__init__()
        self.register_buffer("weight", t)


@pytest.mark.parametrize("module,kwargs,error,match", [
    (WithBuffer(torch.ones(3, 3, dtype=torch.int64)), {}, TypeError, "dtype torch.int64"),
    (WithBuffer(torch.ones(0, 3)), {}, ValueError, "is empty"),
    (nn.ReLU(), {}, ValueError, "no parameter or buffer named 'weight'"),
    (nn.Linear(2, 2), dict(name="kernel"), ValueError, "named 'kernel'"),
    (nn.Linear(2, 2), dict(n_power_iterations=0), ValueError, "n_power_iterations must be an int >= 1"),
    (nn.Linear(2, 2), dict(eps=0.0), ValueError, "eps must be a finite number > 0"),
    (nn.Linear(2, 2), dict(eps=-1e-12), ValueError, "eps must be"),
    (nn.Linear(2, 2), dict(dim=3), ValueError, "dim 3 is out of range"),
    ("not a module", {}, TypeError, "must be an nn.Module"),
])
def test_bad_input_is_refused(module, kwargs, error, match):
    with pytest.raises(error, match=match):
        wgan_ext.spectral_norm(module, **kwargs)


def test_applying_twice_is_refused():
    layer = wgan_ext.spectral_norm(nn.Linear(3, 3))
    with pytest.raises(ValueError, match="already has spectral normalization"):
        wgan_ext.spectral_norm(layer)
    with pytest.raises(ValueError, match="already has spectral normalization"):
        wgan_ext.spectral_norm(torch_spectral_norm(nn.Linear(3, 3)))
    model = nn.Sequential(nn.Linear(3, 3))
    wgan_ext.apply_spectral_norm(model)
    with pytest.raises(ValueError, match="already has spectral normalization"):
        wgan_ext.apply_spectral_norm(model)


def test_the_op_checks_its_arguments():
    need_op("cpu")
    op = torch.ops.wgan_ext.spectral_norm_power_iteration_
    with pytest.raises(RuntimeError, match="same length"):
        op([torch.ones(2, 2)], [], [], 1, 1e-12)
    with pytest.raises(RuntimeError, match="expected a matrix"):
        op([torch.ones(2, 2)], [torch.ones(3)], [torch.ones(2)], 1, 1e-12)
    with pytest.raises(RuntimeError, match="share one floating dtype"):
        op([torch.ones(2, 2)], [torch.ones(2, dtype=torch.float64)], [torch.ones(2)], 1, 1e-12)
    with pytest.raises(RuntimeError, match="eps must be"):
        op([torch.ones(2, 2)], [torch.ones(2)], [torch.ones(2)], 1, 0.0)
