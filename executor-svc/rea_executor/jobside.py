"""The job side: what runs next to a workload's entrypoint, whatever the backend.

It trains each job id at most once: the job ledger in MongoDB (:mod:`rea.ledger`) records the
claim, the CPU used and the final event, so a redelivered or replayed job — after a rebalance,
a crash, a broker that lost its log or a whole-stack restart — is never trained again; if it
had finished, its stored result is sent again instead. A Redis lease with a heartbeat tells the
executor quickly when the job side is gone (its worker died, or a cluster killed it). A
campaign cancelled while its job runs is seen on the next heartbeat and the job is stopped.

The local job workers (:mod:`rea_executor.worker`) run it in-process for each job they take
off the queue; a remote backend (:mod:`rea_executor.backends`) starts it as
``python -m rea_executor.jobside`` with the ``job.submitted`` event in ``REA_JOB_EVENT`` and
the settings in the environment. Stopping it (SIGTERM) stops the job and reports it ``killed``
with the CPU it used, so the runbook resubmits it and the budget counts what was spent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import sys
from typing import Literal

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
from rea.kernels import KernelEntry, KernelRegistryReader
from rea.knobs import Role
from rea.leases import JobLeases
from rea.ledger import JobRun, RunStatus
from rea.logs import configure_logging
from rea.runtime import Runtime, connect, start_broker
from rea.security import AuthenticationFailed
from rea.settings import Settings
from rea.workloads import JobCost, JobError, JobOutput, get_workload
from rea_executor.backends.base import JOB_EVENT_ENV
from rea_executor.confine import job_environment
from rea_executor.runbook import BACKOFF_MAX_S
from rea_executor.runner import Fault, JobWatch, StopReason, run_job
from rea_executor.warm import WarmStarts

log = structlog.get_logger()


Delivery = Literal["claim", "resend", "skip"]


def on_delivery(run: JobRun | None, holder: str) -> Delivery:
    """What a delivered ``job.submitted`` needs, from the ledger's record of its job.

    * ``resend``: it finished, so this copy is a redelivery or a replay. Its result may be what
      the broker lost: send that again (consumers dedup it); never train it again.
    * ``claim``: nobody claimed it, or ``holder`` did on an attempt cut short before the job
      started (a dropped connection after the claim): take it (up again).
    * ``skip``: another holder has it, or it started or was cancelled: whoever holds it reports,
      or its lease expires and the executor settles it.
    """
    if run is None:
        return "claim"
    if run.final is not None:
        return "resend"
    return "claim" if run.resumable_by(holder) else "skip"


class JobSide:
    """Claims, runs and reports jobs for one holder (a worker, or one remote job's process)."""

    def __init__(self, rt: Runtime, holder: str, warm: WarmStarts | None = None) -> None:
        self.rt = rt
        self.holder = holder
        self.warm = warm
        self.leases = JobLeases(rt.redis, rt.settings.topic_prefix)
        self.ledger = rt.store.ledger
        self.ttl = rt.settings.lease_ttl_s
        self.prepared: set[tuple[str, str]] = set()  # (workload, dataset) pairs made ready here
        self.current: dict[str, JobWatch] = {}  # the job in progress, so a stop request can reach it
        self.taking: set[str] = set()  # job ids this holder is taking up or running now

    def stop_all(self, reason: StopReason, message: str) -> None:
        for watch in self.current.values():
            watch.stop(reason, message)

    async def take(self, event: JobSubmitted) -> bool:
        """Run ``event``'s job unless it ran or runs elsewhere; True when this call ran it."""
        spec = capped(event.payload, self.rt.settings)
        if spec.job_id in self.taking:
            log.info("job_taken_here", job_id=spec.job_id)  # a second copy, while the first runs
            return False
        self.taking.add(spec.job_id)
        try:
            return await self._take(event, spec)
        finally:
            self.taking.discard(spec.job_id)

    async def _take(self, event: JobSubmitted, spec: JobSpec) -> bool:
        run = await self.ledger.get(spec.job_id)
        action = on_delivery(run, self.holder)
        if action == "resend" and run is not None and run.final is not None:
            await self.rt.bus.send(self.rt.topics.job_events, spec.campaign_id.encode(), run.final)
            log.info("job_done_before", job_id=spec.job_id)
            return False
        if action == "skip":
            log.info("job_claimed_before", job_id=spec.job_id, holder=run.worker if run else None)
            return False
        if not await self.leases.claim(spec.job_id, self.holder, self.ttl):
            # A live holder has it: it reports, or its lease expires and the executor
            # resubmits the job through the runbook. Either way this copy has nothing to do.
            log.info("job_held_elsewhere", job_id=spec.job_id, holder=await self.leases.holder(spec.job_id))
            return False
        if not await self.ledger.claim(spec.job_id, spec.campaign_id, spec.phase, self.holder):
            await self.leases.release(spec.job_id)
            log.info("job_claimed_before", job_id=spec.job_id)
            return False
        await self._run_claimed(event, spec)
        return True

    async def _run_claimed(self, event: JobSubmitted, spec: JobSpec) -> None:
        rt = self.rt
        follow = {"campaign_id": event.campaign_id, "correlation_id": event.correlation_id}
        watch = self.current[spec.job_id] = JobWatch()

        async def sample() -> None:
            running = watch.pid is not None and not watch.stopping.is_set()
            if running and await self.ledger.sample(spec.job_id, watch.cpu_seconds):
                watch.stop("cancelled", "stopped: its campaign was cancelled, or it was declared lost")

        try:
            # The heartbeat starts with the claim: publishing `job.started` can take longer than
            # a short lease on a busy broker.
            async with self.leases.heartbeat(spec.job_id, self.holder, self.ttl, on_beat=sample):
                await rt.bus.publish(
                    JobStarted(
                        **follow,
                        payload=JobStartedPayload(job_id=spec.job_id, phase=spec.phase, worker=self.holder),
                    )
                )
                await _backoff(spec, watch)
                output = await self._execute(spec, watch)
        finally:
            self.current.pop(spec.job_id, None)
        payload = JobFinishedPayload(spec=spec, output=output, worker=self.holder)
        outcome = JobCompleted if output.status == "ok" else JobFailed
        finished = outcome(**follow, payload=payload)
        status: RunStatus = "completed" if output.status == "ok" else "failed"
        if output.error is not None and output.error.kind == "cancelled":
            status = "cancelled"
        cpu = output.cost.cpu_seconds if output.cost else None
        if not await self.ledger.finish(spec.job_id, encode_event(finished), status, cpu, watch.log):
            log.warning("job_declared_lost_meanwhile", job_id=spec.job_id, cpu_seconds=cpu)
            return
        await rt.bus.publish(finished)
        # Released only once the final word is on the broker. On any other way out (an error,
        # a broker that refuses the result) the lease lapses instead, and its expiry is what
        # wakes an executor: it sends the stored result again, or declares the holder lost.
        await self.leases.release(spec.job_id)
        rt.metrics.jobs.labels(service=rt.name, outcome=finished.type).inc()
        if output.cost:
            rt.metrics.job_cpu_seconds.labels(service=rt.name).inc(output.cost.cpu_seconds)
            took = rt.metrics.job_duration.labels(rt.name, spec.backend, finished.type)
            took.observe(output.cost.wall_seconds)
        log.info("job_finished", job_id=spec.job_id, status=output.status, cpu_seconds=cpu)

    async def _execute(self, spec: JobSpec, watch: JobWatch) -> JobOutput:
        """Run the job's process, recording in the ledger that it started and, at the end, what
        the OS measured (``job_process_started`` / ``job_process_ended`` log lines too)."""
        if watch.stopping.is_set():
            return JobOutput(
                status="failed",
                error=JobError(kind=watch.stop_reason, message=f"{watch.stop_message} before it started"),
                cost=JobCost(cpu_seconds=0.0, wall_seconds=0.0, peak_rss_mb=0.0),
            )
        dataset = (spec.workload, spec.dataset)
        fault = drawn_fault(self.rt.settings.inject_faults, spec.job_id)
        prepare = dataset not in self.prepared
        kernels = await self._kernels(spec)
        settings = self.rt.settings
        running = asyncio.create_task(
            asyncio.to_thread(
                run_job,
                spec,
                fault,
                prepare=prepare,
                watch=watch,
                warm=self.warm,
                kernels=kernels,
                environment=job_environment(os.environ, settings.job_env_passthrough),
                file_bytes=settings.job_file_mb << 20,
                data_roots=settings.allowed_data_roots(),
            )
        )
        while watch.pid is None and not running.done():
            await asyncio.sleep(0.05)
        if watch.pid is not None:
            await self.ledger.started(spec.job_id, watch.pid)
            log.info("job_process_started", job_id=spec.job_id, pid=watch.pid)
        output = await running
        if output.status == "ok":
            self.prepared.add(dataset)
        if watch.pid is not None:
            cpu = output.cost.cpu_seconds if output.cost else None
            log.info("job_process_ended", job_id=spec.job_id, pid=watch.pid, cpu_seconds=cpu)
        return output

    async def _kernels(self, spec: JobSpec) -> list[KernelEntry]:
        """The kernel registry's entries when the job asks for evolved kernels (the trainer keeps
        those made for its device), else none. Read here, where the job runs, so a job needs no
        database access of its own."""
        try:
            schema = get_workload(spec.workload).schema
        except KeyError:
            return []  # run_job reports the unknown workload
        if schema.role_value(spec.config, Role.EVOLVED_KERNELS, False) is not True:
            return []
        return await KernelRegistryReader(self.rt.store.db).entries()


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
    unless the job side is asked to stop meanwhile."""
    if spec.not_before is None:
        return
    delay = min(max((spec.not_before - utc_now()).total_seconds(), 0.0), BACKOFF_MAX_S)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.to_thread(watch.stopping.wait, delay), delay + 1)


def capped(spec: JobSpec, settings: Settings) -> JobSpec:
    """The job with this side's own limits applied: a campaign may ask for less, never more."""
    return spec.model_copy(
        update={
            "timeout_s": min(spec.timeout_s, settings.job_timeout_s),
            "memory_mb": min(spec.memory_mb, settings.job_memory_mb),
        }
    )


async def run_remote(event: JobSubmitted, settings: Settings) -> bool:
    """One job, started by a remote backend: connect, run it (at most once), report, leave."""
    holder = f"{event.payload.backend}/{socket.gethostname()}/{os.getpid()}"
    rt, _ = await connect("jobside", settings, name=f"jobside-{event.payload.job_id}")
    await start_broker(rt.bus.broker)
    side = JobSide(rt, holder)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, side.stop_all, "killed", f"its backend stopped {holder}")
    try:
        return await side.take(event)
    finally:
        await rt.close()


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level, service="jobside")
    raw = os.environ.get(JOB_EVENT_ENV)
    if not raw:
        sys.exit(f"{JOB_EVENT_ENV} is not set: a backend starts the job side with its job.submitted event")
    try:
        asyncio.run(run_remote(JobSubmitted.model_validate_json(raw), settings))
    except AuthenticationFailed as exc:
        sys.exit(f"jobside: {exc}")


if __name__ == "__main__":
    main()
