"""A search end to end on this machine's CPU, at a budget that fits CI: every point becomes a
candidate that the sandboxed evaluator judges, the winner is evaluated in full and becomes
registry entries that name this CPU. The cheapest few are measured again before one wins, and a
warm search starts from the registry's kernels."""

from __future__ import annotations

import statistics
from typing import Any

import pytest

from rea.kernels import Candidate, KernelEntry, ParamValue, Provenance
from rea_kernel.evaluator import Evaluation, Settings
from rea_kernel.targets import get_target
from rea_kernel.tuning import MOST_WARM_STARTS, UNLIKE, relative_cost, shape_distance, tune, warm_starts

CPU = get_target("cpu")
SMALL = Settings(
    trials=2,
    correctness_shapes=({"rows": 7, "dim": 17}, {"rows": 0, "dim": 32}, {"rows": 33, "dim": 64}),
    benchmark_shapes=({"rows": 512, "dim": 256},),
    warmup=1,
    repeats=5,
    threads=1,
    time_compiled_reference=False,
)


@pytest.mark.skipif(CPU.unavailable() is not None, reason=str(CPU.unavailable()))
def test_a_small_search_evaluates_each_point_once_and_publishes_its_winner() -> None:
    seen: list[tuple[int, Candidate, Evaluation]] = []
    outcome = tune(
        "layer_norm", "cpu", 6, seed=1, settings=SMALL, on_evaluated=lambda n, c, e: seen.append((n, c, e))
    )

    assert [n for n, _, _ in seen] == [1, 2, 3, 4, 5, 6]
    assert len({candidate.digest for _, candidate, _ in seen}) == 6
    assert seen[0][1].params == CPU.default_params("layer_norm")  # the known-correct start
    assert [relative_cost(e) for _, _, e in seen] == [e.cost for e in outcome.trace.evaluations]
    assert outcome.best is not None and outcome.final is not None and outcome.final.passed
    # The cheapest two (a third of six) are measured again; the winner is the cheaper over both.
    first = {c.digest: cost for _, c, e in seen if (cost := relative_cost(e)) is not None}
    assert [c.digest for c, _ in outcome.confirmations] == sorted(first, key=lambda d: first[d])[:2]
    both = {
        c.digest: statistics.geometric_mean([first[c.digest], cost])
        for c, e in outcome.confirmations
        if (cost := relative_cost(e)) is not None
    }
    assert outcome.best.digest == min(both, key=lambda digest: both[digest])
    [entry] = outcome.entries
    assert entry.operator == "layer_norm" and entry.device == CPU.device_name()
    assert entry.provenance.evaluations == 6 and entry.provenance.method == "mcts_evolution"
    assert entry.speedup_vs_eager == pytest.approx(entry.eager_seconds / entry.candidate_seconds)


def test_a_warm_start_takes_the_kernels_timed_on_the_nearest_shapes_first() -> None:
    """A one-column head starts from a head's kernel before a wide layer's faster one."""
    space = {"loop": ("packed", "dot", "tiled"), "block": (16, 32)}
    wide = {"batch": 8192, "in_features": 256, "out_features": 256, "activation": "relu"}
    entries = [
        kept({"loop": "packed", "block": 32}, 1.6, shape=wide),
        kept({"loop": "tiled", "block": 16}, 1.4, shape={**wide, "in_features": 128}),
        kept({"loop": "dot", "block": 16}, 1.1, shape={**wide, "in_features": 512, "out_features": 1}),
        kept({"loop": "dot", "block": 32}, 1.2, shape={**wide, "out_features": 2, "activation": "none"}),
    ]
    head = {**wide, "out_features": 1, "activation": "none"}

    starts = warm_starts(entries, space, budget=40, shapes=[head])

    assert starts == [
        {"loop": "dot", "block": 32},  # out_features 2 against 1: log2(3/2)
        {"loop": "dot", "block": 16},  # log2(513/257) + 4 for the activation
        {"loop": "packed", "block": 32},  # log2(257/2) + 4
    ]
    # A search over several shapes ranks each kernel by the shape it is nearest.
    assert warm_starts(entries, space, budget=40, shapes=[head, wide]) == [
        {"loop": "packed", "block": 32},  # the wide shape itself
        {"loop": "dot", "block": 32},
        {"loop": "tiled", "block": 16},  # log2(257/129) from the wide shape
    ]
    assert warm_starts(entries, space, budget=40, shapes=[wide])[:2] == [
        {"loop": "packed", "block": 32},
        {"loop": "tiled", "block": 16},
    ]
    assert shape_distance({"bags": 0, "mode": "sum"}, {"bags": 1, "mode": "sum"}) == 1.0  # empty ~ one
    assert shape_distance({"mode": "sum"}, {"mode": "mean", "dim": 8}) == 2 * UNLIKE


def test_a_search_on_a_narrow_output_starts_where_the_templates_rule_puts_it() -> None:
    """One output column: the dense template's rule picks the dot loop order over its packed
    default (its backward's, one pass over the rows), before any registry kernel (a wide
    layer's packed point) and before the default."""
    head = {"batch": 96, "in_features": 40, "out_features": 1, "activation": "none"}
    default = CPU.default_params("linear_bias_act")
    assert CPU.suggested_params("linear_bias_act", head) == {**default, "loop_order": "dot"}
    assert CPU.suggested_params("linear_bias_act", {**head, "out_features": 16}) == default
    # 8 to 15 columns: the dot order over rows of 64 inputs or more, the packed under them.
    assert CPU.suggested_params("linear_bias_act", {**head, "out_features": 12})["loop_order"] == "packed"
    assert CPU.suggested_params("linear_bias_act", {**head, "out_features": 12, "in_features": 64}) == {
        **default,
        "loop_order": "dot",
    }
    assert CPU.suggested_params("layer_norm", {"rows": 1, "dim": 1}) == CPU.default_params("layer_norm")
    backward = CPU.default_params("linear_bias_act_backward")
    assert CPU.suggested_params("linear_bias_act_backward", head) == {**backward, "algorithm": "one_pass"}
    assert CPU.suggested_params("linear_bias_act_backward", {**head, "out_features": 8}) == backward
    if CPU.unavailable() is not None:
        pytest.skip(str(CPU.unavailable()))
    wide = {**default, "micro_rows": 8}
    seen: list[Candidate] = []
    settings = SMALL.model_copy(update={"correctness_shapes": (head,), "benchmark_shapes": (head,)})

    tune(
        "linear_bias_act",
        "cpu",
        3,
        settings=settings,
        starts=[wide],
        on_evaluated=lambda n, c, e: seen.append(c),
    )

    assert [candidate.params for candidate in seen] == [{**default, "loop_order": "dot"}, wide, default]


def kept(
    params: dict[str, ParamValue],
    speedup: float,
    author: str = "template",
    shape: dict[str, Any] | None = None,
) -> KernelEntry:
    """A registry entry as a warm start reads it: its kernel's parameters, author, speedup and
    shape (the sources and timings are placeholders)."""
    return KernelEntry(
        operator="layer_norm",
        bucket=f"b{speedup}",
        dtype="float32",
        target="cpu",
        device=CPU.device_name(),
        candidate=Candidate(
            operator="layer_norm", target="cpu", params=params, sources={"kernel.py": ""}, author=author
        ),
        speedup_vs_eager=speedup,
        candidate_seconds=1.0,
        eager_seconds=speedup,
        shape=shape or {},
        correct_trials=1,
        provenance=Provenance(search_id="s", method="manual", seed=0, evaluations=1),
    )


def test_a_warm_start_is_the_registrys_template_kernels_fastest_first_in_todays_grid() -> None:
    space = {"block": (64, 128, 256), "simd": (True, False), "threads": (0, 1, 2)}
    entries = [
        kept({"block": 128, "simd": False, "threads": 1}, 1.2),
        kept({"block": 256, "simd": True, "threads": 2}, 3.0, author="llm:local"),  # not a grid point
        kept({"block": 256, "simd": True, "threads": 0}, 2.0),
        kept({"block": 256, "simd": True, "threads": 0}, 1.9),  # the same point, on another shape
        kept({"block": 512, "simd": False, "unroll": 4}, 1.5),  # a choice and a parameter gone, one new
        kept({"block": 64, "simd": True, "threads": 2}, 1.1),
    ]

    starts = warm_starts(entries, space, budget=40)

    assert (
        starts
        == [
            {"block": 256, "simd": True, "threads": 0},
            {"block": 64, "simd": False, "threads": 0},  # the template's defaults where it changed
            {"block": 128, "simd": False, "threads": 1},
        ][:MOST_WARM_STARTS]
    )
    assert warm_starts(entries, space, budget=3) == starts[:1]  # a quarter of the budget, at least one
    assert warm_starts([], space, budget=40) == []


@pytest.mark.skipif(CPU.unavailable() is not None, reason=str(CPU.unavailable()))
def test_a_warm_search_evaluates_its_starts_before_the_templates_default() -> None:
    default = CPU.default_params("layer_norm")
    space = CPU.search_space("layer_norm")
    other = {name: choices[-1] for name, choices in space.items()}
    ruled_out = {**default, "threads": 99}  # not a choice: skipped, no evaluation spent
    seen: list[Candidate] = []

    outcome = tune(
        "layer_norm",
        "cpu",
        2,
        seed=1,
        settings=SMALL,
        starts=[ruled_out, other],
        on_evaluated=lambda n, c, e: seen.append(c),
    )

    assert [candidate.params for candidate in seen] == [other, default]
    assert [e.proposer for e in outcome.trace.evaluations] == ["initial", "initial"]
