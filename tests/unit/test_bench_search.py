"""The peers' budgeted search: the same budget rule as REA's executor, the baseline first."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from rea_bench import BenchRun, summarize
from rea_bench.search import budgeted_search, search_space

from rea.events import JobSpec
from rea.workloads import JobCost, JobOutput, SplitMetrics, get_workload

SCHEMA = get_workload("ranker").schema
BASELINE = SCHEMA.resolve({"epochs": 1})


def make_job(config: dict[str, Any], number: int) -> JobSpec:
    return JobSpec(
        job_id=f"t-{number}", campaign_id="bench", phase="bench", workload="ranker",
        dataset="synthetic:rows=100", config=config, seed=0, timeout_s=60, memory_mb=512,
    )  # fmt: skip


class FakeRunner:
    """Each job costs ``cost`` CPU-s; validation NE is best at learning_rate 0.01."""

    def __init__(self, cost: float) -> None:
        self.cost = cost
        self.configs: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, spec: JobSpec) -> JobOutput:
        with self.lock:
            self.configs.append(spec.config)
        ne = 0.8 + abs(spec.config["learning_rate"] - 0.01)
        metrics = SplitMetrics(ne=ne, auc=0.7, logloss=0.5, rows=10)
        return JobOutput(
            status="ok",
            validation=metrics,
            test=metrics,
            cost=JobCost(cpu_seconds=self.cost, wall_seconds=self.cost, peak_rss_mb=10),
        )


def test_the_space_is_every_knob_but_the_fidelity_ones() -> None:
    space = search_space(SCHEMA)
    assert set(space) == {k.name for k in SCHEMA.knobs if not k.fidelity}
    assert "epochs" not in space and "data_fraction" not in space


@pytest.mark.parametrize("sampler", ["optuna", "random"])
def test_search_stays_within_the_budget_and_starts_from_the_baseline(sampler: str) -> None:
    runner = FakeRunner(cost=2.0)
    outcome = budgeted_search(sampler, SCHEMA, BASELINE, 30.0, make_job, runner, seed=1, parallel=2)  # type: ignore[arg-type]
    assert runner.configs[0] == BASELINE
    assert outcome.spent_cpu_seconds <= 30.0
    assert outcome.trials == len(runner.configs) >= 10
    assert outcome.failed == 0
    assert outcome.best_validation_ne == min(0.8 + abs(c["learning_rate"] - 0.01) for c in runner.configs)
    assert all(config["epochs"] == 1 for config in runner.configs)  # the fidelity is the baseline's


def test_a_budget_below_one_job_runs_nothing_and_says_so() -> None:
    with pytest.raises(RuntimeError, match="no trial completed"):
        budgeted_search("random", SCHEMA, BASELINE, 1.0, make_job, FakeRunner(2.0), seed=0)


def run(method: str, workload: str, gain: float) -> BenchRun:
    return BenchRun(method, workload, 0, 0.8, 0.8 * (1 - gain), gain, 10.0, {}, 3, [], [])


def test_the_summary_gives_the_mean_gain_per_method_and_workload() -> None:
    runs = [run("rea", "a", 0.02), run("rea", "a", 0.04), run("optuna", "a", 0.01), run("optuna", "a", 0.03)]
    runs += [run("rea", "b", 0.0), run("optuna", "b", 0.01)]
    summary = summarize(runs)
    assert summary["mean_gain"]["rea"] == {"a": pytest.approx(0.03), "b": 0.0}
    assert summary["mean_gain"]["optuna"] == {"a": pytest.approx(0.02), "b": pytest.approx(0.01)}
    assert summary["rea_wins"] == {"a": True, "b": False}
