"""The training loss's backward: the gradient of mean BCE-with-logits with respect to the
logits, which every training step computes first.

Inputs: ``grad_output`` [] (the gradient of the 0-dimensional loss: 1 for a plain
``loss.backward()``), then the forward's ``logits`` [n] and ``targets`` [n]. Output
``grad_logits`` [n]: ``grad_output * (sigmoid(x) - y) / n``. The targets are labels and get no
gradient (a training call whose targets need one runs PyTorch both ways).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from rea_kernel.operators._base import Attribute, Operator, Tolerance
from rea_kernel.operators.bce_with_logits import BceShape, BceWithLogits

_FORWARD = BceWithLogits()


class BceWithLogitsBackward(Operator[BceShape]):
    name = "bce_with_logits_backward"
    direction = "backward"
    shape_type = BceShape
    # The gradient is about |grad_output| / n per element (1e-5 at n = 100,003), so its absolute
    # tolerance is near the rounding of sigmoid(x) - y at n = 1: the small shapes catch a kernel
    # whose sigmoid is only roughly right.
    tolerances = {torch.float32: Tolerance(atol=3e-7, rtol=1e-5)}
    correctness_shapes = _FORWARD.correctness_shapes
    benchmark_shapes = _FORWARD.benchmark_shapes

    def make_inputs(
        self, shape: BceShape, dtype: torch.dtype, generator: torch.Generator
    ) -> tuple[torch.Tensor, ...]:
        """The forward's inputs drawn first, as the forward draws them, then the loss's gradient."""
        logits, targets = _FORWARD.make_inputs(shape, dtype, generator)
        return torch.randn((), generator=generator, dtype=dtype), logits, targets

    def reference(self, *inputs: torch.Tensor, **attributes: Attribute) -> torch.Tensor:
        grad_output, logits, targets = inputs
        return (torch.sigmoid(logits) - targets) * (grad_output / max(logits.numel(), 1))

    def shape_of(self, inputs: Sequence[torch.Tensor], attributes: Mapping[str, Attribute]) -> BceShape:
        return _FORWARD.shape_of(inputs[1:], attributes)

    def bytes_moved(self, shape: BceShape) -> int:
        """The logits and targets read, their gradient written, the loss's gradient read."""
        return 3 * shape.n * 4 + 4

    def bucket(self, shape: BceShape) -> str:
        return _FORWARD.bucket(shape)
