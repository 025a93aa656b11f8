"""The executor's decisions: pure functions of (phase state, event) -> Decision.

Budget guardrail: a job is submitted only if what is spent, plus the estimates of jobs in
flight, plus its own estimate fits the budget; otherwise it is skipped and recorded.
"""

from __future__ import annotations

from rea.events import (
    Envelope,
    JobCompleted,
    JobFailed,
    JobStarted,
    JobSubmitted,
    PhaseConcluded,
    PhaseConcludedPayload,
    PhaseStarted,
)
from rea.store import Decision
from rea_executor.state import IN_FLIGHT, TERMINAL, PhaseExecution, TrackedJob


def _follow(event: Envelope) -> dict[str, str]:
    return {"campaign_id": event.campaign_id, "correlation_id": event.correlation_id}


def schedule(state: PhaseExecution, cause: Envelope) -> tuple[PhaseExecution, list[Envelope]]:
    """Submit pending jobs up to the parallelism limit and within budget; conclude when done."""
    jobs = [job.model_copy() for job in state.jobs]
    state = state.model_copy(update={"jobs": jobs})
    emit: list[Envelope] = []
    in_flight = sum(job.status in IN_FLIGHT for job in jobs)
    for job in jobs:
        if job.status != "pending":
            continue
        if state.reserved_cpu_seconds() + job.spec.estimated_cpu_seconds > state.budget_cpu_seconds:
            job.status = "skipped_budget"
            continue
        if in_flight >= state.max_parallel_jobs:
            break
        job.status = "submitted"
        in_flight += 1
        emit.append(JobSubmitted(**_follow(cause), payload=job.spec))
    if all(job.status in TERMINAL for job in jobs):
        state.status = "concluded"
        emit.append(
            PhaseConcluded(
                **_follow(cause),
                payload=PhaseConcludedPayload(phase=state.phase, jobs=[job.record() for job in jobs]),
            )
        )
    return state, emit


def on_phase_started(state: PhaseExecution | None, event: PhaseStarted) -> Decision[PhaseExecution]:
    if state is not None:
        return Decision()
    plan = event.payload.plan
    fresh = PhaseExecution(
        campaign_id=event.campaign_id,
        phase=plan.phase,
        correlation_id=event.correlation_id,
        budget_cpu_seconds=event.payload.budget_cpu_seconds,
        max_parallel_jobs=event.payload.max_parallel_jobs,
        jobs=[TrackedJob(spec=spec) for spec in plan.jobs],
    )
    new_state, emit = schedule(fresh, event)
    return Decision(new_state, emit)


def on_job_started(state: PhaseExecution | None, event: JobStarted) -> Decision[PhaseExecution]:
    job = state.job(event.payload.job_id) if state else None
    if state is None or job is None or job.status != "submitted":
        return Decision()
    jobs = [
        j.model_copy(update={"status": "running", "worker": event.payload.worker}) if j is job else j
        for j in state.jobs
    ]
    return Decision(state.model_copy(update={"jobs": jobs}))


def on_job_finished(
    state: PhaseExecution | None, event: JobCompleted | JobFailed
) -> Decision[PhaseExecution]:
    """Record a result once (a duplicate result for a finished job changes nothing) and wake up."""
    job = state.job(event.payload.spec.job_id) if state else None
    if state is None or job is None or job.status in TERMINAL:
        return Decision()
    output = event.payload.output
    status = "completed" if isinstance(event, JobCompleted) else "failed"
    cost = output.cost.cpu_seconds if output.cost else 0.0
    jobs = [
        j.model_copy(update={"status": status, "output": output, "worker": event.payload.worker})
        if j is job
        else j
        for j in state.jobs
    ]
    updated = state.model_copy(update={"jobs": jobs, "spent_cpu_seconds": state.spent_cpu_seconds + cost})
    new_state, emit = schedule(updated, event)
    return Decision(new_state, emit)
