"""What a job's process may see and use: an environment without the service's credentials, and
limits the kernel enforces from the job's first instruction.

A job runs a workload's code, which may be anybody's, on data a campaign named. The worker that
starts it holds the addresses and passwords of Kafka, MongoDB and Redis, and maybe an LLM key;
none of that crosses into the job. A job gets only the variables in :data:`JOB_VARIABLES` and
:data:`JOB_PREFIXES` (a workload that needs more names them in ``REA_JOB_ENV_PASSTHROUGH``,
never a ``REA_`` setting), and its memory, CPU time and file sizes are capped before it execs
(core dumps off), whichever way it starts: cold, forked warm from a zygote, or as the child
that prepares a dataset. Ray and Kubernetes jobs reach their trainer through the same runner.
"""

from __future__ import annotations

import resource
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from rea.workloads import FAULT_ENV, PROGRESS_ENV

JOB_VARIABLES = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "TERM",
        "PYTHONPATH",
        "PYTHONHASHSEED",
        "VIRTUAL_ENV",
        "LD_LIBRARY_PATH",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        PROGRESS_ENV,
        FAULT_ENV,
        "REA_DATA_CACHE",
        "REA_KERNEL_CACHE",
    }
)
"""Variables a job inherits by name: how to find programs, libraries, packages and its home,
and the job contract's own (progress file, injected fault, data and kernel caches)."""

JOB_PREFIXES = ("LC_", "OMP_", "MKL_", "OPENBLAS_", "CUDA_", "NVIDIA_")
"""Families a job inherits: locale, thread counts, the GPUs it was given."""

SERVICE_PREFIX = "REA_"
"""The service's own settings (``REA_MONGO_URI``, ``REA_LLM_API_KEY``...): never passed through."""


def job_environment(environ: Mapping[str, str], passthrough: Iterable[str] = ()) -> dict[str, str]:
    """The part of ``environ`` a job may see: :data:`JOB_VARIABLES`, :data:`JOB_PREFIXES`, and
    the names in ``passthrough`` that are not service settings."""
    extra = {name for name in passthrough if not name.startswith(SERVICE_PREFIX)}
    return {
        name: value
        for name, value in environ.items()
        if name in JOB_VARIABLES or name in extra or name.startswith(JOB_PREFIXES)
    }


@dataclass(frozen=True)
class JobLimits:
    """What the kernel stops a job at (``setrlimit``); a job past them gets a signal."""

    memory_bytes: int
    cpu_seconds: int
    """A backstop should the worker die: the kernel stops the job past this much CPU."""
    file_bytes: int
    """The largest file the job may write (SIGXFSZ past it): a job filling the disk stops."""

    def apply(self) -> None:
        """Set them on this process (a child, before it execs or runs the job), never above the
        hard limits it runs under. The CPU's hard limit is 5 s above the soft one, so the job
        first gets SIGXCPU, which it may report."""
        _limit(resource.RLIMIT_AS, self.memory_bytes, self.memory_bytes)
        _limit(resource.RLIMIT_CPU, self.cpu_seconds, self.cpu_seconds + 5)
        limit_files(self.file_bytes)


def limit_files(file_bytes: int) -> None:
    """Files this process writes stop at ``file_bytes`` (SIGXFSZ), and it dumps no core."""
    _limit(resource.RLIMIT_FSIZE, file_bytes, file_bytes)
    _limit(resource.RLIMIT_CORE, 0, 0)


def _limit(kind: int, soft: int, hard: int) -> None:
    ceiling = resource.getrlimit(kind)[1]
    if ceiling != resource.RLIM_INFINITY:
        soft, hard = min(soft, ceiling), min(hard, ceiling)
    resource.setrlimit(kind, (soft, hard))
