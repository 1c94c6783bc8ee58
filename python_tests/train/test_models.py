"""The WGAN models: shapes, no sigmoid, options, the DCGAN init, and that the drop-ins compose with them."""

import pytest
import torch
from torch import nn

import wgan_ext
from wgan_ext.train.models import DCGANCritic, DCGANGenerator, MaxMin, MLPCritic, MLPGenerator, dcgan_init_


@pytest.mark.parametrize("image_size", [32, 64])
@pytest.mark.parametrize("n_extra_layers", [0, 1])
@pytest.mark.parametrize("nc", [1, 3])
def test_dcgan_shapes(image_size, n_extra_layers, nc):
    g = DCGANGenerator(image_size, nz=16, nc=nc, ngf=8, n_extra_layers=n_extra_layers)
    x = g(torch.randn(5, 16))
    assert x.shape == (5, nc, image_size, image_size) and x.abs().max() <= 1
    for norm in ("batch", "layer", "none"):
        d = DCGANCritic(image_size, nc=nc, ndf=8, n_extra_layers=n_extra_layers, norm=norm)
        assert d(x).shape == (5,)


def test_mlp_shapes_and_toy_outputs_are_linear():
    g, d = MLPGenerator(2, 2), MLPCritic(2)
    assert len([m for m in g.modules() if isinstance(m, nn.Linear)]) == 4  # 3 hidden x 512 + output
    with torch.no_grad():
        g.net[-1].bias.fill_(5.0)  # a linear toy output can leave [-1, 1]
    assert g(torch.randn(7, 2)).min() > 1 and d(torch.randn(7, 2)).shape == (7,)
    gi = MLPGenerator(8, (1, 4, 4), depth=4)
    assert gi(torch.randn(3, 8)).shape == (3, 1, 4, 4) and gi(torch.randn(3, 8)).abs().max() <= 1
    assert MLPCritic((1, 4, 4), depth=4)(torch.randn(3, 1, 4, 4)).shape == (3,)


def test_critics_have_no_sigmoid():
    for critic in (MLPCritic(2), DCGANCritic(32, nc=1, ndf=8)):
        assert not any(isinstance(m, nn.Sigmoid) for m in critic.modules())
    d = MLPCritic(2)
    with torch.no_grad():
        d.net[-1].bias.fill_(10.0)
    assert d(torch.zeros(3, 2)).min() > 1  # an unbounded score


def test_no_batchnorm_options():
    assert not any(isinstance(m, nn.BatchNorm2d) for m in DCGANGenerator(32, batchnorm=False).modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in DCGANCritic(32, norm="layer").modules())
    assert any(isinstance(m, nn.LayerNorm) for m in DCGANCritic(32, norm="layer").modules())


@pytest.mark.parametrize("build,match", [
    (lambda: DCGANGenerator(48), "32 or 64 px"),
    (lambda: DCGANCritic(128), "32 or 64 px"),
    (lambda: DCGANCritic(64, norm="group"), "norm must be"),
    (lambda: DCGANGenerator(64, n_extra_layers=-1), "n_extra_layers"),
])
def test_bad_options(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_dcgan_init_statistics():
    torch.manual_seed(0)
    d = dcgan_init_(DCGANCritic(64, ndf=32))
    w = torch.cat([m.weight.flatten() for m in d.modules() if isinstance(m, nn.Conv2d)])
    assert abs(w.mean().item()) < 1e-3 and w.std().item() == pytest.approx(0.02, rel=0.02)
    bn = torch.cat([m.weight for m in d.modules() if isinstance(m, nn.BatchNorm2d)])
    assert bn.mean().item() == pytest.approx(1.0, abs=0.005) and bn.std().item() == pytest.approx(0.02, rel=0.15)


def test_the_drop_ins_compose_with_the_models():
    torch.manual_seed(0)
    g, d = dcgan_init_(DCGANGenerator(32, nz=8, nc=1, ngf=8)), dcgan_init_(DCGANCritic(32, nc=1, ndf=8, norm="none"))
    real, fake = torch.rand(4, 1, 32, 32) * 2 - 1, g(torch.randn(4, 8)).detach()
    loss = d(fake).mean() - d(real).mean() + wgan_ext.gradient_penalty(d, real, fake)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in d.parameters())
    wgan_ext.clip_(d.parameters(), 0.01)
    assert max(p.abs().max().item() for p in d.parameters()) <= 0.01
    sn_critic = DCGANCritic(32, nc=1, ndf=8, norm="none")
    group = wgan_ext.apply_spectral_norm(sn_critic)
    assert len(group.layers) == 4 and sn_critic(real).shape == (4,)


def test_maxmin_sorts_pairs_and_keeps_the_gradient_norm():
    x = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
    y = MaxMin()(x)
    a, b = x[:, :4], x[:, 4:]
    expected = torch.cat([torch.where(a >= b, a, b), torch.where(a >= b, b, a)], 1)
    assert torch.equal(y, expected)
    g = torch.randn_like(y)
    (dx,) = torch.autograd.grad(y, x, g)
    torch.testing.assert_close(dx.norm(dim=1), g.norm(dim=1))  # a per-sample permutation: norm kept


def test_mlp_critic_activation():
    d = MLPCritic(2, hidden=8, activation="maxmin")
    assert sum(isinstance(m, MaxMin) for m in d.modules()) == 3 and not any(isinstance(m, nn.ReLU)
                                                                            for m in d.modules())
    assert d(torch.randn(5, 2)).shape == (5,)
    with pytest.raises(ValueError, match="must be even"):
        MLPCritic(2, hidden=7, activation="maxmin")
    with pytest.raises(ValueError, match="activation must be one of relu, maxmin"):
        MLPCritic(2, activation="gelu")
