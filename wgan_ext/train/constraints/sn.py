"""``--lipschitz sn``: spectral normalization (Miyato et al. 2018) of every critic layer.

``wgan_ext.apply_spectral_norm`` divides each Linear / Conv / ConvTranspose weight by its largest singular value,
estimated by one batched power iteration over all layers per training forward; u and v are buffers of the critic
(saved with it). Logs the layers' sigma (mean, min, max).
"""

from __future__ import annotations

from ...spectral_norm import apply_spectral_norm
from .base import Constraint


class SpectralNormalization(Constraint):
    name = "sn"
    summary = "sn (spectral normalization)"
    resnet_ngf = 256      # SN-GAN's CIFAR-10 ResNet (Table 4)
    resnet_pool = "sum"   # SN-GAN's critic sums over the last feature map

    def __init__(self, config, critic, device):
        super().__init__(config, critic, device)
        self.group = apply_spectral_norm(critic, n_power_iterations=config.sn_power_iterations)

    def vectors(self):
        return {"sigma": self.group.sigma_tensor()}
