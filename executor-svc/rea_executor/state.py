"""The executor's state: one document per campaign phase, and nothing in memory.

A campaign waiting for its jobs is this document and nothing else (hibernation): no task,
timer or cache holds it. The ``job.completed`` / ``job.failed`` event itself wakes it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from rea.events import FINISHED_JOB_STATUSES, JobRecord, JobSpec, RunbookEntry
from rea.workloads import JobOutput

JobStatus = Literal["pending", "submitted", "running", "completed", "failed", "retried", "cancelled"]
TERMINAL = FINISHED_JOB_STATUSES
IN_FLIGHT: frozenset[str] = frozenset({"submitted", "running"})
PhaseStatus = Literal["running", "paused", "paused_budget", "cancelling", "concluded"]
BUDGET_WARNING_FRACTION = 0.8


class TrackedJob(BaseModel):
    spec: JobSpec
    status: JobStatus = "pending"
    output: JobOutput | None = None
    worker: str | None = None
    failures: list[str] = Field(
        default_factory=list, description="Failure kinds of this job's earlier attempts."
    )

    def record(self) -> JobRecord:
        out = self.output
        return JobRecord(
            job_id=self.spec.job_id,
            hypothesis_id=self.spec.hypothesis_id,
            config=self.spec.config,
            phase=self.spec.phase,
            seed=self.spec.seed,
            status="failed" if self.status not in TERMINAL else self.status,
            validation=out.validation if out else None,
            test=out.test if out else None,
            cost=out.cost if out else None,
            error=out.error if out else None,
            diagnostics=out.diagnostics if out else None,
            footprint=out.footprint if out else None,
        )


class PhaseExecution(BaseModel):
    campaign_id: str
    phase: str
    correlation_id: str
    status: PhaseStatus = "running"
    budget_cpu_seconds: float
    spent_cpu_seconds: float = 0.0
    budget_warned: bool = False
    max_parallel_jobs: int
    jobs: list[TrackedJob]
    runbook: list[RunbookEntry] = Field(default_factory=list)

    def job(self, job_id: str) -> TrackedJob | None:
        return next((j for j in self.jobs if j.spec.job_id == job_id), None)

    def reserved_cpu_seconds(self) -> float:
        """Spent plus the estimates of jobs still in flight: what the budget must still cover."""
        return self.spent_cpu_seconds + sum(
            j.spec.estimated_cpu_seconds for j in self.jobs if j.status in IN_FLIGHT
        )


def phase_key(campaign_id: str, phase: str) -> str:
    return f"{campaign_id}:{phase}"
