"""The kernel registry on a real MongoDB (SecantusDB): a kernel is replaced only by one that was
faster against eager in its own evaluation, per device model, also when searches race."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator

import pytest_asyncio
from pymongo import AsyncMongoClient
from typer.testing import CliRunner

from rea.kernels import Candidate, Provenance
from rea.settings import Settings
from rea_kernel.evaluator import Evaluation, ShapeCheck, Timing
from rea_kernel.registry import KernelRegistry, entries_from
from rea_kernel.sandbox import Verdict
from rea_tools.cli import app

CPU = "cpu: Test CPU 9000"
PROVENANCE = Provenance(search_id="s-1", method="mcts_evolution", seed=0, evaluations=12)


def candidate(tag: str) -> Candidate:
    return Candidate(
        operator="layer_norm", target="cpu", params={"tag": tag}, sources={"kernel.py": f"# {tag}"}
    )


def evaluation(
    speedup: float, device: str = CPU, verdict: Verdict = Verdict.PASSED, purpose: str = "benchmark"
) -> Evaluation:
    timing = Timing.model_validate(
        {
            "shape": {"rows": 4096, "dim": 256},
            "bucket": "r4k-d256",
            "dtype": "float32",
            "device": device,
            "threads": 2,
            "repeats": 20,
            "candidate_seconds": 1e-3 / speedup,
            "eager_seconds": 1e-3,
            "compiled_seconds": 8e-4,
            "purpose": purpose,
        }
    )
    check = ShapeCheck(shape={"rows": 3, "dim": 5}, bucket="r1-d8", dtype="float32", seed=7, passed=True)
    return Evaluation(
        candidate="digest",
        operator="layer_norm",
        target="cpu",
        device=device,
        verdict=verdict,
        reason="test",
        correctness=[check, check],
        timings=[timing],
    )


@pytest_asyncio.fixture
async def registry(settings: Settings) -> AsyncIterator[KernelRegistry]:
    client: AsyncMongoClient = AsyncMongoClient(str(settings.mongo_uri))
    made = KernelRegistry(client[settings.mongo_db])
    await made.ensure_indexes()
    try:
        yield made
    finally:
        await client.close()


def test_only_a_passing_candidates_benchmark_timings_become_entries() -> None:
    [entry] = entries_from(candidate("a"), evaluation(2.0), PROVENANCE)
    assert (entry.operator, entry.bucket, entry.dtype, entry.device) == (
        "layer_norm",
        "r4k-d256",
        "float32",
        CPU,
    )
    assert entry.speedup_vs_eager == 2.0 and entry.speedup_vs_compiled == 1.6
    assert entry.correct_trials == 2
    assert entries_from(candidate("a"), evaluation(2.0, verdict=Verdict.REJECTED), PROVENANCE) == []
    assert entries_from(candidate("a"), evaluation(2.0, purpose="neighbour"), PROVENANCE) == []


async def test_a_kernel_is_replaced_only_by_a_faster_one_on_the_same_device(registry: KernelRegistry) -> None:
    first = entries_from(candidate("first"), evaluation(2.0), PROVENANCE)
    assert await registry.publish(first) == first
    assert await registry.publish(entries_from(candidate("slower"), evaluation(1.5), PROVENANCE)) == []
    faster = entries_from(candidate("faster"), evaluation(3.0), PROVENANCE)
    assert await registry.publish(faster) == faster
    other_device = entries_from(candidate("elsewhere"), evaluation(1.1, device="cpu: Other"), PROVENANCE)
    assert await registry.publish(other_device) == other_device

    best = await registry.best("layer_norm", "cpu", CPU, "r4k-d256", "float32")
    assert best is not None and best.candidate.params == {"tag": "faster"}
    assert len(await registry.entries(operator="layer_norm")) == 2
    assert [e.device for e in await registry.entries(device="cpu: Other")] == ["cpu: Other"]
    assert await registry.best("layer_norm", "cpu", CPU, "r1-d8", "float32") is None


async def test_racing_searches_keep_the_fastest(registry: KernelRegistry) -> None:
    """Whichever search inserts a key first, and however the others interleave with it (a
    slower insert landing between a faster one's replace and insert among them), the fastest
    is what stays."""
    speedups = [1.2, 4.0, 2.5, 3.9, 1.0, 3.0]
    for round_ in range(20):
        await registry.collection.delete_many({})
        order = random.Random(round_).sample(speedups, len(speedups))
        racing = [entries_from(candidate(str(s)), evaluation(s), PROVENANCE) for s in order]
        await asyncio.gather(*(registry.publish(entries) for entries in racing))
        best = await registry.best("layer_norm", "cpu", CPU, "r4k-d256", "float32")
        assert best is not None and best.speedup_vs_eager == 4.0, (round_, order)


async def test_rea_kernels_list_shows_what_the_registry_keeps(
    registry: KernelRegistry, env: dict[str, str]
) -> None:
    await registry.publish(entries_from(candidate("kept"), evaluation(2.5), PROVENANCE))
    runner = CliRunner()
    shown = await asyncio.to_thread(runner.invoke, app, ["kernels", "list", "--json"], env=env)
    assert shown.exit_code == 0, shown.output
    [row] = json.loads(shown.stdout)
    assert (row["operator"], row["device"], row["speedup_vs_eager"]) == ("layer_norm", CPU, 2.5)
    assert row["provenance"]["evaluations"] == 12
    other = await asyncio.to_thread(
        runner.invoke, app, ["kernels", "list", "--operator", "fm_interaction"], env=env
    )
    assert other.exit_code == 0 and "registry is empty" in other.output
