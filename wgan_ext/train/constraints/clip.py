"""``--lipschitz clip``: weight clipping, Algorithm 1 of the WGAN paper.

Every critic parameter is clamped to [-c, c] in one fused pass: after each critic update (the paper's order, the
Clipper attached to the optimizer) or at the start of each critic iteration (``--clip-order before``, the official
code's order); with ``--fused-optimizer`` the critic's RMSprop/Adam step clamps in the same pass
(``ClippedRMSprop`` / ``ClippedAdam``). Logs ``clip_saturation``, the fraction of weights at a bound (near 1: the
critic has become a binary function of the signs of its weights).
"""

from __future__ import annotations

import torch

from ...clip import Clipper
from ...optim import ClippedAdam, ClippedRMSprop
from .base import Constraint


class WeightClipping(Constraint):
    name = "clip"
    summary = "clip (weight clipping, WGAN)"
    default_optimizer = "rmsprop"  # the paper: Adam made training unstable
    default_critic_norm = "batch"  # the official code keeps BatchNorm in the DCGAN critic

    @classmethod
    def default_lr(cls, toy: bool) -> float:
        # toy data: 4x the paper's rate, decayed (below). At 5e-5 the decay froze a generator that still had blurred
        # or missing grid modes (6,000 iterations, 5 seeds: grid 17.2 modes / 7.0 % HQ, ring 67.6 %); at 2e-4 grid 21.2
        # / 9.7 %, ring 78.6 % (benchmarks/results/quality-clip-6000-cpu.md)
        return 2e-4 if toy else 5e-5

    @classmethod
    def default_lr_decay(cls, toy: bool) -> str:
        # toy data: decayed linearly to 0, as gp and sn. At a constant rate the ring's HQ share swings between 12 and
        # 66 % from one evaluation to the next and ends wherever the run stops (seed 0, 6,000 iterations: 27 %);
        # decayed it climbs steadily to 72 % (docs/evaluation.md)
        return "linear" if toy else "none"

    @classmethod
    def graphs_unsupported(cls, c) -> str | None:
        if c.fused_optimizer:
            return ("--cuda-graphs with --fused-optimizer: the fused step takes the learning rate and step count as "
                    "host numbers, which a graph would freeze; use the torch optimizer and the Clipper (the default) "
                    "with --cuda-graphs")
        return None

    def __init__(self, config, critic, device):
        super().__init__(config, critic, device)
        self.fused = config.fused_optimizer
        self.clipper = None if self.fused else Clipper(critic, c=config.clip_value, track_saturation=True)

    def critic_optimizer(self, params) -> torch.optim.Optimizer:
        c = self.config
        if not self.fused:
            return super().critic_optimizer(params)
        # the optimizer step and the clamp in one pass; their state_dicts are those of torch's RMSprop / Adam
        if c.optimizer == "rmsprop":
            return ClippedRMSprop(params, lr=c.lr_d, clip_value=c.clip_value)
        return ClippedAdam(params, lr=c.lr_d, betas=(c.beta1, c.beta2), clip_value=c.clip_value)

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        if self.clipper is not None and self.config.clip_order == "after":
            self.clipper.attach(optimizer)

    def before_critic_step(self) -> None:
        if self.clipper is not None and self.config.clip_order == "before":
            self.clipper()

    def metrics(self, outputs):
        if self.clipper is not None and self.clipper.last_counts is not None:
            return {"clip_saturation": self.clipper.saturation_tensor()}
        # the fused step's clamp, or a Clipper not yet called (fp16: the scaler skipped every step so far)
        return {"clip_saturation": self._saturation()}

    def _saturation(self) -> torch.Tensor:
        """Fraction of the critic's weights at a clip bound, counted here, as a 0-dim float64 tensor (no
        synchronization)."""
        params = [p.detach() for p in self.critic.parameters()]
        total = sum(p.numel() for p in params)
        if not total:
            return torch.zeros((), dtype=torch.float64, device=self.device)
        return torch.stack([(p.abs() >= self.config.clip_value).sum() for p in params]).sum().double() / total
