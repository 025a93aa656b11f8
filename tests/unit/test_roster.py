"""The worker roster on a real Redis: who is alive and which job queue partitions each reads."""

from __future__ import annotations

import asyncio
import contextlib

from redis.asyncio import Redis

from rea.leases import WorkerRoster
from rea.settings import Settings


async def test_workers_say_which_partitions_they_read_and_leave_the_roster_when_they_stop(
    settings: Settings,
) -> None:
    redis = Redis.from_url(str(settings.redis_url))
    roster = WorkerRoster(redis, settings.topic_prefix)
    try:
        await roster.record("host/worker-0", 30, {2, 0})
        attending = asyncio.create_task(roster.attend("host/worker-1", 30, lambda: frozenset()))
        for _ in range(50):
            if len(await roster.workers()) == 2:
                break
            await asyncio.sleep(0.05)
        assert await roster.workers() == {"host/worker-0": [0, 2], "host/worker-1": []}
        attending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await attending
        assert await roster.workers() == {"host/worker-0": [0, 2]}
    finally:
        await redis.aclose()
