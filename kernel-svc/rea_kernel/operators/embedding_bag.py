"""Pooled embedding-bag lookup over many tables at once: one call per batch for every
categorical field of a ranking model.

Layout (FBGEMM's table-batched embedding, and what a KeyedJaggedTensor already holds), chosen
so that one fused kernel can run a single parallel loop over every (table, bag) pair:

- ``weights`` [sum of rows, dim]: the tables' rows concatenated; table ``t`` owns rows
  ``table_offsets[t] : table_offsets[t + 1]``. Concatenated once when a model is built.
- ``table_offsets`` [tables + 1], int64.
- ``indices`` [n], int64: row ids local to their table, all tables' bags concatenated
  table-major (table 0's bags for the whole batch, then table 1's, ...).
- ``offsets`` [tables * batch + 1], int64: bag ``t * batch + b`` is
  ``indices[offsets[t * batch + b] : offsets[t * batch + b + 1]]``. Bags may be empty: an empty
  bag pools to zeros, in ``mean`` mode too (as :func:`torch.nn.functional.embedding_bag`).

Output [batch, tables * dim]: table ``t``'s pooled vector in columns ``t * dim : (t + 1) * dim``,
the concatenation a ranking model feeds its interaction layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from rea_kernel.operators._base import Attribute, Operator, Shape, Tolerance, size_class


class EmbeddingBagShape(Shape):
    """``tables`` tables of ``rows + t`` rows each (table ``t``; unequal on purpose, so a
    kernel must read ``table_offsets``), bags of 0 to ``max_bag`` ids drawn uniformly."""

    tables: int
    rows: int
    dim: int
    batch: int
    max_bag: int
    mode: Literal["sum", "mean"]


class EmbeddingBagPooled(Operator[EmbeddingBagShape]):
    name = "embedding_bag_pooled"
    shape_type = EmbeddingBagShape
    tolerances = {torch.float32: Tolerance(atol=1e-5, rtol=1e-5)}
    correctness_shapes = (
        EmbeddingBagShape(tables=1, rows=10, dim=16, batch=1, max_bag=3, mode="sum"),
        EmbeddingBagShape(tables=3, rows=50, dim=17, batch=7, max_bag=5, mode="mean"),
        EmbeddingBagShape(tables=5, rows=30, dim=3, batch=2, max_bag=4, mode="sum"),
        EmbeddingBagShape(tables=4, rows=20, dim=8, batch=5, max_bag=0, mode="mean"),
        EmbeddingBagShape(tables=2, rows=20, dim=16, batch=0, max_bag=4, mode="sum"),
        EmbeddingBagShape(tables=26, rows=100, dim=32, batch=33, max_bag=8, mode="sum"),
        EmbeddingBagShape(tables=26, rows=1000, dim=16, batch=257, max_bag=20, mode="mean"),
    )
    benchmark_shapes = (
        EmbeddingBagShape(tables=26, rows=20_000, dim=32, batch=2048, max_bag=20, mode="sum"),
        EmbeddingBagShape(tables=26, rows=20_000, dim=16, batch=512, max_bag=20, mode="mean"),
    )

    def make_inputs(
        self, shape: EmbeddingBagShape, dtype: torch.dtype, generator: torch.Generator
    ) -> tuple[torch.Tensor, ...]:
        rows = [shape.rows + table for table in range(shape.tables)]
        table_offsets = torch.tensor([0, *rows]).cumsum(0)
        weights = torch.randn(sum(rows), shape.dim, generator=generator, dtype=dtype)
        lengths = torch.randint(0, shape.max_bag + 1, (shape.tables, shape.batch), generator=generator)
        per_table = lengths.sum(1).tolist()
        indices = torch.cat(
            [
                torch.randint(0, rows[table], (count,), generator=generator)
                for table, count in enumerate(per_table)
            ]
        )
        offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.flatten().cumsum(0)])
        return weights, table_offsets, indices, offsets

    def attributes(self, shape: EmbeddingBagShape) -> dict[str, Attribute]:
        return {"mode": shape.mode}

    def reference(self, *inputs: torch.Tensor, **attributes: Attribute) -> torch.Tensor:
        """One :func:`~torch.nn.functional.embedding_bag` per table, then a concatenation: what
        a model with one ``nn.EmbeddingBag`` per categorical field runs."""
        weights, table_offsets, indices, offsets = inputs
        tables = table_offsets.numel() - 1
        batch = (offsets.numel() - 1) // tables
        if batch == 0:
            return weights.new_zeros(0, tables * weights.shape[1])
        row_bounds = table_offsets.tolist()
        index_bounds = offsets[::batch].tolist()
        pooled = [
            F.embedding_bag(
                indices[index_bounds[table] : index_bounds[table + 1]],
                weights[row_bounds[table] : row_bounds[table + 1]],
                offsets[table * batch : (table + 1) * batch] - index_bounds[table],
                mode=str(attributes["mode"]),
            )
            for table in range(tables)
        ]
        return torch.cat(pooled, dim=1)

    def magnitude(self, *inputs: torch.Tensor, **attributes: Attribute) -> torch.Tensor:
        """The lookup of the weight's absolute values: a long bag sums many rows."""
        weights, *bags = inputs
        return self.reference(weights.abs(), *bags, **attributes)

    def shape_of(
        self, inputs: Sequence[torch.Tensor], attributes: Mapping[str, Attribute]
    ) -> EmbeddingBagShape:
        weights, table_offsets, _, offsets = inputs
        return bags_shape(table_offsets, offsets, weights.shape[1], attributes)

    def bytes_moved(self, shape: EmbeddingBagShape) -> int:
        """The rows its bags gather (a bag holds ``max_bag / 2`` ids on average), their ids and
        offsets, and the output."""
        bags = shape.tables * shape.batch
        ids = bags * shape.max_bag / 2
        return int(ids * (shape.dim * 4 + 8) + (bags + 1) * 8 + bags * shape.dim * 4)

    def bucket(self, shape: EmbeddingBagShape) -> str:
        bags = f"b{size_class(shape.batch)}-l{size_class(shape.max_bag)}"
        return f"t{shape.tables}-d{shape.dim}-{bags}-{shape.mode}"


def bags_shape(
    table_offsets: torch.Tensor, offsets: torch.Tensor, dim: int, attributes: Mapping[str, Attribute]
) -> EmbeddingBagShape:
    """The shape of bags over these tables: ``rows`` is the first table's and ``max_bag`` the
    longest bag seen."""
    tables = table_offsets.numel() - 1
    return EmbeddingBagShape(
        tables=tables,
        rows=int(table_offsets[1] - table_offsets[0]) if tables else 0,
        dim=dim,
        batch=(offsets.numel() - 1) // tables if tables else 0,
        max_bag=int(offsets.diff().max()) if offsets.numel() > 1 else 0,
        mode=str(attributes["mode"]),  # the shape validates it
    )
