"""The operator contract: what a kernel must compute, on which shapes, and how closely.

An :class:`Operator` is the unit KernelEvolve optimises. It owns everything the evaluator needs
to judge a candidate without trusting it: a shape space, a way to make fresh random inputs
from a seed, a plain-PyTorch reference, and the tolerances that separate a correct kernel from
a wrong one. Operators hold no state, so one instance serves every evaluation.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Generic, Literal, TypeVar

import torch
from pydantic import BaseModel, ConfigDict

Attribute = str | int | float
Direction = Literal["forward", "backward"]
Result = torch.Tensor | tuple[torch.Tensor, ...]
"""What an operator computes: one tensor, or (a backward's gradients) a tuple of them."""


class Shape(BaseModel):
    """One point of an operator's shape space: sizes, plus the non-tensor choices (a pooling
    mode, an activation) that a kernel must honour too. Immutable, so shapes can key caches."""

    model_config = ConfigDict(frozen=True, extra="forbid")


ShapeT = TypeVar("ShapeT", bound=Shape)


class Tolerance(BaseModel):
    """``|out - ref| <= atol + rtol * |ref|`` elementwise, as :func:`torch.allclose` reads it."""

    model_config = ConfigDict(frozen=True)

    atol: float
    rtol: float


class Operator(ABC, Generic[ShapeT]):
    """An operator a kernel can implement, with the reference that defines it.

    The contract, for every operator:

    - ``name`` is unique and stable: registries key kernels by it.
    - ``direction`` says whether it is a forward or a backward computation. A backward is just
      another operator (its inputs include the gradient of the output and whatever the forward
      saved; its reference calls ``torch.autograd.grad`` on the forward's), registered beside
      the forward under its own name, so nothing else changes when backward kernels arrive.
    - ``correctness_shapes`` cover the awkward cases a kernel gets wrong: odd and
      non-power-of-two sizes, empty inputs, and a few large-ish ones that still run in CI.
      ``benchmark_shapes`` are the sizes a ranking model runs at, where speed is measured.
    - ``make_inputs(shape, dtype, generator)`` is deterministic in the generator's seed: the
      evaluator regenerates the same inputs in different processes from the seed alone. Inputs
      are contiguous CPU tensors; floating inputs take ``dtype``, index inputs are int64.
    - ``attributes(shape)`` are the non-tensor arguments (a mode, an activation, an epsilon),
      passed as keywords to both the reference and a candidate's ``run``.
    - ``reference(*inputs, **attributes)`` is plain eager PyTorch: readable first, since it
      defines correctness and is the baseline that speed is measured against.
    - ``outputs(shape)`` is how many tensors a call returns: one, returned as a tensor, or
      several (a dense layer's backward: the gradients of its input, weight and bias), returned
      as a tuple in a fixed order; a cross layer's backward returns one more for a low-rank
      layer's two factors. A kernel returns exactly what the reference does.
    - ``tolerance(dtype)`` bounds the error a correct float kernel may show (it may sum in
      another order); it must be loose enough for that and tight enough to catch a wrong one.
    - ``magnitude(*inputs, **attributes)``, for an operator whose outputs are long sums (a
      weight's gradient sums over the batch, a hot embedding row over every bag that holds it),
      is, per output element, the sum of the absolute values of the terms it adds: for an
      operator that only multiplies and adds, its reference on the inputs' absolute values.
      Float32's rounding error in a sum grows with it, so a fixed tolerance right at one batch
      size rejects correct kernels at a larger one; the evaluator allows a few units of roundoff
      times it on top of the tolerance (:data:`rea_kernel.checks.SUM_ORDER_ROUNDINGS`). None,
      the default, where every sum is short enough for the tolerance alone.
    - ``bucket(shape)`` names the shape class a kernel is registered for: shapes in one bucket
      are expected to share a best kernel.
    - ``shape_of(inputs, attributes)`` reads the shape back from a call's inputs (the inverse of
      ``make_inputs``, up to the randomness it draws), so a trainer's call finds its bucket.
    - ``bytes_moved(shape)`` is the least memory traffic a float32 kernel for ``shape`` makes
      (each input it needs read once, the output written once) for an operator bound by memory,
      so a timing converts to achieved bandwidth; None for one bound by arithmetic.
    """

    name: ClassVar[str]
    direction: ClassVar[Direction] = "forward"
    shape_type: type[ShapeT]
    dtypes: tuple[torch.dtype, ...] = (torch.float32,)
    tolerances: Mapping[torch.dtype, Tolerance] = {torch.float32: Tolerance(atol=1e-5, rtol=1e-5)}
    correctness_shapes: tuple[ShapeT, ...]
    benchmark_shapes: tuple[ShapeT, ...]

    def parse_shape(self, data: Mapping[str, Any]) -> ShapeT:
        """A shape from its plain-data form (what crosses process boundaries and JSON)."""
        return self.shape_type.model_validate(dict(data))

    def outputs(self, shape: ShapeT) -> int:
        """How many tensors a call at ``shape`` returns."""
        return 1

    def attributes(self, shape: ShapeT) -> dict[str, Attribute]:
        """Non-tensor arguments of the reference and of every kernel; none by default."""
        return {}

    def bytes_moved(self, shape: ShapeT) -> int | None:
        """Least bytes a float32 kernel moves for ``shape``; None: bound by arithmetic, not memory."""
        return None

    def tolerance(self, dtype: torch.dtype) -> Tolerance:
        return self.tolerances[dtype]

    def magnitude(self, *inputs: torch.Tensor, **attributes: Attribute) -> Result | None:
        """Per output element, the sum of the absolute values of the terms it adds (a tensor for
        each output, of its shape; an integer output's is ignored); None: no long sums."""
        return None

    def nearby_shape(self, shape: ShapeT, rng: random.Random) -> ShapeT:
        """A different shape of about the same size (each size of 4 or more scaled by up to a
        third either way). A speedup measured on one shape must hold on its neighbours; one that
        does not was tuned to, or memoised for, that exact shape."""
        fields = shape.model_dump()
        sizes = [key for key, value in fields.items() if type(value) is int and value >= 4]
        for key in sizes:
            fields[key] = max(2, round(fields[key] * rng.uniform(0.75, 1.33)))
        if sizes and fields == shape.model_dump():
            fields[sizes[0]] += 1
        return self.parse_shape(fields)

    @abstractmethod
    def make_inputs(
        self, shape: ShapeT, dtype: torch.dtype, generator: torch.Generator
    ) -> tuple[torch.Tensor, ...]:
        """Fresh random inputs for ``shape``, drawn only from ``generator``."""

    @abstractmethod
    def reference(self, *inputs: torch.Tensor, **attributes: Attribute) -> Result:
        """The output (a tuple of ``outputs`` tensors, where more than one) a correct kernel
        must match, in plain PyTorch."""

    @abstractmethod
    def shape_of(self, inputs: Sequence[torch.Tensor], attributes: Mapping[str, Attribute]) -> ShapeT:
        """The shape of a call with these inputs and attributes."""

    @abstractmethod
    def bucket(self, shape: ShapeT) -> str:
        """The registry bucket of ``shape``: exact where a kernel specialises, coarse elsewhere."""


def size_class(size: int) -> int:
    """The power of two at or above ``size`` (0 for 0): batch-like sizes bucket by it, since a
    kernel tuned for 3000 rows serves 2500 as well."""
    return 0 if size <= 0 else 1 << (size - 1).bit_length()


def dtype_name(dtype: torch.dtype) -> str:
    """A dtype as timings and registry keys name it (``float32``)."""
    return str(dtype).removeprefix("torch.")
