"""Layer normalisation over the last dimension, with a weight and a bias, eps 1e-5, then an
activation: ``x`` [rows, dim], ``weight`` [dim], ``bias`` [dim] -> [rows, dim]. ``eps`` and the
``activation`` (``none``, or ``relu``: a normalised MLP layer's, applied while the row is in
registers instead of in another pass over memory) are attributes, so a kernel hard-codes
neither."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from rea_kernel.operators._base import Attribute, Operator, Shape, Tolerance, size_class

EPS = 1e-5


class LayerNormShape(Shape):
    rows: int
    dim: int
    activation: Literal["none", "relu"] = "none"


class LayerNorm(Operator[LayerNormShape]):
    name = "layer_norm"
    shape_type = LayerNormShape
    tolerances = {torch.float32: Tolerance(atol=1e-4, rtol=1e-4)}
    correctness_shapes = (
        LayerNormShape(rows=1, dim=1),
        LayerNormShape(rows=7, dim=17, activation="relu"),
        LayerNormShape(rows=0, dim=32, activation="relu"),
        LayerNormShape(rows=33, dim=64),
        LayerNormShape(rows=257, dim=429, activation="relu"),
        LayerNormShape(rows=3, dim=4099),
    )
    benchmark_shapes = (
        LayerNormShape(rows=4096, dim=429),
        LayerNormShape(rows=8192, dim=256, activation="relu"),
    )

    def make_inputs(
        self, shape: LayerNormShape, dtype: torch.dtype, generator: torch.Generator
    ) -> tuple[torch.Tensor, ...]:
        x = torch.randn(shape.rows, shape.dim, generator=generator, dtype=dtype) * 2 + 0.5
        weight = 1 + 0.1 * torch.randn(shape.dim, generator=generator, dtype=dtype)
        bias = 0.1 * torch.randn(shape.dim, generator=generator, dtype=dtype)
        return x, weight, bias

    def attributes(self, shape: LayerNormShape) -> dict[str, Attribute]:
        return {"eps": EPS, "activation": shape.activation}

    def reference(self, *inputs: torch.Tensor, **attributes: Attribute) -> torch.Tensor:
        x, weight, bias = inputs
        normal = F.layer_norm(x, (x.shape[-1],), weight, bias, eps=float(attributes["eps"]))
        return F.relu(normal) if attributes["activation"] == "relu" else normal

    def shape_of(self, inputs: Sequence[torch.Tensor], attributes: Mapping[str, Attribute]) -> LayerNormShape:
        rows, dim = inputs[0].shape
        return LayerNormShape(
            rows=rows,
            dim=dim,
            activation=str(attributes["activation"]),  # the shape validates it
        )

    def bytes_moved(self, shape: LayerNormShape) -> int:
        return 2 * shape.rows * shape.dim * 4 + 2 * shape.dim * 4

    def bucket(self, shape: LayerNormShape) -> str:
        activation = "" if shape.activation == "none" else f"-{shape.activation}"
        return f"d{shape.dim}-r{size_class(shape.rows)}{activation}"
