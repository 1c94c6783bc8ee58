"""The WGAN trainer: the application built on the library (wgan_ext's drop-ins), apart from it.

    python -m wgan_ext.train ... / wgan-train ...        the command line (cli.py; wgan-train --help)
    Trainer(resolve(TrainConfig(...))).train()           the same in Python (trainer.py)

Modules: cli (wgan-train), trainer (the loop), constraints/ (clip, gp, sn: one file each), config (options and
per-mode defaults), optimizers, data (toy distributions, images, resumable batches), models (MLP, DCGAN),
checkpoint (atomic writes, weights_only loads), distributed (torchrun), plots, generate (wgan-generate).
Nothing in the library (wgan_ext's top-level modules) imports this package.
"""

from .checkpoint import CheckpointError, load_checkpoint
from .cli import build_parser, config_from_args, main
from .config import TrainConfig, from_dict, resolve
from .constraints import CONSTRAINTS, Constraint
from .data import DataError
from .distributed import pick_device
from .errors import ConfigError, Stopped, TrainingDiverged
from .trainer import Trainer

__all__ = ["CONSTRAINTS", "CheckpointError", "ConfigError", "Constraint", "DataError", "Stopped", "TrainConfig",
           "Trainer", "TrainingDiverged", "build_parser", "config_from_args", "from_dict", "load_checkpoint", "main",
           "pick_device", "resolve"]
