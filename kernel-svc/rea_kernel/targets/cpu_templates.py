"""Parameterised C++ kernels for the ``cpu`` target, one per operator, with their search spaces.

Each template is plain C++ (no torch headers, so a build takes about a second) exporting one
``extern "C"`` function over raw float pointers, and a ``kernel.py`` shim that allocates the
output with torch and passes data pointers through ctypes. A search space maps each parameter
to its choices; the first choice of each, together, is correct and a sensible start.

Parameters shared by every template: ``threads`` (0 lets OpenMP decide), ``simd`` (an
``omp simd`` pragma on the innermost loops, or leave vectorisation to the compiler) and, where
it matters, ``accumulator`` (sum in float or double) and the OpenMP ``schedule``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from string import Template
from types import MappingProxyType
from typing import Any

from rea.kernels import ParamValue

Params = Mapping[str, ParamValue]

_THREADS: tuple[ParamValue, ...] = (0, 1, 2, 4, 8)
_SIMD: tuple[ParamValue, ...] = (True, False)
_ACCUMULATOR: tuple[ParamValue, ...] = ("double", "float")

_SHIM = '''"""Calls the compiled kernel (kernel.so, beside this file) on torch tensors' memory."""

import ctypes
from pathlib import Path

import torch

_library = ctypes.CDLL(str(Path(__file__).with_name("kernel.so")))
_kernel = _library.${symbol}
_kernel.restype = ${restype}
_kernel.argtypes = ${argtypes}


def _pointer(tensor):
    return tensor.data_ptr()

'''


def _num_threads(params: Params) -> str:
    return f" num_threads({params['threads']})" if params["threads"] else ""


def parallel_for(params: Params, schedule: str = "static", clauses: str = "") -> str:
    """The OpenMP pragma of a template's parallel loop."""
    return f"#pragma omp parallel for schedule({schedule}){_num_threads(params)}{clauses}"


def parallel_region(params: Params) -> str:
    """The OpenMP pragma of a template's parallel region (its loops shared out inside)."""
    return f"#pragma omp parallel{_num_threads(params)}"


def simd(params: Params, reduction: str = "") -> str:
    if not params["simd"]:
        return ""
    return f"#pragma omp simd reduction(+ : {reduction})" if reduction else "#pragma omp simd"


def _no_rule(shape: Mapping[str, Any]) -> Params:
    return {}


@dataclass(frozen=True)
class CpuTemplate:
    """One operator's kernel: its parameters' choices, the C++ it renders, the shim's
    signature, return type and body (which unpack the inputs and call ``_kernel``), and the
    choices known to suit some shapes better than the defaults (``rules``)."""

    symbol: str
    space: Mapping[str, tuple[ParamValue, ...]]
    cpp: Callable[[Params], str]
    argtypes: str
    run: str
    restype: str = "None"
    rules: Callable[[Mapping[str, Any]], Params] = _no_rule

    def suggest(self, shape: Mapping[str, Any]) -> Params:
        return self.rules(shape)

    def render(self, params: Params) -> dict[str, str]:
        shim = Template(_SHIM).substitute(symbol=self.symbol, argtypes=self.argtypes, restype=self.restype)
        shim += self.run
        return {"kernel.cpp": self.cpp(params), "kernel.py": shim}


# embedding_bag_pooled -------------------------------------------------------------------
# loop: which (table, bag) pairs one parallel loop spans (each thread one contiguous range of
# all of them, in the order of the indices; or all of them, shared out by an OpenMP schedule; or
# one loop per table, as separate EmbeddingBags run; or examples, each thread writing whole
# output rows). chunk: columns pooled per pass over a bag's rows; unroll: rows summed at once,
# into separate accumulators. One bag's rows are too few to keep enough misses in flight, so
# rows are requested from memory ahead of their use: prefetch_rows ids ahead along a thread's
# own range (the "ranges" loop, which walks the ids in order), prefetch_bags whole bags ahead
# (the others, whose next bag is known but not a stream of ids).

_EMBEDDING_CPP = Template(r"""#include <omp.h>

#include <algorithm>
#include <cstdint>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace {

constexpr int64_t kChunk = $chunk;
constexpr int64_t kUnroll = $unroll;
constexpr int64_t kPrefetchBags = $prefetch_bags;
constexpr int64_t kPrefetchRows = $prefetch_rows;
constexpr bool kStream = $stream;

// Writes a pooled row segment. Streaming stores (kStream, where the output is aligned) write
// whole lines without first reading them into cache: the output is written once here and read
// later by the next layer, so reading it now only costs bandwidth the gathers need.
inline void store_row(float* __restrict out, const float* __restrict values, int64_t n) {
  int64_t k = 0;
#if defined(__AVX512F__)
  if (kStream && (reinterpret_cast<uintptr_t>(out) & 63) == 0) {
    for (; k + 16 <= n; k += 16) _mm512_stream_ps(out + k, _mm512_loadu_ps(values + k));
  }
#elif defined(__AVX__)
  if (kStream && (reinterpret_cast<uintptr_t>(out) & 31) == 0) {
    for (; k + 8 <= n; k += 8) _mm256_stream_ps(out + k, _mm256_loadu_ps(values + k));
  }
#endif
  for (; k < n; ++k) out[k] = values[k];
}

// Streamed lines may sit in write-combining buffers: fenced before the caller reads them.
inline void fence_streamed() {
#if defined(__x86_64__) || defined(__i386__)
  if (kStream) _mm_sfence();
#endif
}

// Pools columns [0, width) of one bag into out. WIDTH > 0 fixes the width at compile time (a
// full chunk); WIDTH == 0 reads it from `width` (the last, partial chunk). kUnroll independent
// accumulators hide the latency of the additions.
template <int64_t WIDTH>
inline void pool_columns(const float* __restrict table, const int64_t* __restrict ids, int64_t length,
                         int64_t dim, int64_t width, bool mean, float* __restrict out) {
  const int64_t w = WIDTH > 0 ? WIDTH : width;
  float acc[kUnroll][kChunk] = {};
  int64_t j = 0;
  for (; j + kUnroll <= length; j += kUnroll) {
    for (int64_t u = 0; u < kUnroll; ++u) {
      const float* __restrict row = table + ids[j + u] * dim;
      $simd
      for (int64_t k = 0; k < w; ++k) acc[u][k] += row[k];
    }
  }
  for (; j < length; ++j) {
    const float* __restrict row = table + ids[j] * dim;
    $simd
    for (int64_t k = 0; k < w; ++k) acc[0][k] += row[k];
  }
  const float scale = (mean && length > 0) ? 1.0f / static_cast<float>(length) : 1.0f;
  float pooled[kChunk];
  $simd
  for (int64_t k = 0; k < w; ++k) {
    float sum = acc[0][k];
    for (int64_t u = 1; u < kUnroll; ++u) sum += acc[u][k];
    pooled[k] = sum * scale;
  }
  store_row(out, pooled, w);
}

inline void prefetch_row(const float* row, int64_t dim) {
  for (int64_t c = 0; c < dim; c += 16) __builtin_prefetch(row + c);
}

// Asks for every row of a bag to be brought into cache, so that its misses overlap with the
// work on the bags before it (one bag's rows are too few to keep the memory system busy).
inline void prefetch_bag(const float* table, const int64_t* ids, int64_t length, int64_t dim) {
  for (int64_t j = 0; j < length; ++j) prefetch_row(table + ids[j] * dim, dim);
}

// One bag, all its columns; an empty bag pools to zeros.
inline void pool_bag(const float* table, const int64_t* ids, int64_t length, int64_t dim, bool mean,
                     float* out) {
  int64_t c = 0;
  for (; c + kChunk <= dim; c += kChunk) {
    pool_columns<kChunk>(table + c, ids, length, dim, kChunk, mean, out + c);
  }
  if (c < dim) pool_columns<0>(table + c, ids, length, dim, dim - c, mean, out + c);
}

}  // namespace

extern "C" void embedding_bag_pooled(const float* weights, const int64_t* table_offsets,
                                     const int64_t* indices, const int64_t* offsets, float* out,
                                     int64_t tables, int64_t batch, int64_t dim, int32_t mean) {
  $parallel
  {
$loop
    fence_streamed();  // this thread's own streaming stores, before the region ends
  }
}
""")

_POOL = """if (kPrefetchBags > 0 && $ahead < tables * batch) {
      const int64_t next = $ahead;
      prefetch_bag(weights + table_offsets[next / batch] * dim, indices + offsets[next],
                   offsets[next + 1] - offsets[next], dim);
    }
    pool_bag(weights + table_offsets[table] * dim, indices + offsets[bag], offsets[bag + 1] - offsets[bag],
             dim, mean != 0, out + (example * tables + table) * dim);"""

_EMBEDDING_LOOPS = {
    # Each thread one contiguous range of bags, so its ids are one stream in memory order and a
    # cursor kPrefetchRows ids ahead of the bag being pooled keeps a steady number of rows in
    # flight (tracking which table the id it reaches belongs to), as a gather at full speed does.
    "ranges": """  const int64_t bags = tables * batch;
  const int64_t threads = omp_get_num_threads(), thread = omp_get_thread_num();
  const int64_t first = bags * thread / threads, last = bags * (thread + 1) / threads;
  const int64_t stop = offsets[last];
  int64_t ahead = offsets[first];
  int64_t ahead_table = bags > 0 ? first / batch : 0;
  for (int64_t bag = first; bag < last; ++bag) {
    const int64_t table = bag / batch;
    const int64_t example = bag - table * batch;
    for (const int64_t until = std::min(offsets[bag + 1] + kPrefetchRows, stop); ahead < until; ++ahead) {
      while (ahead >= offsets[(ahead_table + 1) * batch]) ++ahead_table;
      prefetch_row(weights + (table_offsets[ahead_table] + indices[ahead]) * dim, dim);
    }
    pool_bag(weights + table_offsets[table] * dim, indices + offsets[bag], offsets[bag + 1] - offsets[bag],
             dim, mean != 0, out + (example * tables + table) * dim);
  }""",
    # One parallel loop over every (table, bag) pair, in the order of the indices.
    "table_bag": """  const int64_t bags = tables * batch;
  $pragma
  for (int64_t bag = 0; bag < bags; ++bag) {
    const int64_t table = bag / batch;
    const int64_t example = bag - table * batch;
    $pool
  }""",
    # Parallel over examples; each thread writes whole output rows.
    "batch_major": """  $pragma
  for (int64_t example = 0; example < batch; ++example) {
    for (int64_t table = 0; table < tables; ++table) {
      const int64_t bag = table * batch + example;
      $pool
    }
  }""",
    # One work-shared loop per table, as one EmbeddingBag per table would run.
    "per_table": """  for (int64_t table = 0; table < tables; ++table) {
    $pragma
    for (int64_t example = 0; example < batch; ++example) {
      const int64_t bag = table * batch + example;
      $pool
    }
  }""",
}

_SCHEDULES = {"dynamic": "dynamic, 16", "static": "static", "guided": "guided"}


# The bag whose rows are prefetched: the one the same thread reaches kPrefetchBags bags later.
_AHEAD = {  # "ranges" prefetches by rows, in its own loop body
    "table_bag": "bag + kPrefetchBags",
    "batch_major": "bag + kPrefetchBags * batch",
    "per_table": "bag + kPrefetchBags",
}


def _embedding_cpp(params: Params) -> str:
    kind = str(params["loop"])
    # One parallel region, its loops shared out with `omp for` (or by hand, for "ranges"), so
    # each thread fences its own streaming stores before the region ends.
    loop = Template(_EMBEDDING_LOOPS[kind]).substitute(
        pragma=f"#pragma omp for schedule({_SCHEDULES[str(params['schedule'])]})",
        pool=Template(_POOL).substitute(ahead=_AHEAD[kind]) if kind in _AHEAD else "",
    )
    return _EMBEDDING_CPP.substitute(
        chunk=params["chunk"],
        unroll=params["unroll"],
        prefetch_bags=params["prefetch_bags"],
        prefetch_rows=params["prefetch_rows"],
        stream="true" if params["store"] == "streaming" else "false",
        parallel=parallel_region(params),
        simd=simd(params),
        loop=loop,
    )


EMBEDDING_BAG = CpuTemplate(
    symbol="embedding_bag_pooled",
    space=MappingProxyType(
        {
            "loop": ("ranges", "table_bag", "batch_major", "per_table"),
            "schedule": ("static", "dynamic", "guided"),
            "chunk": (32, 16, 64, 128),
            "unroll": (2, 1, 4),
            "prefetch_rows": (128, 64, 256, 32, 0),
            "prefetch_bags": (4, 2, 1, 0),
            "store": ("streaming", "cached"),
            "simd": _SIMD,
            "threads": _THREADS,
        }
    ),
    cpp=_embedding_cpp,
    argtypes="[ctypes.c_void_p] * 5 + [ctypes.c_int64] * 3 + [ctypes.c_int32]",
    run="""def run(weights, table_offsets, indices, offsets, *, mode):
    weights, table_offsets, indices, offsets = (
        tensor.contiguous() for tensor in (weights, table_offsets, indices, offsets)
    )
    tables = table_offsets.numel() - 1
    batch = (offsets.numel() - 1) // tables
    dim = weights.shape[1]
    out = torch.empty(batch, tables * dim, dtype=torch.float32)
    _kernel(
        _pointer(weights), _pointer(table_offsets), _pointer(indices), _pointer(offsets), _pointer(out),
        tables, batch, dim, mode == "mean",
    )
    return out
""",
)


# embedding_bag_pooled_backward ----------------------------------------------------------
# Each table owns its rows of the weight's gradient, so threads that take whole tables (or
# whole column stripes of a table: stripes) never add into the same row, and the sums come out
# in the same order on every run. schedule: how (table, stripe) pairs are dealt to threads.

_EMBEDDING_BACKWARD_CPP = Template(r"""#include <algorithm>
#include <cstdint>
#include <cstring>

constexpr int64_t kStripes = $stripes;

extern "C" void embedding_bag_pooled_backward(const float* grad_out, const int64_t* table_offsets,
                                              const int64_t* indices, const int64_t* offsets, float* grad,
                                              int64_t tables, int64_t batch, int64_t dim, int32_t mean) {
  const int64_t stripe = (dim + kStripes - 1) / kStripes;
  $pragma
  for (int64_t unit = 0; unit < tables * kStripes; ++unit) {
    const int64_t table = unit / kStripes;
    const int64_t c0 = (unit % kStripes) * stripe;
    const int64_t width = std::min(stripe, dim - c0);
    if (width <= 0) continue;
    float* table_grad = grad + table_offsets[table] * dim + c0;
    for (int64_t r = 0; r < table_offsets[table + 1] - table_offsets[table]; ++r) {
      std::memset(table_grad + r * dim, 0, static_cast<size_t>(width) * sizeof(float));
    }
    for (int64_t example = 0; example < batch; ++example) {
      const int64_t bag = table * batch + example;
      const int64_t begin = offsets[bag], end = offsets[bag + 1];
      const float scale = (mean != 0 && end > begin) ? 1.0f / static_cast<float>(end - begin) : 1.0f;
      const float* __restrict g = grad_out + (example * tables + table) * dim + c0;
      for (int64_t j = begin; j < end; ++j) {
        float* __restrict row = table_grad + indices[j] * dim;
        $simd
        for (int64_t k = 0; k < width; ++k) row[k] += scale * g[k];
      }
    }
  }
}
""")


def _embedding_backward_cpp(params: Params) -> str:
    return _EMBEDDING_BACKWARD_CPP.substitute(
        stripes=params["stripes"],
        pragma=parallel_for(params, _SCHEDULES[str(params["schedule"])]),
        simd=simd(params),
    )


EMBEDDING_BAG_BACKWARD = CpuTemplate(
    symbol="embedding_bag_pooled_backward",
    space=MappingProxyType(
        {
            "stripes": (1, 2, 4, 8),
            "schedule": ("dynamic", "static", "guided"),
            "simd": _SIMD,
            "threads": _THREADS,
        }
    ),
    cpp=_embedding_backward_cpp,
    argtypes="[ctypes.c_void_p] * 5 + [ctypes.c_int64] * 3 + [ctypes.c_int32]",
    run="""def run(grad_output, table_offsets, indices, offsets, *, mode):
    grad_output, table_offsets, indices, offsets = (
        tensor.contiguous() for tensor in (grad_output, table_offsets, indices, offsets)
    )
    tables = table_offsets.numel() - 1
    batch = grad_output.shape[0]
    dim = grad_output.shape[1] // tables
    grad = torch.empty(int(table_offsets[-1]), dim, dtype=torch.float32)
    _kernel(
        _pointer(grad_output), _pointer(table_offsets), _pointer(indices), _pointer(offsets), _pointer(grad),
        tables, batch, dim, mode == "mean",
    )
    return grad
""",
)


# embedding_bag_pooled_sparse_backward ---------------------------------------------------
# Each table's ids are sorted by row (rows of different tables never meet, so tables sort apart
# and in parallel, and their sorted runs concatenate in global order), then each run of equal
# rows sums its bags' gradients into one output row. sort: a stable least-significant-digit
# radix sort on the row (radix_bits per pass: fewer passes or smaller count tables), or the
# standard library's stable sort. The stable order fixes each row's order of addition, so a
# gradient comes out the same on every run. The shim allocates for every id being distinct and
# returns the first rows the kernel wrote.

_EMBEDDING_SPARSE_BACKWARD_CPP = Template(r"""#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

struct Entry {
  int64_t row;  // local to its table
  int64_t bag;
};

constexpr int kRadixBits = $radix_bits;

// Sorts entries[0, n) by row (rows < rows_in_table), stably; scratch holds n entries.
static void sort_by_row(Entry* entries, Entry* scratch, int64_t n, int64_t rows_in_table) {
$sort
}

extern "C" int64_t embedding_bag_pooled_sparse_backward(
    const float* grad_out, const int64_t* table_offsets, const int64_t* indices, const int64_t* offsets,
    int64_t* out_rows, float* out_values, int64_t tables, int64_t batch, int64_t dim, int32_t mean) {
  const int64_t total = offsets[tables * batch];
  std::vector<Entry> entries(total), scratch(total);
  std::vector<int64_t> first(tables + 1, 0);
  $pragma
  for (int64_t table = 0; table < tables; ++table) {
    const int64_t begin = offsets[table * batch], n = offsets[(table + 1) * batch] - begin;
    Entry* run = entries.data() + begin;
    for (int64_t bag = table * batch; bag < (table + 1) * batch; ++bag) {
      for (int64_t j = offsets[bag]; j < offsets[bag + 1]; ++j) run[j - begin] = Entry{indices[j], bag};
    }
    sort_by_row(run, scratch.data() + begin, n, table_offsets[table + 1] - table_offsets[table]);
    int64_t distinct = 0;
    for (int64_t i = 0; i < n; ++i) distinct += (i == 0 || run[i].row != run[i - 1].row);
    first[table + 1] = distinct;
  }
  for (int64_t table = 0; table < tables; ++table) first[table + 1] += first[table];
  $pragma
  for (int64_t table = 0; table < tables; ++table) {
    const int64_t begin = offsets[table * batch], n = offsets[(table + 1) * batch] - begin;
    const Entry* run = entries.data() + begin;
    int64_t slot = first[table] - 1;
    float* __restrict values = nullptr;
    for (int64_t i = 0; i < n; ++i) {
      if (i == 0 || run[i].row != run[i - 1].row) {
        ++slot;
        out_rows[slot] = table_offsets[table] + run[i].row;
        values = out_values + slot * dim;
        std::memset(values, 0, static_cast<size_t>(dim) * sizeof(float));
      }
      const int64_t bag = run[i].bag, length = offsets[bag + 1] - offsets[bag];
      const float scale = mean != 0 ? 1.0f / static_cast<float>(length) : 1.0f;
      const float* __restrict g = grad_out + ((bag - table * batch) * tables + table) * dim;
      $simd
      for (int64_t k = 0; k < dim; ++k) values[k] += scale * g[k];
    }
  }
  return first[tables];
}
""")

_SPARSE_SORTS = {
    "radix": """  constexpr int64_t buckets = int64_t{1} << kRadixBits;
  std::vector<int64_t> counts(buckets);
  Entry* from = entries;
  Entry* to = scratch;
  for (int shift = 0; shift < 63 && (rows_in_table - 1) >> shift > 0; shift += kRadixBits) {
    std::fill(counts.begin(), counts.end(), 0);
    for (int64_t i = 0; i < n; ++i) ++counts[(from[i].row >> shift) & (buckets - 1)];
    int64_t position = 0;
    for (int64_t& count : counts) position += std::exchange(count, position);
    for (int64_t i = 0; i < n; ++i) to[counts[(from[i].row >> shift) & (buckets - 1)]++] = from[i];
    std::swap(from, to);
  }
  if (from != entries) std::copy(from, from + n, entries);""",
    "std": """  (void)scratch;
  (void)rows_in_table;
  std::stable_sort(entries, entries + n, [](const Entry& a, const Entry& b) { return a.row < b.row; });""",
}


def _embedding_sparse_backward_cpp(params: Params) -> str:
    return _EMBEDDING_SPARSE_BACKWARD_CPP.substitute(
        radix_bits=params["radix_bits"] if params["sort"] == "radix" else 0,  # one source per std point
        sort=_SPARSE_SORTS[str(params["sort"])],
        pragma=parallel_for(params, _SCHEDULES[str(params["schedule"])]),
        simd=simd(params),
    )


EMBEDDING_BAG_SPARSE_BACKWARD = CpuTemplate(
    symbol="embedding_bag_pooled_sparse_backward",
    space=MappingProxyType(
        {
            "sort": ("radix", "std"),
            "radix_bits": (8, 11, 16),
            "schedule": ("dynamic", "static", "guided"),
            "simd": _SIMD,
            "threads": _THREADS,
        }
    ),
    cpp=_embedding_sparse_backward_cpp,
    argtypes="[ctypes.c_void_p] * 6 + [ctypes.c_int64] * 3 + [ctypes.c_int32]",
    restype="ctypes.c_int64",
    run="""def run(grad_output, table_offsets, indices, offsets, *, mode):
    grad_output, table_offsets, indices, offsets = (
        tensor.contiguous() for tensor in (grad_output, table_offsets, indices, offsets)
    )
    tables = table_offsets.numel() - 1
    batch = grad_output.shape[0]
    dim = grad_output.shape[1] // tables
    ids = indices.numel() if batch else 0
    rows = torch.empty(ids, dtype=torch.int64)
    values = torch.empty(ids, dim, dtype=torch.float32)
    if ids == 0:
        return rows, values
    written = _kernel(
        _pointer(grad_output), _pointer(table_offsets), _pointer(indices), _pointer(offsets), _pointer(rows),
        _pointer(values), tables, batch, dim, mode == "mean",
    )
    return rows[:written], values[:written]
""",
)


# dense: the matrix product shared by dcn_cross and linear_bias_act ------------------------

_MATMUL_CPP = Template(r"""#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

constexpr int64_t kBlockRows = $block_rows;
constexpr int64_t kBlockCols = $block_cols;
using Accumulator = $accumulator;

// The packed loop order's register tile: kMicroRows rows of x times a panel of kPanel columns of
// w, kept in kMicroRows * kVectors vector registers for the whole depth loop. Vec is 16 floats
// (one AVX-512 register; the compiler splits it where vectors are narrower).
typedef float Vec __attribute__((vector_size(64)));
constexpr int64_t kLanes = 16;
constexpr int64_t kMicroRows = $micro_rows;
constexpr int64_t kVectors = $micro_vectors;
constexpr int64_t kPanel = kLanes * kVectors;

// Where an operand's element (i, k), i < count, k < depth, lies: at i * depth + k (RowMajor, as
// nn.Linear's weight and a layer's input), or at k * count + i (DepthMajor: the transpose of a
// row-major matrix, read in place by a backward instead of copied).
enum class Layout { RowMajor, DepthMajor };

template <Layout L>
inline float element(const float* __restrict data, int64_t i, int64_t k, int64_t count, int64_t depth) {
  return L == Layout::RowMajor ? data[i * depth + k] : data[k * count + i];
}

// out[r0 + i, c0 : c0 + width] for i < M: bias plus x's rows times one packed panel, where
// panel[k * kPanel + j] = w[c0 + j, k] (zero past the last column); x has `rows` rows in layout XL.
// Each output row segment then goes through epilogue(row_segment, row, c0, width) while in cache.
template <int64_t M, Layout XL, typename Epilogue>
inline void micro_tile(const float* __restrict x, int64_t rows, int64_t depth, const float* __restrict panel,
                       const float* __restrict bias, float* __restrict out, int64_t cols, int64_t r0,
                       int64_t c0, int64_t width, const Epilogue& epilogue) {
  Vec acc[M][kVectors];
  for (int64_t i = 0; i < M; ++i)
    for (int64_t v = 0; v < kVectors; ++v) acc[i][v] = *reinterpret_cast<const Vec*>(bias + v * kLanes);
  for (int64_t k = 0; k < depth; ++k) {
    const Vec* __restrict b = reinterpret_cast<const Vec*>(panel + k * kPanel);
    for (int64_t i = 0; i < M; ++i) {
      const float a = element<XL>(x, r0 + i, k, rows, depth);
      for (int64_t v = 0; v < kVectors; ++v) acc[i][v] += a * b[v];
    }
  }
  for (int64_t i = 0; i < M; ++i) {
    float* row = out + (r0 + i) * cols + c0;
    std::memcpy(row, acc[i], static_cast<size_t>(width) * sizeof(float));
    epilogue(row, r0 + i, c0, width);
  }
}

struct NoEpilogue {
  void operator()(float*, int64_t, int64_t, int64_t) const {}
};

struct Aligned {
  float* data;
  explicit Aligned(int64_t floats)
      : data(static_cast<float*>(std::aligned_alloc(64, static_cast<size_t>((floats * 4 + 63) / 64) * 64))) {}
  ~Aligned() { std::free(data); }
};

// w [cols, depth] (in layout WL) packed into panels of kPanel columns, each k's values side by
// side (zero past the last column), with the bias (zero where null) padded to match.
template <Layout WL>
struct Panels {
  int64_t cols, depth, count;
  Aligned packed, bias;

  Panels(const float* __restrict w, const float* __restrict b, int64_t cols, int64_t depth)
      : cols(cols), depth(depth), count((cols + kPanel - 1) / kPanel), packed(count * depth * kPanel),
        bias(count * kPanel) {
    for (int64_t c = 0; c < count * kPanel; ++c) bias.data[c] = (b && c < cols) ? b[c] : 0.0f;
    // Row by row of w, so that the reads (from memory, the first time) are sequential; the
    // strided writes land in a panel that stays in cache. A DepthMajor w holds a panel's rows.
    $pragma_pack
    for (int64_t p = 0; p < count; ++p) {
      if constexpr (WL == Layout::RowMajor) {
        for (int64_t j = 0; j < kPanel; ++j) {
          const int64_t c = p * kPanel + j;
          float* __restrict dst = packed.data + p * depth * kPanel + j;
          if (c < cols) {
            const float* __restrict src = w + c * depth;
            for (int64_t k = 0; k < depth; ++k) dst[k * kPanel] = src[k];
          } else {
            for (int64_t k = 0; k < depth; ++k) dst[k * kPanel] = 0.0f;
          }
        }
      } else {
        const int64_t width = std::min(kPanel, cols - p * kPanel);
        for (int64_t k = 0; k < depth; ++k) {
          float* __restrict dst = packed.data + (p * depth + k) * kPanel;
          std::memcpy(dst, w + k * cols + p * kPanel, static_cast<size_t>(width) * sizeof(float));
          std::fill(dst + width, dst + kPanel, 0.0f);
        }
      }
    }
  }

  // Row tile rb (of kMicroRows rows below full_blocks, one row each after) of x [rows, depth]
  // times panel p, into out [rows, cols].
  template <Layout XL, typename Epilogue>
  void tile(const float* __restrict x, int64_t rows, int64_t rb, int64_t full_blocks, int64_t p,
            float* __restrict out, const Epilogue& epilogue) const {
    const int64_t c0 = p * kPanel;
    const int64_t width = std::min(kPanel, cols - c0);
    const float* panel = packed.data + p * depth * kPanel;
    if (rb < full_blocks) {
      micro_tile<kMicroRows, XL>(x, rows, depth, panel, bias.data + c0, out, cols, rb * kMicroRows, c0, width,
                                 epilogue);
    } else {
      const int64_t r0 = full_blocks * kMicroRows + (rb - full_blocks);
      micro_tile<1, XL>(x, rows, depth, panel, bias.data + c0, out, cols, r0, c0, width, epilogue);
    }
  }
};

// out[r, c] = epilogue(bias[c] + sum_k x[r, k] * w[c, k]): x [rows, depth] times the transpose
// of w [cols, depth] (nn.Linear's layout). bias may be null. The epilogue rewrites each finished
// row segment: fused into the packed order's tiles, a pass over the rows in the others. Only the
// packed order reads operands in the DepthMajor layout (a backward's transposes).
template <Layout XL = Layout::RowMajor, Layout WL = Layout::RowMajor, typename Epilogue = NoEpilogue>
void matmul_nt(const float* __restrict x, const float* __restrict w, const float* __restrict bias,
               float* __restrict out, int64_t rows, int64_t cols, int64_t depth,
               const Epilogue& epilogue = Epilogue()) {
  const int64_t row_blocks = (rows + kBlockRows - 1) / kBlockRows;
  const int64_t col_blocks = (cols + kBlockCols - 1) / kBlockCols;
$body
}

}  // namespace
""")

_MATMUL_BODIES = {
    # Dot products of contiguous rows, tile by tile.
    "dot": """  static_assert(XL == Layout::RowMajor && WL == Layout::RowMajor, "dot products read rows");
  $pragma
  for (int64_t rb = 0; rb < row_blocks; ++rb) {
    for (int64_t cb = 0; cb < col_blocks; ++cb) {
      const int64_t r_end = std::min(rows, (rb + 1) * kBlockRows);
      const int64_t c_end = std::min(cols, (cb + 1) * kBlockCols);
      for (int64_t r = rb * kBlockRows; r < r_end; ++r) {
        const float* __restrict x_row = x + r * depth;
        for (int64_t c = cb * kBlockCols; c < c_end; ++c) {
          const float* __restrict w_row = w + c * depth;
          Accumulator acc = 0;
          $simd_acc
          for (int64_t k = 0; k < depth; ++k) acc += static_cast<Accumulator>(x_row[k]) * w_row[k];
          out[r * cols + c] = static_cast<float>(acc) + (bias ? bias[c] : 0.0f);
        }
      }
    }
  }
  $finish""",
    # Pack w into panels of kPanel columns (each k's values side by side), then compute register
    # tiles of kMicroRows rows by one panel: the blocked, packed scheme of BLAS libraries.
    "packed": """  const Panels<WL> packed(w, bias, cols, depth);
  const int64_t panels = packed.count;
  const int64_t full_blocks = rows / kMicroRows;
  const int64_t row_tiles = full_blocks + (rows % kMicroRows);
  $pragma_tiles
  for (int64_t outer = 0; outer < $outer_tiles; ++outer) {
    for (int64_t inner = 0; inner < $inner_tiles; ++inner) {
      const int64_t rb = $row_tile, p = $panel;
      packed.template tile<XL>(x, rows, rb, full_blocks, p, out, epilogue);
    }
  }""",
    # Transpose w once, then accumulate scaled rows of it into each output tile (no
    # horizontal sums; the output tile stays in cache across the depth loop).
    "axpy": """  static_assert(XL == Layout::RowMajor && WL == Layout::RowMajor, "this order reads rows");
  std::vector<float> wt(static_cast<size_t>(depth * cols));
  for (int64_t c = 0; c < cols; ++c)
    for (int64_t k = 0; k < depth; ++k) wt[k * cols + c] = w[c * depth + k];
  $pragma
  for (int64_t rb = 0; rb < row_blocks; ++rb) {
    for (int64_t cb = 0; cb < col_blocks; ++cb) {
      const int64_t r_end = std::min(rows, (rb + 1) * kBlockRows);
      const int64_t c_begin = cb * kBlockCols;
      const int64_t c_end = std::min(cols, c_begin + kBlockCols);
      for (int64_t r = rb * kBlockRows; r < r_end; ++r) {
        float* __restrict o = out + r * cols;
        $simd
        for (int64_t c = c_begin; c < c_end; ++c) o[c] = bias ? bias[c] : 0.0f;
      }
      for (int64_t k = 0; k < depth; ++k) {
        const float* __restrict wt_row = wt.data() + k * cols;
        for (int64_t r = rb * kBlockRows; r < r_end; ++r) {
          const float xv = x[r * depth + k];
          float* __restrict o = out + r * cols;
          $simd
          for (int64_t c = c_begin; c < c_end; ++c) o[c] += xv * wt_row[c];
        }
      }
    }
  }
  $finish""",
}

# loop_order: register tiles over a packed weight, dot products of rows, or a transposed weight
# accumulated into output tiles; micro_rows, micro_vectors: the packed order's register tile
# (rows by 16-float vectors); block_rows, block_cols: the other orders' output tile per step.
_DENSE_SPACE: dict[str, tuple[ParamValue, ...]] = {
    "loop_order": ("packed", "dot", "axpy"),
    "micro_rows": (6, 4, 8, 12),
    "micro_vectors": (4, 2, 1),
    "tile_order": ("rows", "panels"),
    "block_rows": (8, 1, 4, 16, 32),
    "block_cols": (64, 16, 32, 128, 256),
    "accumulator": ("float", "double"),
    "simd": _SIMD,
    "threads": _THREADS,
}


# What only the dot and axpy loop orders read.
_UNPACKED = ("loop_order", "block_rows", "block_cols", "accumulator")

_EPILOGUE_PASS = "\n  for (int64_t r = 0; r < rows; ++r) epilogue(out + r * cols, r, 0, cols);"


def _tile_loops(params: Params, row_tiles: str, panels: str) -> dict[str, str]:
    """The two tile loops of a packed product, ``row_tiles`` and ``panels`` their counts:
    tile_order says which is outer (rows: a thread's consecutive tiles share x's rows; panels:
    they share a packed panel), and ``row_tile`` and ``panel`` name each loop's index."""
    rows_outer = params["tile_order"] == "rows"
    return {
        "outer_tiles": row_tiles if rows_outer else panels,
        "inner_tiles": panels if rows_outer else row_tiles,
        "row_tile": "outer" if rows_outer else "inner",
        "panel": "inner" if rows_outer else "outer",
    }


def _matmul_cpp(params: Params) -> str:
    body = Template(_MATMUL_BODIES[str(params["loop_order"])]).substitute(
        **_tile_loops(params, "row_tiles", "panels"),
        pragma=parallel_for(params, clauses=" collapse(2)"),
        pragma_tiles=parallel_for(params, clauses=" collapse(2)"),
        finish=parallel_for(params) + _EPILOGUE_PASS,
        simd_acc=simd(params, "acc"),
        simd=simd(params),
    )
    return _MATMUL_CPP.substitute(
        block_rows=params["block_rows"],
        block_cols=params["block_cols"],
        micro_rows=params["micro_rows"],
        micro_vectors=params["micro_vectors"],
        accumulator=params["accumulator"],
        pragma_pack=parallel_for(params),
        body=body,
    )


# low_rank: the two products one after the other over all rows (the projection, rows x rank,
# goes to memory and back), or fused per block of kMicroRows * fused_tiles rows: the block's
# projection stays in cache, and x's rows are still there when the cross reads them again.
_LOW_RANK = {
    "two_pass": """Aligned projected(rows * rank);
    matmul_nt(x, v, nullptr, projected.data, rows, rank, dim);
    matmul_nt(projected.data, w, bias, out, rows, dim, rank, cross);""",
    "fused": """const float* weights[] = {w, v, bias};
    cross_blocks(x0, x, pack_layers(weights, 1, dim, rank), out, rows, dim, rank);""",
}

# Cross layers block by block of kMicroRows * fused_tiles rows (the fused low-rank cross is a
# stack of one layer): shared by dcn_cross and dcn_cross_stack.
_CROSS_BLOCKS_CPP = Template(r"""
#include <memory>

namespace {

// One cross layer's packed weights: full rank, up = W; low rank, down = V (to the rank), up = U.
struct Layer {
  std::unique_ptr<Panels<Layout::RowMajor>> down, up;
};

// weights: W, b per layer (full rank) or U, V, b (low rank).
std::vector<Layer> pack_layers(const float* const* weights, int64_t layers, int64_t dim, int64_t rank) {
  std::vector<Layer> packed(static_cast<size_t>(layers));
  for (int64_t l = 0; l < layers; ++l) {
    const float* const* w = weights + l * (rank == 0 ? 2 : 3);
    if (rank == 0) {
      packed[l].up = std::make_unique<Panels<Layout::RowMajor>>(w[0], w[1], dim, dim);
    } else {
      packed[l].down = std::make_unique<Panels<Layout::RowMajor>>(w[1], nullptr, rank, dim);
      packed[l].up = std::make_unique<Panels<Layout::RowMajor>>(w[0], w[2], dim, rank);
    }
  }
  return packed;
}

// x_{l+1} = x0 * (W_l x_l + b_l) + x_l for every layer from x_0 = x, block by block of rows: a
// block's x_l stays in cache from one layer to the next, so x0 and x are read from memory once
// and only the last layer's output is written (tile_order as the packed product's: a block's row
// tiles outer, or its panels).
void cross_blocks(const float* __restrict x0, const float* __restrict x, const std::vector<Layer>& layers,
                  float* __restrict out, int64_t rows, int64_t dim, int64_t rank) {
  constexpr int64_t kBlock = kMicroRows * $fused_tiles;
  const int64_t blocks = (rows + kBlock - 1) / kBlock;
  const int64_t count = static_cast<int64_t>(layers.size());
  $pragma
  for (int64_t block = 0; block < blocks; ++block) {
    const int64_t r0 = block * kBlock, n = std::min(kBlock, rows - r0);
    const int64_t full = n / kMicroRows, tiles = full + n % kMicroRows;
    const float* __restrict x0b = x0 + r0 * dim;
    Aligned h(n * rank), ping(count > 1 ? n * dim : 0), pong(count > 2 ? n * dim : 0);
    // The next block's rows of x and x0, a row tile's share at a time while the first projection
    // runs, fetched into L2: otherwise reading them from memory adds to the products' time.
    const float* __restrict next_x = x + (r0 + kBlock) * dim;
    const float* __restrict next_x0 = x0 + (r0 + kBlock) * dim;
    const int64_t lines = std::min(kBlock, std::max<int64_t>(rows - r0 - kBlock, 0)) * dim / 16;
    const int64_t share = (lines + tiles - 1) / tiles;
    const float* current = x + r0 * dim;
    for (int64_t l = 0; l < count; ++l) {
      float* target = l + 1 == count ? out + r0 * dim : (l % 2 == 0 ? ping.data : pong.data);
      // x0 * (segment) + x_l on each finished row segment, rows local to the block.
      const auto cross = [&](float* segment, int64_t row, int64_t c0, int64_t width) {
        const float* a = x0b + row * dim + c0;
        const float* b = current + row * dim + c0;
        $simd
        for (int64_t j = 0; j < width; ++j) segment[j] = a[j] * segment[j] + b[j];
      };
      const float* product_input = current;
      if (rank > 0) {
        const Panels<Layout::RowMajor>& down = *layers[l].down;
        for (int64_t t = 0; t < tiles; ++t) {
          for (int64_t line = t * share; l == 0 && line < std::min(lines, (t + 1) * share); ++line) {
            __builtin_prefetch(next_x + line * 16, 0, 2);
            __builtin_prefetch(next_x0 + line * 16, 0, 2);
          }
          for (int64_t p = 0; p < down.count; ++p)
            down.tile<Layout::RowMajor>(current, n, t, full, p, h.data, NoEpilogue());
        }
        product_input = h.data;
      }
      const Panels<Layout::RowMajor>& up = *layers[l].up;
      for (int64_t outer = 0; outer < $outer_tiles; ++outer)
        for (int64_t inner = 0; inner < $inner_tiles; ++inner)
          up.tile<Layout::RowMajor>(product_input, n, $row_tile, full, $panel, target, cross);
      current = target;
    }
  }
}

}  // namespace
""")

_DCN_CPP = Template(r"""
// Full rank: w = W [dim, dim], v null. Low rank: w = U [dim, rank], v = V [rank, dim].
extern "C" void dcn_cross(const float* x0, const float* x, const float* w, const float* v, const float* bias,
                          float* out, int64_t rows, int64_t dim, int64_t rank) {
  // x0 * (W x + b) + x, on each finished row segment.
  const auto cross = [=](float* segment, int64_t row, int64_t c0, int64_t width) {
    const float* a = x0 + row * dim + c0;
    const float* b = x + row * dim + c0;
    $simd
    for (int64_t j = 0; j < width; ++j) segment[j] = a[j] * segment[j] + b[j];
  };
  if (rank == 0) {
    matmul_nt(x, w, bias, out, rows, dim, dim, cross);
  } else {
    $low_rank
  }
}
""")


def _cross_blocks_cpp(params: Params) -> str:
    """The packed product and the cross layers' block routine, for the fused templates."""
    packed = {name: choices[0] for name, choices in _DENSE_SPACE.items() if name in _UNPACKED}
    return _matmul_cpp({**packed, **params}) + _CROSS_BLOCKS_CPP.substitute(
        **_tile_loops(params, "tiles", "up.count"),
        simd=simd(params),
        pragma=parallel_for(params),
        fused_tiles=params["fused_tiles"],
    )


def _dcn_cpp(params: Params) -> str:
    return _cross_blocks_cpp(params) + _DCN_CPP.substitute(
        simd=simd(params), low_rank=_LOW_RANK[str(params["low_rank"])]
    )


DCN_CROSS = CpuTemplate(
    symbol="dcn_cross",
    space=MappingProxyType(
        {**_DENSE_SPACE, "low_rank": ("fused", "two_pass"), "fused_tiles": (8, 4, 16, 32)}
    ),
    cpp=_dcn_cpp,
    argtypes="[ctypes.c_void_p] * 6 + [ctypes.c_int64] * 3",
    run="""def run(*inputs):
    inputs = [tensor.contiguous() for tensor in inputs]
    if len(inputs) == 4:
        x0, x, w, bias = inputs
        v, rank = None, 0
    else:
        x0, x, w, v, bias = inputs
        rank = v.shape[0]
    rows, dim = x.shape
    out = torch.empty(rows, dim, dtype=torch.float32)
    _kernel(
        _pointer(x0), _pointer(x), _pointer(w), None if v is None else _pointer(v), _pointer(bias),
        _pointer(out), rows, dim, rank,
    )
    return out
""",
)


# dcn_cross_stack ----------------------------------------------------------------------------

_DCN_STACK_CPP = r"""
// weights: W, b per layer (full rank) or U, V, b (low rank); every layer from x0.
extern "C" void dcn_cross_stack(const float* x0, const float* const* weights, int64_t layers, float* out,
                                int64_t rows, int64_t dim, int64_t rank) {
  cross_blocks(x0, x0, pack_layers(weights, layers, dim, rank), out, rows, dim, rank);
}
"""


def _dcn_stack_cpp(params: Params) -> str:
    return _cross_blocks_cpp(params) + _DCN_STACK_CPP


DCN_CROSS_STACK = CpuTemplate(
    symbol="dcn_cross_stack",
    # The dense space's packed product (its other loop orders do not apply), a block of
    # kMicroRows * fused_tiles rows at a time through every layer.
    space=MappingProxyType(
        {
            **{name: choices for name, choices in _DENSE_SPACE.items() if name not in _UNPACKED},
            "fused_tiles": (8, 4, 16, 32),
        }
    ),
    cpp=_dcn_stack_cpp,
    argtypes="[ctypes.c_void_p] * 2 + [ctypes.c_int64, ctypes.c_void_p] + [ctypes.c_int64] * 3",
    run="""def run(x0, *weights, layers):
    x0 = x0.contiguous()
    weights = [tensor.contiguous() for tensor in weights]
    rank = 0 if len(weights) == 2 * layers else weights[1].shape[0]
    rows, dim = x0.shape
    out = torch.empty(rows, dim, dtype=torch.float32)
    if layers == 0:
        return out.copy_(x0)
    table = (ctypes.c_void_p * len(weights))(*[_pointer(tensor) for tensor in weights])
    _kernel(_pointer(x0), table, layers, _pointer(out), rows, dim, rank)
    return out
""",
)


# erf for gelu: a rational approximation on [-4, 4] (erf is +-1 in float beyond) that vectorises,
# or the C library's (exact, one call per element: it keeps the epilogue scalar, measured 2x slower
# on the whole layer); the evaluator decides if the approximation is close enough.
_ERF = {"std": "std::erf", "rational": "rational_erf"}
_RATIONAL_ERF = r"""
namespace {

inline float rational_erf(float v) {
  const float x = std::min(4.0f, std::max(-4.0f, v));
  const float x2 = x * x;
  float p = -2.72614225801306e-10f;
  p = p * x2 + 2.77068142495902e-08f;
  p = p * x2 - 2.10102402082508e-06f;
  p = p * x2 - 5.69250639462346e-05f;
  p = p * x2 - 7.34990630326855e-04f;
  p = p * x2 - 2.95459980854025e-03f;
  p = p * x2 - 1.60960333262415e-02f;
  float q = -1.45660718464996e-05f;
  q = q * x2 - 2.13374055278905e-04f;
  q = q * x2 - 1.68282697438203e-03f;
  q = q * x2 - 7.37332916720468e-03f;
  q = q * x2 - 1.42647390514189e-02f;
  return x * p / q;
}

}  // namespace
"""


def _linear_cpp(params: Params) -> str:
    return (
        _matmul_cpp(params)
        + _RATIONAL_ERF
        + Template(r"""
// activation: 0 none, 1 relu, 2 gelu (exact, with erf, as torch's default).
extern "C" void linear_bias_act(const float* x, const float* w, const float* bias, float* out, int64_t rows,
                                int64_t cols, int64_t depth, int32_t activation) {
  if (activation == 0) {
    matmul_nt(x, w, bias, out, rows, cols, depth);
  } else if (activation == 1) {
    matmul_nt(x, w, bias, out, rows, cols, depth, [](float* segment, int64_t, int64_t, int64_t width) {
      $simd
      for (int64_t j = 0; j < width; ++j) segment[j] = segment[j] > 0.0f ? segment[j] : 0.0f;
    });
  } else {
    matmul_nt(x, w, bias, out, rows, cols, depth, [](float* segment, int64_t, int64_t, int64_t width) {
      $simd
      for (int64_t j = 0; j < width; ++j) {
        segment[j] = 0.5f * segment[j] * (1.0f + $erf(segment[j] * 0.70710678118654752f));
      }
    });
  }
}
""").substitute(simd=simd(params), erf=_ERF[str(params["erf"])])
    )


def _narrow_output(shape: Mapping[str, Any]) -> Params:
    """Fewer output columns than one vector's lanes (a click model's logit, a few tasks'
    heads): the packed order computes a whole vector per row for them and the dot order one
    product per column (measured at 8192 rows of 256 inputs: 2.2x against 0.7x eager at one
    column, 0.9x against 0.4x at eight, level at sixteen). From 8 columns on, only over rows of
    64 inputs or more: over shorter rows each product's horizontal sum costs as much as its
    multiplies, and the packed order won at 8 and 12 columns over 32 and 48 inputs, lost over
    64 to 1024 (``python -m rea_bench.rules``, 2026-12-06; fewer than 8 went to the dot order
    at every width). On 16 shapes measured after this rule was set (40 to 320 inputs, 8 and 14
    columns, 1,024 and 32,768 rows) it picked within a tenth of the faster point on 15."""
    columns = int(shape.get("out_features", 16))
    if 0 < columns < 8 or (8 <= columns < 16 and int(shape.get("in_features", 256)) >= 64):
        return {"loop_order": "dot"}
    return {}


# erf last: the tree fixes parameters in the space's order, and which erf a gelu layer uses
# decides little beside the loop order (nothing for relu); first, one bad early draw (a slow
# loop order with the other erf) kept a search on one erf for 30 evaluations.
LINEAR_BIAS_ACT = CpuTemplate(
    symbol="linear_bias_act",
    space=MappingProxyType({**_DENSE_SPACE, "erf": ("rational", "std")}),
    cpp=_linear_cpp,
    argtypes="[ctypes.c_void_p] * 4 + [ctypes.c_int64] * 3 + [ctypes.c_int32]",
    run="""_ACTIVATIONS = {"none": 0, "relu": 1, "gelu": 2}


def run(x, weight, bias, *, activation):
    x, weight, bias = x.contiguous(), weight.contiguous(), bias.contiguous()
    rows, depth = x.shape
    cols = weight.shape[0]
    out = torch.empty(rows, cols, dtype=torch.float32)
    code = _ACTIVATIONS[activation]
    _kernel(_pointer(x), _pointer(weight), _pointer(bias), _pointer(out), rows, cols, depth, code)
    return out
""",
    rules=_narrow_output,
)


# A bias's gradient, shared by the backward templates of the dense layer and the cross.
_COLUMN_SUMS_CPP = r"""
// Column sums: kPanel columns at a time, accumulated down the rows in a register tile.
template <typename Sum>
void column_sums(const float* __restrict g, float* __restrict sums, int64_t rows, int64_t cols) {
  const int64_t blocks = (cols + kPanel - 1) / kPanel;
  $pragma
  for (int64_t block = 0; block < blocks; ++block) {
    const int64_t c0 = block * kPanel, width = std::min(kPanel, cols - c0);
    Sum acc[kPanel] = {};
    for (int64_t r = 0; r < rows; ++r) {
      const float* __restrict row = g + r * cols + c0;
      $simd
      for (int64_t j = 0; j < width; ++j) acc[j] += row[j];
    }
    for (int64_t j = 0; j < width; ++j) sums[c0 + j] = static_cast<float>(acc[j]);
  }
}
"""

# linear_bias_act_backward: both products of the backward through the same matrix product as the
# forward (so the same parameters tune it), reading the transposed operands in place.
_LINEAR_BACKWARD_CPP = Template(
    _COLUMN_SUMS_CPP
    + r"""
#include <omp.h>

// The one-pass algorithm, for layers of at most kOnePassCols output columns (a head): each
// thread walks its rows once, writing grad_x's row (g's row times w) and adding g's row times
// x's row into a grad_w and grad_b of its own; the threads' sums are added at the end. x is read
// once and grad_x written once, where the two products read g and x twice and tile a panel of
// kPanel columns for a handful.
constexpr bool kOnePass = $one_pass;
constexpr int64_t kOnePassCols = 32;

static void one_pass(const float* g, const float* x, const float* w, float* grad_x, float* grad_w,
                     float* grad_b, int64_t rows, int64_t cols, int64_t depth) {
  const int64_t slots = $threads > 0 ? $threads : omp_get_max_threads();
  const int64_t stride = cols * depth + cols;
  std::vector<Accumulator> partial(static_cast<size_t>(slots * stride), 0);
  $parallel
  {
    Accumulator* __restrict w_sums = partial.data() + omp_get_thread_num() * stride;
    Accumulator* __restrict b_sums = w_sums + cols * depth;
    #pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* __restrict in = x + r * depth;
      const float* __restrict gr = g + r * cols;
      float* __restrict out = grad_x + r * depth;
      std::memset(out, 0, static_cast<size_t>(depth) * sizeof(float));
      for (int64_t c = 0; c < cols; ++c) {
        const float gc = gr[c];
        const float* __restrict wc = w + c * depth;
        Accumulator* __restrict ws = w_sums + c * depth;
        $simd
        for (int64_t k = 0; k < depth; ++k) {
          out[k] += gc * wc[k];
          ws[k] += gc * in[k];
        }
        b_sums[c] += gc;
      }
    }
  }
  $pragma
  for (int64_t i = 0; i < stride; ++i) {
    Accumulator sum = 0;
    for (int64_t t = 0; t < slots; ++t) sum += partial[t * stride + i];
    if (i < cols * depth) {
      grad_w[i] = static_cast<float>(sum);
    } else {
      grad_b[i - cols * depth] = static_cast<float>(sum);
    }
  }
}

// activation: 0 none, 1 relu. With g = grad_output * act'(output) [rows, cols]:
// grad_x [rows, depth] = g w, grad_w [cols, depth] = g^T x, grad_b [cols] = g's column sums.
// Both products read their transposed operands (w, g and x) in place, in the DepthMajor layout.
extern "C" void linear_bias_act_backward(const float* grad_output, const float* x, const float* w,
                                         const float* output, float* grad_x, float* grad_w, float* grad_b,
                                         int64_t rows, int64_t cols, int64_t depth, int32_t activation) {
  Aligned gated(activation == 1 ? rows * cols : 0);
  const float* g = grad_output;
  if (activation == 1) {
    float* __restrict dst = gated.data;
    $pragma
    for (int64_t i = 0; i < rows * cols; ++i) dst[i] = output[i] > 0.0f ? grad_output[i] : 0.0f;
    g = gated.data;
  }
  if (kOnePass && cols <= kOnePassCols) {
    one_pass(g, x, w, grad_x, grad_w, grad_b, rows, cols, depth);
    return;
  }
  column_sums<Accumulator>(g, grad_b, rows, cols);
  matmul_nt<Layout::RowMajor, Layout::DepthMajor>(g, w, nullptr, grad_x, rows, depth, cols);
  matmul_nt<Layout::DepthMajor, Layout::DepthMajor>(g, x, nullptr, grad_w, cols, depth, rows);
}
"""
)


def _linear_backward_cpp(params: Params) -> str:
    return _matmul_cpp({**params, **_PACKED}) + _LINEAR_BACKWARD_CPP.substitute(
        pragma=parallel_for(params),
        simd=simd(params),
        parallel=parallel_region(params),
        threads=params["threads"],
        one_pass=str(params["algorithm"] == "one_pass").lower(),
    )


def _narrow_backward(shape: Mapping[str, Any]) -> Params:
    """Fewer than 8 output columns: one pass over the rows (``one_pass``; measured at 2,048 rows
    of 256 inputs: 1.9-2.1x eager at one and two columns where the products measured 1.1-1.3x,
    1.7x against 1.05x at four, level at eight, 0.8x against 1.0x at sixteen)."""
    return {"algorithm": "one_pass"} if 0 < int(shape.get("out_features", 8)) < 8 else {}


_PACKED: Params = {"loop_order": "packed", "block_rows": 8, "block_cols": 64}
"""The backward's products read transposed operands in place, which only the packed order does
(the other orders' tile sizes are then unused)."""

# algorithm: the two products, or (up to 32 output columns) one pass over the rows.
LINEAR_BIAS_ACT_BACKWARD = CpuTemplate(
    symbol="linear_bias_act_backward",
    space=MappingProxyType(
        {
            **{key: choices for key, choices in _DENSE_SPACE.items() if key not in _PACKED},
            "algorithm": ("products", "one_pass"),
        }
    ),
    cpp=_linear_backward_cpp,
    argtypes="[ctypes.c_void_p] * 7 + [ctypes.c_int64] * 3 + [ctypes.c_int32]",
    run="""_ACTIVATIONS = {"none": 0, "relu": 1}


def run(grad_output, x, weight, output, *, activation):
    grad_output, x, weight, output = (t.contiguous() for t in (grad_output, x, weight, output))
    rows, depth = x.shape
    cols = weight.shape[0]
    grad_x = torch.empty(rows, depth, dtype=torch.float32)
    grad_w = torch.empty(cols, depth, dtype=torch.float32)
    grad_b = torch.empty(cols, dtype=torch.float32)
    _kernel(
        _pointer(grad_output), _pointer(x), _pointer(weight), _pointer(output), _pointer(grad_x),
        _pointer(grad_w), _pointer(grad_b), rows, cols, depth, _ACTIVATIONS[activation],
    )
    return grad_x, grad_w, grad_b
""",
    rules=_narrow_backward,
)

# dcn_cross_backward: z recomputed with the forward's product, each finished tile multiplied by the
# output gradient into grad_x0; dz = g * x0 formed once; then the weight's and input's products
# through the same packed product, transposed operands read in place (DepthMajor).
_DCN_BACKWARD_CPP = Template(
    _COLUMN_SUMS_CPP
    + r"""
// Full rank: w = W [dim, dim], v null, grad_v null. Low rank: w = U [dim, rank], v = V [rank, dim];
// grad_w is then U's gradient and grad_v V's.
extern "C" void dcn_cross_backward(const float* g, const float* x0, const float* x, const float* w,
                                   const float* v, const float* bias, float* grad_x0, float* grad_x,
                                   float* grad_w, float* grad_v, float* grad_b, int64_t rows, int64_t dim,
                                   int64_t rank) {
  // grad_x0 = g * z, on each finished tile of z.
  const auto times_g = [=](float* segment, int64_t row, int64_t c0, int64_t width) {
    const float* __restrict scale = g + row * dim + c0;
    $simd
    for (int64_t j = 0; j < width; ++j) segment[j] *= scale[j];
  };
  // grad_x's product plus g, the cross's residual path.
  const auto plus_g = [=](float* segment, int64_t row, int64_t c0, int64_t width) {
    const float* __restrict residual = g + row * dim + c0;
    $simd
    for (int64_t j = 0; j < width; ++j) segment[j] += residual[j];
  };
  constexpr Layout Rows = Layout::RowMajor, Depth = Layout::DepthMajor;
  Aligned scaled(rows * dim);
  float* __restrict dz = scaled.data;
  $pragma
  for (int64_t i = 0; i < rows * dim; ++i) dz[i] = g[i] * x0[i];
  column_sums<Accumulator>(dz, grad_b, rows, dim);
  if (rank == 0) {
    matmul_nt(x, w, bias, grad_x0, rows, dim, dim, times_g);
    matmul_nt<Rows, Depth>(dz, w, nullptr, grad_x, rows, dim, dim, plus_g);
    matmul_nt<Depth, Depth>(dz, x, nullptr, grad_w, dim, dim, rows);
    return;
  }
  Aligned projected(rows * rank), grad_projected(rows * rank);
  float* __restrict h = projected.data;
  float* __restrict dh = grad_projected.data;
  matmul_nt(x, v, nullptr, h, rows, rank, dim);
  matmul_nt(h, w, bias, grad_x0, rows, dim, rank, times_g);
  matmul_nt<Depth, Depth>(dz, h, nullptr, grad_w, dim, rank, rows);
  matmul_nt<Rows, Depth>(dz, w, nullptr, dh, rows, rank, dim);
  matmul_nt<Depth, Depth>(dh, x, nullptr, grad_v, rank, dim, rows);
  matmul_nt<Rows, Depth>(dh, v, nullptr, grad_x, rows, dim, rank, plus_g);
}"""
)


def _dcn_backward_cpp(params: Params) -> str:
    return _matmul_cpp({**params, **_PACKED}) + _DCN_BACKWARD_CPP.substitute(
        pragma=parallel_for(params), simd=simd(params)
    )


DCN_CROSS_BACKWARD = CpuTemplate(
    symbol="dcn_cross_backward",
    space=LINEAR_BIAS_ACT_BACKWARD.space,
    cpp=_dcn_backward_cpp,
    argtypes="[ctypes.c_void_p] * 11 + [ctypes.c_int64] * 3",
    run="""def run(*inputs):
    inputs = [tensor.contiguous() for tensor in inputs]
    if len(inputs) == 5:
        grad_output, x0, x, w, bias = inputs
        v, rank = None, 0
    else:
        grad_output, x0, x, w, v, bias = inputs
        rank = v.shape[0]
    rows, dim = x.shape
    grads = [torch.empty(rows, dim), torch.empty(rows, dim), torch.empty(w.shape)]
    if v is not None:
        grads.append(torch.empty(v.shape))
    grads.append(torch.empty(dim))
    _kernel(
        _pointer(grad_output), _pointer(x0), _pointer(x), _pointer(w), None if v is None else _pointer(v),
        _pointer(bias), _pointer(grads[0]), _pointer(grads[1]), _pointer(grads[2]),
        None if v is None else _pointer(grads[3]), _pointer(grads[-1]), rows, dim, rank,
    )
    return tuple(grads)
""",
)

# fm_interaction ---------------------------------------------------------------------------
# chunk: embedding columns whose field sums and sums of squares are kept at once.

_FM_CPP = Template(r"""#include <algorithm>
#include <cstdint>

using Accumulator = $accumulator;
constexpr int64_t kChunk = $chunk;

// Per example: 0.5 * sum_d ((sum_f v)^2 - sum_f v^2), a chunk of dims at a time.
extern "C" void fm_interaction(const float* v, float* out, int64_t batch, int64_t fields, int64_t dim) {
  $pragma
  for (int64_t b = 0; b < batch; ++b) {
    const float* __restrict example = v + b * fields * dim;
    Accumulator total = 0;
    for (int64_t c = 0; c < dim; c += kChunk) {
      const int64_t width = std::min(kChunk, dim - c);
      Accumulator sum[kChunk] = {};
      Accumulator squares[kChunk] = {};
      for (int64_t f = 0; f < fields; ++f) {
        const float* __restrict e = example + f * dim + c;
        $simd
        for (int64_t k = 0; k < width; ++k) {
          sum[k] += e[k];
          squares[k] += static_cast<Accumulator>(e[k]) * e[k];
        }
      }
      $simd_total
      for (int64_t k = 0; k < width; ++k) total += sum[k] * sum[k] - squares[k];
    }
    out[b] = static_cast<float>(0.5 * total);
  }
}
""")


def _fm_cpp(params: Params) -> str:
    return _FM_CPP.substitute(
        accumulator=params["accumulator"],
        chunk=params["chunk"],
        pragma=parallel_for(params),
        simd=simd(params),
        simd_total=simd(params, "total"),
    )


FM_INTERACTION = CpuTemplate(
    symbol="fm_interaction",
    space=MappingProxyType(
        {"accumulator": _ACCUMULATOR, "chunk": (32, 16, 64), "simd": _SIMD, "threads": _THREADS}
    ),
    cpp=_fm_cpp,
    argtypes="[ctypes.c_void_p] * 2 + [ctypes.c_int64] * 3",
    run="""def run(embeddings):
    embeddings = embeddings.contiguous()
    batch, fields, dim = embeddings.shape
    out = torch.empty(batch, 1, dtype=torch.float32)
    _kernel(_pointer(embeddings), _pointer(out), batch, fields, dim)
    return out
""",
)


# fm_interaction_backward: per example, the fields' sum of a chunk of columns, then each field's
# gradient from it while the example is in cache.
_FM_BACKWARD_CPP = Template(r"""#include <algorithm>
#include <cstdint>

using Accumulator = $accumulator;
constexpr int64_t kChunk = $chunk;

// grad_embeddings[b, f, :] = grad_output[b] * (sum_f' v[b, f', :] - v[b, f, :]).
extern "C" void fm_interaction_backward(const float* grad_output, const float* v, float* out, int64_t batch,
                                        int64_t fields, int64_t dim) {
  $pragma
  for (int64_t b = 0; b < batch; ++b) {
    const float* __restrict example = v + b * fields * dim;
    float* __restrict gradient = out + b * fields * dim;
    const float g = grad_output[b];
    for (int64_t c = 0; c < dim; c += kChunk) {
      const int64_t width = std::min(kChunk, dim - c);
      Accumulator sum[kChunk] = {};
      for (int64_t f = 0; f < fields; ++f) {
        const float* __restrict e = example + f * dim + c;
        $simd
        for (int64_t k = 0; k < width; ++k) sum[k] += e[k];
      }
      for (int64_t f = 0; f < fields; ++f) {
        const float* __restrict e = example + f * dim + c;
        float* __restrict o = gradient + f * dim + c;
        $simd
        for (int64_t k = 0; k < width; ++k) o[k] = g * (static_cast<float>(sum[k]) - e[k]);
      }
    }
  }
}
""")


def _fm_backward_cpp(params: Params) -> str:
    return _FM_BACKWARD_CPP.substitute(
        accumulator=params["accumulator"],
        chunk=params["chunk"],
        pragma=parallel_for(params),
        simd=simd(params),
    )


FM_INTERACTION_BACKWARD = CpuTemplate(
    symbol="fm_interaction_backward",
    space=MappingProxyType(
        {"accumulator": ("float", "double"), "chunk": (32, 16, 64), "simd": _SIMD, "threads": _THREADS}
    ),
    cpp=_fm_backward_cpp,
    argtypes="[ctypes.c_void_p] * 3 + [ctypes.c_int64] * 3",
    run="""def run(grad_output, embeddings):
    grad_output, embeddings = grad_output.contiguous(), embeddings.contiguous()
    batch, fields, dim = embeddings.shape
    out = torch.empty(batch, fields, dim, dtype=torch.float32)
    _kernel(_pointer(grad_output), _pointer(embeddings), _pointer(out), batch, fields, dim)
    return out
""",
)

# layer_norm -------------------------------------------------------------------------------

_LAYER_NORM_CPP = Template(r"""#include <algorithm>
#include <cmath>
#include <cstdint>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

using Accumulator = $accumulator;
constexpr bool kStream = $stream;

namespace {

// relu keeps a NaN, as PyTorch's does (max_ps returns its second operand when either is NaN).
template <bool Relu>
inline float activate(float v) {
  return Relu ? (v < 0.0f ? 0.0f : v) : v;
}

// One row's act((in - mean) * inv_std * weight + bias). Streaming stores (kStream) write the
// row's aligned middle without first reading its lines into cache: the output is written once
// here and read later by the next layer, so reading it now only takes bandwidth from the input.
template <bool Relu>
inline void normalize(const float* __restrict in, const float* __restrict weight,
                      const float* __restrict bias, float* __restrict o, int64_t dim, float m,
                      float inv_std) {
  int64_t k = 0;
#if defined(__AVX512F__)
  if (kStream) {
    for (; k < dim && (reinterpret_cast<uintptr_t>(o + k) & 63) != 0; ++k) {
      o[k] = activate<Relu>((in[k] - m) * inv_std * weight[k] + bias[k]);
    }
    const __m512 mean = _mm512_set1_ps(m), scale = _mm512_set1_ps(inv_std), zero = _mm512_setzero_ps();
    for (; k + 16 <= dim; k += 16) {
      const __m512 centred = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(in + k), mean), scale);
      const __m512 scaled = _mm512_mul_ps(centred, _mm512_loadu_ps(weight + k));
      const __m512 normal = _mm512_add_ps(scaled, _mm512_loadu_ps(bias + k));
      _mm512_stream_ps(o + k, Relu ? _mm512_max_ps(zero, normal) : normal);
    }
  }
#elif defined(__AVX__)
  if (kStream) {
    for (; k < dim && (reinterpret_cast<uintptr_t>(o + k) & 31) != 0; ++k) {
      o[k] = activate<Relu>((in[k] - m) * inv_std * weight[k] + bias[k]);
    }
    const __m256 mean = _mm256_set1_ps(m), scale = _mm256_set1_ps(inv_std), zero = _mm256_setzero_ps();
    for (; k + 8 <= dim; k += 8) {
      const __m256 centred = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(in + k), mean), scale);
      const __m256 scaled = _mm256_mul_ps(centred, _mm256_loadu_ps(weight + k));
      const __m256 normal = _mm256_add_ps(scaled, _mm256_loadu_ps(bias + k));
      _mm256_stream_ps(o + k, Relu ? _mm256_max_ps(zero, normal) : normal);
    }
  }
#endif
  const int64_t start = k;
  $simd
  for (int64_t j = start; j < dim; ++j) o[j] = activate<Relu>((in[j] - m) * inv_std * weight[j] + bias[j]);
}

}  // namespace

// relu: 0 none, 1 relu after the normalisation.
extern "C" void layer_norm(const float* x, const float* weight, const float* bias, float* out, int64_t rows,
                           int64_t dim, float eps, int32_t relu) {
  $parallel
  {
    #pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* __restrict in = x + r * dim;
      Accumulator sum = 0;
      $simd_sum
      for (int64_t k = 0; k < dim; ++k) sum += in[k];
      const Accumulator mean = sum / dim;
      Accumulator squares = 0;
      $simd_squares
$variance
      const float inv_std = static_cast<float>(1.0 / std::sqrt(static_cast<double>(variance) + eps));
      if (relu) {
        normalize<true>(in, weight, bias, out + r * dim, dim, static_cast<float>(mean), inv_std);
      } else {
        normalize<false>(in, weight, bias, out + r * dim, dim, static_cast<float>(mean), inv_std);
      }
    }
#if defined(__x86_64__) || defined(__i386__)
    if (kStream) _mm_sfence();  // this thread's streamed lines, before the region ends
#endif
  }
}
""")

# variance: two passes (subtract the mean, then square: accurate) or one (E[x^2] - mean^2: one
# read of the row, but cancels badly in float when the mean is large beside the spread).
_VARIANCES = {
    "two_pass": """      for (int64_t k = 0; k < dim; ++k) {
        const Accumulator d = in[k] - mean;
        squares += d * d;
      }
      const Accumulator variance = squares / dim;""",
    "one_pass": """      for (int64_t k = 0; k < dim; ++k) squares += static_cast<Accumulator>(in[k]) * in[k];
      const Accumulator variance = std::max<Accumulator>(squares / dim - mean * mean, 0);""",
}


def _layer_norm_cpp(params: Params) -> str:
    return _LAYER_NORM_CPP.substitute(
        accumulator=params["accumulator"],
        stream="true" if params["store"] == "streaming" else "false",
        parallel=parallel_region(params),
        simd_sum=simd(params, "sum"),
        simd_squares=simd(params, "squares"),
        variance=_VARIANCES[str(params["variance"])],
        simd=simd(params),
    )


LAYER_NORM = CpuTemplate(
    symbol="layer_norm",
    space=MappingProxyType(
        {
            "variance": ("two_pass", "one_pass"),
            "store": ("cached", "streaming"),
            "accumulator": _ACCUMULATOR,
            "simd": _SIMD,
            "threads": _THREADS,
        }
    ),
    cpp=_layer_norm_cpp,
    argtypes="[ctypes.c_void_p] * 4 + [ctypes.c_int64] * 2 + [ctypes.c_float, ctypes.c_int32]",
    run="""def run(x, weight, bias, *, eps, activation):
    x, weight, bias = x.contiguous(), weight.contiguous(), bias.contiguous()
    rows, dim = x.shape
    out = torch.empty(rows, dim, dtype=torch.float32)
    relu = activation == "relu"
    _kernel(_pointer(x), _pointer(weight), _pointer(bias), _pointer(out), rows, dim, eps, relu)
    return out
""",
)


# layer_norm_backward: rows in parallel, each thread summing its rows' shares of the weight's and
# bias's gradients in buffers of its own, added together at the end.
_LAYER_NORM_BACKWARD_CPP = Template(r"""#include <algorithm>
#include <cmath>
#include <cstdint>
#include <omp.h>
#include <vector>

using Accumulator = $accumulator;

// Per row, with the statistics recomputed and g = grad_output gated by relu's derivative (where
// relu is 1: output > 0): xhat = (x - mean) rstd, h = g weight, grad_x = rstd (h - mean(h) -
// xhat mean(h xhat)); grad_weight sums g xhat over the rows and grad_bias sums g.
extern "C" void layer_norm_backward(const float* grad_output, const float* x, const float* weight,
                                    const float* output, float* grad_x, float* grad_weight, float* grad_bias,
                                    int64_t rows, int64_t dim, float eps, int32_t relu) {
  const int64_t slots = $threads > 0 ? $threads : omp_get_max_threads();
  std::vector<Accumulator> partial(static_cast<size_t>(slots * 2 * dim), 0);
  std::vector<float> gated(static_cast<size_t>(relu ? slots * dim : 0));  // a row of g per thread
  $parallel
  {
    Accumulator* __restrict sums = partial.data() + omp_get_thread_num() * 2 * dim;
    #pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* __restrict in = x + r * dim;
      const float* __restrict g = grad_output + r * dim;
      if (relu) {
        float* __restrict row = gated.data() + omp_get_thread_num() * dim;
        const float* __restrict o = output + r * dim;
        $simd
        for (int64_t k = 0; k < dim; ++k) row[k] = o[k] > 0.0f ? g[k] : 0.0f;
        g = row;
      }
      Accumulator sum = 0;
      $simd_sum
      for (int64_t k = 0; k < dim; ++k) sum += in[k];
      const Accumulator mean = sum / dim;
      Accumulator squares = 0;
      $simd_squares
$variance
      const float rstd = static_cast<float>(1.0 / std::sqrt(static_cast<double>(variance) + eps));
      const float m = static_cast<float>(mean);
      Accumulator h_sum = 0, hx_sum = 0;
      $simd_h
      for (int64_t k = 0; k < dim; ++k) {
        const float h = g[k] * weight[k];
        h_sum += h;
        hx_sum += h * ((in[k] - m) * rstd);
      }
      const float h_mean = static_cast<float>(h_sum / dim), hx_mean = static_cast<float>(hx_sum / dim);
      float* __restrict out = grad_x + r * dim;
      Accumulator* __restrict w_sums = sums;
      Accumulator* __restrict b_sums = sums + dim;
      $simd
      for (int64_t k = 0; k < dim; ++k) {
        const float xhat = (in[k] - m) * rstd;
        out[k] = rstd * (g[k] * weight[k] - h_mean - xhat * hx_mean);
        w_sums[k] += g[k] * xhat;
        b_sums[k] += g[k];
      }
    }
  }
  $pragma
  for (int64_t k = 0; k < dim; ++k) {
    Accumulator w = 0, b = 0;
    for (int64_t t = 0; t < slots; ++t) {
      w += partial[t * 2 * dim + k];
      b += partial[t * 2 * dim + dim + k];
    }
    grad_weight[k] = static_cast<float>(w);
    grad_bias[k] = static_cast<float>(b);
  }
}
""")


def _layer_norm_backward_cpp(params: Params) -> str:
    return _LAYER_NORM_BACKWARD_CPP.substitute(
        accumulator=params["accumulator"],
        threads=params["threads"],
        parallel=parallel_region(params),
        simd_sum=simd(params, "sum"),
        simd_squares=simd(params, "squares"),
        simd_h=simd(params, "h_sum, hx_sum"),
        variance=_VARIANCES[str(params["variance"])],
        simd=simd(params),
        pragma=parallel_for(params),
    )


LAYER_NORM_BACKWARD = CpuTemplate(
    symbol="layer_norm_backward",
    space=MappingProxyType(
        {
            "variance": ("two_pass", "one_pass"),
            "accumulator": ("float", "double"),
            "simd": _SIMD,
            "threads": _THREADS,
        }
    ),
    cpp=_layer_norm_backward_cpp,
    argtypes="[ctypes.c_void_p] * 7 + [ctypes.c_int64] * 2 + [ctypes.c_float, ctypes.c_int32]",
    run="""def run(grad_output, x, weight, output, *, eps, activation):
    grad_output, x, weight, output = (t.contiguous() for t in (grad_output, x, weight, output))
    rows, dim = x.shape
    grad_x = torch.empty(rows, dim, dtype=torch.float32)
    grad_weight = torch.empty(dim, dtype=torch.float32)
    grad_bias = torch.empty(dim, dtype=torch.float32)
    _kernel(
        _pointer(grad_output), _pointer(x), _pointer(weight), _pointer(output), _pointer(grad_x),
        _pointer(grad_weight), _pointer(grad_bias), rows, dim, eps, activation == "relu",
    )
    return grad_x, grad_weight, grad_bias
""",
)

# bce_with_logits --------------------------------------------------------------------------

_BCE_MATH = r"""#include <algorithm>
#include <cmath>
#include <cstdint>
$vector_width

namespace {

inline float exp_negative_std(float a) { return std::exp(-a); }

// exp(-a) for a >= 0 in arithmetic a compiler vectorises (no library calls and no branches,
// which keep GCC's vectoriser away): 2^n * 2^f with n = floor(-a / ln 2), 2^f by its Taylor
// series to degree 8 (f in [0, 1): relative error below 1e-7), 2^n by writing the exponent's
// bits; a is capped at 87, where exp(-a) is already below 2e-38.
inline float exp_negative_polynomial(float a) {
  const float over = a - 87.0f;
  const float t = (a - 0.5f * (over + std::fabs(over))) * -1.44269504088896341f;
  const float truncated = static_cast<float>(static_cast<int32_t>(t));
  const float n = truncated - static_cast<float>(truncated > t);
  const float f = (t - n) * 0.69314718055994531f;
  float p = 2.48015873015873e-05f;
  p = p * f + 1.98412698412698e-04f;
  p = p * f + 1.38888888888889e-03f;
  p = p * f + 8.33333333333333e-03f;
  p = p * f + 4.16666666666667e-02f;
  p = p * f + 1.66666666666667e-01f;
  p = p * f + 0.5f;
  p = p * f + 1.0f;
  p = p * f + 1.0f;
  return p * __builtin_bit_cast(float, (static_cast<int32_t>(n) + 127) << 23);
}

inline float softplus_std(float a) { return std::log1p(exp_negative_std(a)); }

// log1p(exp(-a)) for a >= 0: log1p(e) is 2 atanh(e / (2 + e)), whose odd series converges
// fast, since e / (2 + e) <= 1/3.
inline float softplus_polynomial(float a) {
  const float e = exp_negative_polynomial(a);
  const float s = e / (2.0f + e);
  const float s2 = s * s;
  float q = 1.0f / 13.0f;
  q = q * s2 + 1.0f / 11.0f;
  q = q * s2 + 1.0f / 9.0f;
  q = q * s2 + 1.0f / 7.0f;
  q = q * s2 + 1.0f / 5.0f;
  q = q * s2 + 1.0f / 3.0f;
  q = q * s2 + 1.0f;
  return 2.0f * s * q;
}

}  // namespace
"""

_BCE_CPP = Template(
    _BCE_MATH
    + r"""
using Accumulator = $accumulator;

// mean(max(x, 0) - x * y + log1p(exp(-|x|))); the mean of nothing is NaN, as in torch. Each
// chunk of kChunk elements is summed in float (vector lanes, few terms each), the chunks' sums
// in Accumulator.
constexpr int64_t kChunk = $chunk;

extern "C" void bce_with_logits(const float* logits, const float* targets, float* out, int64_t n) {
  Accumulator total = 0;
  $pragma
  for (int64_t start = 0; start < n; start += kChunk) {
    const int64_t end = std::min(n, start + kChunk);
    float partial = 0.0f;
    $simd
    for (int64_t i = start; i < end; ++i) {
      const float x = logits[i];
      const float magnitude = std::fabs(x);
      partial += 0.5f * (x + magnitude) - x * targets[i] + $softplus(magnitude);
    }
    total += partial;
  }
  out[0] = static_cast<float>(total / static_cast<Accumulator>(n));
}
"""
)


# vector_width: the compiler's preferred vector width for -march=native, or 512-bit vectors
# (GCC prefers 256 on many AVX-512 CPUs; ignored where the CPU has no 512-bit vectors).
_VECTOR_WIDTH = {"compiler": "", "512": '#pragma GCC target("prefer-vector-width=512")'}


def _bce_cpp(params: Params) -> str:
    return _BCE_CPP.substitute(
        accumulator=params["accumulator"],
        pragma=parallel_for(params, clauses=" reduction(+ : total)"),
        simd=simd(params, "partial"),
        softplus=f"softplus_{params['softplus']}",
        chunk=params["chunk"],
        vector_width=_VECTOR_WIDTH[str(params["vector_width"])],
    )


BCE_WITH_LOGITS = CpuTemplate(
    symbol="bce_with_logits",
    # softplus: log1p(exp(-|x|)) by polynomials that vectorise (the default: the C library's
    # kept the loop scalar, 1.8-3x eager's time on a 2-core EPYC), or by the C library; chunk:
    # the elements summed in float before their sum joins the total.
    space=MappingProxyType(
        {
            "accumulator": _ACCUMULATOR,
            "simd": _SIMD,
            "threads": _THREADS,
            "softplus": ("polynomial", "std"),
            "chunk": (1024, 256, 4096),
            "vector_width": ("compiler", "512"),
        }
    ),
    cpp=_bce_cpp,
    argtypes="[ctypes.c_void_p] * 3 + [ctypes.c_int64]",
    run="""def run(logits, targets):
    logits, targets = logits.contiguous(), targets.contiguous()
    out = torch.empty((), dtype=torch.float32)
    _kernel(_pointer(logits), _pointer(targets), _pointer(out), logits.numel())
    return out
""",
)


# bce_with_logits_backward -----------------------------------------------------------------

_BCE_BACKWARD_CPP = Template(
    _BCE_MATH
    + r"""
// grad_logits[i] = grad_output * (sigmoid(x) - y) / n, with sigmoid(x) = 1 / (1 + exp(-x)) for
// x >= 0 and exp(x) / (1 + exp(x)) below: exp(-|x|) never overflows. Threads share blocks of
// kBlock elements; each block's loop is vectorised.
constexpr int64_t kBlock = $block;

extern "C" void bce_with_logits_backward(const float* grad_output, const float* logits, const float* targets,
                                         float* out, int64_t n) {
  const float scale = grad_output[0] / static_cast<float>(std::max<int64_t>(n, 1));
  $pragma
  for (int64_t start = 0; start < n; start += kBlock) {
    const int64_t end = std::min(n, start + kBlock);
    $simd
    for (int64_t i = start; i < end; ++i) {
      const float x = logits[i];
      const float e = exp_negative_$exp(std::fabs(x));
      const float probability = (x >= 0.0f ? 1.0f : e) / (1.0f + e);
      out[i] = (probability - targets[i]) * scale;
    }
  }
}
"""
)


def _bce_backward_cpp(params: Params) -> str:
    return _BCE_BACKWARD_CPP.substitute(
        pragma=parallel_for(params),
        simd=simd(params),
        exp=params["exp"],
        block=params["block"],
        vector_width=_VECTOR_WIDTH[str(params["vector_width"])],
    )


BCE_WITH_LOGITS_BACKWARD = CpuTemplate(
    symbol="bce_with_logits_backward",
    # exp: exp(-|x|) by the forward's vectorising polynomial, or by the C library; block: the
    # elements one thread takes at a time.
    space=MappingProxyType(
        {
            "simd": _SIMD,
            "threads": _THREADS,
            "exp": ("polynomial", "std"),
            "block": (4096, 1024, 16384),
            "vector_width": ("compiler", "512"),
        }
    ),
    cpp=_bce_backward_cpp,
    argtypes="[ctypes.c_void_p] * 4 + [ctypes.c_int64]",
    run="""def run(grad_output, logits, targets):
    grad_output, logits, targets = grad_output.contiguous(), logits.contiguous(), targets.contiguous()
    out = torch.empty_like(logits)
    _kernel(_pointer(grad_output), _pointer(logits), _pointer(targets), _pointer(out), logits.numel())
    return out
""",
)


TEMPLATES: Mapping[str, CpuTemplate] = MappingProxyType(
    {
        "embedding_bag_pooled": EMBEDDING_BAG,
        "embedding_bag_pooled_backward": EMBEDDING_BAG_BACKWARD,
        "embedding_bag_pooled_sparse_backward": EMBEDDING_BAG_SPARSE_BACKWARD,
        "dcn_cross": DCN_CROSS,
        "dcn_cross_backward": DCN_CROSS_BACKWARD,
        "dcn_cross_stack": DCN_CROSS_STACK,
        "linear_bias_act": LINEAR_BIAS_ACT,
        "linear_bias_act_backward": LINEAR_BIAS_ACT_BACKWARD,
        "fm_interaction": FM_INTERACTION,
        "fm_interaction_backward": FM_INTERACTION_BACKWARD,
        "layer_norm": LAYER_NORM,
        "layer_norm_backward": LAYER_NORM_BACKWARD,
        "bce_with_logits": BCE_WITH_LOGITS,
        "bce_with_logits_backward": BCE_WITH_LOGITS_BACKWARD,
    }
)
