"""Runs one training job in a subprocess with time and memory limits, and measures it.

The job's CPU seconds (user + system) come from the operating system (``wait4``'s resource
usage for the job process and the children it waited for), not from the job's own report,
so every method in a comparison is charged the same way. Peak memory is the job process's
own high-water mark (``VmHWM``), sampled while it runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from rea.events import JobSpec
from rea.workloads import FAULT_ENV, JobCost, JobError, JobInput, JobOutput, get_workload

OOM_EXIT_CODE = 3


@dataclass(frozen=True)
class Exit:
    code: int
    usage: resource.struct_rusage
    wall_seconds: float
    timed_out: bool
    peak_rss_mb: float


Fault = Literal["oom", "nan", "kill"]
KILL_AFTER_S = 1.0


def run_job(spec: JobSpec, fault: Fault | None = None, *, prepare: bool = True) -> JobOutput:
    """Blocking: run the job to completion (or its limits) and return what it reported.

    ``fault`` is for resilience drills: ``oom`` and ``nan`` ask the job itself to fail that
    way (through its real failure paths), ``kill`` SIGKILLs it one second in. ``prepare=False``
    skips preparing the dataset (the caller knows it is ready).
    """
    try:
        workload = get_workload(spec.workload)
    except KeyError:
        return _failed("invalid_config", f"unknown workload {spec.workload!r}")
    if prepare and (problem := prepare_dataset(spec.workload, spec.dataset)):
        return _failed("error", f"could not prepare dataset {spec.dataset!r}: {problem}")
    with tempfile.TemporaryDirectory(prefix=f"rea-{spec.job_id[:40]}-") as tmp:
        job_path, out_path, err_path = Path(tmp) / "job.json", Path(tmp) / "result.json", Path(tmp) / "stderr"
        job = JobInput(
            job_id=spec.job_id,
            dataset=spec.dataset,
            config=spec.config,
            seed=spec.seed,
            diagnose=spec.diagnose,
        )
        job_path.write_text(job.model_dump_json())
        argv = [*workload.command(), "--job", str(job_path), "--output", str(out_path)]
        env = {**os.environ, FAULT_ENV: fault} if fault in ("oom", "nan") else None
        kill_after = KILL_AFTER_S if fault == "kill" else None
        ended = _run(argv, err_path, spec.memory_mb, spec.timeout_s, env, kill_after)
        stderr = _tail(err_path)
        output = _read_output(out_path)
    cost = JobCost(
        cpu_seconds=round(ended.usage.ru_utime + ended.usage.ru_stime, 3),
        wall_seconds=round(ended.wall_seconds, 3),
        peak_rss_mb=round(ended.peak_rss_mb, 1),
    )
    if ended.timed_out:
        return _failed("timeout", f"killed after {spec.timeout_s:g}s", cost)
    if output is not None:
        return output.model_copy(update={"cost": cost})
    kind: Literal["oom", "killed", "error"] = "error"
    if ended.code == OOM_EXIT_CODE or "MemoryError" in stderr:
        kind = "oom"
    elif ended.code < 0:
        kind = "killed"
    return _failed(kind, f"exit code {ended.code}: {stderr.strip()[-500:] or 'no output'}", cost)


def prepare_dataset(workload: str, dataset: str) -> str | None:
    """Blocking: the workload's ``prepare`` in a child process, because it may be slow and hold
    the GIL (loading torch, generating data) while the worker's lease heartbeat must keep
    beating. Returns what went wrong, or None when the dataset is ready."""
    done = subprocess.run(
        [sys.executable, "-m", "rea_executor.runner", workload, dataset],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    if done.returncode == 0:
        return None
    lines = done.stderr.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else f"exit code {done.returncode}"


def _run(
    argv: list[str],
    stderr_path: Path,
    memory_mb: int,
    timeout_s: float,
    env: dict[str, str] | None = None,
    kill_after_s: float | None = None,
) -> Exit:
    """Run ``argv`` in its own session under the limits; reap it with ``wait4`` for its usage."""
    started = time.monotonic()
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
            start_new_session=True,
        )
    limit = memory_mb * 1024 * 1024
    cpu_limit = int(timeout_s) + 1  # a backstop should this worker die: the kernel stops the job
    with contextlib.suppress(ProcessLookupError):
        resource.prlimit(proc.pid, resource.RLIMIT_AS, (limit, limit))
        resource.prlimit(proc.pid, resource.RLIMIT_CPU, (cpu_limit, cpu_limit + 5))
    timed_out = False
    peak_kb = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak_kb = max(peak_kb, _high_water_kb(proc.pid))
        if kill_after_s is not None and time.monotonic() - started > kill_after_s:
            os.killpg(proc.pid, signal.SIGKILL)
            kill_after_s = None
        if time.monotonic() - started > timeout_s:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            _, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # leave no stray grandchildren behind
    return Exit(proc.returncode, usage, time.monotonic() - started, timed_out, peak_kb / 1024)


def _high_water_kb(pid: int) -> int:
    """The job's own peak RSS so far (VmHWM). ``wait4``'s ru_maxrss cannot be used for this: on
    Linux a child inherits its parent's high-water mark across fork and exec, so it would report
    the worker's size, not the job's."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _tail(path: Path, size: int = 2000) -> str:
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - size))
        return handle.read().decode(errors="replace")


def _failed(
    kind: Literal["oom", "invalid_config", "timeout", "killed", "error"],
    message: str,
    cost: JobCost | None = None,
) -> JobOutput:
    return JobOutput(status="failed", cost=cost, error=JobError(kind=kind, message=message))


def _read_output(path: Path) -> JobOutput | None:
    try:
        return JobOutput.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError, ValidationError):
        return None


if __name__ == "__main__":
    get_workload(sys.argv[1]).prepare(sys.argv[2])
