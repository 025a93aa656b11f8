"""Executor wiring: phase starts, job results, people's decisions and expired job leases
wake the phase document; nothing else does, and nothing is kept in memory between them.

Campaigns share the workers (:mod:`rea_executor.shares`): with workers on the roster, an event
only updates its own phase, then the free slots are granted to the running phases owed them,
each grant a recorded decision of its own. Two executors sharing out at the same moment may
grant a slot twice; the queue is then one job longer, and the next share-out evens it out.

What to do about a quiet worker or a cancelled job is decided in :mod:`rea_executor.recovery`
and :mod:`rea_executor.logic`; this module reads the state and the job ledger, applies the
decisions, and sends.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from uuid import NAMESPACE_URL, uuid5

import structlog

from rea.decisions import DecisionGate
from rea.events import (
    BudgetExtended,
    CampaignCancelled,
    CampaignPaused,
    CampaignResumed,
    Envelope,
    JobCompleted,
    JobFailed,
    JobStarted,
    JobSubmitted,
    PhaseStarted,
    RunbookApplied,
    encode_event,
)
from rea.leases import JobLeases, WorkerRoster
from rea.metrics import Metrics
from rea.runtime import Runtime
from rea.store import Applied, Decision, Store
from rea_executor import logic, recovery, shares
from rea_executor.runbook import RUNBOOK
from rea_executor.state import (
    IN_FLIGHT,
    PhaseExecution,
    PhaseSummary,
    SlotsGranted,
    SlotsGrantedPayload,
    phase_key,
)

CONSUMER = "executor"
CANCELLATIONS = "executor_cancellations"
JOINING_PASS_TTL_S = 1.0
"""The least time campaigns' first phases join at a lowest settled pass read before (see
:class:`Remembered`). Settled passes only grow while phases run, so a reading ``t`` seconds old
is low by at most ``t`` seconds of the workers' CPU: the newcomer is owed that much more."""
JOINING_PASS_READ_SHARE = 0.1
"""The most of the executor's time spent reading it: the read scans every running phase (about
a second at 7,000 on SecantusDB), so it is reused for ten times as long as it took."""
Decide = Callable[..., Decision[PhaseExecution]]
"""A decision of :mod:`rea_executor.logic`: (state, event, room=...) -> Decision."""

log = structlog.get_logger()

WAKING: ContextVar[list[int] | None] = ContextVar("waking", default=None)
"""Jobs submitted while a job result is being handled: the wake latency (``rea_wake_seconds``)."""


@dataclass
class Remembered:
    """What ``read`` last gave, read again once it is ``ttl_s`` old and ``share`` of the time
    since the last reading went to making it: with many campaigns starting at once, each paid
    for a scan of all the others, and a scan slower than ``ttl_s`` was paid by every one."""

    ttl_s: float
    share: float
    clock: Callable[[], float]
    read: Callable[[], Awaitable[float]]
    value: float = 0.0
    read_at: float = -math.inf
    took_s: float = 0.0

    async def get(self) -> float:
        if self.clock() - self.read_at >= max(self.ttl_s, self.took_s / self.share):
            began = self.clock()
            self.value = await self.read()
            self.read_at = self.clock()
            self.took_s = self.read_at - began
        return self.value


async def apply_to_phase(store: Store, event: Envelope, key: str, decide: Decide) -> Applied[PhaseExecution]:
    """``event`` on the phase stored under ``key`` (``Store.apply``), its summary saved with it."""
    return await store.apply(
        consumer=CONSUMER,
        event=event,
        collection="phases",
        key=key,
        model=PhaseExecution,
        decide=decide,
        summarize=PhaseExecution.summary,
    )


def wire(rt: Runtime) -> None:
    leases = JobLeases(rt.redis, rt.settings.topic_prefix)
    roster = WorkerRoster(rt.redis, rt.settings.topic_prefix)
    ledger = rt.store.ledger
    cancellations = rt.store[CANCELLATIONS]
    declare_metrics(rt)

    async def commit(event: Envelope, key: str, decide: Decide) -> PhaseExecution | None:
        applied = await apply_to_phase(rt.store, event, key, decide)
        if applied.decision:
            submitted = sum(isinstance(e, JobSubmitted) for e in applied.decision.emit)
            rt.metrics.jobs.labels(service=rt.name, outcome="submitted").inc(submitted)
            record_metrics(rt.metrics, rt.name, event, applied.decision)
            waking = WAKING.get()
            if submitted and waking is not None:
                waking.append(submitted)
        rt.relay.kick()
        return applied.decision.state if applied.decision else None

    async def apply(event: Envelope, key: str, decide: Decide) -> PhaseExecution | None:
        """Apply ``event`` to its phase; when campaigns share the workers (some are on the
        roster), the phase only records it, and a share-out then grants the free slots to
        whichever phases are owed them, each job placed on the least busy worker."""
        workers = await roster.workers()
        state = await commit(event, key, partial(decide, room=0) if workers else decide)
        if workers:
            await share_out(event, workers)
        return state

    async def sharing_phases(status: object) -> list[tuple[str, PhaseSummary]]:
        """The summaries of the phases in ``status`` that share the workers; a phase saved
        without one (by an executor before summaries) is read whole."""
        found: list[tuple[str, PhaseSummary]] = []
        unsummarised: list[str] = []
        async for doc in rt.store.phases.find({"state.status": status}, {"summary": 1}):
            if "summary" in doc:
                found.append((str(doc["_id"]), PhaseSummary.model_validate(doc["summary"])))
            else:
                unsummarised.append(str(doc["_id"]))
        if unsummarised:
            async for doc in rt.store.phases.find({"_id": {"$in": unsummarised}}):
                found.append((str(doc["_id"]), PhaseExecution.model_validate(doc["state"]).summary()))
        return [(key, summary) for key, summary in found if summary.shares_workers]

    async def share_out(cause: Envelope, workers: dict[str, list[int]]) -> None:
        active = await sharing_phases({"$ne": "concluded"})
        running = [(key, summary) for key, summary in active if summary.status == "running"]
        tenants = [summary.tenant for _, summary in running]
        in_flight = [place for _, summary in active for place in summary.places]
        # Jobs of paused or cancelling phases still run on the workers: they hold their slots.
        held = len(in_flight) - sum(t.in_flight for t in tenants)
        granted = shares.grants(tenants, shares.slots(len(workers), tenants) - held)
        places = shares.placements(workers, in_flight, sum(granted.values()))
        for key, state in running:
            if granted[key]:
                placed, places = places[: granted[key]], places[granted[key] :]
                grant = SlotsGranted(
                    event_id=uuid5(NAMESPACE_URL, f"{cause.event_id}|{key}").hex,
                    campaign_id=state.campaign_id,
                    correlation_id=state.correlation_id,
                    payload=SlotsGrantedPayload(phase=state.phase, slots=granted[key], partitions=placed),
                )
                await commit(grant, key, logic.on_slots_granted)

    async def lowest_settled_pass() -> float:
        return shares.joining_pass([summary.tenant for _, summary in await sharing_phases("running")])

    newcomers_pass = Remembered(
        JOINING_PASS_TTL_S, JOINING_PASS_READ_SHARE, time.monotonic, lowest_settled_pass
    )

    async def on_phase_started(event: PhaseStarted) -> None:
        cancelled = await cancellations.find_one({"_id": event.campaign_id}) is not None
        # Only the passes of its earlier phases are read; the running phases matter only to a
        # campaign's first phase.
        earlier = [
            float(doc["state"].get("stride_pass", 0.0))
            async for doc in rt.store.phases.find(
                {"state.campaign_id": event.campaign_id}, {"state.stride_pass": 1}
            )
        ]
        joining = max(earlier) if earlier else await newcomers_pass.get()
        decide = partial(logic.on_phase_started, cancelled=cancelled, stride_pass=joining)
        await apply(event, phase_key(event.campaign_id, event.payload.plan.phase), decide)

    async def on_job_started(event: JobStarted) -> None:
        await apply(event, phase_key(event.campaign_id, event.payload.phase), logic.on_job_started)

    async def on_job_finished(event: JobCompleted | JobFailed) -> None:
        began, waking = time.perf_counter(), WAKING.set([])
        try:
            await apply(event, phase_key(event.campaign_id, event.payload.spec.phase), logic.on_job_finished)
            if WAKING.get():  # the result woke the phase and it submitted jobs
                rt.metrics.wake_seconds.labels(service=rt.name).observe(time.perf_counter() - began)
        finally:
            WAKING.reset(waking)

    async def on_person(event: CampaignPaused | CampaignResumed | BudgetExtended | CampaignCancelled) -> None:
        if isinstance(event, CampaignCancelled):
            # Remembered apart from any phase: a phase the planner started just before the
            # cancellation may reach this executor after it, and must not run.
            await cancellations.update_one(
                {"_id": event.campaign_id}, {"$setOnInsert": {"by": event.payload.by}}, upsert=True
            )
        doc = await rt.store.phases.find_one(
            {"state.campaign_id": event.campaign_id, "state.status": {"$ne": "concluded"}}, {"_id": 1}
        )
        if doc is None:
            log.info("no_active_phase", type=event.type, campaign_id=event.campaign_id)
            return
        decide: dict[type[Envelope], Decide] = {
            CampaignPaused: logic.on_campaign_paused,
            CampaignResumed: logic.on_campaign_resumed,
            BudgetExtended: logic.on_budget_extended,
            CampaignCancelled: logic.on_campaign_cancelled,
        }
        state = await apply(event, str(doc["_id"]), decide[type(event)])
        if state is not None:
            await stop_jobs(state)

    async def stop_jobs(state: PhaseExecution) -> None:
        """Tell the workers of a cancelled phase's jobs to stop them (through the job ledger). A
        job no worker had claimed never will be: it is reported cancelled here."""
        for job in logic.to_stop(state):
            if await ledger.request_cancel(job.spec.job_id, state.campaign_id, state.phase):
                continue
            event = recovery.unstarted_cancel_event(state, job)
            if await ledger.declare_lost(
                job.spec.job_id, state.campaign_id, state.phase, encode_event(event), status="cancelled"
            ):
                await apply(event, phase_key(state.campaign_id, state.phase), logic.on_failure_declared)

    async def on_lease_expired(job_id: str) -> None:
        doc = await rt.store.phases.find_one({"state.jobs.spec.job_id": job_id})
        if doc is None:
            return
        state = PhaseExecution.model_validate(doc["state"])
        job = state.job(job_id)
        run = await ledger.get(job_id)
        action = recovery.after_lease_lost(job, run, await leases.holder(job_id))
        if action == "resend" and run is not None and run.final is not None:
            # It reported, but the executor never heard it (the broker lost it, or the stack
            # stopped first): send the stored final word again.
            log.warning("resending_lost_result", job_id=job_id)
            await rt.bus.send(rt.topics.job_events, state.campaign_id.encode(), run.final)
        elif action == "declare_lost" and job is not None:
            failure = recovery.lost_event(state, job, run)
            if not await ledger.declare_lost(job_id, state.campaign_id, state.phase, encode_event(failure)):
                await on_lease_expired(job_id)  # its worker's final word came just now: that stands
                return
            log.warning("lost_worker", job_id=job_id, worker=job.worker)
            await apply(failure, str(doc["_id"]), logic.on_failure_declared)

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
        """Find what went quiet while nobody listened (a restart, a lost Redis): every job in
        flight without a live lease is looked up in the job ledger; stop what a cancellation
        left running."""
        async for doc in rt.store.phases.find({"state.status": {"$ne": "concluded"}}):
            state = PhaseExecution.model_validate(doc["state"])
            await stop_jobs(state)
            for job in state.jobs:
                if job.status in IN_FLIGHT and await leases.holder(job.spec.job_id) is None:
                    await on_lease_expired(job.spec.job_id)

    async def republish_pending() -> None:
        """Send this service's events of active campaigns again, except work that is settled:
        a ``job.submitted`` whose job is no longer in flight is never sent out again."""
        in_flight = {
            job.spec.job_id
            async for doc in rt.store.phases.find({"state.status": {"$ne": "concluded"}})
            for job in PhaseExecution.model_validate(doc["state"]).jobs
            if job.status in IN_FLIGHT
        }
        submitted = {
            str(doc["_id"]): bytes(doc["key"]).decode()
            async for doc in rt.store.outbox.find(
                {"producer": CONSUMER, "type": JobSubmitted.model_fields["type"].default}, {"key": 1}
            )
        }
        count = await rt.store.republish_active(CONSUMER, recovery.settled_submissions(submitted, in_flight))
        if count:
            log.warning("outbox_republished", entries=count)
        rt.relay.kick()

    rt.bus.subscribe(
        [rt.topics.planner_events, rt.topics.job_events, rt.topics.control],
        gate=DecisionGate.for_service(rt.settings, rt.store.db, CONSUMER),
        group="executor",
        handlers={
            PhaseStarted: on_phase_started,
            JobStarted: on_job_started,
            JobCompleted: on_job_finished,
            JobFailed: on_job_finished,
            CampaignPaused: on_person,
            CampaignResumed: on_person,
            BudgetExtended: on_person,
            CampaignCancelled: on_person,
        },
    )
    rt.background(watch_leases)
    rt.on_reconcile(republish_pending)
    rt.on_reconcile(sweep)


def declare_metrics(rt: Runtime) -> None:
    """The executor's label sets at zero, so rates and alerts have a series before the first one."""
    metrics, name, backend = rt.metrics, rt.name, rt.settings.job_backend
    metrics.wake_seconds.labels(service=name)
    for state in ("submitted", "started", "completed"):
        metrics.job_transitions.labels(service=name, state=state, backend=backend, kind="none")
    for rule in RUNBOOK:
        metrics.job_transitions.labels(service=name, state="failed", backend=backend, kind=rule.failure)
        metrics.runbook_actions.labels(service=name, failure=rule.failure, action=rule.action)
    for topic in (rt.topics.planner_events, rt.topics.job_events, rt.topics.control):
        metrics.dead_letters.labels(service=name, topic=topic)


def record_metrics(metrics: Metrics, name: str, event: Envelope, decision: Decision[PhaseExecution]) -> None:
    """Count what a decision changed: job transitions, runbook actions, the phase's budget."""
    state = decision.state
    if state is None:
        return  # nothing changed (a duplicate result, a start of a job not submitted)
    count = metrics.job_transitions
    if isinstance(event, JobStarted):
        job = state.job(event.payload.job_id)
        backend = job.spec.backend if job else "local"
        count.labels(service=name, state="started", backend=backend, kind="none").inc()
    elif isinstance(event, JobCompleted):
        count.labels(service=name, state="completed", backend=event.payload.spec.backend, kind="none").inc()
    elif isinstance(event, JobFailed):
        kind = event.payload.output.error.kind if event.payload.output.error else "error"
        count.labels(service=name, state="failed", backend=event.payload.spec.backend, kind=kind).inc()
    for emitted in decision.emit:
        if isinstance(emitted, JobSubmitted):
            count.labels(service=name, state="submitted", backend=emitted.payload.backend, kind="none").inc()
        elif isinstance(emitted, RunbookApplied):
            entry = emitted.payload
            metrics.runbook_actions.labels(service=name, failure=entry.failure, action=entry.action).inc()
    budgets = [
        ("cpu_seconds", state.budget_cpu_seconds, state.spent_cpu_seconds, state.reserved_cpu_seconds())
    ]
    if state.budget_gpu_seconds is not None:
        budgets.append(
            ("gpu_seconds", state.budget_gpu_seconds, state.spent_gpu_seconds, state.reserved_gpu_seconds())
        )
    for resource, limit, spent, reserved in budgets:
        metrics.set_budget(
            name,
            state.campaign_id,
            limit=limit,
            spent=spent,
            reserved=reserved,
            open_=state.status != "concluded",
            resource=resource,
        )
