"""The configured optimizer (``--optimizer``, ``--lr-*``, ``--beta1/2``) for the generator and the critic."""

from __future__ import annotations

import torch


def make_optimizer(c, params, lr: float) -> torch.optim.Optimizer:
    """torch's RMSprop or Adam as the resolved config `c` asks, at learning rate `lr`."""
    if c.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    return torch.optim.Adam(params, lr=lr, betas=(c.beta1, c.beta2))
