"""The checks both sides of an evaluation share: what makes an output acceptable, and a
fingerprint that lets the evaluator check an output it never received in full.

The sandboxed child runs these on the candidate's outputs; the evaluator runs the same code on
the reference's, so the two sides cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rea_kernel.operators import Result, Tolerance


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


def compare(output: Result, reference: Result, tolerance: Tolerance) -> Comparison:
    """``output`` against ``reference``, output by output: same dtype and shape, values within
    ``tolerance`` (NaN where the reference has NaN, and only there); an integer output (row
    indices) exactly."""
    outputs, references = tensors(output), tensors(reference)
    if len(outputs) != len(references):
        return Comparison(False, float("inf"), f"{len(outputs)} outputs, expected {len(references)}")
    compared = [_compare(out, ref, tolerance) for out, ref in zip(outputs, references, strict=True)]
    worst = max((comparison.max_abs_error for comparison in compared), default=0.0)
    for index, comparison in enumerate(compared):
        if not comparison.matches:
            reason = comparison.reason if len(compared) == 1 else f"output {index}: {comparison.reason}"
            return Comparison(False, worst, reason)
    return Comparison(True, worst)


def _compare(output: torch.Tensor, reference: torch.Tensor, tolerance: Tolerance) -> Comparison:
    if output.dtype != reference.dtype:
        return Comparison(False, float("inf"), f"dtype {output.dtype}, expected {reference.dtype}")
    if output.shape != reference.shape:
        return Comparison(
            False, float("inf"), f"shape {tuple(output.shape)}, expected {tuple(reference.shape)}"
        )
    if output.numel() == 0:
        return Comparison(True, 0.0)
    if not reference.is_floating_point():  # indices: exactly, or they name other rows
        worst = float((output.double() - reference.double()).abs().max())
        reason = None if worst == 0 else f"differs from the reference by {worst:.0f}"
        return Comparison(worst == 0, worst, reason)
    error = (output.double() - reference.double()).abs()
    both_nan = output.isnan() & reference.isnan()
    worst = float(error.masked_fill(both_nan, 0).nan_to_num(nan=float("inf")).max())
    matches = torch.allclose(output, reference, atol=tolerance.atol, rtol=tolerance.rtol, equal_nan=True)
    return Comparison(matches, worst, None if matches else f"max abs error {worst:.3g}")


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


def fingerprint_matches(value: float, reference: Result, seed: int, tolerance: Tolerance) -> bool:
    """Whether ``value`` can be the fingerprint of an output within ``tolerance`` of
    ``reference``: ``|sum w (out - ref)| <= sum |w| (atol + rtol |ref|)`` over its float
    elements (an integer one allows none), so a correct output always passes and a wrong one
    almost never does."""
    flat = _flat(reference)
    weights = fingerprint_weights(flat.numel(), seed)
    expected = float((flat * weights).sum())
    if expected != expected or value != value:
        return expected != expected and value != value
    allowed = torch.cat(
        [
            tolerance.atol + tolerance.rtol * tensor.detach().reshape(-1).double().abs()
            if tensor.is_floating_point()
            else torch.zeros(tensor.numel(), dtype=torch.float64)
            for tensor in tensors(reference)
        ]
    )
    bound = float((weights.abs() * allowed).sum())
    return abs(value - expected) <= bound * (1 + 1e-9) + 1e-12
