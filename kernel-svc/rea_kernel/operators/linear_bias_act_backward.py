"""A dense layer's backward: the gradients of ``act(x @ W.T + b)`` with respect to ``x``, ``W``
and ``b``, which every training step computes for each layer of a ranking model's towers.

Inputs, in the forward's layout (:mod:`rea_kernel.operators.linear_bias_act`):

- ``grad_output`` [batch, out]: the gradient of the forward's output;
- ``x`` [batch, in] and ``W`` [out, in]: the forward's input and weight;
- ``output`` [batch, out]: the forward's result, which gives the activation's derivative.

Outputs, in order: ``grad_x`` [batch, in], ``grad_W`` [out, in] and ``grad_b`` [out]. With
``g = grad_output * act'(output)``: ``grad_x = g @ W``, ``grad_W = g.T @ x``, ``grad_b`` the sum
of ``g``'s rows.

The activation is ``relu`` or ``none``, whose derivatives are functions of the output (relu's is
1 where the output is positive, as PyTorch's relu backward reads it). ``gelu``'s derivative needs
the pre-activation, which the forward does not return: a gelu layer trains as the layer with no
activation (this operator's ``none``) followed by PyTorch's gelu (``rea_workload.ops``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch

from rea_kernel.operators._base import Attribute, Operator, Shape, Tolerance
from rea_kernel.operators.linear_bias_act import LinearBiasAct, LinearShape

_FORWARD = LinearBiasAct()


class LinearBackwardShape(Shape):
    batch: int
    in_features: int
    out_features: int
    activation: Literal["relu", "none"]


class LinearBiasActBackward(Operator[LinearBackwardShape]):
    name = "linear_bias_act_backward"
    direction = "backward"
    shape_type = LinearBackwardShape
    # grad_W sums over the batch, so a kernel summing in another order strays further than the
    # forward's 1e-4 on entries near zero; at larger batches `magnitude` widens it further.
    tolerances = {torch.float32: Tolerance(atol=1e-3, rtol=1e-4)}
    correctness_shapes = (
        LinearBackwardShape(batch=1, in_features=13, out_features=7, activation="relu"),
        LinearBackwardShape(batch=7, in_features=17, out_features=33, activation="none"),
        LinearBackwardShape(batch=0, in_features=16, out_features=8, activation="relu"),
        LinearBackwardShape(batch=33, in_features=64, out_features=1, activation="none"),
        LinearBackwardShape(batch=255, in_features=429, out_features=129, activation="relu"),
        LinearBackwardShape(batch=64, in_features=512, out_features=256, activation="relu"),
    )
    benchmark_shapes = (
        LinearBackwardShape(batch=2048, in_features=429, out_features=512, activation="relu"),
        LinearBackwardShape(batch=2048, in_features=512, out_features=256, activation="none"),
    )

    def outputs(self, shape: LinearBackwardShape) -> int:
        return 3

    def make_inputs(
        self, shape: LinearBackwardShape, dtype: torch.dtype, generator: torch.Generator
    ) -> tuple[torch.Tensor, ...]:
        """The forward's inputs and its output (so relu's zeros fall where they would in training),
        and a gradient of that output."""
        x, weight, bias = _FORWARD.make_inputs(_forward_shape(shape), dtype, generator)
        output = _FORWARD.reference(x, weight, bias, activation=shape.activation)
        grad_output = torch.randn(shape.batch, shape.out_features, generator=generator, dtype=dtype)
        return grad_output, x, weight, output

    def attributes(self, shape: LinearBackwardShape) -> dict[str, Attribute]:
        return {"activation": shape.activation}

    def reference(self, *inputs: torch.Tensor, **attributes: Attribute) -> tuple[torch.Tensor, ...]:
        """The three gradients from the gated output gradient, as PyTorch's autograd computes
        them (the tests hold it to ``torch.autograd.grad`` of the forward's reference)."""
        grad_output, x, weight, output = inputs
        gated = grad_output * (output > 0) if attributes["activation"] == "relu" else grad_output
        return gated @ weight, gated.t() @ x, gated.sum(0)

    def magnitude(self, *inputs: torch.Tensor, **attributes: Attribute) -> tuple[torch.Tensor, ...]:
        """The products and the column sum on absolute values (the output only gates)."""
        grad_output, x, weight, output = inputs
        return self.reference(grad_output.abs(), x.abs(), weight.abs(), output, **attributes)

    def shape_of(
        self, inputs: Sequence[torch.Tensor], attributes: Mapping[str, Attribute]
    ) -> LinearBackwardShape:
        grad_output, x, _, _ = inputs
        return LinearBackwardShape(
            batch=x.shape[0],
            in_features=x.shape[1],
            out_features=grad_output.shape[1],
            activation=str(attributes["activation"]),  # the shape validates it
        )

    def bucket(self, shape: LinearBackwardShape) -> str:
        return _FORWARD.bucket(_forward_shape(shape))


def _forward_shape(shape: LinearBackwardShape) -> LinearShape:
    """The forward call whose gradients ``shape`` computes (its sizes, a narrower activation)."""
    return LinearShape.model_validate(shape.model_dump())
