"""wgan_ext.gradient_penalty / r1_penalty / r2_penalty and the ops interpolate, gradient_norm_penalty against the
plain-torch recipe (value and the gradient of every critic parameter)."""

import math
import sys

import pytest
import torch
from torch import nn

import wgan_ext
from wgan_ext import _ops, _reference
from wgan_ext.gradient_penalty import gradient_norm_penalty, interpolate

from conftest import DEVICES, compiled_path, fused_available

IMPLS = ["fused", "reference"]


def impl_ok(impl, device):
    if impl == "fused" and not fused_available("gradient_norm_penalty", device):
        pytest.skip(f"no compiled kernel for {device}")
    return impl


class Flatten(nn.Module):
    def forward(self, x):
        return x.reshape(x.shape[0], -1)


def make_critic(shape, device, dtype):
    """A small smooth critic for inputs of `shape` (without the batch dim): conv for images/sequences, MLP else."""
    torch.manual_seed(0)
    if len(shape) == 3:  # (C, H, W)
        layers = [nn.Conv2d(shape[0], 4, 3, padding=1), nn.Tanh(), Flatten(), nn.Linear(4 * shape[1] * shape[2], 1)]
    elif len(shape) == 2:  # (C, L): a sequence
        layers = [nn.Conv1d(shape[0], 4, 3, padding=1), nn.Tanh(), Flatten(), nn.Linear(4 * shape[1], 1)]
    else:
        layers = [nn.Linear(shape[0], 16), nn.Tanh(), nn.Linear(16, 1)]
    return nn.Sequential(*layers).to(device=device, dtype=dtype)


def plain_recipe(critic, real, fake, alpha, weight=10.0, target=1.0, one_sided=False):
    """The usual WGAN-GP code: per-sample alpha, norm over all non-batch dims, create_graph gradient."""
    a = alpha.view(-1, *([1] * (real.dim() - 1)))
    x_hat = (real + a * (fake - real)).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    excess = grad.reshape(grad.shape[0], -1).norm(2, dim=1) - target
    if one_sided:
        excess = excess.clamp_min(0)
    return weight * (excess ** 2).mean()


def param_grads(critic, loss):
    critic.zero_grad()
    loss.backward()
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in critic.parameters()]


SHAPES = {"vectors": (2,), "1-channel images": (1, 6, 6), "5-channel images": (5, 4, 4), "sequences": (3, 10)}
TOL = {torch.float64: dict(rtol=1e-9, atol=1e-9), torch.float32: dict(rtol=2e-4, atol=1e-5)}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
@pytest.mark.parametrize("one_sided", [False, True])
def test_matches_the_plain_recipe(device, impl, dtype, shape, one_sided):
    impl_ok(impl, device)
    critic = make_critic(shape, device, dtype)
    g = torch.Generator().manual_seed(1)
    real = torch.randn(8, *shape, generator=g, dtype=dtype).to(device)
    fake = (torch.randn(8, *shape, generator=g, dtype=dtype) * 3).to(device)
    alpha = torch.rand(8, generator=g, dtype=dtype).to(device)
    # A target that half the samples' norms exceed, so the one-sided penalty is active for some and not others.
    _, norms = wgan_ext.gradient_penalty(critic, real, fake, alpha=alpha, return_norms=True, impl="reference")
    target = norms.median().item()
    ours = wgan_ext.gradient_penalty(critic, real, fake, alpha=alpha, target=target, one_sided=one_sided, impl=impl)
    ours_grads = param_grads(critic, ours)
    plain = plain_recipe(critic, real, fake, alpha, target=target, one_sided=one_sided)
    plain_grads = param_grads(critic, plain)
    assert ours.dtype == dtype and ours.shape == ()
    torch.testing.assert_close(ours, plain, **TOL[dtype])
    assert any(p.abs().sum() > 0 for p in plain_grads)
    for a, b in zip(ours_grads, plain_grads):
        torch.testing.assert_close(a, b, **TOL[dtype])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", IMPLS)
def test_r1_and_r2_match_the_plain_recipe(device, impl):
    impl_ok(impl, device)
    critic = make_critic((1, 5, 5), device, torch.float64)
    data = torch.randn(6, 1, 5, 5, dtype=torch.float64, device=device)
    for fn in (wgan_ext.r1_penalty, wgan_ext.r2_penalty):
        ours = fn(critic, data, weight=5.0, impl=impl)
        ours_grads = param_grads(critic, ours)
        x = data.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
        plain = 5.0 * grad.pow(2).reshape(6, -1).sum(1).mean()
        plain_grads = param_grads(critic, plain)
        torch.testing.assert_close(ours, plain, rtol=1e-9, atol=1e-9)
        for a, b in zip(ours_grads, plain_grads):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("device", DEVICES)
def test_alpha_is_drawn_per_sample_and_reproducible(device):
    critic = make_critic((3,), device, torch.float32)
    real = torch.zeros(4000, 3, device=device)
    fake = torch.ones(4000, 3, device=device)
    seen = []

    def recording_critic(x):
        seen.append(x.detach()[:, 0].clone())  # x_hat = alpha per sample, since real = 0 and fake = 1
        return critic(x)

    for _ in range(2):
        wgan_ext.gradient_penalty(recording_critic, real, fake, generator=torch.Generator(device).manual_seed(7))
    alpha = seen[0].double().cpu()
    assert torch.equal(seen[0], seen[1]), "the same generator seed must give the same alpha"
    # Different per sample and ~U[0, 1]: mean 1/2, variance 1/12, all values in [0, 1].
    assert alpha.unique().numel() > 3900
    assert abs(alpha.mean().item() - 0.5) < 0.03 and abs(alpha.var().item() - 1 / 12) < 0.01
    assert alpha.min() >= 0 and alpha.max() <= 1


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", IMPLS)
def test_an_all_zero_gradient_gives_a_finite_penalty_and_gradients(device, impl):
    impl_ok(impl, device)
    critic = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1)).to(device)
    with torch.no_grad():
        for p in critic.parameters():
            p.zero_()  # the critic is constant: its input gradient is exactly 0
    real, fake = torch.randn(5, 3, device=device), torch.randn(5, 3, device=device)
    penalty, norms = wgan_ext.gradient_penalty(critic, real, fake, return_norms=True, impl=impl)
    grads = param_grads(critic, penalty)
    assert torch.isfinite(penalty) and penalty.item() == pytest.approx(10.0, rel=1e-5)
    assert torch.isfinite(norms).all() and all(torch.isfinite(g).all() for g in grads)


# --- the ops ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_interpolate_op_matches_the_reference(device, dtype):
    impl_ok("fused", device)
    real = torch.randn(7, 3, 5, device=device, dtype=dtype)
    fake = torch.randn(7, 3, 5, device=device, dtype=dtype)
    alpha = torch.rand(7, device=device, dtype=dtype)
    out = interpolate(real.transpose(1, 2), fake.transpose(1, 2), alpha, impl="fused")  # non-contiguous inputs
    expected = _reference.interpolate(real.transpose(1, 2), fake.transpose(1, 2), alpha)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("one_sided", [False, True])
def test_penalty_op_and_its_backward_match_the_reference(device, dtype, one_sided):
    impl_ok("fused", device)
    base = torch.randn(9, 4, 3, device=device, dtype=dtype) * 0.5
    grad_out = torch.randn((), device=device)
    results = []
    for impl in ("fused", "reference"):
        g = base.clone().transpose(1, 2).requires_grad_(True)
        penalty, norms = gradient_norm_penalty(g, 1.0, one_sided=one_sided, inv_scale=0.5, impl=impl)
        (penalty * grad_out.to(penalty.dtype) + norms.sum()).backward()
        results.append((penalty, norms, g.grad))
    tol = dict(rtol=1e-5, atol=1e-6) if dtype in (torch.float32, torch.float64) else dict(rtol=1e-2, atol=1e-2)
    for a, b in zip(*results):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, **tol)


def test_penalty_op_gradcheck():
    impl_ok("fused", "cpu")
    for one_sided in (False, True):
        g = (torch.randn(6, 2, 3, dtype=torch.float64) * 0.7).requires_grad_(True)
        assert torch.autograd.gradcheck(
            lambda x: torch.ops.wgan_ext.gradient_norm_penalty(x, 1.0, one_sided, 0.5, 1e-12), (g,))
    real = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    fake = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    alpha = torch.rand(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(torch.ops.wgan_ext.interpolate, (real, fake, alpha))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    impl_ok("fused", device)
    g = torch.randn(5, 3, 2, device=device, requires_grad=True)
    torch.library.opcheck(torch.ops.wgan_ext.gradient_norm_penalty.default, (g, 1.0, False, 1.0, 1e-12))
    torch.library.opcheck(torch.ops.wgan_ext.gradient_norm_penalty.default, (g.detach().double(), 0.0, True, 0.25,
                                                                             1e-8))
    real, fake = torch.randn(4, 2, 3, device=device), torch.randn(4, 2, 3, device=device)
    torch.library.opcheck(torch.ops.wgan_ext.interpolate.default, (real, fake, torch.rand(4, device=device)))
    norms = torch.rand(5, device=device) + 0.5
    torch.library.opcheck(torch.ops.wgan_ext._gradient_norm_penalty_backward.default,
                          (torch.ones((), device=device), torch.zeros(5, device=device), g.detach(), norms, 1.0,
                           False, 1.0))


def test_autocast_bf16_on_cpu_is_finite_and_close():
    critic = make_critic((1, 6, 6), "cpu", torch.float32)
    real, fake = torch.randn(8, 1, 6, 6), torch.randn(8, 1, 6, 6)
    alpha = torch.rand(8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = wgan_ext.gradient_penalty(critic, real, fake, alpha=alpha)
    grads = param_grads(critic, ours)
    plain = plain_recipe(critic, real, fake, alpha)
    assert ours.dtype == torch.float32 and torch.isfinite(ours)
    assert all(torch.isfinite(g).all() for g in grads)
    torch.testing.assert_close(ours, plain, rtol=0.1, atol=0.05)  # bf16 convolutions inside


@pytest.mark.parametrize("impl", IMPLS)
def test_a_grad_scaler_is_unscaled_inside_the_penalty(impl):
    # float32 on the CPU, so the only difference from the plain recipe is the scale taken out inside.
    impl_ok(impl, "cpu")
    critic = make_critic((2, 5, 5), "cpu", torch.float32)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
    real, fake, alpha = torch.randn(6, 2, 5, 5), torch.randn(6, 2, 5, 5), torch.rand(6)
    ours, norms = wgan_ext.gradient_penalty(critic, real, fake, alpha=alpha, scaler=scaler, return_norms=True,
                                            impl=impl)
    ours_grads = param_grads(critic, ours)
    plain = plain_recipe(critic, real, fake, alpha)
    plain_grads = param_grads(critic, plain)
    torch.testing.assert_close(ours, plain, rtol=1e-5, atol=1e-6)
    for a, b in zip(ours_grads, plain_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.cuda
@pytest.mark.parametrize("device", [p for p in DEVICES if p != "cpu"])
def test_fp16_autocast_with_grad_scaler_on_cuda(device):
    critic = make_critic((3, 8, 8), device, torch.float32)
    opt = torch.optim.Adam(critic.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0 ** 16)
    real, fake = torch.randn(16, 3, 8, 8, device=device), torch.randn(16, 3, 8, 8, device=device)
    alpha = torch.rand(16, device=device)
    with torch.autocast("cuda", dtype=torch.float16):
        w = critic(fake).mean() - critic(real).mean()
        gp, norms = wgan_ext.gradient_penalty(critic, real, fake, alpha=alpha, scaler=scaler, return_norms=True)
        loss = w + gp
    scaler.scale(loss).backward()
    assert torch.isfinite(gp) and torch.isfinite(norms).all()
    plain = plain_recipe(critic, real, fake, alpha)  # fp32, unscaled
    torch.testing.assert_close(gp.float(), plain, rtol=0.05, atol=0.05)
    scaler.step(opt)
    scaler.update()
    assert all(torch.isfinite(p).all() for p in critic.parameters())


# --- fallback and bad input --------------------------------------------------------------------------------------

@compiled_path
def test_falls_back_to_the_reference_with_one_warning(monkeypatch):
    monkeypatch.setattr(_ops, "KERNELS", {})
    critic = make_critic((2,), "cpu", torch.float64)
    real, fake = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    alpha = torch.rand(4, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="pure-torch reference"):
        ours = wgan_ext.gradient_penalty(critic, real, fake, alpha=alpha)
    torch.testing.assert_close(ours, plain_recipe(critic, real, fake, alpha))


def _gp_module():
    # (`import wgan_ext.gradient_penalty as m` gives the function: the package exports it under the module's name)
    return sys.modules["wgan_ext.gradient_penalty"]


def test_batchnorm_critic_warns(monkeypatch):
    monkeypatch.setattr(_gp_module(), "_warned_batchnorm", False)
    critic = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
    with pytest.warns(RuntimeWarning, match="BatchNorm"):
        wgan_ext.gradient_penalty(critic, torch.randn(4, 2), torch.randn(4, 2))


def test_batchnorm_check_follows_the_critic_without_walking_it_every_call(monkeypatch):
    import warnings

    monkeypatch.setattr(_gp_module(), "_warned_batchnorm", False)
    critic = nn.Sequential(nn.Linear(2, 4), nn.Linear(4, 1))
    walks = []
    plain_modules = critic.modules
    critic.modules = lambda: (walks.append(1), plain_modules())[1]  # counts the walks over the module tree
    real, fake = torch.randn(4, 2), torch.randn(4, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):
            wgan_ext.gradient_penalty(critic, real, fake)
    assert len(walks) == 1  # walked once, then the cached answer (nothing was registered since)
    critic.append(nn.BatchNorm1d(1).eval())  # a BatchNorm layer added later, in eval mode: no warning yet
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wgan_ext.gradient_penalty(critic, real, fake)
    assert len(walks) == 2
    critic.train()  # the same layer now normalizes by batch statistics: the next call warns
    with pytest.warns(RuntimeWarning, match="BatchNorm"):
        wgan_ext.gradient_penalty(critic, real, fake)


def _critic(x):
    return x.reshape(x.shape[0], -1).sum(1)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(fake=torch.randn(4, 3)), ValueError, "must match in shape"),
    (dict(fake=torch.randn(4, 2, dtype=torch.float64)), ValueError, "must match in shape, dtype"),
    (dict(real=torch.randn(0, 2), fake=torch.randn(0, 2)), ValueError, "N > 0"),
    (dict(weight=-1.0), ValueError, "weight must be >= 0"),
    (dict(weight=math.nan), ValueError, "weight must be a finite"),
    (dict(real=torch.ones(4, 2, dtype=torch.int64), fake=torch.ones(4, 2, dtype=torch.int64)), TypeError,
     "dtype torch.int64"),
    (dict(critic=lambda x: x), ValueError, r"one score per sample, shape \(4,\) or \(4, 1\); got \(4, 2\)"),
    (dict(critic=lambda x: x.sum()), ValueError, r"got \(\)"),
    (dict(alpha=torch.rand(3)), ValueError, r"alpha must have shape \(4,\)"),
    (dict(alpha=torch.tensor([0.1, 0.2, 1.5, 0.3])), ValueError, r"in \[0, 1\]"),
    (dict(alpha=torch.tensor([0.1, -0.2, 0.5, 0.3])), ValueError, r"in \[0, 1\]"),
    (dict(real="x"), TypeError, "real must be a tensor"),
])
def test_bad_input_is_refused(kwargs, error, match):
    args = dict(critic=_critic, real=torch.randn(4, 2), fake=torch.randn(4, 2))
    args.update(kwargs)
    with pytest.raises(error, match=match):
        wgan_ext.gradient_penalty(**args)


def test_the_penalty_op_checks_its_arguments():
    impl_ok("fused", "cpu")
    with pytest.raises(RuntimeError, match="unsupported dtype"):
        torch.ops.wgan_ext.gradient_norm_penalty(torch.ones(3, 2, dtype=torch.int32), 1.0, False, 1.0, 1e-12)
    with pytest.raises(RuntimeError, match="N > 0"):
        torch.ops.wgan_ext.gradient_norm_penalty(torch.ones(0, 2), 1.0, False, 1.0, 1e-12)
    with pytest.raises(RuntimeError, match="inv_scale"):
        torch.ops.wgan_ext.gradient_norm_penalty(torch.ones(3, 2), 1.0, False, 0.0, 1e-12)
    with pytest.raises(RuntimeError, match="shapes differ"):
        torch.ops.wgan_ext.interpolate(torch.ones(3, 2), torch.ones(3, 3), torch.ones(3))


def test_check_alpha_false_skips_only_the_value_check():
    real, fake = torch.randn(4, 2), torch.randn(4, 2)
    bad = torch.tensor([0.1, 1.5, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        wgan_ext.gradient_penalty(_critic, real, fake, alpha=bad)
    wgan_ext.gradient_penalty(_critic, real, fake, alpha=bad, check_alpha=False)  # trusted: no host read
    with pytest.raises(ValueError, match=r"alpha must have shape \(4,\)"):  # shape checks stay (no host read)
        wgan_ext.gradient_penalty(_critic, real, fake, alpha=torch.rand(3), check_alpha=False)
    alpha = torch.rand(4)
    assert torch.equal(wgan_ext.gradient_penalty(_critic, real, fake, alpha=alpha),
                       wgan_ext.gradient_penalty(_critic, real, fake, alpha=alpha, check_alpha=False))
