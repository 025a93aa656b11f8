"""The FM interaction's backward: the gradient of its embeddings, which a training step computes
for the embeddings every field's lookup returned.

Inputs: ``grad_output`` [batch, 1], the gradient of the forward's output, and ``embeddings``
[batch, fields, dim], the forward's input. Output ``grad_embeddings`` [batch, fields, dim]: a
field's embedding meets every other field's, so its gradient is
``grad_output * (sum over fields of the embeddings - its own embedding)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from rea_kernel.operators._base import Attribute, Operator, Tolerance
from rea_kernel.operators.fm_interaction import FmInteraction, FmShape

_FORWARD = FmInteraction()


class FmInteractionBackward(Operator[FmShape]):
    name = "fm_interaction_backward"
    direction = "backward"
    shape_type = FmShape
    tolerances = {torch.float32: Tolerance(atol=1e-5, rtol=1e-5)}
    correctness_shapes = _FORWARD.correctness_shapes
    benchmark_shapes = _FORWARD.benchmark_shapes

    def make_inputs(
        self, shape: FmShape, dtype: torch.dtype, generator: torch.Generator
    ) -> tuple[torch.Tensor, ...]:
        (embeddings,) = _FORWARD.make_inputs(shape, dtype, generator)
        return torch.randn(shape.batch, 1, generator=generator, dtype=dtype), embeddings

    def reference(self, *inputs: torch.Tensor, **attributes: Attribute) -> torch.Tensor:
        grad_output, embeddings = inputs
        return grad_output.unsqueeze(-1) * (embeddings.sum(dim=1, keepdim=True) - embeddings)

    def magnitude(self, *inputs: torch.Tensor, **attributes: Attribute) -> torch.Tensor:
        """``|g| * (sum of |embeddings| + |own|)``: the field sum's terms, and the subtraction's."""
        grad_output, embeddings = inputs
        size = embeddings.abs()
        return grad_output.abs().unsqueeze(-1) * (size.sum(dim=1, keepdim=True) + size)

    def shape_of(self, inputs: Sequence[torch.Tensor], attributes: Mapping[str, Attribute]) -> FmShape:
        return _FORWARD.shape_of(inputs[1:], attributes)

    def bytes_moved(self, shape: FmShape) -> int:
        """The embeddings read and their gradient written, and the output's gradient read."""
        return 2 * shape.batch * shape.fields * shape.dim * 4 + shape.batch * 4

    def bucket(self, shape: FmShape) -> str:
        return _FORWARD.bucket(shape)
