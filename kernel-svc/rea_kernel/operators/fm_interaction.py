"""The factorization-machine pairwise interaction: the sum over field pairs of their embeddings'
dot products, ``0.5 * sum_d((sum_f v)^2 - sum_f v^2)``, from ``v`` [batch, fields, dim] to
[batch, 1]."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from rea_kernel.operators._base import Attribute, Operator, Shape, Tolerance, size_class


class FmShape(Shape):
    batch: int
    fields: int
    dim: int


class FmInteraction(Operator[FmShape]):
    name = "fm_interaction"
    shape_type = FmShape
    tolerances = {torch.float32: Tolerance(atol=1e-4, rtol=1e-4)}
    correctness_shapes = (
        FmShape(batch=1, fields=1, dim=16),
        FmShape(batch=7, fields=3, dim=17),
        FmShape(batch=0, fields=26, dim=16),
        FmShape(batch=33, fields=26, dim=16),
        FmShape(batch=64, fields=5, dim=100),
        FmShape(batch=257, fields=39, dim=32),
    )
    benchmark_shapes = (
        FmShape(batch=4096, fields=26, dim=16),
        FmShape(batch=2048, fields=39, dim=64),
    )

    def make_inputs(
        self, shape: FmShape, dtype: torch.dtype, generator: torch.Generator
    ) -> tuple[torch.Tensor, ...]:
        size = (shape.batch, shape.fields, shape.dim)
        return (torch.randn(size, generator=generator, dtype=dtype) / math.sqrt(shape.dim),)

    def reference(self, *inputs: torch.Tensor, **attributes: Attribute) -> torch.Tensor:
        (embeddings,) = inputs
        square_of_sum = embeddings.sum(dim=1).pow(2)
        sum_of_squares = embeddings.pow(2).sum(dim=1)
        return 0.5 * (square_of_sum - sum_of_squares).sum(dim=1, keepdim=True)

    def shape_of(self, inputs: Sequence[torch.Tensor], attributes: Mapping[str, Attribute]) -> FmShape:
        batch, fields, dim = inputs[0].shape
        return FmShape(batch=batch, fields=fields, dim=dim)

    def bytes_moved(self, shape: FmShape) -> int:
        return shape.batch * shape.fields * shape.dim * 4 + shape.batch * 4

    def bucket(self, shape: FmShape) -> str:
        return f"f{shape.fields}-d{shape.dim}-b{size_class(shape.batch)}"
