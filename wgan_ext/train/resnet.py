"""The ResNet generators and critics of WGAN-GP (Gulrajani et al. 2017, CIFAR-10, 32 px) and SN-GAN (Miyato et al.
2018, Appendix B: CIFAR-10 at 32 px, STL-10 at 48 px), written from the papers' tables.

32 px (WGAN-GP "ResNet" and SN-GAN Table 4; they differ only in the widths and the critic's final pooling):

    generator                                           critic
    z -> Linear(nz, 4*4*ngf)                            OptimizedBlock(nc -> ndf), down to 16x16
    GBlock(ngf -> ngf), up to 8x8                       DBlock(ndf -> ndf), down to 8x8
    GBlock(ngf -> ngf), up to 16x16                     DBlock(ndf -> ndf)
    GBlock(ngf -> ngf), up to 32x32                     DBlock(ndf -> ndf)
    BN, ReLU, Conv3x3(ngf -> nc), tanh                  ReLU, pool over 8x8, Linear(ndf -> 1)

48 px (SN-GAN Table 5, STL-10), with base widths ngf, ndf (the paper's 64):

    generator                                           critic
    z -> Linear(nz, 6*6*8ngf)                           OptimizedBlock(nc -> ndf), down to 24x24
    GBlock(8ngf -> 4ngf), up to 12x12                   DBlock(ndf -> 2ndf), down to 12x12
    GBlock(4ngf -> 2ngf), up to 24x24                   DBlock(2ndf -> 4ndf), down to 6x6
    GBlock(2ngf -> ngf), up to 48x48                    DBlock(4ndf -> 8ndf), down to 3x3
    BN, ReLU, Conv3x3(ngf -> nc), tanh                  DBlock(8ndf -> 16ndf); ReLU, pool, Linear(16ndf -> 1)

Blocks (both papers):
    GBlock     BN, ReLU, upsample x2 (nearest), Conv3x3, BN, ReLU, Conv3x3; shortcut: upsample, Conv1x1
    DBlock     [norm], ReLU, Conv3x3, [norm], ReLU, Conv3x3, [avgpool 2]; shortcut: Conv1x1, [avgpool 2] when the
               block downsamples or changes the width, else the identity
    Optimized  Conv3x3, ReLU, Conv3x3, avgpool 2; shortcut: avgpool 2, Conv1x1 (the critic's first block: no ReLU
               before its first conv, which would act on the raw image)

Per mode (as the papers): the critic's final pooling is a mean (WGAN-GP) or a sum (SN-GAN, ``pool="sum"``); the
critic has no normalization for gp (the penalty is per sample) and sn (spectral normalization is applied to every
layer by the trainer); for clip the trainer's --critic-norm applies (BatchNorm, as the WGAN paper's critics).
Initialization as SN-GAN's code: Xavier-uniform, gain sqrt(2) for the 3x3 convolutions of the blocks and 1 for
shortcuts, the first linear layer and the output layers; biases zero.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layers import norm_layer

IMAGE_SIZES = (32, 48)


class GBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, 1, 1)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1)
        self.shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(F.relu(self.bn1(x)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h))))
        return h + self.shortcut(F.interpolate(x, scale_factor=2, mode="nearest"))


class DBlock(nn.Module):
    def __init__(self, cin: int, cout: int, spatial: int, down: bool, norm: str = "none"):
        super().__init__()
        self.down = down
        self.norm1, self.conv1 = norm_layer(norm, cin, spatial), nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm2, self.conv2 = norm_layer(norm, cout, spatial), nn.Conv2d(cout, cout, 3, 1, 1)
        self.shortcut = nn.Conv2d(cin, cout, 1) if (down or cin != cout) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.relu(self.norm1(x)))
        h = self.conv2(F.relu(self.norm2(h)))
        s = self.shortcut(x)
        if self.down:
            h, s = F.avg_pool2d(h, 2), F.avg_pool2d(s, 2)
        return h + s


class OptimizedBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(cin, cout, 3, 1, 1), nn.Conv2d(cout, cout, 3, 1, 1)
        self.shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.avg_pool2d(self.conv2(F.relu(self.conv1(x))), 2)
        return h + self.shortcut(F.avg_pool2d(x, 2))


def _check(image_size: int) -> None:
    if image_size not in IMAGE_SIZES:
        raise ValueError(f"the ResNet models make {' or '.join(map(str, IMAGE_SIZES))} px images, got image_size="
                         f"{image_size}")


class ResNetGenerator(nn.Module):
    """z (N, nz) -> images (N, nc, S, S) in [-1, 1], S = 32 (WGAN-GP / SN-GAN CIFAR-10) or 48 (SN-GAN STL-10)."""

    def __init__(self, image_size: int = 32, nz: int = 128, nc: int = 3, ngf: int = 128):
        super().__init__()
        _check(image_size)
        self.nz = nz
        if image_size == 32:
            self.start, widths = 4, [ngf] * 4
        else:
            self.start, widths = 6, [8 * ngf, 4 * ngf, 2 * ngf, ngf]
        self.width = widths[0]
        self.linear = nn.Linear(nz, self.start * self.start * widths[0])
        self.blocks = nn.Sequential(*[GBlock(a, b) for a, b in zip(widths, widths[1:])])
        self.bn = nn.BatchNorm2d(widths[-1])
        self.out = nn.Conv2d(widths[-1], nc, 3, 1, 1)
        _init_(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.linear(z.reshape(z.shape[0], self.nz)).view(z.shape[0], self.width, self.start, self.start)
        return torch.tanh(self.out(F.relu(self.bn(self.blocks(h)))))


class ResNetCritic(nn.Module):
    """images (N, nc, S, S) -> scores (N,): S = 32 or 48 (see the module's table). `pool`: "mean" (WGAN-GP) or
    "sum" (SN-GAN) over the last feature map; `norm` in the residual blocks: "none", "batch" or "layer"."""

    def __init__(self, image_size: int = 32, nc: int = 3, ndf: int = 128, norm: str = "none", pool: str = "mean"):
        super().__init__()
        _check(image_size)
        if pool not in ("mean", "sum"):
            raise ValueError(f"pool must be 'mean' or 'sum', got {pool!r}")
        norm_layer(norm, 1, 1)  # validates `norm` before building anything
        self.pool = pool
        if image_size == 32:
            spec = [(ndf, ndf, 16, True), (ndf, ndf, 8, False), (ndf, ndf, 8, False)]
        else:
            spec = [(ndf, 2 * ndf, 24, True), (2 * ndf, 4 * ndf, 12, True), (4 * ndf, 8 * ndf, 6, True),
                    (8 * ndf, 16 * ndf, 3, False)]
        self.first = OptimizedBlock(nc, ndf)
        self.blocks = nn.Sequential(*[DBlock(a, b, s, d, norm) for a, b, s, d in spec])
        self.linear = nn.Linear(spec[-1][1], 1)
        _init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.blocks(self.first(x)))
        h = h.sum((2, 3)) if self.pool == "sum" else h.mean((2, 3))
        return self.linear(h).reshape(x.shape[0])


def _init_(model: nn.Module) -> None:
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            block_conv = isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and name.split(".")[-1] in (
                "conv1", "conv2")
            nn.init.xavier_uniform_(m.weight, gain=math.sqrt(2) if block_conv else 1.0)
            nn.init.zeros_(m.bias)
