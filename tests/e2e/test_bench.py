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
    """The warm-start pair must reach the first campaign's best: the fraction used to fall back
    to 1.0 when it did not, so ``0 < fraction <= 1`` held for a warm start that never worked."""
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
    # The second campaign of the pair, on the first's insights, gets to the first's best test NE
    # before its budget runs out (a pair that never gets there has no fraction, not 1.0).
    [pair] = results["warm_start"]
    assert pair["reached"] is True, pair
    assert 0 < pair["budget_fraction"] < 1
    assert pair["second_reached_cpu_s"] == pytest.approx(pair["budget_fraction"] * 30)
    summary = results["summary"]
    assert summary["warm_start_reached"] == summary["warm_start_pairs"] == 1
    assert summary["warm_start_budget_fraction"] == pair["budget_fraction"]
    assert (out / "gains.png").read_bytes().startswith(b"\x89PNG")
    printed = done.stdout + done.stderr
    assert "Test-NE gain over the baseline" in printed  # the printed tables
    assert "Warm start" in printed and "never reached" not in printed


def test_a_transfer_campaign_starts_from_the_insights_its_teaching_campaigns_left(tmp_path: Path) -> None:
    """REA's teaching campaigns (one per development case) share one insights DB; the transfer
    campaign's own database starts with a copy, so its hypotheses are ranked by that history."""
    out = tmp_path / "bench"
    args = ["bench", "--workload", FAST_DATASET, "--methods", "rea-transfer", "--transfer-from", "dev"]
    args += ["--budget-cpu-seconds", "30", "--seeds", "1", "--confirm-seeds", "1", "--epochs", "1"]
    env = {"REA_HOME": str(tmp_path / "home"), "PATH": os.environ.get("PATH", "")}

    done = run_rea([*args, "--out", str(out)], env, timeout=1200)

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert [run["method"] for run in results["runs"]] == ["rea-transfer"]
    assert results["settings"]["transfer_from"] == "dev"
    taught = results["teaching_runs"]
    assert [(t["method"], t["seed"]) for t in taught] == [("rea", 0)] * 3
    campaigns = [json.loads(path.read_text()) for path in (out / "campaigns").iterdir()]
    [transfer] = [c for c in campaigns if c["request"]["dataset"] == FAST_DATASET]
    assert any(h["source"] == "history" for h in transfer["hypotheses"]), transfer["hypotheses"]
    assert "rea-transfer" in done.stdout + done.stderr
