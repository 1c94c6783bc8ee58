"""The interface of a Lipschitz constraint on the critic: everything the trainer does differently per mode.

A constraint is built once per run from the resolved config and the critic, after the models are on the training
device. The trainer then calls, in this order:

    critic_optimizer(params)             the critic's optimizer (a constraint may fuse itself into it)
    extra_inputs(batch, rng, explicit)   random inputs of a critic step beyond the data and the noise, drawn
                                         outside the step (so a CUDA graph can replay it); [] for most
    before_critic_step()                 at the start of each critic update
    critic_loss(critic, real, fake, extra, rng) -> (term or None, outputs)
                                         what the constraint adds to the critic loss, and tensors to log (0-dim:
                                         averaged over processes; 1-dim per sample: gathered)
    metrics(outputs) -> dict             0-dim device tensors logged each generator iteration (no host sync)
    vectors() -> dict                    1-dim device tensors logged as <name>_mean / _min / _max
    state_dict() / load_state_dict(s)    what it saves in checkpoints beyond the models and optimizers

Class-level, before any model exists (the config layer's per-mode defaults and checks):

    name, summary                        the --lipschitz value and its one-line help
    default_optimizer, default_critic_norm, default_lr(toy), default_lr_decay(toy), default_beta1(toy),
    mlp_critic_activation
    validate(config)                     raise ConfigError for options this mode cannot run with
    graphs_unsupported(config)           why --cuda-graphs cannot capture this mode's steps, or None
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ..optimizers import make_optimizer


class Constraint:
    name: ClassVar[str]
    summary: ClassVar[str]
    default_optimizer: ClassVar[str] = "adam"
    default_critic_norm: ClassVar[str] = "none"
    resnet_ngf: ClassVar[int] = 128      # the 32 px ResNet generator's width (WGAN-GP's)
    resnet_pool: ClassVar[str] = "mean"  # the ResNet critic's final pooling (WGAN-GP's)
    mlp_critic_activation: ClassVar[str] = "relu"  # the MLP critic's (models.CRITIC_ACTIVATIONS)

    # ----------------------------------------------------------------------------------- config-level (classmethods)
    @classmethod
    def default_lr(cls, toy: bool) -> float:
        # toy data: a 3x higher rate decayed linearly to 0 (measured on the ring benchmark, 2,000 iterations: 87-89 %
        # high-quality samples against 58 % with 1e-4 constant; docs/evaluation.md)
        return 3e-4 if toy else 1e-4

    @classmethod
    def default_lr_decay(cls, toy: bool) -> str:
        return "linear" if toy else "none"

    @classmethod
    def default_beta1(cls, toy: bool) -> float:
        # Adam's beta1 where the optimizer is Adam: 0.5, as the official WGAN-GP scripts
        return 0.5

    @classmethod
    def validate(cls, c) -> None:
        """Raise ConfigError when an option of the resolved config `c` does not work with this mode."""

    @classmethod
    def graphs_unsupported(cls, c) -> str | None:
        """Why --cuda-graphs cannot capture this mode's steps with config `c` (None: it can)."""
        return None

    # ----------------------------------------------------------------------------------------------- per run
    scaler = None  # the critic's GradScaler under --precision fp16 (set by the trainer), for a gradient penalty

    def __init__(self, config, critic: nn.Module, device: torch.device):
        self.config = config
        self.critic = critic
        self.device = device

    def critic_optimizer(self, params) -> torch.optim.Optimizer:
        return make_optimizer(self.config, params, self.config.lr_d)

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Called with the critic's optimizer once it exists."""

    def extra_inputs(self, batch_size: int, rng: torch.Generator, explicit: bool) -> list[torch.Tensor]:
        """Random inputs of one critic step beyond the data and the noise, drawn from `rng` for the whole (global)
        batch. `explicit`: the step must get them as inputs (several processes, a CUDA graph); otherwise the step
        may draw them itself, in the same order."""
        return []

    def before_critic_step(self) -> None:
        pass

    def critic_loss(self, critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, extra: list[torch.Tensor],
                    rng: torch.Generator) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        return None, {}

    def metrics(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {}

    def vectors(self) -> dict[str, torch.Tensor]:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            raise ValueError(f"the {self.name} constraint keeps no state, but the checkpoint has {sorted(state)}")
