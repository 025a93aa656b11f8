"""The combination and exploitation phases, and the cost model's fit: pure planner decisions."""

from __future__ import annotations

from typing import Any

import pytest
from optuna.distributions import IntDistribution

from rea.events import JobCost, JobRecord, PhasePlan
from rea.phases import kind, numbered, order
from rea.workloads import get_workload
from rea_planner import logic
from rea_planner.combination import candidates, plan_extension, plan_pruning, pruning_effects
from rea_planner.costs import SAFETY_FACTOR, CostModel, Fidelity
from rea_planner.exploitation import trust_region
from rea_planner.jobs import anchor, parts

from .test_planner_logic import COSTS, SCHEMA, concluded, hypothesis, record, running

RANKER_FIDELITY = Fidelity.of(get_workload("ranker").schema)

BASE = SCHEMA.defaults()


def test_phase_names_sort_in_the_order_phases_run() -> None:
    names = ["confirmation", "exploitation-2", "validation-2", "combination", "exploitation-1", "validation"]
    assert sorted(names, key=order) == [
        "validation",
        "validation-2",
        "combination",
        "exploitation-1",
        "exploitation-2",
        "confirmation",
    ]
    assert kind("exploitation-12") == "exploitation" and kind("validation") == "validation"
    assert numbered("validation", 1) == "validation" and numbered("exploitation", 1) == "exploitation-1"


def test_candidates_are_pairs_of_the_best_three_then_greedy_stacks_skipping_contradictions() -> None:
    a, b, c = (
        hypothesis("a", {"fm": True}),
        hypothesis("b", {"dropout": 0.2}),
        hypothesis("c", {"dropout": 0.1}),
    )
    d, e = hypothesis("d", {"layer_norm": True}), hypothesis("e", {"grad_clip": 1.0})
    found = [[h.id for h in stack] for stack in candidates([a, b, c, d, e])]
    # b and c set dropout differently: never together.
    assert found == [["a", "b"], ["a", "c"], ["a", "b", "d"], ["a", "b", "d", "e"]]
    assert parts("a+b+d~t7") == ["a", "b", "d"] and parts(None) == []


def validation_records() -> list[JobRecord]:
    return [
        record("v-base", None, BASE, 0.90, 0.90),
        record("v-fm", "fm", {**BASE, "fm": True}, 0.85, 0.86),
        record("v-ln", "ln", {**BASE, "layer_norm": True}, 0.88, 0.88),
        record("v-do", "do", {**BASE, "dropout": 0.3}, 0.93, 0.93),  # worse: not a winner
    ]


def campaign_with(without: str = "", **overrides: Any) -> logic.Campaign:
    tried = [
        hypothesis("fm", {"fm": True}),
        hypothesis("ln", {"layer_norm": True}),
        hypothesis("do", {"dropout": 0.3}),
    ]
    return running(**overrides).model_copy(update={"hypotheses": [h for h in tried if h.id != without]})


def test_two_winners_lead_to_a_combination_phase_then_exploitation_around_the_best() -> None:
    state = campaign_with(max_exploitation_trials=3, max_parallel_jobs=2, exploitation_scope="local")
    combining = logic.on_phase_concluded(state, concluded(validation_records()), COSTS).state
    assert combining is not None and combining.phase == "combination"
    [pair] = combining.rounds[-1].jobs
    assert pair.hypothesis_id == "fm+ln" and pair.config["fm"] is True and pair.config["layer_norm"] is True

    joint = record("c-pair", "fm+ln", pair.config, 0.83, 0.84, phase="combination")
    extending = logic.on_phase_concluded(combining, concluded([joint], "combination"), COSTS).state
    assert extending is not None and extending.phase == "combination-2"
    [extension] = extending.rounds[-1].jobs  # the one hypothesis no combination has tried, on the pair
    assert extension.hypothesis_id == "fm+ln+do" and extension.config == {**pair.config, "dropout": 0.3}

    worse = record("c-ext", "fm+ln+do", extension.config, 0.84, 0.85, phase="combination-2")
    exploiting = logic.on_phase_concluded(extending, concluded([worse], "combination-2"), COSTS).state
    assert exploiting is not None and exploiting.phase == "exploitation-1"
    trials = exploiting.rounds[-1].jobs
    assert [t.hypothesis_id for t in trials] == ["fm+ln~t1", "fm+ln~t2"]  # max_parallel_jobs per round
    region = trust_region(SCHEMA, pair.config)
    for trial in trials:
        assert trial.config["fm"] is True and trial.config["layer_norm"] is True  # structure kept
        assert trial.config["epochs"] == pair.config["epochs"]  # full fidelity
        changed = {k for k, v in trial.config.items() if v != pair.config[k]}
        assert changed and changed <= set(region)
        # fm and layer_norm are not continuous: only the optimiser's step is tuned.
        assert changed <= {"learning_rate", "batch_size"}
        lr = trial.config["learning_rate"]
        assert pair.config["learning_rate"] / 4 <= lr <= pair.config["learning_rate"] * 4

    again = logic.on_phase_concluded(extending, concluded([worse], "combination-2"), COSTS).state
    assert again is not None and again.rounds[-1].jobs == trials  # replay asks the same configs

    told = [
        record(f"e-{i}", t.hypothesis_id, t.config, ne, ne, phase="exploitation-1")
        for i, (t, ne) in enumerate(zip(trials, (0.81, 0.86), strict=True))
    ]
    last = logic.on_phase_concluded(exploiting, concluded(told, "exploitation-1"), COSTS).state
    assert last is not None and last.phase == "exploitation-2"
    [third] = last.rounds[-1].jobs  # the trial limit (3) leaves one
    assert third.hypothesis_id == "fm+ln~t3"

    final = record("e-3", "fm+ln~t3", third.config, 0.87, 0.87, phase="exploitation-2")
    confirming = logic.on_phase_concluded(last, concluded([final], "exploitation-2"), COSTS).state
    assert confirming is not None and confirming.phase == "confirmation"
    assert confirming.confirmation is not None
    assert {j.hypothesis_id for j in confirming.confirmation.jobs} == {None, "fm+ln~t1"}  # the best, 0.81


def test_the_result_names_the_hypotheses_a_tuned_winner_carries() -> None:
    records = [
        *validation_records(),
        record("c-pair", "fm+ln", {**BASE, "fm": True, "layer_norm": True}, 0.83, 0.84, phase="combination"),
        record(
            "e-1",
            "fm+ln~t1",
            {**BASE, "fm": True, "layer_norm": True, "dropout": 0.1},
            0.80,
            0.81,
            phase="exploitation-1",
        ),
    ]
    result = logic.summarize(records)
    assert not isinstance(result, str)
    assert result.best.hypothesis_id == "fm+ln~t1"
    assert result.best_hypotheses == ["fm", "ln"]
    [pair] = result.interactions  # -0.05 and -0.02 sum to -0.07; observed -0.07: additive
    assert pair.pair == ("fm", "ln") and pair.kind == "additive"
    assert pair.expected == pytest.approx(-0.07) and pair.observed == pytest.approx(-0.07)


def test_exploitation_tunes_the_continuous_knobs_the_anchor_changed_and_the_optimiser_step() -> None:
    baseline = SCHEMA.defaults()
    anchor_config = {**baseline, "dropout": 0.2, "fm": True, "mlp_width": 128}
    assert set(trust_region(SCHEMA, anchor_config, baseline)) == {
        "dropout",
        "mlp_width",
        "learning_rate",
        "batch_size",
    }
    region = trust_region(SCHEMA, anchor_config, baseline)["mlp_width"]
    assert isinstance(region, IntDistribution)
    assert (region.low, region.high) == (32, 512)  # 128 / 4 .. 128 x 4 within [16, 512]


def test_one_winner_skips_stacking_and_exploitation_anchors_on_it() -> None:
    records = [r for r in validation_records() if r.hypothesis_id != "ln"]
    state = campaign_with("ln", max_exploitation_trials=2, exploitation_scope="local")
    extending = logic.on_phase_concluded(state, concluded(records), COSTS).state
    assert extending is not None and extending.phase == "combination-1"
    assert [j.hypothesis_id for j in extending.rounds[-1].jobs] == ["fm+do"]  # the loser, on the winner

    worse = record("c-ext", "fm+do", {**BASE, "fm": True, "dropout": 0.3}, 0.86, 0.86, phase="combination-1")
    decision = logic.on_phase_concluded(extending, concluded([worse], "combination-1"), COSTS)
    assert decision.state is not None and decision.state.phase == "exploitation-1"
    assert all(j.hypothesis_id and j.hypothesis_id.startswith("fm~t") for j in decision.state.rounds[-1].jobs)
    found = anchor([*records, worse])
    assert found is not None and found.hypothesis_id == "fm"


def test_extension_rounds_go_on_while_they_find_a_better_config() -> None:
    hypotheses = [
        hypothesis("fm", {"fm": True}, gain=0.05),
        hypothesis("ln", {"layer_norm": True}, gain=0.04),
        hypothesis("do", {"dropout": 0.3}, gain=0.03),
        hypothesis("do_low", {"dropout": 0.1}, gain=0.025),
        hypothesis("wide", {"mlp_width": 128}, gain=0.02),
        hypothesis("clip", {"grad_clip": 1.0}, gain=0.01),
        hypothesis("emb", {"embedding_dim": 16}, gain=0.005),
    ]
    state = running(max_parallel_jobs=2).model_copy(update={"hypotheses": hypotheses})
    records = [
        record("v-base", None, BASE, 0.90, 0.90),
        record("v-fm", "fm", {**BASE, "fm": True}, 0.85, 0.85),
        *[record(f"v-{h.id}", h.id, {**BASE, **h.changes}, 0.91, 0.91) for h in hypotheses[1:]],
    ]
    first = next_extension(state, records)
    assert first is not None
    # Best prior first, two per round (max_parallel_jobs), each on top of the best config so far.
    assert [j.hypothesis_id for j in first.jobs] == ["fm+ln", "fm+do"]
    assert first.jobs[1].config == {**BASE, "fm": True, "dropout": 0.3}

    records += [
        record("c-1", "fm+ln", first.jobs[0].config, 0.86, 0.86),
        record("c-2", "fm+do", first.jobs[1].config, 0.80, 0.80),
    ]
    records = [*records[:-2], *(r.model_copy(update={"phase": first.phase}) for r in records[-2:])]
    second = next_extension(state, records)
    assert second is not None and second.phase == "combination-2"
    # do_low sets dropout as do does, differently: skipped; ln was tried: not again.
    assert [j.hypothesis_id for j in second.jobs] == ["fm+do+wide", "fm+do+clip"]

    records += [
        r.model_copy(update={"phase": second.phase})
        for r in (
            record("c-3", "fm+do+wide", second.jobs[0].config, 0.81, 0.81),
            record("c-4", "fm+do+clip", second.jobs[1].config, 0.82, 0.82),
        )
    ]
    assert next_extension(state, records) is None  # no new best in the last round: stop, emb untried


def test_a_hypothesis_that_helped_but_lost_its_round_is_tried_again_on_the_new_best_once() -> None:
    hypotheses = [
        hypothesis("fm", {"fm": True}, gain=0.05),
        hypothesis("ln", {"layer_norm": True}, gain=0.04),
        hypothesis("do", {"dropout": 0.3}, gain=0.03),
        hypothesis("wide", {"mlp_width": 128}, gain=0.02),
        hypothesis("clip", {"grad_clip": 1.0}, gain=0.01),
    ]
    state = running(max_parallel_jobs=2).model_copy(update={"hypotheses": hypotheses})
    ln, do = ({**BASE, "fm": True, **h.changes} for h in hypotheses[1:3])
    records = [
        record("v-base", None, BASE, 0.90, 0.90),
        record("v-fm", "fm", {**BASE, "fm": True}, 0.85, 0.85),
        *(
            r.model_copy(update={"phase": "combination-1"})
            for r in (
                record("c-1", "fm+ln", ln, 0.84, 0.84),  # better than fm, but fm+do is better still
                record("c-2", "fm+do", do, 0.80, 0.80),
            )
        ),
    ]
    second = next_extension(state, records)
    assert second is not None
    assert [j.hypothesis_id for j in second.jobs] == ["fm+do+ln", "fm+do+wide"]

    records += [
        r.model_copy(update={"phase": second.phase})
        for r in (
            record("c-3", "fm+do+ln", {**do, "layer_norm": True}, 0.79, 0.79),
            record("c-4", "fm+do+wide", {**do, "mlp_width": 128}, 0.75, 0.75),
        )
    ]
    third = next_extension(state, records)
    assert third is not None
    # ln helped again and lost again: not a third time; clip is the one left.
    assert [j.hypothesis_id for j in third.jobs] == ["fm+do+wide+clip"]


def test_nothing_extends_a_baseline_that_nothing_beat() -> None:
    records = [
        record("v-base", None, BASE, 0.80, 0.80),
        record("v-fm", "fm", {**BASE, "fm": True}, 0.85, 0.85),
    ]
    assert next_extension(campaign_with(), records) is None


def test_pruning_takes_each_hypothesis_out_of_the_best_config_weakest_evidence_first() -> None:
    hypotheses = [
        hypothesis("lr", {"learning_rate": 0.003}, gain=0.05),
        hypothesis("ln", {"layer_norm": True}, gain=0.04),
        hypothesis("fm", {"fm": True}, gain=0.03),
        hypothesis("wide", {"mlp_width": 128}, gain=0.02),
        hypothesis("do", {"dropout": 0.3}, gain=0.01),  # never in a combination below
    ]
    changes = {h.id: h.changes for h in hypotheses}
    lr_ln = {**BASE, **changes["lr"], **changes["ln"]}
    stack = {**lr_ln, **changes["fm"]}
    state = running(max_parallel_jobs=2).model_copy(update={"hypotheses": hypotheses})
    records = [
        record("v-base", None, BASE, 0.90, 0.90),
        record("v-lr", "lr", {**BASE, **changes["lr"]}, 0.86, 0.86),
        *[record(f"v-{h.id}", h.id, {**BASE, **h.changes}, 0.89, 0.89) for h in hypotheses[1:]],
        record("c-1", "lr+ln", lr_ln, 0.85, 0.85, phase="combination"),
        record("c-2", "lr+ln+fm", stack, 0.80, 0.80, phase="combination-2"),
        record("c-3", "lr+ln+fm+wide", {**stack, "mlp_width": 128}, 0.81, 0.81, phase="combination-3"),
    ]
    assert next_extension(state, records) is None  # no new best

    first = next_pruning(state, records)
    assert first is not None and first.phase == "combination-4"
    # lr+ln (without fm, which an extension round added) was measured; ln gained less than lr
    # on the baseline, so it is taken out first.
    assert [j.hypothesis_id for j in first.jobs] == ["lr+ln+fm~-ln", "lr+ln+fm~-lr"]
    assert first.jobs[0].config == {**BASE, **changes["lr"], **changes["fm"]}
    assert parts("lr+ln+fm~-ln") == ["lr", "fm"] and parts("lr+ln+fm~-ln~t2") == ["lr", "fm"]

    records += [
        record(
            "p-1", "lr+ln+fm~-ln", first.jobs[0].config, 0.77, 0.77, phase="combination-4"
        ),  # better without ln
        record("p-2", "lr+ln+fm~-lr", first.jobs[1].config, 0.86, 0.86, phase="combination-4"),
    ]
    # The pruned config is the new best: extended with what no combination tried (not ln again).
    extended = next_extension(state, records)
    assert extended is not None and [j.hypothesis_id for j in extended.jobs] == ["lr+fm+do"]
    assert extended.jobs[0].config == {**BASE, **changes["lr"], **changes["fm"], "dropout": 0.3}

    [without_ln] = [r for r in pruning_effects(records) if r.hypothesis == "ln"]
    assert without_ln.of == "lr+ln+fm" and without_ln.effect == pytest.approx(-0.03)
    assert without_ln.alone == pytest.approx(-0.01)  # it had helped the baseline

    records.append(record("c-4", "lr+fm+do", extended.jobs[0].config, 0.79, 0.79, phase="combination-5"))
    assert next_extension(state, records) is None
    # Taking lr out of lr+fm leaves fm alone and taking fm out leaves lr: both measured already.
    assert next_pruning(state, records) is None


def test_after_pruning_the_planner_moves_on_to_exploitation() -> None:
    pair = {**BASE, "fm": True, "layer_norm": True}
    earlier = [*validation_records(), record("c-pair", "fm+ln", pair, 0.83, 0.84, phase="combination")]
    state = campaign_with(
        max_exploitation_trials=2, max_parallel_jobs=2, exploitation_scope="local"
    ).model_copy(update={"phase": "combination-2", "records": earlier})
    better = [record("c-ext", "fm+ln+do", {**pair, "dropout": 0.3}, 0.82, 0.82, phase="combination-2")]
    pruning = logic.on_phase_concluded(state, concluded(better, "combination-2"), COSTS).state
    assert pruning is not None and pruning.phase == "combination-3"
    # Nothing is left to extend fm+ln+do with: its hypotheses are taken out instead, two a round,
    # the stacked ones first (ln gained less than fm on the baseline), do (an extension) last.
    assert [j.hypothesis_id for j in pruning.rounds[-1].jobs] == ["fm+ln+do~-ln", "fm+ln+do~-fm"]

    told = [
        record(f"p-{i}", j.hypothesis_id, j.config, 0.9, 0.9, phase="combination-3")
        for i, j in enumerate(pruning.rounds[-1].jobs)
    ]
    exploiting = logic.on_phase_concluded(pruning, concluded(told, "combination-3"), COSTS).state
    # fm+ln (without do) was measured: pruning is done, exploitation tunes the best.
    assert exploiting is not None and exploiting.phase == "exploitation-1"
    trials = [j.hypothesis_id or "" for j in exploiting.rounds[-1].jobs]
    assert trials and all(trial.startswith("fm+ln+do~t") for trial in trials)


def next_pruning(state: logic.Campaign, records: list[JobRecord]) -> PhasePlan | None:
    return plan_pruning(state, records, COSTS, room=1_000.0)


def next_extension(state: logic.Campaign, records: list[JobRecord]) -> PhasePlan | None:
    return plan_extension(state, records, COSTS, room=1_000.0)


def test_exploitation_keeps_room_for_confirmation() -> None:
    # Learned cost: 10 CPU-s per 3-epoch job -> 12.5 estimated. Spent 30 of 90; confirmation
    # (2 more seeds of the winner and the baseline) reserves 4 x 12.5 = 50: no room for a trial.
    records = [r for r in validation_records() if r.hypothesis_id != "ln"]
    state = campaign_with("ln", max_exploitation_trials=5, budget_cpu_seconds=90)
    decision = logic.on_phase_concluded(state, concluded(records), COSTS)
    assert decision.state is not None and decision.state.phase == "confirmation"


def test_cost_fit_learns_a_fixed_start_up_cost_and_the_price_of_small_batches() -> None:
    def cost(epochs: int, batch: int) -> float:
        return 4.0 + 1.0 * epochs + 0.5 * epochs * 256 / batch

    configs = [(1, 256), (3, 256), (2, 64), (1, 1024), (4, 128)]
    rows = [
        {"config": {"epochs": e, "batch_size": b}, "cost": {"cpu_seconds": cost(e, b)}} for e, b in configs
    ]
    model = CostModel.from_history(RANKER_FIDELITY, rows)
    assert model.fit == pytest.approx((4.0, 1.0, 0.5), abs=1e-6)
    # A 1-epoch job at batch 32 costs 9; the rate alone (per epoch, averaged) would say less.
    assert model.estimate({"epochs": 1, "batch_size": 32}) == pytest.approx(cost(1, 32) * SAFETY_FACTOR)
    records = [
        JobRecord(
            job_id="x",
            hypothesis_id=None,
            config={"epochs": 1},
            status="completed",
            cost=JobCost(cpu_seconds=5.0, wall_seconds=5.0, peak_rss_mb=1),
        )
    ]
    assert logic.learned_costs(records, COSTS).fit is None  # too few observations to fit


def test_from_jobs_at_one_fidelity_a_lower_one_is_never_assumed_cheaper() -> None:
    """Every job at 3 epochs costs 4.3 CPU-s, most of it start-up: the fit cannot know that, so a
    1-epoch job is estimated as a 3-epoch one, not at a third of it."""
    rows = [
        {"config": {"epochs": 3, "batch_size": b}, "cost": {"cpu_seconds": 4.3}} for b in (256, 256, 128, 512)
    ]
    model = CostModel.from_history(RANKER_FIDELITY, rows)
    assert model.fit is not None and not model.knows_fixed_cost
    full = model.estimate({"epochs": 3, "batch_size": 256})
    assert model.estimate({"epochs": 1, "batch_size": 256}) == full
    assert model.estimate({"epochs": 6, "batch_size": 256}) > full


@pytest.mark.parametrize(("share", "phase"), [(0.5, "validation-2"), (0.2, "combination")])
def test_further_validation_rounds_stay_within_the_validation_share(share: float, phase: str) -> None:
    """40 CPU-s spent on validation of a 200 budget: an untried hypothesis (12.5 estimated)
    fits in half the budget, not in a fifth of it; then the winners are combined instead."""
    state = campaign_with(max_exploitation_trials=4, budget_cpu_seconds=200, validation_share=share)
    state = state.model_copy(
        update={"hypotheses": [*state.hypotheses, hypothesis("extra", {"grad_clip": 1.0})]}
    )
    decision = logic.on_phase_concluded(state, concluded(validation_records()), COSTS)
    assert decision.state is not None and decision.state.phase == phase


def test_by_default_exploitation_tunes_until_it_converges_and_the_result_says_so() -> None:
    """No trial limit: rounds go on while the budget allows, and end once the last
    ``exploitation_patience`` trials found nothing better; the result names why."""
    state = campaign_with(
        budget_cpu_seconds=100_000, exploitation_patience=3, max_parallel_jobs=2, max_exploitation_trials=None
    )
    assert state.spec is not None and state.spec.max_exploitation_trials is None
    exploiting = logic.on_phase_concluded(state, concluded(validation_records()), COSTS).state
    while exploiting is not None and exploiting.phase and exploiting.phase.startswith("combination"):
        jobs = exploiting.rounds[-1].jobs
        worse = [
            record(f"x-{j.hypothesis_id}", j.hypothesis_id, j.config, 0.99, 0.99, phase=exploiting.phase)
            for j in jobs
        ]
        exploiting = logic.on_phase_concluded(exploiting, concluded(worse, exploiting.phase), COSTS).state
    assert exploiting is not None and exploiting.phase == "exploitation-1"
    nes = iter([0.80, 0.95, 0.96, 0.97, 0.98, 0.99])  # one gain, then nothing better
    rounds = 0
    while exploiting is not None and exploiting.phase and exploiting.phase.startswith("exploitation"):
        rounds += 1
        phase = exploiting.phase
        told = [record(f"{phase}-{t.hypothesis_id}", t.hypothesis_id, t.config, n, n, phase=phase)
                for t in exploiting.rounds[-1].jobs for n in [next(nes)]]  # fmt: skip
        exploiting = logic.on_phase_concluded(exploiting, concluded(told, phase), COSTS).state
    assert rounds == 2  # two trials a round: the gain at trial 1, then three trials without one
    assert exploiting is not None and exploiting.search_ended is not None
    assert (
        "exploitation converged: its last 3 trials found no better validation NE" in exploiting.search_ended
    )
