"""The planner's decisions: pure functions of (campaign state, event) -> Decision.

No I/O here: the service loads state and history, calls these, and commits the outcome
atomically (state + outbox). That is what makes replays and crash tests simple.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rea.events import (
    BudgetWarning,
    CampaignCompleted,
    CampaignCompletedPayload,
    CampaignRejected,
    CampaignRejectedPayload,
    CampaignRequested,
    CampaignResult,
    Envelope,
    HypothesesGenerated,
    HypothesesRequested,
    HypothesesRequestedPayload,
    JobRecord,
    JobSpec,
    MetricSummary,
    PhaseConcluded,
    PhasePaused,
    PhasePlan,
    PhaseResumed,
    PhaseStarted,
    PhaseStartedPayload,
    PlanApproved,
    PlanProposed,
    PlanProposedPayload,
    utc_now,
)
from rea.store import Decision
from rea.workloads import get_workload
from rea_planner.campaign import ACTIVE, Campaign, CampaignSpec, CampaignStatus, validate_campaign
from rea_planner.costs import CostModel

VALIDATION = "validation"

Decide = Callable[[Campaign | None, Any], Decision[Campaign]]


def _follow(event: Envelope) -> dict[str, str]:
    """Envelope fields an emitted event inherits from the event that caused it."""
    return {"campaign_id": event.campaign_id, "correlation_id": event.correlation_id}


def _save(campaign: Campaign, **changes: object) -> Campaign:
    return campaign.model_copy(update={**changes, "updated_at": utc_now()})


def on_campaign_requested(state: Campaign | None, event: CampaignRequested) -> Decision[Campaign]:
    if state is not None:
        return Decision()
    spec, reasons = validate_campaign(event.payload)
    if spec is None:
        rejected = Campaign(
            campaign_id=event.campaign_id, status="rejected", request=event.payload, reasons=reasons
        )
        return Decision(
            rejected, [CampaignRejected(**_follow(event), payload=CampaignRejectedPayload(reasons=reasons))]
        )
    baseline = get_workload(spec.workload).schema.resolve(spec.baseline)
    campaign = Campaign(campaign_id=event.campaign_id, status="planning", request=event.payload, spec=spec)
    ask = HypothesesRequested(
        **_follow(event),
        payload=HypothesesRequestedPayload(
            workload=spec.workload,
            dataset=spec.dataset,
            baseline=baseline,
            max_hypotheses=spec.max_hypotheses,
        ),
    )
    return Decision(campaign, [ask])


def make_job(
    spec: CampaignSpec,
    campaign_id: str,
    hypothesis_id: str | None,
    config: dict[str, object],
    costs: CostModel,
) -> JobSpec:
    name = hypothesis_id or "baseline"
    return JobSpec(
        job_id=f"{campaign_id}-{VALIDATION}-{name}-s{spec.seed}",
        campaign_id=campaign_id,
        phase=VALIDATION,
        hypothesis_id=hypothesis_id,
        workload=spec.workload,
        dataset=spec.dataset,
        config=config,
        seed=spec.seed,
        estimated_cpu_seconds=costs.estimate(config),
        timeout_s=spec.job_timeout_s,
        memory_mb=spec.job_memory_mb,
    )


def plan_validation(campaign: Campaign, costs: CostModel) -> tuple[PhasePlan, list[str]]:
    """Baseline plus one job per hypothesis, best prior first, trimmed to fit the budget.

    Returns the plan and why any hypothesis was dropped (invalid config, over budget).
    """
    assert campaign.spec is not None
    spec = campaign.spec
    schema = get_workload(spec.workload).schema
    baseline = schema.resolve(spec.baseline)
    jobs = [make_job(spec, campaign.campaign_id, None, baseline, costs)]
    dropped: list[str] = []
    spent = jobs[0].estimated_cpu_seconds
    for hypothesis in sorted(campaign.hypotheses, key=lambda h: -h.expected_gain):
        problems = schema.errors(hypothesis.changes)
        if problems:
            dropped.append(f"{hypothesis.id}: invalid config ({'; '.join(problems)})")
            continue
        config = schema.resolve(hypothesis.changes, base=baseline)
        job = make_job(spec, campaign.campaign_id, hypothesis.id, config, costs)
        if spent + job.estimated_cpu_seconds > spec.budget_cpu_seconds:
            dropped.append(f"{hypothesis.id}: over budget (estimated {job.estimated_cpu_seconds:.0f} CPU-s)")
            continue
        spent += job.estimated_cpu_seconds
        jobs.append(job)
    return PhasePlan(phase=VALIDATION, jobs=jobs, estimated_cpu_seconds=round(spent, 2)), dropped


def on_hypotheses_generated(
    state: Campaign | None, event: HypothesesGenerated, costs: CostModel
) -> Decision[Campaign]:
    if state is None or state.status != "planning" or state.spec is None:
        return Decision()
    campaign = _save(state, hypotheses=event.payload.hypotheses)
    plan, dropped = plan_validation(campaign, costs)
    spec = state.spec
    if plan.estimated_cpu_seconds > spec.budget_cpu_seconds:
        reasons = [
            f"budget_cpu_seconds: {spec.budget_cpu_seconds:g} cannot cover even the baseline "
            f"(estimated {plan.estimated_cpu_seconds:g} CPU-s)"
        ]
        rejected = _save(campaign, status="rejected", reasons=reasons, plan=plan)
        return Decision(
            rejected, [CampaignRejected(**_follow(event), payload=CampaignRejectedPayload(reasons=reasons))]
        )
    auto = (
        spec.auto_approve_cpu_seconds is not None
        and plan.estimated_cpu_seconds <= spec.auto_approve_cpu_seconds
    )
    campaign = _save(campaign, plan=plan, dropped_hypotheses=dropped)
    proposed = PlanProposed(
        **_follow(event), payload=PlanProposedPayload(plan=plan, requires_approval=not auto)
    )
    if not auto:
        return Decision(_save(campaign, status="awaiting_approval"), [proposed])
    running = _save(campaign, status="running", approved_by="auto-approve policy")
    return Decision(running, [proposed, _start_phase(running, event)])


def on_plan_approved(state: Campaign | None, event: PlanApproved) -> Decision[Campaign]:
    if state is None or state.status != "awaiting_approval":
        return Decision()
    running = _save(state, status="running", approved_by=event.payload.approved_by)
    return Decision(running, [_start_phase(running, event)])


def _start_phase(campaign: Campaign, cause: Envelope) -> PhaseStarted:
    assert campaign.spec is not None and campaign.plan is not None
    return PhaseStarted(
        **_follow(cause),
        payload=PhaseStartedPayload(
            plan=campaign.plan,
            budget_cpu_seconds=campaign.spec.budget_cpu_seconds,
            max_parallel_jobs=campaign.spec.max_parallel_jobs,
        ),
    )


def summarize(jobs: list[JobRecord]) -> CampaignResult | str:
    """Pick the winner on validation NE and report both on the test split; or say why not."""
    done = [j for j in jobs if j.status == "completed" and j.validation and j.test]
    baseline = next((j for j in done if j.hypothesis_id is None), None)
    if baseline is None:
        return "the baseline job did not complete, so nothing can be compared"
    best = min(done, key=lambda j: j.validation.ne if j.validation else float("inf"))

    def metric(job: JobRecord) -> MetricSummary:
        assert job.test is not None and job.validation is not None
        return MetricSummary(
            job_id=job.job_id,
            hypothesis_id=job.hypothesis_id,
            ne=job.test.ne,
            auc=job.test.auc,
            validation_ne=job.validation.ne,
        )

    base, top = metric(baseline), metric(best)
    changes = {k: v for k, v in best.config.items() if baseline.config.get(k) != v}
    return CampaignResult(
        baseline=base,
        best=top,
        best_changes=changes,
        ne_delta=top.ne - base.ne,
        ne_relative_gain=(base.ne - top.ne) / base.ne if base.ne > 0 else 0.0,
        auc_delta=top.auc - base.auc,
        jobs_completed=len(done),
        jobs_failed=sum(j.status == "failed" for j in jobs),
        compute_seconds=round(sum(j.cost.cpu_seconds for j in jobs if j.cost), 2),
    )


def on_phase_concluded(state: Campaign | None, event: PhaseConcluded) -> Decision[Campaign]:
    if state is None or state.status not in ACTIVE:
        return Decision()
    result = summarize(event.payload.jobs)
    if isinstance(result, str):
        return Decision(_save(state, status="failed", reasons=[result]))
    completed = _save(state, status="completed", result=result)
    return Decision(
        completed, [CampaignCompleted(**_follow(event), payload=CampaignCompletedPayload(result=result))]
    )


def on_phase_paused(state: Campaign | None, event: PhasePaused) -> Decision[Campaign]:
    """Mirror the executor's pause, so `rea status` tells people why nothing runs."""
    if state is None or state.status not in ACTIVE:
        return Decision()
    status: CampaignStatus = "paused_budget" if event.payload.cause == "budget" else "paused"
    return Decision(_save(state, status=status, notices=[*state.notices, f"paused: {event.payload.reason}"]))


def on_phase_resumed(state: Campaign | None, event: PhaseResumed) -> Decision[Campaign]:
    if state is None or state.status not in ("paused", "paused_budget"):
        return Decision()
    return Decision(
        _save(state, status="running", notices=[*state.notices, f"resumed: {event.payload.reason}"])
    )


def on_budget_warning(state: Campaign | None, event: BudgetWarning) -> Decision[Campaign]:
    if state is None:
        return Decision()
    spent, budget = event.payload.spent_cpu_seconds, event.payload.budget_cpu_seconds
    notice = f"budget warning: {spent:.0f} of {budget:g} CPU-s spent"
    return Decision(_save(state, notices=[*state.notices, notice]))
