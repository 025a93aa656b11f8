"""The ranker's training step on large tables: how each optimiser choice spends a step.

A ranking model's embedding tables hold millions of rows; a batch of 2,048 looks up a few tens
of thousands. PyTorch's default optimisers then spend most of a step on rows that had no
gradient: a dense gradient the size of the tables is written and read, and Adam updates every
row's moments. This benchmark times training steps of the reference ranker (the kernel
benchmark's DCN-v2 model, 26 fields of 100,000 ids: 2.6 million rows of 16) with:

- ``adam, PyTorch default``: ``torch.optim.Adam`` over every parameter as PyTorch builds it on a
  CPU (a for-loop over the tensors), what the trainer ran before it fused its optimisers;
- ``adam, fused``: the same update in PyTorch's fused kernel, as the trainer now builds it
  (``embedding_optimizer: dense``);
- ``adam + sparse adagrad``: the trainer with ``embedding_optimizer: adagrad`` (the tables'
  gradient sparse, exactly Adagrad on them; fused Adam on the dense parameters);
- ``adam + rowwise adagrad``: ``embedding_optimizer: rowwise_adagrad`` (one sum per row);
- ``adam + lazy adam``: ``embedding_optimizer: sparse_adam``;
- ``adagrad, fused``: dense fused Adagrad everywhere, the same update on the tables as sparse
  Adagrad, for that pair's ratio;
- ``torch.compile + adam, fused``: the peer: the model's forward and backward compiled (dense
  gradients), the fused optimiser.

Each variant trains its own copy of the model from the same weights, on the same prepared
batches; the timed passes are interleaved and the median kept. The step is forward, BCE,
backward and the optimiser, as :mod:`rea_workload.train` runs it (gradient clipping aside).
Not measured here: FBGEMM's table-batched embedding with its fused optimiser (TorchRec's path),
which ships no CPU build for this PyTorch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from rea.memory import keep_freed_memory
from rea_bench.inference import MODEL, data_spec
from rea_bench.output import print_header, print_table
from rea_workload.batches import Batch, batches
from rea_workload.datasets.data import CtrData
from rea_workload.datasets.loader import load_splits
from rea_workload.model import RankerModel
from rea_workload.optim import Optimizers, build_optimizers
from rea_workload.schema import RankerConfig

LEARNING_RATE = 1e-3

Step = Callable[[Batch], None]


def _variant(
    data: CtrData, config: dict[str, Any], compiled: bool = False, pytorch_default: bool = False
) -> Step:
    """A training step of the ranker built with ``config``'s optimiser knobs, from the same
    initial weights as every other variant."""
    ranker = RankerConfig.from_overrides({**MODEL, "learning_rate": LEARNING_RATE, **config})
    torch.manual_seed(0)
    model = RankerModel(data, ranker).train()
    if pytorch_default:
        optimizers = Optimizers((torch.optim.Adam(model.parameters(), lr=LEARNING_RATE),))
    else:
        optimizers = build_optimizers(model, ranker)
    forward = cast(
        Callable[[Batch], tuple[torch.Tensor, torch.Tensor]], torch.compile(model) if compiled else model
    )

    def step(batch: Batch) -> None:
        logits, _ = forward(batch)
        loss = model.ops.bce_with_logits(logits, batch.labels)
        optimizers.zero_grad()
        loss.backward()
        optimizers.step()

    return step


def _timed(step: Step, steps: list[Batch]) -> float:
    start = time.perf_counter()
    for batch in steps:
        step(batch)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m rea_bench.training", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--train-batch", type=int, default=2048, help="Rows per training step.")
    parser.add_argument("--steps", type=int, default=8, help="Training steps per timed pass.")
    parser.add_argument("--rounds", type=int, default=5, help="Timed passes of each variant (median).")
    parser.add_argument("--cardinality", type=int, default=100_000, help="Ids per field: rows per table.")
    parser.add_argument("--threads", type=int, default=None, help="PyTorch's threads.")
    parser.add_argument("--no-compile", action="store_true", help="Skip the torch.compile peer.")
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args(argv)
    keep_freed_memory()  # as jobs run: no timed pass pays for paging in memory freed before it
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = args.train_batch * args.steps
    print_header(
        "ranker training steps on large tables, by optimiser",
        {
            "threads": torch.get_num_threads(),
            "batch": args.train_batch,
            "steps": args.steps,
            "rounds": args.rounds,
        },
    )
    splits = load_splits(data_spec(max(rows * 10 // 8, 1000), args.cardinality))
    data = splits.train.take(np.arange(min(rows, len(splits.train))))
    steps = [batch for batch in batches(data, args.train_batch) if len(batch) == args.train_batch]
    table = RankerModel(data, RankerConfig.from_overrides(MODEL)).embeddings  # its fields are single-valued
    table_rows = table.weight.shape[0]
    looked_up = [len(np.unique(b.categorical.numpy() + table.table_offsets[:-1].numpy())) for b in steps]
    variants = {
        "adam, PyTorch default": _variant(data, {}, pytorch_default=True),
        "adam, fused": _variant(data, {}),
        "adam + sparse adagrad": _variant(data, {"embedding_optimizer": "adagrad"}),
        "adam + rowwise adagrad": _variant(data, {"embedding_optimizer": "rowwise_adagrad"}),
        "adam + lazy adam": _variant(data, {"embedding_optimizer": "sparse_adam"}),
        "adagrad, fused": _variant(data, {"optimizer": "adagrad"}),
    }
    if not args.no_compile:
        variants["torch.compile + adam, fused"] = _variant(data, {}, compiled=True)
    for step in variants.values():  # warm-up: the optimisers' state, compilation, first touch
        step(steps[0])
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, step in variants.items():
            seconds[name].append(_timed(step, steps))
    medians = {name: statistics.median(times) for name, times in seconds.items()}
    default, fused = medians["adam, PyTorch default"], medians["adam, fused"]
    print_table(
        f"{len(steps)} training steps of {args.train_batch:,} rows (forward, BCE, backward, optimiser); "
        f"tables of {table_rows:,} rows, {statistics.mean(looked_up):,.0f} looked up per step on average",
        ["variant", "ms per step", "rows/s", "vs PyTorch default", "vs fused adam"],
        [
            [
                name,
                f"{1000 * median / len(steps):.1f}",
                f"{len(steps) * args.train_batch / median:,.0f}",
                f"{default / median:.2f}x",
                f"{fused / median:.2f}x",
            ]
            for name, median in medians.items()
        ],
        caption=f"median of {args.rounds} interleaved passes; sparse adagrad updates the tables exactly "
        "as dense adagrad does, lazy adam is another optimiser than adam (skipped rows keep their moments)",
    )
    if args.json:
        report = {
            "model": MODEL,
            "threads": torch.get_num_threads(),
            "batch": args.train_batch,
            "table_rows": table_rows,
            "looked_up": looked_up,
            "seconds": seconds,
            "speedup_vs_pytorch_default": {name: default / median for name, median in medians.items()},
        }
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
