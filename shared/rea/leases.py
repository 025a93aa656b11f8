"""Redis helpers: job leases with heartbeats — how the executor learns, quickly, that a
worker is gone.

Contract: a lease is a key with a TTL that its holder refreshes (the heartbeat). If the
holder dies, the key expires after ``ttl`` and Redis pushes a keyspace notification (expiry
is pushed, not polled). Redis is a liveness aid, never the source of truth: whether a job ran
and what it said lives in MongoDB (:mod:`rea.ledger`), which survives a restart that an
embedded Redis without persistence does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Collection

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

log = structlog.get_logger()


_CLAIM_SCRIPT = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


class JobLeases:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    def _claim_key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:lease"

    async def claim(self, job_id: str, holder: str, ttl_s: float) -> bool:
        """Take the job if nobody else holds a live claim on it.

        A holder gets back a claim it already holds: when its first attempt was cut short after
        the lease was set (the database dropped the connection next), its retry must not find
        the job "held elsewhere" by itself and drop it, with nobody left to run it."""
        taken = await self.redis.eval(_CLAIM_SCRIPT, 1, self._claim_key(job_id), holder, int(ttl_s * 1000))
        return bool(taken)

    async def holder(self, job_id: str) -> str | None:
        value = await self.redis.get(self._claim_key(job_id))
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    async def release(self, job_id: str) -> None:
        await self.redis.delete(self._claim_key(job_id))

    @contextlib.asynccontextmanager
    async def heartbeat(
        self, job_id: str, holder: str, ttl_s: float, on_beat: Callable[[], Awaitable[None]] | None = None
    ) -> AsyncIterator[None]:
        """Refresh the claim every ttl/3 while the body runs, calling ``on_beat`` after each.

        ``on_beat`` runs beside the refresh, never in its way: a callback slowed by a busy
        database must not let the lease lapse and get a working job declared lost. A beat
        whose previous callback is still running starts no second one. Nothing but the body's
        end stops the beating: a refresh that fails, whatever the error, or that has not
        answered within ttl/3 (a stalled connection) is logged and the next one is tried."""

        async def guarded() -> None:
            assert on_beat is not None
            try:
                await on_beat()
            except Exception:  # a missed sample must not stop the heartbeat
                log.warning("heartbeat_callback_failed", job_id=job_id, exc_info=True)

        async def beat() -> None:
            callback: asyncio.Task[None] | None = None
            try:
                while True:
                    await asyncio.sleep(ttl_s / 3)
                    try:
                        async with asyncio.timeout(ttl_s / 3):
                            await self.redis.set(self._claim_key(job_id), holder, px=int(ttl_s * 1000))
                    except Exception:  # keep beating: one missed refresh need not lose the job
                        log.warning("heartbeat_failed", job_id=job_id, exc_info=True)
                    if on_beat is not None and (callback is None or callback.done()):
                        callback = asyncio.create_task(guarded())
            finally:
                if callback is not None:
                    callback.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await callback

        task = asyncio.create_task(beat())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def expired(self, on_subscribed: Callable[[], Awaitable[None]]) -> AsyncIterator[str]:
        """Yield the id of each job whose lease expires, from Redis keyspace notifications.

        ``on_subscribed`` runs once the subscription is live, so a caller can sweep for
        expiries it missed while it was not listening without a gap in between.
        """
        await self._enable_expiry_notifications()
        db = self.redis.connection_pool.connection_kwargs.get("db", 0)
        pattern = re.compile(rf"{re.escape(self.prefix)}:job:(.+):lease")
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(f"__keyevent@{db}__:expired")
        try:
            await on_subscribed()
            async for message in pubsub.listen():
                if message["type"] != "message":
                    continue
                data = message["data"]
                key = data.decode() if isinstance(data, bytes) else str(data)
                match = pattern.fullmatch(key)
                if match:
                    yield match.group(1)
        finally:
            await pubsub.aclose()

    async def _enable_expiry_notifications(self) -> None:
        """Add expired-key events to the server's notifications, keeping what was there."""
        try:
            current = (await self.redis.config_get("notify-keyspace-events")).get(
                "notify-keyspace-events", ""
            )
            flags = current.decode() if isinstance(current, bytes) else str(current)
            if "A" in flags or ("E" in flags and "x" in flags):
                return
            await self.redis.config_set("notify-keyspace-events", "".join(sorted(set(flags + "Ex"))))
        except ResponseError as exc:
            log.warning(
                "cannot_enable_keyspace_notifications",
                error=str(exc),
                hint="set notify-keyspace-events to include 'Ex' on the Redis server",
            )


class WorkerRoster:
    """Which job workers are alive and which job queue partitions each reads: each refreshes a
    presence key with a TTL, busy or idle, holding its partitions, and the executor counts the
    workers to share them between campaigns and sends a job to a partition of the least busy
    one. Like a lease, only a liveness aid: a worker that dies drops out within ``ttl``, and a
    job sent to its partitions meanwhile is read by whoever the group gives them to."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    def _key(self, worker: str) -> str:
        return f"{self.prefix}:worker:{worker}"

    async def attend(
        self, worker: str, ttl_s: float, partitions: Callable[[], Collection[int]] = frozenset
    ) -> None:
        """Keep ``worker`` on the roster with the partitions it reads now, until cancelled, then
        take it off."""
        try:
            while True:
                await self.record(worker, ttl_s, partitions())
                await asyncio.sleep(ttl_s / 3)
        finally:
            with contextlib.suppress(RedisError):
                await self.redis.delete(self._key(worker))

    async def record(self, worker: str, ttl_s: float, partitions: Collection[int]) -> None:
        """Say that ``worker`` is alive and reads ``partitions`` (also at once on a rebalance)."""
        try:
            await self.redis.set(self._key(worker), json.dumps(sorted(partitions)), px=int(ttl_s * 1000))
        except RedisError:
            log.warning("roster_refresh_failed", worker=worker, exc_info=True)

    async def workers(self) -> dict[str, list[int]]:
        """Every live worker and the job queue partitions it reads (none known yet: empty)."""
        keys = [key async for key in self.redis.scan_iter(match=self._key("*"), count=1000)]
        values = await self.redis.mget(keys) if keys else []
        prefix = self._key("")
        found: dict[str, list[int]] = {}
        for key, value in zip(keys, values, strict=True):
            if value is None:
                continue  # expired between the scan and the read
            name = (key.decode() if isinstance(key, bytes) else str(key)).removeprefix(prefix)
            found[name] = _partitions(value)
        return found


def _partitions(value: bytes | str) -> list[int]:
    """A roster entry's partitions; an entry that holds none (or an older worker's "1") is []."""
    try:
        parsed = json.loads(value)
    except ValueError:
        return []
    return [int(p) for p in parsed] if isinstance(parsed, list) else []
