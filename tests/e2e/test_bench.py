"""`rea bench` end to end at a toy size: REA (a real campaign on its own embedded stack) and
random search at the same budget, the warm-start pair, and the results.json others rely on."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .helpers import FAST_DATASET, run_rea

pytestmark = pytest.mark.e2e


def test_bench_writes_runs_a_summary_and_the_warm_start_fraction(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    args = ["bench", "--workload", FAST_DATASET, "--methods", "rea,random", "--budget-cpu-seconds", "30"]
    args += ["--seeds", "1", "--confirm-seeds", "2", "--epochs", "1", "--warm-start", "--out", str(out)]
    env = {"REA_HOME": str(tmp_path / "home"), "PATH": os.environ.get("PATH", "")}

    done = run_rea(args, env, timeout=900)

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    runs = results["runs"]
    assert sorted(run["method"] for run in runs) == ["random", "rea"]
    for run in runs:
        assert run["workload"] == FAST_DATASET and run["seed"] == 0
        assert run["gain"] == pytest.approx(
            (run["baseline_test_ne"] - run["best_test_ne"]) / run["baseline_test_ne"]
        )
        assert run["budget_used_cpu_s"] > 0
        assert len(run["best_ne_by_seed"]) == len(run["baseline_ne_by_seed"]) == 2
    assert set(results["summary"]["mean_gain"]) == {"rea", "random"}
    [pair] = results["warm_start"]
    fraction = results["summary"]["warm_start_budget_fraction"]
    assert 0 < fraction <= 1
    if pair["budget_fraction"] is not None:
        assert pair["budget_fraction"] == fraction
        assert pair["second_reached_cpu_s"] == pytest.approx(fraction * 30)
    assert (out / "gains.png").read_bytes().startswith(b"\x89PNG")
    assert "Test-NE gain over the baseline" in done.stdout + done.stderr  # the printed table
