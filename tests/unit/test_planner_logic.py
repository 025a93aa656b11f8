"""The planner's pure decisions: request validation, planning within budget, approval, summary."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Any

import pytest

from rea.events import (
    BudgetExtended,
    BudgetExtendedPayload,
    BudgetWarning,
    CampaignCancelled,
    CampaignCompleted,
    CampaignPaused,
    CampaignRejected,
    CampaignRequested,
    GrantTerms,
    HypothesesGenerated,
    HypothesesGeneratedPayload,
    HypothesesRequested,
    Hypothesis,
    JobRecord,
    PersonAction,
    PhaseConcluded,
    PhaseConcludedPayload,
    PhasePaused,
    PhasePlan,
    PhaseResumed,
    PhaseStarted,
    PhaseStartedPayload,
    PhaseStatusPayload,
    PlanApproved,
    PlanApprovedPayload,
    PlanProposed,
    ProposalAccepted,
)
from rea.grants import EVERY_BACKEND, Grant
from rea.workloads import JobCost, JobError, SplitMetrics, get_workload, parameters_of, workload_names
from rea_executor import logic as executor
from rea_planner import logic
from rea_planner.campaign import Campaign, CampaignSpec, validate_campaign
from rea_planner.costs import (
    PRIOR_CPU_SECONDS_PER_EPOCH,
    PRIOR_CPU_SECONDS_PER_ROW,
    PRIOR_CPU_SECONDS_PER_ROW_PARAMETER,
    PRIOR_START_CPU_SECONDS,
    SAFETY_FACTOR,
    CostModel,
    Fidelity,
)

from .test_diagnostics import baseline_run

RANKER_FIDELITY = Fidelity.of(get_workload("ranker").schema)

FOLLOW = {"campaign_id": "camp-1", "correlation_id": "corr-1"}
SCHEMA = get_workload("ranker").schema
# 10 CPU-s per epoch: the ranker's default 3 epochs x full data cost 10 * 3 * 1.25 = 37.5.
COSTS = CostModel(RANKER_FIDELITY, cpu_seconds_per_unit=10.0)
BASELINE_COST = 37.5


def grant(auto_approve_up_to: float | None = None, **terms: Any) -> Grant:
    """A grant that allows everything (up to generous maxima) unless the test says otherwise."""
    allowed: dict[str, Any] = {
        "team": "ranking",
        "workloads": workload_names(),
        "datasets": ["*"],
        "max_cpu_seconds": 1_000_000,
        "max_gpu_seconds": 1_000_000,
        "backends": EVERY_BACKEND,
        "allow_kernel_codegen": True,
        "auto_approve_up_to": auto_approve_up_to,
        **terms,
    }
    return Grant(
        grant_id="team-a",
        terms=GrantTerms.model_validate(allowed),
        created_by="erin",
        created_at=datetime(2026, 12, 1, tzinfo=UTC),
    )


GRANT = grant()


def request(**overrides: Any) -> dict[str, Any]:
    """Most tests here are about validation and confirmation: exploitation and selection are off
    unless asked."""
    return {
        "name": "try crosses",
        "grant": "team-a",
        "dataset": "synthetic:rows=3000",
        "budget_cpu_seconds": 1000,
        "max_exploitation_trials": 0,
        "contenders": 0,
        **overrides,
    }


def hypothesis(hid: str, changes: dict[str, Any], gain: float = 0.01) -> Hypothesis:
    return Hypothesis(
        id=hid,
        title=hid,
        technique=hid,
        changes=changes,
        source="catalogue",
        rationale="test",
        expected_gain=gain,
    )


def planning(auto_approve_up_to: float | None = None, **overrides: Any) -> Campaign:
    """A campaign admitted under a grant that auto-approves plans up to ``auto_approve_up_to``."""
    body = request(**overrides)
    return Campaign(
        campaign_id="camp-1",
        status="planning",
        request=body,
        spec=CampaignSpec.model_validate(body),
        grant=grant(auto_approve_up_to),
    )


def generated(*hypotheses: Hypothesis) -> HypothesesGenerated:
    return HypothesesGenerated(**FOLLOW, payload=HypothesesGeneratedPayload(hypotheses=list(hypotheses)))


def approved(by: str = "alice") -> PlanApproved:
    return PlanApproved(**FOLLOW, payload=PlanApprovedPayload(approved_by=by))


# ---- validate_campaign --------------------------------------------------------------


def test_valid_request_is_accepted_with_defaults() -> None:
    spec, reasons = validate_campaign(request(baseline={"epochs": 2}))
    assert reasons == []
    assert spec is not None
    assert spec.workload == "ranker" and spec.max_parallel_jobs == 2 and spec.baseline == {"epochs": 2}


def test_unknown_workload_is_named() -> None:
    spec, reasons = validate_campaign(request(workload="no-such-trainer"))
    assert spec is None
    assert reasons == ["unknown workload 'no-such-trainer'"]


def test_unknown_dataset_is_named() -> None:
    spec, reasons = validate_campaign(request(dataset="imagenet"))
    assert spec is None
    assert len(reasons) == 1
    assert reasons[0].startswith("dataset: ") and "imagenet" in reasons[0]


def test_bad_dataset_parameter_is_named() -> None:
    spec, reasons = validate_campaign(request(dataset="synthetic:rows=lots"))
    assert spec is None
    assert len(reasons) == 1 and reasons[0].startswith("dataset: ") and "rows" in reasons[0]


def test_baseline_knobs_outside_the_schema_are_each_named() -> None:
    spec, reasons = validate_campaign(request(baseline={"epochs": 999, "warp_drive": 1}))
    assert spec is None
    assert reasons == ["baseline: epochs=999 is outside [1, 30]", "baseline: unknown knob 'warp_drive'"]


def test_dataset_and_baseline_problems_are_reported_together() -> None:
    _, reasons = validate_campaign(request(dataset="imagenet", baseline={"dropout": 0.9}))
    assert [r.split(":")[0] for r in reasons] == ["dataset", "baseline"]


@pytest.mark.parametrize("budget", [0, -5])
def test_non_positive_budget_is_named(budget: float) -> None:
    spec, reasons = validate_campaign(request(budget_cpu_seconds=budget))
    assert spec is None
    assert len(reasons) == 1 and reasons[0].startswith("budget_cpu_seconds: ")
    assert "greater than 0" in reasons[0]


def test_every_missing_required_field_is_named() -> None:
    spec, reasons = validate_campaign({})
    assert spec is None
    assert sorted(reasons) == [
        "budget_cpu_seconds: Field required",
        "dataset: Field required",
        "grant: Field required",
        "name: Field required",
    ]


def test_unexpected_field_is_named() -> None:
    _, reasons = validate_campaign(request(budgit=5))
    assert len(reasons) == 1 and reasons[0].startswith("budgit: ")


# ---- on_campaign_requested ----------------------------------------------------------


def test_invalid_request_is_rejected_with_reasons() -> None:
    event = CampaignRequested(**FOLLOW, payload=request(budget_cpu_seconds=-1))
    decision = logic.on_campaign_requested(None, event)
    assert decision.state is not None
    assert decision.state.status == "rejected"
    assert decision.state.reasons and decision.state.reasons[0].startswith("budget_cpu_seconds")
    [rejected] = decision.emit
    assert isinstance(rejected, CampaignRejected)
    assert rejected.payload.reasons == decision.state.reasons
    assert (rejected.campaign_id, rejected.correlation_id) == ("camp-1", "corr-1")


def test_valid_request_asks_for_hypotheses_with_the_resolved_baseline() -> None:
    event = CampaignRequested(**FOLLOW, payload=request(baseline={"epochs": 2}, max_hypotheses=4))
    decision = logic.on_campaign_requested(None, event, grant=GRANT)
    assert decision.state is not None and decision.state.status == "planning"
    assert decision.state.spec is not None
    [ask] = decision.emit
    assert isinstance(ask, HypothesesRequested)
    assert ask.payload.baseline == {**SCHEMA.defaults(), "epochs": 2}
    assert ask.payload.max_hypotheses == 4
    assert ask.payload.dataset == "synthetic:rows=3000"
    assert ask.correlation_id == "corr-1"


@pytest.mark.parametrize("status", ["planning", "rejected", "running", "completed"])
def test_repeated_request_is_a_no_op(status: str) -> None:
    state = planning().model_copy(update={"status": status})
    decision = logic.on_campaign_requested(state, CampaignRequested(**FOLLOW, payload=request()))
    assert decision.state is None and decision.emit == []


# ---- on_hypotheses_generated --------------------------------------------------------


def test_plan_within_auto_approve_starts_immediately() -> None:
    state = planning(auto_approve_up_to=2 * BASELINE_COST, max_parallel_jobs=3, confirm_seeds=1)
    decision = logic.on_hypotheses_generated(state, generated(hypothesis("fm", {"fm": True})), COSTS)
    assert decision.state is not None
    assert decision.state.status == "running"
    assert decision.state.approved_by == "grant team-a (auto-approves up to 75 CPU-s; granted by erin)"
    proposed, started = decision.emit
    assert isinstance(proposed, PlanProposed) and proposed.payload.requires_approval is False
    assert isinstance(started, PhaseStarted)
    assert started.payload.plan == proposed.payload.plan == decision.state.plan
    assert started.payload.budget_cpu_seconds == 1000
    assert started.payload.max_parallel_jobs == 3
    assert proposed.payload.plan.estimated_cpu_seconds == 2 * BASELINE_COST


def test_the_plan_shows_an_estimate_per_phase_and_auto_approval_covers_them_all() -> None:
    """Three hypotheses: 4 validation jobs; combination = 3 pairs + 1 stack of three + one extension
    and one pruning round (max_parallel_jobs, 2, each); 8 exploitation trials; confirmation =
    winner and baseline on 2 more seeds. Each job costs BASELINE_COST."""
    hypotheses = [
        hypothesis(h, {knob: True}) for h, knob in (("fm", "fm"), ("ln", "layer_norm"), ("x", "fm"))
    ]
    hypotheses[2] = hypothesis("dn", {"dropout": 0.2})
    state = planning(max_exploitation_trials=8, auto_approve_up_to=24 * BASELINE_COST)
    decision = logic.on_hypotheses_generated(state, generated(*hypotheses), COSTS)
    assert decision.state is not None
    assert decision.state.budget_by_phase == {
        "validation": 4 * BASELINE_COST,
        "combination": 8 * BASELINE_COST,
        "exploitation": 8 * BASELINE_COST,
        "confirmation": 4 * BASELINE_COST,
    }
    assert decision.state.status == "running"  # 24 jobs' worth: covered exactly
    proposed = decision.emit[0]
    assert isinstance(proposed, PlanProposed)
    assert proposed.payload.budget_by_phase == decision.state.budget_by_phase
    short = logic.on_hypotheses_generated(
        planning(max_exploitation_trials=8, auto_approve_up_to=24 * BASELINE_COST - 1),
        generated(*hypotheses),
        COSTS,
    )
    assert short.state is not None and short.state.status == "awaiting_approval"


def test_the_estimate_per_phase_never_exceeds_the_budget() -> None:
    """Exploitation follows, so validation may use half of the 100: the baseline (37.5) fits,
    fm (another 37.5) does not. Confirmation would want 4 jobs (150) and gets the 62.5 left;
    nothing remains for the rest. A cap equal to the budget always approves."""
    state = planning(budget_cpu_seconds=100, max_exploitation_trials=8, auto_approve_up_to=100)
    decision = logic.on_hypotheses_generated(state, generated(hypothesis("fm", {"fm": True})), COSTS)
    assert decision.state is not None and decision.state.status == "running"
    assert decision.state.dropped_hypotheses == ["fm: over budget (estimated 38 CPU-s)"]
    assert decision.state.budget_by_phase == {
        "validation": 37.5,
        "combination": 0.0,
        "exploitation": 0.0,
        "confirmation": 62.5,
    }


def test_plan_above_auto_approve_waits_for_a_person() -> None:
    state = planning(auto_approve_up_to=2 * BASELINE_COST - 0.01, confirm_seeds=1)
    decision = logic.on_hypotheses_generated(state, generated(hypothesis("fm", {"fm": True})), COSTS)
    assert decision.state is not None and decision.state.status == "awaiting_approval"
    assert decision.state.approved_by is None
    [proposed] = decision.emit
    assert isinstance(proposed, PlanProposed) and proposed.payload.requires_approval is True


def test_without_auto_approve_every_plan_waits() -> None:
    decision = logic.on_hypotheses_generated(planning(), generated(), COSTS)
    assert decision.state is not None and decision.state.status == "awaiting_approval"
    [proposed] = decision.emit
    assert isinstance(proposed, PlanProposed) and proposed.payload.requires_approval is True
    assert [j.hypothesis_id for j in proposed.payload.plan.jobs] == [None]


def test_plan_has_baseline_first_then_hypotheses_by_prior_gain() -> None:
    decision = logic.on_hypotheses_generated(
        planning(baseline={"epochs": 2}),
        generated(
            hypothesis("small", {"dropout": 0.1}, gain=0.001),
            hypothesis("big", {"fm": True}, gain=0.05),
        ),
        COSTS,
    )
    assert decision.state is not None and decision.state.plan is not None
    jobs = decision.state.plan.jobs
    assert [j.hypothesis_id for j in jobs] == [None, "big", "small"]
    assert jobs[0].config == {**SCHEMA.defaults(), "epochs": 2}
    # A hypothesis changes the resolved baseline, not the workload's defaults.
    assert jobs[1].config == {**SCHEMA.defaults(), "epochs": 2, "fm": True}
    assert jobs[2].config["dropout"] == 0.1 and jobs[2].config["epochs"] == 2
    assert len({j.job_id for j in jobs}) == 3
    assert all(j.phase == "validation" and j.campaign_id == "camp-1" for j in jobs)
    assert all(j.estimated_cpu_seconds == 10 * 2 * SAFETY_FACTOR for j in jobs)


def test_over_budget_and_invalid_hypotheses_are_dropped_with_reasons() -> None:
    # Budget 100: baseline (37.5) + one cheap hypothesis (37.5) fit; the 30-epoch one (375)
    # is over budget yet a cheaper one after it still fits; the third cheap one does not.
    state = planning(budget_cpu_seconds=100)
    decision = logic.on_hypotheses_generated(
        state,
        generated(
            hypothesis("expensive", {"epochs": 30}, gain=0.9),
            hypothesis("fm", {"fm": True}, gain=0.5),
            hypothesis("bad_value", {"dropout": 0.9}, gain=0.4),
            hypothesis("bad_knob", {"warp_drive": 1}, gain=0.3),
            hypothesis("layer_norm", {"layer_norm": True}, gain=0.1),
        ),
        COSTS,
    )
    campaign = decision.state
    assert campaign is not None and campaign.plan is not None
    assert [j.hypothesis_id for j in campaign.plan.jobs] == [None, "fm"]
    assert campaign.plan.estimated_cpu_seconds == 2 * BASELINE_COST
    dropped = {line.split(":")[0]: line for line in campaign.dropped_hypotheses}
    assert set(dropped) == {"expensive", "bad_value", "bad_knob", "layer_norm"}
    assert "over budget" in dropped["expensive"] and "375" in dropped["expensive"]
    assert "over budget" in dropped["layer_norm"]
    assert "invalid config" in dropped["bad_value"] and "dropout=0.9" in dropped["bad_value"]
    assert "invalid config" in dropped["bad_knob"] and "warp_drive" in dropped["bad_knob"]
    assert campaign.plan.estimated_cpu_seconds <= 100
    assert [h.id for h in campaign.hypotheses] == ["expensive", "fm", "bad_value", "bad_knob", "layer_norm"]


def test_budget_below_the_baseline_is_rejected() -> None:
    decision = logic.on_hypotheses_generated(
        planning(budget_cpu_seconds=30, auto_approve_up_to=1000),
        generated(hypothesis("fm", {"fm": True})),
        COSTS,
    )
    assert decision.state is not None and decision.state.status == "rejected"
    [rejected] = decision.emit
    assert isinstance(rejected, CampaignRejected)
    [reason] = rejected.payload.reasons
    assert reason.startswith("budget_cpu_seconds: 30 cannot cover even the baseline")
    assert "37.5" in reason
    assert decision.state.reasons == [reason]


@pytest.mark.parametrize("status", ["awaiting_approval", "running", "rejected", "completed"])
def test_hypotheses_outside_planning_are_ignored(status: str) -> None:
    state = planning().model_copy(update={"status": status})
    decision = logic.on_hypotheses_generated(state, generated(), COSTS)
    assert decision.state is None and decision.emit == []


def test_hypotheses_for_an_unknown_campaign_are_ignored() -> None:
    decision = logic.on_hypotheses_generated(None, generated(), COSTS)
    assert decision.state is None and decision.emit == []


# ---- on_plan_approved ---------------------------------------------------------------


def awaiting() -> Campaign:
    decision = logic.on_hypotheses_generated(planning(), generated(hypothesis("fm", {"fm": True})), COSTS)
    assert decision.state is not None and decision.state.status == "awaiting_approval"
    return decision.state


def test_approval_starts_the_phase() -> None:
    state = awaiting()
    decision = logic.on_plan_approved(state, approved("alice"))
    assert decision.state is not None
    assert decision.state.status == "running" and decision.state.approved_by == "alice"
    [started] = decision.emit
    assert isinstance(started, PhaseStarted)
    assert started.payload.plan == state.plan
    assert started.payload.budget_cpu_seconds == 1000


def test_second_approval_is_a_no_op() -> None:
    running = logic.on_plan_approved(awaiting(), approved("alice")).state
    decision = logic.on_plan_approved(running, approved("bob"))
    assert decision.state is None and decision.emit == []


@pytest.mark.parametrize("status", ["planning", "rejected", "completed", "failed"])
def test_approval_outside_awaiting_approval_is_ignored(status: str) -> None:
    state = awaiting().model_copy(update={"status": status})
    decision = logic.on_plan_approved(state, approved())
    assert decision.state is None and decision.emit == []


def test_approval_for_an_unknown_campaign_is_ignored() -> None:
    decision = logic.on_plan_approved(None, approved())
    assert decision.state is None and decision.emit == []


# ---- summarize / on_phase_concluded -------------------------------------------------


def metrics(ne: float, auc: float = 0.7) -> SplitMetrics:
    return SplitMetrics(ne=ne, auc=auc, logloss=ne / 2, rows=1000)


def record(
    job_id: str,
    hypothesis_id: str | None,
    config: dict[str, Any],
    val_ne: float,
    test_ne: float,
    *,
    auc: float = 0.7,
    cpu: float = 10.0,
    phase: str = "validation",
) -> JobRecord:
    return JobRecord(
        job_id=job_id,
        hypothesis_id=hypothesis_id,
        config=config,
        phase=phase,
        status="completed",
        validation=metrics(val_ne),
        test=metrics(test_ne, auc),
        cost=JobCost(cpu_seconds=cpu, wall_seconds=cpu, peak_rss_mb=100),
    )


BASE_CONFIG = {"epochs": 3, "fm": False, "dropout": 0.0}


def phase_records() -> list[JobRecord]:
    return [
        record("j-base", None, BASE_CONFIG, val_ne=0.90, test_ne=0.90, auc=0.70, cpu=10.0),
        # best on test, but NOT best on validation: must not win
        record("j-lucky", "dropout", {**BASE_CONFIG, "dropout": 0.2}, 0.88, 0.70, auc=0.80, cpu=11.0),
        # best on validation: the winner
        record("j-fm", "fm", {**BASE_CONFIG, "fm": True}, 0.80, 0.85, auc=0.75, cpu=12.0),
        JobRecord(job_id="j-oom", hypothesis_id="big", config={}, status="failed", cost=None),
        JobRecord(
            job_id="j-partial",
            hypothesis_id="p",
            config={},
            status="failed",
            cost=JobCost(cpu_seconds=2.5, wall_seconds=1, peak_rss_mb=1),
        ),
        # handled by the runbook: neither completed nor failed, but its CPU was spent
        JobRecord(
            job_id="j-retried",
            hypothesis_id="r",
            config={},
            status="retried",
            cost=JobCost(cpu_seconds=1.5, wall_seconds=1, peak_rss_mb=1),
        ),
    ]


def test_summary_picks_the_best_on_validation_and_reports_test_metrics() -> None:
    result = logic.summarize(phase_records())
    assert not isinstance(result, str)
    assert result.best.job_id == "j-fm" and result.best.hypothesis_id == "fm"
    assert result.best.ne == 0.85 and result.best.validation_ne == 0.80 and result.best.auc == 0.75
    assert result.baseline.job_id == "j-base" and result.baseline.ne == 0.90
    assert result.best_changes == {"fm": True}
    assert result.ne_delta == pytest.approx(0.85 - 0.90)
    assert result.ne_relative_gain == pytest.approx((0.90 - 0.85) / 0.90)
    assert result.auc_delta == pytest.approx(0.05)
    assert result.jobs_completed == 3
    assert result.jobs_failed == 2  # j-oom and j-partial; the retried job is not a failure
    assert result.compute_seconds == pytest.approx(37.0)


def test_summary_when_nothing_beats_the_baseline() -> None:
    records = [
        record("j-base", None, BASE_CONFIG, 0.80, 0.80),
        record("j-worse", "fm", {**BASE_CONFIG, "fm": True}, 0.85, 0.75),
    ]
    result = logic.summarize(records)
    assert not isinstance(result, str)
    assert result.best.job_id == "j-base" and result.best_changes == {}
    assert result.ne_delta == 0 and result.ne_relative_gain == 0


def test_summary_fails_clearly_without_a_completed_baseline() -> None:
    records = [r for r in phase_records() if r.hypothesis_id is not None]
    records.append(JobRecord(job_id="j-base", hypothesis_id=None, config=BASE_CONFIG, status="failed"))
    result = logic.summarize(records)
    assert result == "the baseline job did not complete, so nothing can be compared"


def test_summary_ignores_completed_jobs_without_metrics() -> None:
    records = [
        *phase_records()[:1],
        JobRecord(job_id="j-nometrics", hypothesis_id="x", config={"epochs": 1}, status="completed"),
    ]
    result = logic.summarize(records)
    assert not isinstance(result, str)
    assert result.best.job_id == "j-base" and result.jobs_completed == 1


def concluded(jobs: list[JobRecord], phase: str = "validation") -> PhaseConcluded:
    return PhaseConcluded(**FOLLOW, payload=PhaseConcludedPayload(phase=phase, jobs=jobs))


def running(**overrides: Any) -> Campaign:
    return planning(**overrides).model_copy(update={"status": "running", "phase": "validation"})


@pytest.mark.parametrize("status", ["running", "paused", "paused_budget"])
def test_validation_concluded_without_confirmation_completes_the_campaign(status: str) -> None:
    state = running(confirm_seeds=1).model_copy(update={"status": status})
    decision = logic.on_phase_concluded(state, concluded(phase_records()), COSTS)
    assert decision.state is not None and decision.state.status == "completed"
    [done] = decision.emit
    assert isinstance(done, CampaignCompleted)
    assert done.payload.result == decision.state.result
    assert done.payload.result.best.job_id == "j-fm"
    assert done.payload.result.verdict == "too few seeds" and done.payload.result.seeds == 1
    assert done.payload.result.notes == [
        "confirmation skipped: confirm_seeds is 1",
        "the search stopped with 963 of 1000 CPU-s left: exploitation is off (max_exploitation_trials is 0)",
    ]


def test_a_validation_winner_is_confirmed_on_more_seeds_within_the_remaining_budget() -> None:
    decision = logic.on_phase_concluded(running(), concluded(phase_records()), COSTS)
    assert decision.state is not None and decision.state.status == "running"
    assert decision.state.phase == "confirmation" and decision.state.result is None
    [started] = decision.emit
    assert isinstance(started, PhaseStarted)
    plan = started.payload.plan
    assert plan == decision.state.confirmation and plan.phase == "confirmation"
    assert [(j.hypothesis_id, j.seed) for j in plan.jobs] == [(None, 1), ("fm", 1), (None, 2), ("fm", 2)]
    assert [j.job_id for j in plan.jobs][:2] == [
        "camp-1-confirmation-baseline-s1",
        "camp-1-confirmation-fm-s1",
    ]
    assert plan.jobs[1].config == {**BASE_CONFIG, "fm": True} and plan.jobs[0].config == BASE_CONFIG
    assert started.payload.budget_cpu_seconds == pytest.approx(1000 - 37.0)
    assert decision.state.records == phase_records()


def confirmed(base_nes: list[float], fm_nes: list[float]) -> list[JobRecord]:
    return [
        record(f"c-{name}-s{seed}", hid, config, ne, ne).model_copy(
            update={"phase": "confirmation", "seed": seed}
        )
        for name, hid, config, nes in (
            ("base", None, BASE_CONFIG, base_nes),
            ("fm", "fm", {**BASE_CONFIG, "fm": True}, fm_nes),
        )
        for seed, ne in zip((1, 2), nes, strict=True)
    ]


def test_confirmation_concluded_completes_with_an_interval_over_all_seeds() -> None:
    confirming = logic.on_phase_concluded(running(), concluded(phase_records()), COSTS).state
    assert confirming is not None
    jobs = confirmed(base_nes=[0.91, 0.89], fm_nes=[0.84, 0.86])
    decision = logic.on_phase_concluded(confirming, concluded(jobs, "confirmation"), COSTS)
    assert decision.state is not None and decision.state.status == "completed"
    result = decision.state.result
    assert result is not None and result.seeds == 3
    assert result.baseline.ne_by_seed == {0: 0.90, 1: 0.91, 2: 0.89}
    assert result.best.ne_by_seed == {0: 0.85, 1: 0.84, 2: 0.86}
    assert result.best.ne == pytest.approx(0.85) and result.baseline.ne == pytest.approx(0.90)
    assert result.ne_delta == pytest.approx(-0.05)
    assert result.ne_delta_low is not None and result.ne_delta_high is not None
    assert result.ne_delta_low < -0.05 < result.ne_delta_high < 0
    assert result.verdict == "better" and result.p_value is not None and result.p_value < 0.05
    assert result.jobs_completed == 3 + 4
    assert result.compute_seconds == pytest.approx(37.0 + 4 * 10.0)


def test_a_confirmation_that_does_not_separate_them_says_not_significant() -> None:
    confirming = logic.on_phase_concluded(running(), concluded(phase_records()), COSTS).state
    assert confirming is not None
    jobs = confirmed(base_nes=[0.80, 0.86], fm_nes=[0.90, 0.84])
    result = logic.on_phase_concluded(confirming, concluded(jobs, "confirmation"), COSTS).state
    assert result is not None and result.result is not None
    assert result.result.verdict == "not significant"


def test_no_confirmation_when_nothing_beat_the_baseline() -> None:
    records = [
        record("j-base", None, BASE_CONFIG, 0.80, 0.80),
        record("j-worse", "fm", {**BASE_CONFIG, "fm": True}, 0.85, 0.75),
    ]
    decision = logic.on_phase_concluded(running(), concluded(records), COSTS)
    assert decision.state is not None and decision.state.status == "completed"
    assert decision.state.result is not None
    assert decision.state.result.notes[0] == "nothing beat the baseline on validation NE"
    assert decision.state.result.notes[1].startswith("the search stopped with ")
    assert decision.state.result.verdict == "not significant"


def test_no_confirmation_when_the_budget_left_cannot_cover_it() -> None:
    # Costs are now learned from the campaign's own jobs: 11/3 CPU-s per epoch, x 3 epochs
    # x 1.25 = 13.75 per job; confirmation needs 4 of them.
    decision = logic.on_phase_concluded(running(budget_cpu_seconds=80), concluded(phase_records()), COSTS)
    assert decision.state is not None and decision.state.status == "completed"
    assert decision.state.result is not None
    note, ended = decision.state.result.notes
    assert note == "confirmation skipped: it needs an estimated 55 CPU-s, 43 of the budget remain"
    assert ended.startswith("the search stopped with 43 of 80 CPU-s left: ")


def with_hypotheses(state: Campaign, *ids: str) -> Campaign:
    changes: dict[str, dict[str, Any]] = {
        "layer_norm": {"layer_norm": True},
        "bad": {"dropout": 5.0},
        "wider": {"mlp_width": 128},
    }
    return state.model_copy(update={"hypotheses": [hypothesis(i, changes.get(i, {"fm": True})) for i in ids]})


def test_hypotheses_that_now_fit_the_budget_get_another_validation_round() -> None:
    state = with_hypotheses(running(), "fm", "dropout", "layer_norm", "bad", "wider")
    decision = logic.on_phase_concluded(state, concluded(phase_records()), COSTS)
    assert decision.state is not None and decision.state.phase == "validation-2"
    [started] = decision.emit
    assert isinstance(started, PhaseStarted)
    plan = started.payload.plan
    assert plan.phase == "validation-2" and decision.state.rounds == [plan]
    # fm and dropout were tried, "bad" is outside the schema: the untried, valid ones run.
    assert [j.job_id for j in plan.jobs] == [
        "camp-1-validation-2-layer_norm-s0",
        "camp-1-validation-2-wider-s0",
    ]
    assert all(j.estimated_cpu_seconds == pytest.approx(13.75) for j in plan.jobs)
    assert started.payload.budget_cpu_seconds == pytest.approx(1000 - 37.0)


def test_a_round_keeps_room_for_the_confirmation() -> None:
    # 43 CPU-s remain (37 of 80 spent); the confirmation's 55 leave no room for a round (and do
    # not fit either, so the campaign completes).
    state = with_hypotheses(running(budget_cpu_seconds=80), "layer_norm")
    decision = logic.on_phase_concluded(state, concluded(phase_records()), COSTS)
    assert decision.state is not None and decision.state.status == "completed"
    # With confirm_seeds=1 nothing is reserved, and the 13.75 CPU-s job fits the 43 left.
    state = with_hypotheses(running(budget_cpu_seconds=80, confirm_seeds=1), "layer_norm")
    decision = logic.on_phase_concluded(state, concluded(phase_records()), COSTS)
    assert decision.state is not None and decision.state.phase == "validation-2"


def test_the_winner_is_picked_over_every_validation_round() -> None:
    state = with_hypotheses(running(), "layer_norm")
    second = logic.on_phase_concluded(state, concluded(phase_records()), COSTS).state
    assert second is not None and second.phase == "validation-2"
    round_two = [
        record("j-ln", "layer_norm", {**BASE_CONFIG, "layer_norm": True}, 0.70, 0.80).model_copy(
            update={"phase": "validation-2"}
        )
    ]
    decision = logic.on_phase_concluded(second, concluded(round_two, "validation-2"), COSTS)
    assert decision.state is not None and decision.state.phase == "confirmation"
    assert decision.state.confirmation is not None
    assert {j.hypothesis_id for j in decision.state.confirmation.jobs} == {None, "layer_norm"}


def test_a_late_copy_of_the_validation_conclusion_does_not_restart_confirmation() -> None:
    confirming = logic.on_phase_concluded(running(), concluded(phase_records()), COSTS).state
    assert confirming is not None
    decision = logic.on_phase_concluded(confirming, concluded(phase_records()), COSTS)
    assert decision.state is None and decision.emit == []


def test_phase_concluded_without_baseline_marks_the_campaign_failed() -> None:
    decision = logic.on_phase_concluded(running(), concluded(phase_records()[1:]), COSTS)
    assert decision.state is not None and decision.state.status == "failed"
    assert decision.state.reasons == ["the baseline job did not complete, so nothing can be compared"]
    assert decision.emit == []


@pytest.mark.parametrize("status", ["planning", "awaiting_approval", "rejected", "completed", "failed"])
def test_phase_concluded_outside_an_active_campaign_is_ignored(status: str) -> None:
    state = planning().model_copy(update={"status": status})
    decision = logic.on_phase_concluded(state, concluded(phase_records()), COSTS)
    assert decision.state is None and decision.emit == []


def test_phase_concluded_for_an_unknown_campaign_is_ignored() -> None:
    decision = logic.on_phase_concluded(None, concluded(phase_records()), COSTS)
    assert decision.state is None and decision.emit == []


def test_a_retried_baseline_that_completed_on_retry_is_the_baseline() -> None:
    records = [
        JobRecord(job_id="j-base", hypothesis_id=None, config=BASE_CONFIG, status="retried"),
        record("j-base-a2", None, {**BASE_CONFIG, "batch_size": 128}, 0.9, 0.9),
        record("j-fm", "fm", {**BASE_CONFIG, "fm": True}, 0.8, 0.8),
    ]
    result = logic.summarize(records)
    assert not isinstance(result, str)
    assert result.baseline.job_id == "j-base-a2" and result.best.job_id == "j-fm"
    assert (result.jobs_completed, result.jobs_failed) == (2, 0)


# ---- pauses, resumes and budget warnings ----------------------------------------------


def status_payload(reason: str, spent: float = 20.0, budget: float = 25.0) -> PhaseStatusPayload:
    cause = "person" if reason.startswith(("paused by", "resumed by")) else "budget"
    return PhaseStatusPayload(
        phase="validation", cause=cause, reason=reason, spent_cpu_seconds=spent, budget_cpu_seconds=budget
    )


def phase_paused(reason: str) -> PhasePaused:
    return PhasePaused(**FOLLOW, payload=status_payload(reason))


def phase_resumed(reason: str) -> PhaseResumed:
    return PhaseResumed(**FOLLOW, payload=status_payload(reason))


def campaign(status: str, notices: list[str] | None = None) -> Campaign:
    return planning().model_copy(update={"status": status, "notices": notices or []})


BUDGET_REASON = "the next job (10 CPU-s estimated) would cross the budget; extend it to continue"


@pytest.mark.parametrize(
    ("reason", "expected"),
    [(BUDGET_REASON, "paused_budget"), ("paused by alice", "paused")],
)
@pytest.mark.parametrize("status", ["running", "paused", "paused_budget"])
def test_phase_paused_mirrors_the_pause_into_the_campaign(status: str, reason: str, expected: str) -> None:
    state = campaign(status, notices=["earlier"])
    decision = logic.on_phase_paused(state, phase_paused(reason))
    assert decision.emit == []
    assert decision.state is not None
    assert decision.state.status == expected
    assert decision.state.notices == ["earlier", f"paused: {reason}"]
    assert decision.state.updated_at >= state.updated_at
    assert state.notices == ["earlier"]  # the input state is not mutated


@pytest.mark.parametrize("status", ["planning", "awaiting_approval", "rejected", "completed", "failed"])
def test_phase_paused_outside_an_active_campaign_is_ignored(status: str) -> None:
    decision = logic.on_phase_paused(campaign(status), phase_paused("paused by alice"))
    assert decision.state is None and decision.emit == []
    assert logic.on_phase_paused(None, phase_paused("paused by alice")).state is None


def test_a_person_named_budget_pausing_is_not_a_budget_pause() -> None:
    decision = logic.on_phase_paused(campaign("running"), phase_paused("paused by budget-office"))
    assert decision.state is not None and decision.state.status == "paused"


@pytest.mark.parametrize("status", ["paused", "paused_budget"])
def test_phase_resumed_sets_the_campaign_running(status: str) -> None:
    state = campaign(status, notices=["paused: paused by alice"])
    decision = logic.on_phase_resumed(state, phase_resumed("resumed by bob"))
    assert decision.emit == []
    assert decision.state is not None and decision.state.status == "running"
    assert decision.state.notices == ["paused: paused by alice", "resumed: resumed by bob"]


@pytest.mark.parametrize("status", ["running", "planning", "awaiting_approval", "completed", "failed"])
def test_phase_resumed_of_a_campaign_not_paused_is_ignored(status: str) -> None:
    decision = logic.on_phase_resumed(campaign(status), phase_resumed("resumed by bob"))
    assert decision.state is None and decision.emit == []
    assert logic.on_phase_resumed(None, phase_resumed("resumed by bob")).state is None


@pytest.mark.parametrize("status", ["running", "paused_budget"])
def test_budget_warning_adds_a_notice_and_keeps_the_status(status: str) -> None:
    warning = BudgetWarning(**FOLLOW, payload=status_payload("80% of the budget is spent", 20.4, 25))
    decision = logic.on_budget_warning(campaign(status, notices=["earlier"]), warning)
    assert decision.emit == []
    assert decision.state is not None and decision.state.status == status
    assert decision.state.notices == ["earlier", "budget warning: 20 of 25 CPU-s spent"]


def test_budget_warning_for_an_unknown_campaign_is_ignored() -> None:
    warning = BudgetWarning(**FOLLOW, payload=status_payload("80% of the budget is spent"))
    decision = logic.on_budget_warning(None, warning)
    assert decision.state is None and decision.emit == []


def test_the_executors_pause_and_resume_events_read_right_in_the_planner() -> None:
    """Contract: the planner classifies the executor's real pause reasons correctly."""
    spec = planning().spec
    assert spec is not None
    job = logic.make_job(spec, "camp-1", None, SCHEMA.defaults(), COSTS, "validation")
    phase = PhaseStarted(
        **FOLLOW,
        payload=PhaseStartedPayload(
            plan=PhasePlan(phase="validation", jobs=[job], estimated_cpu_seconds=BASELINE_COST),
            budget_cpu_seconds=1.0,
            max_parallel_jobs=1,
        ),
    )
    start = executor.on_phase_started(None, phase)
    [budget_pause] = start.emit
    assert isinstance(budget_pause, PhasePaused)
    paused = logic.on_phase_paused(campaign("running"), budget_pause).state
    assert paused is not None and paused.status == "paused_budget"
    assert start.state is not None
    extension = BudgetExtended(**FOLLOW, payload=BudgetExtendedPayload(cpu_seconds=100, by="carol"))
    resumed_phase = executor.on_budget_extended(start.state, extension)
    resume = next(e for e in resumed_phase.emit if isinstance(e, PhaseResumed))
    resumed = logic.on_phase_resumed(paused, resume).state
    assert resumed is not None and resumed.status == "running"
    assert resumed_phase.state is not None
    pause = CampaignPaused(**FOLLOW, payload=PersonAction(by="alice"))
    person = executor.on_campaign_paused(resumed_phase.state, pause)
    [person_pause] = person.emit
    assert isinstance(person_pause, PhasePaused)
    by_person = logic.on_phase_paused(resumed, person_pause).state
    assert by_person is not None and by_person.status == "paused"


# ---- costs --------------------------------------------------------------------------


def test_cost_model_without_history_uses_the_prior() -> None:
    model = CostModel.from_history(RANKER_FIDELITY, [])
    assert model.observations == 0
    assert model.estimate({"epochs": 2, "data_fraction": 0.5}) == round(
        PRIOR_CPU_SECONDS_PER_EPOCH * 1 * SAFETY_FACTOR, 2
    )


def test_cost_model_learns_mean_cost_per_fidelity_unit() -> None:
    rows: list[dict[str, Any]] = [
        {"config": {"epochs": 2, "data_fraction": 0.5}, "cost": {"cpu_seconds": 10.0}},  # 10 / unit
        {"config": {"epochs": 4}, "cost": {"cpu_seconds": 80.0}},  # 20 / unit
        {"config": {"epochs": 4}, "cost": None},  # no cost: ignored
        {"config": {"epochs": 0}, "cost": {"cpu_seconds": 5.0}},  # zero fidelity: ignored
    ]
    model = CostModel.from_history(RANKER_FIDELITY, rows)
    assert model.observations == 2
    assert model.cpu_seconds_per_unit == pytest.approx(15.0)
    assert model.estimate({"epochs": 2}) == pytest.approx(15.0 * 2 * SAFETY_FACTOR)
    assert model.estimate({"epochs": 10, "data_fraction": 0.1}) == pytest.approx(15.0 * SAFETY_FACTOR)


def test_the_prior_grows_with_the_training_rows_and_with_each_configs_parameters() -> None:
    rows, wide = 32_000, {"epochs": 3, "mlp_width": 512}
    data_only = CostModel.prior(RANKER_FIDELITY, rows)
    assert data_only.estimate(wide) == round(
        (PRIOR_START_CPU_SECONDS + 3 * rows * PRIOR_CPU_SECONDS_PER_ROW) * SAFETY_FACTOR, 2
    )

    def count(config: dict[str, Any]) -> int:
        return 1_000 * int(config["mlp_width"])

    sized = CostModel.prior(RANKER_FIDELITY, rows, count)
    per_row = PRIOR_CPU_SECONDS_PER_ROW + PRIOR_CPU_SECONDS_PER_ROW_PARAMETER * 512_000
    assert sized.estimate(wide) == pytest.approx(
        (PRIOR_START_CPU_SECONDS + 3 * rows * per_row) * SAFETY_FACTOR, abs=0.01
    )
    narrow = {**wide, "mlp_width": 16}
    assert data_only.estimate(wide) < sized.estimate(narrow) < sized.estimate(wide)
    assert not sized.knows_fixed_cost  # the prior's start-up cost is assumed, not seen
    unknown = CostModel.prior(RANKER_FIDELITY, rows, lambda config: None)
    assert unknown.estimate(wide) == data_only.estimate(wide)
    assert CostModel.prior(RANKER_FIDELITY, None, count).estimate(wide) == round(
        PRIOR_CPU_SECONDS_PER_EPOCH * 3 * SAFETY_FACTOR, 2
    )


def test_the_model_size_shapes_only_the_prior_and_history_replaces_it() -> None:
    def count(config: dict[str, Any]) -> int:
        return 1_000 * int(config["mlp_width"])

    config = {"epochs": 2, "mlp_width": 512}
    assert CostModel.from_history(RANKER_FIDELITY, [], 32_000, count) == CostModel.prior(
        RANKER_FIDELITY, 32_000, count
    )
    seen = [{"config": {"epochs": 1}, "cost": {"cpu_seconds": 20.0}}]
    learned = CostModel.from_history(RANKER_FIDELITY, seen, 32_000, count)
    assert learned.estimate(config) == learned.estimate({**config, "mlp_width": 16}) == 50.0


def test_the_prior_covers_the_reference_jobs_it_was_measured_on() -> None:
    """The jobs measured for ``PRIOR_CPU_SECONDS_PER_ROW_PARAMETER`` (``synthetic:rows=40000``),
    each at the highest CPU-s seen: the prior prices the large model above its cost, and above
    the default's estimate."""
    ranker, dataset = get_workload("ranker"), "synthetic:rows=40000"
    prior = CostModel.prior(RANKER_FIDELITY, 32_000, partial(parameters_of, ranker, dataset=dataset))
    large = {"embedding_dim": 32, "mlp_width": 512, "mlp_depth": 3}
    for epochs, default_cost, large_cost in [(1, 7.1, 10.3), (4, 6.9, 19.9)]:
        default_estimate = prior.estimate(SCHEMA.resolve({"epochs": epochs}))
        large_estimate = prior.estimate(SCHEMA.resolve({**large, "epochs": epochs}))
        assert default_estimate > default_cost and large_estimate > large_cost
        assert large_estimate > default_estimate


def test_a_workloads_parameter_count_is_read_only_when_it_gives_one() -> None:
    class Counting:
        def parameters(self, config: dict[str, Any], dataset: str) -> int:
            return 7 * int(config["width"])

    class Silent:
        pass

    class Failing:
        def parameters(self, config: dict[str, Any], dataset: str) -> int:
            raise RuntimeError("cannot build it")

    class Confused:
        def parameters(self, config: dict[str, Any], dataset: str) -> object:
            return "many"

    workloads: list[Any] = [Counting(), Silent(), Failing(), Confused()]
    assert [parameters_of(w, {"width": 3}, "synthetic") for w in workloads] == [21, None, None, None]
    assert parameters_of(workloads[0], {}, "synthetic") is None  # its KeyError is an unknown count


def test_learned_costs_change_the_plan() -> None:
    cheap = logic.on_hypotheses_generated(
        planning(budget_cpu_seconds=100), generated(hypothesis("fm", {"fm": True})), COSTS
    )
    pricey = logic.on_hypotheses_generated(
        planning(budget_cpu_seconds=100),
        generated(hypothesis("fm", {"fm": True})),
        CostModel.from_history(RANKER_FIDELITY, [{"config": {"epochs": 1}, "cost": {"cpu_seconds": 20.0}}]),
    )
    assert cheap.state is not None and cheap.state.plan is not None
    assert pricey.state is not None and pricey.state.plan is not None
    assert len(cheap.state.plan.jobs) == 2
    assert [j.hypothesis_id for j in pricey.state.plan.jobs] == [None]  # 75 + 75 > 100
    assert pricey.state.plan.estimated_cpu_seconds == 75.0


def test_absurdly_large_baseline_value_is_rejected_not_crashed() -> None:
    decision = logic.on_campaign_requested(
        None, CampaignRequested(**FOLLOW, payload=request(baseline={"epochs": 10**400}))
    )
    assert decision.state is not None and decision.state.status == "rejected"
    assert decision.state.reasons[0].startswith("baseline: epochs=")


# ---- on_proposal_accepted -----------------------------------------------------------


def accepted(by: str) -> ProposalAccepted:
    return ProposalAccepted(**FOLLOW, payload=PersonAction(by=by))


def test_the_first_acceptance_of_a_completed_campaign_is_recorded() -> None:
    done = logic.on_phase_concluded(running(confirm_seeds=1), concluded(phase_records()), COSTS).state
    assert done is not None and done.status == "completed"
    event = accepted("carol")
    decision = logic.on_proposal_accepted(done, event)
    assert decision.state is not None and decision.emit == []
    assert decision.state.accepted_by == "carol" and decision.state.accepted_at == event.occurred_at
    assert logic.on_proposal_accepted(decision.state, accepted("dave")).state is None


@pytest.mark.parametrize("status", ["planning", "awaiting_approval", "running", "rejected", "failed"])
def test_only_a_completed_campaign_can_be_accepted(status: str) -> None:
    state = planning().model_copy(update={"status": status})
    assert logic.on_proposal_accepted(state, accepted("carol")).state is None
    assert logic.on_proposal_accepted(None, accepted("carol")).state is None


def test_a_cap_equal_to_the_budget_approves_whatever_the_rounding_of_the_phases() -> None:
    """Learned costs make odd estimates; rounded per phase, they may sum a hair over the budget."""
    for per_unit in (3.08, 3.28, 3.48, 3.68, 4.27):  # sums to 120.00000000000001 unrounded
        state = planning(budget_cpu_seconds=120, max_exploitation_trials=100, auto_approve_up_to=120)
        hypotheses = [hypothesis("h0", {"dropout": 0.1})]
        decision = logic.on_hypotheses_generated(
            state, generated(*hypotheses), CostModel(RANKER_FIDELITY, cpu_seconds_per_unit=per_unit)
        )
        assert decision.state is not None and decision.state.status == "running", per_unit


def test_the_baseline_diagnosis_reorders_the_next_validation_round() -> None:
    """The baseline over-fits: the regularising hypothesis moves ahead of the capacity one, and
    the campaign keeps what was found. A diagnosis made before (by the hypothesis service) stands."""
    state = with_hypotheses(running(budget_cpu_seconds=110), "fm", "dropout", "wider", "layer_norm")
    wider, norm = (h for h in state.hypotheses if h.id in ("wider", "layer_norm"))
    hypotheses = [
        *state.hypotheses[:2],
        wider.model_copy(update={"expected_gain": 0.02, "signals": ["underfitting"]}),
        norm.model_copy(update={"signals": ["overfitting"]}),
    ]
    state = state.model_copy(update={"hypotheses": hypotheses})
    over = baseline_run(train_ne=0.70, validation_ne=0.90, val_ne_by_epoch=[0.902, 0.90])
    records = phase_records()
    records[0] = records[0].model_copy(update={"diagnostics": over})
    decision = logic.on_phase_concluded(state, concluded(records), COSTS)
    assert decision.state is not None and decision.state.phase == "validation-2"
    assert decision.state.findings == ["overfitting: validation NE 22.2% above training NE"]
    [job] = decision.state.rounds[-1].jobs  # room for one more: the one that addresses it
    assert job.hypothesis_id == "layer_norm"
    already = state.model_copy(update={"findings": ["underfitting: from a past run"]})
    decision = logic.on_phase_concluded(already, concluded(records), COSTS)
    assert decision.state is not None and decision.state.findings == ["underfitting: from a past run"]
    assert [j.hypothesis_id for j in decision.state.rounds[-1].jobs] == ["wider"]


def test_the_baseline_is_the_diagnosed_job() -> None:
    plan, _ = logic.plan_validation(with_hypotheses(running(), "fm"), COSTS)
    assert [j.diagnose for j in plan.jobs] == [True, False]


# ---- budget changes, cancellation, the baseline's identity -------------------------------


def extended(cpu_seconds: float, by: str = "dana") -> BudgetExtended:
    return BudgetExtended(**FOLLOW, payload=BudgetExtendedPayload(cpu_seconds=cpu_seconds, by=by))


def test_a_budget_extension_is_part_of_the_campaign_and_every_later_phase_plans_from_it() -> None:
    state = running(budget_cpu_seconds=80)
    grown = logic.on_budget_extended(state, extended(920)).state
    assert grown is not None and grown.budget_cpu_seconds() == 1000
    assert [(c.cpu_seconds, c.by) for c in grown.budget_changes] == [(920, "dana")]
    assert any("budget extended by 920 CPU-s by dana" in notice for notice in grown.notices)
    # At 80 CPU-s the confirmation did not fit (see above); at 1000 it does, with what is left.
    decision = logic.on_phase_concluded(grown, concluded(phase_records()), COSTS)
    assert decision.state is not None and decision.state.phase == "confirmation"
    [started] = decision.emit
    assert isinstance(started, PhaseStarted)
    assert started.payload.budget_cpu_seconds == pytest.approx(1000 - 37.0)


@pytest.mark.parametrize("status", ["completed", "rejected", "cancelled", "failed"])
def test_a_budget_extension_of_a_finished_campaign_changes_nothing(status: str) -> None:
    state = running().model_copy(update={"status": status})
    assert logic.on_budget_extended(state, extended(100)).state is None


def cancelled(by: str = "erin") -> CampaignCancelled:
    return CampaignCancelled(**FOLLOW, payload=PersonAction(by=by))


@pytest.mark.parametrize("status", ["planning", "awaiting_approval"])
def test_a_campaign_cancelled_before_any_job_ends_at_once(status: str) -> None:
    state = planning().model_copy(update={"status": status})
    decision = logic.on_campaign_cancelled(state, cancelled())
    assert decision.state is not None and decision.state.status == "cancelled"
    assert decision.state.cancelled_by == "erin" and decision.emit == []


def test_a_running_campaign_ends_cancelled_with_what_it_found_when_its_phase_concludes() -> None:
    cancelling = logic.on_campaign_cancelled(running(), cancelled()).state
    assert cancelling is not None and cancelling.status == "cancelling"
    decision = logic.on_phase_concluded(cancelling, concluded(phase_records()), COSTS)
    assert decision.state is not None and decision.state.status == "cancelled"
    assert decision.emit == []  # no next phase, and no campaign.completed: nothing to learn from
    result = decision.state.result
    assert result is not None and result.best.job_id == "j-fm"
    assert any(note.startswith("cancelled by erin") for note in result.notes)


def test_the_baseline_is_the_requested_config_not_a_runbook_retry_that_changed_it() -> None:
    base = SCHEMA.resolve({})
    adjusted = {**base, "learning_rate": base["learning_rate"] / 3, "grad_clip": 1.0}
    records = [
        record("b-a2", None, adjusted, 0.85, 0.85),  # the runbook's changed retry
        record("b-a3", None, base, 0.90, 0.90),  # the requested config, trained
        record("fm", "fm", {**base, "fm": True}, 0.80, 0.80),
    ]
    result = logic.summarize(records, reference=base)
    assert not isinstance(result, str)
    assert result.baseline.job_id == "b-a3" and result.baseline_changes == {}
    assert result.best_changes == {"fm": True}


def test_a_baseline_only_the_runbook_could_train_is_reported_as_such() -> None:
    base = SCHEMA.resolve({})
    adjusted = {**base, "learning_rate": base["learning_rate"] / 3, "grad_clip": 1.0}
    failed = JobRecord(
        job_id="b", hypothesis_id=None, config=base, status="retried", error=JobError(kind="nan", message="x")
    )
    records = [
        failed,
        record("b-a3", None, adjusted, 0.85, 0.85),
        record("fm", "fm", {**base, "fm": True}, 0.8, 0.8),
    ]
    result = logic.summarize(records, reference=base)
    assert not isinstance(result, str)
    assert result.baseline.job_id == "b-a3"
    assert result.baseline_changes == {"learning_rate": adjusted["learning_rate"], "grad_clip": 1.0}
    assert result.best_changes == {"fm": True}  # told against the requested baseline, not the retry
    assert any("runbook" in note and "nan" in note for note in result.notes)
