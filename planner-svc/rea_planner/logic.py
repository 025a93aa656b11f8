"""The planner's decisions: pure functions of (campaign state, event) -> Decision.

No I/O here: the service loads state and history, calls these, and commits the outcome
atomically (state + outbox). That is what makes replays and crash tests simple.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from statistics import fmean
from typing import Any

from rea.diagnostics import findings, rerank
from rea.events import (
    BudgetExtended,
    BudgetWarning,
    CampaignCancelled,
    CampaignCompleted,
    CampaignCompletedPayload,
    CampaignRejected,
    CampaignRejectedPayload,
    CampaignRequested,
    CampaignResult,
    Checklist,
    Envelope,
    HypothesesGenerated,
    HypothesesRequested,
    HypothesesRequestedPayload,
    JobBackendName,
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
    ProposalAccepted,
    utc_now,
)
from rea.grants import Grant, ceiling_problem
from rea.phases import (
    COMBINATION,
    CONFIRMATION,
    EXPLOITATION,
    KINDS,
    SCREENING,
    SELECTION,
    VALIDATION,
    kind,
    numbered,
)
from rea.stats import compare
from rea.store import Decision
from rea.workloads import get_workload
from rea_planner.campaign import (
    ACTIVE,
    CANCELLABLE,
    BudgetChange,
    Campaign,
    CampaignStatus,
    spent,
    spent_gpu,
    validate_campaign,
)
from rea_planner.combination import (
    MAX_STACK,
    PAIR_POOL,
    interactions,
    plan_combination,
    plan_extension,
    plan_pruning,
    validated_effects,
)
from rea_planner.costs import CostModel
from rea_planner.exploitation import exploitation_over, plan_exploitation
from rea_planner.grants import auto_approver, dataset_files, grant_problems, runs_generated_code
from rea_planner.jobs import (
    make_job,
    parts,
    plan_of,
    search_records,
    still_dropped,
    stopped_early,
)
from rea_planner.screening import ETA, low_fidelity, plan_promotion, worth_screening
from rea_planner.selection import (
    SELECTION_SHARE,
    best_by_mean,
    config_key,
    mean_validation_ne,
    plan_selection,
    selection_reserve,
)

Decide = Callable[[Campaign | None, Any], Decision[Campaign]]


def _follow(event: Envelope) -> dict[str, str]:
    """Envelope fields an emitted event inherits from the event that caused it."""
    return {"campaign_id": event.campaign_id, "correlation_id": event.correlation_id}


def _save(campaign: Campaign, **changes: object) -> Campaign:
    return campaign.model_copy(update={**changes, "updated_at": utc_now()})


def _rejected(state: Campaign, event: Envelope, reasons: list[str], **changes: object) -> Decision[Campaign]:
    rejected = _save(state, status="rejected", reasons=reasons, **changes)
    return Decision(
        rejected, [CampaignRejected(**_follow(event), payload=CampaignRejectedPayload(reasons=reasons))]
    )


def on_campaign_requested(
    state: Campaign | None,
    event: CampaignRequested,
    default_backend: JobBackendName = "local",
    data_roots: Sequence[Path] | None = None,
    grant: Grant | None = None,
) -> Decision[Campaign]:
    """Accept a valid request inside its grant (ask for hypotheses) or reject it with every
    reason; see :func:`~rea_planner.campaign.validate_campaign` for the backend and the data
    roots, and :func:`~rea_planner.grants.grant_problems` for the grant (the one the request
    names, as stored; None: there is none)."""
    if state is not None:
        return Decision()
    requested = Campaign(campaign_id=event.campaign_id, status="planning", request=event.payload)
    spec, reasons = validate_campaign(event.payload, default_backend, data_roots)
    if spec is None:
        return _rejected(requested, event, reasons)
    workload = get_workload(spec.workload)
    files = dataset_files(workload, spec.dataset)
    problems = grant_problems(spec, grant, workload, files)
    if problems or grant is None:
        return _rejected(requested, event, problems, spec=spec)
    baseline = workload.schema.resolve(spec.baseline)
    campaign = _save(requested, spec=spec, grant=grant, dataset_files=[str(path) for path in files])
    ask = HypothesesRequested(
        **_follow(event),
        payload=HypothesesRequestedPayload(
            workload=spec.workload,
            dataset=spec.dataset,
            baseline=baseline,
            max_hypotheses=spec.max_hypotheses,
            allow_llm=grant.terms.allow_llm,
        ),
    )
    return Decision(campaign, [ask])


def validation_cap(campaign: Campaign) -> float:
    """What validation may spend: all of the budget when nothing follows it, else its share, so
    screening single changes cannot crowd out combining and tuning the ones that work."""
    assert campaign.spec is not None
    spec = campaign.spec
    share = spec.validation_share if spec.max_exploitation_trials != 0 else 1.0
    return campaign.planning_budget(campaign.records) * share


def plan_validation(
    campaign: Campaign, costs: CostModel, screen: bool = False
) -> tuple[PhasePlan, list[str]]:
    """Baseline plus one job per hypothesis, best prior first, trimmed to fit the validation
    share of the budget (the baseline always runs). With ``screen``, the screening phase
    instead: the same at low fidelity (see :mod:`rea_planner.screening`).

    Returns the plan and why any hypothesis was dropped (invalid config, over budget).
    """
    assert campaign.spec is not None
    spec = campaign.spec
    schema = get_workload(spec.workload).schema
    phase = SCREENING if screen else VALIDATION
    fidelity = partial(low_fidelity, costs.fidelity) if screen else _unchanged
    baseline = schema.resolve(spec.baseline)
    jobs = [make_job(spec, campaign.campaign_id, None, fidelity(baseline), costs, phase, diagnose=not screen)]
    dropped: list[str] = []
    total = jobs[0].estimated_cpu_seconds
    for hypothesis in sorted(campaign.hypotheses, key=lambda h: -h.expected_gain):
        problems = schema.errors(hypothesis.changes)
        if problems:
            dropped.append(f"{hypothesis.id}: invalid config ({'; '.join(problems)})")
            continue
        config = fidelity(schema.resolve(hypothesis.changes, base=baseline))
        job = make_job(spec, campaign.campaign_id, hypothesis.id, config, costs, phase)
        if total + job.estimated_cpu_seconds > validation_cap(campaign):
            dropped.append(f"{hypothesis.id}: over budget (estimated {job.estimated_cpu_seconds:.0f} CPU-s)")
            continue
        total += job.estimated_cpu_seconds
        jobs.append(job)
    return plan_of(phase, jobs), dropped


def _unchanged(config: dict[str, Any]) -> dict[str, Any]:
    return config


def learned_costs(records: list[JobRecord], fallback: CostModel) -> CostModel:
    """The cost model from this campaign's own finished jobs (same machine, same data, now);
    ``fallback`` (history from the insights DB, or the prior) until there are any."""
    own = CostModel.from_history(
        fallback.fidelity,
        [
            {"config": j.config, "cost": j.cost.model_dump()}
            for j in records
            if j.status == "completed" and j.cost
        ],
    )
    return own if own.observations else fallback


def confirmation_reserve(campaign: Campaign, config: dict[str, Any], costs: CostModel) -> float:
    """CPU seconds kept for the confirmation phase: ``config`` and the baseline on the extra seeds."""
    assert campaign.spec is not None
    baseline = get_workload(campaign.spec.workload).schema.resolve(campaign.spec.baseline)
    return (campaign.spec.confirm_seeds - 1) * (costs.estimate(baseline) + costs.estimate(config))


def search_reserve(campaign: Campaign, records: list[JobRecord], best: JobRecord, costs: CostModel) -> float:
    """CPU seconds the search leaves for what follows it: selecting among the contenders and
    confirming ``best``, the best config so far."""
    return confirmation_reserve(campaign, best.config, costs) + selection_reserve(campaign, records, costs)


def plan_next_round(
    campaign: Campaign, records: list[JobRecord], costs: CostModel, room: float
) -> PhasePlan | None:
    """Another validation round: hypotheses not tried yet that now fit in ``room``.

    The first plan is made before any job has run, with a generous cost estimate; once jobs
    report their real cost, hypotheses dropped as over budget may fit after all. None when
    nothing more fits.
    """
    assert campaign.spec is not None
    spec = campaign.spec
    schema = get_workload(spec.workload).schema
    baseline = schema.resolve(spec.baseline)
    tried = {j.hypothesis_id for j in records}
    rounds = {j.phase for j in records if kind(j.phase) == VALIDATION}
    phase = numbered(VALIDATION, len(rounds) + 1)
    jobs: list[JobSpec] = []
    for hypothesis in sorted(campaign.hypotheses, key=lambda h: -h.expected_gain):
        if hypothesis.id in tried or schema.errors(hypothesis.changes):
            continue
        config = schema.resolve(hypothesis.changes, base=baseline)
        job = make_job(spec, campaign.campaign_id, hypothesis.id, config, costs, phase)
        if job.estimated_cpu_seconds <= room:
            room -= job.estimated_cpu_seconds
            jobs.append(job)
    return plan_of(phase, jobs) if jobs else None


def next_search_phase(
    campaign: Campaign, records: list[JobRecord], best: JobRecord, costs: CostModel
) -> PhasePlan | None:
    """What runs after a search phase concluded, in phase order: another validation round (for
    hypotheses that now fit), the combination phase (stacking once, given two or more winners,
    then extension rounds while they find a better config, then pruning rounds that take each
    hypothesis out of the best config once), then exploitation rounds until
    their trial limit or the budget. Room is always kept for selection and for confirming
    ``best``, the best config found so far. None when nothing more fits."""
    assert campaign.spec is not None
    room = campaign.planning_budget(records) - spent(records) - search_reserve(campaign, records, best, costs)
    concluded = kind(campaign.phase or VALIDATION)
    plan: PhasePlan | None = None
    if concluded == VALIDATION:
        screened = spent([r for r in records if kind(r.phase) in (SCREENING, VALIDATION)])
        screening_room = min(room, validation_cap(campaign) - screened)
        plan = plan_next_round(campaign, records, costs, screening_room) or plan_combination(
            campaign, records, costs, room
        )
    if plan is None and concluded in (VALIDATION, COMBINATION):
        plan = plan_extension(campaign, records, costs, room) or plan_pruning(campaign, records, costs, room)
    return plan or plan_exploitation(campaign, records, costs, room)


def budget_by_phase(campaign: Campaign, plan: PhasePlan, costs: CostModel) -> dict[str, float]:
    """The estimate per phase shown before approval, never more than the budget in all: the
    first plan itself (screening or validation); then, from what is left and in this order,
    validation of the survivors after screening, selection and confirmation as they would be
    planned, combination at one baseline-sized job per pair and stack it could run plus one extension
    and one pruning round (further rounds run only while they find better configs or have
    hypotheses left to take out), and exploitation's trials."""
    assert campaign.spec is not None
    spec = campaign.spec
    one = costs.estimate(get_workload(spec.workload).schema.resolve(spec.baseline))
    singles = len(plan.jobs) - 1
    following: list[tuple[str, float]] = []
    if plan.phase == SCREENING:
        singles = max(1, math.ceil(singles / ETA))
        following.append((VALIDATION, (1 + singles) * one))
    pooled = min(singles, PAIR_POOL)
    stacks = pooled * (pooled - 1) // 2 + max(0, min(singles, MAX_STACK) - 2) if singles >= 2 else 0
    one_round = min(max(0, singles - 1), spec.max_parallel_jobs)
    exploited = math.inf if spec.max_exploitation_trials is None else spec.max_exploitation_trials
    budget = campaign.planning_budget(campaign.records)
    affordable = math.floor(SELECTION_SHARE * budget / (spec.selection_seeds * one))
    configs = min(spec.contenders, 1 + singles + stacks + 2 * one_round + exploited, affordable)
    if configs >= 2:
        following.append((SELECTION, configs * spec.selection_seeds * one))
    following += [
        (CONFIRMATION, 2 * (spec.confirm_seeds - 1) * one),
        (COMBINATION, (stacks + 2 * one_round) * one),
        (EXPLOITATION, exploited * one),
    ]
    left = budget - plan.estimated_cpu_seconds
    estimates = {plan.phase: plan.estimated_cpu_seconds}
    for phase, wanted in following:
        estimates[phase] = round(max(0.0, min(wanted, left)), 2)
        left -= estimates[phase]
    return {phase: estimates[phase] for phase in KINDS if phase in estimates}


def _revoked(state: Campaign, grant: Grant | None) -> list[str]:
    """The reason a campaign can no longer be approved: its grant (as stored now, else as
    admitted) was revoked."""
    current = grant or state.grant
    if current is None or current.status != "revoked":
        return []
    return [f"grant: {current.grant_id!r} was {current.describe_revocation()}"]


def checklist(campaign: Campaign, estimate: float) -> Checklist | None:
    """The preflight checklist shown with the plan: what approving it lets REA use."""
    spec, grant = campaign.spec, campaign.grant
    if spec is None or grant is None:
        return None
    return Checklist(
        grant_id=grant.grant_id,
        team=grant.terms.team,
        dataset=spec.dataset,
        files=campaign.dataset_files,
        budget_cpu_seconds=campaign.budget_cpu_seconds(),
        budget_gpu_seconds=campaign.budget_gpu_seconds(),
        estimate_cpu_seconds=estimate,
        backend=spec.backend,
        llm=grant.terms.allow_llm,
        generated_kernels=runs_generated_code(get_workload(spec.workload), spec),
    )


def on_hypotheses_generated(
    state: Campaign | None, event: HypothesesGenerated, costs: CostModel, grant: Grant | None = None
) -> Decision[Campaign]:
    """Plan the first phase; start it when its grant (``grant``: as stored now; None: as it was
    admitted) auto-approves the estimate, else wait for a person."""
    if state is None or state.status != "planning" or state.spec is None:
        return Decision()
    if revoked := _revoked(state, grant):
        return _rejected(state, event, revoked)
    campaign = _save(state, hypotheses=event.payload.hypotheses, findings=event.payload.findings)
    spec = state.spec
    plan, dropped = plan_validation(campaign, costs, worth_screening(spec, costs, len(campaign.hypotheses)))
    gpu_budget = campaign.budget_gpu_seconds()
    reasons = []
    if plan.estimated_cpu_seconds > campaign.budget_cpu_seconds():
        reasons.append(
            f"budget_cpu_seconds: {campaign.budget_cpu_seconds():g} cannot cover even the baseline "
            f"(estimated {plan.estimated_cpu_seconds:g} CPU-s)"
        )
    if gpu_budget is not None and plan.estimated_gpu_seconds > gpu_budget:
        reasons.append(
            f"budget_gpu_seconds: {gpu_budget:g} cannot cover even the baseline "
            f"(estimated {plan.estimated_gpu_seconds:g} GPU-s)"
        )
    if reasons:
        return _rejected(campaign, event, reasons, plan=plan)
    by_phase = budget_by_phase(campaign, plan, costs)
    estimate = round(sum(by_phase.values()), 2)  # the per-phase figures are rounded to 0.01
    approver = auto_approver(grant or state.grant, estimate)
    dropped = [*event.payload.rejected, *dropped]
    listed = checklist(campaign, estimate)
    campaign = _save(
        campaign, plan=plan, dropped_hypotheses=dropped, budget_by_phase=by_phase, checklist=listed
    )
    proposed = PlanProposed(
        **_follow(event),
        payload=PlanProposedPayload(
            plan=plan, requires_approval=approver is None, budget_by_phase=by_phase, checklist=listed
        ),
    )
    if approver is None:
        return Decision(_save(campaign, status="awaiting_approval"), [proposed])
    running = _save(campaign, status="running", approved_by=approver, phase=plan.phase)
    return Decision(running, [proposed, _start_phase(running, event)])


def on_plan_approved(
    state: Campaign | None, event: PlanApproved, grant: Grant | None = None
) -> Decision[Campaign]:
    """Start the approved plan, unless its grant (as stored now; None: as admitted) was revoked."""
    if state is None or state.status != "awaiting_approval":
        return Decision()
    if revoked := _revoked(state, grant):
        return _rejected(state, event, [f"{revoked[0]} before the plan was approved"])
    assert state.plan is not None
    running = _save(state, status="running", approved_by=event.payload.approved_by, phase=state.plan.phase)
    return Decision(running, [_start_phase(running, event)])


def _start_phase(campaign: Campaign, cause: Envelope) -> PhaseStarted:
    assert campaign.spec is not None and campaign.plan is not None
    return PhaseStarted(
        **_follow(cause),
        payload=PhaseStartedPayload(
            plan=campaign.plan,
            budget_cpu_seconds=campaign.budget_cpu_seconds(),
            budget_gpu_seconds=campaign.budget_gpu_seconds(),
            max_parallel_jobs=campaign.spec.max_parallel_jobs,
            campaign_budget_cpu_seconds=campaign.budget_cpu_seconds(),
            max_cpu_seconds=campaign.grant.terms.max_cpu_seconds if campaign.grant else None,
            max_gpu_seconds=campaign.grant.terms.max_gpu_seconds if campaign.grant else None,
        ),
    )


def _completed(records: list[JobRecord]) -> list[JobRecord]:
    return [j for j in records if j.status == "completed" and j.validation and j.test]


def _baseline_config(campaign: Campaign) -> dict[str, Any]:
    """The campaign's baseline: the workload's defaults with the request's overrides."""
    assert campaign.spec is not None
    return get_workload(campaign.spec.workload).schema.resolve(campaign.spec.baseline)


def pick_winner(
    records: list[JobRecord], reference: dict[str, Any] | None = None
) -> tuple[JobRecord, JobRecord] | str:
    """(baseline, best by validation NE) among the search phases' jobs; or why there is none.

    The baseline is the validation run of the campaign's baseline config, ``reference``; a
    runbook retry that changed it stands in only when the baseline itself could not train
    (see :mod:`rea_executor.runbook`), and the result then says so.

    Many configs compete, so the best validation NE is biased low (the winner's curse): once
    the selection phase has run the best few again, the best *mean* wins
    (:func:`rea_planner.selection.best_by_mean`), and the confirmation phase measures the winner
    again on fresh seeds, on the test split."""
    done = search_records(records)
    baselines = [j for j in done if j.hypothesis_id is None and kind(j.phase) == VALIDATION]
    unchanged = [j for j in baselines if reference is None or j.config == reference]
    baseline = next(iter(unchanged or baselines), None)
    if baseline is None:
        return "the baseline job did not complete, so nothing can be compared"
    best = best_by_mean(records)
    assert best is not None
    return baseline, baseline if best.config == baseline.config else best


def plan_confirmation(
    campaign: Campaign, records: list[JobRecord], baseline: JobRecord, best: JobRecord, costs: CostModel
) -> PhasePlan:
    """The winner and the baseline again on further seeds: with the validation run's seed,
    ``confirm_seeds`` test-split measurements of each, for a confidence interval. A seed the
    selection phase already ran a config on is not run again."""
    assert campaign.spec is not None
    spec = campaign.spec
    measured = {(config_key(j.config), j.seed) for j in records if j.status == "completed" and j.test}
    jobs = [
        make_job(spec, campaign.campaign_id, record.hypothesis_id, record.config, costs, CONFIRMATION, seed)
        for seed in range(spec.seed + 1, spec.seed + spec.confirm_seeds)
        for record in (baseline, best)
        if (config_key(record.config), seed) not in measured
    ]
    return plan_of(CONFIRMATION, jobs)


def summarize(
    records: list[JobRecord],
    confidence: float = 0.95,
    notes: list[str] | None = None,
    reference: dict[str, Any] | None = None,
) -> CampaignResult | str:
    """Pick the winner on validation NE and report both on the test split, over every seed
    each was run with (mean, and a Welch interval of the difference); or say why not.
    ``reference``: the campaign's baseline config, which the winner's changes are told against."""
    picked = pick_winner(records, reference)
    if isinstance(picked, str):
        return picked
    baseline, best = picked
    done = _completed(records)
    reference = baseline.config if reference is None else reference
    adjusted = {k: v for k, v in baseline.config.items() if reference.get(k) != v}
    notes = list(notes or [])
    if adjusted:
        failures = sorted({j.error.kind for j in records if j.hypothesis_id is None and j.error})
        notes.append(
            f"the baseline could not train as requested ({', '.join(failures) or 'failed'}, twice); the "
            f"runbook's retry with {adjusted} is the baseline every delta here is measured against"
        )

    pruned = sum(stopped_early(j) for j in records)
    if pruned:
        notes.append(f"{pruned} trial(s) stopped early, behind the median learning curve (early_stopping)")

    def metric(winner: JobRecord) -> tuple[MetricSummary, list[float]]:
        runs = [j for j in done if j.hypothesis_id == winner.hypothesis_id and j.config == winner.config]
        by_seed = {j.seed: j.test.ne for j in runs if j.test}
        aucs = [j.test.auc for j in runs if j.test]
        assert winner.validation is not None
        summary = MetricSummary(
            job_id=winner.job_id,
            hypothesis_id=winner.hypothesis_id,
            ne=fmean(by_seed.values()),
            auc=fmean(aucs),
            validation_ne=mean_validation_ne(records, winner.config) or winner.validation.ne,
            ne_by_seed=by_seed,
        )
        return summary, list(by_seed.values())

    (base, base_nes), (top, top_nes) = metric(baseline), metric(best)
    delta = compare(top_nes, base_nes, confidence)
    changes = {k: v for k, v in best.config.items() if reference.get(k) != v}
    return CampaignResult(
        baseline=base,
        best=top,
        best_changes=changes,
        ne_delta=delta.mean,
        ne_relative_gain=delta.relative_gain,
        auc_delta=top.auc - base.auc,
        jobs_completed=len(done),
        jobs_failed=sum(j.status == "failed" and not stopped_early(j) for j in records),
        compute_seconds=round(spent(records), 2),
        seeds=min(len(base_nes), len(top_nes)),
        ne_delta_low=delta.low,
        ne_delta_high=delta.high,
        p_value=delta.p_value,
        confidence=confidence,
        verdict=delta.verdict() if best is not baseline else "not significant",
        notes=notes,
        baseline_changes=adjusted,
        best_hypotheses=[name for name in parts(best.hypothesis_id) if name != "baseline"],
        interactions=interactions(records),
        effects=_relative_effects(records),
    )


def _relative_effects(records: list[JobRecord]) -> dict[str, float]:
    found = validated_effects(records)
    if found is None:
        return {}
    base, deltas = found
    return {name: -delta / base for name, delta in deltas.items()}


def why_search_ended(campaign: Campaign, records: list[JobRecord], best: JobRecord, costs: CostModel) -> str:
    """Why no search phase follows, with what it leaves of the budget: the budget is spent (what
    is left is kept for confirmation or fits no job), or exploitation is over before that."""
    reserve = search_reserve(campaign, records, best, costs)
    left = campaign.planning_budget(records) - spent(records)
    reason = exploitation_over(campaign, records) or (
        f"the next job (an estimated {costs.estimate(best.config):.0f} CPU-s) does not fit in what the "
        f"budget has left after {reserve:.0f} CPU-s kept for selection and confirmation"
    )
    return f"the search stopped with {left:.0f} of {campaign.budget_cpu_seconds():.0f} CPU-s left: {reason}"


def _finish(
    state: Campaign, cause: Envelope, records: list[JobRecord], notes: list[str]
) -> Decision[Campaign]:
    if state.search_ended:
        notes = [*notes, state.search_ended]
    result = summarize(records, notes=notes, reference=_baseline_config(state))
    if isinstance(result, str):
        return Decision(_save(state, status="failed", reasons=[result], records=records, phase=None))
    completed = _save(state, status="completed", result=result, records=records, phase=None)
    assert state.spec is not None
    payload = CampaignCompletedPayload(
        result=result, workload=state.spec.workload, dataset=state.spec.dataset
    )
    return Decision(completed, [CampaignCompleted(**_follow(cause), payload=payload)])


def on_phase_concluded(state: Campaign | None, event: PhaseConcluded, costs: CostModel) -> Decision[Campaign]:
    """A search phase concluded: run the next one that fits (validation rounds, combination,
    exploitation rounds); after the last, the selection phase among the best few configs, then
    the winner's confirmation (:func:`_conclude_search`). Confirmation concluded: finish."""
    if state is None or state.status not in (*ACTIVE, "cancelling") or state.spec is None:
        return Decision()
    if event.payload.phase != (state.phase or VALIDATION):
        return Decision()
    records = [*state.records, *event.payload.jobs]
    if state.status == "cancelling":
        return _finish_cancelled(state, event, records)
    if kind(event.payload.phase) == CONFIRMATION:
        return _finish(state, event, records, [])
    if kind(event.payload.phase) == SCREENING:
        return _start(state, event, records, plan_promotion(state, records, learned_costs(records, costs)))
    if kind(event.payload.phase) == SELECTION:
        return _conclude_search(state, event, records, learned_costs(records, costs))
    picked = pick_winner(records, _baseline_config(state))
    if isinstance(picked, str):
        return _finish(state, event, records, [])
    baseline, best = picked
    costs = learned_costs(records, costs)
    state = diagnosed(state, baseline)
    following = next_search_phase(state, records, best, costs)
    if following is not None:
        return _start(state, event, records, following)
    state = _save(state, search_ended=why_search_ended(state, records, best, costs))
    selection = plan_selection(state, records, costs, state.planning_budget(records) - spent(records))
    if selection is not None:
        return _start(state, event, records, selection)
    return _conclude_search(state, event, records, costs)


def _conclude_search(
    state: Campaign, cause: Envelope, records: list[JobRecord], costs: CostModel
) -> Decision[Campaign]:
    """The search (and selection, if it ran) is over: confirm the winner on more seeds if it
    beat the baseline and the budget allows; else finish."""
    assert state.spec is not None
    picked = pick_winner(records, _baseline_config(state))
    if isinstance(picked, str):
        return _finish(state, cause, records, [])
    baseline, best = picked
    if best is baseline:
        return _finish(state, cause, records, ["nothing beat the baseline on validation NE"])
    if state.spec.confirm_seeds <= 1:
        return _finish(state, cause, records, ["confirmation skipped: confirm_seeds is 1"])
    plan = plan_confirmation(state, records, baseline, best, costs)
    remaining = state.planning_budget(records) - spent(records)
    if plan.estimated_cpu_seconds > remaining:
        note = (
            f"confirmation skipped: it needs an estimated {plan.estimated_cpu_seconds:.0f} CPU-s, "
            f"{remaining:.0f} of the budget remain"
        )
        return _finish(state, cause, records, [note])
    return _start(state.model_copy(update={"confirmation": plan}), cause, records, plan)


def diagnosed(campaign: Campaign, baseline: JobRecord) -> Campaign:
    """The campaign with its hypotheses re-ranked by what its baseline run showed, so the next
    validation rounds try what addresses it first; unchanged when they were ranked by a
    diagnosis already (the hypothesis service's, from a past run of the same baseline)."""
    if campaign.findings or baseline.diagnostics is None:
        return campaign
    found = findings(baseline.diagnostics)
    if not found:
        return campaign
    return _save(
        campaign,
        hypotheses=rerank(campaign.hypotheses, found),
        findings=[str(f) for f in found],
    )


def _start(state: Campaign, cause: Envelope, records: list[JobRecord], plan: PhasePlan) -> Decision[Campaign]:
    """Start the next phase with what the budget has left."""
    assert state.spec is not None
    remaining = state.budget_cpu_seconds() - spent(records)
    gpu_budget = state.budget_gpu_seconds()
    gpu_left = None if gpu_budget is None else round(gpu_budget - spent_gpu(records), 2)
    started = PhaseStarted(
        **_follow(cause),
        payload=PhaseStartedPayload(
            plan=plan,
            budget_cpu_seconds=round(remaining, 2),
            budget_gpu_seconds=gpu_left,
            max_parallel_jobs=state.spec.max_parallel_jobs,
            campaign_budget_cpu_seconds=state.budget_cpu_seconds(),
        ),
    )
    rounds = [*state.rounds, plan] if plan.phase != CONFIRMATION else state.rounds
    dropped = still_dropped(state.dropped_hypotheses, [job.hypothesis_id for job in plan.jobs])
    saved = _save(state, records=records, phase=plan.phase, rounds=rounds, dropped_hypotheses=dropped)
    return Decision(saved, [started])


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
    status = event.payload
    used, budget, unit = status.spent_cpu_seconds, status.budget_cpu_seconds, "CPU-s"
    if status.resource == "gpu_seconds" and status.budget_gpu_seconds is not None:
        used, budget, unit = status.spent_gpu_seconds, status.budget_gpu_seconds, "GPU-s"
    notice = f"budget warning: {used:.0f} of {budget:g} {unit} spent"
    return Decision(_save(state, notices=[*state.notices, notice]))


def on_budget_extended(state: Campaign | None, event: BudgetExtended) -> Decision[Campaign]:
    """Every later phase is planned against the new cap (the executor raises the running phase's)."""
    if state is None or state.spec is None or state.status not in CANCELLABLE:
        return Decision()
    gpu_now = state.budget_gpu_seconds()
    terms = state.grant.terms if state.grant else None
    refused = ceiling_problem(
        state.budget_cpu_seconds() + event.payload.cpu_seconds,
        None if gpu_now is None else gpu_now + event.payload.gpu_seconds,
        terms.max_cpu_seconds if terms else None,
        terms.max_gpu_seconds if terms else None,
    )
    if refused is not None:
        notice = f"budget extension by {event.payload.describe()} by {event.payload.by} refused: {refused}"
        return Decision(_save(state, notices=[*state.notices, notice]))
    change = BudgetChange(
        cpu_seconds=event.payload.cpu_seconds,
        gpu_seconds=event.payload.gpu_seconds if state.spec.budget_gpu_seconds is not None else 0.0,
        by=event.payload.by,
        at=event.occurred_at,
        reason=f"extended during {state.phase or state.status}",
    )
    changes = [*state.budget_changes, change]
    extended = _save(state, budget_changes=changes)
    in_all = [f"{extended.budget_cpu_seconds():g} CPU-s"]
    gpu_budget = extended.budget_gpu_seconds()
    in_all += [] if gpu_budget is None else [f"{gpu_budget:g} GPU-s"]
    notice = f"budget extended by {event.payload.describe()} by {change.by}: {' and '.join(in_all)} in all"
    return Decision(_save(state, budget_changes=changes, notices=[*state.notices, notice]))


def on_campaign_cancelled(state: Campaign | None, event: CampaignCancelled) -> Decision[Campaign]:
    """Before any job runs the campaign ends at once; while jobs run it ends when the executor
    concludes the phase it stopped (``cancelling``), with a proposal of what it found so far."""
    if state is None or state.status not in CANCELLABLE:
        return Decision()
    notice = f"cancelled by {event.payload.by}"
    if state.status in ("planning", "awaiting_approval"):
        return Decision(
            _save(
                state,
                status="cancelled",
                cancelled_by=event.payload.by,
                reasons=[f"{notice} before any job ran"],
                notices=[*state.notices, notice],
            )
        )
    return Decision(
        _save(state, status="cancelling", cancelled_by=event.payload.by, notices=[*state.notices, notice])
    )


def _finish_cancelled(state: Campaign, cause: Envelope, records: list[JobRecord]) -> Decision[Campaign]:
    """End a cancelled campaign with the result of what ran, marked as such (no insights are
    derived from it: no ``campaign.completed``)."""
    note = f"cancelled by {state.cancelled_by}: this is what the campaign found before it was stopped"
    result = summarize(records, notes=[note], reference=_baseline_config(state))
    if isinstance(result, str):
        return Decision(_save(state, status="cancelled", reasons=[note, result], records=records, phase=None))
    cancelled = _save(state, status="cancelled", result=result, records=records, phase=None, reasons=[note])
    return Decision(cancelled)


def on_proposal_accepted(state: Campaign | None, event: ProposalAccepted) -> Decision[Campaign]:
    """Record who accepted a completed campaign's proposal (the first acceptance stands)."""
    if state is None or state.status != "completed" or state.accepted_by is not None:
        return Decision()
    return Decision(_save(state, accepted_by=event.payload.by, accepted_at=event.occurred_at))
