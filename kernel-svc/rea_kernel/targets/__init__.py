"""The targets kernels can be written for, by name: ``cpu`` (C++ with OpenMP, compiled and timed
here) and ``triton`` (GPUs; checked in Triton's interpreter, never timed, where there is none). A
new target is a sibling module with a :class:`Target` subclass, added to :data:`TARGETS`."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from rea_kernel.targets._base import (
    BuildFailure,
    Kernel,
    KernelLoadError,
    SearchSpace,
    Target,
    TargetUnavailableError,
)
from rea_kernel.targets.cpu import CpuTarget
from rea_kernel.targets.triton import TritonTarget

TARGETS: Mapping[str, Target] = MappingProxyType(
    {target.name: target for target in (CpuTarget(), TritonTarget())}
)


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise KeyError(f"unknown target {name!r}; known: {', '.join(TARGETS)}") from None


__all__ = [
    "TARGETS",
    "BuildFailure",
    "CpuTarget",
    "Kernel",
    "KernelLoadError",
    "SearchSpace",
    "Target",
    "TargetUnavailableError",
    "TritonTarget",
    "get_target",
]
