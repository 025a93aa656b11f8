"""Bus batches: invalid messages are dead-lettered, a failing batch is retried one event at a
time so only the poisonous event is dead-lettered; on FastStream's in-memory test broker (see
``test_bus_deadletter`` for what that broker does not model)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest_asyncio
from faststream.kafka import KafkaBroker, KafkaMessage, TestKafkaBroker

from rea.bus import HANDLER_ATTEMPTS, Bus
from rea.events import CampaignRequested, DeadLetter, Envelope, encode_event
from rea.metrics import Metrics
from rea.topics import Topics

FOLLOW = {"campaign_id": "camp-1", "correlation_id": "corr-1"}


@dataclass
class Rig:
    broker: KafkaBroker
    bus: Bus
    topics: Topics
    batches: list[list[str]] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)
    poison: set[str] = field(default_factory=set)
    calls: int = 0

    async def handler(self, events: list[Envelope]) -> None:
        self.calls += 1
        if any(event.event_id in self.poison for event in events):
            raise ValueError("poisoned")
        self.batches.append([event.event_id for event in events])

    async def send_batch(self, *values: bytes) -> None:
        await self.broker.publish_batch(*values, topic=self.topics.campaign_requests)


@pytest_asyncio.fixture
async def rig() -> AsyncIterator[Rig]:
    broker = KafkaBroker("localhost:9092", logger=None)
    topics = Topics("unit")
    made = Rig(broker=broker, bus=Bus(broker, topics, "logger-test", Metrics()), topics=topics)
    made.bus.subscribe_batch([topics.campaign_requests], group="unit", handler=made.handler)

    @broker.subscriber(topics.dead_letter)
    async def capture(message: KafkaMessage) -> None:
        made.letters.append(DeadLetter.model_validate_json(message.body))

    async with TestKafkaBroker(broker):
        yield made


def requested() -> CampaignRequested:
    return CampaignRequested(**FOLLOW, payload={"name": "n"})


async def test_valid_events_of_a_fetch_reach_the_handler_together(rig: Rig) -> None:
    events = [requested() for _ in range(3)]
    await rig.send_batch(*(encode_event(event) for event in events))
    assert rig.batches == [[event.event_id for event in events]]
    assert rig.letters == []


async def test_an_invalid_message_in_a_batch_is_dead_lettered_and_the_rest_handled(rig: Rig) -> None:
    good = [requested(), requested()]
    await rig.send_batch(encode_event(good[0]), b"{not json", encode_event(good[1]))
    assert rig.batches == [[event.event_id for event in good]]
    [letter] = rig.letters
    assert letter.reason.startswith("invalid event: ") and letter.original == "{not json"


async def test_a_failing_batch_is_retried_one_by_one_and_only_the_poison_is_dead_lettered(rig: Rig) -> None:
    events = [requested() for _ in range(3)]
    rig.poison = {events[1].event_id}
    await rig.send_batch(*(encode_event(event) for event in events))
    assert rig.batches == [[events[0].event_id], [events[2].event_id]]
    assert rig.calls == 1 + 1 + HANDLER_ATTEMPTS + 1
    [letter] = rig.letters
    assert letter.reason == f"handler failed {HANDLER_ATTEMPTS} times: ValueError: poisoned"
