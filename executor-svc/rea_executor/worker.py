"""The local job backend's worker: a member of a Kafka consumer group that runs jobs on this
machine, one at a time, each through the job side (:mod:`rea_executor.jobside`: at most once per
job id, under a lease, reported by itself), forked warm from a zygote when the workload preloads
modules (:mod:`rea_executor.warm`). A presence key on the worker roster tells the executor how
many workers campaigns share and which queue partitions each reads. Jobs for another backend are
left to that backend's launcher.

Stopping the worker (SIGTERM) stops the job in progress and reports it as ``killed`` with the
CPU it used, so the runbook resubmits it and the budget counts what was spent.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Collection
from functools import partial

import structlog
from aiokafka import ConsumerRebalanceListener, TopicPartition

from rea.events import JobSubmitted
from rea.leases import WorkerRoster
from rea.runtime import Runtime
from rea_executor.jobside import JobSide
from rea_executor.warm import WarmStarts

log = structlog.get_logger()

DRAIN_S = 8.0  # within the stack's stop grace: stop the job, report it, then exit


def wire(rt: Runtime) -> None:
    worker = f"{socket.gethostname()}/{rt.name}"
    ttl = rt.settings.lease_ttl_s
    side = JobSide(rt, worker, WarmStarts() if rt.settings.warm_starts else None)
    idle = asyncio.Event()
    idle.set()

    async def on_job(event: JobSubmitted) -> None:
        if event.payload.backend != "local":
            return  # its backend's launcher starts it elsewhere
        idle.clear()
        try:
            await side.take(event)
        finally:
            idle.set()

    async def drain() -> None:
        """Stop the job in progress and let its report go out before the service stops."""
        side.stop_all("killed", f"its worker {worker} stopped")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(idle.wait(), DRAIN_S)
        if side.warm is not None:
            await asyncio.to_thread(side.warm.close)

    roster = WorkerRoster(rt.redis, rt.settings.topic_prefix)
    reads = QueuePartitions(rt.topics.job_queue, partial(roster.record, worker, ttl))
    # A job may hold the consumer as long as its time limit; past that Kafka would rebalance.
    max_job_ms = int(rt.settings.job_timeout_s * 1000) + 120_000
    rt.bus.subscribe(
        [rt.topics.job_queue],
        group="workers",
        handlers={JobSubmitted: on_job},
        max_poll_interval_ms=max_job_ms,
        listener=reads,
    )
    rt.on_stop(drain)
    rt.background(partial(roster.attend, worker, ttl, reads.partitions))


class QueuePartitions(ConsumerRebalanceListener):
    """The job queue partitions the group gave this worker, told to the roster as soon as they
    change, so the executor sends jobs to a partition this worker reads when it is the least
    busy."""

    def __init__(self, topic: str, tell: Callable[[Collection[int]], Awaitable[None]]) -> None:
        self.topic = topic
        self.tell = tell
        self.held: frozenset[int] = frozenset()

    def partitions(self) -> frozenset[int]:
        return self.held

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        self.held = self.held - {tp.partition for tp in revoked if tp.topic == self.topic}

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        self.held = frozenset(tp.partition for tp in assigned if tp.topic == self.topic)
        await self.tell(self.held)
