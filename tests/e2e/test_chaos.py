"""The fault-injection suite at CI size: it must hold every guarantee while everything breaks."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from rea_tools.chaos import ChaosPlan, run_chaos

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(1500)
async def test_nothing_is_lost_executed_twice_overspent_or_crashed_under_faults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Generous: the campaigns run through two whole-stack restarts on a 2-core machine.
    plan = ChaosPlan(campaigns=3, malformed=1000, seed=7, timeout_s=1200)

    report = await run_chaos(plan, tmp_path, Console(stderr=True))

    with capsys.disabled():  # the figures belong in the CI log, pass or fail
        Console().print(report.table())
    assert report.passed, (report.unfinished, report.crashes, report.missed)
    assert report.executions > 0
    assert report.executed_more_than_once == 0 and report.cpu_beyond_cap == 0
    assert report.completed + report.paused_for_budget == plan.campaigns
    assert report.completed >= plan.campaigns - 1
    assert report.faults["malformed messages"] >= 1000
    assert report.faults["broker restarts"] == 1
    assert report.faults["service kills (-9)"] == 4 + plan.workers
    assert report.faults["events replayed"] > 0
    assert report.faults["stack kills (-9 all)"] == 1 and report.faults["stack restarts"] == 1
    assert report.landed["dead letters recorded"] >= 1000
