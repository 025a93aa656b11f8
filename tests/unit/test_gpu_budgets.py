"""GPU-second budgets in the planner and the job side: estimates, the cap each phase gets, what
binds first, extensions, and how many GPUs a job is charged for (the executor's guardrail is
tested with the other budget rules in ``test_executor_logic``)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from rea.events import BudgetExtended, BudgetExtendedPayload, JobRecord, PhaseStarted
from rea.workloads import JobCost
from rea_executor.runner import gpus_held
from rea_planner import logic
from rea_planner.campaign import BudgetChange, validate_campaign

from .test_planner_logic import COSTS, FOLLOW, generated, hypothesis, planning, request

GPU_JOBS = {"job_cpus": 2.0, "job_gpus": 1, "auto_approve_up_to": 10_000}


def test_a_gpu_budget_for_jobs_that_ask_for_no_gpu_is_rejected_with_the_reason() -> None:
    spec, reasons = validate_campaign(request(budget_gpu_seconds=3600))
    assert spec is None
    assert reasons == [
        "budget_gpu_seconds: the jobs ask for no GPU (job_gpus is 0), so nothing would spend it"
    ]


def test_each_job_is_estimated_its_gpus_times_its_wall_time_and_the_phase_gets_the_gpu_cap() -> None:
    campaign = planning(budget_gpu_seconds=500, **GPU_JOBS)
    decision = logic.on_hypotheses_generated(campaign, generated(hypothesis("h1", {"dropout": 0.1})), COSTS)
    [started] = [e for e in decision.emit if isinstance(e, PhaseStarted)]
    plan = started.payload.plan
    for job in plan.jobs:
        assert job.gpus == 1 and job.cpus == 2.0
        assert job.estimated_gpu_seconds == pytest.approx(job.estimated_cpu_seconds / 2)
    assert plan.estimated_gpu_seconds == pytest.approx(sum(j.estimated_gpu_seconds for j in plan.jobs))
    assert started.payload.budget_gpu_seconds == 500


def test_a_cpu_only_campaign_has_no_gpu_cap_and_no_gpu_estimate() -> None:
    decision = logic.on_hypotheses_generated(
        planning(auto_approve_up_to=10_000), generated(hypothesis("h1", {"dropout": 0.1})), COSTS
    )
    [started] = [e for e in decision.emit if isinstance(e, PhaseStarted)]
    assert started.payload.budget_gpu_seconds is None
    assert {job.estimated_gpu_seconds for job in started.payload.plan.jobs} == {0.0}


def test_the_gpu_budget_binds_the_plan_when_it_runs_out_first() -> None:
    campaign = planning(budget_cpu_seconds=1000, budget_gpu_seconds=100, **GPU_JOBS)
    assert campaign.planning_budget([]) == 200  # 100 GPU-s at 2 CPU-s per GPU-s
    ran = JobRecord(
        job_id="j",
        hypothesis_id=None,
        config={},
        status="completed",
        cost=JobCost(cpu_seconds=30, wall_seconds=60, peak_rss_mb=1, gpu_seconds=60),
    )
    assert campaign.planning_budget([ran]) == 30 + 40 * 2
    roomy = planning(budget_cpu_seconds=100, budget_gpu_seconds=10_000, **GPU_JOBS)
    assert roomy.planning_budget([]) == 100  # the CPU budget binds


def test_a_baseline_beyond_the_gpu_budget_is_rejected() -> None:
    campaign = planning(budget_gpu_seconds=1, **GPU_JOBS)
    decision = logic.on_hypotheses_generated(campaign, generated(), COSTS)
    assert decision.state is not None and decision.state.status == "rejected"
    assert decision.state.reasons[0].startswith("budget_gpu_seconds: 1 cannot cover even the baseline")


def test_an_extension_raises_the_gpu_budget_of_every_later_phase() -> None:
    campaign = planning(budget_gpu_seconds=100, **GPU_JOBS).model_copy(update={"status": "running"})
    event = BudgetExtended(
        **FOLLOW, payload=BudgetExtendedPayload(cpu_seconds=50, gpu_seconds=900, by="dana")
    )
    decision = logic.on_budget_extended(campaign, event)
    assert decision.state is not None
    assert decision.state.budget_gpu_seconds() == 1000 and decision.state.budget_cpu_seconds() == 1050
    assert decision.state.notices[-1] == (
        "budget extended by 50 CPU-s and 900 GPU-s by dana: 1050 CPU-s and 1000 GPU-s in all"
    )


def test_gpu_seconds_added_to_a_campaign_without_a_gpu_cap_change_nothing() -> None:
    campaign = planning().model_copy(
        update={"budget_changes": [BudgetChange(cpu_seconds=0, gpu_seconds=0, by="x", at=datetime.now(UTC))]}
    )
    assert campaign.budget_gpu_seconds() is None


def test_an_extension_must_add_something() -> None:
    with pytest.raises(ValidationError, match="CPU seconds, GPU seconds or both"):
        BudgetExtendedPayload(by="dana")
    assert BudgetExtendedPayload(gpu_seconds=3600).describe() == "3600 GPU-s"


@pytest.mark.parametrize(
    ("visible", "asked", "held"),
    [("0,1", 1, 1), ("0,1", 4, 2), ("", 2, 0), ("-1", 1, 0), ("GPU-5f2c", 1, 1), ("0,1", 0, 0)],
)
def test_a_job_holds_the_gpus_it_asked_for_that_it_can_see(visible: str, asked: int, held: int) -> None:
    assert gpus_held(asked, {"CUDA_VISIBLE_DEVICES": visible}, Path("/nonexistent")) == held


def test_without_cuda_visible_devices_the_drivers_gpus_count(tmp_path: Path) -> None:
    for index in range(3):
        (tmp_path / f"0000:0{index}:00.0").mkdir()
    assert gpus_held(2, {}, tmp_path) == 2
    assert gpus_held(8, {}, tmp_path) == 3
    assert gpus_held(1, {}, tmp_path / "no-driver") == 0  # a machine without GPUs charges none
