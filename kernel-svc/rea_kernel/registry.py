"""The kernel registry: the fastest correct kernel known for each operator, shape bucket, dtype,
target and device model, in MongoDB, with the evidence that it is correct and fast.

An entry is only ever replaced by a kernel that was faster against eager PyTorch **in its own
evaluation** (a speedup, measured beside the reference in the same process, compares across
runs on a shared, noisy machine; two absolute times would not). Kernels for a different device
model never replace each other: a kernel tuned on one CPU or GPU is evidence about that one.

Contract of :class:`KernelRegistry`:

- ``publish(entries)`` keeps, per key, the entry with the highest ``speedup_vs_eager``; it is
  safe to call from several searches at once (the store's conditional replace decides).
- ``entries(...)`` lists what is kept, filtered; ``best(...)`` is what a trainer asks for.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from rea.events import utc_now
from rea_kernel.candidate import Candidate
from rea_kernel.evaluator import Evaluation

COLLECTION = "kernels"


class Provenance(BaseModel):
    """Where a kernel came from, so a person can reproduce the search that found it."""

    search_id: str
    method: Literal["mcts_evolution", "random", "manual"]
    seed: int
    evaluations: int = Field(ge=1, description="Candidates the search evaluated before this one won.")


class KernelEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    operator: str
    bucket: str = Field(description="The operator's shape bucket the timing was made in.")
    dtype: str
    target: str
    device: str
    candidate: Candidate
    speedup_vs_eager: float = Field(gt=0)
    speedup_vs_compiled: float | None = None
    candidate_seconds: float
    eager_seconds: float
    compiled_seconds: float | None = None
    shape: dict[str, Any] = Field(description="The benchmark shape the timing was made on.")
    correct_trials: int = Field(ge=0, description="Correctness trials it passed, every shape and seed.")
    provenance: Provenance
    published_at: datetime = Field(default_factory=utc_now)

    @property
    def key(self) -> str:
        return registry_key(self.operator, self.bucket, self.dtype, self.target, self.device)


def registry_key(operator: str, bucket: str, dtype: str, target: str, device: str) -> str:
    return "|".join((operator, bucket, dtype, target, device))


def entries_from(candidate: Candidate, evaluation: Evaluation, provenance: Provenance) -> list[KernelEntry]:
    """One entry per benchmark shape a passing candidate was timed on (none for a candidate that
    did not pass, or that was checked but not timed, as under an interpreter)."""
    if not evaluation.passed:
        return []
    correct = sum(check.passed for check in evaluation.correctness)
    return [
        KernelEntry(
            operator=evaluation.operator,
            bucket=timing.bucket,
            dtype=timing.dtype,
            target=evaluation.target,
            device=timing.device,
            candidate=candidate,
            speedup_vs_eager=timing.speedup_over_eager,
            speedup_vs_compiled=timing.speedup_over_compiled,
            candidate_seconds=timing.candidate_seconds,
            eager_seconds=timing.eager_seconds,
            compiled_seconds=timing.compiled_seconds,
            shape=timing.shape,
            correct_trials=correct,
            provenance=provenance,
        )
        for timing in evaluation.timings
        if timing.purpose == "benchmark"
    ]


class KernelRegistry:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.collection = db[COLLECTION]

    async def ensure_indexes(self) -> None:
        await self.collection.create_index(
            [("operator", ASCENDING), ("target", ASCENDING), ("device", ASCENDING)]
        )

    async def publish(self, entries: list[KernelEntry]) -> list[KernelEntry]:
        """Keep each entry that beats what is kept under its key; returns those kept."""
        kept: list[KernelEntry] = []
        for entry in entries:
            document = {"_id": entry.key, **entry.model_dump(mode="json")}
            faster = {"_id": entry.key, "speedup_vs_eager": {"$lt": entry.speedup_vs_eager}}
            if (await self.collection.replace_one(faster, document)).matched_count:
                kept.append(entry)
                continue
            try:
                await self.collection.insert_one(document)
            except DuplicateKeyError:
                continue  # an entry at least as fast is kept already
            kept.append(entry)
        return kept

    async def entries(
        self, operator: str | None = None, target: str | None = None, device: str | None = None
    ) -> list[KernelEntry]:
        wanted = {"operator": operator, "target": target, "device": device}
        query = {field: value for field, value in wanted.items() if value is not None}
        cursor = self.collection.find(query).sort([("operator", ASCENDING), ("bucket", ASCENDING)])
        return [KernelEntry.model_validate(doc) async for doc in cursor]

    async def best(
        self, operator: str, target: str, device: str, bucket: str, dtype: str
    ) -> KernelEntry | None:
        """The kernel a trainer on ``device`` should run for this operator and shape bucket."""
        doc = await self.collection.find_one({"_id": registry_key(operator, bucket, dtype, target, device)})
        return None if doc is None else KernelEntry.model_validate(doc)
