"""What the executor does about a quiet worker: decided from the phase state and the job ledger."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from rea.events import JobSpec
from rea.ledger import JobRun
from rea.workloads import get_workload
from rea_executor import recovery
from rea_executor.state import PhaseExecution, TrackedJob

SPEC = JobSpec(
    job_id="camp-1-validation-baseline-s0",
    campaign_id="camp-1",
    phase="validation",
    workload="ranker",
    dataset="synthetic:rows=3000",
    config=get_workload("ranker").schema.resolve({}),
    estimated_cpu_seconds=12.0,
    timeout_s=60,
    memory_mb=1024,
)
NOW = datetime(2030, 1, 1, tzinfo=UTC)


def job(status: str = "running") -> TrackedJob:
    return TrackedJob.model_validate({"spec": SPEC.model_dump(), "status": status, "worker": "w1"})


def run(**fields: object) -> JobRun:
    return JobRun.model_validate({"job_id": SPEC.job_id, "campaign_id": "camp-1", **fields})


@pytest.mark.parametrize(
    ("tracked", "ledger", "action"),
    [
        (job("submitted"), None, "nothing"),  # never claimed: it waits in the queue
        (job("running"), run(final=b"{}"), "resend"),  # it reported; nobody heard
        (job("submitted"), run(final=b"{}"), "resend"),
        (job("running"), run(started_at=NOW, cpu_seconds=3.0), "declare_lost"),
        (job("submitted"), run(), "declare_lost"),  # claimed, then its worker died before it started
        (job("completed"), run(final=b"{}"), "nothing"),  # settled: nothing to do
        (None, run(), "nothing"),
    ],
)
def test_what_a_job_without_a_live_lease_needs(
    tracked: TrackedJob | None, ledger: JobRun | None, action: str
) -> None:
    assert recovery.after_lease_lost(tracked, ledger, holder=None) == action


@pytest.mark.parametrize(
    "ledger",
    [run(worker="w2"), run(worker="w2", started_at=NOW, cpu_seconds=1.0), run(worker="w2", final=b"{}")],
)
def test_a_lease_held_by_the_claimant_by_the_time_the_ledger_was_read_needs_nothing(ledger: JobRun) -> None:
    """The sweep saw no lease, but a worker took the job before the ledger was read (a job sent
    again after the broker lost its log): it is starting, not lost, and its final word, if any,
    is on its way. A lease held by anyone else is no sign of life of the claimant."""
    assert recovery.after_lease_lost(job("submitted"), ledger, holder="w2") == "nothing"
    expected = "resend" if ledger.final is not None else "declare_lost"
    assert recovery.after_lease_lost(job("submitted"), ledger, holder="w3") == expected


def test_a_lost_job_is_charged_at_least_what_the_os_saw_and_never_less_than_its_estimate() -> None:
    assert recovery.lost_cost(SPEC, run(started_at=NOW, cpu_seconds=30.0)).cpu_seconds == 30.0
    assert recovery.lost_cost(SPEC, run(started_at=NOW, cpu_seconds=2.0)).cpu_seconds == 12.0
    never_started = recovery.lost_cost(SPEC, run())
    assert never_started.cpu_seconds == 0.0 and never_started.measured


def test_the_lost_event_has_one_id_per_job_so_every_executor_agrees() -> None:
    state = PhaseExecution(
        campaign_id="camp-1",
        phase="validation",
        correlation_id="c",
        budget_cpu_seconds=100,
        max_parallel_jobs=2,
        jobs=[job()],
    )
    first = recovery.lost_event(state, job(), run(started_at=NOW))
    again = recovery.lost_event(state, job(), run(started_at=NOW, cpu_seconds=5.0))
    assert first.event_id == again.event_id
    assert first.payload.output.error is not None and first.payload.output.error.kind == "lost_worker"
    cancelled = recovery.unstarted_cancel_event(state, job("submitted"))
    assert cancelled.event_id != first.event_id
    assert cancelled.payload.output.cost is not None and cancelled.payload.output.cost.cpu_seconds == 0


def test_reconciliation_leaves_out_the_submissions_of_settled_jobs() -> None:
    submitted = {"e1": "job-a", "e2": "job-b", "e3": "job-c"}
    assert recovery.settled_submissions(submitted, in_flight={"job-b"}) == ["e1", "e3"]
