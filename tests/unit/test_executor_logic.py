"""The executor's pure decisions: parallelism, exactly-once recording, budget guard and pause,
people's pause / resume / budget extension, the runbook for failed jobs, conclusion."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar
from uuid import NAMESPACE_URL, uuid5

import pytest

from rea.events import (
    BudgetExtended,
    BudgetExtendedPayload,
    BudgetWarning,
    CampaignCancelled,
    CampaignPaused,
    CampaignResumed,
    Envelope,
    Event,
    JobCompleted,
    JobFailed,
    JobFinishedPayload,
    JobSpec,
    JobStarted,
    JobStartedPayload,
    JobSubmitted,
    PersonAction,
    PhaseConcluded,
    PhasePaused,
    PhasePlan,
    PhaseResumed,
    PhaseStarted,
    PhaseStartedPayload,
    RunbookApplied,
    encode_event,
    parse_event,
)
from rea.store import Decision
from rea.workloads import JobCost, JobError, JobOutput, SplitMetrics, get_workload
from rea_executor import logic
from rea_executor.runbook import BACKOFF_BASE_S, MAX_ATTEMPTS
from rea_executor.state import (
    TERMINAL,
    PhaseExecution,
    PhaseSummary,
    SlotsGranted,
    SlotsGrantedPayload,
    phase_key,
)
from rea_planner.logic import summarize

FOLLOW = {"campaign_id": "camp-1", "correlation_id": "corr-1"}
SCHEMA = get_workload("ranker").schema
E = TypeVar("E", bound=Envelope)


def spec(n: int, estimate: float = 10.0) -> JobSpec:
    return JobSpec(
        job_id=f"job-{n}",
        campaign_id="camp-1",
        phase="validation",
        hypothesis_id=None if n == 0 else f"h{n}",
        workload="ranker",
        dataset="synthetic:rows=3000",
        config=SCHEMA.resolve({"epochs": 1 + n % 30}),  # complete, as the planner makes them
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
        error=JobError.model_validate({"kind": kind, "message": f"{kind}: MemoryError"}),
    )
    return JobFailed(**FOLLOW, payload=JobFinishedPayload(spec=job, output=output, worker="w2"))


def submitted_ids(emit: Sequence[Event]) -> list[str]:
    return [e.payload.job_id for e in emit if isinstance(e, JobSubmitted)]


def of_type(emit: Sequence[Event], kind: type[E]) -> list[E]:
    return [e for e in emit if isinstance(e, kind)]


def types(emit: Sequence[Event]) -> list[type[Event]]:
    return [type(e) for e in emit]


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
) -> tuple[PhaseExecution, list[Event], list[str]]:
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


def test_budget_guard_pauses_before_a_job_that_would_cross_the_cap() -> None:
    # 25 CPU-s: two 10 CPU-s jobs fit with both in flight; the third (20 + 10) would not.
    specs = [spec(i) for i in range(3)]
    decision = start(specs, budget=25, parallel=3)
    assert decision.state is not None
    assert submitted_ids(decision.emit) == ["job-0", "job-1"]
    assert statuses(decision.state)["job-2"] == "pending"
    assert decision.state.status == "paused_budget"
    assert types(decision.emit) == [JobSubmitted, JobSubmitted, PhasePaused]
    [paused] = of_type(decision.emit, PhasePaused)
    assert paused.payload.phase == "validation"
    assert (paused.payload.spent_cpu_seconds, paused.payload.budget_cpu_seconds) == (0.0, 25.0)
    assert "budget" in paused.payload.reason and "10 CPU-s" in paused.payload.reason
    assert (paused.campaign_id, paused.correlation_id) == ("camp-1", "corr-1")
    # jobs in flight still finish and are recorded; nothing new starts, no second pause
    d1 = apply(decision.state, completed(specs[0], cpu=10))
    assert d1.emit == []
    assert d1.state is not None
    assert statuses(d1.state) == {"job-0": "completed", "job-1": "submitted", "job-2": "pending"}
    assert d1.state.spent_cpu_seconds == 10 and d1.state.status == "paused_budget"
    d2 = apply(d1.state, completed(specs[1], cpu=10))
    assert d2.state is not None
    # 20 of 25 spent is 80%: a warning, but still no conclusion while a job waits for budget
    assert types(d2.emit) == [BudgetWarning]
    assert statuses(d2.state) == {"job-0": "completed", "job-1": "completed", "job-2": "pending"}
    assert d2.state.status == "paused_budget" and d2.state.spent_cpu_seconds == 20


def test_budget_guard_uses_actual_spend_of_finished_jobs() -> None:
    # One at a time under 35 CPU-s. job-0 is estimated at 10 but costs 20, so after it only
    # one more 10 CPU-s job fits (20 + 10 <= 35 < 20 + 10 + 10).
    specs = [spec(i) for i in range(4)]
    state, emitted, submitted = run_to_end(specs, budget=35, parallel=1, cost={"job-0": 20.0})
    assert submitted == ["job-0", "job-1"]
    assert statuses(state) == {
        "job-0": "completed",
        "job-1": "completed",
        "job-2": "pending",
        "job-3": "pending",
    }
    assert state.status == "paused_budget" and state.spent_cpu_seconds == 30
    assert len(of_type(emitted, PhasePaused)) == 1
    assert of_type(emitted, PhaseConcluded) == []


def test_budget_pause_keeps_plan_order_and_does_not_skip_ahead() -> None:
    specs = [spec(0, 10), spec(1, 500), spec(2, 5)]
    decision = start(specs, budget=20, parallel=3)
    assert decision.state is not None
    assert submitted_ids(decision.emit) == ["job-0"]  # job-2 would fit, but job-1 is next
    assert statuses(decision.state) == {"job-0": "submitted", "job-1": "pending", "job-2": "pending"}
    assert decision.state.status == "paused_budget"
    [paused] = of_type(decision.emit, PhasePaused)
    assert "500 CPU-s" in paused.payload.reason
    # a finished job frees budget, but a phase paused for budget waits for a person
    after = apply(decision.state, completed(specs[0], cpu=1))
    assert after.state is not None and after.state.status == "paused_budget"
    assert after.emit == []


def test_budget_too_small_for_any_job_pauses_immediately() -> None:
    decision = start([spec(0, 50), spec(1, 60)], budget=40, parallel=2)
    assert decision.state is not None and decision.state.status == "paused_budget"
    [paused] = decision.emit
    assert isinstance(paused, PhasePaused)
    assert "50 CPU-s" in paused.payload.reason and "budget" in paused.payload.reason
    assert (paused.payload.spent_cpu_seconds, paused.payload.budget_cpu_seconds) == (0.0, 40.0)
    assert list(statuses(decision.state).values()) == ["pending", "pending"]


def test_escalated_failure_is_recorded_as_failed_and_the_phase_still_concludes() -> None:
    specs = [spec(0), spec(1)]
    state = start(specs, parallel=2).state
    assert state is not None
    d1 = apply(state, failed(specs[1], cpu=3.0, kind="timeout"))
    assert d1.state is not None
    assert statuses(d1.state) == {"job-0": "submitted", "job-1": "failed"}
    assert d1.state.spent_cpu_seconds == 3.0  # a failure's CPU counts against the budget
    [applied] = d1.emit
    assert isinstance(applied, RunbookApplied)
    assert applied.payload.action == "escalate" and applied.payload.escalated is True
    assert applied.payload.failure == "timeout" and applied.payload.retry_job_id is None
    assert d1.state.runbook == [applied.payload]
    d2 = apply(d1.state, completed(specs[0], cpu=10))
    [concluded] = d2.emit
    assert isinstance(concluded, PhaseConcluded)
    by_id = {r.job_id: r for r in concluded.payload.jobs}
    assert set(by_id) == {"job-0", "job-1"}
    assert by_id["job-1"].status == "failed"
    assert by_id["job-1"].error is not None and by_id["job-1"].error.kind == "timeout"
    assert by_id["job-1"].cost is not None and by_id["job-1"].cost.cpu_seconds == 3.0
    assert by_id["job-0"].status == "completed"
    assert d2.state is not None and d2.state.spent_cpu_seconds == 13.0


def test_all_jobs_failing_still_concludes_once() -> None:
    specs = [spec(0), spec(1)]
    state = start(specs, parallel=2).state
    assert state is not None
    d1 = apply(state, failed(specs[0], kind="invalid_config"))
    assert d1.state is not None
    assert types(d1.emit) == [RunbookApplied]
    d2 = apply(d1.state, failed(specs[1], kind="error"))
    assert types(d2.emit) == [RunbookApplied, PhaseConcluded]
    assert d2.state is not None and d2.state.status == "concluded"
    assert [e.action for e in d2.state.runbook] == ["drop", "escalate"]
    [concluded] = of_type(d2.emit, PhaseConcluded)
    assert [r.status for r in concluded.payload.jobs] == ["failed", "failed"]
    again = logic.on_job_finished(d2.state, failed(specs[1]))
    assert again.state is None and again.emit == []


def test_budget_guard_never_submits_past_the_cap() -> None:
    """Random phases with random costs, failures (so runbook retries) and budget extensions."""
    kinds = ["oom", "nan", "lost_worker", "invalid_config", "timeout", "error"]
    for seed in range(60):
        rng = random.Random(seed)
        specs = [spec(i, estimate=rng.choice([5.0, 10.0, 20.0])) for i in range(rng.randint(1, 6))]
        decision = start(specs, budget=rng.choice([15.0, 30.0, 60.0, 200.0]), parallel=rng.randint(1, 3))
        assert decision.state is not None
        state, emitted, extensions = decision.state, list(decision.emit), 0
        while state.status != "concluded":
            in_flight = [j for j in state.jobs if j.status in ("submitted", "running")]
            assert len(in_flight) <= state.max_parallel_jobs
            before = state
            if in_flight:
                job = rng.choice(in_flight).spec
                cost = rng.uniform(0, 2) * job.estimated_cpu_seconds
                finish: JobCompleted | JobFailed = (
                    completed(job, cost) if rng.random() < 0.6 else failed(job, cost, rng.choice(kinds))
                )
                decision = apply(state, finish)
            else:
                assert state.status == "paused_budget", f"seed {seed}: stuck in {state.status}"
                extensions += 1
                decision = logic.on_budget_extended(state, extended(rng.choice([5.0, 50.0, 500.0])))
            assert decision.state is not None
            state = decision.state
            emitted += decision.emit
            if submitted_ids(decision.emit):
                assert state.reserved_cpu_seconds() <= state.budget_cpu_seconds, f"seed {seed}"
            assert len(of_type(decision.emit, PhasePaused)) <= 1
            if in_flight and before.status == "paused_budget":
                # a phase paused for budget says so once: results coming in change nothing
                assert state.status == "paused_budget"
                assert of_type(decision.emit, PhasePaused) == submitted_ids(decision.emit) == []
        submitted = submitted_ids(emitted)
        assert len(submitted) == len(set(submitted)) == len(state.jobs), f"seed {seed}"
        assert all(j.status in TERMINAL for j in state.jobs)
        assert len(of_type(emitted, PhaseConcluded)) == 1
        assert len(of_type(emitted, BudgetWarning)) <= 1 + extensions
        assert all(j.spec.attempt <= MAX_ATTEMPTS for j in state.jobs)


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


# ---- budget warning and extension ---------------------------------------------------


def paused_by(by: str = "alice") -> CampaignPaused:
    return CampaignPaused(**FOLLOW, payload=PersonAction(by=by))


def resumed_by(by: str = "bob") -> CampaignResumed:
    return CampaignResumed(**FOLLOW, payload=PersonAction(by=by))


def extended(cpu: float, by: str = "carol") -> BudgetExtended:
    return BudgetExtended(**FOLLOW, payload=BudgetExtendedPayload(cpu_seconds=cpu, by=by))


def test_budget_warning_is_emitted_exactly_once_at_80_percent() -> None:
    # One at a time under 50 CPU-s: spent goes 10, 20, 30, 39.5 (79%), 40 (80%), 45.
    specs = [spec(i, estimate=5) for i in range(6)]
    costs = {"job-0": 10.0, "job-1": 10.0, "job-2": 10.0, "job-3": 9.5, "job-4": 0.5, "job-5": 5.0}
    decision = start(specs, budget=50, parallel=1)
    assert decision.state is not None
    state, warnings_at = decision.state, []
    for s in specs:
        decision = apply(state, completed(s, cpu=costs[s.job_id]))
        assert decision.state is not None
        state = decision.state
        for warning in of_type(decision.emit, BudgetWarning):
            warnings_at.append(s.job_id)
            assert (warning.payload.spent_cpu_seconds, warning.payload.budget_cpu_seconds) == (40.0, 50.0)
            assert "80%" in warning.payload.reason
            assert (warning.campaign_id, warning.correlation_id) == ("camp-1", "corr-1")
            assert decision.emit.index(warning) == 0  # the warning precedes the next submission
    assert warnings_at == ["job-4"]
    assert state.budget_warned is True and state.status == "concluded"


def test_budget_extension_raises_the_budget_of_a_running_phase() -> None:
    specs = [spec(i) for i in range(3)]
    state = start(specs, budget=100, parallel=1).state
    assert state is not None
    decision = logic.on_budget_extended(state, extended(50))
    assert decision.emit == []
    assert decision.state is not None
    assert decision.state.budget_cpu_seconds == 150 and decision.state.status == "running"
    assert statuses(decision.state) == statuses(state)
    assert state.budget_cpu_seconds == 100  # the input state is not mutated


def test_budget_extension_rearms_the_warning_only_when_below_80_percent_again() -> None:
    state = start([spec(0), spec(1)], budget=50, parallel=1).state
    assert state is not None
    warned = state.model_copy(update={"spent_cpu_seconds": 45.0, "budget_warned": True})
    still = logic.on_budget_extended(warned, extended(5))  # 45 of 55 is still over 80%
    assert still.state is not None and still.state.budget_warned is True
    rearmed = logic.on_budget_extended(warned, extended(50))  # 45 of 100 is not
    assert rearmed.state is not None and rearmed.state.budget_warned is False


def budget_paused() -> tuple[list[JobSpec], PhaseExecution]:
    """25 CPU-s, three 10 CPU-s jobs: two in flight, the third waits for budget."""
    specs = [spec(i) for i in range(3)]
    state = start(specs, budget=25, parallel=3).state
    assert state is not None and state.status == "paused_budget"
    return specs, state


def test_budget_extension_resumes_a_phase_paused_for_budget() -> None:
    specs, state = budget_paused()
    decision = logic.on_budget_extended(state, extended(10, by="carol"))
    assert decision.state is not None
    assert decision.state.status == "running" and decision.state.budget_cpu_seconds == 35
    assert types(decision.emit) == [PhaseResumed, JobSubmitted]
    assert submitted_ids(decision.emit) == ["job-2"]
    [resumed] = of_type(decision.emit, PhaseResumed)
    assert "carol" in resumed.payload.reason and "10" in resumed.payload.reason
    assert resumed.payload.budget_cpu_seconds == 35
    assert decision.state.reserved_cpu_seconds() <= decision.state.budget_cpu_seconds
    # and the phase runs to its end
    state = decision.state
    for s in specs:
        state_or_none = apply(state, completed(s, cpu=10)).state
        assert state_or_none is not None
        state = state_or_none
    assert state.status == "concluded"
    assert [j.status for j in state.jobs] == ["completed"] * 3


def test_budget_extension_too_small_keeps_the_phase_paused() -> None:
    _, state = budget_paused()
    decision = logic.on_budget_extended(state, extended(1))  # 20 in flight + 10 > 26
    assert decision.state is not None
    assert decision.state.status == "paused_budget" and decision.state.budget_cpu_seconds == 26
    assert types(decision.emit) == [PhasePaused]
    [paused] = decision.emit
    assert isinstance(paused, PhasePaused) and paused.payload.budget_cpu_seconds == 26


def test_resume_does_not_lift_a_pause_for_budget() -> None:
    _, state = budget_paused()
    decision = logic.on_campaign_resumed(state, resumed_by())
    assert decision.state is None and decision.emit == []


# ---- a person's pause and resume ------------------------------------------------------


def test_pause_stops_new_submissions_but_results_in_flight_are_recorded() -> None:
    specs = [spec(i) for i in range(4)]
    state = start(specs, parallel=2).state
    assert state is not None
    decision = logic.on_campaign_paused(state, paused_by("alice"))
    assert decision.state is not None and decision.state.status == "paused"
    [paused] = decision.emit
    assert isinstance(paused, PhasePaused)
    assert paused.payload.reason == "paused by alice"
    assert (paused.campaign_id, paused.correlation_id) == ("camp-1", "corr-1")
    assert state.status == "running"  # the input state is not mutated
    # a second pause changes nothing
    again = logic.on_campaign_paused(decision.state, paused_by("alice"))
    assert again.state is None and again.emit == []
    # a result in flight is recorded, but no new job starts
    d1 = apply(decision.state, completed(specs[0], cpu=7))
    assert d1.emit == []
    assert d1.state is not None and d1.state.status == "paused"
    assert statuses(d1.state) == {
        "job-0": "completed",
        "job-1": "submitted",
        "job-2": "pending",
        "job-3": "pending",
    }
    assert d1.state.spent_cpu_seconds == 7
    # extending the budget of a paused phase does not resume it
    more = logic.on_budget_extended(d1.state, extended(100))
    assert more.emit == []
    assert more.state is not None and more.state.status == "paused"
    assert more.state.budget_cpu_seconds == 1100
    # resume continues where it stopped: one free slot, so one job
    d2 = logic.on_campaign_resumed(more.state, resumed_by("bob"))
    assert d2.state is not None and d2.state.status == "running"
    assert types(d2.emit) == [PhaseResumed, JobSubmitted]
    assert submitted_ids(d2.emit) == ["job-2"]
    [resumed] = of_type(d2.emit, PhaseResumed)
    assert resumed.payload.reason == "resumed by bob"
    assert (resumed.payload.spent_cpu_seconds, resumed.payload.budget_cpu_seconds) == (7, 1100)
    # resuming a running phase changes nothing
    twice = logic.on_campaign_resumed(d2.state, resumed_by("bob"))
    assert twice.state is None and twice.emit == []


def test_a_paused_phase_concludes_when_its_last_jobs_finish() -> None:
    specs = [spec(0), spec(1)]
    state = logic.on_campaign_paused(start(specs, parallel=2).state, paused_by()).state
    assert state is not None
    d1 = apply(state, completed(specs[0]))
    assert d1.state is not None and d1.emit == []
    d2 = apply(d1.state, completed(specs[1]))
    assert types(d2.emit) == [PhaseConcluded]
    assert d2.state is not None and d2.state.status == "concluded"


def test_pausing_a_phase_paused_for_budget_then_resuming_checks_the_budget_again() -> None:
    _, state = budget_paused()
    paused = logic.on_campaign_paused(state, paused_by("alice"))
    assert paused.state is not None and paused.state.status == "paused"
    assert types(paused.emit) == [PhasePaused]
    resumed = logic.on_campaign_resumed(paused.state, resumed_by())
    assert resumed.state is not None and resumed.state.status == "paused_budget"
    assert types(resumed.emit) == [PhasePaused]  # still no budget for job-2: not resumed
    assert submitted_ids(resumed.emit) == []


@pytest.mark.parametrize(
    "event",
    [paused_by(), resumed_by(), extended(100)],
    ids=["pause", "resume", "extend"],
)
def test_people_actions_on_a_concluded_or_missing_phase_are_no_ops(
    event: CampaignPaused | CampaignResumed | BudgetExtended,
) -> None:
    state, _, _ = run_to_end([spec(0), spec(1)], budget=1000, parallel=2)
    assert state.status == "concluded"
    handlers: dict[type[Envelope], Callable[[PhaseExecution | None, Any], Decision[PhaseExecution]]] = {
        CampaignPaused: logic.on_campaign_paused,
        CampaignResumed: logic.on_campaign_resumed,
        BudgetExtended: logic.on_budget_extended,
    }
    for target in (state, None):
        decision = handlers[type(event)](target, event)
        assert decision.state is None and decision.emit == []


# ---- the runbook ----------------------------------------------------------------------


def test_oom_is_retried_with_half_the_batch_and_recorded() -> None:
    specs = [spec(0), spec(1)]
    state = start(specs, parallel=2).state
    assert state is not None
    d1 = apply(state, failed(specs[1], cpu=3.0, kind="oom"))
    assert d1.state is not None
    assert statuses(d1.state) == {"job-0": "submitted", "job-1": "retried", "job-1-a2": "submitted"}
    assert d1.state.spent_cpu_seconds == 3.0
    assert types(d1.emit) == [RunbookApplied, JobSubmitted]
    [applied] = of_type(d1.emit, RunbookApplied)
    entry = applied.payload
    assert (entry.job_id, entry.hypothesis_id, entry.failure) == ("job-1", "h1", "oom")
    assert (entry.action, entry.retry_job_id, entry.escalated) == ("halve_batch", "job-1-a2", False)
    assert entry.message == "oom: MemoryError" and "half the batch" in entry.reason
    assert (applied.campaign_id, applied.correlation_id) == ("camp-1", "corr-1")
    assert d1.state.runbook == [entry]
    [retry] = of_type(d1.emit, JobSubmitted)
    assert retry.payload.config == {**specs[1].config, "batch_size": specs[1].config["batch_size"] // 2}
    assert (retry.payload.retry_of, retry.payload.attempt) == ("job-1", 2)
    tracked = d1.state.job("job-1-a2")
    assert tracked is not None and tracked.spec == retry.payload and tracked.failures == ["oom"]
    old = d1.state.job("job-1")
    assert old is not None and old.output is not None and old.output.error is not None
    # the phase concludes only when the retry is done
    d2 = apply(d1.state, completed(specs[0], cpu=10))
    assert d2.emit == []
    assert d2.state is not None and d2.state.status == "running"
    d3 = apply(d2.state, completed(retry.payload, cpu=4))
    [concluded] = d3.emit
    assert isinstance(concluded, PhaseConcluded)
    records = {r.job_id: r for r in concluded.payload.jobs}
    assert {k: r.status for k, r in records.items()} == {
        "job-0": "completed",
        "job-1": "retried",
        "job-1-a2": "completed",
    }
    assert records["job-1"].error is not None and records["job-1"].error.kind == "oom"
    assert records["job-1-a2"].config["batch_size"] == 128
    assert d3.state is not None and d3.state.spent_cpu_seconds == 17
    # the planner counts a retried job neither as completed nor as failed
    result = summarize(concluded.payload.jobs)
    assert not isinstance(result, str)
    assert (result.jobs_completed, result.jobs_failed, result.compute_seconds) == (2, 0, 17)


def test_a_retry_waits_for_a_free_slot_in_plan_order() -> None:
    specs = [spec(1), spec(2)]
    state = start(specs, parallel=1).state
    assert state is not None
    d1 = apply(state, failed(specs[0], kind="nan"))
    assert d1.state is not None
    assert statuses(d1.state) == {"job-1": "retried", "job-2": "submitted", "job-1-a2": "pending"}
    assert types(d1.emit) == [RunbookApplied, JobSubmitted]
    assert submitted_ids(d1.emit) == ["job-2"]
    d2 = apply(d1.state, completed(specs[1]))
    assert submitted_ids(d2.emit) == ["job-1-a2"]
    assert not of_type(d2.emit, PhaseConcluded)
    [retry] = of_type(d2.emit, JobSubmitted)
    assert retry.payload.config["grad_clip"] == 1.0
    assert retry.payload.config["learning_rate"] == pytest.approx(specs[0].config["learning_rate"] / 3)


def test_the_same_failure_twice_fails_the_job_and_the_phase_concludes() -> None:
    state = start([spec(1)]).state
    assert state is not None
    d1 = apply(state, failed(spec(1), kind="oom"))
    assert d1.state is not None
    retry = d1.state.job("job-1-a2")
    assert retry is not None
    d2 = apply(d1.state, failed(retry.spec, kind="oom"))
    assert types(d2.emit) == [RunbookApplied, PhaseConcluded]
    assert d2.state is not None
    assert statuses(d2.state) == {"job-1": "retried", "job-1-a2": "failed"}
    assert [(e.job_id, e.action) for e in d2.state.runbook] == [
        ("job-1", "halve_batch"),
        ("job-1-a2", "give_up"),
    ]
    assert d2.state.runbook[1].retry_job_id is None and "twice" in d2.state.runbook[1].reason


def test_a_failure_without_an_error_is_escalated_as_an_unrecognised_error() -> None:
    state = start([spec(0)]).state
    assert state is not None
    bare = JobFailed(
        **FOLLOW, payload=JobFinishedPayload(spec=spec(0), output=JobOutput(status="failed"), worker="w")
    )
    decision = apply(state, bare)
    assert decision.state is not None
    [entry] = decision.state.runbook
    assert (entry.failure, entry.action, entry.escalated) == ("error", "escalate", True)
    assert decision.state.spent_cpu_seconds == 0


def test_a_retry_that_would_cross_the_budget_pauses_the_phase() -> None:
    specs = [spec(0), spec(1)]
    state = start(specs, budget=20, parallel=2).state
    assert state is not None
    # 5 spent + 10 in flight + the retry's 10 > 20
    decision = apply(state, failed(specs[1], cpu=5, kind="oom"))
    assert decision.state is not None and decision.state.status == "paused_budget"
    assert types(decision.emit) == [RunbookApplied, PhasePaused]
    assert statuses(decision.state)["job-1-a2"] == "pending"


def lease_expired(job: JobSpec, worker: str = "host/worker-1") -> JobFailed:
    """What the service builds when a job's lease expires (an id derived from the job)."""
    output = JobOutput(
        status="failed", error=JobError(kind="lost_worker", message=f"the lease of {worker} expired")
    )
    return JobFailed(
        event_id=uuid5(NAMESPACE_URL, f"rea:lost-worker:{job.job_id}").hex,
        **FOLLOW,
        payload=JobFinishedPayload(spec=job, output=output, worker=worker),
    )


def running_phase(specs: list[JobSpec], parallel: int = 2) -> PhaseExecution:
    state = start(specs, parallel=parallel).state
    assert state is not None
    running = logic.on_job_started(state, job_started(specs[0].job_id)).state
    assert running is not None
    return running


def test_lease_expiry_emits_the_failure_and_the_runbook_decision() -> None:
    specs = [spec(0), spec(1)]
    state = running_phase(specs)
    expiry = lease_expired(specs[0])
    decision = logic.on_failure_declared(state, expiry)
    assert decision.state is not None
    assert types(decision.emit) == [JobFailed, RunbookApplied, JobSubmitted]
    assert decision.emit[0] is expiry
    [applied] = of_type(decision.emit, RunbookApplied)
    assert (applied.payload.failure, applied.payload.action) == ("lost_worker", "resubmit")
    assert applied.payload.retry_job_id == "job-0-a2"
    [retry] = of_type(decision.emit, JobSubmitted)
    assert retry.payload.job_id == "job-0-a2" and retry.payload.config == specs[0].config
    assert retry.payload.not_before == expiry.occurred_at + timedelta(seconds=BACKOFF_BASE_S)
    assert statuses(decision.state) == {"job-0": "retried", "job-1": "submitted", "job-0-a2": "submitted"}
    assert decision.state.spent_cpu_seconds == 0  # a lost job reports no cost
    assert decision.state.runbook == [applied.payload]
    # applied again (a second executor saw the expiry): nothing more happens
    again = logic.on_failure_declared(decision.state, expiry)
    assert again.state is None and again.emit == []
    # the lost worker comes back with a result for the job already retried: nothing changes
    for late in (completed(specs[0], cpu=9), failed(specs[0], kind="oom")):
        back = logic.on_job_finished(decision.state, late)
        assert back.state is None and back.emit == []


def test_lease_expiry_for_a_job_already_finished_or_unknown_is_a_no_op() -> None:
    specs = [spec(0), spec(1)]
    state = running_phase(specs)
    done = apply(state, completed(specs[0]))
    assert done.state is not None
    for target, job in ((done.state, specs[0]), (state, spec(99)), (None, specs[0])):
        decision = logic.on_failure_declared(target, lease_expired(job))
        assert decision.state is None and decision.emit == []


# ---- cancellation ---------------------------------------------------------------------


def cancel() -> CampaignCancelled:
    return CampaignCancelled(**FOLLOW, payload=PersonAction(by="erin"))


def test_cancel_drops_the_pending_jobs_and_waits_for_those_in_flight() -> None:
    state = start([spec(i) for i in range(4)]).state
    assert state is not None
    decision = logic.on_campaign_cancelled(state, cancel())
    assert decision.state is not None and decision.state.status == "cancelling"
    assert statuses(decision.state) == {
        "job-0": "submitted",
        "job-1": "submitted",
        "job-2": "cancelled",
        "job-3": "cancelled",
    }
    assert decision.emit == []  # nothing new starts, and the phase is not over yet
    assert [j.spec.job_id for j in logic.to_stop(decision.state)] == ["job-0", "job-1"]
    # the reservation of a job in flight lasts until it reports
    assert decision.state.reserved_cpu_seconds() == 20


def test_a_cancelled_phase_retries_nothing_and_concludes_when_its_jobs_stopped() -> None:
    state = start([spec(1), spec(2)]).state
    assert state is not None
    cancelling = logic.on_campaign_cancelled(state, cancel()).state
    assert cancelling is not None
    first = apply(cancelling, failed(spec(1), cpu=3.0, kind="cancelled"))
    assert first.state is not None and not of_type(first.emit, RunbookApplied)
    second = apply(first.state, failed(spec(2), cpu=4.0, kind="oom"))  # no runbook either
    assert types(second.emit) == [PhaseConcluded]
    assert second.state is not None and second.state.status == "concluded"
    assert statuses(second.state) == {"job-1": "cancelled", "job-2": "cancelled"}
    assert second.state.spent_cpu_seconds == 7.0 and second.state.reserved_cpu_seconds() == 7.0
    [concluded] = of_type(second.emit, PhaseConcluded)
    assert {r.status for r in concluded.payload.jobs} == {"cancelled"}


def test_a_phase_started_after_its_campaign_was_cancelled_runs_nothing() -> None:
    decision = logic.on_phase_started(None, started([spec(0), spec(1)]), cancelled=True)
    assert types(decision.emit) == [PhaseConcluded]
    assert decision.state is not None and set(statuses(decision.state).values()) == {"cancelled"}


def test_pause_and_a_second_cancel_do_not_touch_a_cancelling_phase() -> None:
    state = start([spec(0), spec(1), spec(2)]).state
    assert state is not None
    cancelling = logic.on_campaign_cancelled(state, cancel()).state
    assert cancelling is not None
    paused = CampaignPaused(**FOLLOW, payload=PersonAction(by="x"))
    assert logic.on_campaign_paused(cancelling, paused).state is None
    assert logic.on_campaign_cancelled(cancelling, cancel()).state is None


# ---- shared workers ---------------------------------------------------------------------


def test_with_no_room_a_phase_records_but_submits_until_it_is_granted_slots() -> None:
    event = started([spec(0), spec(1), spec(2)], parallel=3)
    decision = logic.on_phase_started(None, event, stride_pass=4.0, room=0)
    state = decision.state
    assert state is not None and not [e for e in decision.emit if isinstance(e, JobSubmitted)]
    assert state.stride_pass == 4.0 and state.weight == 1000.0  # the budget, without a campaign's

    grant = SlotsGranted(**FOLLOW, payload=SlotsGrantedPayload(phase="validation", slots=2))
    granted = logic.on_slots_granted(state, grant)
    assert granted.state is not None
    assert [e.payload.job_id for e in granted.emit if isinstance(e, JobSubmitted)] == ["job-0", "job-1"]
    assert granted.state.stride_pass == pytest.approx(4.0 + 2 * 10.0 / 1000.0)  # each grant advances it
    assert granted.state.tenant("k").pending_costs == (10.0,)
    paused = granted.state.model_copy(update={"status": "paused"})
    assert logic.on_slots_granted(paused, grant) == Decision()  # a paused phase takes no share


def test_granted_jobs_go_to_the_partitions_they_were_placed_on_and_the_rest_by_key() -> None:
    state = logic.on_phase_started(None, started([spec(0), spec(1), spec(2)], parallel=3), room=0).state
    assert state is not None
    placed = SlotsGrantedPayload(phase="validation", slots=3, partitions=[2, 0])
    grant = SlotsGranted(**FOLLOW, payload=placed)
    granted = logic.on_slots_granted(state, grant)
    assert granted.state is not None
    sent = [e for e in granted.emit if isinstance(e, JobSubmitted)]
    assert [(e.payload.job_id, e.partition) for e in sent] == [("job-0", 2), ("job-1", 0), ("job-2", None)]
    assert [e.placed_partition() for e in sent] == [2, 0, None]
    assert [j.partition for j in granted.state.jobs] == [2, 0, None]
    assert parse_event(encode_event(sent[0])) == sent[0]  # the placement travels with the event


def test_a_phase_summary_is_what_the_share_out_reads_of_the_phase_and_survives_json() -> None:
    state = logic.on_phase_started(None, started([spec(0), spec(1), spec(2)], parallel=3), room=0).state
    assert state is not None
    placed = SlotsGrantedPayload(phase="validation", slots=2, partitions=[2, 0])
    granted = logic.on_slots_granted(state, SlotsGranted(**FOLLOW, payload=placed)).state
    assert granted is not None
    summary = granted.summary()
    assert PhaseSummary.model_validate_json(summary.model_dump_json()) == summary
    tenant = summary.tenant
    assert tenant.in_flight == 2 and tenant.pending_costs == (10.0,) and tenant.in_flight_cost == 20.0
    assert (tenant.weight, tenant.stride_pass, tenant.max_parallel) == (1000.0, granted.stride_pass, 3)
    assert summary.places == [(None, 2), (None, 0)] and summary.shares_workers
    assert summary.status == "running" and summary.campaign_id == granted.campaign_id


def test_every_decision_the_service_wires_takes_the_phases_room() -> None:
    """With workers shared, the service applies each event with ``room=0`` and grants slots
    after: a decision that did not take ``room`` would dead-letter its events."""
    import inspect

    from rea_executor import service

    source = inspect.getsource(service.wire)
    wired = {name for name in dir(logic) if name.startswith("on_") and f"logic.{name}" in source}
    assert {"on_phase_started", "on_job_started", "on_job_finished", "on_failure_declared"} <= wired
    for name in wired - {"on_slots_granted"}:  # the share-out's own decision carries its grant
        assert "room" in inspect.signature(getattr(logic, name)).parameters, name


def test_a_phase_on_a_remote_backend_submits_up_to_its_parallelism_whatever_the_worker_share() -> None:
    """The local workers' share-out does not apply to a cluster, which queues and places jobs."""
    remote = [spec(n).model_copy(update={"backend": "ray"}) for n in range(4)]
    decision = logic.on_phase_started(None, started(remote, parallel=3), room=0)
    assert decision.state is not None and not decision.state.shares_workers
    assert len(submitted_ids(decision.emit)) == 3
    assert all(event.partition is None for event in of_type(decision.emit, JobSubmitted))
    local = logic.on_phase_started(None, started([spec(n) for n in range(4)], parallel=3), room=0)
    assert submitted_ids(local.emit) == []


def gpu_phase(gpu_budget: float, jobs: int = 3, gpu_each: float = 40.0) -> PhaseExecution:
    """A phase of GPU jobs (10 CPU-s, ``gpu_each`` GPU-s estimated each) with a GPU cap."""
    specs = [spec(i).model_copy(update={"gpus": 1, "estimated_gpu_seconds": gpu_each}) for i in range(jobs)]
    event = started(specs, budget=1000, parallel=jobs)
    event = event.model_copy(
        update={"payload": event.payload.model_copy(update={"budget_gpu_seconds": gpu_budget})}
    )
    state = logic.on_phase_started(None, event).state
    assert state is not None
    return state


def gpu_completed(job: JobSpec, gpu_seconds: float) -> JobCompleted:
    done = completed(job, cpu=10)
    assert done.payload.output.cost is not None
    cost = done.payload.output.cost.model_copy(update={"gpu_seconds": gpu_seconds})
    output = done.payload.output.model_copy(update={"cost": cost})
    return done.model_copy(update={"payload": done.payload.model_copy(update={"output": output})})


def test_the_gpu_budget_pauses_before_a_job_whose_gpu_seconds_would_cross_it() -> None:
    state = gpu_phase(gpu_budget=100)  # room for two 40 GPU-s jobs, not three; CPU is plenty
    assert statuses(state) == {"job-0": "submitted", "job-1": "submitted", "job-2": "pending"}
    assert state.status == "paused_budget"
    assert state.reserved_gpu_seconds() == 80 <= state.budget_gpu_seconds  # type: ignore[operator]


def test_gpu_seconds_measured_are_charged_and_warned_about_once() -> None:
    state = gpu_phase(gpu_budget=200, jobs=2)
    first = apply(state, gpu_completed(state.jobs[0].spec, gpu_seconds=165))
    assert first.state is not None and first.state.spent_gpu_seconds == 165
    warnings = of_type(first.emit, BudgetWarning)
    assert [w.payload.resource for w in warnings] == ["gpu_seconds"]
    assert warnings[0].payload.spent_gpu_seconds == 165 and warnings[0].payload.budget_gpu_seconds == 200
    second = apply(first.state, gpu_completed(state.jobs[1].spec, gpu_seconds=20))
    assert of_type(second.emit, BudgetWarning) == []


def test_a_gpu_extension_resumes_a_phase_paused_for_gpu_budget() -> None:
    state = gpu_phase(gpu_budget=100)
    added = BudgetExtended(**FOLLOW, payload=BudgetExtendedPayload(gpu_seconds=40, by="dana"))
    decision = logic.on_budget_extended(state, added)
    assert decision.state is not None and decision.state.budget_gpu_seconds == 140
    assert decision.state.budget_cpu_seconds == 1000
    assert submitted_ids(decision.emit) == ["job-2"]
    [resumed] = of_type(decision.emit, PhaseResumed)
    assert "40 GPU-s" in resumed.payload.reason and "dana" in resumed.payload.reason


def test_a_phase_without_a_gpu_cap_ignores_gpu_estimates() -> None:
    specs = [spec(i).model_copy(update={"gpus": 1, "estimated_gpu_seconds": 1e9}) for i in range(2)]
    state = start(specs, budget=1000, parallel=2).state
    assert state is not None and state.budget_gpu_seconds is None
    assert state.status == "running" and set(statuses(state).values()) == {"submitted"}
