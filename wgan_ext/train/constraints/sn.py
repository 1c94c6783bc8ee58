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
    # Each layer's sigma = 1 bounds the ReLU MLP's slope by 1 but leaves it far below: measured on a trained ring
    # critic, gradient norms 0.09-0.13, max 0.21 (gp: 0.89), too flat to tell 0.01-wide modes apart. MaxMin keeps
    # the gradient's norm through each activation (Anil et al. 2019). Ring, 6,000 iterations, seed 0: 63 % HQ
    # against 9.5 % with ReLU; grid 24 modes / 6.4 % against 21 / 2.3 % (docs/evaluation.md).
    mlp_critic_activation = "maxmin"

    @classmethod
    def default_beta1(cls, toy: bool) -> float:
        # Toy data: Adam without momentum (beta1 0, the WGAN-GP paper's value; its scripts use 0.5). With 0.5 the
        # sn generator kept its samples between the grid's modes until the rate had decayed; with 0 it sharpens while
        # it trains. 6,000 iterations, 5 seeds: grid 25 modes / 70.2 % HQ against 22.2 / 8.7 %, ring 84.3 % against
        # 66.1 % (benchmarks/results/quality-sn-6000-cpu.md). Images: no measurement, the WGAN-GP scripts' 0.5.
        return 0.0 if toy else 0.5

    def __init__(self, config, critic, device):
        super().__init__(config, critic, device)
        self.group = apply_spectral_norm(critic, n_power_iterations=config.sn_power_iterations)

    def vectors(self):
        return {"sigma": self.group.sigma_tensor()}
