"""The job worker: a member of a Kafka consumer group that runs jobs on this machine.

It runs one job at a time (forked warm from a zygote when the workload preloads modules, see
:mod:`rea_executor.warm`), and each job id at most once: the job ledger in MongoDB
(:mod:`rea.ledger`) records the claim, the CPU used and the final event, so a redelivered
or replayed job — after a rebalance, a crash, a broker that lost its log or a whole-stack
restart — is never trained again; if it had finished, its stored result is sent again
instead. A Redis lease with a heartbeat tells the executor quickly when this worker is gone,
and a presence key on the worker roster tells it how many workers campaigns share.

Stopping the worker (SIGTERM) stops the job in progress and reports it as ``killed`` with the
CPU it used, so the runbook resubmits it and the budget counts what was spent. A campaign
cancelled while its job runs is seen on the next heartbeat and the job is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections.abc import Awaitable, Callable, Collection
from functools import partial

import structlog
from aiokafka import ConsumerRebalanceListener, TopicPartition

from rea.events import (
    JobCompleted,
    JobFailed,
    JobFinishedPayload,
    JobSpec,
    JobStarted,
    JobStartedPayload,
    JobSubmitted,
    encode_event,
    utc_now,
)
from rea.leases import JobLeases, WorkerRoster
from rea.ledger import RunStatus
from rea.runtime import Runtime
from rea.settings import Settings
from rea.workloads import JobCost, JobError, JobOutput
from rea_executor.runbook import BACKOFF_MAX_S
from rea_executor.runner import Fault, JobWatch, run_job
from rea_executor.warm import WarmStarts

log = structlog.get_logger()

DRAIN_S = 8.0  # within the stack's stop grace: stop the job, report it, then exit


def wire(rt: Runtime) -> None:
    leases = JobLeases(rt.redis, rt.settings.topic_prefix)
    ledger = rt.store.ledger
    worker = f"{socket.gethostname()}/{rt.name}"
    ttl = rt.settings.lease_ttl_s
    prepared: set[tuple[str, str]] = set()  # (workload, dataset) pairs this worker made ready
    current: dict[str, JobWatch] = {}  # the job in progress, so a stop request can reach it
    idle = asyncio.Event()
    idle.set()
    warm = WarmStarts() if rt.settings.warm_starts else None

    async def on_job(event: JobSubmitted) -> None:
        spec = capped(event.payload, rt.settings)
        run = await ledger.get(spec.job_id)
        if run is not None:
            if run.final is not None:
                # It finished: this copy is a redelivery or a replay. Its result may be what the
                # broker lost, so send that again (consumers dedup it); never train it again.
                await rt.bus.send(rt.topics.job_events, spec.campaign_id.encode(), run.final)
                log.info("job_done_before", job_id=spec.job_id)
            else:
                log.info("job_claimed_before", job_id=spec.job_id, holder=run.worker)
            return
        if not await leases.claim(spec.job_id, worker, ttl):
            # A live worker holds it: it reports, or its lease expires and the executor
            # resubmits the job through the runbook. Either way this copy has nothing to do.
            log.info("job_held_elsewhere", job_id=spec.job_id, holder=await leases.holder(spec.job_id))
            return
        if not await ledger.claim(spec.job_id, spec.campaign_id, spec.phase, worker):
            await leases.release(spec.job_id)
            log.info("job_claimed_before", job_id=spec.job_id)
            return
        idle.clear()
        try:
            await run_claimed(event, spec)
        finally:
            idle.set()

    async def run_claimed(event: JobSubmitted, spec: JobSpec) -> None:
        follow = {"campaign_id": event.campaign_id, "correlation_id": event.correlation_id}
        watch = current[spec.job_id] = JobWatch()

        async def sample() -> None:
            running = watch.pid is not None and not watch.stopping.is_set()
            if running and await ledger.sample(spec.job_id, watch.cpu_seconds):
                watch.stop("cancelled", "stopped: its campaign was cancelled, or it was declared lost")

        try:
            # The heartbeat starts with the claim: publishing `job.started` can take longer than
            # a short lease on a busy broker.
            async with leases.heartbeat(spec.job_id, worker, ttl, on_beat=sample):
                await rt.bus.publish(
                    JobStarted(
                        **follow,
                        payload=JobStartedPayload(job_id=spec.job_id, phase=spec.phase, worker=worker),
                    )
                )
                await _backoff(spec, watch)
                output = await execute(spec, watch)
        finally:
            current.pop(spec.job_id, None)
        payload = JobFinishedPayload(spec=spec, output=output, worker=worker)
        outcome = JobCompleted if output.status == "ok" else JobFailed
        finished = outcome(**follow, payload=payload)
        status: RunStatus = "completed" if output.status == "ok" else "failed"
        if output.error is not None and output.error.kind == "cancelled":
            status = "cancelled"
        cpu = output.cost.cpu_seconds if output.cost else None
        if not await ledger.finish(spec.job_id, encode_event(finished), status, cpu, watch.log):
            log.warning("job_declared_lost_meanwhile", job_id=spec.job_id, cpu_seconds=cpu)
            return
        await rt.bus.publish(finished)
        # Released only once the final word is on the broker. On any other way out (an error,
        # a broker that refuses the result) the lease lapses instead, and its expiry is what
        # wakes an executor: it sends the stored result again, or declares the worker lost.
        await leases.release(spec.job_id)
        rt.metrics.jobs.labels(service=rt.name, outcome=finished.type).inc()
        if output.cost:
            rt.metrics.job_cpu_seconds.labels(service=rt.name).inc(output.cost.cpu_seconds)
        log.info("job_finished", job_id=spec.job_id, status=output.status, cpu_seconds=cpu)

    async def execute(spec: JobSpec, watch: JobWatch) -> JobOutput:
        """Run the job's process, recording in the ledger that it started and, at the end, what
        the OS measured (``job_process_started`` / ``job_process_ended`` log lines too)."""
        if watch.stopping.is_set():
            return JobOutput(
                status="failed",
                error=JobError(kind=watch.stop_reason, message=f"{watch.stop_message} before it started"),
                cost=JobCost(cpu_seconds=0.0, wall_seconds=0.0, peak_rss_mb=0.0),
            )
        dataset = (spec.workload, spec.dataset)
        fault = drawn_fault(rt.settings.inject_faults, spec.job_id)
        running = asyncio.create_task(
            asyncio.to_thread(run_job, spec, fault, prepare=dataset not in prepared, watch=watch, warm=warm)
        )
        while watch.pid is None and not running.done():
            await asyncio.sleep(0.05)
        if watch.pid is not None:
            await ledger.started(spec.job_id, watch.pid)
            log.info("job_process_started", job_id=spec.job_id, pid=watch.pid)
        output = await running
        if output.status == "ok":
            prepared.add(dataset)
        if watch.pid is not None:
            cpu = output.cost.cpu_seconds if output.cost else None
            log.info("job_process_ended", job_id=spec.job_id, pid=watch.pid, cpu_seconds=cpu)
        return output

    async def drain() -> None:
        """Stop the job in progress and let its report go out before the service stops."""
        for watch in current.values():
            watch.stop("killed", f"its worker {worker} stopped")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(idle.wait(), DRAIN_S)
        if warm is not None:
            await asyncio.to_thread(warm.close)

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


def drawn_fault(chances: dict[str, float], job_id: str) -> Fault | None:
    """A fault to inject into this job, drawn deterministically from its id (drills only)."""
    if not chances:
        return None
    draw = random.Random(job_id).random()
    for fault in ("oom", "nan", "kill"):
        draw -= chances.get(fault, 0.0)
        if draw < 0:
            return fault
    return None


async def _backoff(spec: JobSpec, watch: JobWatch) -> None:
    """A retry after a lost worker waits out its backoff (bounded by the runbook's maximum),
    unless the worker is asked to stop meanwhile."""
    if spec.not_before is None:
        return
    delay = min(max((spec.not_before - utc_now()).total_seconds(), 0.0), BACKOFF_MAX_S)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.to_thread(watch.stopping.wait, delay), delay + 1)


def capped(spec: JobSpec, settings: Settings) -> JobSpec:
    """The job with this worker's own limits applied: a campaign may ask for less, never more."""
    return spec.model_copy(
        update={
            "timeout_s": min(spec.timeout_s, settings.job_timeout_s),
            "memory_mb": min(spec.memory_mb, settings.job_memory_mb),
        }
    )
