"""Mean binary cross-entropy with logits, the ranking model's training loss: ``logits`` [n] and
``targets`` [n] (click labels, 0 or 1) -> a 0-dimensional tensor. Numerically stable form:
``max(x, 0) - x * y + log1p(exp(-|x|))``. The mean of nothing is NaN, as in PyTorch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from rea_kernel.operators._base import Attribute, Operator, Shape, Tolerance, size_class


class BceShape(Shape):
    n: int


class BceWithLogits(Operator[BceShape]):
    name = "bce_with_logits"
    shape_type = BceShape
    tolerances = {torch.float32: Tolerance(atol=1e-5, rtol=1e-5)}
    correctness_shapes = (
        BceShape(n=1),
        BceShape(n=7),
        BceShape(n=0),
        BceShape(n=1000),
        BceShape(n=100_003),
    )
    benchmark_shapes = (BceShape(n=16_384), BceShape(n=1_048_576))

    def make_inputs(
        self, shape: BceShape, dtype: torch.dtype, generator: torch.Generator
    ) -> tuple[torch.Tensor, ...]:
        logits = torch.randn(shape.n, generator=generator, dtype=dtype) * 4
        targets = torch.bernoulli(torch.full((shape.n,), 0.3, dtype=dtype), generator=generator)
        return logits, targets

    def reference(self, *inputs: torch.Tensor, **attributes: Attribute) -> torch.Tensor:
        logits, targets = inputs
        return F.binary_cross_entropy_with_logits(logits, targets)

    def shape_of(self, inputs: Sequence[torch.Tensor], attributes: Mapping[str, Attribute]) -> BceShape:
        return BceShape(n=inputs[0].numel())

    def bytes_moved(self, shape: BceShape) -> int:
        return 2 * shape.n * 4 + 4

    def bucket(self, shape: BceShape) -> str:
        return f"n{size_class(shape.n)}"
