"""A job forked warm from a zygote trains exactly as the same job started cold, for both
registered example workloads, and does not pay for importing torch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from rea.events import JobSpec
from rea_executor.runner import run_job
from rea_executor.warm import WarmStarts

DATASET = "synthetic:rows=2000,crosses=1,strength=3"


@pytest.fixture(scope="module")
def zygotes() -> Iterator[WarmStarts]:
    warm = WarmStarts()
    yield warm
    warm.close()


@pytest.mark.parametrize(("workload", "config"), [("ranker", {"epochs": 1}), ("autoint", {"passes": 1})])
def test_a_warm_job_gives_the_cold_jobs_metrics_for_less_cpu(
    zygotes: WarmStarts, workload: str, config: dict[str, Any]
) -> None:
    spec = JobSpec(
        job_id=f"warm-{workload}",
        campaign_id="warm",
        phase="validation",
        workload=workload,
        dataset=DATASET,
        config=config,
        seed=3,
        timeout_s=300,
        memory_mb=4096,
    )
    cold = run_job(spec)
    warm = [run_job(spec, prepare=False, warm=zygotes) for _ in range(2)]
    assert [o.status for o in (cold, *warm)] == ["ok"] * 3, [o.error for o in (cold, *warm)]
    assert all((o.validation, o.test) == (cold.validation, cold.test) for o in warm)
    assert cold.cost is not None
    # The second warm job reuses the zygote; a cold one imports torch (2+ CPU-s) itself.
    assert warm[1].cost is not None and warm[1].cost.cpu_seconds < cold.cost.cpu_seconds - 1.5, (
        cold.cost,
        warm[1].cost,
    )
