"""The executor's decisions: pure functions of (phase state, event) -> Decision.

Budget guardrail: a job is submitted only if what is spent, plus the estimates of jobs in
flight, plus its own estimate fits the budget. When the next job cannot fit, the phase
pauses (``paused_budget``) until a person extends the budget; a warning goes out once 80%
of the budget is spent. Failed jobs go through the runbook (:mod:`rea_executor.runbook`).
A cancelled campaign's phase starts nothing more, retries nothing, and concludes once the
jobs in flight have stopped (the service asks their workers through the job ledger).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from rea.events import (
    BudgetExtended,
    BudgetResource,
    BudgetWarning,
    CampaignCancelled,
    CampaignPaused,
    CampaignResumed,
    Envelope,
    JobCompleted,
    JobFailed,
    JobStarted,
    JobSubmitted,
    PhaseConcluded,
    PhaseConcludedPayload,
    PhasePaused,
    PhaseResumed,
    PhaseStarted,
    PhaseStatusPayload,
    RunbookApplied,
    RunbookEntry,
)
from rea.grants import ceiling_problem
from rea.store import Decision
from rea.workloads import JobError
from rea_executor.runbook import recover
from rea_executor.state import (
    BUDGET_WARNING_FRACTION,
    IN_FLIGHT,
    TERMINAL,
    JobStatus,
    PhaseExecution,
    PhaseStatus,
    SlotsGranted,
    TrackedJob,
)


def _follow(event: Envelope) -> dict[str, str]:
    return {"campaign_id": event.campaign_id, "correlation_id": event.correlation_id}


def _status(
    state: PhaseExecution,
    reason: str,
    cause: Literal["person", "budget"] = "budget",
    resource: BudgetResource = "cpu_seconds",
) -> PhaseStatusPayload:
    return PhaseStatusPayload(
        phase=state.phase,
        cause=cause,
        reason=reason,
        spent_cpu_seconds=state.spent_cpu_seconds,
        budget_cpu_seconds=state.budget_cpu_seconds,
        resource=resource,
        spent_gpu_seconds=state.spent_gpu_seconds,
        budget_gpu_seconds=state.budget_gpu_seconds,
    )


def _warnings(state: PhaseExecution, cause: Envelope) -> list[Envelope]:
    """A budget warning per resource, once, when 80% of it is spent (mutates ``state``'s flags)."""
    emit: list[Envelope] = []
    cpu_warning = BUDGET_WARNING_FRACTION * state.budget_cpu_seconds
    if not state.budget_warned and state.spent_cpu_seconds >= cpu_warning:
        state.budget_warned = True
        emit.append(BudgetWarning(**_follow(cause), payload=_status(state, "80% of the budget is spent")))
    gpu_budget = state.budget_gpu_seconds
    if (
        gpu_budget is not None
        and not state.gpu_budget_warned
        and state.spent_gpu_seconds >= BUDGET_WARNING_FRACTION * gpu_budget
    ):
        state.gpu_budget_warned = True
        status = _status(state, "80% of the GPU budget is spent", resource="gpu_seconds")
        emit.append(BudgetWarning(**_follow(cause), payload=status))
    return emit


def schedule(
    state: PhaseExecution, cause: Envelope, room: int | None = None, partitions: Sequence[int | None] = ()
) -> tuple[PhaseExecution, list[Envelope]]:
    """Submit pending jobs up to the parallelism limit and within budget; conclude when done.
    ``room``: at most this many more, the phase's share of the workers now (unlimited: None, and
    for a phase whose jobs run on a remote backend); ``partitions``: where to send each, in order
    (by key past its end)."""
    state = state.model_copy(update={"jobs": [job.model_copy() for job in state.jobs]})
    if not state.shares_workers:
        room, partitions = None, ()
    emit = _warnings(state, cause)
    if state.status == "running":
        in_flight = sum(job.status in IN_FLIGHT for job in state.jobs)
        limit = state.max_parallel_jobs if room is None else min(state.max_parallel_jobs, in_flight + room)
        submitted = 0
        for job in state.jobs:
            if job.status != "pending" or in_flight >= limit:
                continue
            if crossing := state.over_budget(job.spec):
                state.status = "paused_budget"
                resource, why = crossing
                reason = f"{why}; extend it to continue"
                emit.append(PhasePaused(**_follow(cause), payload=_status(state, reason, resource=resource)))
                break
            placed = partitions[submitted] if submitted < len(partitions) else None
            submitted += 1
            job.status, job.partition = "submitted", placed
            in_flight += 1
            state.stride_pass += job.spec.estimated_cpu_seconds / max(state.weight, 1e-9)
            emit.append(JobSubmitted(**_follow(cause), payload=job.spec, partition=placed))
    if all(job.status in TERMINAL for job in state.jobs):
        state.status = "concluded"
        records = [job.record() for job in state.jobs]
        emit.append(
            PhaseConcluded(**_follow(cause), payload=PhaseConcludedPayload(phase=state.phase, jobs=records))
        )
    return state, emit


def on_phase_started(
    state: PhaseExecution | None,
    event: PhaseStarted,
    cancelled: bool = False,
    stride_pass: float = 0.0,
    room: int | None = None,
) -> Decision[PhaseExecution]:
    """Track the phase's jobs and submit the first; ``cancelled``: the campaign was cancelled
    before this phase reached the executor, so none of its jobs starts. ``stride_pass``: where
    it joins the share-out of workers (:func:`rea_executor.shares.joining_pass`)."""
    if state is not None:
        return Decision()
    plan = event.payload.plan
    fresh = PhaseExecution(
        weight=event.payload.campaign_budget_cpu_seconds or event.payload.budget_cpu_seconds,
        stride_pass=stride_pass,
        campaign_id=event.campaign_id,
        phase=plan.phase,
        correlation_id=event.correlation_id,
        status="cancelling" if cancelled else "running",
        budget_cpu_seconds=event.payload.budget_cpu_seconds,
        budget_gpu_seconds=event.payload.budget_gpu_seconds,
        max_cpu_seconds=event.payload.max_cpu_seconds,
        max_gpu_seconds=event.payload.max_gpu_seconds,
        max_parallel_jobs=event.payload.max_parallel_jobs,
        jobs=[TrackedJob(spec=spec, status="cancelled" if cancelled else "pending") for spec in plan.jobs],
    )
    return Decision(*schedule(fresh, event, room))


def on_job_started(
    state: PhaseExecution | None, event: JobStarted, room: int | None = None
) -> Decision[PhaseExecution]:
    """Note that a worker took the job (``room`` is unused: a start submits nothing)."""
    job = state.job(event.payload.job_id) if state else None
    if state is None or job is None or job.status != "submitted":
        return Decision()
    jobs = [
        j.model_copy(update={"status": "running", "worker": event.payload.worker}) if j is job else j
        for j in state.jobs
    ]
    return Decision(state.model_copy(update={"jobs": jobs}))


def on_job_finished(
    state: PhaseExecution | None, event: JobCompleted | JobFailed, room: int | None = None
) -> Decision[PhaseExecution]:
    """Record a result once (a duplicate result for a finished job changes nothing) and wake up."""
    job = state.job(event.payload.spec.job_id) if state else None
    if state is None or job is None or job.status in TERMINAL:
        return Decision()
    output = event.payload.output
    cost = output.cost.cpu_seconds if output.cost else 0.0
    status: JobStatus = "completed" if isinstance(event, JobCompleted) else "failed"
    jobs = list(state.jobs)
    emit: list[Envelope] = []
    if state.status == "cancelling" and isinstance(event, JobFailed):
        status = "cancelled"  # whatever stopped it, nothing is retried for a cancelled campaign
    elif isinstance(event, JobFailed):
        error = output.error or JobError(kind="error", message="the job failed without saying why")
        status, retry, entry = _apply_runbook(job, error, event.occurred_at)
        if retry is not None:
            jobs.append(retry)
        emit.append(RunbookApplied(**_follow(event), payload=entry))
    index = jobs.index(job)
    jobs[index] = job.model_copy(update={"status": status, "output": output, "worker": event.payload.worker})
    updated = state.model_copy(
        update={
            "jobs": jobs,
            "spent_cpu_seconds": state.spent_cpu_seconds + cost,
            "spent_gpu_seconds": state.spent_gpu_seconds + (output.cost.gpu_seconds if output.cost else 0.0),
            # Shares count what the job really used: its grant advanced the pass by its estimate.
            "stride_pass": state.stride_pass
            + (cost - job.spec.estimated_cpu_seconds) / max(state.weight, 1e-9),
            "runbook": _runbook(state, emit),
        }
    )
    new_state, scheduled = schedule(updated, event, room)
    return Decision(new_state, emit + scheduled)


def on_slots_granted(state: PhaseExecution | None, event: SlotsGranted) -> Decision[PhaseExecution]:
    """A share-out gave this phase room for more jobs: submit up to that many, each to the
    partition it was placed on."""
    if state is None or state.status != "running":
        return Decision()
    return Decision(*schedule(state, event, event.payload.slots, event.payload.partitions))


def on_failure_declared(
    state: PhaseExecution | None, event: JobFailed, room: int | None = None
) -> Decision[PhaseExecution]:
    """The executor reports a job's failure on the job side's behalf: its worker's lease expired
    (``lost_worker``), or it was cancelled before any worker took it.

    ``event`` has an id derived from the job, so when several executors reach the same
    conclusion only the first records it (dedup on ``event_id``). It is also emitted, so the
    failure reaches the insights DB like any other.
    """
    decision = on_job_finished(state, event, room)
    if decision.state is None:
        return decision
    return Decision(decision.state, [event, *decision.emit])


def _apply_runbook(
    job: TrackedJob, error: JobError, now: datetime
) -> tuple[JobStatus, TrackedJob | None, RunbookEntry]:
    recovery = recover(job.spec, error, job.failures, now)
    retry = None
    if recovery.retry is not None:
        retry = TrackedJob(spec=recovery.retry, failures=[*job.failures, error.kind])
    entry = RunbookEntry(
        job_id=job.spec.job_id,
        hypothesis_id=job.spec.hypothesis_id,
        failure=error.kind,
        message=error.message[:500],
        action=recovery.action,
        reason=recovery.reason,
        retry_job_id=recovery.retry.job_id if recovery.retry else None,
        escalated=recovery.escalate,
    )
    return ("retried" if retry else "failed"), retry, entry


def _runbook(state: PhaseExecution, emitted: list[Envelope]) -> list[RunbookEntry]:
    return state.runbook + [e.payload for e in emitted if isinstance(e, RunbookApplied)]


def on_campaign_paused(
    state: PhaseExecution | None, event: CampaignPaused, room: int | None = None
) -> Decision[PhaseExecution]:
    """Stop submitting (``room`` is unused: a pause submits nothing)."""
    if state is None or state.status in ("concluded", "paused", "cancelling"):
        return Decision()
    paused = state.model_copy(update={"status": "paused"})
    reason = f"paused by {event.payload.by}"
    return Decision(paused, [PhasePaused(**_follow(event), payload=_status(paused, reason, "person"))])


def on_campaign_resumed(
    state: PhaseExecution | None, event: CampaignResumed, room: int | None = None
) -> Decision[PhaseExecution]:
    if state is None or state.status != "paused":
        return Decision()
    return _resume(state, event, f"resumed by {event.payload.by}", "person", room)


def on_campaign_cancelled(
    state: PhaseExecution | None, event: CampaignCancelled, room: int | None = None
) -> Decision[PhaseExecution]:
    """Cancel the jobs not started yet; the phase concludes once those in flight have stopped
    (``room`` is unused: a cancelled phase submits nothing)."""
    if state is None or state.status in ("concluded", "cancelling"):
        return Decision()
    jobs = [j.model_copy(update={"status": "cancelled"}) if j.status == "pending" else j for j in state.jobs]
    cancelling = state.model_copy(update={"jobs": jobs, "status": "cancelling"})
    return Decision(*schedule(cancelling, event))


def to_stop(state: PhaseExecution) -> list[TrackedJob]:
    """The jobs of a cancelled phase whose workers must be told to stop."""
    return [j for j in state.jobs if j.status in IN_FLIGHT] if state.status == "cancelling" else []


def on_budget_extended(
    state: PhaseExecution | None, event: BudgetExtended, room: int | None = None
) -> Decision[PhaseExecution]:
    """Raise the running phase's budget, unless that goes past its grant's maxima (the planner
    refuses the same extension, from the same maxima, with a notice)."""
    if state is None or state.status == "concluded":
        return Decision()
    added = event.payload
    budget = state.budget_cpu_seconds + added.cpu_seconds
    gpu = None if state.budget_gpu_seconds is None else state.budget_gpu_seconds + added.gpu_seconds
    if ceiling_problem(budget, gpu, state.max_cpu_seconds, state.max_gpu_seconds) is not None:
        return Decision()
    warned = state.budget_warned and state.spent_cpu_seconds >= BUDGET_WARNING_FRACTION * budget
    update: dict[str, object] = {"budget_cpu_seconds": budget, "budget_warned": warned}
    if gpu is not None:
        update["budget_gpu_seconds"] = gpu
        update["gpu_budget_warned"] = (
            state.gpu_budget_warned and state.spent_gpu_seconds >= BUDGET_WARNING_FRACTION * gpu
        )
    extended = state.model_copy(update=update)
    if state.status != "paused_budget":
        return Decision(extended)
    reason = f"budget extended by {added.describe()} by {added.by}"
    return _resume(extended, event, reason, room=room)


def _resume(
    state: PhaseExecution,
    cause: Envelope,
    reason: str,
    who: Literal["person", "budget"] = "budget",
    room: int | None = None,
) -> Decision[PhaseExecution]:
    running: PhaseStatus = "running"
    resumed = state.model_copy(update={"status": running})
    new_state, emit = schedule(resumed, cause, room)
    if new_state.status == "paused_budget":
        return Decision(new_state, emit)
    return Decision(new_state, [PhaseResumed(**_follow(cause), payload=_status(resumed, reason, who)), *emit])
