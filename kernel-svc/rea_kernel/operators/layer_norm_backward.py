"""Layer norm's backward: the gradients of ``act(layer_norm(x, weight, bias))`` with respect to
``x``, ``weight`` and ``bias``, which a training step computes for each normalised layer.

Inputs, in the forward's layout (:mod:`rea_kernel.operators.layer_norm`): ``grad_output``
[rows, dim], ``x`` [rows, dim], ``weight`` [dim] and the forward's ``output`` [rows, dim], which
gives the activation's derivative (relu's is 1 where the output is positive, as PyTorch's relu
backward reads it; recomputed from ``x``, a value near zero could land on the other side), with
``eps`` and ``activation`` as attributes. Outputs, in order: ``grad_x`` [rows, dim],
``grad_weight`` [dim] and ``grad_bias`` [dim].

With ``g = grad_output * act'(output)`` and each row's ``xhat = (x - mean) * rstd``:
``grad_weight`` sums ``g * xhat`` over the rows, ``grad_bias`` sums ``g``, and, with
``h = g * weight``, ``grad_x = rstd * (h - mean(h) - xhat * mean(h * xhat))`` along each row. The
forward returns no statistics, so a kernel recomputes each row's mean and ``rstd`` (it reads the
row anyway).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from rea_kernel.operators._base import Attribute, Operator, Tolerance
from rea_kernel.operators.layer_norm import LayerNorm, LayerNormShape

_FORWARD = LayerNorm()


class LayerNormBackward(Operator[LayerNormShape]):
    name = "layer_norm_backward"
    direction = "backward"
    shape_type = LayerNormShape
    # grad_weight and grad_bias sum over the rows (8,192 at the benchmark shapes; beyond,
    # `magnitude` widens the allowance as the sums grow).
    tolerances = {torch.float32: Tolerance(atol=1e-3, rtol=1e-4)}
    correctness_shapes = _FORWARD.correctness_shapes
    benchmark_shapes = _FORWARD.benchmark_shapes

    def outputs(self, shape: LayerNormShape) -> int:
        return 3

    def make_inputs(
        self, shape: LayerNormShape, dtype: torch.dtype, generator: torch.Generator
    ) -> tuple[torch.Tensor, ...]:
        """The forward's inputs and its output (so relu's zeros fall where they would in training),
        and a gradient of that output."""
        x, weight, bias = _FORWARD.make_inputs(shape, dtype, generator)
        output = _FORWARD.reference(x, weight, bias, **_FORWARD.attributes(shape))
        grad_output = torch.randn(shape.rows, shape.dim, generator=generator, dtype=dtype)
        return grad_output, x, weight, output

    def attributes(self, shape: LayerNormShape) -> dict[str, Attribute]:
        return _FORWARD.attributes(shape)

    def reference(self, *inputs: torch.Tensor, **attributes: Attribute) -> tuple[torch.Tensor, ...]:
        """The statistics recomputed, then PyTorch's own layer-norm backward (one fused kernel,
        what eager training runs; the tests hold it to ``torch.autograd.grad`` of the forward's
        reference)."""
        _, x, weight, _ = inputs
        if x.shape[0] == 0:
            return torch.zeros_like(x), torch.zeros_like(weight), torch.zeros_like(weight)
        gated, mean, rstd = _statistics(inputs, attributes)
        grad_x, grad_weight, _ = torch.ops.aten.native_layer_norm_backward(
            gated, x, [x.shape[-1]], mean, rstd, weight, None, [True, True, False]
        )
        return grad_x, grad_weight, gated.sum(0)

    def magnitude(self, *inputs: torch.Tensor, **attributes: Attribute) -> tuple[torch.Tensor, ...]:
        """``|g * xhat|`` and ``|g|`` summed over the rows; none for ``grad_x``, whose sums run
        along a row and are normalised (the tolerance covers them)."""
        _, x, weight, _ = inputs
        if x.shape[0] == 0:
            return torch.zeros_like(x), torch.zeros_like(weight), torch.zeros_like(weight)
        gated, mean, rstd = _statistics(inputs, attributes)
        gradient = gated.abs()
        return torch.zeros_like(x), (gradient * ((x - mean) * rstd).abs()).sum(0), gradient.sum(0)

    def shape_of(self, inputs: Sequence[torch.Tensor], attributes: Mapping[str, Attribute]) -> LayerNormShape:
        return _FORWARD.shape_of(inputs[1:], attributes)

    def bytes_moved(self, shape: LayerNormShape) -> int:
        """The output gradient and ``x`` read (and the output, for relu's derivative), ``grad_x``
        written, the weight read and its two gradients written."""
        arrays = 4 if shape.activation == "relu" else 3
        return arrays * shape.rows * shape.dim * 4 + 3 * shape.dim * 4

    def bucket(self, shape: LayerNormShape) -> str:
        return _FORWARD.bucket(shape)


def _statistics(
    inputs: Sequence[torch.Tensor], attributes: Mapping[str, Attribute]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The output gradient through the activation, and each row's mean and ``rstd``, recomputed
    from ``x`` (at least one row)."""
    grad_output, x, _, output = inputs
    if attributes["activation"] == "relu":
        grad_output = grad_output * (output > 0)
    variance, mean = torch.var_mean(x, dim=-1, correction=0, keepdim=True)
    return grad_output, mean, (variance + float(attributes["eps"])).rsqrt()
