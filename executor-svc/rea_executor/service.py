"""Executor wiring: phase starts, job results, people's decisions and expired job leases
wake the phase document; nothing else does, and nothing is kept in memory between them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from uuid import NAMESPACE_URL, uuid5

import structlog

from rea.events import (
    BudgetExtended,
    CampaignPaused,
    CampaignResumed,
    Envelope,
    JobCompleted,
    JobFailed,
    JobFinishedPayload,
    JobSpec,
    JobStarted,
    JobSubmitted,
    PhaseStarted,
    encode_event,
)
from rea.leases import JobLeases
from rea.runtime import Runtime
from rea.store import Decision
from rea.workloads import JobCost, JobError, JobOutput
from rea_executor import logic
from rea_executor.state import PhaseExecution, phase_key


def lost_cost(spec: JobSpec) -> JobCost:
    """What a lost job is charged: the CPU it burnt died with its worker, so its reserved
    estimate (padded by the cost model's safety factor) settles the reservation instead of 0."""
    return JobCost(cpu_seconds=spec.estimated_cpu_seconds, wall_seconds=0.0, peak_rss_mb=0.0, measured=False)


CONSUMER = "executor"
Decide = Callable[[PhaseExecution | None, Any], Decision[PhaseExecution]]

log = structlog.get_logger()


def wire(rt: Runtime) -> None:
    leases = JobLeases(rt.redis, rt.settings.topic_prefix)

    async def apply(event: Envelope, key: str, decide: Decide) -> None:
        applied = await rt.store.apply(
            consumer=CONSUMER, event=event, collection="phases", key=key, model=PhaseExecution, decide=decide
        )
        if applied.decision:
            submitted = sum(isinstance(e, JobSubmitted) for e in applied.decision.emit)
            rt.metrics.jobs.labels(service=rt.name, outcome="submitted").inc(submitted)
        rt.relay.kick()

    async def on_phase_started(event: PhaseStarted) -> None:
        await apply(event, phase_key(event.campaign_id, event.payload.plan.phase), logic.on_phase_started)

    async def on_job_started(event: JobStarted) -> None:
        await apply(event, phase_key(event.campaign_id, event.payload.phase), logic.on_job_started)

    async def on_job_finished(event: JobCompleted | JobFailed) -> None:
        await apply(event, phase_key(event.campaign_id, event.payload.spec.phase), logic.on_job_finished)

    async def on_person(event: CampaignPaused | CampaignResumed | BudgetExtended) -> None:
        doc = await rt.store.phases.find_one(
            {"state.campaign_id": event.campaign_id, "state.status": {"$ne": "concluded"}}, {"_id": 1}
        )
        if doc is None:
            log.warning("no_active_phase", type=event.type, campaign_id=event.campaign_id)
            return
        decide: dict[type[Envelope], Decide] = {
            CampaignPaused: logic.on_campaign_paused,
            CampaignResumed: logic.on_campaign_resumed,
            BudgetExtended: logic.on_budget_extended,
        }
        await apply(event, str(doc["_id"]), decide[type(event)])

    async def on_lease_expired(job_id: str) -> None:
        finished = await leases.finished_event(job_id)
        if finished is not None:
            # It reported. If that report never reached us (the broker lost it), send it again.
            await _resend_if_still_running(job_id, finished)
            return
        doc = await rt.store.phases.find_one({"state.jobs.spec.job_id": job_id})
        if doc is None:
            return
        state = PhaseExecution.model_validate(doc["state"])
        job = state.job(job_id)
        if job is None or job.status not in ("submitted", "running"):
            return
        failure = JobFailed(
            event_id=uuid5(NAMESPACE_URL, f"rea:lost-worker:{job_id}").hex,
            campaign_id=state.campaign_id,
            correlation_id=state.correlation_id,
            payload=JobFinishedPayload(
                spec=job.spec,
                output=JobOutput(
                    status="failed",
                    error=JobError(
                        kind="lost_worker", message=f"the lease of {job.worker or 'its worker'} expired"
                    ),
                    cost=lost_cost(job.spec),
                ),
                worker=job.worker or "unknown",
            ),
        )
        if not await leases.mark_done(job_id, encode_event(failure)):
            # It reported just now (or another executor declared it lost first): that word stands.
            await on_lease_expired(job_id)
            return
        log.warning("lost_worker", job_id=job_id, worker=job.worker)
        await apply(failure, str(doc["_id"]), logic.on_lease_expired)

    async def _resend_if_still_running(job_id: str, finished: bytes) -> None:
        doc = await rt.store.phases.find_one({"state.jobs.spec.job_id": job_id})
        job = PhaseExecution.model_validate(doc["state"]).job(job_id) if doc else None
        if job is not None and job.status in ("submitted", "running"):
            log.warning("resending_lost_result", job_id=job_id)
            await rt.bus.send(rt.topics.job_events, job.spec.campaign_id.encode(), finished)

    async def watch_leases() -> None:
        """Redis tells us when a lease expires (keyspace notifications); at start-up, and
        whenever the subscription is re-established, sweep for leases that expired unseen."""
        while True:
            try:
                async for job_id in leases.expired(on_subscribed=sweep):
                    await on_lease_expired(job_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("lease_watch_failed")
                await asyncio.sleep(1)

    async def sweep() -> None:
        """Find what expired or was reported while nobody listened: a running job without a
        lease was lost; an in-flight job with a done-marker reported and may need a resend."""
        async for doc in rt.store.phases.find({"state.status": {"$ne": "concluded"}}):
            for job in PhaseExecution.model_validate(doc["state"]).jobs:
                job_id = job.spec.job_id
                if job.status not in ("submitted", "running") or await leases.holder(job_id) is not None:
                    continue
                if job.status == "running" or await leases.is_done(job_id):
                    await on_lease_expired(job_id)

    rt.bus.subscribe(
        [rt.topics.planner_events, rt.topics.job_events, rt.topics.control],
        group="executor",
        handlers={
            PhaseStarted: on_phase_started,
            JobStarted: on_job_started,
            JobCompleted: on_job_finished,
            JobFailed: on_job_finished,
            CampaignPaused: on_person,
            CampaignResumed: on_person,
            BudgetExtended: on_person,
        },
    )
    rt.background(watch_leases)
    rt.on_reconcile(rt.republish_outbox)
    rt.on_reconcile(sweep)
