"""Hypothesis-service wiring. Generation lives in :mod:`rea_hypothesis.logic`."""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from rea.events import HypothesesRequested
from rea.insights import EffectStats, History, PastWinner, family
from rea.runtime import Runtime
from rea_hypothesis.logic import PAST_BEST_ID, HypothesisSet, on_hypotheses_requested

CONSUMER = "hypothesis"


async def load_history(db: AsyncDatabase[dict[str, Any]], workload: str, dataset: str) -> History:
    """The family's past effects per hypothesis and its best past winner, from the insights DB."""
    name = family(workload, dataset)
    effects = {
        doc["hypothesis_id"]: EffectStats.of(list(doc["effects"].values()))
        async for doc in db["insights"].find({"family": name})
        if doc["hypothesis_id"] != PAST_BEST_ID and doc.get("effects")
    }
    best = await db["winners"].find_one(
        {"family": name, "verdict": {"$ne": "worse"}, "gain": {"$gt": 0}}, sort=[("gain", -1)]
    )
    winner = None if best is None else PastWinner(best["_id"], best["changes"], best["gain"], best["verdict"])
    return History(name, effects, winner)


def wire(rt: Runtime) -> None:
    async def on_requested(event: HypothesesRequested) -> None:
        history = await load_history(rt.store.db, event.payload.workload, event.payload.dataset)
        await rt.store.apply(
            consumer=CONSUMER,
            event=event,
            collection="hypothesis_sets",
            key=event.campaign_id,
            model=HypothesisSet,
            decide=lambda state, requested: on_hypotheses_requested(state, requested, history),
        )
        rt.relay.kick()

    rt.on_reconcile(rt.republish_outbox)
    rt.bus.subscribe(
        [rt.topics.planner_events], group="hypothesis", handlers={HypothesesRequested: on_requested}
    )
