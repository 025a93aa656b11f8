"""The templates' shape rules, checked on shapes they were not fitted on.

A template's rule (``Template.suggest``) moves a search's first point for the shapes it knows:
the dense layer's dot-product loop order for a narrow output, its one-pass backward for a
narrower one. Each threshold was measured on one shape (the reference ranker's head), so a rule
that only suits that shape would go unnoticed by the benchmarks that run the ranker. This one
times, on a grid of other shapes (batches, input widths and output widths no rule was fitted
on; an AutoInt head is 16 to 512 inputs wide, one output), every point the rule chooses
between, and says on how many shapes the rule picked the fastest.

    python -m rea_bench.rules
    python -m rea_bench.rules --operator linear_bias_act --grid batch=512,16384 --grid out_features=1,4,16

For each operator: the rule's distinct picks over the grid, and the template's default, are
the points; each is evaluated by :func:`rea_kernel.evaluator.evaluate` (sandboxed, checked for
correctness, timed against eager on that one shape) ``--repeats`` times in turn and its median
speedup over eager taken. A rule is right on a shape where its pick is within ``--tolerance``
of the fastest point's speedup (one evaluation of a point moves by about a tenth here). A miss
costs a model nothing where no point beats eager (it keeps PyTorch for that call), so the misses
where the fastest does are counted apart. What it does not show: points outside the rule's
choices (a search's job), other machines, other dtypes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.progress import Progress

from rea.kernels import ParamValue
from rea_bench.output import console, print_header, print_table
from rea_kernel.evaluator import Settings, evaluate
from rea_kernel.search import Point
from rea_kernel.targets import Target, get_target

_DENSE_HEADS: Mapping[str, tuple[Any, ...]] = {
    "batch": (512, 16384),
    "in_features": (32, 1024),
    "out_features": (1, 4, 8, 12, 16, 24),
    "activation": ("none",),
}
HELD_OUT: Mapping[str, Mapping[str, tuple[Any, ...]]] = {
    "linear_bias_act": _DENSE_HEADS,
    "linear_bias_act_backward": _DENSE_HEADS,
}
"""Per operator with a rule, the grid it is checked on: none of its shapes is one a threshold was
measured on (8,192 or 2,048 rows of 256 inputs), and the widths straddle each threshold."""


def grid_shapes(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in the grid's order."""
    names = list(grid)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*grid.values())]


def rule_points(target: Target, operator: str, shapes: Sequence[Mapping[str, Any]]) -> list[Point]:
    """The template's default, then each distinct point the rules pick for ``shapes``."""
    points = [target.default_params(operator)]
    for shape in shapes:
        suggested = target.suggested_params(operator, shape)
        if suggested not in points:
            points.append(suggested)
    return points


def label(point: Mapping[str, ParamValue], default: Mapping[str, ParamValue]) -> str:
    """A point by what it changes from the default."""
    moved = [f"{name}={value}" for name, value in point.items() if default[name] != value]
    return ", ".join(moved) or "default"


def judge(speedups: Sequence[float], picked: int, tolerance: float) -> dict[str, Any]:
    """Whether the point at ``picked`` is within ``tolerance`` of the fastest (speedups over
    eager, higher is faster), and what it gives up against it."""
    best = max(range(len(speedups)), key=lambda index: speedups[index])
    kept = speedups[picked] / speedups[best]
    return {"best": best, "kept": kept, "right": kept >= 1 - tolerance}


def parse_grid(items: Sequence[str], base: Mapping[str, Sequence[Any]]) -> dict[str, tuple[Any, ...]]:
    """``field=v1,v2`` items over ``base``: numbers where they parse as integers."""
    grid = {name: tuple(values) for name, values in base.items()}
    for item in items:
        name, _, values = item.partition("=")
        if not values:
            raise SystemExit(f"--grid wants field=value,value, got {item!r}")
        grid[name] = tuple(
            int(value) if value.lstrip("-").isdigit() else value for value in values.split(",")
        )
    return grid


def check_rules(
    target: Target,
    operator: str,
    shapes: Sequence[dict[str, Any]],
    settings: Settings,
    repeats: int,
    tolerance: float,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """One row per shape: each point's median speedup over eager, the rule's pick, the fastest;
    none where the rules pick the default on every shape."""
    points = rule_points(target, operator, shapes)
    if len(points) == 1:
        return []
    default = points[0]
    candidates = [target.render(operator, point) for point in points]
    task = progress.add_task(operator, total=len(shapes) * len(points) * repeats) if progress else None
    rows = []
    for index, shape in enumerate(shapes):
        shaped = settings.model_copy(update={"benchmark_shapes": (shape,)})
        measured: list[list[float]] = [[] for _ in points]
        errors: dict[int, str] = {}
        for turn in range(repeats):
            # Each turn starts with another point, so a drift in the machine is not one point's.
            for offset in range(len(points)):
                at = (index + turn + offset) % len(points)
                evaluation = evaluate(candidates[at], operator, shaped)
                if evaluation.passed and evaluation.timings:
                    measured[at].append(evaluation.timings[0].speedup_over_eager)
                else:
                    errors[at] = evaluation.reason
                if progress is not None and task is not None:
                    progress.advance(task)
        picked = points.index(target.suggested_params(operator, shape))
        row: dict[str, Any] = {
            "operator": operator,
            "shape": shape,
            "points": [label(point, default) for point in points],
            "picked": picked,
            "speedups": [statistics.median(speedups) if speedups else None for speedups in measured],
            "errors": {str(at): reason for at, reason in errors.items()},
        }
        if all(speedup is not None for speedup in row["speedups"]):
            row.update(judge(row["speedups"], picked, tolerance))
        rows.append(row)
    return rows


def report(operator: str, rows: Sequence[Mapping[str, Any]], tolerance: float) -> str:
    """Print ``operator``'s table (a shape by the fields the grid varies, the rest in the title);
    return its one-line summary."""
    points = rows[0]["points"]
    fields = list(rows[0]["shape"])
    varied = [name for name in fields if len({str(row["shape"][name]) for row in rows}) > 1]
    fixed = ", ".join(f"{name}={rows[0]['shape'][name]}" for name in fields if name not in varied)
    table = []
    for row in rows:
        speedups = ["failed" if value is None else f"{value:.2f}x" for value in row["speedups"]]
        verdict = "-" if "right" not in row else ("yes" if row["right"] else f"no ({row['kept']:.2f})")
        shape = [str(row["shape"][name]) for name in varied]
        table.append([*shape, *speedups, points[row["picked"]], verdict])
    judged = [row for row in rows if "right" in row]
    right = sum(row["right"] for row in judged)
    worst = min((row["kept"] for row in judged), default=1.0)
    default_right = sum(judge(row["speedups"], 0, tolerance)["right"] for row in judged)
    # Where no point beats eager, a model keeps PyTorch for the call whatever the rule picked.
    costly = sum(not row["right"] and max(row["speedups"]) > 1 for row in judged)
    summary = (
        f"{operator}: the rule's pick within {tolerance:.0%} of the fastest on {right} of "
        f"{len(judged)} shapes (the default on every shape: {default_right}); at worst it kept "
        f"{worst:.2f} of the fastest's speedup; {costly} of its misses where the fastest beats eager"
    )
    print_table(
        f"{operator}: speedup over eager of each point the rule chooses between"
        + (f" ({fixed})" if fixed else ""),
        [*varied, *points, "rule picks", "pick fastest?"],
        table,
    )
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Check the CPU templates' shape rules on held-out shapes.")
    parser.add_argument("--target", default="cpu", help="The target whose templates' rules to check.")
    parser.add_argument(
        "--operator", action="append", help="Operators to check (default: every one in the grid)."
    )
    parser.add_argument("--grid", action="append", default=[], help="field=v1,v2: replaces a field's values.")
    parser.add_argument(
        "--repeats", type=int, default=1, help="Evaluations of each point per shape (median)."
    )
    parser.add_argument("--timed-runs", type=int, default=10, help="Timed runs per evaluation.")
    parser.add_argument("--threads", type=int, default=None, help="Threads for kernels and PyTorch.")
    parser.add_argument(
        "--tolerance", type=float, default=0.1, help="How close to the fastest counts as right."
    )
    parser.add_argument("--json", type=Path, help="Also write the rows here.")
    args = parser.parse_args(argv)
    target = get_target(args.target)
    unavailable = target.unavailable()
    if unavailable is not None:
        raise SystemExit(f"the {target.name} target cannot run here: {unavailable}")
    operators = args.operator or [name for name in HELD_OUT if name in target.operators()]
    unknown = [name for name in operators if name not in HELD_OUT and not args.grid]
    if unknown:
        raise SystemExit(f"no held-out grid for {', '.join(unknown)}: give one with --grid field=v1,v2")
    settings = Settings(
        trials=2, repeats=args.timed_runs, warmup=2, threads=args.threads, time_compiled_reference=False
    )
    print_header(
        "template rules on held-out shapes",
        {"device": target.device_name(), "repeats": args.repeats, "timed runs": args.timed_runs},
    )
    results: list[dict[str, Any]] = []
    summaries = []
    with Progress(console=console, transient=True) as progress:
        checked = {
            operator: check_rules(
                target,
                operator,
                grid_shapes(parse_grid(args.grid, HELD_OUT.get(operator, {}))),
                settings,
                args.repeats,
                args.tolerance,
                progress,
            )
            for operator in operators
        }
    for operator, rows in checked.items():
        if not rows:
            console.print(f"{operator}: no rule moves any shape of the grid from the default")
            continue
        summaries.append(report(operator, rows, args.tolerance))
        results.extend(rows)
    for summary in summaries:
        console.print(summary)
    if args.json:
        args.json.write_text(json.dumps({"device": target.device_name(), "rows": results}, indent=1))


if __name__ == "__main__":
    main()
