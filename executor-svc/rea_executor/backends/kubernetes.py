"""The Kubernetes backend: one ``batch/v1`` Job per training job.

Each ``job.submitted`` event becomes a Job whose single pod runs the job side
(``python -m rea_executor.jobside``) in ``settings.kubernetes_image``, with the event in
``REA_JOB_EVENT`` and the job's CPUs, memory and GPUs as the container's requests and limits.
The job side claims the job in the ledger, holds its lease and reports the result itself, as
with every backend; nothing here watches the Job.

How it keeps the :class:`~rea_executor.backends.base.JobBackend` contract:

* Idempotent submit: the Job's name is derived from the job id alone (:func:`job_name`), so a
  redelivered event asks Kubernetes to create an object that already exists; the API answers
  409 Conflict and ``submit`` takes that as done. Once ``ttlSecondsAfterFinished`` has removed a
  finished Job, a late redelivery creates it again; its job side finds the job in the ledger
  and only sends the stored result again.
* ``backoffLimit: 0``: Kubernetes never restarts a failed pod, because REA's runbook decides
  about retries (under a new job id) and the ledger trains a job id at most once.
* Limits: the job side enforces the job's own ``timeout_s`` and memory and reports ``timeout``
  or ``oom``. The Job's ``activeDeadlineSeconds`` and the container's memory limit are only a
  backstop, with headroom (:data:`START_MARGIN_S`, :data:`JOB_SIDE_MEMORY_MB`) for the image
  pull, a retry's backoff and the job side's own process, so that they never fire before the
  job side's limits do.
* A pod Kubernetes kills (the deadline, eviction, a node lost) takes its job side with it: a
  SIGTERM lets it report ``killed``; otherwise its lease expires and the executor declares the
  job ``lost_worker``. A Job not yet running stays queued as a Kubernetes object until it runs.
* With ``settings.kubernetes_queue`` set, Jobs carry Kueue's queue label and are created
  suspended; Kueue unsuspends a Job when the cluster's quota admits it (the deadline's clock
  starts then), so the cluster bounds what REA runs as well.
* Credentials never travel in the Job: the pod takes them from ``settings.kubernetes_secret``
  (``envFrom``); the Job only names the Secret.

No cluster runs in this project's tests: the Job objects are validated against the Kubernetes
OpenAPI schema (``kubernetes-validate``) and ``submit``/``cancel`` are exercised against a fake
API object only. The ``kubernetes`` package is imported lazily, so this module imports without it.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import threading
from typing import Any, ClassVar, Protocol

from rea.events import JobBackendName, JobSubmitted, encode_event
from rea.settings import Settings
from rea_executor.backends.base import JOB_EVENT_ENV, JobBackend
from rea_executor.runbook import BACKOFF_MAX_S

TTL_AFTER_FINISHED_S = 3600
"""How long a finished Job (and its pod's logs) stays for inspection before Kubernetes removes it."""

START_MARGIN_S = 240 + math.ceil(BACKOFF_MAX_S)
"""Deadline headroom over ``timeout_s``: the Job's clock runs from its start, through the image
pull, the job side's start and a retry's backoff, before the job side starts its own timer."""

JOB_SIDE_MEMORY_MB = 512
"""Memory headroom over ``memory_mb``: the container also holds the job side's own process."""

API_TIMEOUT_S = 30.0
"""A call to the Kubernetes API that takes longer fails instead of holding a submit forever."""

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
_NAME_LIMIT = 63  # the Job's name becomes a pod label value, which is at most 63 characters
_HASH_CHARS = 10
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def _slug(text: str) -> str:
    """``text`` lowercased, with each run of other characters than [a-z0-9] turned into one dash."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:_HASH_CHARS]


def job_name(job_id: str) -> str:
    """The Job's name for ``job_id``: the same for the same id, which makes ``submit`` idempotent.

    A readable slug of the id, cut short, and a hash of the whole id (so ids that slug alike,
    or differ only in case, do not collide): a DNS-1123 label of at most 63 characters.
    """
    room = _NAME_LIMIT - len("rea-") - 1 - _HASH_CHARS
    slug = _slug(job_id)[:room].rstrip("-")
    return f"rea-{slug}-{_digest(job_id)}" if slug else f"rea-{_digest(job_id)}"


def _label_value(value: str) -> str:
    """``value`` when Kubernetes accepts it as a label value (campaign ids do), else a stable
    readable stand-in; the full value is in the annotations either way."""
    if _LABEL_VALUE.match(value):
        return value
    slug = _slug(value)[: _NAME_LIMIT - 1 - _HASH_CHARS].rstrip("-")
    return f"{slug}-{_digest(value)}" if slug else _digest(value)


def _cpu_quantity(cpus: float) -> str:
    """CPU cores as a Kubernetes quantity: whole cores as "2", others in millicores ("500m")."""
    millis = max(1, round(cpus * 1000))
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def job_manifest(event: JobSubmitted, settings: Settings) -> dict[str, Any]:
    """The ``batch/v1`` Job that runs ``event``'s job side (a pure function: no API calls)."""
    spec = event.payload
    labels = {
        "app.kubernetes.io/name": "rea-job",
        "app.kubernetes.io/part-of": "rea",
        "rea.dev/campaign": _label_value(spec.campaign_id),
    }
    job_labels = dict(labels)
    if settings.kubernetes_queue:
        job_labels[QUEUE_LABEL] = settings.kubernetes_queue
    annotations = {
        "rea.dev/job-id": spec.job_id,
        "rea.dev/campaign-id": spec.campaign_id,
        "rea.dev/phase": spec.phase,
    }
    resources: dict[str, str] = {
        "cpu": _cpu_quantity(spec.cpus),
        "memory": f"{spec.memory_mb + JOB_SIDE_MEMORY_MB}Mi",
    }
    if spec.gpus > 0:
        resources["nvidia.com/gpu"] = str(spec.gpus)
    container: dict[str, Any] = {
        "name": "job",
        "image": settings.kubernetes_image,
        "command": [settings.job_python, "-m", "rea_executor.jobside"],
        "env": [
            {"name": JOB_EVENT_ENV, "value": encode_event(event).decode()},
            {"name": "REA_TOPIC_PREFIX", "value": settings.topic_prefix},
            {"name": "REA_MONGO_DB", "value": settings.mongo_db},
        ],
        # Requests equal to limits: the pod is Guaranteed, the last to be evicted under pressure.
        "resources": {"requests": dict(resources), "limits": dict(resources)},
    }
    if settings.kubernetes_secret:
        container["envFrom"] = [{"secretRef": {"name": settings.kubernetes_secret}}]
    pod_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if settings.kubernetes_service_account:
        pod_spec["serviceAccountName"] = settings.kubernetes_service_account
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,
        "activeDeadlineSeconds": max(1, math.ceil(spec.timeout_s)) + START_MARGIN_S,
        "ttlSecondsAfterFinished": TTL_AFTER_FINISHED_S,
        "template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod_spec},
    }
    if settings.kubernetes_queue:
        job_spec["suspend"] = True
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(spec.job_id),
            "namespace": settings.kubernetes_namespace,
            "labels": job_labels,
            "annotations": annotations,
        },
        "spec": job_spec,
    }


class BatchApi(Protocol):
    """The part of ``kubernetes.client.BatchV1Api`` this backend calls (a fake in tests)."""

    def create_namespaced_job(
        self, namespace: str, body: Any, *, _request_timeout: float | None = None
    ) -> Any: ...

    def delete_namespaced_job(
        self,
        name: str,
        namespace: str,
        *,
        propagation_policy: str | None = None,
        _request_timeout: float | None = None,
    ) -> Any: ...


def _status(error: Exception) -> int | None:
    """The HTTP status of a Kubernetes API error; None for any other exception."""
    from kubernetes.client.exceptions import ApiException

    return error.status if isinstance(error, ApiException) else None


class KubernetesBackend(JobBackend):
    """Runs each job as a Kubernetes Job in ``settings.kubernetes_namespace``."""

    name: ClassVar[JobBackendName] = "kubernetes"

    def __init__(self, settings: Settings, batch_api: BatchApi | None = None) -> None:
        self.settings = settings
        self._api = batch_api
        self._owned = batch_api is None  # a client built here is closed here
        self._lock = threading.Lock()

    def _batch(self) -> BatchApi:
        """The API client, built on first use: the in-cluster service account when REA runs in
        the cluster, else the kubeconfig (a developer's machine)."""
        with self._lock:
            if self._api is None:
                from kubernetes import client, config

                try:
                    config.load_incluster_config()
                except config.ConfigException:
                    config.load_kube_config()
                self._api = client.BatchV1Api()
            return self._api

    def _create(self, body: dict[str, Any]) -> None:
        try:
            self._batch().create_namespaced_job(
                self.settings.kubernetes_namespace, body, _request_timeout=API_TIMEOUT_S
            )
        except Exception as error:
            if _status(error) != 409:  # 409: a Job of that name exists, i.e. it was submitted before
                raise

    def _delete(self, job_id: str) -> None:
        try:
            self._batch().delete_namespaced_job(
                job_name(job_id),
                self.settings.kubernetes_namespace,
                propagation_policy="Background",  # the pod goes too (SIGTERM: its job side reports)
                _request_timeout=API_TIMEOUT_S,
            )
        except Exception as error:
            if _status(error) != 404:  # 404: unknown, or already removed after it finished
                raise

    async def submit(self, event: JobSubmitted) -> None:
        """Create the job's Job unless one of that name exists (the client blocks: a thread)."""
        await asyncio.to_thread(self._create, job_manifest(event, self.settings))

    async def cancel(self, job_id: str) -> None:
        """Delete the job's Job and its pod; nothing when there is none."""
        await asyncio.to_thread(self._delete, job_id)

    async def close(self) -> None:
        """Close the HTTP pool of a client this backend built (a given one belongs to the caller)."""
        if not self._owned or self._api is None:
            return
        api, self._api = self._api, None
        client = getattr(api, "api_client", None)
        if client is not None:
            await asyncio.to_thread(client.close)
