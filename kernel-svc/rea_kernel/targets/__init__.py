"""The targets kernels can be written for, by name. A new target (``triton`` for GPUs) is a
sibling module with a :class:`Target` subclass, added to :data:`TARGETS`."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from rea_kernel.targets._base import BuildFailure, SearchSpace, Target, TargetUnavailableError
from rea_kernel.targets.cpu import CpuTarget

TARGETS: Mapping[str, Target] = MappingProxyType({target.name: target for target in (CpuTarget(),)})


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise KeyError(f"unknown target {name!r}; known: {', '.join(TARGETS)}") from None


__all__ = [
    "TARGETS",
    "BuildFailure",
    "CpuTarget",
    "SearchSpace",
    "Target",
    "TargetUnavailableError",
    "get_target",
]
