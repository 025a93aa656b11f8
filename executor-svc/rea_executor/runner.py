"""Runs one training job in a subprocess with time and memory limits, and measures it.

The job's CPU seconds (user + system) and peak RSS come from the operating system
(``wait4``'s resource usage for the job process), not from the job's own report, so every
method in a comparison is charged the same way.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from pydantic import ValidationError

from rea.events import JobSpec
from rea.workloads import JobCost, JobError, JobInput, JobOutput, get_workload

OOM_EXIT_CODE = 3


def _limit_memory(memory_mb: int) -> None:
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def run_job(spec: JobSpec) -> JobOutput:
    """Blocking: run the job to completion (or its limits) and return what it reported."""
    try:
        command = get_workload(spec.workload).command()
    except KeyError:
        return JobOutput(
            status="failed",
            error=JobError(kind="invalid_config", message=f"unknown workload {spec.workload!r}"),
        )
    with tempfile.TemporaryDirectory(prefix=f"rea-{spec.job_id[:40]}-") as tmp:
        job_path, out_path = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job = JobInput(job_id=spec.job_id, dataset=spec.dataset, config=spec.config, seed=spec.seed)
        job_path.write_text(job.model_dump_json())
        started = time.monotonic()
        proc = subprocess.Popen(
            [*command, "--job", str(job_path), "--output", str(out_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=lambda: _limit_memory(spec.memory_mb),
            start_new_session=True,
        )
        timed_out = False
        deadline = started + spec.timeout_s
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        stderr = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
        cost = JobCost(
            cpu_seconds=round(usage.ru_utime + usage.ru_stime, 3),
            wall_seconds=round(time.monotonic() - started, 3),
            peak_rss_mb=round(usage.ru_maxrss / 1024, 1),
        )
        output = _read_output(out_path)
        if timed_out:
            error = JobError(kind="timeout", message=f"killed after {spec.timeout_s:g}s")
            return JobOutput(status="failed", cost=cost, error=error)
        if output is not None:
            return output.model_copy(update={"cost": cost})
        kind = "oom" if proc.returncode == OOM_EXIT_CODE or "MemoryError" in stderr else "error"
        message = f"exit code {proc.returncode}: {stderr.strip()[-500:] or 'no output'}"
        return JobOutput(status="failed", cost=cost, error=JobError(kind=kind, message=message))


def _read_output(path: Path) -> JobOutput | None:
    try:
        return JobOutput.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError, ValidationError):
        return None
