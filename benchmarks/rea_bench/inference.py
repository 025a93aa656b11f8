"""The reference ranker's inference and training steps, end to end, with and without the kernel
registry.

    python -m rea_bench.inference                 # also the end of: rea kernels bench
    python -m rea_bench.inference --budget 8 --rows 65536 --json result.json

1. Build the ranker at ranking sizes (26 categorical fields with large tables, DCN-v2 cross
   layers, an FM term, a layer-normed MLP) on synthetic data, untrained: inference costs the
   same whatever the weights.
2. One inference pass and one training step against an empty registry list every operator call
   they make, with its shape (what a job with ``use_evolved_kernels`` reports): in training, the
   forward and backward operators of each operator in ``rea_workload.ops.BACKWARDS``.
3. KernelEvolve searches each of those (operator, shape) pairs on the target (``cpu``, or
   ``triton`` with the model on the GPU; ``tune`` with that shape as the benchmark), and its
   winners become registry entries.
4. Inference over the same prepared batches is timed three ways, in interleaved rounds (median):
   eager PyTorch, the same model running registry kernels (PyTorch where none beat eager), and
   ``torch.compile`` of the eager model (the peer, given its best set-up: compiled once,
   warmed up). The predictions must agree within float tolerance.
5. Training steps (forward, BCE, backward, Adam) are timed the same way, eager against forward
   and backward kernels where both were found (``rea_workload.ops.BACKWARDS``: the pooled lookup,
   the crosses, the dense layers, FM, layer norm); the rest of a training step (BCE, Adam) runs
   PyTorch. The peer is ``torch.compile`` of the model, forward and backward (PyTorch's fused
   Adam in all three, as the trainer runs it; ``rea_bench.training`` times the optimisers).
   Eager and kernels are timed again with the tables on sparse gradients and sparse Adagrad
   (``embedding_optimizer: adagrad``), where the optimiser no longer dominates the step; there
   the lookup's kernel pair is its forward and its sparse backward
   (``embedding_bag_pooled_sparse_backward``, surveyed by a training step on sparse gradients),
   and the same kernels with PyTorch's lookup both ways show what that pair adds.

PyTorch and the kernels run at the same thread count (``--threads``, default every core). On a
GPU (``--target triton``) every timed pass ends when the device has finished its work.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from rea.kernels import KernelEntry
from rea.memory import keep_freed_memory
from rea_bench.kernels import time_spent
from rea_bench.output import console, print_header, print_table
from rea_kernel.evaluator import EvaluationError, Settings
from rea_kernel.harness import synchronize
from rea_kernel.loader import RegistryKernels
from rea_kernel.sandbox import Limits
from rea_kernel.targets import TARGETS, get_target
from rea_kernel.tuning import tune, warm_starts
from rea_workload.batches import Batch, batches
from rea_workload.datasets.loader import load_splits
from rea_workload.model import RankerModel
from rea_workload.ops import BACKWARDS, SPARSE_LOOKUP_BACKWARD, Ops
from rea_workload.optim import Optimizers, build_optimizers
from rea_workload.schema import RankerConfig

MODEL = {
    "embedding_dim": 16,
    "cross_layers": 2,
    "cross_rank": 64,
    "fm": True,
    "layer_norm": True,
    "mlp_width": 256,
    "mlp_depth": 2,
}
"""A DCN-v2 ranker as ads teams run them: low-rank crosses, an FM term, a normalised MLP."""


def data_spec(rows: int, cardinality: int = 100_000) -> str:
    return f"synthetic:rows={rows},fields=26,cardinality={cardinality},seed=7"


Forward = Callable[[Batch], torch.Tensor]


def _predict(forward: Forward, prepared: list[Batch]) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([torch.sigmoid(forward(batch)) for batch in prepared])


def _timed(forward: Forward, prepared: list[Batch]) -> float:
    device = prepared[0].labels.device.type
    synchronize(device)
    start = time.perf_counter()
    _predict(forward, prepared)
    synchronize(device)
    return time.perf_counter() - start


def _train(model: torch.nn.Module, ops: Ops, optimizers: Optimizers, steps: list[Batch]) -> float:
    """Seconds for one optimiser step per batch (forward, BCE, backward, optimisers); ``model``
    is the ranker or ``torch.compile`` of it, ``ops`` what computes its loss."""
    model.train()
    device = steps[0].labels.device.type
    synchronize(device)
    start = time.perf_counter()
    for batch in steps:
        loss = ops.bce_with_logits(model(batch)[0], batch.labels)
        optimizers.zero_grad()
        loss.backward()
        optimizers.step()
    synchronize(device)
    seconds = time.perf_counter() - start
    model.eval()
    return seconds


def _profile(model: RankerModel, optimizers: Optimizers, steps: list[Batch]) -> None:
    """PyTorch's profile of the training steps, by operator: what a step spends its time on."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        _train(model, model.ops, optimizers, steps)
    console.print(profiler.key_averages().table(sort_by="cpu_time_total", row_limit=20))


def _optimizers(model: RankerModel, sparse_tables: bool) -> Optimizers:
    """The trainer's optimisers for the model: PyTorch's fused Adam, and sparse Adagrad on the
    tables where they train on sparse gradients."""
    knobs = {**MODEL, "learning_rate": 1e-4, "embedding_optimizer": "adagrad" if sparse_tables else "dense"}
    return build_optimizers(model, RankerConfig.from_overrides(knobs))


def searched_entries(
    model: RankerModel,
    prepared: list[Batch],
    steps: list[Batch],
    budget: int,
    settings: Settings,
    seed: int,
    target_name: str = "cpu",
    time_limit: float | None = None,
) -> tuple[list[KernelEntry], list[dict[str, Any]]]:
    """Search every (operator, shape) the model's inference and training steps call, starting
    none after ``time_limit`` seconds (PyTorch runs those); the winners' entries and a row per
    call, with an ``error`` where it has no search. Each search starts from the winners of the
    operator's earlier searches here (a warm start, as the kernel service's from its registry)."""
    with tempfile.TemporaryDirectory() as empty:
        survey = RegistryKernels([], Path(empty), Path(empty), threads=torch.get_num_threads())
        model.ops = Ops(survey)
        _predict(lambda b: model(b)[0], prepared)
        for sparse in (False, True) if steps else ():
            model.sparse_gradients = sparse
            _train(model, model.ops, Optimizers((torch.optim.SGD(model.parameters(), lr=0.0),)), steps[:1])
        model.sparse_gradients = False
    target = get_target(target_name)
    entries: list[KernelEntry] = []
    rows: list[dict[str, Any]] = []
    started = time.monotonic()
    for use in survey.usage():
        if use.operator not in target.operators():
            continue
        shaped = settings.model_copy(update={"benchmark_shapes": (use.shape,)})
        row: dict[str, Any] = {"operator": use.operator, "bucket": use.bucket, "calls": use.calls}
        spent = time_spent(started, time_limit)
        if spent is not None:
            rows.append({**row, "error": spent})
            continue
        try:
            with console.status(f"searching {use.operator} for {use.bucket}"):
                found = [entry for entry in entries if entry.operator == use.operator]
                outcome = tune(
                    use.operator,
                    target.name,
                    budget,
                    settings=shaped,
                    seed=seed,
                    search_id="inference",
                    starts=warm_starts(found, target.search_space(use.operator), budget, [use.shape]),
                )
        except EvaluationError as error:  # the machine could not time this one: PyTorch runs it
            rows.append({**row, "error": str(error)[:300]})
            continue
        entries.extend(outcome.entries)
        best = outcome.entries[0] if outcome.entries else None
        rows.append(
            {
                **row,
                "speedup_vs_eager": None if best is None else best.speedup_vs_eager,
                "speedup_vs_compiled": None if best is None else best.speedup_vs_compiled,
                "params": None if best is None else best.candidate.params,
            }
        )
    return entries, rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m rea_bench.inference", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--target", choices=list(TARGETS), default="cpu", help="Where the model and kernels run."
    )
    parser.add_argument("--budget", type=int, default=8, help="Kernel evaluations per (operator, shape).")
    parser.add_argument("--rows", type=int, default=65_536, help="Rows inferred per timed pass.")
    parser.add_argument("--batch", type=int, default=8192, help="Rows per inference batch (the trainer's).")
    parser.add_argument("--cardinality", type=int, default=100_000, help="Ids per field: rows per table.")
    parser.add_argument("--rounds", type=int, default=7, help="Timed passes of each variant (median).")
    parser.add_argument("--train-batch", type=int, default=2048, help="Rows per training step.")
    parser.add_argument("--train-steps", type=int, default=8, help="Training steps per timed pass; 0: none.")
    parser.add_argument("--repeats", type=int, default=10, help="Timed runs per kernel evaluation.")
    parser.add_argument("--threads", type=int, default=None, help="Threads for PyTorch and kernels.")
    parser.add_argument("--seed", type=int, default=0, help="The kernel searches' seed.")
    parser.add_argument(
        "--search-time-limit",
        type=float,
        metavar="SECONDS",
        help="Start no kernel search after this many seconds (a short turn on a shared GPU): the calls "
        "left run PyTorch, and the timing still happens.",
    )
    parser.add_argument("--no-compile", action="store_true", help="Skip torch.compile (kernel and model).")
    parser.add_argument(
        "--profile", action="store_true", help="Then profile the eager training step: where its time goes."
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
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args(argv)
    keep_freed_memory()  # as jobs run: no timed pass pays for paging in memory freed before it
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    target = get_target(args.target)
    device = target.device
    print_header(
        "reference ranker inference, eager vs registry kernels vs torch.compile",
        {
            "device": target.device_name(),
            "threads": threads,
            "rows": args.rows,
            "batch": args.batch,
            "budget": args.budget,
        },
    )
    splits = load_splits(data_spec(max(args.rows * 10 // 8, 1000), args.cardinality))
    data = splits.train.take(np.arange(min(args.rows, len(splits.train))))
    torch.manual_seed(0)
    model = RankerModel(data, RankerConfig.from_overrides(MODEL)).eval().to(device)
    prepared = [batch.to(device) for batch in batches(data, args.batch)]
    steps = [batch.to(device) for batch in batches(data, args.train_batch)][: args.train_steps]
    steps = [batch for batch in steps if len(batch) == args.train_batch]  # one shape: one bucket
    # The ranker's tables hold 2.6 million rows: a weight gradient is 166 MB, beyond the
    # evaluator's default 256 MiB file limit once inputs and outputs are written together.
    settings = Settings(
        repeats=args.repeats,
        warmup=2,
        threads=threads,
        time_compiled_reference=not args.no_compile,
        limits=Limits(file_bytes=2 << 30, memory_bytes=int(args.memory_gb * (1 << 30))),
        fork_server=not args.afresh,
    ).with_confinement(not args.no_confine)
    entries, searched = searched_entries(
        model, prepared, steps, args.budget, settings, args.seed, target.name, args.search_time_limit
    )
    print_table(
        f"kernels searched for the model's calls ({args.budget} evaluations each)",
        ["operator", "shape bucket", "calls per pass", "kernel vs eager", "vs torch.compile"],
        [
            [
                row["operator"],
                row["bucket"],
                str(row["calls"]),
                "-" if row.get("speedup_vs_eager") is None else f"{row['speedup_vs_eager']:.2f}x",
                "-" if row.get("speedup_vs_compiled") is None else f"{row['speedup_vs_compiled']:.2f}x",
            ]
            for row in searched
        ],
        caption="each measured in the kernel's own sandboxed evaluation; below 1x, the model keeps PyTorch",
    )
    for row in searched:
        if "error" in row:
            console.print(f"[yellow]no kernel for {row['operator']} {row['bucket']}: {row['error']}[/yellow]")

    with tempfile.TemporaryDirectory() as built:
        kernels = RegistryKernels(entries, Path(built), Path(built) / "cache", threads=threads)
        eager_ops, kernel_ops = Ops(), Ops(kernels)

        def with_ops(ops: Ops) -> Forward:
            def forward(batch: Batch) -> torch.Tensor:
                model.ops = ops
                return model(batch)[0]

            return forward

        variants: dict[str, Forward] = {
            "eager": with_ops(eager_ops),
            "registry kernels": with_ops(kernel_ops),
        }
        if not args.no_compile:
            compiled = torch.compile(model)

            def compiled_forward(batch: Batch) -> torch.Tensor:
                model.ops = eager_ops
                return compiled(batch)[0]

            variants["torch.compile"] = compiled_forward
        reference = _predict(variants["eager"], prepared)
        agreement: dict[str, float] = {}
        for name, forward in variants.items():  # warm-up: builds, compiles, first-touch
            got = _predict(forward, prepared)
            agreement[name] = float((got - reference).abs().max())
        seconds: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, forward in variants.items():
                seconds[name].append(_timed(forward, prepared))
        training: dict[str, list[float]] = {}
        if steps:
            # Each variant: what computes, and whether the tables train on sparse gradients (then
            # with the trainer's sparse Adagrad).
            chosen: dict[str, tuple[Ops, torch.nn.Module, bool]] = {
                "eager": (eager_ops, model, False),
                "kernels": (kernel_ops, model, False),
            }
            if not args.no_compile:  # the peer: forward and backward compiled (AOTAutograd)
                chosen["torch.compile"] = (eager_ops, cast(torch.nn.Module, compiled), False)
            chosen["eager, sparse tables"] = (eager_ops, model, True)
            sparse_lookup = SPARSE_LOOKUP_BACKWARD.operator
            if any(entry.operator == sparse_lookup for entry in entries):
                # The same kernels but PyTorch's lookup, both ways: what the lookup's pair adds.
                others = [entry for entry in entries if entry.operator != sparse_lookup]
                without = RegistryKernels(
                    others, Path(built) / "without", Path(built) / "cache", threads=threads
                )
                chosen["kernels, sparse tables, PyTorch's lookup"] = (Ops(without), model, True)
            chosen["kernels, sparse tables"] = (kernel_ops, model, True)
            optimizers = {name: _optimizers(model, sparse) for name, (_, _, sparse) in chosen.items()}
            for name in optimizers:  # warm-up: builds, compiles, the optimisers' state
                model.ops, trained_model, model.sparse_gradients = chosen[name]
                _train(trained_model, model.ops, optimizers[name], steps[:1])
            training = {name: [] for name in optimizers}
            for _ in range(args.rounds):
                for name, chosen_optimizers in optimizers.items():
                    model.ops, trained_model, model.sparse_gradients = chosen[name]
                    training[name].append(_train(trained_model, model.ops, chosen_optimizers, steps))
            model.sparse_gradients = False
        usage = kernels.usage()
        if steps and args.profile:
            model.ops = eager_ops
            _profile(model, optimizers["eager"], steps)
    medians = {name: statistics.median(times) for name, times in seconds.items()}
    print_table(
        f"end-to-end inference on {target.device_name()}, {len(data):,} rows in batches of {args.batch:,}, "
        f"{threads} threads",
        ["variant", "rows/s", "vs eager", "max |prediction - eager's|"],
        [
            [
                name,
                f"{len(data) / medians[name]:,.0f}",
                f"{medians['eager'] / medians[name]:.2f}x",
                f"{agreement[name]:.2e}",
            ]
            for name in variants
        ],
        caption=f"median of {args.rounds} interleaved passes over the same prepared batches",
    )
    if training:
        trained = {name: statistics.median(times) for name, times in training.items()}
        rows = len(steps) * args.train_batch
        alike = {name: "eager, sparse tables" if "sparse" in name else "eager" for name in trained}
        print_table(
            f"training steps, {len(steps)} of {args.train_batch:,} rows each "
            "(forward, BCE, backward, optimisers)",
            ["variant", "rows/s", "vs eager", "vs eager, same optimisers"],
            [
                [
                    name,
                    f"{rows / trained[name]:,.0f}",
                    f"{trained['eager'] / trained[name]:.2f}x",
                    f"{trained[alike[name]] / trained[name]:.2f}x",
                ]
                for name in trained
            ],
            caption=f"kernels: forward and backward kernels where both were found ({', '.join(BACKWARDS)}); "
            "BCE and the optimisers run PyTorch: fused Adam, and with sparse tables sparse Adagrad on them "
            "(the lookup's pair: its forward and sparse backward). torch.compile: the model's forward and "
            "backward compiled",
        )
    ran = [f"{u.operator} {u.bucket}" for u in usage if u.kernel is not None and u.calls]
    kept = [
        f"{u.operator} {u.bucket}: "
        + (u.reason or "its kernel exists, but the other half of its training pair has none")
        for u in usage
        if u.kernel is None or not u.calls
    ]
    console.print(f"registry kernels ran for: {', '.join(ran) or 'nothing'}")
    for line in kept:
        console.print(f"[dim]PyTorch for {line}[/dim]")
    if args.json:
        report = {
            "device": target.device_name(),
            "threads": threads,
            "rows": len(data),
            "batch": args.batch,
            "budget": args.budget,
            "model": MODEL,
            "searched": searched,
            "seconds": seconds,
            "speedup_vs_eager": {name: medians["eager"] / medians[name] for name in variants},
            "max_abs_difference": agreement,
            "kernels": [use.model_dump() for use in usage],
            "training_seconds": training,
        }
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
