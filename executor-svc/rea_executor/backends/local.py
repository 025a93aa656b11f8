"""The ``local`` backend: the job workers of this deployment (:mod:`rea_executor.worker`).

Its submission is the job queue itself: every worker reads its share of the queue's partitions
and runs the job side in-process for each job of this backend, so nothing is handed over here.
The executor places each local job on the partition of the least busy live worker and shares
the workers between campaigns by budget (:mod:`rea_executor.shares`). A job is trained at most
once whatever the queue redelivers (the job ledger); a worker that dies stops renewing its
jobs' leases, and the executor declares them lost. Cancellation reaches a running local job
through the ledger, on its next heartbeat.
"""

from __future__ import annotations

from typing import ClassVar

from rea.events import JobBackendName, JobSubmitted
from rea_executor.backends.base import JobBackend


class LocalBackend(JobBackend):
    name: ClassVar[JobBackendName] = "local"

    async def submit(self, event: JobSubmitted) -> None:
        """Nothing to do: the workers take the job off the queue themselves."""

    async def cancel(self, job_id: str) -> None:
        """Nothing to do: the job side stops the job when the ledger says so."""
