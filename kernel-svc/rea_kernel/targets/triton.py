"""The ``triton`` target: Triton kernels, JIT-compiled by Triton itself on first launch.

On a machine with a CUDA GPU, kernels take and return cuda tensors and are timed like any
other. Without one, a candidate's ``kernel.py`` switches Triton to its interpreter, which runs
every program of the grid one after another on CPU tensors with numpy: the same kernel source
is checked for correctness here, but its time says nothing about the kernel, so this target
then says it must not be timed (:meth:`TritonTarget.times_kernels`).

Nothing is built ahead: Triton compiles (on a GPU) or interprets (without one) at the first
call, for the sizes it meets. :meth:`TritonTarget.build` only checks that ``kernel.py`` is
Python, so that a broken candidate is rejected before a sandboxed child is started for it.
"""

from __future__ import annotations

import importlib
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import torch

from rea.kernels import ENTRY_POINT, Candidate
from rea_kernel.sandbox import PROGRAM_PATH, Limits, Verdict
from rea_kernel.targets._base import BuildFailure, TargetUnavailableError, Template, TemplateTarget
from rea_kernel.targets.triton_templates import TEMPLATES

INTERPRETER = "triton-interpreter on cpu (no GPU): correctness only, never timed"
DRIVER_FOLDERS = (
    "/usr/local/cuda",
    "/usr/local/nvidia",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/etc/ld.so.cache",
)
"""Where a GPU driver's libraries and their index live: Triton finds ``libcuda`` there."""
DEVICES = "nvidia*"
"""The driver's device files in ``/dev`` (``nvidiactl``, ``nvidia0``, ``nvidia-uvm``, ...), which
CUDA opens and drives with ioctls."""


class TritonTarget(TemplateTarget):
    templates: ClassVar[Mapping[str, Template]] = TEMPLATES
    name = "triton"
    device = "cuda" if torch.cuda.is_available() else "cpu"

    def unavailable(self) -> str | None:
        try:
            importlib.import_module("triton")
        except Exception as error:  # a broken install fails in many ways; each is a fact about this machine
            return (
                "the triton target needs the triton package and importing it failed "
                f"({type(error).__name__}: {error}): install it (pip install triton) beside torch"
            )
        if self.device == "cuda" and shutil.which("gcc") is None and shutil.which("clang") is None:
            return "triton builds its CUDA launcher with a C compiler and none is on PATH: install gcc"
        return None

    def authoring_guide(self) -> str:
        return (
            "One file, kernel.py: Triton kernels (@triton.jit) and run(*inputs, **attributes), which "
            "launches them and returns a new tensor on the inputs' device (a tuple of them where the "
            "reference returns a tuple). Inputs are contiguous float32 / int64 tensors; each output "
            "must match the reference's shape and dtype. Before "
            "importing triton, set os.environ['TRITON_INTERPRET'] = '1' when "
            "torch.cuda.is_available() is false, so the same file is checked in Triton's "
            f"interpreter where there is no GPU. Here: {self.device_name()}. Handle empty inputs."
        )

    def device_name(self) -> str:
        if self.device == "cuda":
            return f"cuda: {torch.cuda.get_device_name()}"
        return INTERPRETER

    def run_time_programs(self) -> tuple[str, ...]:
        """On a GPU, Triton compiles at a kernel's first launch: its assembler and tools (in
        its package), the C compiler that builds its launcher, ``ldconfig``, which it asks
        where the driver's library is, and ``file``, which Python's ``platform`` module runs on
        its behalf. The audit hook cannot follow these programs; the sandbox's limits and
        scrubbed environment still hold for them."""
        if self.device != "cuda":
            return ()
        tools = Path(importlib.import_module("triton").__file__ or ".").parent / "backends" / "nvidia" / "bin"
        found = [str(path.resolve()) for path in tools.glob("*") if path.is_file()]
        for name in ("cc", "gcc", "clang", "ldconfig", "file"):
            where = shutil.which(name, path=PROGRAM_PATH)
            if where is not None:
                found.append(str(Path(where).resolve()))
        return tuple(sorted(set(found)))

    def run_time_readable(self) -> tuple[str, ...]:
        if self.device != "cuda":
            return ()
        return tuple(DRIVER_FOLDERS)

    def run_time_devices(self) -> tuple[str, ...]:
        if self.device != "cuda":
            return ()
        return tuple(sorted(str(path) for path in Path("/dev").glob(DEVICES)))

    def cache_bytes(self) -> int | None:
        if self.device != "cuda":
            return None
        return int(torch.cuda.get_device_properties(0).L2_cache_size)

    def times_kernels(self) -> bool:
        """Whether a time measured here is the kernel's: not under the interpreter, whose time
        is numpy's and Python's. An evaluator must then check correctness and time nothing."""
        return self.device == "cuda"

    def build(
        self, candidate: Candidate, directory: Path, cache_dir: Path, limits: Limits
    ) -> BuildFailure | None:
        """Check that ``kernel.py`` parses and compiles to bytecode (which runs none of it);
        Triton compiles the kernels themselves when ``run`` first launches them."""
        reason = self.unavailable()
        if reason is not None:
            raise TargetUnavailableError(reason)
        try:
            compile(candidate.sources[ENTRY_POINT], str(directory / ENTRY_POINT), "exec")
        except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
            return BuildFailure(Verdict.REJECTED, f"{ENTRY_POINT} is not valid Python: {error}")
        return None
