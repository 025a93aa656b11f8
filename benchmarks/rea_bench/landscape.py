"""KernelEvolve's search on a landscape fitted to measured kernels, over hundreds of seeds.

A search comparison on the machine itself (``rea kernels bench --compare-seeds N``) costs
seconds per evaluation, so it runs a handful of seeds, and on a shared machine each timing
moves by about a tenth: too few and too noisy to tell two searches apart. This replays it. Every
kernel the saved comparisons of an operator evaluated (their ``--json`` files) is a measured
(point, cost); an extra-trees regressor of log cost on the parameters, fitted to them, gives a
cost to every point of the grid, and each evaluation adds the measurements' own noise (the
spread of the points measured more than once). On that landscape, for each seed, from one
drawn point: MCTS + evolution as searches run it (the cost model proposing two turns of three),
the same with the bandit on every turn (``model_share=0``), Optuna's TPE (multivariate, its
strongest set-up for categorical spaces here) and random search, each with the same budget.

Each search's result after k evaluations is the point it measured cheapest so far, what it would
report; it is judged by that point's fitted (noise-free) cost. The table gives, per search, the
seeds on which its result was at least as good as random search's final result within half the
budget, those on which it never was, and the geometric mean of its final result's cost. For
the two MCTS + evolution searches it also gives what ``rea kernels bench`` can measure, where
no cost is known without noise: the same two counts with each search's three cheapest points
measured twice more and judged by their medians (:func:`rea_kernel.search.compare`'s
``settle``). What it does not show: how well the fit extrapolates to points no search
measured (its cross-validated R² is printed), and anything about another operator or machine.

    python -m rea_bench.landscape benchmarks/results/kernels-cpu-epyc-compare-linear-*.json
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import random
import statistics
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import optuna
from sklearn.ensemble import ExtraTreesRegressor
from sklearn.model_selection import cross_val_score

from rea.kernels import ParamValue
from rea_bench.output import console, print_header, print_table
from rea_kernel import search
from rea_kernel.targets import get_target
from rea_kernel.tuning import tree_warmup

Point = Mapping[str, ParamValue]
Search = Callable[[search.SearchSpace, search.Evaluate, int, int, list[search.Point]], search.SearchTrace]


def measured(
    paths: Sequence[Path], operator: str, space: search.SearchSpace
) -> dict[tuple[ParamValue, ...], list[float]]:
    """Every successful measurement of ``operator``'s points in the comparisons saved at
    ``paths``, by point (its values in ``space``'s order); points ``space`` does not admit (saved
    before a template changed) are left out."""
    costs: dict[tuple[ParamValue, ...], list[float]] = {}
    for path in paths:
        comparison = json.loads(path.read_text()).get("comparison") or {}
        if comparison.get("operator") != operator:
            continue
        for seed in comparison["seeds"]:
            for method in ("mcts_evolution", "random"):
                for evaluation in seed[method]["evaluations"]:
                    point = evaluation["point"]
                    if evaluation["cost"] is not None and space.admits(point):
                        values = tuple(point[name] for name in space.names)
                        costs.setdefault(values, []).append(evaluation["cost"])
    return costs


class Landscape:
    """Fitted log cost of every point, plus Gaussian noise on log cost per evaluation."""

    def __init__(
        self, space: search.SearchSpace, costs: Mapping[tuple[ParamValue, ...], list[float]]
    ) -> None:
        self.space = space
        features = np.array([self._features(point) for point in costs])
        log_costs = np.array([math.log(statistics.median(values)) for values in costs.values()])
        spread = [
            math.log(value) - math.log(statistics.median(values))
            for values in costs.values()
            if len(values) > 1
            for value in values
        ]
        self.noise = float(np.std(spread)) if spread else 0.0
        self.repeated = sum(len(values) > 1 for values in costs.values())
        regressor = ExtraTreesRegressor(n_estimators=300, min_samples_leaf=2, random_state=0)
        self.fit_r2 = float(cross_val_score(regressor, features, log_costs, cv=5).mean())
        regressor.fit(features, log_costs)
        grid = [tuple(point.values()) for point in space.points()]
        fitted = regressor.predict(np.array([self._features(values) for values in grid]))
        self._fitted = dict(zip(grid, np.exp(fitted).tolist(), strict=True))
        self.optimum = min(self._fitted.values())

    def _features(self, values: Sequence[ParamValue]) -> list[float]:
        """One indicator per choice, and each choice's index (for ordered ones like block sizes)."""
        row: list[float] = []
        for value, choices in zip(values, self.space.parameters.values(), strict=True):
            index = choices.index(value)
            row += [float(position == index) for position in range(len(choices))] + [float(index)]
        return row

    def cost(self, point: Point) -> float:
        """The fitted, noise-free cost."""
        return self._fitted[tuple(point[name] for name in self.space.names)]

    def measure(self, seed: int) -> search.Evaluate:
        """A noisy measurement, its noise drawn from ``seed``."""
        rng = random.Random(seed)
        return lambda point: self.cost(point) * math.exp(rng.gauss(0.0, self.noise))


def tpe(
    space: search.SearchSpace, evaluate: search.Evaluate, budget: int, seed: int, start: list[search.Point]
) -> search.SearchTrace:
    """Optuna's TPE over the same grid, its first trial the drawn start; a point it proposes again
    is told its earlier cost and not counted, as the other searches never evaluate one twice."""
    with warnings.catch_warnings():  # multivariate and group are marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
    study = optuna.create_study(sampler=sampler)
    for point in start:
        study.enqueue_trial(dict(point))
    distributions: dict[str, optuna.distributions.BaseDistribution] = {
        name: optuna.distributions.CategoricalDistribution(list(choices))
        for name, choices in space.parameters.items()
    }
    costs: dict[tuple[ParamValue, ...], float | None] = {}
    evaluations: list[search.Evaluation] = []
    for _ in range(50 * budget):
        if len(evaluations) == budget:
            break
        trial = study.ask(distributions)
        point = {name: trial.params[name] for name in space.names}
        key = tuple(point.values())
        if key not in costs:
            costs[key] = evaluate(point)
            evaluations.append(search.Evaluation(point=point, cost=costs[key], proposer="model"))
        study.tell(trial, math.inf if costs[key] is None else costs[key])
    return search.SearchTrace(method="mcts_evolution", budget=budget, evaluations=tuple(evaluations))


SEARCHES: Mapping[str, Search] = {
    "MCTS + evolution": lambda space, cost, budget, seed, start: search.mcts_evolution(
        space, cost, budget, seed, initial=start, warmup=tree_warmup(budget)
    ),
    "the same, bandit only": lambda space, cost, budget, seed, start: search.mcts_evolution(
        space, cost, budget, seed, initial=start, warmup=tree_warmup(budget), model_share=0
    ),
    "Optuna TPE": tpe,
    "random search": lambda space, cost, budget, seed, start: search.random_search(
        space, cost, budget, seed, initial=start
    ),
}


SETTLED: Mapping[str, float] = {
    "MCTS + evolution": 2 / 3,
    "the same, bandit only": 0.0,
}
"""The searches also judged as ``rea kernels bench`` judges them, by their ``model_share``."""


def results(trace: search.SearchTrace, landscape: Landscape) -> list[float]:
    """The fitted cost of the search's result (its cheapest measured point) after each evaluation."""
    picked, best, curve = None, math.inf, []
    for evaluation in trace.evaluations:
        if evaluation.cost is not None and evaluation.cost < best:
            picked, best = evaluation.point, evaluation.cost
        curve.append(math.inf if picked is None else landscape.cost(picked))
    return curve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m rea_bench.landscape", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "paths", nargs="+", help="Saved comparisons (rea kernels bench --json); globs allowed."
    )
    parser.add_argument("--operator", default="linear_bias_act", help="Whose measurements to fit.")
    parser.add_argument("--target", default="cpu", help="The target whose search space they are points of.")
    parser.add_argument("--budget", type=int, default=40, help="Evaluations per search.")
    parser.add_argument("--seeds", type=int, default=100, help="Seeds (each with its own start and noise).")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    paths = [Path(found) for pattern in args.paths for found in sorted(glob.glob(pattern))]
    space = search.SearchSpace(get_target(args.target).search_space(args.operator))
    costs = measured(paths, args.operator, space)
    if len(costs) < 20:
        raise SystemExit(
            f"{len(costs)} measured points of {args.operator} in {len(paths)} files: too few to fit"
        )
    landscape = Landscape(space, costs)
    print_header(
        "KernelEvolve search on a landscape fitted to measured kernels",
        {
            "operator": args.operator,
            "measured points": len(costs),
            "fit R² (5-fold)": f"{landscape.fit_r2:.3f}",
            "noise (sd of log cost)": f"{landscape.noise:.3f} from {landscape.repeated} repeated points",
            "grid": space.size,
            "budget": args.budget,
            "seeds": args.seeds,
        },
    )
    curves: dict[str, list[list[float]]] = {name: [] for name in SEARCHES}
    settled: dict[str, list[search.SeedComparison]] = {name: [] for name in SETTLED}
    started = time.perf_counter()
    with console.status("searching") as status:
        for seed in range(args.seeds):
            status.update(f"seed {seed + 1} of {args.seeds}")
            start = space.draw(1, random.Random(f"start-{seed}"))
            for name, run in SEARCHES.items():
                measure = landscape.measure(seed)
                curves[name].append(results(run(space, measure, args.budget, seed, start), landscape))
            for name, share in SETTLED.items():
                settled[name] += search.compare(
                    space,
                    landscape.measure(seed),
                    args.budget,
                    [seed],
                    drawn_starts=1,
                    warmup=tree_warmup(args.budget),
                    settle=(3, 2),
                    model_share=share,
                ).seeds
    half = args.budget // 2
    rows = []
    for name, per_seed in curves.items():
        within = missed = 0
        for curve, random_curve in zip(per_seed, curves["random search"], strict=True):
            target = random_curve[-1]
            reached = next((count for count, cost in enumerate(curve, 1) if cost <= target), None)
            within += reached is not None and reached <= half
            missed += reached is None
        final = math.exp(statistics.mean(math.log(curve[-1]) for curve in per_seed))
        judged = [run.evaluations_to_reach_random_best for run in settled.get(name, [])]
        rows.append(
            [
                name,
                f"{within} of {args.seeds}",
                f"{missed} of {args.seeds}",
                f"{final:.3f}",
                f"{sum(count is not None and count <= half for count in judged)} of {args.seeds}"
                if judged
                else "-",
                f"{judged.count(None)} of {args.seeds}" if judged else "-",
            ]
        )
    print_table(
        f"{args.operator}: results at random search's final result, {args.budget} evaluations each",
        [
            "search",
            f"within {half} evaluations",
            "never",
            "final result (geometric mean)",
            f"settled: within {half}",
            "settled: never",
        ],
        rows,
        caption=f"costs are fitted, noise-free, in the measurements' unit; the grid's fitted optimum "
        f"{landscape.optimum:.3f}; {time.perf_counter() - started:.0f} s",
    )


if __name__ == "__main__":
    main()
