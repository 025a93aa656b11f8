"""Job leases on the real embedded Redis: the heartbeat keeps a working job's lease alive."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from redis.asyncio import Redis

from rea.leases import JobLeases
from rea.settings import Settings


async def test_a_slow_heartbeat_callback_does_not_let_the_lease_lapse(settings: Settings) -> None:
    redis = Redis.from_url(str(settings.redis_url))
    leases = JobLeases(redis, settings.topic_prefix)
    ttl = 0.6
    calls = 0

    async def slow_sample() -> None:  # a database write stuck behind a busy server
        nonlocal calls
        calls += 1
        await asyncio.sleep(10 * ttl)

    try:
        assert await leases.claim("job-1", "worker-a", ttl)
        async with leases.heartbeat("job-1", "worker-a", ttl, on_beat=slow_sample):
            await asyncio.sleep(4 * ttl)
            assert await leases.holder("job-1") == "worker-a"
        assert calls == 1  # a beat whose callback still runs starts no second one
        await asyncio.sleep(1.5 * ttl)
        assert await leases.holder("job-1") is None  # the heartbeat stopped with the body
    finally:
        await redis.aclose()


class StallingThenFailing:
    """The real Redis, except that the first refresh never answers (a stalled connection) and
    the second fails with an error that is not Redis's."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.sets = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.redis, name)

    async def set(self, *args: Any, **kwargs: Any) -> Any:
        self.sets += 1
        if self.sets == 1:
            await asyncio.Event().wait()
        if self.sets == 2:
            raise OSError("connection reset by peer")
        return await self.redis.set(*args, **kwargs)


async def test_the_heartbeat_outlives_a_refresh_that_stalls_and_one_that_fails(settings: Settings) -> None:
    redis = Redis.from_url(str(settings.redis_url))
    faulty = StallingThenFailing(redis)
    leases = JobLeases(cast(Redis, faulty), settings.topic_prefix)
    ttl = 0.6
    try:
        assert await leases.claim("job-2", "worker-a", ttl)
        async with leases.heartbeat("job-2", "worker-a", ttl):
            await asyncio.sleep(5 * ttl)
            assert faulty.sets >= 4  # the stalled refresh was given up on, the failed one survived
            assert await leases.holder("job-2") == "worker-a"
    finally:
        await redis.aclose()
