"""The ``cpu`` target: C++ kernels built with the system compiler and loaded through ctypes.

Not ``torch.utils.cpp_extension``: including torch's headers makes every build take about
30 s, while a plain C++ file over raw float pointers builds in about one. Builds are cached by
a hash of the source, the compiler and the machine's instruction set (``-march=native``), so
each distinct kernel is compiled once per cache directory.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from rea.kernels import Candidate
from rea_kernel.sandbox import Limits, Verdict, run_sandboxed
from rea_kernel.targets._base import BuildFailure, Kernel, TargetUnavailableError, Template, TemplateTarget
from rea_kernel.targets.cpu_templates import TEMPLATES

FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17")
SOURCE = "kernel.cpp"
LIBRARY = "kernel.so"


def _cpuinfo_field(name: str) -> str | None:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in lines if line.split(":")[0].strip() == name), None)


class CpuTarget(TemplateTarget):
    templates: ClassVar[Mapping[str, Template]] = TEMPLATES
    name = "cpu"
    device = "cpu"

    def __init__(self, compiler: str = "g++", flags: tuple[str, ...] = FLAGS) -> None:
        self.compiler = compiler
        self.flags = flags

    def unavailable(self) -> str | None:
        if shutil.which(self.compiler) is None:
            return (
                f"the cpu target needs a C++ compiler and {self.compiler!r} is not on PATH: install one "
                "(Debian/Ubuntu: apt-get install g++) or make the target with CpuTarget(compiler=...)"
            )
        return None

    def device_name(self) -> str:
        model = _cpuinfo_field("model name") or platform.processor() or platform.machine()
        return f"cpu: {model} ({len(os.sched_getaffinity(0))} cores available)"

    def authoring_guide(self) -> str:
        return (
            f"Two files. {SOURCE}: C++17 compiled with `{self.compiler} {' '.join(self.flags)} -o {LIBRARY} "
            f"{SOURCE}` on this machine ({self.device_name()}); export its entry points with "
            'extern "C" over raw float/int64 pointers and sizes (no torch headers: they are not on '
            f"the include path). kernel.py: loads {LIBRARY} from its own folder with ctypes "
            "(ctypes.CDLL(str(Path(__file__).with_name('kernel.so')))), defines run(*inputs, "
            "**attributes) over contiguous float32 / int64 CPU tensors, allocates its output (each "
            "of them, returned as a tuple, where the reference returns a tuple) with torch.empty and "
            "passes data_ptr()s. OpenMP threads: leave the count to the runtime "
            "(the evaluator sets OMP_NUM_THREADS). Handle empty inputs (a size of 0)."
        )

    def build(
        self, candidate: Candidate, directory: Path, cache_dir: Path, limits: Limits
    ) -> BuildFailure | None:
        """Compile ``kernel.cpp`` into ``kernel.so`` in the sandbox, or copy an earlier build.

        The cache is written only here, in the calling process, from what a finished compiler
        produced: the candidate's own code never sees the cache directory.
        """
        if SOURCE not in candidate.sources:
            return BuildFailure(Verdict.REJECTED, f"a cpu candidate needs {SOURCE} beside kernel.py")
        reason = self.unavailable()
        if reason is not None:
            raise TargetUnavailableError(reason)
        cached = cache_dir / self.name / f"{self._build_key(candidate.sources[SOURCE])}.so"
        if not cached.exists():
            compiler = run_sandboxed([self.compiler, *self.flags, "-o", LIBRARY, SOURCE], directory, limits)
            failure = compiler.failure(limits)
            if failure is not None:
                return BuildFailure(failure[0], f"compiling {SOURCE}: {failure[1]}")
            if compiler.returncode != 0:
                lines = compiler.stderr.splitlines()
                errors = [line for line in lines if "error" in line][:5] or lines[-5:]
                return BuildFailure(Verdict.REJECTED, f"{SOURCE} does not compile: " + " | ".join(errors))
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_suffix(f".{os.getpid()}.partial")
            shutil.copyfile(directory / LIBRARY, partial)
            os.replace(partial, cached)
        shutil.copyfile(cached, directory / LIBRARY)
        return None

    def load(
        self, candidate: Candidate, directory: Path, cache_dir: Path, limits: Limits, threads: int
    ) -> Kernel:
        """As :meth:`Target.load`; a kernel whose ``threads`` is 0 (OpenMP decides) then runs with
        ``threads``, the caller's count, as it ran with the evaluator's in its evaluation."""
        run = super().load(candidate, directory, cache_dir, limits, threads)
        # dlsym on the kernel's handle finds the OpenMP runtime it links; the setting holds for
        # parallel regions this thread starts, which is every call the trainer makes.
        ctypes.CDLL(str(directory / LIBRARY)).omp_set_num_threads(threads)
        return run

    def _build_key(self, source: str) -> str:
        """What decides the machine code: the source, the compiler and its flags, and what
        ``-march=native`` resolves to (the CPU's model and instruction-set flags)."""
        version = subprocess.run(
            [self.compiler, "--version"], capture_output=True, text=True, check=False
        ).stdout
        machine = f"{_cpuinfo_field('model name')}|{_cpuinfo_field('flags')}|{platform.machine()}"
        material = "\0".join([version, " ".join(self.flags), machine, source])
        return hashlib.sha256(material.encode()).hexdigest()[:32]
