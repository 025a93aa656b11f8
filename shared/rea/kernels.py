"""Kernels as they cross service boundaries: a candidate's sources, a registry entry, and what a
trainer reports about the kernels it ran.

KernelEvolve (``rea_kernel``) writes the registry; the executor reads it for a job that asked
for evolved kernels and hands the entries to the job, whose trainer runs them. This module is
the contract all three share, and it stays free of torch: plain data and the registry's reader.

A candidate's sources are untrusted text. Nothing in a service process compiles, imports or
runs them: KernelEvolve's evaluator builds them in a sandboxed child, and a trainer builds a
registry entry (one that passed that evaluation) inside its own job process.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:  # jobs import this module: they need the models, not the database driver
    from pymongo.asynchronous.database import AsyncDatabase

ParamValue = int | str | bool
ENTRY_POINT = "kernel.py"
REGISTRY_COLLECTION = "kernels"
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


class Candidate(BaseModel):
    """One kernel for one operator on one target, with the parameters it was rendered from
    (empty for a hand- or LLM-written one). Every candidate has a ``kernel.py`` that defines
    ``run(*inputs, **attributes) -> torch.Tensor``; a target may add sources it builds first (the
    ``cpu`` target compiles ``kernel.cpp`` into ``kernel.so`` beside it)."""

    model_config = ConfigDict(frozen=True)

    operator: str
    target: str
    params: dict[str, ParamValue] = Field(default_factory=dict)
    sources: dict[str, str]
    author: str = Field(
        default="template",
        max_length=200,
        description="Who wrote it: 'template' for a target's template, else its writer (llm:MODEL).",
    )
    note: str = Field(default="", max_length=500, description="What a written kernel does differently.")

    @field_validator("sources")
    @classmethod
    def _plain_file_names(cls, sources: dict[str, str]) -> dict[str, str]:
        """Source names become file names in the sandbox: no paths, no hidden files."""
        for name in sources:
            if not _FILE_NAME.fullmatch(name) or ".." in name:
                raise ValueError(f"source name {name!r} is not a plain file name")
        if ENTRY_POINT not in sources:
            raise ValueError(f"a candidate needs a {ENTRY_POINT} defining run(*inputs, **attributes)")
        return sources

    @property
    def digest(self) -> str:
        """A content hash: two candidates with the same digest are the same kernel."""
        content = json.dumps([self.operator, self.target, sorted(self.sources.items())])
        return hashlib.sha256(content.encode()).hexdigest()[:16]


class Provenance(BaseModel):
    """Where a kernel came from, so a person can reproduce the search that found it."""

    search_id: str
    method: Literal["mcts_evolution", "random", "manual"]
    seed: int
    evaluations: int = Field(ge=1, description="Candidates the search evaluated before this one won.")


class KernelEntry(BaseModel):
    """The fastest correct kernel known for one operator, shape bucket, dtype, target and device
    model, with the evidence: its correctness trials and its time beside eager PyTorch (and
    ``torch.compile``) in the same evaluation."""

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
    published_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @property
    def key(self) -> str:
        return registry_key(self.operator, self.bucket, self.dtype, self.target, self.device)


def registry_key(operator: str, bucket: str, dtype: str, target: str, device: str) -> str:
    return "|".join((operator, bucket, dtype, target, device))


class KernelUse(BaseModel):
    """What a trainer ran for one operator and shape bucket: a registry kernel (``kernel`` is
    its registry key) or PyTorch (``kernel`` is None, and ``reason`` says why), and how often.
    ``shape`` is the first shape seen in the bucket, so a person can search kernels for it."""

    operator: str
    bucket: str
    shape: dict[str, Any]
    kernel: str | None = None
    calls: int = Field(default=0, ge=0)
    reason: str = ""


class KernelRegistryReader:
    """Reads the registry (MongoDB ``kernels``): what a trainer, the CLI or a dashboard asks.

    Contract: entries are :class:`KernelEntry` documents keyed by :func:`registry_key`; each
    key holds the fastest kernel published under it (KernelEvolve's writer keeps that true).
    """

    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.collection = db[REGISTRY_COLLECTION]

    async def entries(
        self, operator: str | None = None, target: str | None = None, device: str | None = None
    ) -> list[KernelEntry]:
        wanted = {"operator": operator, "target": target, "device": device}
        query = {field: value for field, value in wanted.items() if value is not None}
        cursor = self.collection.find(query).sort([("operator", 1), ("bucket", 1)])
        return [KernelEntry.model_validate(doc) async for doc in cursor]

    async def best(
        self, operator: str, target: str, device: str, bucket: str, dtype: str
    ) -> KernelEntry | None:
        """The kernel a trainer on ``device`` should run for this operator and shape bucket."""
        doc = await self.collection.find_one({"_id": registry_key(operator, bucket, dtype, target, device)})
        return None if doc is None else KernelEntry.model_validate(doc)
