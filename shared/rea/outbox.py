"""The outbox relay: publishes what services wrote to the outbox, in order, and marks it.

Services never publish state-changing events directly; they write them to the outbox in
the same transaction as their state (:meth:`rea.store.Store.apply`) and kick the relay.
The relay also sweeps on a timer and at start-up, so entries left by a crash (committed,
never published) go out as soon as the service is back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from rea.store import Store

Send = Callable[[str, bytes, bytes, int | None], Awaitable[None]]

log = structlog.get_logger()

RETRY_S = 1.0


class OutboxRelay:
    def __init__(
        self, store: Store, producer: str, send: Send, interval_s: float, on_published: Callable[[int], None]
    ) -> None:
        self.store = store
        self.producer = producer
        self.send = send
        self.interval_s = interval_s
        self.on_published = on_published
        self._wake = asyncio.Event()

    def kick(self) -> None:
        """Ask for a flush now (called right after a decision commits)."""
        self._wake.set()

    async def flush(self) -> int:
        """Publish every pending entry in write order; returns how many went out."""
        sent = 0
        while True:
            pending = await self.store.pending_outbox(self.producer)
            if not pending:
                return sent
            for entry in pending:
                key, value = bytes(entry["key"]), bytes(entry["value"])
                await self.send(entry["topic"], key, value, entry.get("partition"))
                await self.store.mark_published([entry["_id"]])
                sent += 1
                self.on_published(1)

    async def run(self) -> None:
        while True:
            wait_s = self.interval_s
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox_flush_failed")
                wait_s = min(wait_s, RETRY_S)  # a failed send goes out again soon, not a sweep later
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait_s)
            self._wake.clear()
