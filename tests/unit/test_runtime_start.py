"""A service whose broker goes away between ensuring the topics and starting its consumers
(restarted under it) waits for the broker instead of exiting."""

from __future__ import annotations

from typing import Any, cast

from aiokafka.errors import KafkaConnectionError
from faststream.kafka import KafkaBroker

from rea.runtime import start_broker


class FlakyBroker:
    """Refuses to start ``failures`` times, as a broker that is restarting does."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[str] = []

    async def start(self) -> None:
        self.calls.append("start")
        if self.failures:
            self.failures -= 1
            raise KafkaConnectionError("Unable to bootstrap")

    async def stop(self, *args: Any) -> None:
        self.calls.append("stop")


async def test_a_start_waits_out_a_restarting_broker_and_stops_what_half_started() -> None:
    broker = FlakyBroker(failures=2)
    await start_broker(cast(KafkaBroker, broker))
    assert broker.calls == ["start", "stop", "start", "stop", "start"]
