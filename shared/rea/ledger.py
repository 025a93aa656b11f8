"""The job ledger: one MongoDB document per job id, written by the job side — the proof that a
job ran, what it cost and what it said, which survives any restart.

Contract
--------
* **At most one execution per job id.** A worker *claims* a job by inserting its document
  (the ``_id`` is the job id, so the insert is the check). A job whose document exists is never
  started again, whatever the broker redelivers or an outbox replay re-sends; only the worker
  that claimed it may take up its own claim again, before the job starts. A job whose
  worker was lost is not restarted either: the runbook retries it under a new job id.
* **The first final word wins.** :meth:`JobLedger.finish` (the worker's result) and
  :meth:`JobLedger.declare_lost` (an executor that saw the lease expire) each set ``final``
  only if no final word is there yet, atomically; the loser stays silent.
* **The final event is kept** (its exact bytes), so a result the broker lost is sent again.
* **The CPU is the OS's.** While a job runs its worker samples the job process's CPU time
  into ``cpu_seconds`` (every heartbeat); when the job ends it is the ``wait4`` measurement.
  A job whose worker died is charged at least its last sample (see the executor).
* **A job's own output** (stdout and stderr, the last ``LOG_LIMIT`` bytes) is kept in ``log``.
* **Cancellation** is a flag on the document (``cancel``): a worker checks it before it
  starts the job and on every heartbeat while it runs, and stops the job when it is set.

Redis leases stay what tells the executor, quickly, that a worker is gone; this ledger is
what says whether the job ran and what it said.

Document fields: ``_id`` (job id), ``campaign_id``, ``phase``, ``worker``, ``claimed_at``,
``pid``, ``started_at``, ``cpu_seconds``, ``status`` (``claimed``, ``running``, ``completed``,
``failed``, ``lost``, ``cancelled``), ``finished_at``, ``final`` (event bytes), ``log``,
``cancel``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel
from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

LOG_LIMIT = 64 * 1024
COLLECTION = "job_runs"

RunStatus = Literal["claimed", "running", "completed", "failed", "lost", "cancelled"]


class JobRun(BaseModel):
    """What the ledger knows of one job (the typed read model of a ``job_runs`` document)."""

    job_id: str
    campaign_id: str = ""
    phase: str = ""
    worker: str | None = None
    claimed_at: datetime | None = None
    pid: int | None = None
    started_at: datetime | None = None
    cpu_seconds: float = 0.0
    status: RunStatus = "claimed"
    finished_at: datetime | None = None
    final: bytes | None = None
    log: str = ""
    cancel: bool = False

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> JobRun:
        return cls.model_validate({**doc, "job_id": doc["_id"]})

    def resumable_by(self, worker: str) -> bool:
        """Whether ``worker`` may take this job up again: it claimed it, on an attempt cut short
        before the job started (no final word, not cancelled)."""
        return self.worker == worker and self.status == "claimed" and self.final is None and not self.cancel


def _now() -> datetime:
    return datetime.now(UTC)


class JobLedger:
    """Typed access to the ``job_runs`` collection. See the module docstring for the contract."""

    def __init__(self, collection: AsyncCollection[dict[str, Any]]) -> None:
        self.runs = collection

    async def ensure_indexes(self) -> None:
        await self.runs.create_index([("campaign_id", ASCENDING)])

    async def get(self, job_id: str) -> JobRun | None:
        doc = await self.runs.find_one({"_id": job_id})
        return None if doc is None else JobRun.from_doc(doc)

    async def claim(self, job_id: str, campaign_id: str, phase: str, worker: str) -> bool:
        """Take the job for its one execution; False when it was claimed (or cancelled) before.

        A worker gets back its own claim on a job that has not started: when the acknowledgement
        of its insert was lost with a dropped connection, its retry takes the job up again
        instead of leaving it claimed by nobody who will run it."""
        try:
            await self.runs.insert_one(
                {
                    "_id": job_id,
                    "campaign_id": campaign_id,
                    "phase": phase,
                    "worker": worker,
                    "claimed_at": _now(),
                    "status": "claimed",
                    "cpu_seconds": 0.0,
                }
            )
        except DuplicateKeyError:
            run = await self.get(job_id)
            return run is not None and run.resumable_by(worker)
        return True

    async def started(self, job_id: str, pid: int) -> None:
        await self.runs.update_one(
            {"_id": job_id, "final": {"$exists": False}},
            {"$set": {"pid": pid, "started_at": _now(), "status": "running"}},
        )

    async def sample(self, job_id: str, cpu_seconds: float) -> bool:
        """Record the CPU the running job has used so far; returns whether it must stop: its
        campaign was cancelled, or an executor already gave the job's final word (lost)."""
        doc = await self.runs.find_one_and_update(
            {"_id": job_id, "final": {"$exists": False}},
            {"$max": {"cpu_seconds": round(cpu_seconds, 3)}},
            projection={"cancel": 1},
        )
        return doc is None or bool(doc.get("cancel"))

    async def finish(
        self, job_id: str, final: bytes, status: RunStatus, cpu_seconds: float | None, log: str = ""
    ) -> bool:
        """The worker's final word (its ``job.completed`` / ``job.failed`` event); False when an
        executor declared the job lost first."""
        update: dict[str, Any] = {
            "final": final,
            "status": status,
            "finished_at": _now(),
            "log": log[-LOG_LIMIT:],
        }
        if cpu_seconds is not None:
            update["cpu_seconds"] = round(cpu_seconds, 3)
        done = await self.runs.update_one({"_id": job_id, "final": {"$exists": False}}, {"$set": update})
        return done.modified_count == 1

    async def declare_lost(
        self, job_id: str, campaign_id: str, phase: str, final: bytes, status: RunStatus = "lost"
    ) -> bool:
        """An executor's final word for a job whose worker is gone (or that was cancelled before
        any worker took it); False when the job had its final word already."""
        try:
            done = await self.runs.update_one(
                {"_id": job_id, "final": {"$exists": False}},
                {
                    "$set": {"final": final, "status": status, "finished_at": _now()},
                    "$setOnInsert": {"campaign_id": campaign_id, "phase": phase, "cpu_seconds": 0.0},
                },
                upsert=True,
            )
        except DuplicateKeyError:
            return False
        return done.modified_count == 1 or done.upserted_id is not None

    async def request_cancel(self, job_id: str, campaign_id: str, phase: str) -> bool:
        """Ask whoever runs the job to stop it, and every worker not to start it. Returns whether
        a worker had claimed it: if not, no worker ever will, and nobody else reports it."""
        try:
            doc = await self.runs.find_one_and_update(
                {"_id": job_id},
                {
                    "$set": {"cancel": True},
                    "$setOnInsert": {
                        "campaign_id": campaign_id,
                        "phase": phase,
                        "status": "claimed",
                        "cpu_seconds": 0.0,
                    },
                },
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:  # a worker's claim won the race to insert it
            return await self.request_cancel(job_id, campaign_id, phase)
        return bool(doc and doc.get("worker"))

    async def of_campaign(self, campaign_id: str) -> list[JobRun]:
        return [JobRun.from_doc(doc) async for doc in self.runs.find({"campaign_id": campaign_id})]
