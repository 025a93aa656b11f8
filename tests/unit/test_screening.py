"""Multi-fidelity screening (successive halving): when it runs, what it plans, who survives."""

from __future__ import annotations

from typing import Any

import pytest

from rea.events import JobRecord, PhaseStarted
from rea.workloads import get_workload
from rea_planner import logic
from rea_planner.campaign import CampaignSpec
from rea_planner.costs import CostModel, Fidelity
from rea_planner.screening import low_fidelity, promoted, worth_screening

from .test_planner_logic import COSTS, concluded, generated, hypothesis, planning, record

RANKER_FIDELITY = Fidelity.of(get_workload("ranker").schema)

# None of them is the baseline (mlp_width 64).
SIX = [hypothesis(f"h{i}", {"mlp_width": 80 + 16 * i}, gain=0.01 - 0.001 * i) for i in range(6)]


def spec(**overrides: Any) -> CampaignSpec:
    made = planning(**overrides).spec
    assert made is not None
    return made


def low(job: JobRecord) -> JobRecord:
    return job.model_copy(update={"phase": "screening"})


def test_screening_runs_when_asked_or_when_learned_costs_show_it_saves() -> None:
    three_epochs = {"baseline": {"epochs": 3}}
    assert worth_screening(spec(screening="on", **three_epochs), COSTS, 6)
    assert not worth_screening(spec(screening="off", **three_epochs), COSTS, 6)
    # auto: the prior knows no start-up cost, so it cannot tell.
    assert not worth_screening(spec(**three_epochs), COSTS, 6)
    spread = (1.0, 3.0)  # jobs at one and three epochs seen: the start-up cost is known
    cheap_start = CostModel(
        RANKER_FIDELITY, cpu_seconds_per_unit=2.0, observations=5, fit=(0.5, 2.0, 0.0), fidelities=spread
    )
    dear_start = CostModel(
        RANKER_FIDELITY, cpu_seconds_per_unit=2.0, observations=5, fit=(3.5, 1.0, 0.0), fidelities=spread
    )
    assert worth_screening(spec(**three_epochs), cheap_start, 6)
    assert not worth_screening(spec(**three_epochs), dear_start, 6)
    # Every job seen at three epochs: the fit's split of start-up and per-epoch cost is arbitrary.
    one_fidelity = CostModel(
        RANKER_FIDELITY, cpu_seconds_per_unit=2.0, observations=5, fit=(0.5, 2.0, 0.0), fidelities=(3.0, 3.0)
    )
    assert not worth_screening(spec(**three_epochs), one_fidelity, 6)
    # Too few epochs to cut, or too few hypotheses to halve.
    assert not worth_screening(spec(screening="on", baseline={"epochs": 2}), COSTS, 6)
    assert not worth_screening(spec(screening="on", **three_epochs), COSTS, 2)


def test_the_best_third_by_low_fidelity_validation_ne_survive() -> None:
    screened = [
        low(record(f"s-{i}", f"h{i}", {"epochs": 1}, val_ne=ne, test_ne=ne))
        for i, ne in enumerate([0.90, 0.85, 0.95, 0.80, 0.99, 0.97, 0.96])
    ]
    screened.append(low(record("s-base", None, {"epochs": 1}, 0.70, 0.70)))
    failed = JobRecord(job_id="s-x", hypothesis_id="hx", config={}, status="failed", phase="screening")
    assert promoted([*screened, failed]) == ["h3", "h1", "h0"]  # ceil(7 / 3); the baseline never counts
    assert low_fidelity(RANKER_FIDELITY, {"epochs": 9, "dropout": 0.1}) == {"epochs": 3, "dropout": 0.1}
    assert low_fidelity(RANKER_FIDELITY, {"epochs": 2})["epochs"] == 1


def test_a_screened_campaign_screens_then_validates_the_survivors_at_full_fidelity() -> None:
    state = planning(screening="on", baseline={"epochs": 3}, max_hypotheses=6, auto_approve_up_to=1000)
    decision = logic.on_hypotheses_generated(state, generated(*SIX), COSTS)
    screening = decision.state
    assert screening is not None and screening.status == "running" and screening.phase == "screening"
    assert screening.plan is not None and screening.plan.phase == "screening"
    jobs = screening.plan.jobs
    assert len(jobs) == 7 and all(j.config["epochs"] == 1 for j in jobs)
    assert not any(j.diagnose for j in jobs)
    assert list(screening.budget_by_phase)[:2] == ["screening", "validation"]
    assert screening.budget_by_phase["validation"] == pytest.approx(3 * COSTS.estimate(jobs[0].config) * 3)

    nes = [0.93, 0.91, 0.99, 0.92, 0.97, 0.98, 0.96]  # baseline first, then h0..h5
    records = [
        low(record(j.job_id, j.hypothesis_id, j.config, ne, ne)) for j, ne in zip(jobs, nes, strict=True)
    ]
    decision = logic.on_phase_concluded(screening, concluded(records, "screening"), COSTS)
    validating = decision.state
    assert validating is not None and validating.phase == "validation"
    [started] = decision.emit
    assert isinstance(started, PhaseStarted)
    plan = started.payload.plan
    assert [j.hypothesis_id for j in plan.jobs] == [None, "h0", "h2"]
    assert all(j.config["epochs"] == 3 for j in plan.jobs)
    assert [j.diagnose for j in plan.jobs] == [True, False, False]

    full_nes = [0.90, 0.95, 0.85]
    full = [
        record(j.job_id, j.hypothesis_id, j.config, ne, ne) for j, ne in zip(plan.jobs, full_nes, strict=True)
    ]
    done = logic.on_phase_concluded(validating, concluded(full), COSTS).state
    assert done is not None and done.phase != "screening"
    # The winner is picked among full-fidelity runs only: the baseline and h2 from validation.
    picked = logic.pick_winner(done.records)
    assert not isinstance(picked, str)
    baseline, best = picked
    assert (baseline.phase, best.hypothesis_id, best.phase) == ("validation", "h2", "validation")
