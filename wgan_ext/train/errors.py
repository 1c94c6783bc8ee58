"""The trainer's own exceptions (kept apart so that every module of the trainer can raise them without importing
the others)."""

from __future__ import annotations


class ConfigError(ValueError):
    """An invalid option value, found before training starts; the message names the option, what was given and what
    is allowed."""


class TrainingDiverged(RuntimeError):
    """A loss or a parameter became NaN/Inf; the last good checkpoint is kept."""
