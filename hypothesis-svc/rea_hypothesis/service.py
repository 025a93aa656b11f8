"""Hypothesis-service wiring. Generation lives in :mod:`rea_hypothesis.logic`."""

from __future__ import annotations

from rea.events import HypothesesRequested
from rea.runtime import Runtime
from rea_hypothesis.logic import HypothesisSet, on_hypotheses_requested

CONSUMER = "hypothesis"


def wire(rt: Runtime) -> None:
    async def on_requested(event: HypothesesRequested) -> None:
        await rt.store.apply(
            consumer=CONSUMER,
            event=event,
            collection="hypothesis_sets",
            key=event.campaign_id,
            model=HypothesisSet,
            decide=on_hypotheses_requested,
        )
        rt.relay.kick()

    rt.on_reconcile(rt.republish_outbox)
    rt.bus.subscribe(
        [rt.topics.planner_events], group="hypothesis", handlers={HypothesesRequested: on_requested}
    )
