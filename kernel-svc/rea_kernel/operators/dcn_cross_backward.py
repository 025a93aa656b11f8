"""A DCN-v2 cross layer's backward: the gradients of ``x0 * (W x + b) + x`` with respect to
``x0``, ``x``, the weight (``W``, or a low-rank layer's ``U`` and ``V``) and ``b``, which every
training step of a DCN-v2 ranker computes for each cross layer.

Inputs, in the forward's layout (:mod:`rea_kernel.operators.dcn_cross`): the output gradient
``g`` [batch, dim], then the forward's inputs: ``x0``, ``x``, ``W`` (or ``U``, ``V``) and ``b``.

Outputs, in order, with ``z = W x + b`` (recomputed: the forward returns only its result) and
``dz = g * x0``:

- full rank: ``grad_x0 = g * z``, ``grad_x = dz @ W + g``, ``grad_W = dz.T @ x``,
  ``grad_b = dz``'s column sums (4 tensors);
- low rank, with ``h = x @ V.T``: ``grad_x0``, ``grad_x = (dz @ U) @ V + g``,
  ``grad_U = dz.T @ h``, ``grad_V = (dz @ U).T @ x``, ``grad_b`` (5 tensors).

Where a layer's ``x`` is its ``x0`` (a stack's first layer), autograd adds the two gradients.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from rea_kernel.operators._base import Attribute, Operator, Tolerance
from rea_kernel.operators.dcn_cross import DcnCross, DcnCrossShape

_FORWARD = DcnCross()


class DcnCrossBackward(Operator[DcnCrossShape]):
    name = "dcn_cross_backward"
    direction = "backward"
    shape_type = DcnCrossShape
    # The weight's gradients sum over the batch (2,048 terms at the benchmark shapes; beyond,
    # `magnitude` widens the allowance as the sums grow).
    tolerances = {torch.float32: Tolerance(atol=1e-3, rtol=1e-4)}
    correctness_shapes = _FORWARD.correctness_shapes
    benchmark_shapes = _FORWARD.benchmark_shapes

    def outputs(self, shape: DcnCrossShape) -> int:
        return 4 if shape.rank == 0 else 5

    def make_inputs(
        self, shape: DcnCrossShape, dtype: torch.dtype, generator: torch.Generator
    ) -> tuple[torch.Tensor, ...]:
        forward_inputs = _FORWARD.make_inputs(shape, dtype, generator)
        grad_output = torch.randn(shape.batch, shape.dim, generator=generator, dtype=dtype)
        return grad_output, *forward_inputs

    def reference(self, *inputs: torch.Tensor, **attributes: Attribute) -> tuple[torch.Tensor, ...]:
        """The products eager autograd runs, plus the recomputed ``z`` (the tests hold it to
        ``torch.autograd.grad`` of the forward's reference)."""
        if len(inputs) == 5:
            grad_output, x0, x, weight, bias = inputs
            scaled = grad_output * x0
            z = F.linear(x, weight, bias)
            return grad_output * z, scaled @ weight + grad_output, scaled.t() @ x, scaled.sum(0)
        grad_output, x0, x, u, v, bias = inputs
        scaled = grad_output * x0
        projected = F.linear(x, v)
        z = F.linear(projected, u, bias)
        grad_projected = scaled @ u
        return (
            grad_output * z,
            grad_projected @ v + grad_output,
            scaled.t() @ projected,
            grad_projected.t() @ x,
            scaled.sum(0),
        )

    def magnitude(self, *inputs: torch.Tensor, **attributes: Attribute) -> tuple[torch.Tensor, ...]:
        """The reference on absolute values: it only multiplies and adds."""
        return self.reference(*(tensor.abs() for tensor in inputs), **attributes)

    def shape_of(self, inputs: Sequence[torch.Tensor], attributes: Mapping[str, Attribute]) -> DcnCrossShape:
        return _FORWARD.shape_of(inputs[1:], attributes)

    def bucket(self, shape: DcnCrossShape) -> str:
        return _FORWARD.bucket(shape)
