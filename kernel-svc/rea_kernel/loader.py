"""Registry kernels inside a trainer: find the kernel for each call, build and import it once,
and report what ran.

A job that asked for evolved kernels is handed the registry's entries
(:class:`~rea.kernels.KernelEntry`). :class:`RegistryKernels` keeps those made on this
machine's devices and answers a model's operator calls (through ``rea_workload.ops``): the
call's inputs give its shape, the shape its bucket, and the bucket, dtype and device a registry
key. A kernel is built (in the sandbox, cached by source) and imported the first time its key
is asked for. A key without an entry, or whose kernel will not build here, is answered with
None, and the model runs PyTorch; so is a key whose kernel was not faster than eager PyTorch in
its own evaluation (the registry keeps the fastest kernel found, even one that lost). Either
way the call is counted in :meth:`usage`, with the shape a person would search kernels for.

A trainer asks for a forward operator in evaluation and inference, and in training only
together with its backward operator (``rea_workload.ops`` says which it has): :meth:`find`
answers a set of calls with all their kernels or with none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from rea.kernels import KernelEntry, KernelUse, registry_key
from rea_kernel.operators import OPERATORS, Attribute, dtype_name
from rea_kernel.sandbox import Limits
from rea_kernel.targets import TARGETS, Kernel, KernelLoadError, Target, TargetUnavailableError

Call = tuple[str, Sequence[torch.Tensor], Mapping[str, Attribute]]
"""An operator call, as a trainer asks for its kernel: name, inputs, attributes."""
BUILD_LIMITS = Limits(wall_seconds=120, memory_bytes=4 << 30, file_bytes=256 << 20)


@dataclass
class _Route:
    """Where one (operator, bucket, dtype, device type) goes: a loaded kernel, or PyTorch."""

    use: KernelUse
    kernel: Kernel | None = None


def _contiguous(kernel: Kernel) -> Kernel:
    """``kernel`` on contiguous inputs: it reads raw memory."""
    return lambda *args, **kwargs: kernel(*(t.contiguous() for t in args), **kwargs)


class RegistryKernels:
    """The registry's kernels for this machine, as a model's operator calls ask for them.

    ``directory`` holds the built kernels for as long as the process runs them; ``cache_dir``
    keeps builds across jobs. ``threads`` is the thread count the trainer computes with.
    """

    def __init__(
        self,
        entries: Iterable[KernelEntry],
        directory: Path,
        cache_dir: Path,
        threads: int,
        targets: Mapping[str, Target] = TARGETS,
    ) -> None:
        self.directory, self.cache_dir, self.threads = directory, cache_dir, threads
        # Only targets whose times here are kernel times: a kernel's registry entry is evidence
        # about the device it was timed on, so this machine's device must be that device.
        self.targets = {
            name: target
            for name, target in targets.items()
            if target.unavailable() is None and target.times_kernels()
        }
        devices = {name: target.device_name() for name, target in self.targets.items()}
        self.entries = {entry.key: entry for entry in entries if devices.get(entry.target) == entry.device}
        self.devices = devices
        self.routes: dict[tuple[str, str, str, str], _Route] = {}
        # By candidate digest: one kernel may serve many buckets, and is built and imported once
        # (building it again would overwrite a library this process has mapped).
        self.loaded: dict[str, Kernel | str] = {}

    def find(self, calls: Sequence[Call]) -> list[Kernel] | None:
        """A kernel for each call, to run together, or None (PyTorch) when any call has none.
        Each call is counted as what will run it: all of them as kernels, or the ones without a
        kernel as PyTorch's, with the reason."""
        routes = [self._route_for(*call) for call in calls]
        kernels = [route.kernel for route in routes if route is not None and route.kernel is not None]
        runnable = len(kernels) == len(calls)
        for route in routes:
            if route is not None and (runnable or route.kernel is None):
                route.use.calls += 1
        return [_contiguous(kernel) for kernel in kernels] if runnable else None

    def _route_for(
        self, operator: str, inputs: Sequence[torch.Tensor], attributes: Mapping[str, Attribute]
    ) -> _Route | None:
        spec = OPERATORS.get(operator)
        if spec is None or not inputs:
            return None
        shape = spec.shape_of(inputs, attributes)
        bucket, dtype, device = spec.bucket(shape), dtype_name(inputs[0].dtype), inputs[0].device.type
        key = (operator, bucket, dtype, device)
        if key not in self.routes:
            self.routes[key] = self._route(operator, bucket, dtype, device, shape.model_dump())
        return self.routes[key]

    def usage(self) -> list[KernelUse]:
        """Every (operator, bucket) asked for: what ran, and how many calls."""
        return [route.use.model_copy() for route in self.routes.values()]

    def _route(self, operator: str, bucket: str, dtype: str, device: str, shape: dict[str, object]) -> _Route:
        keys = [
            registry_key(operator, bucket, dtype, name, self.devices[name])
            for name, target in self.targets.items()
            if target.device == device
        ]
        use = KernelUse(operator=operator, bucket=bucket, shape=shape)
        failures: list[str] = []
        for key in keys:
            entry = self.entries.get(key)
            if entry is None:
                continue
            if entry.speedup_vs_eager <= 1.0:
                failures.append(
                    f"the registry's {entry.target} kernel ran at {entry.speedup_vs_eager:.2f}x eager "
                    "PyTorch in its evaluation: PyTorch is faster"
                )
                continue
            loaded = self._load(entry)
            if isinstance(loaded, str):
                failures.append(f"{entry.target} kernel {entry.candidate.digest} did not load: {loaded}")
                continue
            use.kernel = key
            return _Route(use, loaded)
        if failures:
            use.reason = "; ".join(failures)
        else:
            where = ", ".join(self.devices[name] for name, t in self.targets.items() if t.device == device)
            use.reason = f"no registry kernel for {bucket} ({dtype}) on {where or device}"
        return _Route(use)

    def _load(self, entry: KernelEntry) -> Kernel | str:
        """The entry's kernel, or why it did not load."""
        digest = entry.candidate.digest
        if digest not in self.loaded:
            target = self.targets[entry.target]
            try:
                self.loaded[digest] = target.load(
                    entry.candidate, self.directory / digest, self.cache_dir, BUILD_LIMITS, self.threads
                )
            except (KernelLoadError, TargetUnavailableError) as error:
                self.loaded[digest] = str(error)
        return self.loaded[digest]
