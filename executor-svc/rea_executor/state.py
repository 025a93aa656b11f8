"""The executor's state: one document per campaign phase, and nothing in memory.

A campaign waiting for its jobs is this document and nothing else (hibernation): no task,
timer or cache holds it. The ``job.completed`` / ``job.failed`` event itself wakes it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from rea.events import (
    FINISHED_JOB_STATUSES,
    IN_FLIGHT_JOB_STATUSES,
    BudgetResource,
    Envelope,
    JobRecord,
    JobSpec,
    RunbookEntry,
)
from rea.workloads import JobOutput
from rea_executor.shares import Tenant

JobStatus = Literal["pending", "submitted", "running", "completed", "failed", "retried", "cancelled"]
TERMINAL = FINISHED_JOB_STATUSES
IN_FLIGHT = IN_FLIGHT_JOB_STATUSES
PhaseStatus = Literal["running", "paused", "paused_budget", "cancelling", "concluded"]
BUDGET_WARNING_FRACTION = 0.8


class TrackedJob(BaseModel):
    spec: JobSpec
    status: JobStatus = "pending"
    output: JobOutput | None = None
    worker: str | None = None
    partition: int | None = Field(
        default=None, description="The job queue partition it was sent to, when it was placed."
    )
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
            kernels=out.kernels if out else [],
            val_ne_by_epoch=[epoch.val_ne for epoch in out.history] if out else [],
        )


class PhaseExecution(BaseModel):
    campaign_id: str
    phase: str
    correlation_id: str
    status: PhaseStatus = "running"
    budget_cpu_seconds: float
    spent_cpu_seconds: float = 0.0
    budget_gpu_seconds: float | None = Field(default=None, description="None: GPU-s are not capped.")
    spent_gpu_seconds: float = 0.0
    budget_warned: bool = False
    gpu_budget_warned: bool = False
    max_cpu_seconds: float | None = Field(
        default=None, description="The most its grant lets the budget be raised to."
    )
    max_gpu_seconds: float | None = Field(default=None, description="The same for the GPU budget.")
    max_parallel_jobs: int
    jobs: list[TrackedJob]
    runbook: list[RunbookEntry] = Field(default_factory=list)
    weight: float = Field(default=1.0, description="Its campaign's approved budget: its share of workers.")
    stride_pass: float = Field(
        default=0.0, description="CPU seconds granted over weight (see :mod:`rea_executor.shares`)."
    )

    def job(self, job_id: str) -> TrackedJob | None:
        return next((j for j in self.jobs if j.spec.job_id == job_id), None)

    @property
    def shares_workers(self) -> bool:
        """Whether its jobs run on the local job workers, which campaigns share
        (:mod:`rea_executor.shares`). A remote backend's cluster queues and places jobs itself:
        such a phase submits up to its own parallelism."""
        return all(job.spec.backend == "local" for job in self.jobs)

    def tenant(self, key: str) -> Tenant:
        """This phase as the share-out of workers sees it."""
        return Tenant(
            key=key,
            weight=self.weight,
            stride_pass=self.stride_pass,
            in_flight=sum(j.status in IN_FLIGHT for j in self.jobs),
            pending_costs=tuple(j.spec.estimated_cpu_seconds for j in self.jobs if j.status == "pending"),
            max_parallel=self.max_parallel_jobs,
            in_flight_cost=self.in_flight_estimate(),
        )

    def summary(self) -> PhaseSummary:
        """What the share-out of workers reads of this phase, kept beside it in its document."""
        return PhaseSummary(
            campaign_id=self.campaign_id,
            phase=self.phase,
            correlation_id=self.correlation_id,
            status=self.status,
            shares_workers=self.shares_workers,
            tenant=self.tenant(phase_key(self.campaign_id, self.phase)),
            places=[(j.worker, j.partition) for j in self.jobs if j.status in IN_FLIGHT],
        )

    def in_flight_estimate(self) -> float:
        """The estimated CPU seconds of the jobs submitted and not finished."""
        return sum(j.spec.estimated_cpu_seconds for j in self.jobs if j.status in IN_FLIGHT)

    def reserved_cpu_seconds(self) -> float:
        """Spent plus the estimates of jobs still in flight: what the budget must still cover."""
        return self.spent_cpu_seconds + self.in_flight_estimate()

    def reserved_gpu_seconds(self) -> float:
        """The same for GPU (device) seconds."""
        in_flight = sum(j.spec.estimated_gpu_seconds for j in self.jobs if j.status in IN_FLIGHT)
        return self.spent_gpu_seconds + in_flight

    def over_budget(self, job: JobSpec) -> tuple[BudgetResource, str] | None:
        """The budget starting ``job`` now would cross, and why (each resource is checked), or None."""
        if self.reserved_cpu_seconds() + job.estimated_cpu_seconds > self.budget_cpu_seconds:
            why = f"the next job ({job.estimated_cpu_seconds:g} CPU-s estimated) would cross the CPU budget"
            return "cpu_seconds", why
        gpu_budget = self.budget_gpu_seconds
        if gpu_budget is not None and self.reserved_gpu_seconds() + job.estimated_gpu_seconds > gpu_budget:
            why = f"the next job ({job.estimated_gpu_seconds:g} GPU-s estimated) would cross the GPU budget"
            return "gpu_seconds", why
        return None


class PhaseSummary(BaseModel):
    """A phase as the share-out of workers reads it: written with the phase in the same
    transaction (``Store.apply``'s ``summarize``), so every share-out and every campaign's first
    phase reads a few numbers per running phase instead of validating each one's jobs (with many
    campaigns running, that validation was most of the executor's work)."""

    campaign_id: str
    phase: str
    correlation_id: str
    status: PhaseStatus
    shares_workers: bool
    tenant: Tenant = Field(description="Keyed by the phase's document id (``phase_key``).")
    places: list[tuple[str | None, int | None]] = Field(
        description="The worker and partition of each job in flight (placed jobs' places)."
    )


def phase_key(campaign_id: str, phase: str) -> str:
    return f"{campaign_id}:{phase}"


class SlotsGrantedPayload(BaseModel):
    phase: str
    slots: int = Field(ge=0)
    partitions: list[int | None] = Field(
        default_factory=list,
        description="Where each granted job goes (:func:`rea_executor.shares.placements`).",
    )


class SlotsGranted(Envelope):
    """The executor's own decision that a phase may submit ``slots`` more jobs now. Never sent
    on the bus: it is the cause recorded when a share-out wakes a phase, with an id derived
    from the event that freed the slots, so a redelivered event grants nothing twice."""

    type: Literal["slots.granted"] = "slots.granted"
    version: Literal[1] = 1
    payload: SlotsGrantedPayload
