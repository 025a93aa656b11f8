"""Executor wiring: phase starts and job results wake the phase document, nothing else."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rea.events import Envelope, JobCompleted, JobFailed, JobStarted, JobSubmitted, PhaseStarted
from rea.runtime import Runtime
from rea.store import Decision
from rea_executor import logic
from rea_executor.state import PhaseExecution, phase_key

CONSUMER = "executor"


def wire(rt: Runtime) -> None:
    async def apply(
        event: Envelope, phase: str, decide: Callable[[PhaseExecution | None, Any], Decision[PhaseExecution]]
    ) -> None:
        applied = await rt.store.apply(
            consumer=CONSUMER,
            event=event,
            collection="phases",
            key=phase_key(event.campaign_id, phase),
            model=PhaseExecution,
            decide=decide,
        )
        if applied.decision:
            for emitted in applied.decision.emit:
                if isinstance(emitted, JobSubmitted):
                    rt.metrics.jobs.labels(service=rt.name, outcome="submitted").inc()
        rt.relay.kick()

    async def on_phase_started(event: PhaseStarted) -> None:
        await apply(event, event.payload.plan.phase, logic.on_phase_started)

    async def on_job_started(event: JobStarted) -> None:
        await apply(event, event.payload.phase, logic.on_job_started)

    async def on_job_finished(event: JobCompleted | JobFailed) -> None:
        await apply(event, event.payload.spec.phase, logic.on_job_finished)

    rt.bus.subscribe(
        [rt.topics.planner_events, rt.topics.job_events],
        group="rea-executor",
        handlers={
            PhaseStarted: on_phase_started,
            JobStarted: on_job_started,
            JobCompleted: on_job_finished,
            JobFailed: on_job_finished,
        },
    )
