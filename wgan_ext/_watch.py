"""Whether any module tree may have changed: a count of every parameter or submodule registration on any module
(torch's global registration hooks, installed by the first ``watch()``). Code that caches something it read from a
module tree (a ``Clipper``'s parameters, the gradient penalty's BatchNorm layers) reads the tree again only when
``REGISTRATIONS[0]`` moved since; the steady state of a training loop registers nothing.
"""

from __future__ import annotations

REGISTRATIONS = [0]
_HOOKS: list = []


def _registered(*_args):
    REGISTRATIONS[0] += 1


def watch() -> None:
    """Start counting (once per process; later calls do nothing)."""
    if not _HOOKS:
        from torch.nn.modules import module as module_mod
        _HOOKS.append(module_mod.register_module_parameter_registration_hook(_registered))
        _HOOKS.append(module_mod.register_module_module_registration_hook(_registered))
