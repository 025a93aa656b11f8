"""Redis helpers: job claims with heartbeats, and done-markers.

Contract: a claim is a key with a TTL that its holder refreshes (the heartbeat). If the
holder dies, the key expires after ``ttl`` and another worker may claim the job. A done
marker records that a job's result was published, so a redelivered job is not rerun.
Redis is a coordination aid, never the source of truth: results live in MongoDB.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from redis.asyncio import Redis

DONE_TTL_S = 7 * 24 * 3600


class JobLeases:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    def _claim_key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:lease"

    def _done_key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:done"

    async def claim(self, job_id: str, holder: str, ttl_s: float) -> bool:
        """Take the job if nobody holds a live claim on it."""
        return bool(await self.redis.set(self._claim_key(job_id), holder, nx=True, px=int(ttl_s * 1000)))

    async def holder(self, job_id: str) -> str | None:
        value = await self.redis.get(self._claim_key(job_id))
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    async def release(self, job_id: str) -> None:
        await self.redis.delete(self._claim_key(job_id))

    async def mark_done(self, job_id: str) -> None:
        await self.redis.set(self._done_key(job_id), b"1", ex=DONE_TTL_S)

    async def is_done(self, job_id: str) -> bool:
        return bool(await self.redis.exists(self._done_key(job_id)))

    @contextlib.asynccontextmanager
    async def heartbeat(self, job_id: str, holder: str, ttl_s: float) -> AsyncIterator[None]:
        """Refresh the claim every ttl/3 while the body runs."""

        async def beat() -> None:
            while True:
                await asyncio.sleep(ttl_s / 3)
                await self.redis.set(self._claim_key(job_id), holder, px=int(ttl_s * 1000))

        task = asyncio.create_task(beat())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
