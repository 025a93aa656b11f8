"""Freed memory kept in the process for reuse, instead of handed back to the system at each free.

Tensor code allocates large blocks afresh all the time: a ranker's activations at 8,192 rows are
megabytes per layer per batch. glibc's malloc returns such blocks to the system (those it maps
with ``mmap`` when they are freed, the heap's top once past its trim threshold), so the next
batch faults every page in again, and the system zeroes each one (about a microsecond per
4 KiB). On a 2-core AMD EPYC VM, the reference ranker's inference (``rea_bench.inference``'s
model, 65,536 rows in batches of 8,192, PyTorch eager) took 212,000 page faults per pass and
0.58 s, against a handful of faults and 0.34 s with the memory kept (2026-12-06); which calls
pay, and how much, depends on the process's history of allocations and on the machine's load,
which also makes timings noisy. tcmalloc or jemalloc, preloaded, are the usual remedy; two glibc
settings do the same for the sizes tensors allocate, with nothing to install: large blocks come
from the heap and the heap is never trimmed. Whether one freed block is reused turns on the
heap's layout, but a loop that repeats its allocations settles: in the ranker's inference loop,
the passes after the first took no page faults (85,760 a pass without). The process keeps
its peak heap for its lifetime: right for jobs and benchmarks, which peak and end, not for
long-lived services. (The kernel evaluator's sandboxed processes, which import nothing from this
package, do the same: ``rea_kernel.harness.settle_allocator``.)
"""

from __future__ import annotations

import ctypes

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's malloc.h
_NEVER = 2**31 - 1
"""The largest value mallopt's ``int`` argument takes."""


def keep_freed_memory() -> bool:
    """Make this process's C allocator keep what it frees: no ``mmap`` for large blocks (glibc
    still maps one where the heap cannot grow) and no trimming of the heap's top. True if it
    did; False where the C library has no ``mallopt`` (not glibc: musl, macOS), which then
    allocates as before."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _NEVER))
