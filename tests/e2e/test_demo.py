"""`rea demo --json`: the whole product on the embedded stack, started and stopped by the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .helpers import run_rea

pytestmark = pytest.mark.e2e


def test_demo_improves_the_ranker_on_movielens(tmp_path: Path) -> None:
    done = run_rea(["demo", "--json"], {"REA_HOME": str(tmp_path / "rea")}, timeout=900)

    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == "completed"
    assert result["best"]["ne"] < result["baseline"]["ne"]
    assert 0 < result["baseline"]["auc"] < 1 and 0 < result["best"]["auc"] < 1
    assert result["jobs_completed"] >= 2 and result["jobs_failed"] == 0
    assert result["compute_seconds"] > 0
    # The winner was confirmed against the baseline on three seeds of the test split.
    assert result["seeds"] == 3 and result["verdict"] in ("better", "not significant")
    low, high = result["ne_delta_ci"]
    assert low <= result["ne_delta"] <= high
    # The demo shuts down everything it started.
    assert not (tmp_path / "rea" / "stack.json").exists()
