"""KernelEvolve on this machine's CPU: per operator, the kernel a search finds against eager
PyTorch and ``torch.compile``, and MCTS + evolution against random search at equal evaluations.

Every kernel is checked and timed by the sandboxed evaluator (:mod:`rea_kernel.evaluator`):
fresh inputs every run, caches flushed before each, eager and ``torch.compile`` timed the same
way in a separate process, the winner evaluated again in full after the search. Speedups are
ratios measured in one evaluation, so load on a shared machine moves both sides.

Then, unless ``--no-inference``, the reference ranker's inference end to end, eager against
registry kernels searched for its own calls and against ``torch.compile``
(:mod:`rea_bench.inference`).

    rea kernels bench                                    # or python -m rea_bench.kernels
    rea kernels bench --ops embedding_bag_pooled --budget 16 --compare-seeds 3 --no-inference
    rea kernels bench --ops layer_norm --budget 1 --compare-op dcn_cross --compare-from random \
        --compare-seeds 5 --no-inference                 # both searches from a drawn point
    rea kernels bench --target triton                    # on a machine with a CUDA GPU
    rea kernels bench --ops layer_norm --llm 8 --no-inference   # and 8 kernels an LLM writes

With ``--llm N`` each search goes on to N kernels the configured LLM writes (``REA_LLM_BASE_URL``,
``REA_KERNEL_LLM_MODEL``; :mod:`rea_kernel.synthesis`), and a table sets the best written kernel
beside the best from the templates, both from the search's own evaluations: whether the model
found anything the grids do not hold.

The ``triton`` target times kernels only on a GPU; without one it checks correctness alone, and
this benchmark refuses it. Memory-bound operators are measured against the device's copy rate,
measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any, Literal

import torch

from rea.kernels import Candidate, ParamValue
from rea_bench.output import console, print_header, print_table
from rea_kernel import search
from rea_kernel.evaluator import Evaluation, EvaluationError, Settings
from rea_kernel.harness import synchronize
from rea_kernel.operators import OPERATORS
from rea_kernel.sandbox import Limits
from rea_kernel.synthesis import synthesizer_from
from rea_kernel.targets import TARGETS, get_target
from rea_kernel.tuning import CandidateCost, TuningOutcome, cheapest, tree_warmup, tune

COMPARED = "embedding_bag_pooled"


def _params(params: dict[str, ParamValue]) -> str:
    return " ".join(f"{name}={value}" for name, value in params.items())


def copy_bandwidth(device: str = "cpu", megabytes: int = 256, repeats: int = 5) -> float:
    """Bytes per second ``device`` copies one large buffer into another (read plus write),
    best of ``repeats``: the practical peak a memory-bound kernel is measured against."""
    megabytes = megabytes if device == "cpu" else 4 * megabytes  # far beyond a GPU's cache
    source = torch.ones(megabytes << 18, device=device)
    target = torch.empty_like(source)
    target.copy_(source)
    best = math.inf
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        target.copy_(source)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * source.numel() * 4 / best


def time_spent(started: float, limit: float | None) -> str | None:
    """Why no search starts now: ``limit`` seconds have passed since ``started`` (a monotonic
    time); None while time is left or there is no limit."""
    if limit is None or time.monotonic() - started < limit:
        return None
    return f"not searched: the {limit:g} s time limit was spent"


def _unmeasured(operator: str, why: str) -> list[str]:
    return [operator, "-", "-", "-", "-", "-", why[:60], "-"]


def _speedups(outcome: TuningOutcome, peak: float) -> list[list[str]]:
    final = outcome.final
    if final is None or not final.passed:
        why = final.reason if final else "no candidate passed"
        return [_unmeasured(outcome.operator, why)]
    operator = OPERATORS[outcome.operator]
    rows = []
    for timing in final.timings:
        if timing.purpose != "benchmark":
            continue
        compiled = timing.speedup_over_compiled
        moved = operator.bytes_moved(operator.parse_shape(timing.shape))
        bandwidth = "-" if moved is None else f"{moved / timing.candidate_seconds / peak:.0%}"
        rows.append(
            [
                outcome.operator,
                timing.bucket,
                f"{timing.candidate_seconds * 1e3:.3f} ms",
                f"{timing.speedup_over_eager:.2f}x",
                "-" if compiled is None else f"{compiled:.2f}x",
                bandwidth,
                f"{outcome.best_evaluation} of {len(outcome.evaluated)}",
                outcome.best.author if outcome.best else "-",
            ]
        )
    return rows


def _written(outcome: TuningOutcome) -> list[str]:
    """The best written kernel beside the best template kernel, as the search measured them."""

    def best(evaluated: list[tuple[Candidate, Evaluation]]) -> str:
        found = cheapest(evaluated)
        return "-" if found is None else f"{1 / found[1]:.2f}x"

    template = [(c, e) for c, e in outcome.evaluated if c.author == "template"]
    written = [(c, e) for c, e in outcome.evaluated if c.author != "template"]
    passed = sum(e.passed for _, e in written)
    return [
        outcome.operator,
        f"{passed} of {len(written)} ({len(outcome.synthesis_dropped)} dropped unevaluated)",
        best(template),
        best(written),
        outcome.best.author if outcome.best else "-",
    ]


def compare_searches(
    operator: str,
    budget: int,
    seeds: int,
    settings: Settings,
    settle: tuple[int, int] = (0, 0),
    target_name: str = "cpu",
    start: Literal["default", "random"] = "default",
) -> search.Comparison:
    """Both searches on the same evaluations (a point both propose is evaluated once), each
    configured as :func:`rea_kernel.tuning.tune` runs it, from the template's default (as a
    search starts) or from one point per seed drawn at random (what the searches find when the
    default is not already near the best); ``settle``: see :func:`search.compare`."""
    target = get_target(target_name)

    def shown(number: int, candidate: Candidate, evaluation: Evaluation) -> None:
        console.print(f"[dim]{operator} #{number}: {_params(candidate.params)}: {evaluation.verdict}[/dim]")

    cost = CandidateCost(target, operator, settings, shown)
    space = search.SearchSpace(target.search_space(operator))
    initial = [target.default_params(operator)] if start == "default" else []
    return search.compare(
        space,
        cost,
        budget,
        range(seeds),
        initial=initial,
        drawn_starts=int(start == "random"),
        warmup=tree_warmup(budget),
        settle=settle,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="rea kernels bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=list(TARGETS), default="cpu", help="Where kernels run.")
    parser.add_argument("--ops", nargs="*", default=None, help="Operators to search (default: the target's).")
    parser.add_argument("--budget", type=int, default=8, help="Evaluations per operator's search.")
    parser.add_argument("--compare-budget", type=int, default=16, help="Evaluations per method and seed.")
    parser.add_argument("--compare-seeds", type=int, default=2, help="0 skips the comparison.")
    parser.add_argument(
        "--compare-op", default=COMPARED, help=f"The operator both searches run on (default: {COMPARED})."
    )
    parser.add_argument(
        "--compare-from",
        choices=("default", "random"),
        default="default",
        help="Where both searches start: the template's default point, or one drawn per seed.",
    )
    parser.add_argument(
        "--settle",
        type=int,
        nargs=2,
        default=(3, 2),
        metavar=("LEADERS", "TIMES"),
        help="Measure each search's LEADERS best points TIMES more and judge both searches on the "
        "medians (0 0: on single measurements).",
    )
    parser.add_argument("--repeats", type=int, default=10, help="Timed runs per shape (median).")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="Turns the candidate and its baselines take at timing, sharing the repeats.",
    )
    parser.add_argument(
        "--flush-mb",
        type=int,
        help="MiB written to flush the caches before each timed run (default: 1.5x the last-level cache).",
    )
    parser.add_argument(
        "--huge-pages",
        action="store_true",
        help="Time every side with tensors of 2 MiB and more on transparent huge pages.",
    )
    parser.add_argument(
        "--no-inference", action="store_true", help="Skip the ranker's end-to-end inference measurement."
    )
    parser.add_argument(
        "--memory-gb", type=float, default=8.0, help="Memory each sandboxed evaluation may use, GiB."
    )
    parser.add_argument(
        "--no-confine",
        action="store_true",
        help="Run candidates without Landlock confinement (for a machine where it keeps a GPU runtime "
        "from starting; every other limit holds).",
    )
    parser.add_argument(
        "--afresh",
        action="store_true",
        help="Start each sandboxed process afresh rather than fork it from a fork server that has imported "
        "PyTorch (for a machine where forking gets in a GPU runtime's way; slower, otherwise the same).",
    )
    parser.add_argument(
        "--llm",
        type=int,
        default=0,
        metavar="N",
        help="Then N kernels per operator written by the configured LLM (REA_LLM_BASE_URL).",
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        metavar="SECONDS",
        help="Start no operator's search after this many seconds (a short turn on a shared GPU): the "
        "table and JSON hold the operators searched, and name the others.",
    )
    parser.add_argument(
        "--json", type=Path, help="Also write the results here (after each operator, and at the end)."
    )
    args = parser.parse_args(argv)
    target = get_target(args.target)
    unavailable = target.unavailable() or (
        None
        if target.times_kernels()
        else f"the {target.name} target times nothing on {target.device_name()}"
    )
    if unavailable:
        raise SystemExit(f"rea kernels bench: {unavailable}")
    if args.compare_seeds and args.compare_op not in target.operators():
        known = ", ".join(target.operators())
        raise SystemExit(f"rea kernels bench: the {target.name} target has no {args.compare_op!r} ({known})")
    synthesizer = None
    if args.llm:
        from rea.settings import Settings as ServiceSettings  # only then: a GPU machine may lack it

        synthesizer = synthesizer_from(ServiceSettings())
    if args.llm and synthesizer is None:
        raise SystemExit("rea kernels bench: --llm needs an LLM endpoint: set REA_LLM_BASE_URL")
    flush = None if args.flush_mb is None else args.flush_mb << 20
    limits = Limits(memory_bytes=int(args.memory_gb * (1 << 30)))
    settings = Settings(
        repeats=args.repeats,
        rounds=args.rounds,
        warmup=2,
        cache_flush_bytes=flush,
        limits=limits,
        huge_pages=args.huge_pages,
        fork_server=not args.afresh,
    ).with_confinement(not args.no_confine)
    shown = {
        "device": target.device_name(),
        "budget": args.budget,
        "repeats": args.repeats,
        "rounds": args.rounds,
        "flush_mb": args.flush_mb,
        **({"huge_pages": "on"} if args.huge_pages else {}),
        **({"written": f"{args.llm} by {synthesizer.author}"} if synthesizer else {}),
    }
    print_header(f"KernelEvolve, {target.name} target", shown)

    peak = copy_bandwidth(target.device)
    report: dict[str, Any] = {
        "device": target.device_name(),
        "target": target.name,
        "budget": args.budget,
        "copy_bandwidth_bytes_per_second": peak,
        "operators": [],
        "not_measured": [],
    }
    started = time.monotonic()
    outcomes: list[TuningOutcome] = []
    rows: list[list[str]] = []
    for operator in args.ops or [name for name in OPERATORS if name in target.operators()]:
        why = time_spent(started, args.time_limit)
        if why is None:
            try:
                with console.status(f"searching {operator}"):
                    outcome = tune(
                        operator,
                        target.name,
                        args.budget,
                        settings=settings,
                        synthesizer=synthesizer,
                        synthesized=args.llm,
                    )
            except EvaluationError as error:  # the harness failed on this operator: the others go on
                why = f"failed: {error}"
            else:
                outcomes.append(outcome)
                report["operators"].append(outcome.model_dump(mode="json", exclude={"evaluated"}))
                rows += _speedups(outcome, peak)
                why = ""
        if why:
            console.print(f"[yellow]{operator}: {why}[/yellow]")
            report["not_measured"].append({"operator": operator, "reason": why})
            rows.append(_unmeasured(operator, why))
        if args.json:  # so a run stopped from outside keeps every operator it finished
            args.json.write_text(json.dumps(report, indent=2, default=str))
    print_table(
        f"best kernel per operator after {args.budget} evaluations, on {target.device_name()}",
        [
            "operator",
            "shape bucket",
            "kernel",
            "vs eager",
            "vs torch.compile",
            "of copy rate",
            "found at",
            "by",
        ],
        rows,
        caption="median of each; each speedup measured against its baseline in the same evaluation; "
        f"bandwidth: the least bytes the operator moves per second, over the device's copy rate "
        f"({peak / 1e9:.1f} GB/s, read + write); '-' for operators bound by arithmetic",
    )
    if synthesizer is not None:
        print_table(
            f"kernels written by {synthesizer.author} ({args.llm} per operator) beside the templates'",
            [
                "operator",
                "written kernels passed",
                "best template kernel",
                "best written kernel",
                "winner by",
            ],
            [_written(outcome) for outcome in outcomes],
            caption="speedups over eager from the search's own evaluations (without torch.compile)",
        )
    if args.compare_seeds:
        settle = (args.settle[0], args.settle[1])
        comparison = compare_searches(
            args.compare_op,
            args.compare_budget,
            args.compare_seeds,
            settings,
            settle,
            target.name,
            args.compare_from,
        )
        compare_rows = [
            [
                str(seed.seed),
                f"{seed.mcts_evolution_best:.3f}" if seed.mcts_evolution_best else "-",
                f"{seed.random_best:.3f}" if seed.random_best else "-",
                "missed"
                if seed.evaluations_to_reach_random_best is None
                else str(seed.evaluations_to_reach_random_best),
                str(seed.remeasured),
            ]
            for seed in comparison.seeds
        ]
        reached = [s.evaluations_to_reach_random_best for s in comparison.seeds]
        mean = (
            statistics.mean(r for r in reached if r is not None)
            if all(r is not None for r in reached)
            else None
        )
        print_table(
            f"{args.compare_op}: MCTS + evolution vs random search, {args.compare_budget} evaluations each, "
            + (
                "from the template's default"
                if args.compare_from == "default"
                else "from a point drawn per seed"
            ),
            [
                "seed",
                "MCTS+evo best (time/eager)",
                "random best",
                "MCTS+evo evaluations to random's best",
                "points re-measured",
            ],
            compare_rows,
            caption=f"goal: random's best within half the budget ({args.compare_budget // 2}); "
            f"mean {'-' if mean is None else f'{mean:.1f}'}; costs of re-measured points are the median "
            f"of {1 + settle[1]} measurements (the {settle[0]} best of each search, until settled)",
        )
        report["comparison"] = {
            "operator": args.compare_op,
            "from": args.compare_from,
            **comparison.model_dump(mode="json"),
        }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    if not args.no_inference:
        from rea_bench.inference import main as end_to_end  # the ranker: only where it runs

        inference = ["--budget", str(args.budget), "--repeats", str(args.repeats), "--target", target.name]
        if args.json:
            inference += ["--json", str(args.json.with_name(f"{args.json.stem}-inference.json"))]
        end_to_end(inference)


if __name__ == "__main__":
    main()
