"""Bus: typed dispatch and dead-lettering, on FastStream's in-memory Kafka test broker.

The test broker delivers synchronously inside ``publish``, so once a publish returns the
handler (and any dead-lettering it caused) has run. It does not model consumer groups,
partitions, offsets or commits (every record arrives as partition 0, offset 0), so the
at-least-once/offset-commit side of the contract is not exercised here.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from faststream.kafka import KafkaBroker, KafkaMessage, TestKafkaBroker
from pymongo.errors import OperationFailure

from rea.bus import HANDLER_ATTEMPTS, MAX_DEAD_LETTER_COPY, Bus
from rea.decisions import Delivery
from rea.events import (
    CampaignRequested,
    DeadLetter,
    Envelope,
    Event,
    EventLimits,
    PhaseConcluded,
    PhaseConcludedPayload,
    PlanApproved,
    PlanApprovedPayload,
    encode_event,
)
from rea.metrics import Metrics
from rea.topics import Topics

SERVICE = "planner-test"
FOLLOW = {"campaign_id": "camp-1", "correlation_id": "corr-1"}


@dataclass
class Rig:
    bus: Bus
    topics: Topics
    metrics: Metrics
    received: list[Envelope] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)
    behaviour: list[BaseException | None] = field(default_factory=list)
    calls: int = 0

    async def handler(self, event: Envelope) -> None:
        self.calls += 1
        outcome = self.behaviour.pop(0) if self.behaviour else None
        if outcome is not None:
            raise outcome
        self.received.append(event)

    def dead_letter_count(self, topic: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "rea_dead_letters_total", {"service": SERVICE, "topic": topic}
        )
        return value or 0.0

    def consumed(self, event_type: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "rea_events_consumed_total", {"service": SERVICE, "type": event_type}
        )
        return value or 0.0


@pytest_asyncio.fixture
async def rig() -> AsyncIterator[Rig]:
    broker = KafkaBroker("localhost:9092", logger=None)
    topics, metrics = Topics("unit"), Metrics()
    made = Rig(bus=Bus(broker, topics, SERVICE, metrics), topics=topics, metrics=metrics)
    made.bus.subscribe(
        [topics.campaign_requests, topics.control],
        group="unit",
        handlers={CampaignRequested: made.handler},
    )

    @broker.subscriber(topics.dead_letter)
    async def capture(message: KafkaMessage) -> None:
        made.letters.append(DeadLetter.model_validate_json(message.body))

    async with TestKafkaBroker(broker):
        yield made


def requested(**payload: Any) -> CampaignRequested:
    return CampaignRequested(**FOLLOW, payload=payload or {"name": "n"})


async def test_valid_event_reaches_its_typed_handler(rig: Rig) -> None:
    event = requested(name="n", dataset="movielens-100k")
    await rig.bus.publish(event)
    assert rig.received == [event]
    assert type(rig.received[0]) is CampaignRequested
    assert rig.letters == []
    assert rig.consumed("campaign.requested") == 1


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"\xff\xfenot json", "Invalid JSON"),
        (b"[1, 2]", "Input should be an object"),
        (
            json.dumps({"type": "campaign.exploded", "version": 1, **FOLLOW, "payload": {}}).encode(),
            "campaign.exploded",
        ),
        (
            json.dumps({"type": "campaign.requested", "version": 9, **FOLLOW, "payload": {}}).encode(),
            "campaign.requested.version",
        ),
        (
            json.dumps({"type": "campaign.requested", "version": 1, **FOLLOW, "payload": []}).encode(),
            "campaign.requested.payload",
        ),
    ],
    ids=["bad-bytes", "not-an-object", "unknown-type", "unknown-version", "wrong-field-type"],
)
async def test_invalid_message_is_dead_lettered_with_the_reason(rig: Rig, raw: bytes, needle: str) -> None:
    topic = rig.topics.campaign_requests
    await rig.bus.send(topic, b"camp-1", raw)
    assert rig.calls == 0
    [letter] = rig.letters
    assert letter.reason.startswith("invalid event: ")
    assert needle in letter.reason
    assert letter.service == SERVICE
    assert letter.topic == topic
    assert (letter.partition, letter.offset) == (0, 0)
    assert letter.original == raw.decode("utf-8", errors="replace")
    assert letter.original_size == len(raw)
    assert rig.dead_letter_count(topic) == 1
    assert rig.consumed("campaign.requested") == 0


async def test_dead_letter_keeps_a_truncated_copy_of_a_huge_message(rig: Rig) -> None:
    raw = b"x" * (MAX_DEAD_LETTER_COPY * 3)
    await rig.bus.send(rig.topics.control, b"", raw)
    [letter] = rig.letters
    assert letter.original == "x" * MAX_DEAD_LETTER_COPY
    assert letter.original_size == len(raw)
    assert letter.topic == rig.topics.control


async def test_a_message_over_the_size_limit_is_dead_lettered_unparsed(rig: Rig) -> None:
    limit = rig.bus.limits.max_bytes
    event = requested(name="n", notes="x" * limit)
    raw = encode_event(event)
    await rig.bus.send(rig.topics.campaign_requests, b"camp-1", raw)
    assert rig.calls == 0
    [letter] = rig.letters
    assert letter.reason == f"too large: {len(raw)} bytes (limit {limit})"
    assert letter.original_size == len(raw)


async def test_an_event_people_publish_has_the_smaller_limit(rig: Rig) -> None:
    """A campaign request or a decision needs little room: 70 KiB is an attempt to make every
    consumer parse and store it. A service's event of that size is fine."""
    person = rig.bus.limits.max_person_bytes
    large = requested(name="n", notes="x" * (70 << 10))
    await rig.bus.publish(large)
    assert rig.calls == 0
    [letter] = rig.letters
    size = len(encode_event(large))
    assert letter.reason == f"too large: {size} bytes (limit {person} for a campaign.requested event)"
    fits = requested(name="n", notes="x" * (person - 1024))
    await rig.bus.publish(fits)
    assert rig.received == [fits]


def test_a_services_event_may_be_larger_than_a_persons() -> None:
    limits = EventLimits()
    phase = PhaseConcluded(**FOLLOW, payload=PhaseConcludedPayload(phase="p" * (200 << 10), jobs=[]))
    size = len(encode_event(phase))
    assert limits.max_person_bytes < size < limits.max_bytes
    assert limits.too_large(size, phase) is None
    assert limits.too_large(size, requested()) is not None


async def test_consumption_goes_on_after_a_bad_message(rig: Rig) -> None:
    await rig.bus.send(rig.topics.campaign_requests, b"", b"garbage")
    event = requested()
    await rig.bus.publish(event)
    assert rig.received == [event]
    assert len(rig.letters) == 1


async def test_handler_that_always_fails_is_dead_lettered_after_three_attempts(rig: Rig) -> None:
    rig.behaviour = [RuntimeError("kaput")] * 10
    event = requested()
    await rig.bus.publish(event)
    assert HANDLER_ATTEMPTS == 3
    assert rig.calls == 3
    [letter] = rig.letters
    assert letter.reason == "handler failed 3 times: RuntimeError: kaput"
    assert letter.topic == rig.topics.campaign_requests
    assert json.loads(letter.original) == json.loads(encode_event(event))
    assert rig.dead_letter_count(rig.topics.campaign_requests) == 1


async def test_handler_that_recovers_within_the_attempts_is_not_dead_lettered(rig: Rig) -> None:
    rig.behaviour = [ValueError("flaky"), ValueError("flaky")]
    event = requested()
    await rig.bus.publish(event)
    assert rig.calls == 3
    assert rig.received == [event]
    assert rig.letters == []


async def test_infrastructure_errors_are_retried_beyond_the_attempt_limit(rig: Rig) -> None:
    rig.behaviour = [ConnectionError("mongo down")] * 3  # ~1.4 s of backoff
    event = requested()
    await rig.bus.publish(event)
    assert rig.calls == 4
    assert rig.received == [event]
    assert rig.letters == []


def transient() -> OperationFailure:
    return OperationFailure(
        "write conflict", code=112, details={"errorLabels": ["TransientTransactionError"]}
    )


async def test_transient_transaction_errors_are_retried(rig: Rig) -> None:
    rig.behaviour = [transient(), transient(), transient(), transient()]
    event = requested()
    await rig.bus.publish(event)
    assert rig.calls == 5
    assert rig.received == [event]
    assert rig.letters == []


async def test_transient_errors_do_not_use_up_the_attempts(rig: Rig) -> None:
    rig.behaviour = [transient(), transient(), RuntimeError("once")]
    event = requested()
    await rig.bus.publish(event)
    assert rig.letters == []
    assert rig.received == [event]


async def test_known_event_without_a_handler_is_skipped_silently(rig: Rig) -> None:
    other = PlanApproved(**FOLLOW, payload=PlanApprovedPayload(approved_by="alice"))
    await rig.bus.publish(other)  # routed to the control topic, which this consumer reads
    assert rig.bus.topics.for_event(other.type) == rig.topics.control
    assert rig.calls == 0
    assert rig.letters == []
    assert rig.consumed("plan.approved") == 0
    assert rig.dead_letter_count(rig.topics.control) == 0


async def test_a_gate_refusal_is_dead_lettered_and_never_handled() -> None:
    broker = KafkaBroker("localhost:9092", logger=None)
    topics = Topics("gate")
    bus = Bus(broker, topics, SERVICE, Metrics())
    handled: list[Event] = []
    letters: list[DeadLetter] = []
    seen: list[Delivery] = []

    async def handle(event: PlanApproved) -> None:
        handled.append(event)

    async def gate(event: Event, delivery: Delivery) -> str | None:
        seen.append(delivery)
        return "unsigned" if isinstance(event, PlanApproved) and event.decided_by() == "mallory" else None

    bus.subscribe([topics.control], group="unit", handlers={PlanApproved: handle}, gate=gate)

    @broker.subscriber(topics.dead_letter)
    async def capture(message: KafkaMessage) -> None:
        letters.append(DeadLetter.model_validate_json(message.body))

    async with TestKafkaBroker(broker):
        forged = PlanApproved(**FOLLOW, payload=PlanApprovedPayload(approved_by="mallory"))
        await bus.publish(forged)
        honest = PlanApproved(**FOLLOW, payload=PlanApprovedPayload(approved_by="alice"))
        await bus.publish(honest)
    assert handled == [honest]
    [letter] = letters
    assert letter.reason == "refused decision: unsigned"
    assert PlanApproved.model_validate_json(letter.original) == forged
    assert seen[0] == Delivery(topic=topics.control, partition=0, offset=0)
