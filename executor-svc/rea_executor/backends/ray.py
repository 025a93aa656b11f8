"""The ``ray`` backend: each training job is a Ray job (Ray Jobs, through the job server's REST
API on the head node, with httpx).

How it keeps the contract of :mod:`rea_executor.backends.base`:

* The job's ``submission_id`` is REA's job id, and Ray refuses a second job with the same
  submission id, so a repeated submit is a no-op: a refusal is answered by looking the job up,
  and a job that exists counts as submitted.
* The entrypoint is the job side (``python -m rea_executor.jobside``) with the job's CPUs, GPUs
  and memory as the entrypoint's resources, so Ray places and queues it by what it asks for.
  The ``job.submitted`` event and the settings the job side needs (where the broker, the
  database and Redis are; its limits and lease) travel in the runtime environment's variables.
* A job stopped on the Ray side (``ray job stop``, a node lost) takes its job side with it: the
  lease expires and the executor declares the job lost; the runbook resubmits it under a new id.
* ``cancel`` asks Ray to stop the job; an unknown job is nothing to stop.

The endpoints are handed over as the launcher sees them, so the Ray nodes must reach the same
addresses (true of a local head; on a cluster, give services addresses the nodes resolve).
"""

from __future__ import annotations

import shlex
from typing import Any

import httpx
import structlog

from rea.endpoints import Endpoints
from rea.events import JobSubmitted, encode_event
from rea.security import connection_env
from rea.settings import Settings
from rea_executor.backends.base import JOB_EVENT_ENV, JobBackend

log = structlog.get_logger()

MIB = 1024 * 1024


def job_environment(event: JobSubmitted, settings: Settings, endpoints: Endpoints) -> dict[str, str]:
    """The variables a remote job side starts with: its event, and the settings that say where
    the broker, the database and Redis are, how to connect to them (secrets as files the node
    has, never their values: Ray keeps a job's variables where its dashboard shows them) and how
    it must behave."""
    return {
        JOB_EVENT_ENV: encode_event(event).decode(),
        **endpoints.env(),
        **connection_env(settings),
        "REA_TOPIC_PREFIX": settings.topic_prefix,
        "REA_TOPIC_PARTITIONS": str(settings.topic_partitions),
        "REA_MONGO_DB": settings.mongo_db,
        "REA_LEASE_TTL_S": str(settings.lease_ttl_s),
        "REA_JOB_TIMEOUT_S": str(settings.job_timeout_s),
        "REA_JOB_MEMORY_MB": str(settings.job_memory_mb),
        "REA_LOG_LEVEL": settings.log_level,
    }


def submission(event: JobSubmitted, settings: Settings, endpoints: Endpoints) -> dict[str, Any]:
    """The Ray Jobs submit request for one training job."""
    spec = event.payload
    request: dict[str, Any] = {
        "entrypoint": f"{shlex.quote(settings.job_python)} -m rea_executor.jobside",
        "submission_id": spec.job_id,
        "runtime_env": {"env_vars": job_environment(event, settings, endpoints)},
        "metadata": {"rea_campaign": spec.campaign_id, "rea_phase": spec.phase},
        "entrypoint_num_cpus": spec.cpus,
        "entrypoint_memory": spec.memory_mb * MIB,
    }
    if spec.gpus:
        request["entrypoint_num_gpus"] = spec.gpus
    return request


class RayBackend(JobBackend):
    name = "ray"

    def __init__(self, settings: Settings, endpoints: Endpoints, client: httpx.AsyncClient | None = None):
        self.settings = settings
        self.endpoints = endpoints
        self.client = client or httpx.AsyncClient(base_url=settings.ray_address, timeout=30.0)

    async def submit(self, event: JobSubmitted) -> None:
        response = await self.client.post("/api/jobs/", json=submission(event, self.settings, self.endpoints))
        if response.status_code == httpx.codes.OK:
            log.info("ray_job_submitted", job_id=event.payload.job_id)
            return
        # Ray answers a repeated submission id with an error; the job it already has is the one.
        if await self._exists(event.payload.job_id):
            log.info("ray_job_submitted_before", job_id=event.payload.job_id)
            return
        response.raise_for_status()
        raise httpx.HTTPStatusError(
            f"Ray refused job {event.payload.job_id}: {response.text[:500]}",
            request=response.request,
            response=response,
        )

    async def cancel(self, job_id: str) -> None:
        response = await self.client.post(f"/api/jobs/{job_id}/stop")
        if response.status_code == httpx.codes.NOT_FOUND:
            return
        response.raise_for_status()
        log.info("ray_job_stopped", job_id=job_id, stopped=response.json().get("stopped"))

    async def _exists(self, job_id: str) -> bool:
        response = await self.client.get(f"/api/jobs/{job_id}")
        return response.status_code == httpx.codes.OK

    async def close(self) -> None:
        await self.client.aclose()
