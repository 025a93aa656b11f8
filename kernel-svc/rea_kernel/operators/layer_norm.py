"""Layer normalisation over the last dimension, with a weight and a bias, eps 1e-5:
``x`` [rows, dim], ``weight`` [dim], ``bias`` [dim] -> [rows, dim]. ``eps`` is passed as an
attribute, so a kernel does not hard-code it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from rea_kernel.operators._base import Attribute, Operator, Shape, Tolerance, size_class

EPS = 1e-5


class LayerNormShape(Shape):
    rows: int
    dim: int


class LayerNorm(Operator[LayerNormShape]):
    name = "layer_norm"
    shape_type = LayerNormShape
    tolerances = {torch.float32: Tolerance(atol=1e-4, rtol=1e-4)}
    correctness_shapes = (
        LayerNormShape(rows=1, dim=1),
        LayerNormShape(rows=7, dim=17),
        LayerNormShape(rows=0, dim=32),
        LayerNormShape(rows=33, dim=64),
        LayerNormShape(rows=257, dim=429),
        LayerNormShape(rows=3, dim=4099),
    )
    benchmark_shapes = (
        LayerNormShape(rows=4096, dim=429),
        LayerNormShape(rows=8192, dim=256),
    )

    def make_inputs(
        self, shape: LayerNormShape, dtype: torch.dtype, generator: torch.Generator
    ) -> tuple[torch.Tensor, ...]:
        x = torch.randn(shape.rows, shape.dim, generator=generator, dtype=dtype) * 2 + 0.5
        weight = 1 + 0.1 * torch.randn(shape.dim, generator=generator, dtype=dtype)
        bias = 0.1 * torch.randn(shape.dim, generator=generator, dtype=dtype)
        return x, weight, bias

    def attributes(self, shape: LayerNormShape) -> dict[str, Attribute]:
        return {"eps": EPS}

    def reference(self, *inputs: torch.Tensor, **attributes: Attribute) -> torch.Tensor:
        x, weight, bias = inputs
        return F.layer_norm(x, (x.shape[-1],), weight, bias, eps=float(attributes["eps"]))

    def shape_of(self, inputs: Sequence[torch.Tensor], attributes: Mapping[str, Attribute]) -> LayerNormShape:
        rows, dim = inputs[0].shape
        return LayerNormShape(rows=rows, dim=dim)

    def bytes_moved(self, shape: LayerNormShape) -> int:
        return 2 * shape.rows * shape.dim * 4 + 2 * shape.dim * 4

    def bucket(self, shape: LayerNormShape) -> str:
        return f"d{shape.dim}-r{size_class(shape.rows)}"
