"""Generators and critics of the WGAN papers: MLPs (toy data; the WGAN paper's 4 x 512 MLP for images) and DCGAN
for 32 and 64 px images, with the DCGAN initialization. Critics end in a linear score: no sigmoid.

    MLPGenerator(nz, out_shape)                   MLPCritic(in_shape, activation="relu" | "maxmin")
    DCGANGenerator(image_size, nz, nc, ngf, ...)  DCGANCritic(image_size, nc, ndf, norm="batch"|"layer"|"none", ...)
    dcgan_init_(model)                            conv and linear weights ~ N(0, 0.02), norm weights ~ N(1, 0.02)
    build_models(config, shape)                   (generator, critic) for a resolved TrainConfig and a sample shape
    build_generator(config, shape)                the generator alone (wgan-generate)
The ResNets of WGAN-GP and SN-GAN are in resnet.py.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .layers import norm_layer
from .resnet import ResNetCritic, ResNetGenerator

IMAGE_SIZES = (32, 64)
CRITIC_ACTIVATIONS = ("relu", "maxmin")


def _shape(shape) -> tuple[int, ...]:
    return (shape,) if isinstance(shape, int) else tuple(shape)


class MaxMin(nn.Module):
    """GroupSort with groups of 2 (Anil et al. 2019, "Sorting out Lipschitz function approximation"): the features
    split in two halves a, b -> (max(a, b), min(a, b)). Per sample a permutation of its inputs, so it keeps the
    gradient's norm, where ReLU zeroes about half of it: with norm-bounded layers (spectral norm, clipping) the
    critic can then reach slope 1 instead of a fraction of it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return torch.cat((torch.maximum(a, b), torch.minimum(a, b)), dim=1)


def _mlp(dims: list[int], activation: str = "relu") -> list[nn.Module]:
    if activation not in CRITIC_ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(CRITIC_ACTIVATIONS)}, got {activation!r}")
    if activation == "maxmin" and any(d % 2 for d in dims[1:-1]):
        raise ValueError(f"maxmin pairs the hidden units: their number must be even, got {dims[1:-1]}")
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(nn.ReLU() if activation == "relu" else MaxMin())
    return layers


class MLPGenerator(nn.Module):
    """z (N, nz) -> samples (N, *out_shape): `depth` hidden ReLU layers of `hidden` units (WGAN-GP toy: 3 x 512;
    WGAN paper images: 4 x 512). Image outputs go through tanh (data in [-1, 1]); toy outputs are linear."""

    def __init__(self, nz: int, out_shape, hidden: int = 512, depth: int = 3, tanh: bool | None = None):
        super().__init__()
        self.nz, self.out_shape = nz, _shape(out_shape)
        self.net = nn.Sequential(*_mlp([nz] + [hidden] * depth + [math.prod(self.out_shape)]))
        self.tanh = len(self.out_shape) > 1 if tanh is None else tanh

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.net(z.reshape(z.shape[0], -1)).reshape(z.shape[0], *self.out_shape)
        return torch.tanh(x) if self.tanh else x


class MLPCritic(nn.Module):
    """samples (N, *in_shape) -> scores (N,): `depth` hidden layers of `hidden` units with ReLU (or MaxMin, see
    MaxMin), linear output."""

    def __init__(self, in_shape, hidden: int = 512, depth: int = 3, activation: str = "relu"):
        super().__init__()
        self.net = nn.Sequential(*_mlp([math.prod(_shape(in_shape))] + [hidden] * depth + [1], activation))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(x.shape[0], -1)).squeeze(1)


def _check_image_size(image_size: int) -> None:
    if image_size not in IMAGE_SIZES:
        raise ValueError(f"DCGAN models make {' or '.join(map(str, IMAGE_SIZES))} px images, got image_size="
                         f"{image_size}")


class DCGANGenerator(nn.Module):
    """z (N, nz) -> images (N, nc, S, S) in [-1, 1], S = 32 or 64: a 4x4 transposed-conv start, then stride-2
    transposed convs halving the channels; BatchNorm + ReLU between (batchnorm=False: the official --noBN), tanh out."""

    def __init__(self, image_size: int = 64, nz: int = 100, nc: int = 3, ngf: int = 64, n_extra_layers: int = 0,
                 batchnorm: bool = True):
        super().__init__()
        _check_image_size(image_size)
        if n_extra_layers < 0:
            raise ValueError(f"n_extra_layers must be >= 0, got {n_extra_layers}")
        self.nz = nz
        middle = int(math.log2(image_size)) - 3  # 4x4 -> 8 -> ... -> image_size / 2, then the output layer
        ch = ngf * 2 ** middle
        bn = (lambda c: nn.BatchNorm2d(c)) if batchnorm else (lambda c: nn.Identity())
        layers = [nn.ConvTranspose2d(nz, ch, 4, 1, 0, bias=False), bn(ch), nn.ReLU(True)]
        for _ in range(middle):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), bn(ch // 2), nn.ReLU(True)]
            ch //= 2
        for _ in range(n_extra_layers):
            layers += [nn.Conv2d(ch, ch, 3, 1, 1, bias=False), bn(ch), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(ch, nc, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z.reshape(z.shape[0], self.nz, 1, 1))


class DCGANCritic(nn.Module):
    """images (N, nc, S, S) -> scores (N,), S = 32 or 64: stride-2 convs doubling the channels with LeakyReLU(0.2);
    a normalization after all but the first ("batch" as DCGAN and the official WGAN code, "layer" for WGAN-GP,
    "none"); a final 4x4 conv to one score. No sigmoid: the critic's output is a score, not a probability."""

    def __init__(self, image_size: int = 64, nc: int = 3, ndf: int = 64, n_extra_layers: int = 0,
                 norm: str = "batch"):
        super().__init__()
        _check_image_size(image_size)
        if n_extra_layers < 0:
            raise ValueError(f"n_extra_layers must be >= 0, got {n_extra_layers}")
        norm_layer(norm, 1, 1)  # validates `norm` before building anything
        size, ch = image_size // 2, ndf
        layers = [nn.Conv2d(nc, ch, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
        for _ in range(n_extra_layers):
            layers += [nn.Conv2d(ch, ch, 3, 1, 1, bias=False), norm_layer(norm, ch, size),
                       nn.LeakyReLU(0.2, inplace=True)]
        while size > 4:
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False), norm_layer(norm, ch * 2, size // 2),
                       nn.LeakyReLU(0.2, inplace=True)]
            ch, size = ch * 2, size // 2
        layers += [nn.Conv2d(ch, 1, 4, 1, 0, bias=False)]
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).reshape(x.shape[0])


def dcgan_init_(model: nn.Module) -> nn.Module:
    """The DCGAN initialization (as in the official WGAN code): conv and linear weights ~ N(0, 0.02), BatchNorm and
    LayerNorm weights ~ N(1, 0.02), biases 0. In place; returns the model."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                              nn.ConvTranspose3d, nn.Linear)):
                m.weight.normal_(0.0, 0.02)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)) and m.weight is not None:
                m.weight.normal_(1.0, 0.02)
                m.bias.zero_()
    return model


def build_generator(c, shape: tuple[int, ...]) -> nn.Module:
    """The generator for a resolved TrainConfig `c` and a data sample shape (torch's default initialization)."""
    if c.model == "mlp":
        return MLPGenerator(c.nz, shape, hidden=c.hidden, depth=c.depth)
    if c.model == "resnet":
        return ResNetGenerator(c.image_size, nz=c.nz, nc=shape[0], ngf=c.ngf)
    return DCGANGenerator(c.image_size, nz=c.nz, nc=shape[0], ngf=c.ngf, n_extra_layers=c.n_extra_layers,
                          batchnorm=c.g_batchnorm)


def build_models(c, shape: tuple[int, ...]) -> tuple[nn.Module, nn.Module]:
    """Generator and critic for a resolved TrainConfig `c` and a data sample shape; DCGAN models get the DCGAN
    initialization (after both are built: the order of the random draws is part of what a seed reproduces)."""
    g = build_generator(c, shape)
    if c.model == "mlp":
        return g, MLPCritic(shape, hidden=c.hidden, depth=c.depth, activation=c.critic_activation)
    if c.model == "resnet":  # initialized as SN-GAN's code (resnet.py)
        from .constraints import constraint_class

        return g, ResNetCritic(c.image_size, nc=shape[0], ndf=c.ndf, norm=c.critic_norm,
                               pool=constraint_class(c.lipschitz).resnet_pool)
    d = DCGANCritic(c.image_size, nc=shape[0], ndf=c.ndf, n_extra_layers=c.n_extra_layers, norm=c.critic_norm)
    return dcgan_init_(g), dcgan_init_(d)
