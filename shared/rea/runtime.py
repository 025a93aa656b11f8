"""What every REA service process shares: connections, the bus, the outbox relay, metrics,
logs and a clean shutdown on SIGTERM. A service supplies only ``wire(runtime)``, which
registers its handlers; the handlers call plain logic that is tested without a broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from redis.asyncio import Redis
from tenacity import AsyncRetrying, stop_after_delay, wait_fixed

from rea.bus import Bus, make_broker
from rea.logs import configure_logging
from rea.metrics import Metrics
from rea.outbox import OutboxRelay
from rea.settings import Settings
from rea.stack import Endpoints, resolve_endpoints
from rea.store import Store
from rea.topics import Topics

log = structlog.get_logger()


async def ensure_topics(bootstrap: str, topics: Topics, partitions: int) -> None:
    """Create REA's topics (idempotent). Retries while the broker is still coming up."""
    async for attempt in AsyncRetrying(stop=stop_after_delay(60), wait=wait_fixed(0.5), reraise=True):
        with attempt:
            admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
            await admin.start()
            try:
                existing = set(await admin.list_topics())
                missing = [NewTopic(t, partitions, 1) for t in topics.all() if t not in existing]
                if missing:
                    with contextlib.suppress(TopicAlreadyExistsError):
                        await admin.create_topics(missing)
            finally:
                await admin.close()


@dataclass
class Runtime:
    settings: Settings
    endpoints: Endpoints
    topics: Topics
    bus: Bus
    store: Store
    redis: Redis
    metrics: Metrics
    relay: OutboxRelay
    name: str
    tasks: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)

    def background(self, task: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``task`` for the life of the service (started after the broker, cancelled at stop)."""
        self.tasks.append(task)


Wire = Callable[[Runtime], Awaitable[None] | None]


async def serve(service: str, wire: Wire, settings: Settings | None = None) -> None:
    """Run one service until SIGTERM/SIGINT."""
    settings = settings or Settings()
    name = settings.service_name if settings.service_name != "rea" else service
    configure_logging(settings.log_level, service=name)
    endpoints = resolve_endpoints(settings)
    topics = Topics(settings.topic_prefix)
    metrics = Metrics()
    await ensure_topics(endpoints.kafka_bootstrap, topics, settings.topic_partitions)
    store = Store.connect(endpoints.mongo_uri, settings.mongo_db, topics)
    await store.ensure_indexes()
    redis = Redis.from_url(endpoints.redis_url)
    broker = make_broker(settings, endpoints.kafka_bootstrap)
    bus = Bus(broker, topics, name, metrics)
    relay = OutboxRelay(
        store, bus.send, settings.relay_interval_s, metrics.outbox_published.labels(service=name).inc
    )
    runtime = Runtime(settings, endpoints, topics, bus, store, redis, metrics, relay, name)
    wired = wire(runtime)
    if wired is not None:
        await wired

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    await broker.start()
    running = [asyncio.create_task(relay.run()), *(asyncio.create_task(task()) for task in runtime.tasks)]
    metrics.serve(settings.metrics_port, settings.metrics_host)
    metrics.up.labels(service=name).set(1)
    log.info("service_started", kafka=endpoints.kafka_bootstrap, metrics_port=settings.metrics_port)
    try:
        await stop.wait()
    finally:
        log.info("service_stopping")
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await broker.stop()
        await redis.aclose()
        await store.close()
