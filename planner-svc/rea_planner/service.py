"""Planner wiring: topics and handlers. The decisions live in :mod:`rea_planner.logic`."""

from __future__ import annotations

from functools import partial

from rea.events import (
    BudgetWarning,
    CampaignRequested,
    Envelope,
    HypothesesGenerated,
    PhaseConcluded,
    PhasePaused,
    PhaseResumed,
    PlanApproved,
)
from rea.runtime import Runtime
from rea_planner import logic
from rea_planner.campaign import Campaign
from rea_planner.costs import CostModel

CONSUMER = "planner"
HISTORY_LIMIT = 200

DECISIONS: dict[type[Envelope], logic.Decide] = {
    CampaignRequested: logic.on_campaign_requested,
    PlanApproved: logic.on_plan_approved,
    PhasePaused: logic.on_phase_paused,
    PhaseResumed: logic.on_phase_resumed,
    BudgetWarning: logic.on_budget_warning,
}


def wire(rt: Runtime) -> None:
    async def apply(event: Envelope, decide: logic.Decide) -> None:
        await rt.store.apply(
            consumer=CONSUMER,
            event=event,
            collection="campaigns",
            key=event.campaign_id,
            model=Campaign,
            decide=decide,
        )
        rt.relay.kick()

    async def on_event(event: Envelope) -> None:
        await apply(event, DECISIONS[type(event)])

    async def on_hypotheses(event: HypothesesGenerated) -> None:
        await apply(event, partial(logic.on_hypotheses_generated, costs=await cost_model(rt, event)))

    async def on_phase_concluded(event: PhaseConcluded) -> None:
        await apply(event, partial(logic.on_phase_concluded, costs=await cost_model(rt, event)))

    rt.on_reconcile(rt.republish_outbox)
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
        },
    )


async def cost_model(rt: Runtime, event: Envelope) -> CostModel:
    """Learn job cost from completed jobs of the same workload and dataset in the insights DB."""
    campaign = await rt.store.load("campaigns", event.campaign_id, Campaign)
    if campaign is None or campaign.spec is None:
        return CostModel()
    cursor = (
        rt.store.results.find(
            {"workload": campaign.spec.workload, "dataset": campaign.spec.dataset, "status": "completed"},
            {"config": 1, "cost": 1},
        )
        .sort("recorded_at", -1)
        .limit(HISTORY_LIMIT)
    )
    return CostModel.from_history([row async for row in cursor])
