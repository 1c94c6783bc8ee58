"""The Lipschitz constraints on the critic, one file each (the interface: base.py).

    CONSTRAINTS                       --lipschitz name -> Constraint class
    constraint_class(name)            the class for a name (ConfigError naming the choices for an unknown one)

A new constraint is a subclass of Constraint in its own file, registered here, with its options in config.py.
"""

from __future__ import annotations

from ..errors import ConfigError
from .base import Constraint
from .clip import WeightClipping
from .gp import GradientPenalty
from .sn import SpectralNormalization

CONSTRAINTS: dict[str, type[Constraint]] = {cls.name: cls for cls in (WeightClipping, GradientPenalty,
                                                                      SpectralNormalization)}


def constraint_class(name: str) -> type[Constraint]:
    try:
        return CONSTRAINTS[name]
    except KeyError:
        raise ConfigError(f"--lipschitz: {name!r} is not one of {', '.join(CONSTRAINTS)}") from None


__all__ = ["CONSTRAINTS", "Constraint", "GradientPenalty", "SpectralNormalization", "WeightClipping",
           "constraint_class"]
