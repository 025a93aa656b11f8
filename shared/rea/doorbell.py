"""The doorbell: publishers ring it, idle consumers sleep until it rings.

Why: Tansu answers a waiting fetch only when it re-checks (after half the fetch wait), not when
data arrives, so a fast hop needs a short fetch wait, and a short fetch wait makes every idle
consumer ask the broker for data fifty times a second. An idle stack then costs most of a core.
With the doorbell, a consumer that has had nothing to do for ``awake_s`` pauses its partitions
(no fetch is sent at all) and resumes them when

* a publisher rings the doorbell for one of its topics: every REA producer (the bus, the
  client, the job side) rings after the broker acknowledged the send, with a Redis ``PUBLISH``
  of the topic's name on one channel per topic prefix;
* its handler finishes: the handler may have held the consumer for long (a worker's job);
* a glance finds a backlog: every ``REA_KAFKA_IDLE_POLL_S`` the doorbell asks the broker for the
  end offsets of each sleeping consumer's partitions (one request) and wakes the consumer if any
  is past its position. The safety net for producers that do not ring (a plain Kafka client
  publishing a campaign) and for rings lost while Redis was away; it asks, rather than letting
  the consumer fetch for a moment, so a slow fetch cannot miss the window.

Contract
--------
* **A ring is a hint, never a message.** The event is in Kafka and pausing moves no offset, so
  a lost ring delays an event by at most the glance interval; it never loses one.
* **Ringing never fails a send.** A Redis error while ringing is logged and counted, not raised.
* **Deciding is pure.** :class:`Wakefulness` holds when a consumer may next sleep; it takes the
  clock as an argument, so its rules are tested without Redis or a broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from rea.metrics import Metrics

log = structlog.get_logger()

TICK_S = 1.0
"""The longest between checks of the sleepers (a rebalance may hand out unpaused partitions)."""
MIN_WAIT_S = 0.002
RECONNECT_S = 1.0
GLANCE_TIMEOUT_S = 5.0


@dataclass
class Wakefulness:
    """When one consumer may pause: not before ``awake_s`` after its last ring, handled event,
    new assignment or found backlog. Times are monotonic seconds passed in by the caller."""

    awake_s: float
    awake_until: float = 0.0

    def stir(self, now: float) -> None:
        """A ring for its topics, a handler that started or finished, partitions newly assigned."""
        self.awake_until = max(self.awake_until, now + self.awake_s)

    def may_sleep(self, now: float) -> bool:
        return now >= self.awake_until


def behind(positions: Mapping[Any, int | None], ends: Mapping[Any, int]) -> bool:
    """Whether any partition holds events past the consumer's position (an unknown position
    counts as behind: only a fetch can tell)."""
    return any(position is None or ends.get(tp, 0) > position for tp, position in positions.items())


class Pausable(Protocol):
    """What the doorbell needs of a consumer (aiokafka's ``AIOKafkaConsumer`` is one)."""

    def assignment(self) -> Collection[Any]: ...
    def paused(self) -> Collection[Any]: ...
    def pause(self, *partitions: Any) -> None: ...
    def resume(self, *partitions: Any) -> None: ...
    async def position(self, partition: Any) -> int: ...
    async def end_offsets(self, partitions: list[Any]) -> dict[Any, int]: ...


@dataclass
class Sleeper:
    """One consumer under the doorbell; ``consumer()`` is None until the broker started it."""

    topics: frozenset[str]
    consumer: Callable[[], Pausable | None]
    wakefulness: Wakefulness
    asleep: bool = False
    assignment: frozenset[Any] = frozenset()

    def stir(self, now: float) -> bool:
        """Stay awake a while; True when this woke a sleeping consumer."""
        self.wakefulness.stir(now)
        return self._wake()

    async def has_backlog(self) -> bool:
        """Whether a sleeping consumer's partitions hold events it has not read (asks the broker)."""
        consumer = self.consumer()
        if consumer is None or not self.asleep or not self.assignment:
            return False
        partitions = list(self.assignment)
        positions: dict[Any, int | None] = {}
        for tp in partitions:
            try:
                positions[tp] = await consumer.position(tp)
            except Exception:  # no valid position yet
                positions[tp] = None
        return behind(positions, await consumer.end_offsets(partitions))

    def settle(self, now: float) -> None:
        """Pause the consumer if it may sleep. Newly assigned partitions (at start, after a
        rebalance) come unpaused and may hold a backlog: they get a while awake first."""
        consumer = self.consumer()
        if consumer is None:
            return
        assignment = frozenset(consumer.assignment())
        if assignment != self.assignment:
            self.assignment = assignment
            self.wakefulness.stir(now)
        if not self.wakefulness.may_sleep(now):
            return
        awake = assignment - set(consumer.paused())
        if awake:
            consumer.pause(*awake)
        self.asleep = True

    def _wake(self) -> bool:
        consumer = self.consumer()
        if consumer is None or not self.asleep:
            return False
        self.asleep = False
        paused = consumer.paused()
        if paused:
            consumer.resume(*paused)
        return True


@dataclass
class Doorbell:
    """Rings for published topics and wakes this process's sleeping consumers (module docstring)."""

    redis: Redis
    channel: str
    service: str
    metrics: Metrics
    awake_s: float
    glance_every_s: float
    sleepers: list[Sleeper] = field(default_factory=list)

    @staticmethod
    def channel_for(topic_prefix: str) -> str:
        return f"{topic_prefix}.doorbell"

    async def ring(self, topic: str) -> None:
        if not await _publish(self.redis, self.channel, topic):
            self.metrics.doorbell_failures.labels(service=self.service).inc()

    def watch(self, topics: Collection[str], consumer: Callable[[], Pausable | None]) -> Sleeper:
        """Put a consumer of ``topics`` under the doorbell; the caller stirs it around handlers."""
        sleeper = Sleeper(frozenset(topics), consumer, Wakefulness(self.awake_s))
        self.sleepers.append(sleeper)
        return sleeper

    def stir(self, sleeper: Sleeper, cause: str) -> None:
        if sleeper.stir(time.monotonic()):
            self.metrics.consumer_wakes.labels(service=self.service, cause=cause).inc()

    def heard(self, topic: str) -> None:
        for sleeper in self.sleepers:
            if topic in sleeper.topics:
                self.stir(sleeper, "ring")

    async def run(self) -> None:
        """Listen for rings and put idle consumers to sleep, for the life of the service."""
        if not self.sleepers:
            return
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("doorbell_listen_failed", error=repr(exc))
                for sleeper in self.sleepers:  # rings may be lost while away: stay awake meanwhile
                    self.stir(sleeper, "reconnect")
                await asyncio.sleep(RECONNECT_S)

    def _until_next_decision(self, now: float, next_glance: float) -> float:
        """Sleep until a consumer may fall asleep or the next glance is due, at most a tick, so an
        idle consumer is paused when its while awake ends, not up to a tick later."""
        deadlines = [next_glance, now + TICK_S]
        deadlines += [s.wakefulness.awake_until for s in self.sleepers if not s.asleep and s.consumer()]
        return max(MIN_WAIT_S, min(deadlines) - now)

    async def glance(self) -> None:
        """Wake every sleeping consumer whose partitions hold events nobody rang for. A broker
        that does not answer wakes it too: fetching is the safe side."""
        for sleeper in self.sleepers:
            try:
                found = await asyncio.wait_for(sleeper.has_backlog(), GLANCE_TIMEOUT_S)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("doorbell_glance_failed", error=repr(exc))
                found = True
            if found:
                self.stir(sleeper, "glance")

    async def _listen(self) -> None:
        pubsub = self.redis.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            next_glance = time.monotonic() + self.glance_every_s
            while True:
                wait_s = self._until_next_decision(time.monotonic(), next_glance)
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=wait_s)
                if message is not None:
                    data = message["data"]
                    self.heard(data.decode() if isinstance(data, bytes) else str(data))
                now = time.monotonic()
                if now >= next_glance:
                    await self.glance()
                    now = time.monotonic()
                    next_glance = now + self.glance_every_s
                for sleeper in self.sleepers:
                    sleeper.settle(now)
                self.metrics.consumers_asleep.labels(service=self.service).set(
                    sum(sleeper.asleep for sleeper in self.sleepers)
                )
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()


async def ring(redis_url: str, channel: str, topic: str, options: Mapping[str, Any] | None = None) -> None:
    """Ring once from a process that holds no Redis connection (the CLI's client, a benchmark);
    like :meth:`Doorbell.ring`, a failure is logged, never raised. ``options``: the client's
    credentials and TLS (:func:`rea.security.redis_options`)."""
    redis = Redis.from_url(redis_url, **(options or {}))
    try:
        await _publish(redis, channel, topic)
    finally:
        await redis.aclose()


async def _publish(redis: Redis, channel: str, topic: str) -> bool:
    """Ring; False (logged) when Redis is away: ringing never fails a send."""
    try:
        await redis.publish(channel, topic)
        return True
    except (RedisError, OSError) as exc:
        log.warning("doorbell_ring_failed", topic=topic, error=repr(exc))
        return False
