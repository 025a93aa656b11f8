"""A stack of DCN-v2 cross layers on one input: ``x_{l+1} = x0 * (W_l x_l + b_l) + x_l`` for
``l < layers``, from ``x_0 = x0``; the output is the last ``x``.

DCN-v2 rankers stack two to four cross layers on the same ``x0``. Each layer reads ``x0`` and
its input and writes its output, [batch, dim] each; in one kernel, a block of rows can go
through every layer while in cache, so the stack reads ``x0`` once and writes one output (a
layer at a time moves about three times as much memory per layer).

Inputs: ``x0`` [batch, dim], then per layer ``W`` [dim, dim], ``b`` [dim] (full rank) or ``U``
[dim, rank], ``V`` [rank, dim], ``b`` [dim] (low rank, ``W = U V``, as in ``dcn_cross``); every
layer has the same rank. The attribute ``layers`` tells a kernel how the weights divide.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from rea_kernel.operators._base import Attribute, Operator, Shape, Tolerance, size_class
from rea_kernel.operators.dcn_cross import DcnCross


class DcnCrossStackShape(Shape):
    batch: int
    dim: int
    rank: int = 0
    layers: int = 2


class DcnCrossStack(Operator[DcnCrossStackShape]):
    name = "dcn_cross_stack"
    shape_type = DcnCrossStackShape
    tolerances = {torch.float32: Tolerance(atol=2e-4, rtol=2e-4)}
    correctness_shapes = (
        DcnCrossStackShape(batch=1, dim=13, rank=0, layers=2),
        DcnCrossStackShape(batch=7, dim=17, rank=4, layers=3),
        DcnCrossStackShape(batch=0, dim=16, rank=8, layers=2),
        DcnCrossStackShape(batch=5, dim=1, rank=0, layers=1),
        DcnCrossStackShape(batch=33, dim=64, rank=0, layers=3),
        DcnCrossStackShape(batch=255, dim=129, rank=16, layers=2),
        DcnCrossStackShape(batch=130, dim=429, rank=64, layers=2),
    )
    benchmark_shapes = (
        DcnCrossStackShape(batch=2048, dim=429, rank=64, layers=2),
        DcnCrossStackShape(batch=2048, dim=429, rank=0, layers=2),
    )

    def attributes(self, shape: DcnCrossStackShape) -> dict[str, Attribute]:
        return {"layers": shape.layers}

    def make_inputs(
        self, shape: DcnCrossStackShape, dtype: torch.dtype, generator: torch.Generator
    ) -> tuple[torch.Tensor, ...]:
        def draw(*size: int, scale: float = 1.0) -> torch.Tensor:
            return torch.randn(*size, generator=generator, dtype=dtype) * scale

        # Each layer's W x is about a third of x, so x grows by about that much a layer, as a
        # trained stack's does, instead of by its size times x0's.
        x0 = draw(shape.batch, shape.dim)
        weights: list[torch.Tensor] = []
        for _ in range(shape.layers):
            if shape.rank == 0:
                weights.append(draw(shape.dim, shape.dim, scale=1 / (3 * math.sqrt(shape.dim))))
            else:
                weights.append(draw(shape.dim, shape.rank, scale=1 / (3 * math.sqrt(shape.rank))))
                weights.append(draw(shape.rank, shape.dim, scale=1 / math.sqrt(shape.dim)))
            weights.append(draw(shape.dim, scale=0.1))
        return (x0, *weights)

    def reference(self, *inputs: torch.Tensor, **attributes: Attribute) -> torch.Tensor:
        x0, weights = inputs[0], inputs[1:]
        layers = int(attributes["layers"])
        per_layer = len(weights) // max(layers, 1)
        x = x0
        for layer in range(layers):
            x = _CROSS.reference(x0, x, *weights[layer * per_layer : (layer + 1) * per_layer])
        return x

    def shape_of(
        self, inputs: Sequence[torch.Tensor], attributes: Mapping[str, Attribute]
    ) -> DcnCrossStackShape:
        x0, layers = inputs[0], int(attributes["layers"])
        low_rank = layers > 0 and len(inputs) - 1 == 3 * layers
        return DcnCrossStackShape(
            batch=x0.shape[0], dim=x0.shape[1], rank=inputs[2].shape[0] if low_rank else 0, layers=layers
        )

    def bucket(self, shape: DcnCrossStackShape) -> str:
        rank = f"r{shape.rank}" if shape.rank else "full"
        return f"d{shape.dim}-{rank}-l{shape.layers}-b{size_class(shape.batch)}"


_CROSS = DcnCross()
