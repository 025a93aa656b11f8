"""Planner wiring: topics and handlers. The decisions live in :mod:`rea_planner.logic`."""

from __future__ import annotations

import asyncio
from collections import Counter
from functools import partial
from typing import get_args

import structlog

from rea.decisions import DecisionGate
from rea.events import (
    BudgetExtended,
    BudgetWarning,
    CampaignCancelled,
    CampaignRequested,
    Envelope,
    GrantCreated,
    GrantRevoked,
    HypothesesGenerated,
    PhaseConcluded,
    PhasePaused,
    PhaseResumed,
    PlanApproved,
    ProposalAccepted,
    utc_now,
)
from rea.grants import COLLECTION as GRANTS
from rea.grants import Grant
from rea.phases import kind
from rea.runtime import Runtime
from rea.views import CampaignStage
from rea.workloads import get_workload, parameters_of, training_rows_of
from rea_planner import grants, logic
from rea_planner.campaign import Campaign, CampaignStatus
from rea_planner.costs import CostModel, Fidelity
from rea_planner.proposal import render_proposal

CONSUMER = "planner"
HISTORY_LIMIT = 200
CAMPAIGN_COUNT_INTERVAL_S = 10.0
"""How often the ``rea_campaigns`` gauge is counted again from the campaigns collection."""

log = structlog.get_logger()

DECISIONS: dict[type[Envelope], logic.Decide] = {
    CampaignRequested: logic.on_campaign_requested,
    PlanApproved: logic.on_plan_approved,
    PhasePaused: logic.on_phase_paused,
    PhaseResumed: logic.on_phase_resumed,
    BudgetWarning: logic.on_budget_warning,
    ProposalAccepted: logic.on_proposal_accepted,
    BudgetExtended: logic.on_budget_extended,
    CampaignCancelled: logic.on_campaign_cancelled,
}
WITH_PROPOSAL = ("completed", "cancelled")


def wire(rt: Runtime) -> None:
    async def apply(event: Envelope, decide: logic.Decide) -> None:
        applied = await rt.store.apply(
            consumer=CONSUMER,
            event=event,
            collection="campaigns",
            key=event.campaign_id,
            model=Campaign,
            decide=decide,
        )
        rt.relay.kick()
        campaign = applied.decision.state if applied.decision else None
        if (
            campaign is not None
            and campaign.status in WITH_PROPOSAL
            and campaign.result is not None
            and campaign.accepted_by is None
        ):
            await save_proposal(campaign)

    async def save_proposal(campaign: Campaign) -> None:
        """Render the launch proposal (derived from the state: safe to render again) and store it."""
        proposal = await asyncio.to_thread(render_proposal, campaign)  # matplotlib: keep the loop free
        await rt.store.proposals.replace_one(
            {"_id": campaign.campaign_id},
            {
                "markdown": proposal.markdown,
                "html": proposal.html,
                "images": proposal.images,
                "rendered_at": utc_now(),
            },
            upsert=True,
        )

    async def render_missing_proposals() -> None:
        """A planner that stopped between completing a campaign and storing its proposal."""
        rendered = {doc["_id"] async for doc in rt.store.proposals.find({}, {"_id": 1})}
        async for doc in rt.store.campaigns.find({"state.status": {"$in": WITH_PROPOSAL}}, {"_id": 1}):
            if doc["_id"] not in rendered:
                campaign = await rt.store.load("campaigns", str(doc["_id"]), Campaign)
                if campaign is not None and campaign.result is not None:
                    await save_proposal(campaign)

    async def on_event(event: Envelope) -> None:
        if isinstance(event, CampaignRequested):
            named = event.payload.get("grant")
            admit = partial(
                logic.on_campaign_requested,
                default_backend=rt.settings.job_backend,
                data_roots=rt.settings.allowed_data_roots(),
                grant=await load_grant(rt, named) if isinstance(named, str) else None,
            )
            await apply(event, admit)
        elif isinstance(event, PlanApproved):
            await apply(event, partial(logic.on_plan_approved, grant=await grant_of(rt, event)))
        else:
            await apply(event, DECISIONS[type(event)])

    async def on_hypotheses(event: HypothesesGenerated) -> None:
        decide = partial(
            logic.on_hypotheses_generated, costs=await cost_model(rt, event), grant=await grant_of(rt, event)
        )
        await apply(event, decide)

    async def on_grant(event: GrantCreated | GrantRevoked) -> None:
        await rt.store.apply(
            consumer=CONSUMER,
            event=event,
            collection=GRANTS,
            key=event.grant_id,
            model=Grant,
            decide=grants.on_grant_event,
        )

    async def on_phase_concluded(event: PhaseConcluded) -> None:
        await apply(event, partial(logic.on_phase_concluded, costs=await cost_model(rt, event)))

    async def count_campaigns() -> None:
        """``rea_campaigns`` by status and phase kind, counted from the stored state (so it is
        right after a restart, and with several planners each counts the same)."""
        shown: set[tuple[str, str]] = set()
        while True:
            try:
                counts: Counter[tuple[str, str]] = Counter()
                async for doc in rt.store.campaigns.find({}, {"state.status": 1, "state.phase": 1}):
                    stage = CampaignStage.model_validate(doc["state"])
                    counts[(stage.status, kind(stage.phase or "none"))] += 1
                for status in get_args(CampaignStatus):  # every status has a series, 0 when none
                    if not any(seen == status for seen, _ in counts):
                        counts[(status, "none")] = 0
                for status, phase in shown - set(counts):
                    rt.metrics.campaigns.remove(rt.name, status, phase)
                for (status, phase), count in counts.items():
                    rt.metrics.campaigns.labels(service=rt.name, status=status, phase=phase).set(count)
                shown = set(counts)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("campaign_count_failed", error=repr(exc))
            await asyncio.sleep(CAMPAIGN_COUNT_INTERVAL_S)

    rt.background(count_campaigns)
    consumed = [
        rt.topics.campaign_requests,
        rt.topics.control,
        rt.topics.hypothesis_events,
        rt.topics.executor_events,
    ]
    for topic in consumed:  # at zero, so the dead-letter rate has a series before the first one
        rt.metrics.dead_letters.labels(service=rt.name, topic=topic)
    rt.on_reconcile(rt.republish_outbox)
    rt.on_reconcile(render_missing_proposals)
    rt.bus.subscribe(
        [
            rt.topics.campaign_requests,
            rt.topics.control,
            rt.topics.hypothesis_events,
            rt.topics.executor_events,
        ],
        group="planner",
        handlers={
            **dict.fromkeys(DECISIONS, on_event),
            HypothesesGenerated: on_hypotheses,
            PhaseConcluded: on_phase_concluded,
            GrantCreated: on_grant,
            GrantRevoked: on_grant,
        },
        gate=DecisionGate.for_service(rt.settings, rt.store.db, CONSUMER),
    )


async def load_grant(rt: Runtime, grant_id: str) -> Grant | None:
    return await rt.store.load(GRANTS, grant_id, Grant)


async def grant_of(rt: Runtime, event: Envelope) -> Grant | None:
    """The grant of the event's campaign as stored now (its status may have changed since)."""
    campaign = await rt.store.load("campaigns", event.campaign_id, Campaign)
    if campaign is None or campaign.grant is None:
        return None
    return await load_grant(rt, campaign.grant.grant_id)


async def cost_model(rt: Runtime, event: Envelope) -> CostModel:
    """Learn job cost from completed jobs of the same workload and dataset in the insights DB;
    without any, the prior from the data and model sizes the workload reports."""
    campaign = await rt.store.load("campaigns", event.campaign_id, Campaign)
    if campaign is None or campaign.spec is None:
        return CostModel(Fidelity())
    workload = get_workload(campaign.spec.workload)
    fidelity = Fidelity.of(workload.schema)
    cursor = (
        rt.store.results.find(
            {"workload": campaign.spec.workload, "dataset": campaign.spec.dataset, "status": "completed"},
            {"config": 1, "cost": 1},
        )
        .sort("recorded_at", -1)
        .limit(HISTORY_LIMIT)
    )
    rows = [row async for row in cursor]
    dataset = campaign.spec.dataset
    return CostModel.from_history(
        fidelity, rows, training_rows_of(workload, dataset), partial(parameters_of, workload, dataset=dataset)
    )
