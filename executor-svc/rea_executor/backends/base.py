"""The job-backend seam: where a training job runs.

REA's executor decides *which* jobs run and sends each as a ``job.submitted`` event on the job
queue; a backend turns such an event into a running job somewhere — a local worker process, a
Ray job, a Kubernetes Job. Whatever the backend, the same *job side*
(:mod:`rea_executor.jobside`) runs next to the workload's entrypoint: it claims the job in the
job ledger, holds its lease, measures its cost and publishes ``job.completed`` /
``job.failed`` itself. Nothing polls a backend for a job's state.

Contract of a :class:`JobBackend` (each implementation says how it keeps it):

* ``submit`` is idempotent on the job id. Submitting a job the backend already has — queued,
  running or finished — does nothing and is no error: the job queue may deliver an event again
  (a rebalance, a replay after a restart), and the job ledger, not the backend, decides that a
  job is trained at most once.
* The backend starts the job side with the job's resources (``cpus``, ``gpus``, ``memory_mb``)
  and its time limit (``timeout_s``), and with the settings it needs to reach the broker, the
  database and Redis. It never reports a result itself.
* A job side the backend loses or kills after it claimed the job stops renewing its lease; the
  lease expires and the executor declares the job ``lost_worker`` (see
  :mod:`rea_executor.recovery`), charges it and lets the runbook resubmit it under a new job id.
  A job the backend drops before its job side started is not noticed by REA: the backends here
  keep accepted jobs until they run (Ray's job table, Kubernetes' Job objects).
* ``cancel`` stops a job that is queued or running and is a no-op for an unknown or finished
  one. Cancelling a campaign does not depend on it: the job side sees the cancellation in the
  ledger on its next heartbeat and stops itself; ``cancel`` frees the cluster's resources for a
  job that never started.
"""

from __future__ import annotations

import abc
from typing import ClassVar

from rea.events import JobBackendName, JobSubmitted


class JobBackend(abc.ABC):
    """A place to run training jobs (see the module docstring for the contract)."""

    name: ClassVar[JobBackendName]

    @abc.abstractmethod
    async def submit(self, event: JobSubmitted) -> None:
        """Start the job side for ``event``'s job, unless the backend already has that job."""

    @abc.abstractmethod
    async def cancel(self, job_id: str) -> None:
        """Stop the job if it is queued or running; nothing if it is unknown or finished."""

    async def close(self) -> None:  # noqa: B027 - most backends hold nothing to close
        """Release connections; the backend is not used again."""


JOB_EVENT_ENV = "REA_JOB_EVENT"
"""The environment variable that hands a remote job side its ``job.submitted`` event (JSON)."""
