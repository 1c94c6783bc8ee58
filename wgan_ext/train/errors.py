"""The trainer's own exceptions (kept apart so that every module of the trainer can raise them without importing
the others)."""

from __future__ import annotations


class ConfigError(ValueError):
    """An invalid option value, found before training starts; the message names the option, what was given and what
    is allowed."""


class TrainingDiverged(RuntimeError):
    """A loss or a parameter became NaN/Inf; the last good checkpoint is kept."""


class Stopped(Exception):
    """Training stopped early on request (SIGTERM, Ctrl-C: Trainer.request_stop) after writing a checkpoint."""

    def __init__(self, reason: str, iteration: int, checkpoint: str | None):
        super().__init__(f"{reason}: stopped after generator iteration {iteration}")
        self.reason, self.iteration, self.checkpoint = reason, iteration, checkpoint
