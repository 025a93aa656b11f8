"""The executor's pure decisions: parallelism, exactly-once recording, budget guard, conclusion."""

from __future__ import annotations

import pytest

from rea.events import (
    Envelope,
    JobCompleted,
    JobFailed,
    JobFinishedPayload,
    JobSpec,
    JobStarted,
    JobStartedPayload,
    JobSubmitted,
    PhaseConcluded,
    PhasePlan,
    PhaseStarted,
    PhaseStartedPayload,
)
from rea.store import Decision
from rea.workloads import JobCost, JobError, JobOutput, SplitMetrics
from rea_executor import logic
from rea_executor.state import PhaseExecution, phase_key

FOLLOW = {"campaign_id": "camp-1", "correlation_id": "corr-1"}


def spec(n: int, estimate: float = 10.0) -> JobSpec:
    return JobSpec(
        job_id=f"job-{n}",
        campaign_id="camp-1",
        phase="validation",
        hypothesis_id=None if n == 0 else f"h{n}",
        workload="ranker",
        dataset="synthetic:rows=3000",
        config={"epochs": 1 + n},
        estimated_cpu_seconds=estimate,
        timeout_s=60,
        memory_mb=1024,
    )


def started(specs: list[JobSpec], budget: float = 1000.0, parallel: int = 2) -> PhaseStarted:
    plan = PhasePlan(
        phase="validation", jobs=specs, estimated_cpu_seconds=sum(s.estimated_cpu_seconds for s in specs)
    )
    return PhaseStarted(
        **FOLLOW,
        payload=PhaseStartedPayload(plan=plan, budget_cpu_seconds=budget, max_parallel_jobs=parallel),
    )


def ok_output(cpu: float, ne: float = 0.8) -> JobOutput:
    metrics = SplitMetrics(ne=ne, auc=0.7, logloss=0.4, rows=100)
    return JobOutput(
        status="ok",
        validation=metrics,
        test=metrics,
        cost=JobCost(cpu_seconds=cpu, wall_seconds=cpu, peak_rss_mb=50),
    )


def completed(job: JobSpec, cpu: float = 10.0) -> JobCompleted:
    return JobCompleted(**FOLLOW, payload=JobFinishedPayload(spec=job, output=ok_output(cpu), worker="w1"))


def failed(job: JobSpec, cpu: float = 1.0, kind: str = "oom") -> JobFailed:
    output = JobOutput(
        status="failed",
        cost=JobCost(cpu_seconds=cpu, wall_seconds=cpu, peak_rss_mb=50),
        error=JobError.model_validate({"kind": kind, "message": "MemoryError"}),
    )
    return JobFailed(**FOLLOW, payload=JobFinishedPayload(spec=job, output=output, worker="w2"))


def submitted_ids(emit: list[Envelope]) -> list[str]:
    return [e.payload.job_id for e in emit if isinstance(e, JobSubmitted)]


def statuses(state: PhaseExecution) -> dict[str, str]:
    return {j.spec.job_id: j.status for j in state.jobs}


def start(specs: list[JobSpec], budget: float = 1000.0, parallel: int = 2) -> Decision[PhaseExecution]:
    return logic.on_phase_started(None, started(specs, budget, parallel))


def apply(state: PhaseExecution, event: JobCompleted | JobFailed) -> Decision[PhaseExecution]:
    decision = logic.on_job_finished(state, event)
    assert decision.state is not None, f"{event.type} for {event.payload.spec.job_id} was ignored"
    return decision


# ---- phase start --------------------------------------------------------------------


@pytest.mark.parametrize(("jobs", "parallel", "expected"), [(5, 2, 2), (5, 1, 1), (3, 8, 3), (4, 4, 4)])
def test_phase_start_submits_at_most_max_parallel_jobs(jobs: int, parallel: int, expected: int) -> None:
    specs = [spec(i) for i in range(jobs)]
    decision = start(specs, parallel=parallel)
    assert submitted_ids(decision.emit) == [s.job_id for s in specs[:expected]]
    assert decision.state is not None
    assert list(statuses(decision.state).values()) == ["submitted"] * expected + ["pending"] * (
        jobs - expected
    )
    assert decision.state.status == "running"
    assert not any(isinstance(e, PhaseConcluded) for e in decision.emit)


def test_submitted_events_carry_spec_and_campaign_envelope() -> None:
    specs = [spec(0)]
    [event] = start(specs).emit
    assert isinstance(event, JobSubmitted)
    assert event.payload == specs[0]
    assert (event.campaign_id, event.correlation_id) == ("camp-1", "corr-1")
    assert event.key() == b"job-0"


def test_phase_state_is_built_from_the_event() -> None:
    decision = start([spec(0), spec(1)], budget=123.0, parallel=3)
    state = decision.state
    assert state is not None
    assert (state.campaign_id, state.phase, state.correlation_id) == ("camp-1", "validation", "corr-1")
    assert (state.budget_cpu_seconds, state.max_parallel_jobs, state.spent_cpu_seconds) == (123.0, 3, 0.0)
    assert phase_key(state.campaign_id, state.phase) == "camp-1:validation"


def test_repeated_phase_start_is_a_no_op() -> None:
    first = start([spec(0), spec(1)])
    again = logic.on_phase_started(first.state, started([spec(0), spec(1)]))
    assert again.state is None and again.emit == []


# ---- job results --------------------------------------------------------------------


def test_finished_job_is_recorded_and_the_next_pending_job_submitted() -> None:
    specs = [spec(i) for i in range(4)]
    state = start(specs, parallel=2).state
    assert state is not None
    decision = apply(state, completed(specs[0], cpu=7.5))
    assert decision.state is not None
    assert statuses(decision.state) == {
        "job-0": "completed",
        "job-1": "submitted",
        "job-2": "submitted",
        "job-3": "pending",
    }
    assert submitted_ids(decision.emit) == ["job-2"]
    assert decision.state.spent_cpu_seconds == 7.5
    job0 = decision.state.job("job-0")
    assert job0 is not None and job0.worker == "w1" and job0.output == ok_output(7.5)
    # the input state is not mutated
    assert statuses(state)["job-0"] == "submitted" and state.spent_cpu_seconds == 0.0


def test_duplicate_result_for_a_finished_job_is_a_no_op() -> None:
    specs = [spec(i) for i in range(3)]
    state = start(specs, parallel=1).state
    assert state is not None
    first = apply(state, completed(specs[0], cpu=5))
    assert first.state is not None
    # a redelivered copy (new event id, same job) and a late failure for the same job
    for duplicate in (completed(specs[0], cpu=5), failed(specs[0])):
        again = logic.on_job_finished(first.state, duplicate)
        assert again.state is None and again.emit == []
    assert first.state.spent_cpu_seconds == 5


def test_result_for_an_unknown_job_or_phase_is_ignored() -> None:
    state = start([spec(0)]).state
    stranger = logic.on_job_finished(state, completed(spec(99)))
    assert stranger.state is None and stranger.emit == []
    no_phase = logic.on_job_finished(None, completed(spec(0)))
    assert no_phase.state is None and no_phase.emit == []


def run_to_end(
    specs: list[JobSpec], budget: float, parallel: int, cost: dict[str, float] | None = None
) -> tuple[PhaseExecution, list[Envelope], list[str]]:
    """Drive a phase: finish submitted jobs in order until nothing is in flight."""
    cost = cost or {}
    decision = start(specs, budget, parallel)
    assert decision.state is not None
    state, emitted = decision.state, list(decision.emit)
    submitted = submitted_ids(decision.emit)
    assert state.reserved_cpu_seconds() <= budget
    finished: set[str] = set()
    while True:
        next_up = next((s for s in specs if s.job_id in submitted and s.job_id not in finished), None)
        if next_up is None:
            return state, emitted, submitted
        finished.add(next_up.job_id)
        spend = cost.get(next_up.job_id, next_up.estimated_cpu_seconds)
        decision = apply(state, completed(next_up, cpu=spend))
        assert decision.state is not None
        state = decision.state
        emitted += decision.emit
        submitted += submitted_ids(decision.emit)
        if submitted_ids(decision.emit):
            # the guard: whatever it submits fits the budget with everything in flight
            assert state.reserved_cpu_seconds() <= budget


def test_phase_concludes_exactly_once_when_all_jobs_are_terminal() -> None:
    specs = [spec(i) for i in range(5)]
    state, emitted, submitted = run_to_end(specs, budget=1000, parallel=2)
    assert submitted == [s.job_id for s in specs]
    conclusions = [e for e in emitted if isinstance(e, PhaseConcluded)]
    assert len(conclusions) == 1
    assert emitted[-1] is conclusions[0]
    [concluded] = conclusions
    assert concluded.payload.phase == "validation"
    assert [r.job_id for r in concluded.payload.jobs] == [s.job_id for s in specs]
    assert all(r.status == "completed" and r.validation is not None for r in concluded.payload.jobs)
    assert state.status == "concluded"
    assert state.spent_cpu_seconds == 50


def test_budget_guard_skips_jobs_that_would_cross_the_cap() -> None:
    # 25 CPU-s: two 10 CPU-s jobs fit with both in flight; the third (20 + 10) would not.
    specs = [spec(i) for i in range(3)]
    decision = start(specs, budget=25, parallel=3)
    assert decision.state is not None
    assert submitted_ids(decision.emit) == ["job-0", "job-1"]
    assert statuses(decision.state)["job-2"] == "skipped_budget"
    d1 = apply(decision.state, completed(specs[0], cpu=10))
    assert submitted_ids(d1.emit) == [] and not any(isinstance(e, PhaseConcluded) for e in d1.emit)
    assert d1.state is not None
    d2 = apply(d1.state, completed(specs[1], cpu=10))
    [concluded] = d2.emit
    assert isinstance(concluded, PhaseConcluded)
    assert [r.status for r in concluded.payload.jobs] == ["completed", "completed", "skipped_budget"]
    skipped = concluded.payload.jobs[2]
    assert skipped.cost is None and skipped.validation is None


def test_budget_guard_uses_actual_spend_of_finished_jobs() -> None:
    # One at a time under 35 CPU-s. job-0 is estimated at 10 but costs 20, so after it only
    # one more 10 CPU-s job fits (20 + 10 <= 35 < 20 + 10 + 10).
    specs = [spec(i) for i in range(4)]
    state, emitted, submitted = run_to_end(specs, budget=35, parallel=1, cost={"job-0": 20.0})
    assert submitted == ["job-0", "job-1"]
    assert statuses(state) == {
        "job-0": "completed",
        "job-1": "completed",
        "job-2": "skipped_budget",
        "job-3": "skipped_budget",
    }
    assert sum(isinstance(e, PhaseConcluded) for e in emitted) == 1


def test_budget_guard_can_submit_a_cheaper_job_after_skipping_an_expensive_one() -> None:
    specs = [spec(0, 10), spec(1, 500), spec(2, 5)]
    decision = start(specs, budget=20, parallel=3)
    assert decision.state is not None
    assert submitted_ids(decision.emit) == ["job-0", "job-2"]
    assert statuses(decision.state)["job-1"] == "skipped_budget"


def test_budget_too_small_for_any_job_concludes_immediately() -> None:
    decision = start([spec(0, 50), spec(1, 60)], budget=40, parallel=2)
    assert decision.state is not None and decision.state.status == "concluded"
    [concluded] = decision.emit
    assert isinstance(concluded, PhaseConcluded)
    assert [r.status for r in concluded.payload.jobs] == ["skipped_budget", "skipped_budget"]


def test_failed_job_is_recorded_as_failed_and_the_phase_still_concludes() -> None:
    specs = [spec(0), spec(1)]
    state = start(specs, parallel=2).state
    assert state is not None
    d1 = apply(state, failed(specs[1], cpu=3.0, kind="oom"))
    assert d1.state is not None
    assert statuses(d1.state) == {"job-0": "submitted", "job-1": "failed"}
    assert d1.state.spent_cpu_seconds == 3.0  # a failure's CPU counts against the budget
    assert d1.emit == []
    d2 = apply(d1.state, completed(specs[0], cpu=10))
    [concluded] = d2.emit
    assert isinstance(concluded, PhaseConcluded)
    by_id = {r.job_id: r for r in concluded.payload.jobs}
    assert by_id["job-1"].status == "failed"
    assert by_id["job-1"].error is not None and by_id["job-1"].error.kind == "oom"
    assert by_id["job-1"].cost is not None and by_id["job-1"].cost.cpu_seconds == 3.0
    assert by_id["job-0"].status == "completed"
    assert d2.state is not None and d2.state.spent_cpu_seconds == 13.0


def test_all_jobs_failing_still_concludes_once() -> None:
    specs = [spec(0), spec(1)]
    state = start(specs, parallel=2).state
    assert state is not None
    d1 = apply(state, failed(specs[0]))
    assert d1.state is not None
    d2 = apply(d1.state, failed(specs[1]))
    assert [type(e) for e in d2.emit] == [PhaseConcluded]
    assert d2.state is not None
    again = logic.on_job_finished(d2.state, failed(specs[1]))
    assert again.state is None and again.emit == []


# ---- job started --------------------------------------------------------------------


def job_started(job_id: str, worker: str = "host/worker-1") -> JobStarted:
    return JobStarted(**FOLLOW, payload=JobStartedPayload(job_id=job_id, phase="validation", worker=worker))


def test_job_started_marks_a_submitted_job_running() -> None:
    state = start([spec(0), spec(1)], parallel=1).state
    assert state is not None
    decision = logic.on_job_started(state, job_started("job-0"))
    assert decision.state is not None and decision.emit == []
    job = decision.state.job("job-0")
    assert job is not None and job.status == "running" and job.worker == "host/worker-1"
    # running jobs still count as in flight: the parallelism limit holds
    assert decision.state.reserved_cpu_seconds() == 10.0


@pytest.mark.parametrize("job_id", ["job-1", "job-99"])  # pending; unknown
def test_job_started_for_a_job_not_submitted_is_ignored(job_id: str) -> None:
    state = start([spec(0), spec(1)], parallel=1).state
    decision = logic.on_job_started(state, job_started(job_id))
    assert decision.state is None


def test_late_job_started_after_the_result_is_ignored() -> None:
    specs = [spec(0), spec(1)]
    state = start(specs, parallel=2).state
    assert state is not None
    done = apply(state, completed(specs[0]))
    late = logic.on_job_started(done.state, job_started("job-0"))
    assert late.state is None
