"""Store.apply on the real embedded MongoDB: one event, one effect, however often it comes."""

from __future__ import annotations

import asyncio

from rea.events import Envelope, PhaseStarted
from rea.store import Store
from rea_bench.common import job_completed, phase_started
from rea_executor import logic
from rea_executor.service import CONSUMER, Decide, apply_to_phase
from rea_executor.state import PhaseExecution, PhaseSummary, phase_key


async def _apply(store: Store, event: Envelope, key: str) -> bool:
    """Apply ``event`` to the executor's phase document, as the executor does; True when it was
    a duplicate."""
    decide: Decide = logic.on_phase_started if isinstance(event, PhaseStarted) else logic.on_job_finished
    return (await apply_to_phase(store, event, key, decide)).duplicate


async def _outbox_ids(store: Store, campaign_id: str) -> list[str]:
    return [doc["_id"] async for doc in store.outbox.find({"campaign_id": campaign_id}, {"_id": 1})]


async def test_a_redelivered_event_is_a_duplicate_and_changes_nothing(store: Store) -> None:
    started = phase_started("a" * 32, jobs=3, max_parallel_jobs=1)
    key = phase_key(started.campaign_id, started.payload.plan.phase)
    assert not await _apply(store, started, key)
    assert await _apply(store, started, key)

    first = started.payload.plan.jobs[0]
    completed = job_completed(first, seed=1)
    assert not await _apply(store, completed, key)
    doc = await store.phases.find_one({"_id": key})
    outbox = await _outbox_ids(store, started.campaign_id)

    assert await _apply(store, completed, key)

    assert await store.phases.find_one({"_id": key}) == doc
    assert await _outbox_ids(store, started.campaign_id) == outbox
    assert doc is not None and doc["version"] == 2
    assert await store.processed.count_documents({"_id": f"{CONSUMER}:{completed.event_id}"}) == 1


async def test_twins_handled_at_once_take_effect_once(store: Store) -> None:
    started = phase_started("b" * 32, jobs=3, max_parallel_jobs=1)
    key = phase_key(started.campaign_id, started.payload.plan.phase)
    await _apply(store, started, key)
    completed = job_completed(started.payload.plan.jobs[0], seed=1)

    duplicates = await asyncio.gather(*(_apply(store, completed, key) for _ in range(3)))

    assert sorted(duplicates) == [False, True, True]
    doc = await store.phases.find_one({"_id": key})
    assert doc is not None and doc["version"] == 2
    submitted = {"campaign_id": started.campaign_id, "type": "job.submitted"}
    assert await store.outbox.count_documents(submitted) == 2  # at the start, after the completion


async def test_a_summary_is_saved_with_each_state_it_summarises(store: Store) -> None:
    started = phase_started("c" * 32, jobs=3, max_parallel_jobs=1)
    key = phase_key(started.campaign_id, started.payload.plan.phase)
    for event in (started, job_completed(started.payload.plan.jobs[0], seed=1)):
        assert not await _apply(store, event, key)
        doc = await store.phases.find_one({"_id": key})
        assert doc is not None
        saved = PhaseSummary.model_validate(doc["summary"])
        assert saved == PhaseExecution.model_validate(doc["state"]).summary()
    assert saved.tenant.in_flight == 1 and len(saved.tenant.pending_costs) == 1
