"""The experiment logger: every event, result, cost and failure into the insights DB.

Writes are keyed (events by ``event_id``, results by ``job_id``) and use insert-if-absent,
so at-least-once delivery never records anything twice. Events arrive in batches (one fetch)
and go in with two unordered ``insert_many`` calls that tolerate duplicate keys: single
writes cap the logger at a few hundred results/s (see ``benchmarks/logger_ingest.py``).

A result the broker lost before the logger read it (an embedded broker restarted) is
recovered at reconciliation from the worker's done-marker, which keeps the original event;
failures the executor declares itself (lost workers) come back through its outbox.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from faststream import AckPolicy
from faststream.kafka import KafkaMessage
from prometheus_client import Counter
from pydantic import ValidationError
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from rea.events import (
    FINISHED_JOB_STATUSES,
    AnyEvent,
    CampaignCompleted,
    DeadLetter,
    JobCompleted,
    JobFailed,
    parse_event,
)
from rea.insights import EFFECTS, WINNERS
from rea.runtime import Runtime
from rea.views import phase_view
from rea_logger.records import (
    dead_letter_document,
    event_document,
    insight_updates,
    result_document,
)

log = structlog.get_logger()

DUPLICATE_KEY = 11000
YIELD_S = 0.05
"""How long a batch waits before it is written (see ``record``)."""


async def insert_absent(collection: AsyncCollection[dict[str, Any]], docs: list[dict[str, Any]]) -> list[int]:
    """Insert ``docs`` (unordered); those whose key is already there are skipped. Returns the
    indexes of the documents that were inserted."""
    if not docs:
        return []
    try:
        await collection.insert_many(docs, ordered=False)
        return list(range(len(docs)))
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(error.get("code") != DUPLICATE_KEY for error in errors):
            raise
        skipped = {int(error["index"]) for error in errors}
        return [index for index in range(len(docs)) if index not in skipped]


def wire(rt: Runtime) -> None:
    results_recorded = Counter(
        "rea_results_recorded_total",
        "Job results written to the insights DB.",
        ["status"],
        registry=rt.metrics.registry,
    )
    written = rt.metrics.insights_written
    for collection in ("events", "results", "dead_letters", EFFECTS, WINNERS):  # at zero before the first
        written.labels(service=rt.name, collection=collection)
    for topic in rt.topics.all():
        if topic != rt.topics.dead_letter:
            rt.metrics.dead_letters.labels(service=rt.name, topic=topic)

    async def record(events: list[AnyEvent]) -> None:
        # Yield first: nothing waits on the insights DB, while the executor's decision woken by
        # the same `job.completed` is what the next job waits on. Measured with
        # `python -m rea_bench.idle_cpu` (30 wakes after hibernation): writing at once, the
        # wake's p50/p99 were 35/55 ms; yielding 50 ms, 25/39 ms.
        await asyncio.sleep(YIELD_S)
        # Insights first: once a `campaign.completed` is in the events collection, what it taught
        # is readable too (a redelivered batch rewrites the same values).
        for event in events:
            if isinstance(event, CampaignCompleted):
                for collection, key, update in insight_updates(event):
                    await rt.store.db[collection].update_one(key, update, upsert=True)
                    written.labels(service=rt.name, collection=collection).inc()
        inserted = await insert_absent(rt.store.events, [event_document(event) for event in events])
        written.labels(service=rt.name, collection="events").inc(len(inserted))
        finished = [event for event in events if isinstance(event, JobCompleted | JobFailed)]
        for index in await insert_absent(rt.store.results, [result_document(event) for event in finished]):
            results_recorded.labels(status=finished[index].type).inc()
            written.labels(service=rt.name, collection="results").inc()

    async def recover_results() -> None:
        """Record every finished job of an active campaign that has no result row yet, from the
        event its worker kept (same ``event_id``, so a late delivery of it is still deduplicated)."""
        campaigns = await rt.store.active_campaign_ids()
        active = {"campaign_id": {"$in": campaigns}}
        recorded = {doc["_id"] async for doc in rt.store.results.find(active, {"_id": 1})}
        recovered = 0
        async for doc in rt.store.phases.find({"state.campaign_id": {"$in": campaigns}}, {"state": 1}):
            for job in phase_view(doc).jobs:
                job_id = job.spec.job_id
                if job.status not in FINISHED_JOB_STATUSES or job.output is None or job_id in recorded:
                    continue
                run = await rt.store.ledger.get(job_id)
                event = parse_event(run.final) if run and run.final else None
                if isinstance(event, JobCompleted | JobFailed) and event.payload.spec.job_id == job_id:
                    await record([event])
                    recovered += 1
        if recovered:
            log.warning("results_recovered", results=recovered)

    rt.on_reconcile(recover_results)

    topics = [t for t in rt.topics.all() if t != rt.topics.dead_letter]
    rt.bus.subscribe_batch(topics, group="logger", handler=record, max_records=1000)

    async def on_dead_letter(message: KafkaMessage) -> None:
        try:
            letter = DeadLetter.model_validate_json(message.body or b"")
        except ValidationError:
            log.warning("unreadable_dead_letter", size=len(message.body or b""))
            return
        stored = await insert_absent(rt.store.dead_letters, [dead_letter_document(letter)])
        written.labels(service=rt.name, collection="dead_letters").inc(len(stored))

    rt.bus.broker.subscriber(
        rt.topics.dead_letter,
        group_id=rt.topics.group("logger.deadletters"),
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.ACK,
    )(on_dead_letter)
