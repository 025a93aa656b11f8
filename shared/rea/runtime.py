"""What every REA service process shares: connections, the bus, the outbox relay, metrics,
logs and a clean shutdown on SIGTERM. A service supplies only ``wire(runtime)``, which
registers its handlers; the handlers call plain logic that is tested without a broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from faststream.kafka import KafkaBroker
from redis.asyncio import Redis
from tenacity import AsyncRetrying, retry_if_exception, retry_if_exception_type, stop_after_delay, wait_fixed

from rea.bus import INFRA_ERRORS, Bus, make_broker
from rea.doorbell import Doorbell
from rea.endpoints import Endpoints, resolve_endpoints
from rea.events import EventLimits
from rea.logs import configure_logging
from rea.metrics import Metrics
from rea.outbox import OutboxRelay
from rea.redaction import redact
from rea.security import (
    AuthenticationFailed,
    auth_failure,
    is_auth_error,
    kafka_options,
    mongo_options,
    redis_options,
)
from rea.settings import Settings
from rea.store import Store
from rea.topics import Topics

log = structlog.get_logger()

Task = Callable[[], Coroutine[Any, Any, None]]


def _not_auth(exc: BaseException) -> bool:
    return not is_auth_error(exc)


async def ensure_topics(
    bootstrap: str, topics: Topics, partitions: int, kafka: Mapping[str, Any] | None = None
) -> str:
    """Create REA's topics (idempotent) and return the broker's cluster id, so a caller knows
    which broker's log it started on. Retries while the broker is still coming up, never on a
    rejected credential. ``kafka``: the client's security options (:func:`rea.security.kafka_options`)."""
    async for attempt in AsyncRetrying(
        stop=stop_after_delay(60), wait=wait_fixed(0.5), retry=retry_if_exception(_not_auth), reraise=True
    ):
        with attempt:
            admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(kafka or {}))
            await admin.start()
            try:
                existing = set(await admin.list_topics())
                missing = [NewTopic(t, partitions, 1) for t in topics.all() if t not in existing]
                if missing:
                    with contextlib.suppress(TopicAlreadyExistsError):
                        await admin.create_topics(missing)
                cluster = await admin.describe_cluster()
                return str(cluster["cluster_id"])
            finally:
                await admin.close()
    raise AssertionError("unreachable: AsyncRetrying re-raises the last error")


async def start_broker(broker: KafkaBroker) -> None:
    """Connect and start the consumers, waiting out a broker that went away after the topics
    were ensured (restarted under a starting service): the service waits, it does not exit."""
    async for attempt in AsyncRetrying(
        stop=stop_after_delay(60),
        wait=wait_fixed(0.5),
        retry=retry_if_exception(lambda exc: isinstance(exc, KafkaError) and _not_auth(exc)),
        reraise=True,
    ):
        with attempt:
            try:
                await broker.start()
            except KafkaError:
                with contextlib.suppress(Exception):
                    await broker.stop()  # nothing half-started is started twice
                log.warning("broker_start_retrying")
                raise


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
    service: str
    tasks: list[Task] = field(default_factory=list)
    reconcilers: list[Task] = field(default_factory=list)
    stoppers: list[Task] = field(default_factory=list)

    async def close(self) -> None:
        await self.bus.broker.stop()
        await self.redis.aclose()
        await self.store.close()

    def background(self, task: Task) -> None:
        """Run ``task`` for the life of the service (started after the broker, cancelled at stop)."""
        self.tasks.append(task)

    def on_stop(self, task: Task) -> None:
        """Run ``task`` when the service is asked to stop, while the broker and the database are
        still connected (a worker stops its job and reports it)."""
        self.stoppers.append(task)

    def on_reconcile(self, task: Task) -> None:
        """Run ``task`` at start-up and whenever the broker is found to have lost its log."""
        self.reconcilers.append(task)

    async def republish_outbox(self) -> None:
        """The default reconciliation: send this service's events of active campaigns again."""
        count = await self.store.republish_active(self.service)
        if count:
            log.warning("outbox_republished", entries=count)
        self.relay.kick()

    async def reconcile(self) -> None:
        for task in self.reconcilers:
            await task()

    async def watch_broker(self, started_with: str) -> None:
        """Notice a broker that lost its log — a new cluster id (an embedded broker restarted with
        in-memory storage) or missing topics — then re-create the topics, rewind this process's
        consumers and reconcile. A broker that was unreachable for a while and comes back with its
        log is reconciled too: a send that failed meanwhile (a resent result, an outbox entry)
        gets another chance, and every reconciler is safe to repeat.

        ``started_with`` is the cluster id of the broker this process created its topics on, so a
        restart during start-up is caught too. The id is also kept in MongoDB per service, so a
        service that was down while the broker restarted notices at start-up.
        """
        marker = f"broker:{self.service}"
        seen = await self.store.db["meta"].find_one({"_id": marker})
        stored = None if seen is None else str(seen.get("cluster_id"))
        known = stored or started_with
        unreachable = False
        kafka = kafka_options(self.settings)
        probe = BrokerProbe(self.endpoints.kafka_bootstrap, self.topics, kafka)
        try:
            while True:
                try:
                    cluster_id, missing = await probe.facts()
                    if missing or cluster_id != known:
                        log.warning("broker_log_lost", cluster_id=cluster_id, missing_topics=len(missing))
                        await ensure_topics(
                            self.endpoints.kafka_bootstrap, self.topics, self.settings.topic_partitions, kafka
                        )
                        await self.bus.rewind()
                        await self.reconcile()
                    elif unreachable:
                        log.warning("broker_back")
                        await self.reconcile()
                    unreachable = False
                    if cluster_id != stored:
                        await self.store.db["meta"].update_one(
                            {"_id": marker}, {"$set": {"cluster_id": cluster_id}}, upsert=True
                        )
                        stored = cluster_id
                    known = cluster_id
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    unreachable = True
                    log.warning("broker_check_failed", error=repr(exc))
                await asyncio.sleep(self.settings.broker_check_interval_s)
        finally:
            await probe.close()


class BrokerProbe:
    """Asks the broker for its cluster id and which of our topics it lacks, over one admin
    connection kept between checks (a new client per check cost an idle service and the broker
    more than everything else it did); any failure drops the connection for the next check."""

    def __init__(
        self, bootstrap: str, topics: Topics, kafka: Mapping[str, Any] | None = None, timeout_s: float = 10.0
    ) -> None:
        self.bootstrap, self.topics, self.timeout_s = bootstrap, topics, timeout_s
        self.kafka = dict(kafka or {})
        self.admin: AIOKafkaAdminClient | None = None

    async def facts(self) -> tuple[str, list[str]]:
        try:
            return await asyncio.wait_for(self._ask(), self.timeout_s)  # a dying broker can hang
        except BaseException:
            await self.close()
            raise

    async def _ask(self) -> tuple[str, list[str]]:
        if self.admin is None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, **self.kafka)
            await admin.start()
            self.admin = admin
        cluster = await self.admin.describe_cluster()
        existing = set(await self.admin.list_topics())
        return str(cluster["cluster_id"]), [t for t in self.topics.all() if t not in existing]

    async def close(self) -> None:
        admin, self.admin = self.admin, None
        if admin is not None:
            with contextlib.suppress(Exception):
                await admin.close()


Wire = Callable[["Runtime"], Awaitable[None] | None]


async def reconcile_at_start(runtime: Runtime) -> None:
    """Reconcile once the broker is up, waiting out a broker or database that blinks meanwhile
    (a broker restarted under a starting service answered a resent result with an error, and
    the service exited): every reconciler is safe to repeat."""
    async for attempt in AsyncRetrying(
        stop=stop_after_delay(60),
        wait=wait_fixed(1),
        retry=retry_if_exception_type(INFRA_ERRORS) & retry_if_exception(_not_auth),
        reraise=True,
    ):
        with attempt:
            if attempt.retry_state.attempt_number > 1:
                log.warning("reconcile_retrying", attempt=attempt.retry_state.attempt_number)
            await runtime.reconcile()


HEARTBEAT_S = 5.0


async def _beat(metrics: Metrics) -> None:
    """The event loop's heartbeat, which ``/healthz`` reads: a loop stuck in a handler stops it."""
    while True:
        metrics.health.beat()
        await asyncio.sleep(HEARTBEAT_S)


def freeze_startup_objects() -> None:
    """Keep what start-up made (modules, schemas, clients) out of the cyclic garbage collector.

    Those objects live as long as the process, yet every full collection walked all of them
    again: measured in the executor, 1-2% of handled events stalled 40-57 ms on one. After
    ``gc.freeze`` a full collection sees only what was made since (about 1 ms). Start-up
    garbage is collected first, so nothing dead is frozen.
    """
    gc.collect()
    gc.freeze()


async def _check_credentials(store: Store, redis: Redis) -> None:
    """Fail at once, and clearly, when MongoDB or Redis refuses our credentials, rather than in
    the first handler (or never: the doorbell waits out a Redis it cannot reach). Any other
    MongoDB error is raised as it was before this check; any other Redis error is left to the
    doorbell, which waits it out."""
    try:
        await store.db.list_collection_names()
    except Exception as exc:
        failure = auth_failure(exc)
        if failure is not None:
            raise failure from None
        raise
    try:
        await redis.ping()
    except Exception as exc:
        failure = auth_failure(exc)
        if failure is not None:
            raise failure from None
        log.warning("redis_unreachable_at_start", error=redact(repr(exc)))


async def connect(service: str, settings: Settings, name: str | None = None) -> tuple[Runtime, str]:
    """Connect to the broker, the database and Redis as ``service`` and return the runtime and
    the broker's cluster id. The broker's consumers and producer start with :func:`start_broker`
    once the handlers are wired."""
    name = name or (settings.service_name if settings.service_name != "rea" else service)
    endpoints = resolve_endpoints(settings)
    topics = Topics(settings.topic_prefix)
    metrics = Metrics()
    store = Store.connect(endpoints.mongo_uri, settings.mongo_db, topics, mongo_options(settings, endpoints))
    redis = Redis.from_url(endpoints.redis_url, **redis_options(settings, endpoints))
    try:
        await _check_credentials(store, redis)
        cluster_id = await ensure_topics(
            endpoints.kafka_bootstrap, topics, settings.topic_partitions, kafka_options(settings)
        )
        await store.ensure_indexes()
    except BaseException:
        await redis.aclose()
        await store.close()
        raise
    broker = make_broker(settings, endpoints.kafka_bootstrap)
    doorbell = (
        Doorbell(
            redis,
            Doorbell.channel_for(settings.topic_prefix),
            name,
            metrics,
            awake_s=settings.kafka_awake_s,
            glance_every_s=settings.kafka_idle_poll_s,
        )
        if settings.kafka_doorbell
        else None
    )
    limits = EventLimits(
        max_bytes=settings.max_event_kib << 10, max_person_bytes=settings.max_person_event_kib << 10
    )
    bus = Bus(broker, topics, name, metrics, settings.kafka_fetch_max_wait_ms, doorbell, limits)
    relay = OutboxRelay(
        store, service, bus.send, settings.relay_interval_s, metrics.outbox_published.labels(service=name).inc
    )
    return Runtime(settings, endpoints, topics, bus, store, redis, metrics, relay, name, service), cluster_id


SERVICES: dict[str, str] = {
    "planner": "rea_planner.service",
    "hypothesis": "rea_hypothesis.service",
    "executor": "rea_executor.service",
    "logger": "rea_logger.service",
    "worker": "rea_executor.worker",
    "launcher": "rea_executor.launcher",
    "kernel": "rea_kernel.service",
}
"""Every service by the name `rea service NAME`, the embedded stack, Docker and Kubernetes start
it by, and the module whose ``wire`` builds it."""


def run_service(name: str, settings: Settings | None = None) -> None:
    """Build the service named ``name`` (a key of :data:`SERVICES`) and serve it until stopped."""
    wire: Wire = importlib.import_module(SERVICES[name]).wire
    try:
        asyncio.run(serve(name, wire, settings))
    except AuthenticationFailed as exc:
        sys.exit(f"{name}: {exc}")


async def serve(service: str, wire: Wire, settings: Settings | None = None) -> None:
    """Run one service until SIGTERM/SIGINT."""
    settings = settings or Settings()
    name = settings.service_name if settings.service_name != "rea" else service
    configure_logging(settings.log_level, service=name)
    try:
        runtime, cluster_id = await connect(service, settings, name)
    except AuthenticationFailed as exc:
        log.error("credentials_rejected", part=exc.part, error=str(exc))
        raise
    wired = wire(runtime)
    if wired is not None:
        await wired

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    await start_broker(runtime.bus.broker)
    await reconcile_at_start(runtime)
    tasks: list[Task] = [runtime.relay.run, partial(runtime.watch_broker, cluster_id), *runtime.tasks]
    running = [asyncio.create_task(task()) for task in tasks]
    running.append(asyncio.create_task(_beat(runtime.metrics)))
    if runtime.bus.doorbell is not None:
        running.append(asyncio.create_task(runtime.bus.doorbell.run()))
    runtime.metrics.serve(settings.metrics_port, settings.metrics_host)
    runtime.metrics.up.labels(service=name).set(1)
    runtime.metrics.health.ready = True
    freeze_startup_objects()
    log.info("service_started", kafka=runtime.endpoints.kafka_bootstrap, metrics_port=settings.metrics_port)
    try:
        await stop.wait()
    finally:
        runtime.metrics.health.ready = False
        log.info("service_stopping")
        for stopper in runtime.stoppers:
            try:
                await stopper()
            except Exception:
                log.exception("stop_hook_failed")
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await runtime.close()
