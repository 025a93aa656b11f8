"""A service whose broker goes away between ensuring the topics and starting its consumers
(restarted under it) waits for the broker instead of exiting."""

from __future__ import annotations

from typing import Any, cast

import pytest
from aiokafka.errors import KafkaConnectionError, UnknownError
from faststream.kafka import KafkaBroker

from rea.runtime import Runtime, reconcile_at_start, start_broker


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


class BlinkingReconciler:
    """A start-up reconciliation that meets a broker restarting under it ``failures`` times."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    async def reconcile(self) -> None:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise self.error


async def test_a_reconciliation_that_meets_a_blinking_broker_is_retried_not_fatal() -> None:
    blinking = BlinkingReconciler(1, UnknownError())
    await reconcile_at_start(cast(Runtime, blinking))
    assert blinking.calls == 2


async def test_a_reconciliation_that_fails_for_another_reason_still_fails() -> None:
    broken = BlinkingReconciler(1, ValueError("a bug"))
    with pytest.raises(ValueError):
        await reconcile_at_start(cast(Runtime, broken))
    assert broken.calls == 1
