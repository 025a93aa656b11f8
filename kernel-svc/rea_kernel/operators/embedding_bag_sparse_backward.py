"""The pooled embedding lookup's backward as a sparse gradient: the rows a batch looked up and
their gradients, what a training step with a sparse table optimiser (Adagrad, row-wise Adagrad,
lazy Adam; FBGEMM's and TorchRec's usual choice) needs instead of a gradient the size of the
tables.

Inputs are the dense backward's (:mod:`rea_kernel.operators.embedding_bag_backward`):
``grad_output`` [batch, tables * dim], ``table_offsets``, ``indices``, ``offsets``.

Outputs, a coalesced sparse gradient of the weight [sum of rows, dim]:

- ``rows`` [n], int64: every row some bag looked up, once each, in increasing order (rows of the
  concatenated tables, so table ``t``'s ids are moved by ``table_offsets[t]``);
- ``values`` [n, dim]: each row's gradient, the sum over the bags that hold its id of that bag's
  output gradient (divided by the bag's length in ``mean`` mode).

``n`` depends on the ids drawn, not only on the shape; rows are compared exactly, values within
the tolerance. Because rows come out unique and sorted, a caller may mark the gradient coalesced
and an optimiser skips its own sort.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from rea_kernel.operators._base import Attribute, Operator, Tolerance
from rea_kernel.operators.embedding_bag import EmbeddingBagPooled, EmbeddingBagShape
from rea_kernel.operators.embedding_bag_backward import EmbeddingBagPooledBackward, id_gradients

_FORWARD = EmbeddingBagPooled()
_DENSE = EmbeddingBagPooledBackward()


class EmbeddingBagPooledSparseBackward(Operator[EmbeddingBagShape]):
    name = "embedding_bag_pooled_sparse_backward"
    direction = "backward"
    shape_type = EmbeddingBagShape
    tolerances = {torch.float32: Tolerance(atol=1e-5, rtol=1e-5)}
    correctness_shapes = (
        *_FORWARD.correctness_shapes,
        # many ids on few rows: every row is looked up by many bags
        EmbeddingBagShape(tables=3, rows=5, dim=16, batch=300, max_bag=6, mode="mean"),
    )
    benchmark_shapes = (
        # the reference ranker's training lookups: single-valued fields on large tables
        EmbeddingBagShape(tables=26, rows=100_000, dim=16, batch=2048, max_bag=1, mode="sum"),
        EmbeddingBagShape(tables=26, rows=20_000, dim=32, batch=2048, max_bag=20, mode="sum"),
    )

    def make_inputs(
        self, shape: EmbeddingBagShape, dtype: torch.dtype, generator: torch.Generator
    ) -> tuple[torch.Tensor, ...]:
        return _DENSE.make_inputs(shape, dtype, generator)

    def outputs(self, shape: EmbeddingBagShape) -> int:
        return 2

    def attributes(self, shape: EmbeddingBagShape) -> dict[str, Attribute]:
        return {"mode": shape.mode}

    def reference(self, *inputs: torch.Tensor, **attributes: Attribute) -> tuple[torch.Tensor, ...]:
        """What eager PyTorch computes for ``embedding_bag(..., sparse=True)`` and a sparse
        optimiser's first act: each id's bag gradient as an uncoalesced sparse gradient, then
        :meth:`~torch.Tensor.coalesce` (sort the rows, add up repeats)."""
        table_offsets = inputs[1]
        rows, values = id_gradients(*inputs, mean=attributes["mode"] == "mean")
        size = (int(table_offsets[-1]), values.shape[1])
        gradient = torch.sparse_coo_tensor(rows.unsqueeze(0), values, size, check_invariants=False)
        gradient = gradient.coalesce()
        return gradient.indices()[0].clone(), gradient.values()

    def magnitude(self, *inputs: torch.Tensor, **attributes: Attribute) -> tuple[torch.Tensor, ...]:
        """The gradient of the output's absolute values: a hot row sums every bag that holds it."""
        grad_output, *bags = inputs
        return self.reference(grad_output.abs(), *bags, **attributes)

    def shape_of(
        self, inputs: Sequence[torch.Tensor], attributes: Mapping[str, Attribute]
    ) -> EmbeddingBagShape:
        return _DENSE.shape_of(inputs, attributes)

    def bytes_moved(self, shape: EmbeddingBagShape) -> int:
        """The output gradient, the ids and offsets read once; each distinct row's gradient and
        its id written once (the rows a table's draws are expected to hit)."""
        bags = shape.tables * shape.batch
        ids = bags * shape.max_bag / 2
        distinct = sum(
            rows * -math.expm1(-shape.batch * shape.max_bag / 2 / rows)
            for rows in range(shape.rows, shape.rows + shape.tables)
            if rows > 0
        )
        return int(bags * shape.dim * 4 + ids * 8 + (bags + 1) * 8 + distinct * (shape.dim * 4 + 8))

    def bucket(self, shape: EmbeddingBagShape) -> str:
        return _FORWARD.bucket(shape)
