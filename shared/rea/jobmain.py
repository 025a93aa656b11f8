"""The job side of the workload contract, so a workload's entrypoint is a few lines.

A workload's ``python -m <package> --job JOB.json --output RESULT.json`` reads a
:class:`~rea.workloads.JobInput`, checks its config and data set before paying for the
framework's import, trains, and writes a :class:`~rea.workloads.JobOutput` (atomically, with
the job's own cost) on every path that can write one. Exit codes: 0 when a result was written
(a diverged run included: status "failed", kind "nan"), 1 for an unexpected error, 2 for an
invalid config or dataset spec, 3 when out of memory.

Import this module first in an entrypoint: it pins one thread per job before torch is
imported (REA runs jobs side by side, one per core).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

STARTED = time.perf_counter()

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

from rea.knobs import KnobSchema  # noqa: E402
from rea.memory import keep_freed_memory  # noqa: E402
from rea.workloads import JobCost, JobError, JobInput, JobOutput  # noqa: E402

Train = Callable[[JobInput], JobOutput]


def job_main(
    prog: str,
    schema: KnobSchema,
    dataset_error: Callable[[str], str | None],
    load_train: Callable[[], Train],
    argv: list[str] | None = None,
) -> int:
    """Run one job as the contract says; ``load_train`` imports the trainer (and the framework)
    only once the job is known to be valid."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("--job", type=Path, required=True, help="JobInput JSON file")
    parser.add_argument("--output", type=Path, required=True, help="where to write the JobOutput JSON")
    args = parser.parse_args(argv)

    def finish(output: JobOutput, code: int) -> int:
        output.cost = _cost()
        _write(args.output, output)
        if output.error:
            print(f"job failed ({output.error.kind}): {output.error.message}", file=sys.stderr)
        return code

    try:
        job = JobInput.model_validate_json(args.job.read_text())
    except (OSError, ValueError) as exc:
        return finish(_failed("error", f"cannot read job file {args.job}: {exc}"), 1)
    problems = schema.errors(job.config)
    dataset_problem = dataset_error(job.dataset)
    if dataset_problem:
        problems.append(f"dataset: {dataset_problem}")
    if problems:
        return finish(_failed("invalid_config", "; ".join(problems)), 2)

    keep_freed_memory()  # a batch's tensors reuse the last one's pages instead of faulting new ones
    try:
        output = load_train()(job)
    except MemoryError as exc:
        return finish(_failed("oom", f"out of memory: {exc}"), 3)
    except Exception as exc:
        if _is_torch_oom(exc):
            return finish(_failed("oom", str(exc)[:500]), 3)
        return finish(_failed("error", f"{type(exc).__name__}: {exc}"[:2000]), 1)
    return finish(output, 0)


def _failed(kind: Literal["oom", "invalid_config", "error"], message: str) -> JobOutput:
    return JobOutput(status="failed", error=JobError(kind=kind, message=message))


def _is_torch_oom(exc: Exception) -> bool:
    """torch reports a failed CPU allocation as a RuntimeError rather than a MemoryError."""
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)


def _cost() -> JobCost:
    """CPU time and peak memory of this process and its children (e.g. a data download)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024
    peak = max(me.ru_maxrss, children.ru_maxrss) / scale
    return JobCost(cpu_seconds=cpu, wall_seconds=time.perf_counter() - STARTED, peak_rss_mb=peak)


def _write(path: Path, output: JobOutput) -> None:
    """Write atomically, so a reader never sees a half-written result."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(output.model_dump_json(indent=2))
    partial.replace(path)
