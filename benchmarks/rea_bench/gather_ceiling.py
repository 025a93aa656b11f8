"""How fast this CPU gathers the pooled lookup's rows at all: a floor under any lookup kernel's
time, and so a bound on the speedup over ``torch.compile`` any kernel could reach here.

    python -m rea_bench.gather_ceiling                          # the 26-table, dim-32 benchmark shape
    python -m rea_bench.gather_ceiling --dim 16 --batch 512 --mode mean

A C++ loop, compiled here with the system compiler, reads every row the shape's bags gather, in
the bags' order, on every thread, with software prefetch at several distances, and adds each
into a per-thread sum: no output written and no per-bag bookkeeping. Its fastest time is a floor
that a lookup kernel, which must also write its output, does not beat. ``torch.compile`` of the
operator's reference, eager, and the cpu target's default lookup kernel are timed the same way on
the same inputs (the caches flushed before each run, median of the runs): ``torch.compile``'s
time over the floor is the most any kernel could gain on it on this machine.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from rea_bench.output import print_header, print_table
from rea_kernel.operators import get_operator
from rea_kernel.sandbox import Limits
from rea_kernel.targets import CpuTarget, get_target

GATHER_CPP = r"""#include <cstdint>
#include <omp.h>

// Sum every gathered row: the rows of table t's ids start at table_offsets[t]; ids are grouped
// table by table, as the lookup's are. distance: how many ids ahead a row is prefetched (0: none).
extern "C" float gather(const float* weights, const int64_t* table_offsets, const int64_t* indices,
                        const int64_t* id_bounds, int64_t tables, int64_t dim, int64_t distance) {
  float total = 0.0f;
  #pragma omp parallel reduction(+ : total)
  {
    float sum[64] = {};
    #pragma omp for schedule(static)
    for (int64_t t = 0; t < tables; ++t) {
      const float* table = weights + table_offsets[t] * dim;
      const int64_t begin = id_bounds[t], end = id_bounds[t + 1];
      for (int64_t i = begin; i < end; ++i) {
        if (distance > 0 && i + distance < end) {
          const char* ahead = reinterpret_cast<const char*>(table + indices[i + distance] * dim);
          for (int64_t line = 0; line < dim * 4; line += 64) __builtin_prefetch(ahead + line);
        }
        const float* row = table + indices[i] * dim;
        #pragma omp simd
        for (int64_t k = 0; k < dim; ++k) sum[k] += row[k];
      }
    }
    for (int64_t k = 0; k < dim; ++k) total += sum[k];
  }
  return total;
}
"""
DISTANCES = (0, 8, 16, 32, 64, 128, 256)


def _gather_function(directory: Path, target: CpuTarget) -> Callable[..., float]:
    """The floor loop, built with the compiler and flags the cpu target builds kernels with."""
    source, library = directory / "gather.cpp", directory / "gather.so"
    source.write_text(GATHER_CPP)
    subprocess.run([target.compiler, *target.flags, str(source), "-o", str(library)], check=True)
    function = ctypes.CDLL(str(library)).gather
    function.restype = ctypes.c_float
    function.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int64] * 3
    return function


def _median_seconds(run: Callable[[], object], flush: torch.Tensor, repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        flush.add_(1.0)
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m rea_bench.gather_ceiling", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--tables", type=int, default=26)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=32, choices=range(1, 65), metavar="DIM (<= 64)")
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--max-bag", type=int, default=20)
    parser.add_argument("--mode", choices=("sum", "mean"), default="sum")
    parser.add_argument("--repeats", type=int, default=21, help="Timed runs of each (median).")
    parser.add_argument("--flush-mb", type=int, default=64, help="MiB written before each timed run.")
    args = parser.parse_args(argv)
    operator = get_operator("embedding_bag_pooled")
    shape = operator.parse_shape(
        {
            "tables": args.tables,
            "rows": args.rows,
            "dim": args.dim,
            "batch": args.batch,
            "max_bag": args.max_bag,
            "mode": args.mode,
        }
    )
    inputs = operator.make_inputs(shape, torch.float32, torch.Generator().manual_seed(0))
    weights, table_offsets, indices, offsets = inputs
    attributes = operator.attributes(shape)
    target = get_target("cpu")
    assert isinstance(target, CpuTarget)
    threads = torch.get_num_threads()
    print_header(
        "pooled lookup: the gather floor against torch.compile",
        {"device": target.device_name(), "threads": threads, **shape.model_dump()},
    )
    flush = torch.zeros(args.flush_mb << 18)
    id_bounds = offsets[:: args.batch].contiguous()
    gathered = int(indices.numel())
    with tempfile.TemporaryDirectory() as scratch:
        gather = _gather_function(Path(scratch), target)
        pointers = [t.data_ptr() for t in (weights, table_offsets, indices, id_bounds)]
        floors = {
            distance: _median_seconds(
                partial(gather, *pointers, args.tables, args.dim, distance), flush, args.repeats
            )
            for distance in DISTANCES
        }
        kernel = target.load(
            target.render(operator.name, target.default_params(operator.name)),
            Path(scratch) / "kernel",
            Path(scratch) / "cache",
            Limits(wall_seconds=120),
            threads,
        )
        compiled = torch.compile(operator.reference)
        timed = {
            "eager": _median_seconds(lambda: operator.reference(*inputs, **attributes), flush, args.repeats),
            "torch.compile": _median_seconds(lambda: compiled(*inputs, **attributes), flush, args.repeats),
            "default cpu kernel": _median_seconds(lambda: kernel(*inputs, **attributes), flush, args.repeats),
        }
    floor = min(floors.values())
    row_bytes = gathered * args.dim * 4

    def line(name: str, seconds: float) -> list[str]:
        return [
            name,
            f"{seconds * 1e3:.3f} ms",
            f"{row_bytes / seconds / 1e9:.1f} GB/s",
            f"{seconds / floor:.2f}x",
        ]

    print_table(
        f"{gathered:,} rows of {args.dim * 4} bytes ({row_bytes / 1e6:.1f} MB) gathered on {threads} threads",
        ["what", "time", "gathered rows' bytes per second", "its time over the floor"],
        [
            *[
                line(f"gather floor, prefetch {distance or 'off'}", seconds)
                for distance, seconds in floors.items()
            ],
            *[line(name, seconds) for name, seconds in timed.items()],
        ],
        caption=f"median of {args.repeats} runs, {args.flush_mb} MiB written before each; the floor reads "
        "the rows only (no output), so a lookup kernel's best possible speedup over torch.compile here "
        f"is about {timed['torch.compile'] / floor:.2f}x",
    )


if __name__ == "__main__":
    main()
