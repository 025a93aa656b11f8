"""The read model is a contract between writers and readers: what the planner and the executor
store must parse into the views that the CLI, the logger and the gauges read, with the values
they wrote. A field renamed or retyped on either side fails here, not in a person's terminal."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel

from rea.client import job_rows, jobs_in_flight, summarize
from rea.events import (
    CampaignResult,
    JobCompleted,
    JobFailed,
    JobFinishedPayload,
    JobRecord,
    JobSpec,
    MetricSummary,
    PhasePlan,
    PhaseStarted,
    PhaseStartedPayload,
)
from rea.views import (
    BudgetChangeView,
    CampaignSpecView,
    CampaignStage,
    CampaignView,
    JobView,
    PhaseView,
    campaign_view,
    phase_view,
)
from rea.workloads import JobCost, JobError, JobOutput, SplitMetrics, get_workload
from rea_executor import logic
from rea_executor.state import PhaseExecution, TrackedJob
from rea_planner.campaign import BudgetChange, Campaign, CampaignSpec

FOLLOW = {"campaign_id": "camp-1", "correlation_id": "camp-1"}
CONFIG = get_workload("ranker").schema.resolve({})


@pytest.mark.parametrize(
    ("view", "writer"),
    [
        (CampaignView, Campaign),
        (CampaignStage, Campaign),
        (CampaignSpecView, CampaignSpec),
        (BudgetChangeView, BudgetChange),
        (PhaseView, PhaseExecution),
        (JobView, TrackedJob),
    ],
)
def test_every_field_a_view_reads_is_one_its_writer_stores(
    view: type[BaseModel], writer: type[BaseModel]
) -> None:
    assert set(view.model_fields) - set(writer.model_fields) == set()


def _spec(n: int) -> JobSpec:
    return JobSpec(
        job_id=f"camp-1-validation-{n}",
        campaign_id="camp-1",
        phase="validation",
        hypothesis_id=None if n == 0 else f"h{n}",
        workload="ranker",
        dataset="synthetic:rows=3000",
        config={**CONFIG, "learning_rate": 0.001 * (n + 1)},
        estimated_cpu_seconds=10.0,
        timeout_s=60,
        memory_mb=1024,
    )


def _output(ne: float, error: JobError | None = None) -> JobOutput:
    metrics = SplitMetrics(ne=ne, auc=0.7, logloss=0.4, rows=100)
    cost = JobCost(cpu_seconds=12.5, wall_seconds=13.0, peak_rss_mb=80)
    if error is not None:
        return JobOutput(status="failed", cost=cost, error=error)
    return JobOutput(status="ok", validation=metrics, test=metrics, cost=cost)


def _stored(model: BaseModel) -> dict[str, Any]:
    """What ``Store.apply`` writes for a state."""
    return {"_id": "key", "state": model.model_dump(mode="json")}


def test_a_phase_the_executor_ran_reads_back_with_its_jobs_costs_and_failures() -> None:
    specs = [_spec(0), _spec(1), _spec(2)]
    plan = PhasePlan(phase="validation", jobs=specs, estimated_cpu_seconds=30.0)
    started = PhaseStarted(
        **FOLLOW, payload=PhaseStartedPayload(plan=plan, budget_cpu_seconds=500.0, max_parallel_jobs=2)
    )
    state = logic.on_phase_started(None, started).state
    assert state is not None
    done = JobFinishedPayload(spec=specs[0], output=_output(0.8), worker="w1")
    state = logic.on_job_finished(state, JobCompleted(**FOLLOW, payload=done)).state
    assert state is not None
    oom = _output(0.0, JobError(kind="oom", message="MemoryError"))
    state = logic.on_job_finished(
        state, JobFailed(**FOLLOW, payload=JobFinishedPayload(spec=specs[1], output=oom, worker="w2"))
    ).state
    assert state is not None

    view = phase_view(_stored(state))

    assert (view.campaign_id, view.phase, view.status) == ("camp-1", "validation", state.status)
    assert view.spent_cpu_seconds == state.spent_cpu_seconds == 25.0
    assert view.budget_cpu_seconds == 500.0
    assert [job.spec for job in view.jobs] == [job.spec for job in state.jobs]
    assert [job.status for job in view.jobs] == [job.status for job in state.jobs]
    assert [entry.failure for entry in view.runbook] == ["oom"]
    rows = job_rows("camp-1", [view])
    assert rows[0].validation_ne == 0.8 and rows[0].cpu_seconds == 12.5
    assert rows[1].failure == "oom"
    assert rows[1].changes == {"learning_rate": 0.002}
    in_flight = {job.spec.job_id for job in state.jobs if job.status in ("submitted", "running")}
    assert {job.spec.job_id for job in jobs_in_flight([view])} == in_flight


def test_a_completed_campaign_reads_back_with_its_budget_records_and_result() -> None:
    request = {
        "name": "try crosses",
        "grant": "g",
        "dataset": "synthetic:rows=3000",
        "budget_cpu_seconds": 300,
    }
    baseline = MetricSummary(job_id="camp-1-validation-0", ne=0.80, auc=0.70, validation_ne=0.81)
    best = MetricSummary(
        job_id="camp-1-validation-1", hypothesis_id="h1", ne=0.78, auc=0.72, validation_ne=0.79
    )
    records = [
        JobRecord(
            job_id=spec.job_id,
            hypothesis_id=spec.hypothesis_id,
            config=spec.config,
            status="completed",
            validation=SplitMetrics(ne=0.81 - 0.02 * n, auc=0.7, logloss=0.4, rows=100),
            cost=JobCost(cpu_seconds=10.0, wall_seconds=10.0, peak_rss_mb=80),
        )
        for n, spec in enumerate([_spec(0), _spec(1)])
    ]
    campaign = Campaign(
        campaign_id="camp-1",
        status="completed",
        request=request,
        spec=CampaignSpec.model_validate(request),
        records=records,
        budget_changes=[BudgetChange(cpu_seconds=100, by="alice", at=datetime.now(UTC), reason="more")],
        result=CampaignResult(
            baseline=baseline,
            best=best,
            best_changes={"learning_rate": 0.002},
            ne_delta=-0.02,
            ne_relative_gain=0.025,
            auc_delta=0.02,
            jobs_completed=2,
            jobs_failed=0,
            compute_seconds=20.0,
        ),
        accepted_by="bob",
    )

    view = campaign_view(_stored(campaign))

    assert view.records == campaign.records and view.result == campaign.result
    assert view.budget_cpu_seconds() == 400.0 and view.budget_gpu_seconds() is None
    assert (view.name, view.workload, view.accepted_by) == ("try crosses", "ranker", "bob")
    summary = summarize(view, [])
    assert summary.spent_cpu_seconds == 20.0 and summary.budget_cpu_seconds == 400.0
    assert summary.best is not None and summary.best.hypothesis_id == "h1"
    assert CampaignStage.model_validate(_stored(campaign)["state"]) == CampaignStage(status="completed")


def test_a_rejected_request_reads_back_with_its_reasons_and_no_budget() -> None:
    campaign = Campaign(
        campaign_id="camp-2", status="rejected", request={"name": "x"}, reasons=["no dataset"]
    )
    view = campaign_view(_stored(campaign))
    assert (view.status, view.reasons, view.name) == ("rejected", ["no dataset"], "x")
    assert view.budget_cpu_seconds() is None
