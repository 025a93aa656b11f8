"""Parameterised Triton kernels for the ``triton`` target, one per operator, with their search spaces.

A point of a space renders to one ``kernel.py``: a prelude (which switches Triton to its
interpreter when there is no GPU, before importing it), the parameters the chosen variant uses as
module constants, the ``@triton.jit`` kernel(s) of that variant and a ``run`` that allocates the
output on the inputs' device and launches them. A parameter the chosen variant does not use is
left out of the source, so two points that differ only there render to the same candidate (one
digest, one evaluation).

Every kernel masks its edges, so every block size is correct on every shape: a space's first
choices are a sensible start, the rest follow in increasing order (the order mutation steps in).
``run`` launches nothing on an empty problem, where a grid would have no programs. Matrix
products use ``tl.dot`` with ``input_precision`` "ieee" or "tf32x3", never plain "tf32": its
error on float32 exceeds the operators' tolerances, and the interpreter (numpy's float32
``matmul``) would not show it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from string import Template
from types import MappingProxyType
from typing import Any

from rea.kernels import ParamValue

Params = Mapping[str, ParamValue]
Space = Mapping[str, tuple[ParamValue, ...]]

_WARPS: tuple[ParamValue, ...] = (4, 1, 2, 8)
_STAGES: tuple[ParamValue, ...] = (2, 1, 3, 4)
_LAUNCH = ("num_warps", "num_stages")

_PRELUDE = '''"""$doc

Rendered by REA's triton target. Without a GPU, Triton's interpreter runs it on CPU tensors
(numpy, one program at a time): right for checking correctness, meaningless for speed.
"""

import os

import torch

if not torch.cuda.is_available():
    # Before triton is imported: each @triton.jit, triton.language's own among them, reads it.
    os.environ["TRITON_INTERPRET"] = "1"

import triton
import triton.language as tl

'''


@dataclass(frozen=True)
class Variant:
    """One algorithm of an operator: the parameters it reads and its kernels plus ``run``."""

    uses: tuple[str, ...]
    code: Callable[[Params], str]


@dataclass(frozen=True)
class TritonTemplate:
    """One operator's kernels: its parameters' choices, the parameter (if any) that picks the
    algorithm, and each algorithm's code."""

    doc: str
    space: Space
    variants: Mapping[str, Variant]
    choice: str | None = None

    def suggest(self, shape: Mapping[str, Any]) -> Params:
        """No rules yet: every shape starts from the defaults (measured on a GPU, rules would be)."""
        return {}

    def render(self, params: Params) -> dict[str, str]:
        variant = self.variants[str(params[self.choice])] if self.choice else self.variants[""]
        constants = "".join(f"{name.upper()} = {params[name]!r}\n" for name in variant.uses)
        source = Template(_PRELUDE).substitute(doc=self.doc) + constants + "\n\n" + variant.code(params)
        return {"kernel.py": source}


def _fixed(code: str) -> Callable[[Params], str]:
    return lambda _: code


# embedding_bag_pooled -------------------------------------------------------------------

_EMBEDDING_RUN = """

def run(weights, table_offsets, indices, offsets, *, mode):
    weights, table_offsets, indices, offsets = (
        tensor.contiguous() for tensor in (weights, table_offsets, indices, offsets)
    )
    tables = table_offsets.numel() - 1
    batch = (offsets.numel() - 1) // tables
    dim = weights.shape[1]
    out = torch.empty(batch, tables * dim, dtype=weights.dtype, device=weights.device)
    if out.numel() == 0:
        return out
    _pool[$grid](
        weights, table_offsets, indices, offsets, out, batch, tables, dim,
        MEAN=mode == "mean", $blocks, num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )
    return out
"""

_EMBEDDING_BAG = '''@triton.jit
def _pool(weights, table_offsets, indices, offsets, out, batch, tables, dim,
          MEAN: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr):
    """One bag (table t, example b) per program on axis 0, BLOCK_D of its columns on axis 1;
    BLOCK_L of the bag's rows gathered per step. An empty bag pools to zeros."""
    bag = tl.program_id(0).to(tl.int64)
    table = bag // batch
    example = bag - table * batch
    columns = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    in_row = columns < dim
    begin = tl.load(offsets + bag)
    end = tl.load(offsets + bag + 1)
    first_row = tl.load(table_offsets + table)
    acc = tl.zeros((BLOCK_L, BLOCK_D), dtype=tl.float32)
    for start in range(begin, end, BLOCK_L):
        position = start + tl.arange(0, BLOCK_L)
        valid = position < end
        rows = first_row + tl.load(indices + position, mask=valid, other=0)
        acc += tl.load(
            weights + rows[:, None] * dim + columns[None, :],
            mask=valid[:, None] & in_row[None, :],
            other=0.0,
        )
    pooled = tl.sum(acc, axis=0)
    if MEAN:
        pooled = pooled / tl.maximum(end - begin, 1).to(tl.float32)
    tl.store(out + example * tables * dim + table * dim + columns, pooled, mask=in_row)
''' + Template(_EMBEDDING_RUN).substitute(
    grid="(tables * batch, triton.cdiv(dim, BLOCK_D))", blocks="BLOCK_L=BLOCK_L, BLOCK_D=BLOCK_D"
)

_EMBEDDING_BAG_TABLES = '''@triton.jit
def _pool(weights, table_offsets, indices, offsets, out, batch, tables, dim,
          MEAN: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    """One example and BLOCK_T tables per program (axes 0 and 1), BLOCK_D columns on axis 2: the
    tables' bags advance together, a row of each per step, and the program writes one stretch
    of the example's output row. An empty bag pools to zeros."""
    example = tl.program_id(0).to(tl.int64)
    table = tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)
    columns = tl.program_id(2) * BLOCK_D + tl.arange(0, BLOCK_D)
    has_table = table < tables
    in_row = columns < dim
    bag = table.to(tl.int64) * batch + example
    begin = tl.load(offsets + bag, mask=has_table, other=0)
    length = tl.load(offsets + bag + 1, mask=has_table, other=0) - begin
    first_row = tl.load(table_offsets + table, mask=has_table, other=0)
    acc = tl.zeros((BLOCK_T, BLOCK_D), dtype=tl.float32)
    for step in range(0, tl.max(length, axis=0)):
        valid = step < length
        rows = first_row + tl.load(indices + begin + step, mask=valid, other=0)
        acc += tl.load(
            weights + rows[:, None] * dim + columns[None, :],
            mask=valid[:, None] & in_row[None, :],
            other=0.0,
        )
    if MEAN:
        acc = acc / tl.maximum(length, 1).to(tl.float32)[:, None]
    tl.store(
        out + example * tables * dim + table[:, None] * dim + columns[None, :],
        acc,
        mask=has_table[:, None] & in_row[None, :],
    )
''' + Template(_EMBEDDING_RUN).substitute(
    grid="(batch, triton.cdiv(tables, BLOCK_T), triton.cdiv(dim, BLOCK_D))",
    blocks="BLOCK_T=BLOCK_T, BLOCK_D=BLOCK_D",
)

EMBEDDING_BAG = TritonTemplate(
    doc="Pooled embedding-bag lookup over many tables at once, in Triton.",
    space=MappingProxyType(
        {
            "grid": ("bag", "bag_tables"),
            "BLOCK_D": (32, 16, 64, 128),
            "BLOCK_L": (8, 1, 4, 16, 32),
            "BLOCK_T": (4, 1, 2, 8, 16),
            "num_warps": _WARPS,
            "num_stages": _STAGES,
        }
    ),
    variants=MappingProxyType(
        {
            "bag": Variant(("BLOCK_D", "BLOCK_L", *_LAUNCH), _fixed(_EMBEDDING_BAG)),
            "bag_tables": Variant(("BLOCK_D", "BLOCK_T", *_LAUNCH), _fixed(_EMBEDDING_BAG_TABLES)),
        }
    ),
    choice="grid",
)


# embedding_bag_pooled_backward ----------------------------------------------------------

_EMBEDDING_BACKWARD_RUN = """

def run(grad_output, table_offsets, indices, offsets, *, mode):
    grad_output, table_offsets, indices, offsets = (
        tensor.contiguous() for tensor in (grad_output, table_offsets, indices, offsets)
    )
    tables = table_offsets.numel() - 1
    batch = grad_output.shape[0]
    dim = grad_output.shape[1] // tables
    grad = torch.zeros(int(table_offsets[-1]), dim, dtype=grad_output.dtype, device=grad_output.device)
    if batch == 0 or dim == 0:
        return grad
    _scatter[$grid](
        grad_output, table_offsets, indices, offsets, grad, batch, tables, dim,
        MEAN=mode == "mean", BLOCK_D=BLOCK_D, num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )
    return grad
"""

_EMBEDDING_BACKWARD_OWNER = '''@triton.jit
def _scatter(grad_output, table_offsets, indices, offsets, grad, batch, tables, dim,
             MEAN: tl.constexpr, BLOCK_D: tl.constexpr):
    """One table and BLOCK_D of its columns per program: it alone writes those columns of the
    table's rows, adding its bags' gradients one after another, so the sums are the same on
    every run (no atomics)."""
    table = tl.program_id(0).to(tl.int64)
    columns = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    in_row = columns < dim
    first_row = tl.load(table_offsets + table)
    for example in range(0, batch):
        bag = table * batch + example
        begin = tl.load(offsets + bag)
        end = tl.load(offsets + bag + 1)
        g = tl.load(grad_output + example * tables * dim + table * dim + columns, mask=in_row, other=0.0)
        if MEAN:
            g = g / tl.maximum(end - begin, 1).to(tl.float32)
        for position in range(begin, end):
            row = first_row + tl.load(indices + position)
            target = grad + row * dim + columns
            tl.store(target, tl.load(target, mask=in_row, other=0.0) + g, mask=in_row)
''' + Template(_EMBEDDING_BACKWARD_RUN).substitute(grid="(tables, triton.cdiv(dim, BLOCK_D))")

_EMBEDDING_BACKWARD_ATOMIC = '''@triton.jit
def _scatter(grad_output, table_offsets, indices, offsets, grad, batch, tables, dim,
             MEAN: tl.constexpr, BLOCK_D: tl.constexpr):
    """One bag per program, BLOCK_D columns on axis 1, adding into the rows with atomics: far
    more programs in flight, but the order of the additions (so the last bits) varies by run."""
    bag = tl.program_id(0).to(tl.int64)
    table = bag // batch
    example = bag - table * batch
    columns = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    in_row = columns < dim
    first_row = tl.load(table_offsets + table)
    begin = tl.load(offsets + bag)
    end = tl.load(offsets + bag + 1)
    g = tl.load(grad_output + example * tables * dim + table * dim + columns, mask=in_row, other=0.0)
    if MEAN:
        g = g / tl.maximum(end - begin, 1).to(tl.float32)
    for position in range(begin, end):
        row = first_row + tl.load(indices + position)
        tl.atomic_add(grad + row * dim + columns, g, mask=in_row)
''' + Template(_EMBEDDING_BACKWARD_RUN).substitute(grid="(tables * batch, triton.cdiv(dim, BLOCK_D))")

EMBEDDING_BAG_BACKWARD = TritonTemplate(
    doc="The pooled embedding lookup's weight gradient, in Triton.",
    space=MappingProxyType(
        {
            "scatter": ("owner", "atomic"),
            "BLOCK_D": (32, 16, 64, 128),
            "num_warps": _WARPS,
            "num_stages": _STAGES,
        }
    ),
    variants=MappingProxyType(
        {
            "owner": Variant(("BLOCK_D", *_LAUNCH), _fixed(_EMBEDDING_BACKWARD_OWNER)),
            "atomic": Variant(("BLOCK_D", *_LAUNCH), _fixed(_EMBEDDING_BACKWARD_ATOMIC)),
        }
    ),
    choice="scatter",
)


# embedding_bag_pooled_sparse_backward ---------------------------------------------------

_EMBEDDING_SPARSE_BACKWARD_RUN = """

def run(grad_output, table_offsets, indices, offsets, *, mode):
    grad_output, table_offsets, indices, offsets = (
        tensor.contiguous() for tensor in (grad_output, table_offsets, indices, offsets)
    )
    tables = table_offsets.numel() - 1
    batch = grad_output.shape[0]
    dim = grad_output.shape[1] // tables if tables else 0
    if batch == 0 or indices.numel() == 0:
        return indices.new_empty(0), grad_output.new_empty(0, dim)
    # The ids grouped by row (a stable sort keeps each row's ids in their order), so that one
    # program owns each row's segment and stores its sum once.
    bag_of_id = torch.arange(tables * batch, device=offsets.device).repeat_interleave(offsets.diff())
    sorted_rows, order = torch.sort(indices + table_offsets[bag_of_id // batch], stable=True)
    rows, counts = torch.unique_consecutive(sorted_rows, return_counts=True)
    bounds = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    unique = rows.numel()
    values = torch.empty(unique, dim, dtype=grad_output.dtype, device=grad_output.device)
    if values.numel() == 0:
        return rows, values
    _coalesce[$grid](
        grad_output, offsets, bag_of_id[order], bounds, values, unique, batch, tables, dim,
        MEAN=mode == "mean", $blocks, num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )
    return rows, values
"""

_BAG_GRADIENTS = '''@triton.jit
def _bag_gradients(grad_output, offsets, at, valid, columns, in_row, batch, tables, dim, MEAN: tl.constexpr):
    """The output gradients of the bags at ``at`` (one id's bag per lane; zeros where not
    ``valid``), BLOCK_D columns each, divided by each bag's length where MEAN."""
    bag = tl.load(at, mask=valid, other=0)
    table = bag // batch
    example = bag - table * batch
    g = tl.load(
        grad_output + (example * tables * dim + table * dim)[:, None] + columns[None, :],
        mask=valid[:, None] & in_row[None, :],
        other=0.0,
    )
    if MEAN:
        first = tl.load(offsets + bag, mask=valid, other=0)
        length = tl.load(offsets + bag + 1, mask=valid, other=1) - first
        g = g / length.to(tl.float32)[:, None]
    return g


'''

_EMBEDDING_SPARSE_BACKWARD_ROW = (
    _BAG_GRADIENTS
    + '''@triton.jit
def _coalesce(grad_output, offsets, bags, bounds, values, unique, batch, tables, dim,
              MEAN: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr):
    """One distinct row per program on axis 0, BLOCK_D of its columns on axis 1: BLOCK_L of the
    row's ids gathered per step, so a row many bags hold is read in wide steps, and its sum
    stored once (no atomics: the same bits on every run)."""
    row = tl.program_id(0).to(tl.int64)
    columns = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    in_row = columns < dim
    begin = tl.load(bounds + row)
    end = tl.load(bounds + row + 1)
    acc = tl.zeros((BLOCK_L, BLOCK_D), dtype=tl.float32)
    for start in range(begin, end, BLOCK_L):
        position = start + tl.arange(0, BLOCK_L)
        valid = position < end
        acc += _bag_gradients(
            grad_output, offsets, bags + position, valid, columns, in_row, batch, tables, dim, MEAN
        )
    tl.store(values + row * dim + columns, tl.sum(acc, axis=0), mask=in_row)
'''
    + Template(_EMBEDDING_SPARSE_BACKWARD_RUN).substitute(
        grid="(unique, triton.cdiv(dim, BLOCK_D))", blocks="BLOCK_L=BLOCK_L, BLOCK_D=BLOCK_D"
    )
)

_EMBEDDING_SPARSE_BACKWARD_ROW_BLOCK = (
    _BAG_GRADIENTS
    + '''@triton.jit
def _coalesce(grad_output, offsets, bags, bounds, values, unique, batch, tables, dim,
              MEAN: tl.constexpr, BLOCK_U: tl.constexpr, BLOCK_D: tl.constexpr):
    """BLOCK_U distinct rows per program on axis 0, BLOCK_D columns on axis 1: the rows'
    segments advance together, an id of each per step, so a program has a tile's work where
    most rows were looked up once (large tables); each row's sum is stored once (no atomics)."""
    row = tl.program_id(0).to(tl.int64) * BLOCK_U + tl.arange(0, BLOCK_U)
    columns = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    has_row = row < unique
    in_row = columns < dim
    begin = tl.load(bounds + row, mask=has_row, other=0)
    count = tl.load(bounds + row + 1, mask=has_row, other=0) - begin
    acc = tl.zeros((BLOCK_U, BLOCK_D), dtype=tl.float32)
    for step in range(0, tl.max(count, axis=0)):
        valid = step < count
        acc += _bag_gradients(
            grad_output, offsets, bags + begin + step, valid, columns, in_row, batch, tables, dim, MEAN
        )
    tl.store(values + row[:, None] * dim + columns[None, :], acc, mask=has_row[:, None] & in_row[None, :])
'''
    + Template(_EMBEDDING_SPARSE_BACKWARD_RUN).substitute(
        grid="(triton.cdiv(unique, BLOCK_U), triton.cdiv(dim, BLOCK_D))",
        blocks="BLOCK_U=BLOCK_U, BLOCK_D=BLOCK_D",
    )
)

EMBEDDING_BAG_SPARSE_BACKWARD = TritonTemplate(
    doc="The pooled embedding lookup's weight gradient as a coalesced sparse gradient, in Triton.",
    space=MappingProxyType(
        {
            "grid": ("row_block", "row"),
            "BLOCK_D": (32, 16, 64, 128),
            "BLOCK_L": (8, 1, 4, 16, 32),
            "BLOCK_U": (16, 4, 8, 32, 64),
            "num_warps": _WARPS,
            "num_stages": _STAGES,
        }
    ),
    variants=MappingProxyType(
        {
            "row": Variant(("BLOCK_D", "BLOCK_L", *_LAUNCH), _fixed(_EMBEDDING_SPARSE_BACKWARD_ROW)),
            "row_block": Variant(
                ("BLOCK_D", "BLOCK_U", *_LAUNCH), _fixed(_EMBEDDING_SPARSE_BACKWARD_ROW_BLOCK)
            ),
        }
    ),
    choice="grid",
)


# dense: the tiled matrix product shared by linear_bias_act and dcn_cross ------------------

_TILE = '''@triton.jit
def _tile(M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """This program's rows and columns of the output. Programs walk the tiles in groups of
    GROUP_M row blocks, so the ones running together share their tiles of the right operand."""
    pid = tl.program_id(0)
    blocks_m = tl.cdiv(M, BLOCK_M)
    group = GROUP_M * tl.cdiv(N, BLOCK_N)
    first_m = (pid // group) * GROUP_M
    size_m = tl.minimum(blocks_m - first_m, GROUP_M)
    pid_m = first_m + (pid % group) % size_m
    pid_n = (pid % group) // size_m
    return pid_m * BLOCK_M + tl.arange(0, BLOCK_M), pid_n * BLOCK_N + tl.arange(0, BLOCK_N)

'''

_DENSE = (
    _TILE
    + '''
@triton.jit
def _product(a, b, rows, cols, M, N, K, acc, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """acc + a[rows, :K] @ b[cols, :K].T (both row-major), BLOCK_K at a time."""
    for k in range(0, K, BLOCK_K):
        depth = k + tl.arange(0, BLOCK_K)
        left = tl.load(
            a + rows[:, None] * K + depth[None, :], mask=(rows[:, None] < M) & (depth[None, :] < K), other=0.0
        )
        right = tl.load(
            b + cols[None, :] * K + depth[:, None], mask=(cols[None, :] < N) & (depth[:, None] < K), other=0.0
        )
        acc = tl.dot(left, right, acc, input_precision=PRECISION)
    return acc


@triton.jit
def _epilogue(acc, rows, cols, M, N, bias, x0, residual, out, HAS_BIAS: tl.constexpr, EPILOGUE: tl.constexpr):
    """Adds the bias, applies EPILOGUE ("none", "relu", "gelu", DCN's "cross": x0 * acc +
    residual, or "scaled": x0 * acc) in registers, and stores the tile."""
    inside = (rows[:, None] < M) & (cols[None, :] < N)
    here = rows[:, None] * N + cols[None, :]
    if HAS_BIAS:
        acc += tl.load(bias + cols, mask=cols < N, other=0.0)[None, :]
    if EPILOGUE == "relu":
        acc = tl.maximum(acc, 0.0)
    elif EPILOGUE == "gelu":
        acc = 0.5 * acc * (1.0 + tl.erf(acc * 0.7071067811865476))
    elif EPILOGUE == "cross":
        x0_tile = tl.load(x0 + here, mask=inside, other=0.0)
        acc = x0_tile * acc + tl.load(residual + here, mask=inside, other=0.0)
    elif EPILOGUE == "scaled":
        acc = tl.load(x0 + here, mask=inside, other=0.0) * acc
    tl.store(out + here, acc, mask=inside)


@triton.jit
def _dense(x, w, bias, x0, residual, out, M, N, K,
           HAS_BIAS: tl.constexpr, EPILOGUE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
           BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr, PRECISION: tl.constexpr):
    """out[M, N] = epilogue(x[M, K] @ w[N, K].T + bias): one BLOCK_M x BLOCK_N tile per program."""
    rows, cols = _tile(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc = _product(x, w, rows, cols, M, N, K, acc, BLOCK_K, PRECISION)
    _epilogue(acc, rows, cols, M, N, bias, x0, residual, out, HAS_BIAS, EPILOGUE)


def dense(x, w, bias, epilogue, x0=None, residual=None):
    """epilogue(x @ w.T + bias) for contiguous x [M, K], w [N, K]; bias may be None."""
    (M, K), N = x.shape, w.shape[0]
    out = torch.empty(M, N, dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    grid = (triton.cdiv(M, BLOCK_M) * triton.cdiv(N, BLOCK_N),)
    _dense[grid](
        x, w, out if bias is None else bias, out if x0 is None else x0, out if residual is None else residual,
        out, M, N, K, HAS_BIAS=bias is not None, EPILOGUE=epilogue, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N,
        BLOCK_K=BLOCK_K, GROUP_M=GROUP_M, PRECISION=PRECISION, num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )
    return out
'''
)

_DENSE_SPACE: dict[str, tuple[ParamValue, ...]] = {
    "BLOCK_M": (32, 16, 64, 128),
    "BLOCK_N": (32, 16, 64, 128),
    "BLOCK_K": (32, 16, 64),
    "GROUP_M": (8, 1, 4),
    "precision": ("ieee", "tf32x3"),
    "num_warps": _WARPS,
    "num_stages": (3, 1, 2, 4),
}
_DENSE_USES = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M", "precision", *_LAUNCH)

_LINEAR_RUN = """

def run(x, weight, bias, *, activation):
    return dense(x.contiguous(), weight.contiguous(), bias.contiguous(), activation)
"""

LINEAR_BIAS_ACT = TritonTemplate(
    doc="A dense layer act(x @ W.T + b) in Triton: tiled product, bias and activation in one kernel.",
    space=MappingProxyType(_DENSE_SPACE),
    variants=MappingProxyType(
        {
            "": Variant(_DENSE_USES, _fixed(_DENSE + _LINEAR_RUN)),
        }
    ),
)


# linear_bias_act_backward: two strided products (the transposed operands read in place) and the
# bias's gradient as column sums, relu's gate applied wherever the output gradient is read.

_COLUMN_SUMS = """
@triton.jit
def _column_sums(matrix, factor, sums, rows, cols, FACTOR: tl.constexpr, BLOCK_R: tl.constexpr,
                 BLOCK_C: tl.constexpr):
    \"\"\"sums[c] = the sum of matrix[:, c], each element first gated or scaled by factor's (FACTOR:
    "gate", where factor > 0; "scale", times factor; "none"), BLOCK_C columns per program.\"\"\"
    columns = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    acc = tl.zeros((BLOCK_R, BLOCK_C), dtype=tl.float32)
    for r in range(0, rows, BLOCK_R):
        row = r + tl.arange(0, BLOCK_R)
        mask = (row[:, None] < rows) & (columns[None, :] < cols)
        here = row[:, None].to(tl.int64) * cols + columns[None, :]
        value = tl.load(matrix + here, mask=mask, other=0.0)
        if FACTOR == "gate":
            value = tl.where(tl.load(factor + here, mask=mask, other=0.0) > 0, value, 0.0)
        elif FACTOR == "scale":
            value *= tl.load(factor + here, mask=mask, other=0.0)
        acc += value
    tl.store(sums + columns, tl.sum(acc, axis=0), mask=columns < cols)


def column_sums(matrix, factor=None, mode="none"):
    rows, cols = matrix.shape
    sums = torch.empty(cols, dtype=matrix.dtype, device=matrix.device)
    if cols:
        _column_sums[(triton.cdiv(cols, BLOCK_C),)](
            matrix, matrix if factor is None else factor, sums, rows, cols, FACTOR=mode,
            BLOCK_R=BLOCK_R, BLOCK_C=BLOCK_C, num_warps=NUM_WARPS,
        )
    return sums
"""

_STRIDED_PRODUCT = (
    """
@triton.jit
def _strided_product(a, factor, b, residual, out, M, N, K, a_m, a_k, b_k, b_n, FACTOR: tl.constexpr,
                     HAS_RESIDUAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr, PRECISION: tl.constexpr):
    \"\"\"out[M, N] = A @ B (+ residual [M, N]), A's element (m, k) at a[m * a_m + k * a_k] (gated or
    scaled by factor's element there, as FACTOR says), B's (k, n) at b[k * b_k + n * b_n]: either
    operand may be a transpose, read in place.\"\"\"
    rows, cols = _tile(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, K, BLOCK_K):
        depth = k + tl.arange(0, BLOCK_K)
        a_mask = (rows[:, None] < M) & (depth[None, :] < K)
        a_at = rows[:, None].to(tl.int64) * a_m + depth[None, :].to(tl.int64) * a_k
        left = tl.load(a + a_at, mask=a_mask, other=0.0)
        if FACTOR == "gate":
            left = tl.where(tl.load(factor + a_at, mask=a_mask, other=0.0) > 0, left, 0.0)
        elif FACTOR == "scale":
            left *= tl.load(factor + a_at, mask=a_mask, other=0.0)
        b_at = depth[:, None].to(tl.int64) * b_k + cols[None, :].to(tl.int64) * b_n
        right = tl.load(b + b_at, mask=(depth[:, None] < K) & (cols[None, :] < N), other=0.0)
        acc = tl.dot(left, right, acc, input_precision=PRECISION)
    inside = (rows[:, None] < M) & (cols[None, :] < N)
    here = rows[:, None].to(tl.int64) * N + cols[None, :]
    if HAS_RESIDUAL:
        acc += tl.load(residual + here, mask=inside, other=0.0)
    tl.store(out + here, acc, mask=inside)


def strided_product(a, a_strides, b, b_strides, M, N, K, factor=None, mode="none", residual=None):
    out = torch.empty(M, N, dtype=a.dtype, device=a.device)
    if out.numel():
        _strided_product[(triton.cdiv(M, BLOCK_M) * triton.cdiv(N, BLOCK_N),)](
            a, a if factor is None else factor, b, out if residual is None else residual, out, M, N, K,
            *a_strides, *b_strides, FACTOR=mode, HAS_RESIDUAL=residual is not None, BLOCK_M=BLOCK_M,
            BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, GROUP_M=GROUP_M, PRECISION=PRECISION, num_warps=NUM_WARPS,
            num_stages=NUM_STAGES,
        )
    return out
"""
    + _COLUMN_SUMS
)

_LINEAR_BACKWARD = (
    _TILE
    + _STRIDED_PRODUCT
    + """

def run(grad_output, x, weight, output, *, activation):
    \"\"\"grad_x = g @ W, grad_W = g.T @ x, grad_b = g's column sums, g = grad_output * act'(output).\"\"\"
    grad_output, x, weight, output = (t.contiguous() for t in (grad_output, x, weight, output))
    (batch, depth), cols = x.shape, weight.shape[0]
    gate, mode = (output, "gate") if activation == "relu" else (None, "none")
    grad_x = strided_product(grad_output, (cols, 1), weight, (depth, 1), batch, depth, cols, gate, mode)
    grad_w = strided_product(grad_output, (1, cols), x, (depth, 1), cols, depth, batch, gate, mode)
    return grad_x, grad_w, column_sums(grad_output, gate, mode)
"""
)

LINEAR_BIAS_ACT_BACKWARD = TritonTemplate(
    doc="A dense layer's backward in Triton: two strided, gated products and the bias's column sums.",
    space=MappingProxyType({**_DENSE_SPACE, "BLOCK_R": (32, 8, 64), "BLOCK_C": (64, 32, 128)}),
    variants=MappingProxyType({"": Variant((*_DENSE_USES, "BLOCK_R", "BLOCK_C"), _fixed(_LINEAR_BACKWARD))}),
)

_CROSS_RUN = Template('''

def run(*inputs):
    """Full rank: x0, x, W, b. Low rank: x0, x, U, V, b, with W = U V."""
    inputs = [tensor.contiguous() for tensor in inputs]
    if len(inputs) == 4:
        x0, x, w, bias = inputs
        return dense(x, w, bias, "cross", x0, x)
    x0, x, u, v, bias = inputs
    return $low_rank
''')

_LOW_RANK_FUSED = '''

@triton.jit
def _low_rank_cross(x0, x, u, v, bias, out, M, D, R, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                    BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr, GROUP_M: tl.constexpr,
                    PRECISION: tl.constexpr):
    """x0 * ((x @ V.T) @ U.T + b) + x in one kernel: each program projects its rows of x onto
    the rank (BLOCK_R >= R) in registers, then expands them to its columns; the projection never
    reaches memory, at the price of recomputing it once per column block."""
    rows, cols = _tile(M, D, BLOCK_M, BLOCK_N, GROUP_M)
    ranks = tl.arange(0, BLOCK_R)
    projected = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
    projected = _product(x, v, rows, ranks, M, R, D, projected, BLOCK_K, PRECISION)
    expand = tl.load(
        u + cols[None, :] * R + ranks[:, None], mask=(cols[None, :] < D) & (ranks[:, None] < R), other=0.0
    )
    acc = tl.dot(projected, expand, input_precision=PRECISION)
    _epilogue(acc, rows, cols, M, D, bias, x0, x, out, True, "cross")


def low_rank_cross(x0, x, u, v, bias):
    (M, D), R = x.shape, v.shape[0]
    out = torch.empty(M, D, dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    grid = (triton.cdiv(M, BLOCK_M) * triton.cdiv(D, BLOCK_N),)
    _low_rank_cross[grid](
        x0, x, u, v, bias, out, M, D, R, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K,
        BLOCK_R=max(16, triton.next_power_of_2(R)), GROUP_M=GROUP_M, PRECISION=PRECISION,
        num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )
    return out
'''

_LOW_RANK = {
    # Two launches of the dense kernel: x @ V.T to memory, then the cross layer on it.
    "two_pass": _DENSE
    + _CROSS_RUN.substitute(low_rank='dense(dense(x, v, None, "none"), u, bias, "cross", x0, x)'),
    "fused": _DENSE + _LOW_RANK_FUSED + _CROSS_RUN.substitute(low_rank="low_rank_cross(x0, x, u, v, bias)"),
}

DCN_CROSS = TritonTemplate(
    doc="One DCN-v2 cross layer x0 * (W x + b) + x in Triton, full or low rank, the cross fused in.",
    space=MappingProxyType({"low_rank": ("two_pass", "fused"), **_DENSE_SPACE}),
    variants=MappingProxyType({name: Variant(_DENSE_USES, _fixed(code)) for name, code in _LOW_RANK.items()}),
    choice="low_rank",
)


# dcn_cross_stack: one launch per layer, each the cross layer's (the stack's rows do not stay
# on chip between layers: a fused stack needs every column of a row block in one program).

_CROSS_STACK = (
    _DENSE
    + _LOW_RANK_FUSED
    + """

def run(x0, *weights, layers):
    \"\"\"Per layer W, b (full rank) or U, V, b (low rank); x_{l+1} = x0 * (W_l x_l + b_l) + x_l.\"\"\"
    x0 = x0.contiguous()
    weights = [tensor.contiguous() for tensor in weights]
    if layers == 0:
        return x0.clone()
    per_layer = len(weights) // layers
    x = x0
    for layer in range(layers):
        w = weights[layer * per_layer : (layer + 1) * per_layer]
        x = dense(x, w[0], w[1], "cross", x0, x) if per_layer == 2 else low_rank_cross(x0, x, *w)
    return x
"""
)

DCN_CROSS_STACK = TritonTemplate(
    doc="A stack of DCN-v2 cross layers in Triton, a launch per layer (full rank, or low rank fused).",
    space=MappingProxyType(_DENSE_SPACE),
    variants=MappingProxyType({"": Variant(_DENSE_USES, _fixed(_CROSS_STACK))}),
)


# dcn_cross_backward: z recomputed by the forward's dense kernel with the output gradient as its
# epilogue's factor (grad_x0 = g * z); dz = g * x0 scaled into every product that reads it.

_CROSS_BACKWARD = (
    _DENSE
    + _STRIDED_PRODUCT
    + """

def run(*inputs):
    \"\"\"Full rank: g, x0, x, W, b. Low rank: g, x0, x, U, V, b (see the operator's docstring).\"\"\"
    inputs = [tensor.contiguous() for tensor in inputs]
    g, x0, x = inputs[:3]
    batch, dim = x.shape
    grad_b = column_sums(g, x0, "scale")
    if len(inputs) == 5:
        w, bias = inputs[3:]
        grad_x0 = dense(x, w, bias, "scaled", g)
        grad_x = strided_product(g, (dim, 1), w, (dim, 1), batch, dim, dim, x0, "scale", g)
        grad_w = strided_product(g, (1, dim), x, (dim, 1), dim, dim, batch, x0, "scale")
        return grad_x0, grad_x, grad_w, grad_b
    u, v, bias = inputs[3:]
    rank = v.shape[0]
    projected = dense(x, v, None, "none")
    grad_x0 = dense(projected, u, bias, "scaled", g)
    grad_u = strided_product(g, (1, dim), projected, (rank, 1), dim, rank, batch, x0, "scale")
    grad_projected = strided_product(g, (dim, 1), u, (rank, 1), batch, rank, dim, x0, "scale")
    grad_v = strided_product(grad_projected, (1, rank), x, (dim, 1), rank, dim, batch)
    grad_x = strided_product(grad_projected, (rank, 1), v, (dim, 1), batch, dim, rank, residual=g)
    return grad_x0, grad_x, grad_u, grad_v, grad_b
"""
)

DCN_CROSS_BACKWARD = TritonTemplate(
    doc="A DCN-v2 cross layer's backward in Triton: the recomputed product scaled by the output "
    "gradient, strided products scaled by x0 where they read dz, and the bias's column sums.",
    space=LINEAR_BIAS_ACT_BACKWARD.space,
    variants=MappingProxyType({"": Variant((*_DENSE_USES, "BLOCK_R", "BLOCK_C"), _fixed(_CROSS_BACKWARD))}),
)


# fm_interaction ---------------------------------------------------------------------------

_FM = '''@triton.jit
def _fm(v, out, batch, fields, dim, BLOCK_B: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_D: tl.constexpr):
    """BLOCK_B examples per program. One pass over the fields, BLOCK_F at a time, sums both the
    embeddings and their squares (per column, BLOCK_D columns at a time); then
    0.5 * sum_d(sum^2 - sum of squares)."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    has_row = rows < batch
    total = tl.zeros((BLOCK_B,), dtype=tl.float32)
    for d in range(0, dim, BLOCK_D):
        columns = d + tl.arange(0, BLOCK_D)
        sums = tl.zeros((BLOCK_B, BLOCK_D), dtype=tl.float32)
        squares = tl.zeros((BLOCK_B, BLOCK_D), dtype=tl.float32)
        for f in range(0, fields, BLOCK_F):
            field = f + tl.arange(0, BLOCK_F)
            mask = has_row[:, None, None] & (field < fields)[None, :, None] & (columns < dim)[None, None, :]
            where = rows[:, None, None] * fields * dim + field[None, :, None] * dim + columns[None, None, :]
            e = tl.load(v + where, mask=mask, other=0.0)
            sums += tl.sum(e, axis=1)
            squares += tl.sum(e * e, axis=1)
        total += tl.sum(sums * sums - squares, axis=1)
    tl.store(out + rows, 0.5 * total, mask=has_row)


def run(embeddings):
    embeddings = embeddings.contiguous()
    batch, fields, dim = embeddings.shape
    out = torch.empty(batch, 1, dtype=embeddings.dtype, device=embeddings.device)
    if batch == 0:
        return out
    _fm[(triton.cdiv(batch, BLOCK_B),)](
        embeddings, out, batch, fields, dim, BLOCK_B=BLOCK_B, BLOCK_F=BLOCK_F, BLOCK_D=BLOCK_D,
        num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )
    return out
'''

FM_INTERACTION = TritonTemplate(
    doc="The factorization-machine pairwise interaction in Triton: sums and sums of squares in one pass.",
    space=MappingProxyType(
        {
            "BLOCK_B": (16, 1, 4, 64),
            "BLOCK_F": (8, 1, 4, 16, 32),
            "BLOCK_D": (32, 16, 64, 128),
            "num_warps": _WARPS,
            "num_stages": _STAGES,
        }
    ),
    variants=MappingProxyType({"": Variant(("BLOCK_B", "BLOCK_F", "BLOCK_D", *_LAUNCH), _fixed(_FM))}),
)


# fm_interaction_backward ---------------------------------------------------------------------

_FM_BACKWARD = """@triton.jit
def _fm_backward(grad_output, v, out, batch, fields, dim, BLOCK_B: tl.constexpr, BLOCK_F: tl.constexpr,
                 BLOCK_D: tl.constexpr):
    \"\"\"BLOCK_B examples per program, BLOCK_D columns at a time: the fields' sum in one pass over
    them (BLOCK_F at a time), then each field's gradient g * (sum - v) in a second.\"\"\"
    rows = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    has_row = rows < batch
    g = tl.load(grad_output + rows, mask=has_row, other=0.0)
    for d in range(0, dim, BLOCK_D):
        columns = d + tl.arange(0, BLOCK_D)
        sums = tl.zeros((BLOCK_B, BLOCK_D), dtype=tl.float32)
        for f in range(0, fields, BLOCK_F):
            field = f + tl.arange(0, BLOCK_F)
            mask = has_row[:, None, None] & (field < fields)[None, :, None] & (columns < dim)[None, None, :]
            where = rows[:, None, None] * fields * dim + field[None, :, None] * dim + columns[None, None, :]
            sums += tl.sum(tl.load(v + where, mask=mask, other=0.0), axis=1)
        for f in range(0, fields, BLOCK_F):
            field = f + tl.arange(0, BLOCK_F)
            mask = has_row[:, None, None] & (field < fields)[None, :, None] & (columns < dim)[None, None, :]
            where = rows[:, None, None] * fields * dim + field[None, :, None] * dim + columns[None, None, :]
            e = tl.load(v + where, mask=mask, other=0.0)
            tl.store(out + where, g[:, None, None] * (sums[:, None, :] - e), mask=mask)


def run(grad_output, embeddings):
    grad_output, embeddings = grad_output.contiguous(), embeddings.contiguous()
    batch, fields, dim = embeddings.shape
    out = torch.empty_like(embeddings)
    if out.numel() == 0:
        return out
    _fm_backward[(triton.cdiv(batch, BLOCK_B),)](
        grad_output, embeddings, out, batch, fields, dim, BLOCK_B=BLOCK_B, BLOCK_F=BLOCK_F, BLOCK_D=BLOCK_D,
        num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )
    return out
"""

FM_INTERACTION_BACKWARD = TritonTemplate(
    doc="The FM interaction's backward in Triton: the fields' sum, then each field's gradient from it.",
    space=FM_INTERACTION.space,
    variants=MappingProxyType(
        {"": Variant(("BLOCK_B", "BLOCK_F", "BLOCK_D", *_LAUNCH), _fixed(_FM_BACKWARD))}
    ),
)

# layer_norm -------------------------------------------------------------------------------

_LAYER_NORM_CHUNKED = Template('''@triton.jit
def _layer_norm(x, weight, bias, out, rows, dim, eps, RELU: tl.constexpr, BLOCK_R: tl.constexpr,
                BLOCK_D: tl.constexpr):
    """BLOCK_R rows per program, read BLOCK_D columns at a time: statistics first ($stats), then
    a last pass that normalises (and, with RELU, applies relu, keeping a NaN as PyTorch does)."""
    row = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    has_row = row[:, None] < rows
    start = x + row[:, None] * dim
    sums = tl.zeros((BLOCK_R, BLOCK_D), dtype=tl.float32)
$statistics
    inv_std = 1.0 / tl.sqrt(variance + eps)
    for d in range(0, dim, BLOCK_D):
        columns = d + tl.arange(0, BLOCK_D)
        mask = has_row & (columns[None, :] < dim)
        value = tl.load(start + columns[None, :], mask=mask, other=0.0)
        w = tl.load(weight + columns, mask=columns < dim, other=0.0)
        b = tl.load(bias + columns, mask=columns < dim, other=0.0)
        normal = (value - mean[:, None]) * inv_std[:, None] * w[None, :] + b[None, :]
        if RELU:
            normal = tl.where(normal < 0.0, 0.0, normal)
        tl.store(out + row[:, None] * dim + columns[None, :], normal, mask=mask)
''')

_CHUNKED_STATISTICS = {
    "two_pass": """    for d in range(0, dim, BLOCK_D):
        columns = d + tl.arange(0, BLOCK_D)
        sums += tl.load(start + columns[None, :], mask=has_row & (columns[None, :] < dim), other=0.0)
    mean = tl.sum(sums, axis=1) / dim
    deviations = tl.zeros((BLOCK_R, BLOCK_D), dtype=tl.float32)
    for d in range(0, dim, BLOCK_D):
        columns = d + tl.arange(0, BLOCK_D)
        mask = has_row & (columns[None, :] < dim)
        value = tl.load(start + columns[None, :], mask=mask, other=0.0)
        deviation = tl.where(mask, value - mean[:, None], 0.0)
        deviations += deviation * deviation
    variance = tl.sum(deviations, axis=1) / dim""",
    "one_pass": """    squares = tl.zeros((BLOCK_R, BLOCK_D), dtype=tl.float32)
    for d in range(0, dim, BLOCK_D):
        columns = d + tl.arange(0, BLOCK_D)
        value = tl.load(start + columns[None, :], mask=has_row & (columns[None, :] < dim), other=0.0)
        sums += value
        squares += value * value
    mean = tl.sum(sums, axis=1) / dim
    variance = tl.maximum(tl.sum(squares, axis=1) / dim - mean * mean, 0.0)""",
}

_LAYER_NORM_WHOLE = Template('''@triton.jit
def _layer_norm(x, weight, bias, out, rows, dim, eps, RELU: tl.constexpr, BLOCK_R: tl.constexpr,
                BLOCK_D: tl.constexpr):
    """BLOCK_R whole rows per program (BLOCK_D >= dim), read once and kept in registers while
    the statistics ($stats) are taken; with RELU, relu after (keeping a NaN as PyTorch does)."""
    row = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    columns = tl.arange(0, BLOCK_D)
    mask = (row[:, None] < rows) & (columns[None, :] < dim)
    value = tl.load(x + row[:, None] * dim + columns[None, :], mask=mask, other=0.0)
    mean = tl.sum(value, axis=1) / dim
$statistics
    inv_std = 1.0 / tl.sqrt(variance + eps)
    w = tl.load(weight + columns, mask=columns < dim, other=0.0)
    b = tl.load(bias + columns, mask=columns < dim, other=0.0)
    normal = (value - mean[:, None]) * inv_std[:, None] * w[None, :] + b[None, :]
    if RELU:
        normal = tl.where(normal < 0.0, 0.0, normal)
    tl.store(out + row[:, None] * dim + columns[None, :], normal, mask=mask)
''')

_WHOLE_STATISTICS = {
    "two_pass": """    deviation = tl.where(mask, value - mean[:, None], 0.0)
    variance = tl.sum(deviation * deviation, axis=1) / dim""",
    "one_pass": """    variance = tl.maximum(tl.sum(value * value, axis=1) / dim - mean * mean, 0.0)""",
}

_STATS_DOC = {"two_pass": "the mean, then squared deviations from it", "one_pass": "sums and sums of squares"}

_LAYER_NORM_RUN = Template("""

def run(x, weight, bias, *, eps, activation):
    x, weight, bias = x.contiguous(), weight.contiguous(), bias.contiguous()
    rows, dim = x.shape
    out = torch.empty_like(x)
    if out.numel() == 0:
        return out
    _layer_norm[(triton.cdiv(rows, BLOCK_R),)](
        x, weight, bias, out, rows, dim, eps, RELU=activation == "relu", BLOCK_R=BLOCK_R, BLOCK_D=$block_d,
        num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )
    return out
""")


def _layer_norm_code(
    kernel: Template, statistics: Mapping[str, str], block_d: str
) -> Callable[[Params], str]:
    """The code of one row layout, with the statistics ``params["stats"]`` chooses."""

    def code(params: Params) -> str:
        stats = str(params["stats"])
        body = kernel.substitute(stats=_STATS_DOC[stats], statistics=statistics[stats])
        return body + _LAYER_NORM_RUN.substitute(block_d=block_d)

    return code


LAYER_NORM = TritonTemplate(
    doc="Layer normalisation over the last dimension, with weight and bias, in Triton.",
    space=MappingProxyType(
        {
            "row": ("chunked", "whole"),
            "stats": ("two_pass", "one_pass"),
            "BLOCK_D": (512, 128, 256, 1024, 2048),
            "BLOCK_R": (1, 2, 4, 8),
            "num_warps": (4, 1, 2, 8, 16),
            "num_stages": _STAGES,
        }
    ),
    variants=MappingProxyType(
        {
            "chunked": Variant(
                ("BLOCK_D", "BLOCK_R", *_LAUNCH),
                _layer_norm_code(_LAYER_NORM_CHUNKED, _CHUNKED_STATISTICS, "BLOCK_D"),
            ),
            "whole": Variant(
                ("BLOCK_R", *_LAUNCH),
                _layer_norm_code(_LAYER_NORM_WHOLE, _WHOLE_STATISTICS, "triton.next_power_of_2(dim)"),
            ),
        }
    ),
    choice="row",
)


# layer_norm_backward: whole rows per program, each program's shares of the weight's and bias's
# gradients written to a row of its own, then summed down the programs.

_LAYER_NORM_BACKWARD = (
    """@triton.jit
def _layer_norm_backward(grad_output, x, weight, output, grad_x, partial, rows, dim, eps, RELU: tl.constexpr,
                         BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    \"\"\"BLOCK_R whole rows (BLOCK_D >= dim) per program, statistics recomputed, g the output
    gradient (with RELU, where the output is positive): xhat = (x - mean) rstd, h = g w,
    grad_x = rstd (h - mean(h) - xhat mean(h xhat)); the program's sums of g xhat and of g go to
    partial[program] and partial[programs + program].\"\"\"
    program = tl.program_id(0)
    row = program.to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    columns = tl.arange(0, BLOCK_D)
    mask = (row[:, None] < rows) & (columns[None, :] < dim)
    here = row[:, None] * dim + columns[None, :]
    value = tl.load(x + here, mask=mask, other=0.0)
    g = tl.load(grad_output + here, mask=mask, other=0.0)
    if RELU:
        g = tl.where(tl.load(output + here, mask=mask, other=0.0) > 0.0, g, 0.0)
    mean = tl.sum(value, axis=1) / dim
    deviation = tl.where(mask, value - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(deviation * deviation, axis=1) / dim + eps)
    xhat = deviation * rstd[:, None]
    h = g * tl.load(weight + columns, mask=columns < dim, other=0.0)[None, :]
    h_mean = tl.sum(h, axis=1) / dim
    hx_mean = tl.sum(h * xhat, axis=1) / dim
    tl.store(grad_x + here, rstd[:, None] * (h - h_mean[:, None] - xhat * hx_mean[:, None]), mask=mask)
    programs = tl.num_programs(0)
    tl.store(partial + program * dim + columns, tl.sum(g * xhat, axis=0), mask=columns < dim)
    tl.store(partial + (programs + program) * dim + columns, tl.sum(g, axis=0), mask=columns < dim)
"""
    + _COLUMN_SUMS
    + """

def run(grad_output, x, weight, output, *, eps, activation):
    grad_output, x, weight, output = (t.contiguous() for t in (grad_output, x, weight, output))
    rows, dim = x.shape
    grad_x = torch.empty_like(x)
    if rows == 0 or dim == 0:
        return grad_x, torch.zeros_like(weight), torch.zeros_like(weight)
    programs = triton.cdiv(rows, BLOCK_R)
    partial = torch.empty(2, programs, dim, dtype=x.dtype, device=x.device)
    _layer_norm_backward[(programs,)](
        grad_output, x, weight, output, grad_x, partial, rows, dim, eps, RELU=activation == "relu",
        BLOCK_R=BLOCK_R, BLOCK_D=triton.next_power_of_2(dim), num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )
    return grad_x, column_sums(partial[0]), column_sums(partial[1])
"""
)

LAYER_NORM_BACKWARD = TritonTemplate(
    doc="Layer norm's backward in Triton: whole rows per program, then the parameters' column sums.",
    space=MappingProxyType(
        {
            "BLOCK_R": (1, 2, 4, 8),
            "BLOCK_C": (64, 32, 128),
            "num_warps": (4, 1, 2, 8, 16),
            "num_stages": _STAGES,
        }
    ),
    variants=MappingProxyType({"": Variant(("BLOCK_R", "BLOCK_C", *_LAUNCH), _fixed(_LAYER_NORM_BACKWARD))}),
)

# bce_with_logits --------------------------------------------------------------------------

_BCE_PARTIAL = Template('''@triton.jit
def _bce(logits, targets, out, n, BLOCK: tl.constexpr, CHUNKS: tl.constexpr):
    """CHUNKS blocks of BLOCK elements per program, summed in a vector and reduced once:
    max(x, 0) - x * y + log(1 + exp(-|x|)) per element, then $finish."""
    program = tl.program_id(0).to(tl.int64)
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for chunk in range(CHUNKS):
        index = (program * CHUNKS + chunk) * BLOCK + tl.arange(0, BLOCK)
        mask = index < n
        x = tl.load(logits + index, mask=mask, other=0.0)
        y = tl.load(targets + index, mask=mask, other=0.0)
        loss = tl.maximum(x, 0.0) - x * y + tl.log(1.0 + tl.exp(-tl.abs(x)))
        acc += tl.where(mask, loss, 0.0)
$store
''')

_BCE_RUN = Template("""

def run(logits, targets):
    logits, targets = logits.contiguous(), targets.contiguous()
    n = logits.numel()
    if n == 0:
        return torch.full((), float("nan"), dtype=logits.dtype, device=logits.device)  # mean of nothing
    programs = triton.cdiv(n, BLOCK * CHUNKS)
$launch
""")

_LAUNCH_OPTIONS = "num_warps=NUM_WARPS, num_stages=NUM_STAGES"

_BCE = {
    # Each program writes its partial sum; a second, one-program kernel adds them in a fixed order.
    "two_stage": _BCE_PARTIAL.substitute(
        finish="the partial sum to out[program]",
        store="    tl.store(out + program, tl.sum(acc, axis=0))",
    )
    + '''

@triton.jit
def _finish(partials, out, count, n, BLOCK: tl.constexpr):
    """The mean: the partial sums added BLOCK at a time, divided by n."""
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, count, BLOCK):
        index = start + tl.arange(0, BLOCK)
        acc += tl.load(partials + index, mask=index < count, other=0.0)
    tl.store(out, tl.sum(acc, axis=0) / n)
'''
    + _BCE_RUN.substitute(
        launch=f"""    partials = torch.empty(programs, dtype=torch.float32, device=logits.device)
    out = torch.empty((), dtype=logits.dtype, device=logits.device)
    _bce[(programs,)](
        logits, targets, partials, n, BLOCK=BLOCK, CHUNKS=CHUNKS, {_LAUNCH_OPTIONS}
    )
    _finish[(1,)](partials, out, programs, n, BLOCK=1024)
    return out"""
    ),
    # Each program adds its share of the mean to the output atomically: one launch, in no fixed order.
    "atomic": _BCE_PARTIAL.substitute(
        finish="partial sum / n added to the output atomically",
        store="    tl.atomic_add(out, tl.sum(acc, axis=0) / n)",
    )
    + _BCE_RUN.substitute(
        launch=f"""    out = torch.zeros((), dtype=logits.dtype, device=logits.device)
    _bce[(programs,)](
        logits, targets, out, n, BLOCK=BLOCK, CHUNKS=CHUNKS, {_LAUNCH_OPTIONS}
    )
    return out"""
    ),
}

BCE_WITH_LOGITS = TritonTemplate(
    doc="Mean binary cross-entropy with logits in Triton: a block reduction.",
    space=MappingProxyType(
        {
            "reduction": ("two_stage", "atomic"),
            "BLOCK": (1024, 256, 512, 2048, 4096),
            "CHUNKS": (1, 2, 4, 8, 16),
            "num_warps": _WARPS,
            "num_stages": _STAGES,
        }
    ),
    variants=MappingProxyType(
        {name: Variant(("BLOCK", "CHUNKS", *_LAUNCH), _fixed(code)) for name, code in _BCE.items()}
    ),
    choice="reduction",
)

# bce_with_logits_backward -----------------------------------------------------------------

_BCE_BACKWARD = """@triton.jit
def _bce_backward(grad_output, logits, targets, out, n, BLOCK: tl.constexpr):
    \"\"\"BLOCK elements per program: grad_output * (sigmoid(x) - y) / n, with sigmoid from
    exp(-|x|), which never overflows.\"\"\"
    index = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = index < n
    x = tl.load(logits + index, mask=mask, other=0.0)
    y = tl.load(targets + index, mask=mask, other=0.0)
    scale = tl.load(grad_output) / n
    e = tl.exp(-tl.abs(x))
    probability = tl.where(x >= 0, 1.0, e) / (1.0 + e)
    tl.store(out + index, (probability - y) * scale, mask=mask)


def run(grad_output, logits, targets):
    grad_output, logits, targets = grad_output.contiguous(), logits.contiguous(), targets.contiguous()
    out = torch.empty_like(logits)
    n = logits.numel()
    if n == 0:
        return out
    _bce_backward[(triton.cdiv(n, BLOCK),)](
        grad_output, logits, targets, out, n, BLOCK=BLOCK, num_warps=NUM_WARPS, num_stages=NUM_STAGES
    )
    return out
"""

BCE_WITH_LOGITS_BACKWARD = TritonTemplate(
    doc="The BCE-with-logits loss's gradient in Triton: one elementwise pass.",
    space=MappingProxyType(
        {"BLOCK": (1024, 256, 512, 2048, 4096), "num_warps": _WARPS, "num_stages": _STAGES}
    ),
    variants=MappingProxyType({"": Variant(("BLOCK", *_LAUNCH), _fixed(_BCE_BACKWARD))}),
)


TEMPLATES: Mapping[str, TritonTemplate] = MappingProxyType(
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
