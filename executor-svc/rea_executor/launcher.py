"""The launcher: hands the jobs of one remote backend (``REA_LAUNCHER_BACKEND``: ray or
kubernetes) from the job queue to that backend, and nothing else.

It reads the whole queue in a consumer group of its own and submits each job of its backend
(idempotent on the job id, so a redelivery is harmless); the job side it starts there reports
the result itself. When the executor declares such a job lost or cancels it before it ran, the
launcher stops it on the backend, so a job nobody waits for frees the cluster.
"""

from __future__ import annotations

import structlog

from rea.events import JobFailed, JobSubmitted
from rea.runtime import Runtime
from rea_executor.backends import make_backend

log = structlog.get_logger()

ABANDONED = frozenset({"lost_worker", "cancelled"})
"""Failures after which nobody waits for the job: whatever still runs of it is stopped."""


def wire(rt: Runtime) -> None:
    name = rt.settings.launcher_backend
    backend = make_backend(name, rt.settings, rt.endpoints)

    async def on_job(event: JobSubmitted) -> None:
        if event.payload.backend == name:
            await backend.submit(event)

    async def on_failed(event: JobFailed) -> None:
        spec, error = event.payload.spec, event.payload.output.error
        if spec.backend == name and error is not None and error.kind in ABANDONED:
            log.info("stopping_abandoned_job", job_id=spec.job_id, kind=error.kind)
            await backend.cancel(spec.job_id)

    rt.bus.subscribe([rt.topics.job_queue], group=f"launcher-{name}", handlers={JobSubmitted: on_job})
    rt.bus.subscribe([rt.topics.job_events], group=f"launcher-{name}-events", handlers={JobFailed: on_failed})
    rt.on_stop(backend.close)
