"""Job leases on the real embedded Redis: the heartbeat keeps a working job's lease alive."""

from __future__ import annotations

import asyncio

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
