"""Pieces the DCGAN and ResNet models share."""

from __future__ import annotations

from torch import nn

NORMS = ("batch", "layer", "none")


def norm_layer(kind: str, channels: int, spatial: int) -> nn.Module:
    """A critic's normalization of (N, channels, spatial, spatial) features: "batch" (BatchNorm), "layer" (over
    (C, H, W) per sample, as WGAN-GP's 64 px critic: it keeps the penalty per sample) or "none"."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.LayerNorm([channels, spatial, spatial])
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'batch', 'layer' or 'none', got {kind!r}")
