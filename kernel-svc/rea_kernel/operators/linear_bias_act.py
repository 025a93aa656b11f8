"""A fused dense layer: ``act(x @ W.T + b)``, the building block of a ranking model's towers.

Inputs: ``x`` [batch, in], ``W`` [out, in] (``nn.Linear``'s layout), ``b`` [out]. The activation
is ``relu``, ``gelu`` (the exact, erf form: :func:`torch.nn.functional.gelu`'s default) or
``none``, passed as the ``activation`` attribute.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from rea_kernel.operators._base import Attribute, Operator, Shape, Tolerance, size_class


class LinearShape(Shape):
    batch: int
    in_features: int
    out_features: int
    activation: Literal["relu", "gelu", "none"]


class LinearBiasAct(Operator[LinearShape]):
    name = "linear_bias_act"
    shape_type = LinearShape
    tolerances = {torch.float32: Tolerance(atol=1e-4, rtol=1e-4)}
    correctness_shapes = (
        LinearShape(batch=1, in_features=13, out_features=7, activation="relu"),
        LinearShape(batch=7, in_features=17, out_features=33, activation="gelu"),
        LinearShape(batch=0, in_features=16, out_features=8, activation="relu"),
        LinearShape(batch=33, in_features=64, out_features=1, activation="none"),
        LinearShape(batch=255, in_features=429, out_features=129, activation="gelu"),
        LinearShape(batch=64, in_features=512, out_features=256, activation="relu"),
    )
    benchmark_shapes = (
        LinearShape(batch=2048, in_features=429, out_features=512, activation="relu"),
        LinearShape(batch=2048, in_features=512, out_features=256, activation="gelu"),
    )

    def make_inputs(
        self, shape: LinearShape, dtype: torch.dtype, generator: torch.Generator
    ) -> tuple[torch.Tensor, ...]:
        x = torch.randn(shape.batch, shape.in_features, generator=generator, dtype=dtype)
        scale = 1 / math.sqrt(shape.in_features)
        weight = torch.randn(shape.out_features, shape.in_features, generator=generator, dtype=dtype) * scale
        bias = torch.randn(shape.out_features, generator=generator, dtype=dtype) * 0.1
        return x, weight, bias

    def attributes(self, shape: LinearShape) -> dict[str, Attribute]:
        return {"activation": shape.activation}

    def reference(self, *inputs: torch.Tensor, **attributes: Attribute) -> torch.Tensor:
        x, weight, bias = inputs
        out = F.linear(x, weight, bias)
        if attributes["activation"] == "relu":
            return F.relu(out)
        if attributes["activation"] == "gelu":
            return F.gelu(out)
        return out

    def shape_of(self, inputs: Sequence[torch.Tensor], attributes: Mapping[str, Attribute]) -> LinearShape:
        x, weight, _ = inputs
        return LinearShape(
            batch=x.shape[0],
            in_features=x.shape[1],
            out_features=weight.shape[0],
            activation=str(attributes["activation"]),  # the shape validates it
        )

    def bucket(self, shape: LinearShape) -> str:
        return f"{shape.in_features}x{shape.out_features}-{shape.activation}-b{size_class(shape.batch)}"
