"""One DCN-v2 cross layer: ``x0 * (W x + b) + x``, full rank or low rank.

Inputs, batch-major (``x`` is a row per example, so ``W x`` is ``x @ W.T``):

- full rank (``rank == 0``): ``x0`` [batch, dim], ``x`` [batch, dim], ``W`` [dim, dim], ``b`` [dim];
- low rank (``rank > 0``): ``x0``, ``x``, ``U`` [dim, rank], ``V`` [rank, dim], ``b`` [dim], and
  ``W = U V``, computed as ``(x @ V.T) @ U.T`` so the dim x dim product is never formed.

A kernel tells the two apart by the number of inputs (4 or 5).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from rea_kernel.operators._base import Attribute, Operator, Shape, Tolerance, size_class


class DcnCrossShape(Shape):
    batch: int
    dim: int
    rank: int = 0


class DcnCross(Operator[DcnCrossShape]):
    name = "dcn_cross"
    shape_type = DcnCrossShape
    tolerances = {torch.float32: Tolerance(atol=1e-4, rtol=1e-4)}
    correctness_shapes = (
        DcnCrossShape(batch=1, dim=13, rank=0),
        DcnCrossShape(batch=7, dim=17, rank=4),
        DcnCrossShape(batch=0, dim=16, rank=0),
        DcnCrossShape(batch=5, dim=1, rank=0),
        DcnCrossShape(batch=33, dim=64, rank=0),
        DcnCrossShape(batch=255, dim=129, rank=0),
        DcnCrossShape(batch=128, dim=429, rank=32),
    )
    benchmark_shapes = (
        DcnCrossShape(batch=2048, dim=429, rank=0),
        DcnCrossShape(batch=2048, dim=429, rank=64),
    )

    def make_inputs(
        self, shape: DcnCrossShape, dtype: torch.dtype, generator: torch.Generator
    ) -> tuple[torch.Tensor, ...]:
        def draw(*size: int, scale: float = 1.0) -> torch.Tensor:
            return torch.randn(*size, generator=generator, dtype=dtype) * scale

        x0 = draw(shape.batch, shape.dim)
        x = draw(shape.batch, shape.dim)
        bias = draw(shape.dim, scale=0.1)
        if shape.rank == 0:
            return x0, x, draw(shape.dim, shape.dim, scale=1 / math.sqrt(shape.dim)), bias
        u = draw(shape.dim, shape.rank, scale=1 / math.sqrt(shape.rank))
        v = draw(shape.rank, shape.dim, scale=1 / math.sqrt(shape.dim))
        return x0, x, u, v, bias

    def reference(self, *inputs: torch.Tensor, **attributes: Attribute) -> torch.Tensor:
        if len(inputs) == 4:
            x0, x, w, bias = inputs
            return x0 * F.linear(x, w, bias) + x
        x0, x, u, v, bias = inputs
        return x0 * F.linear(F.linear(x, v), u, bias) + x

    def shape_of(self, inputs: Sequence[torch.Tensor], attributes: Mapping[str, Attribute]) -> DcnCrossShape:
        x0 = inputs[0]
        return DcnCrossShape(
            batch=x0.shape[0], dim=x0.shape[1], rank=0 if len(inputs) == 4 else inputs[2].shape[1]
        )

    def bucket(self, shape: DcnCrossShape) -> str:
        rank = f"r{shape.rank}" if shape.rank else "full"
        return f"d{shape.dim}-{rank}-b{size_class(shape.batch)}"
