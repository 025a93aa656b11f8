"""Tune one operator on one target: walk its template's parameters with a search, evaluate the
kernel each point renders to, and keep what won.

:mod:`rea_kernel.search` knows nothing about kernels and :mod:`rea_kernel.evaluator` nothing
about searching; this is where a point becomes a candidate, an evaluation becomes a cost, and
the winner becomes registry entries. With a :class:`~rea_kernel.synthesis.Synthesizer`, a search
ends with rounds of written candidates, judged the same way, each round told what the last did.
A search may start from what earlier ones found (:func:`warm_starts`): the registry's kernels for
the same operator on other shapes of the same device, nearest shape first, evaluated before the
template's default.
A point's cost is its time **relative to eager PyTorch**
measured in the same evaluation (geometric mean over the benchmark shapes): on a shared machine
a load change between two evaluations moves both times, not their ratio. The search screens
without ``torch.compile``; the cheapest few are screened again before one wins, and the winner is
evaluated once more in full, with it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from rea.kernels import Candidate, KernelEntry, ParamValue, Provenance
from rea_kernel import search
from rea_kernel.evaluator import Evaluation, Settings, evaluate
from rea_kernel.operators import get_operator
from rea_kernel.registry import entries_from
from rea_kernel.synthesis import Attempt, Synthesizer, brief
from rea_kernel.targets import Target, TargetUnavailableError, get_target

Method = Literal["mcts_evolution", "random"]
OnEvaluated = Callable[[int, Candidate, Evaluation], None]
PER_ROUND = 2
"""Written candidates asked for at once: each round's brief carries the last round's results."""
IDLE_ROUNDS = 2
"""Rounds in a row that yield no usable candidate before a synthesizer is given up on."""
MOST_WARM_STARTS = 3
"""Registry kernels a search starts from, at most (and a quarter of its budget)."""
UNLIKE = 4.0
"""A shape field that differs other than in size counts as far as a 16-fold size."""
CONTENDERS = 3
"""The cheapest candidates of a search measured once more before one is chosen, at most (and a
third of the candidates evaluated: a small search spends little on it)."""


class TuningOutcome(BaseModel):
    """A finished search: every candidate it evaluated, the winner's full evaluation and the
    registry entries that evaluation makes (none when nothing passed)."""

    model_config = ConfigDict(frozen=True)

    operator: str
    target: str
    device: str
    method: Method
    seed: int
    trace: search.SearchTrace
    evaluated: tuple[tuple[Candidate, Evaluation], ...]
    synthesis_dropped: tuple[str, ...] = ()
    """Why written candidates (or whole answers) were dropped before evaluation."""
    confirmations: tuple[tuple[Candidate, Evaluation], ...] = ()
    """The contenders' second measurements (:func:`confirmed`), in the order measured."""
    best: Candidate | None = None
    final: Evaluation | None = None
    entries: tuple[KernelEntry, ...] = ()

    @property
    def best_evaluation(self) -> int | None:
        """After how many evaluations the winner was first found (1-based)."""
        if self.best is None:
            return None
        digests = [candidate.digest for candidate, _ in self.evaluated]
        return digests.index(self.best.digest) + 1


def relative_cost(evaluation: Evaluation) -> float | None:
    """What a search minimises: the candidate's time over eager's, geometric mean over the
    benchmark shapes; None when it failed or was not timed."""
    ratios = [
        timing.candidate_seconds / timing.eager_seconds
        for timing in evaluation.timings
        if timing.purpose == "benchmark"
    ]
    return statistics.geometric_mean(ratios) if evaluation.passed and ratios else None


def tree_warmup(budget: int) -> int:
    """Evaluations the tree proposes alone before evolution may: a quarter of a real kernel
    search's small budget (the search's default of 16 would leave a 16-candidate search no
    evolution at all)."""
    return max(4, budget // 4)


def search_shapes(operator: str, chosen: Sequence[Mapping[str, Any]] | None) -> tuple[dict[str, Any], ...]:
    """The shapes a search times on, as plain data: ``chosen`` (a request's, a trainer's), or
    the operator's benchmark shapes where none were chosen."""
    if chosen is None:
        return tuple(shape.model_dump() for shape in get_operator(operator).benchmark_shapes)
    return tuple(dict(shape) for shape in chosen)


def shape_distance(one: Mapping[str, Any], other: Mapping[str, Any]) -> float:
    """How far apart two shapes of an operator are: over their fields, the sum of each size's
    log2 ratio (twice the rows is 1; sizes are counted from one, so an empty bag is near a bag of
    one) and :data:`UNLIKE` for a field that differs otherwise (an activation, a mode) or that
    only one shape has."""
    distance = 0.0
    for name in one.keys() | other.keys():
        a, b = one.get(name), other.get(name)
        if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
            distance += abs(math.log2((max(a, 0) + 1) / (max(b, 0) + 1)))
        elif a != b:
            distance += UNLIKE
    return distance


def warm_starts(
    entries: Iterable[KernelEntry],
    parameters: Mapping[str, Sequence[ParamValue]],
    budget: int,
    shapes: Sequence[Mapping[str, Any]] = (),
) -> list[dict[str, ParamValue]]:
    """Points to evaluate first: the template-written kernels among ``entries`` (the registry's
    for this operator, target and device, other shape buckets included), those timed on the
    shape nearest one of ``shapes`` (the search's own, :func:`shape_distance`) first and, as
    near, the fastest first, as points of the template's current ``parameters``; at most
    :data:`MOST_WARM_STARTS` and a quarter of ``budget`` (at least one). A kernel's speedup on
    another shape is a guess about this one, the better the nearer the shape, so each start is
    evaluated like any point: a shape it does not suit loses.

    A parameter the template has gained since (or a choice it no longer offers) takes the
    template's default; written kernels have no point in the grid and are left out."""

    def nearest_then_fastest(entry: KernelEntry) -> tuple[float, float]:
        near = min((shape_distance(entry.shape, shape) for shape in shapes), default=0.0)
        return near, -entry.speedup_vs_eager

    limit = min(MOST_WARM_STARTS, max(1, budget // 4))
    default = {name: choices[0] for name, choices in parameters.items()}
    starts: list[dict[str, ParamValue]] = []
    for entry in sorted(entries, key=nearest_then_fastest):
        if entry.candidate.author != "template" or not entry.candidate.params:
            continue
        params = entry.candidate.params
        point = {
            name: params[name] if params.get(name) in parameters[name] else default[name]
            for name in parameters
        }
        if point not in starts:
            starts.append(point)
    return starts[:limit]


class CandidateCost:
    """A search's cost function for one operator on one target: a point is rendered into a
    candidate, evaluated without ``torch.compile`` (screening), kept in ``evaluated`` and
    reported to ``on_evaluated``; its cost is :func:`relative_cost`."""

    def __init__(
        self, target: Target, operator: str, settings: Settings, on_evaluated: OnEvaluated | None = None
    ) -> None:
        self.target, self.operator, self.on_evaluated = target, operator, on_evaluated
        self.screening = settings.model_copy(update={"time_compiled_reference": False})
        self.evaluated: list[tuple[Candidate, Evaluation]] = []

    def __call__(self, point: Mapping[str, ParamValue]) -> float | None:
        return self.judge(self.target.render(self.operator, point))

    def judge(self, candidate: Candidate) -> float | None:
        evaluation = evaluate(candidate, self.operator, self.screening)
        self.evaluated.append((candidate, evaluation))
        if self.on_evaluated is not None:
            self.on_evaluated(len(self.evaluated), candidate, evaluation)
        return relative_cost(evaluation)


def cheapest(evaluated: Sequence[tuple[Candidate, Evaluation]]) -> tuple[Candidate, float] | None:
    """The candidate of the lowest cost, the earliest among equals, with that cost; None when
    none passed."""
    scored = ranked(evaluated)
    if not scored:
        return None
    cost, index = scored[0]
    return evaluated[index][0], cost


def ranked(evaluated: Sequence[tuple[Candidate, Evaluation]]) -> list[tuple[float, int]]:
    """The cost and position of each candidate that passed, cheapest first (the earliest among
    equals)."""
    return sorted((cost, i) for i, (_, e) in enumerate(evaluated) if (cost := relative_cost(e)) is not None)


def confirmed(cost: CandidateCost) -> tuple[Candidate | None, list[tuple[Candidate, Evaluation]]]:
    """The winner of the cheapest candidates (:data:`CONTENDERS`), each evaluated once more, by
    the geometric mean of its two costs (one that fails the second time is out); with the second
    evaluations. The cheapest of many noisy costs is biased low, the winner's curse: one lucky
    screening on a shared machine must not beat a faster kernel. None when none passed."""
    scored = ranked(cost.evaluated)
    contenders = min(CONTENDERS, len(cost.evaluated) // 3)
    if len(scored) < 2 or contenders < 2:
        return (cost.evaluated[scored[0][1]][0] if scored else None), []
    again: list[tuple[Candidate, Evaluation]] = []
    combined: list[tuple[float, int, Candidate]] = []
    for first, index in scored[:contenders]:
        candidate = cost.evaluated[index][0]
        evaluation = evaluate(candidate, cost.operator, cost.screening)
        again.append((candidate, evaluation))
        second = relative_cost(evaluation)
        if second is not None:
            combined.append((statistics.geometric_mean([first, second]), index, candidate))
    return (min(combined)[2] if combined else None), again


def attempt(candidate: Candidate, evaluation: Evaluation) -> Attempt:
    cost = relative_cost(evaluation)
    return Attempt(
        candidate=candidate,
        verdict=str(evaluation.verdict),
        reason=evaluation.reason,
        speedup=None if cost is None else 1 / cost,
    )


def synthesize(cost: CandidateCost, synthesizer: Synthesizer, count: int) -> list[str]:
    """Spend ``count`` evaluations on written candidates, :data:`PER_ROUND` at a time, each
    round briefed with every evaluation so far; returns why anything was dropped unevaluated."""
    dropped: list[str] = []
    remaining, idle = count, 0
    while remaining > 0 and idle < IDLE_ROUNDS:
        attempts = [attempt(candidate, evaluation) for candidate, evaluation in cost.evaluated]
        seen = {candidate.digest for candidate, _ in cost.evaluated}
        request = brief(cost.operator, cost.target, attempts, min(PER_ROUND, remaining))
        written, reasons = synthesizer.propose(request, seen)
        dropped += reasons
        idle = 0 if written else idle + 1
        for candidate in written[:remaining]:
            cost.judge(candidate)
            remaining -= 1
    return dropped


def tune(
    operator: str,
    target_name: str,
    budget: int,
    *,
    method: Method = "mcts_evolution",
    seed: int = 0,
    search_id: str = "local",
    settings: Settings | None = None,
    on_evaluated: OnEvaluated | None = None,
    synthesizer: Synthesizer | None = None,
    synthesized: int = 0,
    starts: Sequence[Mapping[str, ParamValue]] = (),
) -> TuningOutcome:
    """Search ``budget`` candidates for ``operator`` on ``target_name``, starting from the
    points the template's rules suggest for the benchmark shapes (where they differ from its
    default: a rule knows the shape, a registry kernel from another shape only guesses), then
    ``starts`` (:func:`warm_starts`; a point the space's constraint rules out is skipped) and
    the template's default (known correct), then up to ``synthesized`` more that ``synthesizer``
    writes; the winner is the cheapest of all, whoever wrote it, over a second measurement of
    the cheapest few (:func:`confirmed`). Raises
    :class:`TargetUnavailableError` when this machine cannot run or cannot time the target's
    kernels: a search needs timings."""
    settings = settings or Settings()
    target = get_target(target_name)
    unavailable = target.unavailable()
    if unavailable is not None:
        raise TargetUnavailableError(unavailable)
    if not target.times_kernels():
        raise TargetUnavailableError(
            f"{target.device_name()} checks {target_name} kernels but cannot time them, and a search "
            "needs timings: run it where the device is"
        )
    cost = CandidateCost(target, operator, settings, on_evaluated)
    evaluated = cost.evaluated
    space = search.SearchSpace(target.search_space(operator))
    default = target.default_params(operator)
    shapes = search_shapes(operator, settings.benchmark_shapes)
    ruled = [point for shape in shapes if (point := target.suggested_params(operator, shape)) != default]
    initial = [*ruled, *(point for point in starts if space.admits(point)), default]
    if method == "random":
        trace = search.random_search(space, cost, budget, seed, initial=initial)
    else:
        trace = search.mcts_evolution(space, cost, budget, seed, initial=initial, warmup=tree_warmup(budget))
    dropped: list[str] = []
    if synthesizer is not None and synthesized > 0:
        dropped = synthesize(cost, synthesizer, synthesized)
    outcome = TuningOutcome(
        operator=operator,
        target=target_name,
        device=target.device_name(),
        method=method,
        seed=seed,
        trace=trace,
        evaluated=tuple(evaluated),
        synthesis_dropped=tuple(dropped),
    )
    best, confirmations = confirmed(cost)
    outcome = outcome.model_copy(update={"confirmations": tuple(confirmations)})
    if best is None:
        return outcome
    final = evaluate(best, operator, settings)
    provenance = Provenance(search_id=search_id, method=method, seed=seed, evaluations=len(evaluated))
    return outcome.model_copy(
        update={"best": best, "final": final, "entries": tuple(entries_from(best, final, provenance))}
    )
