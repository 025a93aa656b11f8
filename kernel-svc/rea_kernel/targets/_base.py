"""The target contract: where kernels run, how candidates are made and built for it.

A target is a kind of hardware plus the way kernels are written for it (``cpu``: C++ with
OpenMP, loaded through ctypes; a ``triton`` target for GPUs would be a sibling module). It
exposes, per operator, a search space of template parameters as plain data, so a search can
walk it without knowing the target, and renders any point of it into a :class:`Candidate`.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch

from rea.kernels import ENTRY_POINT, Candidate, ParamValue
from rea_kernel.landlock import Confinement
from rea_kernel.sandbox import Limits, Verdict

SearchSpace = Mapping[str, tuple[ParamValue, ...]]
Kernel = Callable[..., torch.Tensor]


class KernelLoadError(RuntimeError):
    """A kernel could not be built or imported where it was to run (the reason is its message)."""


class TargetUnavailableError(RuntimeError):
    """This machine cannot build or run the target's kernels (no compiler, no device): a fact
    about the machine, never a verdict on a candidate."""


@dataclass(frozen=True)
class BuildFailure:
    verdict: Verdict
    reason: str


class Target(ABC):
    """A place kernels run.

    - ``name`` keys the target registry and appears in every candidate made for it.
    - ``device`` is the torch device type its kernels take inputs on and return outputs on.
    - ``search_space(operator)`` maps each template parameter to its choices; the first choice of
      every parameter together is a setting known to be correct, so a search always has a
      valid start. ``suggested_params(operator, shape)`` may move it for a shape its rules
      know (by default it does not).
    - ``render(operator, params)`` is pure: the same parameters give the same sources.
    - ``build`` turns a candidate's sources, written into ``directory``, into what its
      ``kernel.py`` loads. The sources are untrusted: a build runs in the sandbox, under
      ``limits``, and reports a broken candidate as a :class:`BuildFailure`, not an exception.
    """

    name: ClassVar[str]
    device: ClassVar[str]

    @abstractmethod
    def unavailable(self) -> str | None:
        """Why this machine cannot run the target's kernels, for a person to fix; None if it can."""

    @abstractmethod
    def device_name(self) -> str:
        """The hardware kernels run on, as timings must name it (a CPU model, a GPU)."""

    @abstractmethod
    def operators(self) -> tuple[str, ...]:
        """The operators this target has templates for."""

    @abstractmethod
    def search_space(self, operator: str) -> SearchSpace: ...

    @abstractmethod
    def render(self, operator: str, params: Mapping[str, ParamValue]) -> Candidate: ...

    @abstractmethod
    def build(
        self, candidate: Candidate, directory: Path, cache_dir: Path, limits: Limits
    ) -> BuildFailure | None:
        """Build in ``directory`` (which holds the sources), reusing ``cache_dir``'s earlier builds."""

    def load(
        self, candidate: Candidate, directory: Path, cache_dir: Path, limits: Limits, threads: int
    ) -> Kernel:
        """Build ``candidate`` in ``directory`` and import its ``run`` into **this** process: how a
        trainer runs a registry kernel, one that passed the adversarial evaluation. Its build
        still runs sandboxed; ``threads`` is the thread count the calling process computes with,
        which a kernel that leaves its threads to the runtime gets too. Raises
        :class:`KernelLoadError` with the reason, or :class:`TargetUnavailableError`."""
        directory.mkdir(parents=True, exist_ok=True)
        for name, source in candidate.sources.items():
            (directory / name).write_text(source)
        failure = self.build(candidate, directory, cache_dir, limits)
        if failure is not None:
            raise KernelLoadError(failure.reason)
        module_name = f"rea_registry_kernel_{candidate.digest}"
        spec = importlib.util.spec_from_file_location(module_name, directory / ENTRY_POINT)
        if spec is None or spec.loader is None:
            raise KernelLoadError(f"cannot import {directory / ENTRY_POINT}")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as error:  # its import is its code: any failure is the kernel's
            raise KernelLoadError(f"importing {ENTRY_POINT}: {type(error).__name__}: {error}") from error
        run = getattr(module, "run", None)
        if not callable(run):
            raise KernelLoadError(f"{ENTRY_POINT} defines no run(*inputs, **attributes)")
        return run

    def run_time_programs(self) -> tuple[str, ...]:
        """Programs, as resolved paths, that a kernel's own toolchain starts while the kernel
        runs (a JIT compiler's assembler, the C compiler of its launcher): a candidate process
        may start these and no other. None by default, where kernels are built before they run."""
        return ()

    def run_time_readable(self) -> tuple[str, ...]:
        """Folders outside the Python installation that a kernel's toolchain reads or loads
        libraries from while the kernel runs (a GPU driver's)."""
        return ()

    def run_time_devices(self) -> tuple[str, ...]:
        """Device files (or folders of them) a kernel reads, writes and controls while it runs
        (a GPU's), beyond the harmless ones every sandboxed child may use."""
        return ()

    def run_time_access(self) -> Confinement:
        """What a kernel's sandboxed process may use beyond its directory and the system's
        (:func:`rea_kernel.sandbox.confinement`): the toolchain's folders and its programs'
        folders, to read and run, and the devices."""
        programs = {Path(program).parent for program in self.run_time_programs()}
        return Confinement(
            execute=(*map(Path, self.run_time_readable()), *sorted(programs)),
            devices=tuple(map(Path, self.run_time_devices())),
        )

    def cache_bytes(self) -> int | None:
        """The last-level cache of the device kernels run on, which timing must flush; None for
        the CPU's (the evaluator reads it from the machine)."""
        return None

    def authoring_guide(self) -> str:
        """How a hand- or LLM-written candidate for this target is laid out: its files, how
        they are built and loaded, what ``run`` receives and must return. A synthesizer shows
        it to the author beside the operator's reference and the best candidates so far."""
        return (
            f"A candidate is a set of files; {ENTRY_POINT} defines run(*inputs, **attributes) and "
            f"returns a new {self.device} tensor, or a tuple of them where the reference returns one "
            "(never a view of an input, never an input modified in place)."
        )

    def times_kernels(self) -> bool:
        """Whether a time measured here is the kernel's. A target that can only emulate its
        device (an interpreter) says no, and its candidates are checked for correctness only:
        an interpreter's time is never reported as a kernel's speed."""
        return True

    def check_params(self, operator: str, params: Mapping[str, ParamValue]) -> None:
        """Raise ``ValueError`` naming the problem unless ``params`` is a point of the space:
        every parameter, each one of its choices (a ``True`` is not a ``1``)."""
        space = self.search_space(operator)
        if set(params) != set(space):
            raise ValueError(f"{operator} takes parameters {sorted(space)}, got {sorted(params)}")
        for name, value in params.items():
            if value not in space[name] or type(value) is not type(space[name][0]):
                raise ValueError(f"{operator}: {name}={value!r} is not one of {space[name]}")

    def default_params(self, operator: str) -> dict[str, ParamValue]:
        """The first choice of every parameter: the known-correct start of a search."""
        return {name: choices[0] for name, choices in self.search_space(operator).items()}

    def suggested_params(self, operator: str, shape: Mapping[str, Any]) -> dict[str, ParamValue]:
        """Where a search on ``shape`` starts when nothing is known of it: the default, unless
        the target has a rule for such shapes. A rule is a guess, evaluated like any point."""
        return self.default_params(operator)


class Template(Protocol):
    """One operator's kernel source, parameterised: the choices of each parameter, and the
    sources one point of them renders to."""

    @property
    def space(self) -> SearchSpace: ...

    def render(self, params: Mapping[str, ParamValue]) -> dict[str, str]: ...

    def suggest(self, shape: Mapping[str, Any]) -> Mapping[str, ParamValue]:
        """The choices its rules make for ``shape`` (a one-column output is a dot product per
        row, not a panel of many columns); empty where no rule applies."""
        ...


class TemplateTarget(Target):
    """A target whose candidates are rendered from one :class:`Template` per operator."""

    templates: ClassVar[Mapping[str, Template]]

    def operators(self) -> tuple[str, ...]:
        return tuple(self.templates)

    def search_space(self, operator: str) -> SearchSpace:
        return self.template(operator).space

    def suggested_params(self, operator: str, shape: Mapping[str, Any]) -> dict[str, ParamValue]:
        return {**self.default_params(operator), **self.template(operator).suggest(shape)}

    def render(self, operator: str, params: Mapping[str, ParamValue]) -> Candidate:
        self.check_params(operator, params)
        sources = self.template(operator).render(params)
        return Candidate(operator=operator, target=self.name, params=dict(params), sources=sources)

    def template(self, operator: str) -> Template:
        try:
            return self.templates[operator]
        except KeyError:
            known = ", ".join(self.templates)
            raise KeyError(
                f"the {self.name} target has no template for {operator!r}; it has {known}"
            ) from None
