"""The selection phase: the best few configs again on more seeds before the winner is picked."""

from __future__ import annotations

from typing import Any

from rea.events import CampaignCompleted, JobRecord, PhaseStarted
from rea.workloads import get_workload
from rea_planner import logic
from rea_planner.selection import best_by_mean, contenders, plan_selection

from .test_planner_logic import COSTS, concluded, record, running

BASE_CONFIG = get_workload("ranker").schema.resolve({})
FM = {**BASE_CONFIG, "fm": True}
LN = {**BASE_CONFIG, "layer_norm": True}
DROP = {**BASE_CONFIG, "dropout": 0.2}


def searched() -> list[JobRecord]:
    """One validation round: fm looks best on its one seed, layer norm next, then dropout."""
    return [
        record("v-base", None, BASE_CONFIG, 0.90, 0.90),
        record("v-fm", "fm", FM, 0.80, 0.86),
        record("v-ln", "ln", LN, 0.82, 0.83),
        record("v-drop", "drop", DROP, 0.85, 0.85),
        record("v-same", "same", BASE_CONFIG, 0.89, 0.89),  # a change that is no change
    ]


def reseeded(job_id: str, hypothesis_id: str | None, config: dict[str, Any], ne: float) -> JobRecord:
    again = record(job_id, hypothesis_id, config, ne, ne, phase="selection")
    return again.model_copy(update={"seed": 1})


def test_when_the_search_ends_the_best_distinct_configs_run_again_on_more_seeds() -> None:
    state = running(contenders=3, selection_seeds=2)
    decision = logic.on_phase_concluded(state, concluded(searched()), COSTS)
    assert decision.state is not None and decision.state.phase == "selection"
    [started] = decision.emit
    assert isinstance(started, PhaseStarted)
    jobs = started.payload.plan.jobs
    assert [(j.hypothesis_id, j.seed) for j in jobs] == [
        ("fm", 1), ("fm", 2), ("ln", 1), ("ln", 2), ("drop", 1), ("drop", 2)
    ]  # fmt: skip
    assert [j.config for j in jobs[::2]] == [FM, LN, DROP]
    assert decision.state.search_ended is not None  # why the search stopped is kept for the result


def test_a_config_run_twice_is_one_contender() -> None:
    assert [j.hypothesis_id for j in contenders(searched(), 5)] == ["fm", "ln", "drop", "same"]


def test_the_winner_is_the_best_mean_among_the_contenders_not_the_luckiest_run() -> None:
    records = [
        *searched(),
        reseeded("s-fm", "fm", FM, 0.90),  # fm's first run was luck: mean 0.85
        reseeded("s-ln", "ln", LN, 0.83),  # mean 0.825: the winner
        reseeded("s-drop", "drop", DROP, 0.84),  # mean 0.845
    ]
    best = best_by_mean(records)
    assert best is not None and best.job_id == "v-ln"
    assert best_by_mean(searched()) is not None and best_by_mean(searched()).job_id == "v-fm"  # type: ignore[union-attr]


def test_after_selection_the_winner_is_confirmed_without_rerunning_a_measured_seed() -> None:
    state = running(contenders=3, confirm_seeds=3)
    selecting = logic.on_phase_concluded(state, concluded(searched()), COSTS).state
    assert selecting is not None and selecting.phase == "selection"
    selected = [
        reseeded("s-fm", "fm", FM, 0.90),
        reseeded("s-ln", "ln", LN, 0.83),
        reseeded("s-drop", "drop", DROP, 0.84),
    ]
    decision = logic.on_phase_concluded(selecting, concluded(selected, "selection"), COSTS)
    assert decision.state is not None and decision.state.phase == "confirmation"
    [started] = decision.emit
    assert isinstance(started, PhaseStarted)
    # ln has seeds 0 and 1 already; the baseline has only seed 0.
    assert [(j.hypothesis_id or "baseline", j.seed) for j in started.payload.plan.jobs] == [
        ("baseline", 1), ("baseline", 2), ("ln", 2)
    ]  # fmt: skip

    confirmed = [
        record("c-b1", None, BASE_CONFIG, 0.9, 0.91).model_copy(update={"seed": 1, "phase": "confirmation"}),
        record("c-b2", None, BASE_CONFIG, 0.9, 0.92).model_copy(update={"seed": 2, "phase": "confirmation"}),
        record("c-ln2", "ln", LN, 0.82, 0.84).model_copy(update={"seed": 2, "phase": "confirmation"}),
    ]
    done = logic.on_phase_concluded(decision.state, concluded(confirmed, "confirmation"), COSTS)
    [completed] = done.emit
    assert isinstance(completed, CampaignCompleted)
    result = completed.payload.result
    assert result.best.hypothesis_id == "ln" and result.seeds == 3
    assert result.best.ne_by_seed == {0: 0.83, 1: 0.83, 2: 0.84}
    assert abs(result.best.validation_ne - (0.82 + 0.83) / 2) < 1e-9  # what chose it


def test_the_baseline_can_win_the_selection() -> None:
    state = running(contenders=2, confirm_seeds=3)
    records = [record("v-base", None, BASE_CONFIG, 0.81, 0.90), record("v-fm", "fm", FM, 0.80, 0.86)]
    selecting = logic.on_phase_concluded(state, concluded(records), COSTS).state
    assert selecting is not None and selecting.phase == "selection"
    selected = [reseeded("s-base", None, BASE_CONFIG, 0.80), reseeded("s-fm", "fm", FM, 0.84)]
    done = logic.on_phase_concluded(selecting, concluded(selected, "selection"), COSTS)
    assert done.state is not None and done.state.status == "completed"
    assert done.state.result is not None
    assert "nothing beat the baseline on validation NE" in done.state.result.notes


def test_selection_takes_fewer_contenders_when_the_budget_is_short_and_none_below_two() -> None:
    state = running(contenders=3)
    one = COSTS.estimate(FM)
    assert plan_selection(state, searched(), COSTS, 3 * one) is not None
    short = plan_selection(state, searched(), COSTS, 2.5 * one)
    assert short is not None and [j.hypothesis_id for j in short.jobs] == ["fm", "ln"]
    assert plan_selection(state, searched(), COSTS, 1.5 * one) is None
    assert plan_selection(running(contenders=1), searched(), COSTS, 100 * one) is None


def test_the_search_keeps_room_for_the_selection() -> None:
    """Thirty jobs searched; exploitation would run, but its trials do not fit beside the
    selection's jobs (two contenders: three would cost more than a tenth of the budget)."""
    many = [
        *searched(),
        *(record(f"v-{i}", f"d{i}", {**BASE_CONFIG, "dropout": 0.01 * i}, 0.95, 0.95) for i in range(1, 26)),
    ]
    costs = logic.learned_costs(many, COSTS)  # the planner's estimates, from these jobs
    one = max(costs.estimate(c) for c in (FM, LN, DROP))
    spent = sum(j.cost.cpu_seconds for j in many if j.cost)
    budget = spent + 2.5 * one
    state = running(contenders=3, max_exploitation_trials=10, confirm_seeds=1, budget_cpu_seconds=budget)
    decision = logic.on_phase_concluded(state, concluded(many), COSTS)
    assert decision.state is not None and decision.state.phase == "selection"
    without = running(contenders=0, max_exploitation_trials=10, confirm_seeds=1, budget_cpu_seconds=budget)
    tuning = logic.on_phase_concluded(without, concluded(many), COSTS).state
    assert tuning is not None and tuning.phase is not None and tuning.phase.startswith("exploitation")


def test_selection_never_takes_more_than_a_tenth_of_the_budget() -> None:
    one = COSTS.estimate(FM)
    assert plan_selection(running(contenders=3, budget_cpu_seconds=30 * one), searched(), COSTS, 100 * one)
    two = plan_selection(running(contenders=3, budget_cpu_seconds=25 * one), searched(), COSTS, 100 * one)
    assert two is not None and len(two.jobs) == 2
    assert (
        plan_selection(running(contenders=3, budget_cpu_seconds=15 * one), searched(), COSTS, 100 * one)
        is None
    )


def test_a_selection_run_the_runbook_retried_with_another_config_does_not_count() -> None:
    """fm's run on seed 1 ran out of memory and its retry halved the batch: that measured another
    config, so fm keeps one seed and the winner is among the configs measured on two."""
    halved = {**FM, "batch_size": FM["batch_size"] // 2}
    records = [
        *searched(),
        reseeded("s-fm-a2", "fm", halved, 0.70),
        reseeded("s-ln", "ln", LN, 0.83),
        reseeded("s-drop", "drop", DROP, 0.84),
    ]
    best = best_by_mean(records)
    assert best is not None and best.job_id == "v-ln"
