"""Hypothesis-service wiring. Generation lives in :mod:`rea_hypothesis.logic`."""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from rea.events import HypothesesRequested, HypothesesRequestedPayload, Hypothesis
from rea.insights import EFFECTS, WINNERS, EffectStats, History, PastWinner, family
from rea.llm import endpoint_from
from rea.runtime import Runtime
from rea.settings import Settings
from rea.workloads import Diagnostics, get_workload, techniques_of
from rea_hypothesis.llm import LlmEndpoint, llm_hypotheses
from rea_hypothesis.logic import PAST_BEST_ID, HypothesisSet, from_catalogue, on_hypotheses_requested

CONSUMER = "hypothesis"
PAST_RUNS = 50


async def load_history(db: AsyncDatabase[dict[str, Any]], workload: str, dataset: str) -> History:
    """The family's past effects per hypothesis, the same hypotheses' effects on every other
    family, and the family's best past winner, from the insights DB."""
    name = family(workload, dataset)
    effects: dict[str, EffectStats] = {}
    elsewhere: dict[str, list[float]] = {}
    async for doc in db[EFFECTS].find({"hypothesis_id": {"$ne": PAST_BEST_ID}}):
        if not doc.get("effects"):
            continue
        if doc["family"] == name:
            effects[doc["hypothesis_id"]] = EffectStats.of(list(doc["effects"].values()))
        else:
            elsewhere.setdefault(doc["hypothesis_id"], []).extend(doc["effects"].values())
    best = await db[WINNERS].find_one(
        {"family": name, "verdict": {"$ne": "worse"}, "gain": {"$gt": 0}}, sort=[("gain", -1)]
    )
    winner = None if best is None else PastWinner(best["_id"], best["changes"], best["gain"], best["verdict"])
    return History(name, effects, winner, {h: EffectStats.of(e) for h, e in elsewhere.items()})


async def past_diagnostics(
    db: AsyncDatabase[dict[str, Any]], workload: str, dataset: str, baseline: dict[str, Any]
) -> Diagnostics | None:
    """The diagnostics of the latest completed run of exactly this baseline on this data set."""
    cursor = (
        db["results"]
        .find(
            {"workload": workload, "dataset": dataset, "status": "completed", "diagnostics": {"$ne": None}},
            {"config": 1, "diagnostics": 1},
        )
        .sort("recorded_at", -1)
        .limit(PAST_RUNS)
    )
    async for row in cursor:
        if row["config"] == baseline:
            return Diagnostics.model_validate(row["diagnostics"])
    return None


def endpoint(settings: Settings) -> LlmEndpoint | None:
    """The configured LLM endpoint, or None: the LLM source is optional."""
    chat = endpoint_from(settings)
    if chat is None:
        return None
    return LlmEndpoint(**vars(chat), max_hypotheses=settings.llm_max_hypotheses)


async def ask_llm(
    rt: Runtime, llm: LlmEndpoint | None, request: HypothesesRequestedPayload
) -> tuple[list[Hypothesis], list[str]]:
    """The LLM's hypotheses, when one is configured and the campaign's grant allows it."""
    if llm is None or not request.allow_llm:
        return [], []
    workload = get_workload(request.workload)
    schema = workload.schema
    offered, _ = from_catalogue(schema, request.baseline, None, own=techniques_of(workload))
    return await llm_hypotheses(llm, rt.store.db["llm_answers"], schema, request.baseline, offered)


def wire(rt: Runtime) -> None:
    llm = endpoint(rt.settings)

    async def on_requested(event: HypothesesRequested) -> None:
        history = await load_history(rt.store.db, event.payload.workload, event.payload.dataset)
        request = event.payload
        suggested = await ask_llm(rt, llm, request)
        diagnostics = await past_diagnostics(rt.store.db, request.workload, request.dataset, request.baseline)
        await rt.store.apply(
            consumer=CONSUMER,
            event=event,
            collection="hypothesis_sets",
            key=event.campaign_id,
            model=HypothesisSet,
            decide=lambda state, requested: on_hypotheses_requested(
                state, requested, history, suggested, diagnostics
            ),
        )
        rt.relay.kick()

    rt.on_reconcile(rt.republish_outbox)
    rt.bus.subscribe(
        [rt.topics.planner_events], group="hypothesis", handlers={HypothesesRequested: on_requested}
    )
