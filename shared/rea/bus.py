"""The event bus: FastStream on Kafka, with dead-lettering and typed dispatch.

Delivery contract
-----------------
* **At-least-once.** A consumer's offset is committed only after its handler has returned,
  i.e. after the state change is durable in MongoDB. A crash before that redelivers the
  message; handlers are idempotent (dedup on ``event_id``), so redelivery is harmless.
* **Order per key.** Messages with one key (a campaign; a job on the job queue) land on one
  partition and are handled in order by the single consumer that owns it.
* **Never crash on input.** A message that is not a valid event (bad bytes, unknown type or
  version, wrong field types) goes to the dead-letter topic with the reason, and consumption
  goes on. A handler that keeps failing on one event dead-letters it after a few tries;
  failures of the infrastructure itself (database or broker unreachable) are retried until
  it is back, never dead-lettered, so no valid event is dropped because a server blinked.
* **Batches** (``subscribe_batch``, for write-heavy consumers such as the logger) keep the same
  contract: one commit after the handler returned for the whole batch; if the batch fails for
  a reason other than the infrastructure, its events are retried one by one, so only a
  poisonous event is dead-lettered.
* **Sleeping when idle.** With a doorbell (:mod:`rea.doorbell`), every send rings it after the
  broker's ack, and a consumer with nothing to do pauses its partitions until a ring, the end
  of its handler or a glance wakes it: an idle stack sends the broker almost no fetches.
* **No idempotent producer by default**: Tansu does not support it; set
  ``REA_KAFKA_IDEMPOTENCE=true`` on Apache Kafka.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from aiokafka import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage
from pydantic import ValidationError
from pymongo.errors import ConnectionFailure, OperationFailure

from rea.decisions import Delivery
from rea.doorbell import Doorbell
from rea.events import DeadLetter, Event, EventLimits, describe_error, encode_event, parse_event
from rea.metrics import Metrics
from rea.security import is_auth_error, kafka_security
from rea.settings import Settings
from rea.topics import Topics

Handler = Callable[[Any], Awaitable[None]]
Gate = Callable[[Event, Delivery], Awaitable[str | None]]
"""Judges an event before its handler runs: a reason refuses it (see :mod:`rea.decisions`)."""
BatchHandler = Callable[[list[Any]], Awaitable[None]]

MAX_DEAD_LETTER_COPY = 4096
HANDLER_ATTEMPTS = 3
RETRY_MAX_WAIT_S = 5.0
FETCHER_TIMEOUT_MS = 1000
"""How long aiokafka's fetch loop sleeps with nothing to do (its default, 200 ms, woke every
idle consumer five times a second); data, a resume and a rebalance wake it at once."""
BATCH_TIMEOUT_MS = 1000
"""A batch consumer's wait for data, and its pause after an empty wait (FastStream's)."""
INFRA_ERRORS: tuple[type[BaseException], ...] = (ConnectionFailure, KafkaError, ConnectionError)

log = structlog.get_logger()


def make_broker(settings: Settings, bootstrap: str) -> KafkaBroker:
    return KafkaBroker(
        bootstrap,
        enable_idempotence=settings.kafka_idempotence,
        client_id=settings.service_name,
        security=kafka_security(settings),
        # Notice re-created topics (a broker that lost its log) in seconds, not minutes.
        metadata_max_age_ms=settings.kafka_metadata_max_age_ms,
        logger=None,
    )


class _PastTheEnd(ConsumerRebalanceListener):
    """Reads from the beginning any partition the group gives this consumer at an offset past
    the partition's end, then tells ``inner``. Such an offset was committed from before the
    broker lost its log (a handler that finished after the loss acknowledged its message), and a
    broker that lost its log may not answer out of range there (Tansu fetches nothing), so the
    consumer would wait for offsets the new log has not reached. Re-reading is safe: every
    handler dedups on ``event_id``."""

    def __init__(self, inner: ConsumerRebalanceListener | None) -> None:
        self.inner = inner
        self.subscriber: Any = None

    async def on_partitions_revoked(self, revoked: Any) -> None:
        if self.inner is not None:
            await self.inner.on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        consumer = getattr(self.subscriber, "consumer", None)
        if consumer is not None and assigned:
            ends = await consumer.end_offsets(list(assigned))
            for partition in assigned:
                committed = await consumer.committed(partition)
                if committed is not None and committed > ends[partition]:
                    log.warning("offset_past_log_end", topic=partition.topic, partition=partition.partition)
                    await consumer.seek_to_beginning(partition)
        if self.inner is not None:
            await self.inner.on_partitions_assigned(assigned)


class Bus:
    """Publishes events and wires typed handlers to topics (see the module docstring)."""

    def __init__(
        self,
        broker: KafkaBroker,
        topics: Topics,
        service: str,
        metrics: Metrics,
        fetch_max_wait_ms: int = 500,
        doorbell: Doorbell | None = None,
        limits: EventLimits | None = None,
    ) -> None:
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.limits = limits or EventLimits()
        self.doorbell = doorbell
        self.broker = broker
        self.topics = topics
        self.service = service
        self.metrics = metrics

    async def rewind(self) -> None:
        """Read every assigned partition again from its beginning.

        For a broker that lost its log: the new log starts at offset 0, but a running consumer
        still holds its old position and would silently skip the first messages of the new log.
        Re-reading is safe: every handler dedups on ``event_id``.
        """
        for subscriber in self.broker.subscribers:
            consumer = getattr(subscriber, "consumer", None)
            if consumer is not None and consumer.assignment():
                await consumer.seek_to_beginning()

    async def publish(self, event: Event) -> None:
        await self.send(self.topics.for_event(event.type), event.key(), encode_event(event))

    async def send(self, topic: str, key: bytes, value: bytes, partition: int | None = None) -> None:
        """Publish ``value``; to ``partition`` when the producer placed it (a job sent to a free
        worker's partition), else to the key's."""
        await self.broker.publish(value, topic, key=key, partition=partition)
        if self.doorbell is not None:
            await self.doorbell.ring(topic)

    async def dead_letter(
        self, raw: bytes, reason: str, topic: str, partition: int | None = None, offset: int | None = None
    ) -> None:
        letter = DeadLetter(
            reason=reason,
            service=self.service,
            topic=topic,
            partition=partition,
            offset=offset,
            original=raw[:MAX_DEAD_LETTER_COPY].decode("utf-8", errors="replace"),
            original_size=len(raw),
        )
        self.metrics.dead_letters.labels(service=self.service, topic=topic).inc()
        log.warning("dead_lettered", topic=topic, offset=offset, reason=reason[:300])
        await self.send(self.topics.dead_letter, b"", letter.model_dump_json().encode())

    def subscribe(
        self,
        topics: list[str],
        group: str,
        handlers: Mapping[type[Event], Handler],
        *,
        max_poll_interval_ms: int = 300_000,
        listener: ConsumerRebalanceListener | None = None,
        gate: Gate | None = None,
    ) -> None:
        """Consume ``topics`` in consumer group ``group`` (under the topic prefix) and route each
        event to its handler; ``listener`` hears which partitions the group gives this consumer.
        ``gate`` judges each event that has a handler first: one it refuses is dead-lettered as
        ``refused decision: <why>`` and never handled.

        Events of a known type that this consumer has no handler for are skipped: they are
        meant for another consumer of the same topic.
        """

        async def consume(message: KafkaMessage) -> None:
            record: Any = message.raw_message  # aiokafka's ConsumerRecord
            topic, partition, offset = record.topic, record.partition, record.offset
            raw: bytes = message.body or b""
            event = await self._parse(raw, topic, partition, offset)
            if event is None:
                return
            handler = handlers.get(type(event))
            if handler is None:
                return
            if gate is not None and await self._refused(
                gate, event, raw, Delivery(topic=topic, partition=partition, offset=offset)
            ):
                return
            self.metrics.events_consumed.labels(service=self.service, type=event.type).inc()
            with self.metrics.handler_seconds.labels(service=self.service, type=event.type).time():
                await self._handle(handler, event, raw, topic, partition, offset)

        self._consume(topics, group, consume, listener, max_poll_interval_ms=max_poll_interval_ms)

    def subscribe_batch(
        self,
        topics: list[str],
        group: str,
        handler: BatchHandler,
        *,
        max_records: int = 500,
    ) -> None:
        """Consume ``topics`` in consumer group ``group`` and hand ``handler`` every valid event
        of a fetch at once (up to ``max_records``); invalid messages are dead-lettered."""

        async def consume(message: KafkaMessage) -> None:
            records: tuple[Any, ...] = message.raw_message  # aiokafka ConsumerRecords
            batch: list[tuple[Event, bytes, Any]] = []
            for record in records:
                raw: bytes = record.value or b""
                event = await self._parse(raw, record.topic, record.partition, record.offset)
                if event is None:
                    continue
                batch.append((event, raw, record))
                self.metrics.events_consumed.labels(service=self.service, type=event.type).inc()
            if not batch:
                return
            events = [item for item, _, _ in batch]
            with self.metrics.handler_seconds.labels(service=self.service, type="batch").time():
                error = await self._wait_out_infrastructure(lambda: handler(events), "batch")
            if error is None:
                return
            log.warning("batch_failed_retrying_one_by_one", events=len(events), error=repr(error))

            async def alone(one: Event) -> None:
                await handler([one])

            for item, item_raw, where in batch:
                await self._handle(alone, item, item_raw, where.topic, where.partition, where.offset)

        options = {"batch": True, "max_records": max_records, "batch_timeout_ms": BATCH_TIMEOUT_MS}
        self._consume(topics, group, consume, None, **options)

    def _consume(
        self,
        topics: list[str],
        group: str,
        consume: Callable[[KafkaMessage], Awaitable[None]],
        listener: ConsumerRebalanceListener | None,
        **options: Any,
    ) -> None:
        """Hand ``consume`` what ``topics`` bring this member of ``group``: committed after it
        returns, from the beginning where the group has no offset (or one past the log's end:
        :class:`_PastTheEnd`), kept awake around it (:meth:`_awake_around`)."""
        past_the_end = _PastTheEnd(listener)
        subscriber = self.broker.subscriber(
            *topics,
            group_id=self.topics.group(group),
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.ACK,
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            consumer_timeout_ms=FETCHER_TIMEOUT_MS,
            listener=past_the_end,
            **options,
        )
        past_the_end.subscriber = subscriber
        subscriber(self._awake_around(consume, topics, subscriber))

    def _awake_around(
        self, consume: Callable[[KafkaMessage], Awaitable[None]], topics: list[str], subscriber: Any
    ) -> Callable[[KafkaMessage], Awaitable[None]]:
        """``consume``, keeping its consumer awake while it handles and for a while after (the
        handler may have held it long: a worker's job); as is without a doorbell."""
        doorbell = self.doorbell
        if doorbell is None:
            return consume
        sleeper = doorbell.watch(topics, lambda: getattr(subscriber, "consumer", None))

        async def awake(message: KafkaMessage) -> None:
            doorbell.stir(sleeper, "handler")
            try:
                await consume(message)
            finally:
                doorbell.stir(sleeper, "handler")

        return awake

    async def _parse(self, raw: bytes, topic: str, partition: int, offset: int) -> Event | None:
        """The event in ``raw``, or None once it has been dead-lettered with the reason (too
        large is judged before parsing, and again by the parsed event's own limit)."""
        event: Event | None = None
        try:
            if (too_large := self.limits.too_large(len(raw))) is None:
                event = parse_event(raw)
                too_large = self.limits.too_large(len(raw), event)
        except ValidationError as exc:
            await self.dead_letter(raw, f"invalid event: {describe_error(exc)}", topic, partition, offset)
            return None
        if too_large is not None:
            await self.dead_letter(raw, too_large, topic, partition, offset)
            return None
        return event

    async def _refused(self, gate: Gate, event: Event, raw: bytes, delivery: Delivery) -> bool:
        """Whether ``gate`` refused ``event`` (then dead-lettered with the reason); waits out
        the infrastructure the gate reads."""
        verdict: list[str | None] = []

        async def judge() -> None:
            verdict.append(await gate(event, delivery))

        error = await self._wait_out_infrastructure(judge, event.type)
        reason = f"gate failed: {type(error).__name__}: {error}" if error is not None else verdict[-1]
        if reason is None:
            return False
        log.warning("decision_refused", type=event.type, event_id=event.event_id, reason=reason)
        await self.dead_letter(
            raw, f"refused decision: {reason}", delivery.topic, delivery.partition, delivery.offset
        )
        return True

    async def _wait_out_infrastructure(
        self, call: Callable[[], Awaitable[None]], what: str
    ) -> Exception | None:
        """Run ``call`` until it succeeds (None) or fails for a reason other than the
        infrastructure (that error); infrastructure failures are waited out, never counted."""
        waits = 0
        while True:
            try:
                await call()
                return None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not _is_retryable(exc):
                    return exc
                waits += 1
                log.warning("handler_waiting_for_infrastructure", type=what, error=repr(exc))
                await asyncio.sleep(min(RETRY_MAX_WAIT_S, 0.05 * 2**waits))

    async def _handle(
        self, handler: Handler, event: Event, raw: bytes, topic: str, partition: int, offset: int
    ) -> None:
        for failures in range(1, HANDLER_ATTEMPTS + 1):
            error = await self._wait_out_infrastructure(lambda: handler(event), event.type)
            if error is None:
                return
            log.error(
                "handler_failed", type=event.type, event_id=event.event_id, attempt=failures, exc_info=error
            )
            if failures == HANDLER_ATTEMPTS:
                reason = f"handler failed {failures} times: {type(error).__name__}: {error}"
                await self.dead_letter(raw, reason, topic, partition, offset)
                return
            await asyncio.sleep(0.1 * failures)


def _is_retryable(exc: Exception) -> bool:
    """Infrastructure blips and transaction write conflicts: wait them out, never dead-letter.
    A rejected credential is no blip: waiting cannot make it right."""
    if is_auth_error(exc):
        return False
    if isinstance(exc, INFRA_ERRORS):
        return True
    return isinstance(exc, OperationFailure) and exc.has_error_label("TransientTransactionError")
