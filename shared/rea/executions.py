"""Counting job executions from the workers' side: every job process a worker started and the CPU
the OS measured for it, read from the workers' own logs (``job_process_started`` /
``job_process_ended`` lines), not from the state the services keep.

This is how the fault-injection suite and the restart tests check "no job ran twice" and "the CPU
the workers used stayed within the cap": a check built on the job ledger or the results would
trust the very records whose correctness is in question.

A worker killed with SIGKILL never writes its job's end line (its job dies with it): such an
execution is counted at the last CPU sample its worker wrote into the job ledger, which lags the
truth by at most one heartbeat (a third of the lease TTL).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rea.ledger import JobRun


@dataclass
class Execution:
    """One job process, as its worker logged it."""

    job_id: str
    pid: int
    worker: str
    cpu_seconds: float | None = None  # None: the worker died before the job ended

    @property
    def ended(self) -> bool:
        return self.cpu_seconds is not None


@dataclass
class ExecutionAudit:
    executions: list[Execution] = field(default_factory=list)
    cpu_by_campaign: dict[str, float] = field(default_factory=dict)
    unfinished: int = 0

    def repeated(self) -> dict[str, int]:
        """Job ids whose process was started more than once, with how many times."""
        counts = Counter(execution.job_id for execution in self.executions)
        return {job_id: count for job_id, count in counts.items() if count > 1}


def executions_from_logs(logs: Path) -> list[Execution]:
    """Every job process the workers whose logs are in ``logs`` started (``worker*.log``)."""
    found: dict[tuple[str, int, str], Execution] = {}
    for path in sorted(logs.glob("worker*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if "job_process_" not in line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            key = (str(entry.get("job_id")), int(entry.get("pid", 0)), path.stem)
            if entry.get("event") == "job_process_started":
                found.setdefault(key, Execution(key[0], key[1], key[2]))
            elif entry.get("event") == "job_process_ended":
                execution = found.setdefault(key, Execution(key[0], key[1], key[2]))
                execution.cpu_seconds = float(entry.get("cpu_seconds") or 0.0)
    return list(found.values())


def audit(executions: list[Execution], runs: list[JobRun]) -> ExecutionAudit:
    """The CPU every campaign's job processes used, by campaign (``runs``: the job ledger's
    documents, for each job's campaign and, for a job whose worker died, its last sample)."""
    by_job = {run.job_id: run for run in runs}
    result = ExecutionAudit(executions=executions)
    for execution in executions:
        run = by_job.get(execution.job_id)
        campaign = run.campaign_id if run else "unknown"
        cpu = execution.cpu_seconds
        if cpu is None:
            result.unfinished += 1
            cpu = run.cpu_seconds if run else 0.0
        result.cpu_by_campaign[campaign] = result.cpu_by_campaign.get(campaign, 0.0) + cpu
    return result
