"""The kernel registry's writer: the fastest correct kernel known for each operator, shape bucket,
dtype, target and device model, in MongoDB, with the evidence that it is correct and fast.

The entries and the reader are the shared contract (:mod:`rea.kernels`): trainers read them.
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

from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from rea.kernels import Candidate, KernelEntry, KernelRegistryReader, Provenance
from rea_kernel.evaluator import Evaluation


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


class KernelRegistry(KernelRegistryReader):
    async def ensure_indexes(self) -> None:
        await self.collection.create_index(
            [("operator", ASCENDING), ("target", ASCENDING), ("device", ASCENDING)]
        )

    async def publish(self, entries: list[KernelEntry]) -> list[KernelEntry]:
        """Keep each entry that beats what is kept under its key; returns those kept."""
        return [entry for entry in entries if await self._keep_if_faster(entry)]

    async def _keep_if_faster(self, entry: KernelEntry) -> bool:
        """A conditional replace, else an insert. When another search inserts the key between
        the two, the replace decides again: the key exists from then on (entries are never
        removed), so it is replaced exactly when the kept entry is slower."""
        document = {"_id": entry.key, **entry.model_dump(mode="json")}
        faster = {"_id": entry.key, "speedup_vs_eager": {"$lt": entry.speedup_vs_eager}}
        if (await self.collection.replace_one(faster, document)).matched_count:
            return True
        try:
            await self.collection.insert_one(document)
        except DuplicateKeyError:
            return bool((await self.collection.replace_one(faster, document)).matched_count)
        return True
