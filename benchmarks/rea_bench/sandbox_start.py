"""How long the evaluator's sandboxed processes take to start: forked from a fork server that has
imported PyTorch (:mod:`rea_kernel.forkserver`, the default) against started afresh, each one a
new Python that imports PyTorch itself (``fork_server=False``, the peer). Interleaved, one of
each in turn, on the same machine in the same run:

* **a harness process**, from the request to its exit: the harness with no job starts, imports
  (afresh) and exits at once, so this is the start and nothing else;
* **a small evaluation**, the build cached: a layer-norm kernel checked on a few small shapes and
  timed on one, as the tests and a search's cheap drafts evaluate;
* **a screening evaluation**, built afresh: each operator's default ``cpu`` kernel with the
  default settings but ``torch.compile`` (a search's screening), the compiler's time included.

    python -m rea_bench.sandbox_start                # about 4 minutes on 2 cores
    python -m rea_bench.sandbox_start --repeats 2 --ops layer_norm
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rich.progress import Progress

import rea_kernel
from rea_bench.output import console, print_header, print_table
from rea_kernel.evaluator import Settings, evaluate
from rea_kernel.forkserver import start_forked
from rea_kernel.sandbox import Launcher, Limits, run_sandboxed, start_exec
from rea_kernel.targets import get_target

LAUNCHERS: dict[str, Launcher] = {"afresh": start_exec, "forked": start_forked}
SCREENING_OPS = ("linear_bias_act", "layer_norm", "fm_interaction", "dcn_cross")


def harness_start(scratch: Path) -> Callable[[str], float]:
    """Seconds from asking for a harness process to its exit, without a job to do."""
    environment = {"PYTHONPATH": str(Path(rea_kernel.__file__).resolve().parents[1])}
    argv = [sys.executable, "-s", "-P", "-m", "rea_kernel.harness"]

    def once(mode: str) -> float:
        directory = Path(tempfile.mkdtemp(dir=scratch))
        started = time.perf_counter()
        finished = run_sandboxed(argv, directory, Limits(), environment, launcher=LAUNCHERS[mode])
        took = time.perf_counter() - started
        if "job.json" not in finished.stderr:
            raise SystemExit(f"the harness did not start as expected: {finished.stderr[-500:]}")
        return took

    return once


def small_evaluation(scratch: Path) -> Callable[[str], float]:
    """Seconds for a test-sized evaluation of the layer-norm kernel, its build cached."""
    cpu = get_target("cpu")
    candidate = cpu.render("layer_norm", cpu.default_params("layer_norm"))
    small = Settings(
        trials=2,
        threads=1,
        warmup=1,
        repeats=3,
        time_compiled_reference=False,
        cache_dir=scratch / "small-cache",
        cache_flush_bytes=4 << 20,
        benchmark_shapes=({"rows": 64, "dim": 32},),
    )
    evaluate(candidate, "layer_norm", small)  # the build, cached for every measured one

    def once(mode: str) -> float:
        started = time.perf_counter()
        evaluation = evaluate(
            candidate, "layer_norm", small.model_copy(update={"fork_server": mode == "forked"})
        )
        took = time.perf_counter() - started
        if not evaluation.passed:
            raise SystemExit(f"the layer-norm kernel did not pass: {evaluation.reason}")
        return took

    return once


def screening_evaluation(scratch: Path, operator: str) -> Callable[[str], float]:
    """Seconds for a screening evaluation of ``operator``'s default kernel, built afresh."""
    cpu = get_target("cpu")
    candidate = cpu.render(operator, cpu.default_params(operator))

    def once(mode: str) -> float:
        settings = Settings(
            cache_dir=Path(tempfile.mkdtemp(dir=scratch)),
            time_compiled_reference=False,
            fork_server=mode == "forked",
        )
        started = time.perf_counter()
        evaluation = evaluate(candidate, operator, settings)
        took = time.perf_counter() - started
        if not evaluation.passed:
            raise SystemExit(f"the {operator} kernel did not pass: {evaluation.reason}")
        return took

    return once


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m rea_bench.sandbox_start", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--starts", type=int, default=10, help="harness processes per way of starting")
    parser.add_argument("--repeats", type=int, default=5, help="small evaluations per way of starting")
    parser.add_argument(
        "--screenings", type=int, default=2, help="screening evaluations per operator and way"
    )
    parser.add_argument("--ops", nargs="*", default=list(SCREENING_OPS), help="operators screened")
    args = parser.parse_args(argv)
    if min(args.starts, args.repeats, args.screenings) < 1:
        parser.error("each count must be at least 1")
    print_header(
        "sandboxed processes: forked from a fork server vs started afresh",
        {
            "starts": args.starts,
            "repeats": args.repeats,
            "screenings": args.screenings,
            "ops": " ".join(args.ops),
        },
    )
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        work = [
            ("a harness process, start to exit", args.starts, harness_start(scratch)),
            ("a small evaluation, build cached", args.repeats, small_evaluation(scratch)),
            *(
                (
                    f"a screening evaluation of {operator}, built afresh",
                    args.screenings,
                    screening_evaluation(scratch, operator),
                )
                for operator in args.ops
            ),
        ]
        start_forked_once(scratch)
        rows = []
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("measuring", total=sum(2 * count for _, count, _ in work))
            for name, count, once in work:
                seconds: dict[str, list[float]] = {mode: [] for mode in LAUNCHERS}
                for _ in range(count):
                    for mode in LAUNCHERS:  # interleaved: a machine that slows slows both
                        seconds[mode].append(once(mode))
                        progress.advance(task)
                afresh, forked = (statistics.median(seconds[mode]) for mode in LAUNCHERS)
                rows.append([name, _seconds(afresh), _seconds(forked), f"{afresh / forked:.2f}x"])
    print_table(
        "median wall-clock seconds, each way of starting the same work",
        ["work", "afresh", "forked", "afresh / forked"],
        rows,
        caption="afresh: every sandboxed process a new Python importing PyTorch; forked: from a fork "
        "server that imported it once (started before the first measurement)",
    )


def start_forked_once(scratch: Path) -> None:
    """The servers' own start (an import of PyTorch, once a process) is not a child's."""
    harness_start(scratch)("forked")


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


if __name__ == "__main__":
    main()
