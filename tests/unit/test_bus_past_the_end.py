"""A consumer group whose committed offset lies past a partition's end (acknowledged from before
the broker lost its log) reads that partition from the beginning, on the real broker: Tansu does
not answer such an offset out of range, so without the bus's rebalance listener the consumer
would wait, fetching nothing, for offsets the new log has not reached."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from rea.events import CampaignPaused, PersonAction, encode_event, new_id
from rea.runtime import connect, start_broker
from rea.settings import Settings
from rea.topics import Topics

GROUP = "past-the-end"
STALE_OFFSET = 7


def paused() -> CampaignPaused:
    campaign_id = new_id()
    return CampaignPaused(
        campaign_id=campaign_id, correlation_id=campaign_id, payload=PersonAction(by="erin")
    )


async def one_event_per_partition(settings: Settings, topic: str) -> list[str]:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        sent = []
        for partition in range(settings.topic_partitions):
            event = paused()
            await producer.send_and_wait(topic, encode_event(event), partition=partition)
            sent.append(event.campaign_id)
        return sent
    finally:
        await producer.stop()


async def commit_past_the_end(settings: Settings, topic: str, group_id: str) -> dict[int, int | None]:
    """Commit ``STALE_OFFSET`` for every partition in ``group_id``; return what the group holds."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=group_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, number) for number in range(settings.topic_partitions)]
        consumer.assign(partitions)
        await consumer.commit({partition: OffsetAndMetadata(STALE_OFFSET, "") for partition in partitions})
        return {partition.partition: await consumer.committed(partition) for partition in partitions}
    finally:
        await consumer.stop()


async def test_a_partition_committed_past_its_end_is_read_from_the_beginning(settings: Settings) -> None:
    topics = Topics(settings.topic_prefix)
    runtime, _ = await connect(GROUP, settings)
    try:
        sent = await one_event_per_partition(settings, topics.control)
        held = await commit_past_the_end(settings, topics.control, topics.group(GROUP))
        stale = dict.fromkeys(range(settings.topic_partitions), STALE_OFFSET)
        assert held == stale, "the stale offsets did not hold"

        arrived: list[str] = []

        async def on_paused(event: CampaignPaused) -> None:
            arrived.append(event.campaign_id)

        runtime.bus.subscribe([topics.control], group=GROUP, handlers={CampaignPaused: on_paused})
        await start_broker(runtime.bus.broker)
        for _ in range(300):
            if sorted(arrived) == sorted(sent):
                break
            await asyncio.sleep(0.1)
        assert sorted(arrived) == sorted(sent)
    finally:
        await runtime.close()
