"""The experiment logger: every event, result, cost and failure into the insights DB.

Writes are keyed (events by ``event_id``, results by ``job_id``) and use insert-if-absent,
so at-least-once delivery never records anything twice.
"""

from __future__ import annotations

import structlog
from faststream import AckPolicy
from faststream.kafka import KafkaMessage
from prometheus_client import Counter
from pydantic import ValidationError
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from rea.events import EVENT_TYPES, AnyEvent, DeadLetter, JobCompleted, JobFailed
from rea.runtime import Runtime
from rea_logger.records import dead_letter_document, event_document, result_document

log = structlog.get_logger()


async def insert_once(collection: AsyncCollection[dict[str, object]], doc: dict[str, object]) -> bool:
    try:
        await collection.insert_one(doc)
        return True
    except DuplicateKeyError:
        return False


def wire(rt: Runtime) -> None:
    results_recorded = Counter(
        "rea_results_recorded_total",
        "Job results written to the insights DB.",
        ["status"],
        registry=rt.metrics.registry,
    )

    async def on_event(event: AnyEvent) -> None:
        await insert_once(rt.store.events, event_document(event))
        if isinstance(event, JobCompleted | JobFailed) and await insert_once(
            rt.store.results, result_document(event)
        ):
            results_recorded.labels(status=event.type).inc()

    topics = [t for t in rt.topics.all() if t != rt.topics.dead_letter]
    rt.bus.subscribe(topics, group="rea-logger", handlers=dict.fromkeys(EVENT_TYPES, on_event))

    async def on_dead_letter(message: KafkaMessage) -> None:
        try:
            letter = DeadLetter.model_validate_json(message.body or b"")
        except ValidationError:
            log.warning("unreadable_dead_letter", size=len(message.body or b""))
            return
        await insert_once(rt.store.dead_letters, dead_letter_document(letter))

    rt.bus.broker.subscriber(
        rt.topics.dead_letter,
        group_id="rea-logger-deadletters",
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.ACK,
    )(on_dead_letter)
