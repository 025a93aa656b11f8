"""A search end to end on this machine's CPU, at a budget that fits CI: every point becomes a
candidate that the sandboxed evaluator judges, the winner is evaluated in full and becomes
registry entries that name this CPU."""

from __future__ import annotations

import pytest

from rea.kernels import Candidate
from rea_kernel.evaluator import Evaluation, Settings
from rea_kernel.targets import get_target
from rea_kernel.tuning import relative_cost, tune

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
        "layer_norm", "cpu", 3, seed=1, settings=SMALL, on_evaluated=lambda n, c, e: seen.append((n, c, e))
    )

    assert [n for n, _, _ in seen] == [1, 2, 3]
    assert len({candidate.digest for _, candidate, _ in seen}) == 3
    assert seen[0][1].params == CPU.default_params("layer_norm")  # the known-correct start
    assert [relative_cost(e) for _, _, e in seen] == [e.cost for e in outcome.trace.evaluations]
    assert outcome.best is not None and outcome.final is not None and outcome.final.passed
    assert outcome.trace.best is not None and outcome.best.params == outcome.trace.best.point
    [entry] = outcome.entries
    assert entry.operator == "layer_norm" and entry.device == CPU.device_name()
    assert entry.provenance.evaluations == 3 and entry.provenance.method == "mcts_evolution"
    assert entry.speedup_vs_eager == pytest.approx(entry.eager_seconds / entry.candidate_seconds)
