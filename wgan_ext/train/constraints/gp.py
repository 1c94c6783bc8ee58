"""``--lipschitz gp``: the gradient penalty of WGAN-GP (Gulrajani et al. 2017).

The critic loss gains lambda * mean((||grad_x D(x_hat)|| - 1)^2) at x_hat = real + alpha (fake - real), alpha ~
U[0, 1] per sample (``wgan_ext.gradient_penalty``, fused interpolation and norm). Logs the penalty ``gp`` and the
gradient norms' mean, std, min and max.
"""

from __future__ import annotations

import torch

from ...gradient_penalty import gradient_penalty
from ..errors import ConfigError
from .base import Constraint


class GradientPenalty(Constraint):
    name = "gp"
    summary = "gp (gradient penalty, WGAN-GP)"
    default_critic_norm = "layer"  # the WGAN-GP paper's 64 px critic: LayerNorm, no BatchNorm

    @classmethod
    def validate(cls, c) -> None:
        if c.model in ("dcgan", "resnet") and c.critic_norm == "batch":
            raise ConfigError("--critic-norm: 'batch' with --lipschitz gp: BatchNorm mixes the samples of a batch, so "
                              "the penalty is no longer per sample (and double backward through it is slow); use "
                              "--critic-norm layer (the WGAN-GP paper) or none")

    def extra_inputs(self, batch_size, rng, explicit):
        # alpha: drawn here only where it must be an input; otherwise gradient_penalty draws the same values from rng
        if not explicit:
            return []
        return [torch.rand(batch_size, generator=rng, device=rng.device)]

    def critic_loss(self, critic, real, fake, extra, rng):
        c = self.config
        alpha = extra[0] if extra else None
        # the penalty's inner autograd.grad is local to this process and plain (no DDP hooks): only the averaged
        # .grad is shared
        penalty, norms = gradient_penalty(critic, real, fake, weight=c.gp_weight, one_sided=c.gp_one_sided,
                                          alpha=alpha, generator=rng, return_norms=True, scaler=self.scaler,
                                          check_alpha=False)  # torch.rand: in [0, 1); no host read
        return penalty, {"gp": penalty.detach(), "grad_norms": norms}

    def metrics(self, outputs):
        n = outputs["grad_norms"].float()
        return {"gp": outputs["gp"], "grad_norm_mean": n.mean(),
                "grad_norm_std": n.std() if n.numel() > 1 else n.new_zeros(()), "grad_norm_min": n.min(),
                "grad_norm_max": n.max()}
