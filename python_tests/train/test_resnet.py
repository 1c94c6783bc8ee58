"""The ResNet models (wgan_ext/train/resnet.py) against the papers' tables: shapes and widths at 32 and 48 px, the
blocks' layout, each mode's pooling and normalization, SN on every critic layer, the per-mode default widths."""

import pytest
import torch
from torch import nn

from wgan_ext.train import Trainer, TrainConfig, resolve
from wgan_ext.train.resnet import DBlock, GBlock, OptimizedBlock, ResNetCritic, ResNetGenerator


def test_32px_layout():
    g, d = ResNetGenerator(32, nz=128, nc=3, ngf=128), ResNetCritic(32, nc=3, ndf=128)
    assert g.linear.out_features == 4 * 4 * 128 and len(g.blocks) == 3 and all(isinstance(b, GBlock) for b in g.blocks)
    assert isinstance(d.first, OptimizedBlock) and len(d.blocks) == 3
    assert [b.down for b in d.blocks] == [True, False, False] and d.linear.in_features == 128
    x = g(torch.randn(2, 128))
    assert x.shape == (2, 3, 32, 32) and x.abs().max() <= 1
    assert d(x).shape == (2,)
    # feature maps: 16 after the first block, 8 after the second, as WGAN-GP's and SN-GAN's CIFAR-10 critics
    h = d.first(x)
    assert h.shape[-1] == 16 and d.blocks[0](h).shape[-1] == 8


def test_48px_layout():
    g, d = ResNetGenerator(48, nz=128, nc=3, ngf=64), ResNetCritic(48, nc=3, ndf=64, pool="sum")
    assert g.linear.out_features == 6 * 6 * 512
    assert [b.conv1.out_channels for b in g.blocks] == [256, 128, 64]
    assert [b.conv2.out_channels for b in d.blocks] == [128, 256, 512, 1024] and d.linear.in_features == 1024
    assert [b.down for b in d.blocks] == [True, True, True, False]
    assert d(g(torch.randn(2, 128))).shape == (2,)


def test_pooling_sum_is_the_mean_times_the_area():
    torch.manual_seed(0)
    a = ResNetCritic(32, nc=1, ndf=8, pool="mean")
    b = ResNetCritic(32, nc=1, ndf=8, pool="sum")
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 1, 32, 32)
    feats = torch.relu(a.blocks(a.first(x)))
    torch.testing.assert_close(b(x) - b.linear.bias, (a(x) - a.linear.bias) * feats.shape[-1] ** 2)


def test_bad_arguments():
    with pytest.raises(ValueError, match="32 or 48 px"):
        ResNetGenerator(64)
    with pytest.raises(ValueError, match="pool must be"):
        ResNetCritic(32, pool="max")
    with pytest.raises(ValueError, match="norm must be"):
        ResNetCritic(32, norm="group")
    assert isinstance(DBlock(4, 4, 8, down=False).shortcut, nn.Identity)  # identity where the shape is kept


@pytest.mark.parametrize("mode, norm, ngf, pool", [("gp", "none", 128, "mean"), ("sn", "none", 256, "sum"),
                                                   ("clip", "batch", 128, "mean")])
def test_each_modes_defaults(tmp_path, mode, norm, ngf, pool):
    pytest.importorskip("sklearn")
    c = resolve(TrainConfig(lipschitz=mode, dataset="digits", image_size=32, model="resnet", out=str(tmp_path),
                            batch_size=4, iters=1))
    assert (c.critic_norm, c.ngf, c.ndf) == (norm, ngf, 128)
    t = Trainer(resolve(TrainConfig(lipschitz=mode, dataset="digits", image_size=32, model="resnet", ngf=8, ndf=8,
                                    out=str(tmp_path / "t"), batch_size=4, iters=1)))
    assert t.critic.pool == pool
    has_bn = any(isinstance(m, nn.BatchNorm2d) for m in t.critic.modules())
    assert has_bn == (mode == "clip")  # no BatchNorm in a gp or sn critic
    if mode == "sn":  # SN on every critic layer: every conv (shortcuts included) and the linear head
        layers = [m for m in t.critic.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        assert len(layers) == len(t.constraint.group.layers) == 3 + 3 * 2 + 1 + 1
