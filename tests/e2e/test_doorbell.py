"""The doorbell on the real broker and Redis: an idle consumer stops fetching, a ring wakes it at
once, and an event from a producer that does not ring is still handled, at the next glance."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer

from rea.client import Client
from rea.doorbell import Doorbell, ring
from rea.events import CampaignPaused, PersonAction, encode_event, new_id
from rea.runtime import Runtime, connect, start_broker
from rea.settings import Settings

pytestmark = pytest.mark.e2e


class Listener:
    """A consumer of the control topic under the doorbell that notes when each event arrived."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.arrived: dict[str, float] = {}

    async def on_paused(self, event: CampaignPaused) -> None:
        self.arrived[event.campaign_id] = time.monotonic()

    def asleep(self) -> bool:
        gauge = self.runtime.metrics.consumers_asleep.labels(service=self.runtime.name)
        return bool(gauge._value.get())

    async def fall_asleep(self) -> None:
        for _ in range(100):
            if self.asleep():
                return
            await asyncio.sleep(0.1)
        raise AssertionError("the idle consumer never fell asleep")

    async def arrival(self, campaign_id: str, timeout_s: float) -> float:
        deadline = time.monotonic() + timeout_s
        while campaign_id not in self.arrived:
            if time.monotonic() > deadline:
                raise AssertionError(f"{campaign_id} not handled within {timeout_s}s")
            await asyncio.sleep(0.01)
        return self.arrived[campaign_id]


@asynccontextmanager
async def listening(settings: Settings, group: str) -> AsyncIterator[Listener]:
    """A service-like runtime whose one consumer has fallen asleep under the doorbell."""
    runtime, _ = await connect(group, settings)
    made = Listener(runtime)
    runtime.bus.subscribe([runtime.topics.control], group=group, handlers={CampaignPaused: made.on_paused})
    await start_broker(runtime.bus.broker)
    assert runtime.bus.doorbell is not None
    bell = asyncio.create_task(runtime.bus.doorbell.run())
    try:
        await made.fall_asleep()
        yield made
    finally:
        bell.cancel()
        await asyncio.gather(bell, return_exceptions=True)
        await runtime.close()


@pytest_asyncio.fixture
async def listener(settings: Settings) -> AsyncIterator[Listener]:
    async with listening(settings, "doorbell-test") as made:
        yield made


def paused(campaign_id: str) -> CampaignPaused:
    return CampaignPaused(
        campaign_id=campaign_id, correlation_id=campaign_id, payload=PersonAction(by="erin")
    )


async def send_without_ringing(settings: Settings, event: CampaignPaused) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(Client(settings).topics.control, encode_event(event), key=event.key())
    finally:
        await producer.stop()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Glances far apart, so whatever arrives sooner was woken by a ring."""
    return settings.model_copy(update={"kafka_awake_s": 0.5, "kafka_idle_poll_s": 30.0})


async def test_a_sleeping_consumer_fetches_nothing_until_the_doorbell_rings(
    settings: Settings, listener: Listener
) -> None:
    quiet = new_id()
    await send_without_ringing(settings, paused(quiet))
    await asyncio.sleep(3)
    assert quiet not in listener.arrived, "an asleep consumer fetched"

    rang = time.monotonic()
    await ring(
        str(settings.redis_url), Doorbell.channel_for(settings.topic_prefix), Client(settings).topics.control
    )
    assert await listener.arrival(quiet, 2) - rang < 1.0

    await listener.fall_asleep()
    client = Client(settings)
    try:
        loud = new_id()
        sent = time.monotonic()
        event = paused(loud)  # unsigned: this listener judges nothing
        await client.send(client.topics.control, event.key(), encode_event(event))  # rings after the ack
        assert await listener.arrival(loud, 2) - sent < 1.0
    finally:
        await client.close()


async def test_an_event_nobody_rang_for_is_handled_at_the_next_glance(settings: Settings) -> None:
    glancing = settings.model_copy(update={"kafka_idle_poll_s": 2.0})
    async with listening(glancing, "doorbell-glance") as made:
        quiet = new_id()
        sent = time.monotonic()
        await send_without_ringing(settings, paused(quiet))
        assert await made.arrival(quiet, 8) - sent <= 2.0 + 1.0
