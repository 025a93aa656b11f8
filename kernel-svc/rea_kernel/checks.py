"""The checks both sides of an evaluation share: what makes an output acceptable, and a
fingerprint that lets the evaluator check an output it never received in full.

The sandboxed child runs these on the candidate's outputs; the evaluator runs the same code on
the reference's, so the two sides cannot drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from rea_kernel.operators import Attribute, Operator, Result, Tolerance

SUM_ORDER_ROUNDINGS = 32
"""Units of roundoff, times the sum of its terms' absolute values, that an element summed in
another order than the reference's may differ by (on top of the operator's tolerance).

Float32 rounds every partial sum, so two correct kernels that add the same terms in different
orders differ, and by more the longer the sum: a tolerance fixed for one batch size rejects
correct kernels at a larger one. For terms that are independent and centred (an operator's
inputs are random draws) and an order that does not depend on their values (sequential,
blocked, pairwise, a vector's lanes, threads' partial sums), each side's error stays within a
few units of roundoff times the sum of the terms' magnitudes however long the sum. Measured on
the long-sum shapes of ``python -m rea_bench.tolerance`` (up to about half a million terms):
PyTorch's float32 results within 8 of them of the exact answer, the `cpu` templates' kernels
within 10 of PyTorch's. 32 leaves room for both sides and still rejects a result computed from
inputs rounded to bfloat16 (8 times over the allowance or more) or float16 (the 10-bit mantissa
of TF32, which GPU matrix units use for float32: 1.15 times over at half a million terms, more
on shorter sums), or one missing a term (``tests/unit/test_kernel_checks.py``)."""


def tensors(result: Result) -> tuple[torch.Tensor, ...]:
    """An operator's result as a tuple of its output tensors (one for most operators)."""
    return (result,) if isinstance(result, torch.Tensor) else tuple(result)


def output_problem(output: object, device: str, inputs: Sequence[torch.Tensor], count: int = 1) -> str | None:
    """Why ``output`` is not an acceptable kernel result, whatever its values; None if it is.

    A result is one tensor, or a plain tuple of ``count`` of them where the operator has
    ``count`` outputs. Each must be a plain dense tensor that a caller may keep and write to: no
    subclass (whose methods could run code, or lie about values), on the target's device,
    contiguous, and sharing memory with no input and no other output.
    """
    if count == 1:
        return _tensor_problem(output, device, inputs)
    if type(output) is not tuple or len(output) != count:
        return f"returned a {type(output).__name__}, not a tuple of {count} tensors"
    for index, tensor in enumerate(output):
        problem = _tensor_problem(tensor, device, [*inputs, *output[:index]])
        if problem is not None:
            return f"output {index}: {problem.replace('an input', 'an input or an earlier output')}"
    return None


def _tensor_problem(output: object, device: str, inputs: Sequence[torch.Tensor]) -> str | None:
    if not isinstance(output, torch.Tensor):
        return f"returned a {type(output).__name__}, not a torch.Tensor"
    if type(output) is not torch.Tensor:
        return f"returned a tensor subclass {type(output).__name__}, not a plain torch.Tensor"
    if output.device.type != device:
        return f"returned a tensor on {output.device}, not on {device}"
    if output.layout is not torch.strided or not output.is_contiguous():
        return "returned a non-contiguous tensor"
    if output.numel() and any(_shares_memory(output, tensor) for tensor in inputs):
        return "returned a tensor that shares memory with an input"
    return None


def same(a: Result, b: Result) -> bool:
    """Whether two results are equal, element for element."""
    first, second = tensors(a), tensors(b)
    return len(first) == len(second) and all(torch.equal(x, y) for x, y in zip(first, second, strict=True))


def _shares_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    return b.numel() > 0 and a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


@dataclass(frozen=True)
class Comparison:
    matches: bool
    max_abs_error: float
    reason: str | None = None
    used: float = 0.0
    """The largest ``|out - ref| / allowed`` (at most 1 passes, so infinite for a wrong dtype,
    shape or row index): how near rejection it came."""


@dataclass(frozen=True)
class Expected:
    """What a correct kernel returns for one call: the reference's outputs, and for each of their
    elements the largest difference from it that is still correct (float64; zero for an integer
    output, which must match exactly)."""

    outputs: tuple[torch.Tensor, ...]
    allowed: tuple[torch.Tensor, ...]
    rule: str
    """The allowance in words, for a rejection's reason."""


def expect(reference: Result, tolerance: Tolerance, magnitude: Result | None = None) -> Expected:
    """``reference`` with the error allowed around it: ``atol + rtol * |ref|``, plus
    :data:`SUM_ORDER_ROUNDINGS` units of roundoff times ``magnitude`` (the sum of the absolute
    values of the terms each element adds: :meth:`Operator.magnitude`) where there is one."""
    outputs = tensors(reference)
    magnitudes: tuple[torch.Tensor | None, ...] = (
        (None,) * len(outputs) if magnitude is None else tensors(magnitude)
    )
    allowed = tuple(
        _allowed(output, tolerance, scale) for output, scale in zip(outputs, magnitudes, strict=True)
    )
    rule = f"atol {tolerance.atol:g} rtol {tolerance.rtol:g}"
    if magnitude is not None:
        rule += f" + {SUM_ORDER_ROUNDINGS}u x sum of |terms|"
    return Expected(outputs, allowed, rule)


def expected_of(
    operator: Operator,
    inputs: Sequence[torch.Tensor],
    attributes: Mapping[str, Attribute],
    dtype: torch.dtype,
) -> Expected:
    """The reference of ``operator`` on ``inputs``, with its tolerance for ``dtype`` and its
    sums' magnitudes."""
    return expect(
        operator.reference(*inputs, **attributes),
        operator.tolerance(dtype),
        operator.magnitude(*inputs, **attributes),
    )


def _allowed(reference: torch.Tensor, tolerance: Tolerance, magnitude: torch.Tensor | None) -> torch.Tensor:
    if not reference.is_floating_point():
        return torch.zeros(reference.shape, dtype=torch.float64)
    allowed = tolerance.atol + tolerance.rtol * reference.detach().double().abs()
    if magnitude is not None:
        roundoff = torch.finfo(reference.dtype).eps / 2
        allowed = allowed + SUM_ORDER_ROUNDINGS * roundoff * magnitude.detach().double().abs()
    return allowed


def compare(output: Result, expected: Expected) -> Comparison:
    """``output`` against ``expected``, output by output: same dtype and shape, each value
    within its allowance of the reference's (NaN where the reference has NaN, and only there; an
    infinity where it has the same one); an integer output (row indices) exactly."""
    outputs, references = tensors(output), expected.outputs
    if len(outputs) != len(references):
        return _unlike(f"{len(outputs)} outputs, expected {len(references)}")
    compared = [
        _compare(out, ref, allowed)
        for out, ref, allowed in zip(outputs, references, expected.allowed, strict=True)
    ]
    worst = max((comparison.max_abs_error for comparison in compared), default=0.0)
    used = max((comparison.used for comparison in compared), default=0.0)
    for index, comparison in enumerate(compared):
        if not comparison.matches:
            reason = comparison.reason if len(compared) == 1 else f"output {index}: {comparison.reason}"
            return Comparison(False, worst, reason, used)
    return Comparison(True, worst, used=used)


def _unlike(reason: str) -> Comparison:
    """An output of another kind than the reference's: no error to measure, infinitely wrong."""
    return Comparison(False, math.inf, reason, math.inf)


def _compare(output: torch.Tensor, reference: torch.Tensor, allowed: torch.Tensor) -> Comparison:
    if output.dtype != reference.dtype:
        return _unlike(f"dtype {output.dtype}, expected {reference.dtype}")
    if output.shape != reference.shape:
        return _unlike(f"shape {tuple(output.shape)}, expected {tuple(reference.shape)}")
    if output.numel() == 0:
        return Comparison(True, 0.0)
    if not reference.is_floating_point():  # indices: exactly, or they name other rows
        worst = float((output.double() - reference.double()).abs().max())
        reason = None if worst == 0 else f"differs from the reference by {worst:.0f}"
        return Comparison(worst == 0, worst, reason, 0.0 if worst == 0 else math.inf)
    error = (output.double() - reference.double()).abs()
    agreed = (output == reference) | (output.isnan() & reference.isnan())
    worst = float(error.masked_fill(agreed, 0).nan_to_num(nan=math.inf).max())
    used = float((error / allowed).masked_fill(agreed, 0).nan_to_num(nan=math.inf).max())
    matches = used <= 1
    return Comparison(matches, worst, None if matches else f"max abs error {worst:.3g}", used)


def fingerprint_weights(numel: int, seed: int) -> torch.Tensor:
    """Weights in [-1, 1) drawn from ``seed``: an output that differs from the reference in
    any element moves the weighted sum, whatever the candidate knows in advance."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(numel, generator=generator, dtype=torch.float64) * 2 - 1


def _flat(result: Result) -> torch.Tensor:
    """Every element of every output, in order, as one float64 vector."""
    return torch.cat([tensor.detach().reshape(-1).double() for tensor in tensors(result)])


def fingerprint(result: Result, seed: int) -> float:
    """The weighted sum of every element of every output, in float64 (NaN if any is NaN)."""
    flat = _flat(result)
    return float((flat * fingerprint_weights(flat.numel(), seed)).sum())


def fingerprint_matches(value: float, expected: Expected, seed: int) -> bool:
    """Whether ``value`` can be the fingerprint of an output within ``expected``'s allowance:
    ``|sum w (out - ref)| <= sum |w| allowed`` over its elements (an integer one allows none),
    so a correct output always passes, and one wrong by more than that weighted allowance almost
    never does. A small error in a few elements of a large output can hide under it: the last
    timed output and every correctness trial are compared in full."""
    flat = _flat(expected.outputs)
    weights = fingerprint_weights(flat.numel(), seed)
    reference = float((flat * weights).sum())
    if reference != reference or value != value:
        return reference != reference and value != value
    allowed = torch.cat([tensor.reshape(-1) for tensor in expected.allowed])
    bound = float((weights.abs() * allowed).sum())
    return abs(value - reference) <= bound * (1 + 1e-9) + 1e-12
