"""The peers' budgeted search: the same budget rule as REA's executor, the baseline first."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

import pytest
from typer.testing import CliRunner

from rea.events import JobSpec
from rea.workloads import EpochRecord, JobCost, JobError, JobOutput, SplitMetrics, get_workload
from rea_bench.anytime import Trial, best_within, curve
from rea_bench.bench import BenchRun, summarize
from rea_bench.search import budgeted_search, peer_setup, search_space, startup_trials
from rea_bench.suites import SUITES
from rea_executor.runner import JobWatch
from rea_tools import cli

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

    def __call__(self, spec: JobSpec, watch: JobWatch | None = None) -> JobOutput:
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
    assert set(space) == {k.name for k in SCHEMA.knobs if k.tunable}
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
    assert sorted(map(repr, (t.config for t in outcome.history))) == sorted(map(repr, runner.configs))
    assert [t.cpu_seconds for t in outcome.history] == [2.0] * outcome.trials


def test_the_gaussian_process_variant_searches_past_its_random_start() -> None:
    """GPSampler fits a GP for every trial (~2 s each here): a small budget keeps this short."""
    runner = FakeRunner(cost=5.0)
    outcome = budgeted_search("optuna-gp", SCHEMA, BASELINE, 30.0, make_job, runner, seed=1, parallel=1)
    assert runner.configs[0] == BASELINE and outcome.startup_trials == 3
    assert outcome.trials > outcome.startup_trials + 1  # the baseline, 3 at random, then the GP
    assert outcome.spent_cpu_seconds <= 30.0


def test_model_based_samplers_start_with_a_quarter_of_the_affordable_trials_at_random() -> None:
    assert [startup_trials(n) for n in (4, 12, 20, 40, 400)] == [3, 3, 5, 10, 10]
    assert "n_startup_trials" in peer_setup("optuna-gp") and "n_startup_trials" not in peer_setup("random")


class EpochRunner:
    """Three epochs of ``EPOCH_S`` each, one CPU-s apiece, each reported as it ends; validation NE
    is best at learning_rate 0.01 and a little lower every epoch. A stopped job is charged the
    epochs it ran."""

    EPOCH_S = 0.3

    def __init__(self) -> None:
        self.stopped = 0
        self.lock = threading.Lock()

    def __call__(self, spec: JobSpec, watch: JobWatch | None = None) -> JobOutput:
        watch = watch or JobWatch()
        ne = 0.8 + abs(spec.config["learning_rate"] - 0.01)
        for epoch in range(1, 4):
            if watch.stopping.wait(self.EPOCH_S):
                with self.lock:
                    self.stopped += 1
                cost = JobCost(cpu_seconds=epoch - 1.0, wall_seconds=1.0, peak_rss_mb=10)
                return JobOutput(status="failed", cost=cost, error=JobError(kind="killed", message="stopped"))
            watch.progress = [
                *watch.progress,
                EpochRecord(epoch=epoch, train_loss=0.5, val_ne=ne + 0.01 * (3 - epoch)),
            ]
            watch.cpu_seconds = float(epoch)  # as a job's sampled CPU time grows
        metrics = SplitMetrics(ne=ne, auc=0.7, logloss=0.5, rows=10)
        return JobOutput(
            status="ok",
            validation=metrics,
            test=metrics,
            cost=JobCost(cpu_seconds=3.0, wall_seconds=1.0, peak_rss_mb=10),
        )


def test_optuna_prunes_unpromising_jobs_on_their_per_epoch_validation_ne() -> None:
    runner = EpochRunner()
    outcome = budgeted_search("optuna", SCHEMA, BASELINE, 40.0, make_job, runner, seed=3, parallel=2)
    assert runner.stopped >= 1  # some jobs were stopped early, and only what they ran is charged
    # Admission prices each job by estimate, and the cap stops what runs past it at its next look,
    # so the spend may pass the cap by a little, as in the hard-cap test below.
    assert outcome.spent_cpu_seconds <= 40.0 + 3.0
    assert outcome.failed == 0  # a pruned trial is not a failure
    assert peer_setup("optuna").startswith("TPESampler (n_startup_trials")
    assert "SuccessiveHalvingPruner(" in peer_setup("optuna")
    assert peer_setup("optuna-gp").startswith("GPSampler")
    assert peer_setup("random").startswith("RandomSampler, no pruner; optuna ")


class DearRunner(EpochRunner):
    """Every job but the baseline costs ten times the estimate: the hard cap must stop it."""

    def __call__(self, spec: JobSpec, watch: JobWatch | None = None) -> JobOutput:
        watch = watch or JobWatch()
        if spec.job_id == "t-0":
            return super().__call__(spec, watch)
        for tick in range(1, 1000):
            watch.cpu_seconds = 0.5 * tick  # 10 CPU-s a second: 2 between two looks of the search
            if watch.stopping.wait(0.05):
                cost = JobCost(cpu_seconds=watch.cpu_seconds, wall_seconds=1.0, peak_rss_mb=10)
                return JobOutput(status="failed", cost=cost, error=JobError(kind="killed", message="stopped"))
        raise AssertionError("never stopped")


def test_the_budget_is_a_hard_cap_even_when_estimates_are_wrong() -> None:
    outcome = budgeted_search("random", SCHEMA, BASELINE, 40.0, make_job, DearRunner(), seed=0, parallel=1)
    assert outcome.spent_cpu_seconds <= 40.0 + 3.0  # stopped within a look or so of the cap
    assert outcome.best_config == BASELINE  # a stopped job is not a result


def test_a_budget_below_one_job_runs_nothing_and_says_so() -> None:
    with pytest.raises(RuntimeError, match="no trial completed"):
        budgeted_search("random", SCHEMA, BASELINE, 1.0, make_job, FakeRunner(2.0), seed=0)


def run(method: str, workload: str, gain: float) -> BenchRun:
    return BenchRun(method, workload, 0, 0.8, 0.8 * (1 - gain), gain, 10.0, {}, 3, [], [])


def test_the_summary_gives_the_mean_gain_per_method_and_workload() -> None:
    runs = [run("rea", "a", 0.02), run("rea", "a", 0.04), run("optuna", "a", 0.01), run("optuna", "a", 0.03)]
    runs += [run("rea", "b", 0.0), run("optuna", "b", 0.01)]
    summary = summarize(runs)
    assert summary["mean_gain"]["rea"] == {"ranker/a": pytest.approx(0.03), "ranker/b": 0.0}
    assert summary["mean_gain"]["optuna"] == {
        "ranker/a": pytest.approx(0.02),
        "ranker/b": pytest.approx(0.01),
    }
    assert summary["rea_wins"] == {"ranker/a": True, "ranker/b": False}


def test_the_summary_keeps_two_models_on_one_data_set_apart() -> None:
    runs = [run("rea", "adult", 0.02), replace(run("rea", "adult", 0.04), model="autoint")]
    assert summarize(runs)["mean_gain"]["rea"] == {"ranker/adult": 0.02, "autoint/adult": 0.04}


def test_the_evaluation_suite_shares_no_data_set_with_the_development_suite() -> None:
    """What rules were tuned on cannot judge them; the example model is part of evaluation."""
    dev, evaluation = ({case.dataset for case in SUITES[s]} for s in ("dev", "eval"))
    assert not dev & evaluation and len(evaluation) >= 3
    assert {case.model for case in SUITES["eval"]} >= {"ranker", "autoint"}
    for case in SUITES["eval"]:
        assert get_workload(case.model).dataset_error(case.dataset) is None


def test_the_anytime_curve_and_the_best_config_within_part_of_the_budget() -> None:
    trials = [
        Trial(10, 0.80, {"a": 1}),
        Trial(5, None, {"a": 2}),
        Trial(10, 0.78, {"a": 3}),
        Trial(30, 0.70, {"a": 4}),
    ]
    assert curve(trials) == [(10, 0.80), (25, 0.78), (55, 0.70)]
    assert best_within(trials, 27.5) == {"a": 3}  # the 0.70 trial finished past half of 55
    assert best_within(trials, 9) is None


def test_rea_is_compared_with_the_stronger_optuna_variant() -> None:
    runs = [run("rea", "a", 0.03), run("optuna", "a", 0.01), run("optuna-gp", "a", 0.04)]
    assert summarize(runs)["rea_wins"] == {"ranker/a": False}


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "--workload"),
        (["--suite", "eval", "--workload", "adult"], "not both"),
        (["--suite", "prod"], "unknown suite 'prod'; known: dev, eval"),
        (["--workload", "adult", "--model", "nope"], "unknown model 'nope'"),
        (["--workload", "adult", "--rea-set", "budget_cpu_seconds=5"], "set by the bench for every method"),
        (["--workload", "adult", "--rea-set", "validation_share=2"], "validation_share"),
        (["--workload", "adult", "--rea-set", "validation_share"], "--rea-set takes KEY=VALUE"),
    ],
)
def test_bench_says_what_is_wrong_with_its_cases_before_running_anything(args: list[str], says: str) -> None:
    result = CliRunner().invoke(cli.app, ["bench", *args, "--out", "/nonexistent/never-written"])
    assert result.exit_code == 2 and says in " ".join(result.output.split()), result.output
