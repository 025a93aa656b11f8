"""The job worker: a member of a Kafka consumer group that runs jobs on this machine.

It runs one job at a time. Redis keeps a heartbeat lease on the job while it runs and a
done-marker once its result is published, so a redelivered job (after a rebalance or a
crash before the offset commit) is neither run twice at once nor rerun once reported.
"""

from __future__ import annotations

import asyncio
import random
import socket

import structlog

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
from rea.leases import JobLeases
from rea.runtime import Runtime
from rea.settings import Settings
from rea_executor.runbook import BACKOFF_MAX_S
from rea_executor.runner import Fault, run_job

log = structlog.get_logger()


def wire(rt: Runtime) -> None:
    leases = JobLeases(rt.redis, rt.settings.topic_prefix)
    worker = f"{socket.gethostname()}/{rt.name}"
    ttl = rt.settings.lease_ttl_s
    prepared: set[tuple[str, str]] = set()  # (workload, dataset) pairs this worker made ready

    async def on_job(event: JobSubmitted) -> None:
        spec = capped(event.payload, rt.settings)
        if await leases.is_done(spec.job_id):
            return
        if not await leases.claim(spec.job_id, worker, ttl):
            # A live worker holds it: it reports, or its lease expires and the executor
            # resubmits the job through the runbook. Either way this copy has nothing to do.
            log.info("job_held_elsewhere", job_id=spec.job_id, holder=await leases.holder(spec.job_id))
            return
        follow = {"campaign_id": event.campaign_id, "correlation_id": event.correlation_id}
        # The heartbeat starts with the claim: publishing `job.started` can take longer than
        # a short lease on a busy broker.
        async with leases.heartbeat(spec.job_id, worker, ttl):
            await rt.bus.publish(
                JobStarted(
                    **follow, payload=JobStartedPayload(job_id=spec.job_id, phase=spec.phase, worker=worker)
                )
            )
            log.info("job_started", job_id=spec.job_id)
            await _backoff(spec)
            dataset = (spec.workload, spec.dataset)
            fault = drawn_fault(rt.settings.inject_faults, spec.job_id)
            output = await asyncio.to_thread(run_job, spec, fault, prepare=dataset not in prepared)
            if output.status == "ok":
                prepared.add(dataset)
        payload = JobFinishedPayload(spec=spec, output=output, worker=worker)
        outcome = JobCompleted if output.status == "ok" else JobFailed
        finished = outcome(**follow, payload=payload)
        if not await leases.mark_done(spec.job_id, encode_event(finished)):
            log.warning("job_declared_lost_meanwhile", job_id=spec.job_id)
            return
        await rt.bus.publish(finished)
        # Released only once the final word is on the broker. On any other way out (an error,
        # a broker that refuses the result) the lease lapses instead, and its expiry is what
        # wakes an executor: it sends the stored result again, or declares the worker lost.
        await leases.release(spec.job_id)
        rt.metrics.jobs.labels(service=rt.name, outcome=finished.type).inc()
        if output.cost:
            rt.metrics.job_cpu_seconds.labels(service=rt.name).inc(output.cost.cpu_seconds)
        log.info(
            "job_finished",
            job_id=spec.job_id,
            status=output.status,
            cpu_seconds=output.cost.cpu_seconds if output.cost else None,
        )

    # A job may hold the consumer as long as its time limit; past that Kafka would rebalance.
    max_job_ms = int(rt.settings.job_timeout_s * 1000) + 120_000
    rt.bus.subscribe(
        [rt.topics.job_queue],
        group="workers",
        handlers={JobSubmitted: on_job},
        max_poll_interval_ms=max_job_ms,
    )


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


async def _backoff(spec: JobSpec) -> None:
    """A retry after a lost worker waits out its backoff (bounded by the runbook's maximum)."""
    if spec.not_before is not None:
        delay = (spec.not_before - utc_now()).total_seconds()
        await asyncio.sleep(min(max(delay, 0.0), BACKOFF_MAX_S))


def capped(spec: JobSpec, settings: Settings) -> JobSpec:
    """The job with this worker's own limits applied: a campaign may ask for less, never more."""
    return spec.model_copy(
        update={
            "timeout_s": min(spec.timeout_s, settings.job_timeout_s),
            "memory_mb": min(spec.memory_mb, settings.job_memory_mb),
        }
    )
