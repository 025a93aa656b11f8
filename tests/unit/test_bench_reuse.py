"""A bench takes earlier runs made with the same settings instead of running them again."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from rea_bench.bench import BenchPlan, BenchRun, _settings, reusable_runs
from rea_bench.suites import BenchCase

ADULT = BenchCase("ranker", "adult")


def run(method: str, seed: int, gain: float = 0.02) -> BenchRun:
    return BenchRun(
        method=method,
        workload="adult",
        seed=seed,
        baseline_test_ne=0.6,
        best_test_ne=0.6 * (1 - gain),
        gain=gain,
        budget_used_cpu_s=300,
        best_changes={},
        trials=10,
        best_ne_by_seed=[0.59],
        baseline_ne_by_seed=[0.6],
    )


def saved(tmp_path: Path, plan: BenchPlan, runs: list[BenchRun], name: str = "earlier.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({"settings": _settings(plan), "runs": [asdict(r) for r in runs]}))
    return path


def plan(tmp_path: Path, **changes: Any) -> BenchPlan:
    fields: dict[str, Any] = {"budget_cpu_seconds": 300, **changes}
    return BenchPlan(cases=[ADULT], methods=["rea", "optuna"], seeds=3, out=tmp_path, **fields)


def test_runs_made_with_the_same_settings_are_reused_by_method_case_and_seed(tmp_path: Path) -> None:
    path = saved(
        tmp_path, plan(tmp_path), [run("optuna", 0), run("optuna", 1), run("random", 0), run("rea", 0)]
    )
    found = reusable_runs(plan(tmp_path, reuse=[path]))
    assert sorted(found) == [
        ("optuna", "ranker/adult", 0),
        ("optuna", "ranker/adult", 1),
        ("rea", "ranker/adult", 0),
    ]
    # An ablation changes REA's options: its earlier runs no longer count, the peers' do.
    ablation = reusable_runs(plan(tmp_path, reuse=[path], rea_options={"contenders": 0}))
    assert sorted(ablation) == [("optuna", "ranker/adult", 0), ("optuna", "ranker/adult", 1)]


def test_runs_made_with_another_budget_are_refused(tmp_path: Path) -> None:
    path = saved(tmp_path, plan(tmp_path, budget_cpu_seconds=120), [run("optuna", 0)])
    with pytest.raises(ValueError, match="budget_cpu_seconds"):
        reusable_runs(plan(tmp_path, reuse=[path]))
