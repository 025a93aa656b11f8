"""What the executor does about a job whose worker went quiet, or whose campaign was cancelled:
pure functions of the phase state and the job ledger's record, so the service around them only
reads, writes and sends.

A job with no live lease is in one of three conditions, told apart by the job ledger
(:mod:`rea.ledger`), which survives restarts:

* never claimed — it still waits in the queue (or the broker lost it, and reconciliation
  sends it again): nothing to do;
* finished — the worker's final word is in the ledger, but the executor has not heard it
  (the broker lost it, or the stack stopped before it was delivered): send it again;
* claimed and not finished — the worker died with it: declare it lost, and the runbook
  resubmits it under a new job id. It is charged what the ledger saw it use, and never less
  than its reserved estimate, because the worker could not measure its last moments.
"""

from __future__ import annotations

from typing import Literal
from uuid import NAMESPACE_URL, uuid5

from rea.events import JobFailed, JobFinishedPayload, JobSpec
from rea.ledger import JobRun
from rea.workloads import JobCost, JobError, JobOutput
from rea_executor.state import IN_FLIGHT, PhaseExecution, TrackedJob

Action = Literal["nothing", "resend", "declare_lost"]


def after_lease_lost(job: TrackedJob | None, run: JobRun | None, holder: str | None) -> Action:
    """What a job in flight whose lease was seen missing needs (see the module docstring).

    ``holder`` is the lease's holder read *after* ``run``: when it is the worker that claimed
    the job, nothing is wrong. The order matters because a worker takes the lease before it
    claims the job in the ledger: read the other way round, a worker that claimed the job
    between the two reads (a job sent again after the broker lost its log, taken just as the
    executor swept) would be declared lost as it starts. A lease held by another worker does
    not count: that one is about to find the job claimed and let its lease go, unexpired."""
    if job is None or job.status not in IN_FLIGHT or run is None or (holder and holder == run.worker):
        return "nothing"
    return "resend" if run.final is not None else "declare_lost"


def lost_cost(spec: JobSpec, run: JobRun | None) -> JobCost:
    """What a lost job is charged. A job whose process never started cost nothing; one that ran
    died with its worker, whose last CPU sample may be a heartbeat old, so it is charged the
    larger of that sample and its reserved estimate (padded by the cost model's safety factor)."""
    if run is None or run.started_at is None:
        return JobCost(cpu_seconds=0.0, wall_seconds=0.0, peak_rss_mb=0.0)
    charged = max(run.cpu_seconds, spec.estimated_cpu_seconds)
    return JobCost(cpu_seconds=round(charged, 3), wall_seconds=0.0, peak_rss_mb=0.0, measured=False)


def _failure(state: PhaseExecution, job: TrackedJob, tag: str, error: JobError, cost: JobCost) -> JobFailed:
    """A ``job.failed`` on the job side's behalf, with an id derived from the job: when several
    executors reach the same conclusion, every consumer dedups it to one."""
    return JobFailed(
        event_id=uuid5(NAMESPACE_URL, f"rea:{tag}:{job.spec.job_id}").hex,
        campaign_id=state.campaign_id,
        correlation_id=state.correlation_id,
        payload=JobFinishedPayload(
            spec=job.spec,
            output=JobOutput(status="failed", error=error, cost=cost),
            worker=job.worker or "unknown",
        ),
    )


def lost_event(state: PhaseExecution, job: TrackedJob, run: JobRun | None) -> JobFailed:
    error = JobError(kind="lost_worker", message=f"the lease of {job.worker or 'its worker'} expired")
    return _failure(state, job, "lost-worker", error, lost_cost(job.spec, run))


def unstarted_cancel_event(state: PhaseExecution, job: TrackedJob) -> JobFailed:
    """A job cancelled before any worker claimed it: no worker ever will, so it is reported here."""
    error = JobError(kind="cancelled", message="cancelled with its campaign before it started")
    nothing = JobCost(cpu_seconds=0.0, wall_seconds=0.0, peak_rss_mb=0.0)
    return _failure(state, job, "cancelled", error, nothing)


def settled_submissions(submitted: dict[str, str], in_flight: set[str]) -> list[str]:
    """Of the outbox's ``job.submitted`` entries (event id -> job id), those whose job is no
    longer in flight: reconciliation must not send that work out again."""
    return [event_id for event_id, job_id in submitted.items() if job_id not in in_flight]
