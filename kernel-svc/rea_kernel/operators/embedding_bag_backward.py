"""The pooled embedding lookup's backward: the gradient of its tables' weight, what every
training step of a ranking model computes for its categorical fields.

Inputs, in the forward's layout (:mod:`rea_kernel.operators.embedding_bag`):

- ``grad_output`` [batch, tables * dim]: the gradient of the forward's output;
- ``table_offsets`` [tables + 1], int64 (its last value is the weight's row count);
- ``indices``, ``offsets``: the forward's bags.

Output ``grad_weight`` [sum of rows, dim]: each row is the sum, over the bags that hold its id, of
that bag's output gradient (divided by the bag's length in ``mean`` mode); rows no bag touched
are zero. The forward is linear in the weight, so its gradient does not depend on the weight.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from rea_kernel.operators._base import Attribute, Operator, Tolerance
from rea_kernel.operators.embedding_bag import EmbeddingBagPooled, EmbeddingBagShape, bags_shape

_FORWARD = EmbeddingBagPooled()


class EmbeddingBagPooledBackward(Operator[EmbeddingBagShape]):
    name = "embedding_bag_pooled_backward"
    direction = "backward"
    shape_type = EmbeddingBagShape
    tolerances = {torch.float32: Tolerance(atol=1e-5, rtol=1e-5)}
    correctness_shapes = _FORWARD.correctness_shapes
    benchmark_shapes = _FORWARD.benchmark_shapes

    def make_inputs(
        self, shape: EmbeddingBagShape, dtype: torch.dtype, generator: torch.Generator
    ) -> tuple[torch.Tensor, ...]:
        _, table_offsets, indices, offsets = _FORWARD.make_inputs(shape, dtype, generator)
        grad_output = torch.randn(shape.batch, shape.tables * shape.dim, generator=generator, dtype=dtype)
        return grad_output, table_offsets, indices, offsets

    def attributes(self, shape: EmbeddingBagShape) -> dict[str, Attribute]:
        return {"mode": shape.mode}

    def reference(self, *inputs: torch.Tensor, **attributes: Attribute) -> torch.Tensor:
        """Each id's bag gradient (divided by the bag's length in ``mean`` mode) added into its row
        by one ``index_add_``: the gradient eager PyTorch's dense embedding-bag backward computes,
        without running the forward again (the tests hold it to ``torch.autograd.grad`` of the
        forward's reference)."""
        grad_output, table_offsets, _, _ = inputs
        rows, values = id_gradients(*inputs, mean=attributes["mode"] == "mean")
        grad = grad_output.new_zeros(int(table_offsets[-1]), values.shape[1])
        return grad.index_add_(0, rows, values)

    def magnitude(self, *inputs: torch.Tensor, **attributes: Attribute) -> torch.Tensor:
        """The gradient of the output's absolute values: a hot row sums every bag that holds it."""
        grad_output, *bags = inputs
        return self.reference(grad_output.abs(), *bags, **attributes)

    def shape_of(
        self, inputs: Sequence[torch.Tensor], attributes: Mapping[str, Attribute]
    ) -> EmbeddingBagShape:
        grad_output, table_offsets, _, offsets = inputs
        tables = table_offsets.numel() - 1
        return bags_shape(table_offsets, offsets, grad_output.shape[1] // tables if tables else 0, attributes)

    def bytes_moved(self, shape: EmbeddingBagShape) -> int:
        """The output gradient read, each gathered row read and written, the weight's gradient
        zeroed, and the ids and offsets."""
        bags = shape.tables * shape.batch
        ids = bags * shape.max_bag / 2
        rows = shape.tables * shape.rows + shape.tables * (shape.tables - 1) // 2
        return int(
            bags * shape.dim * 4 + ids * (2 * shape.dim * 4 + 8) + rows * shape.dim * 4 + (bags + 1) * 8
        )

    def bucket(self, shape: EmbeddingBagShape) -> str:
        return _FORWARD.bucket(shape)


def id_gradients(
    grad_output: torch.Tensor,
    table_offsets: torch.Tensor,
    indices: torch.Tensor,
    offsets: torch.Tensor,
    *,
    mean: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each id's row of the concatenated tables and its bag's output gradient (divided by the
    bag's length where ``mean``), in the order of the ids: a row's gradient is the sum of its
    ids' (what eager PyTorch's embedding-bag backward gathers)."""
    tables = table_offsets.numel() - 1
    batch = grad_output.shape[0]
    dim = grad_output.shape[1] // tables if tables else 0
    if batch == 0 or indices.numel() == 0:
        return indices.new_zeros(0), grad_output.new_zeros(0, dim)
    lengths = offsets.diff()
    rows = indices + table_offsets[:-1].repeat_interleave(offsets[::batch].diff())
    by_bag = grad_output.view(batch, tables, dim).transpose(0, 1).reshape(tables * batch, dim)
    if mean:
        by_bag = by_bag / lengths.clamp(min=1).unsqueeze(1).to(by_bag.dtype)
    bags = torch.arange(tables * batch, device=lengths.device).repeat_interleave(lengths)
    return rows, by_bag[bags]
