"""The correctness check on long sums: what it lets through and what it keeps out.

A fixed tolerance right at one batch size rejects correct kernels at a larger one, because
float32's rounding error grows with a sum's length; the check allows, per element, a few units
of roundoff times the sum of its terms' magnitudes (``Operator.magnitude``). These tests hold it
to both sides: the best possible answer and another float32 summation order pass, answers
computed in bfloat16 or float16, or missing one term, fail. ``python -m rea_bench.tolerance``
measures the same on the `cpu` templates' kernels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rea_bench.tolerance import LONG_SUMS, exact, main, measure, rounded
from rea_kernel import checks
from rea_kernel.evaluator import Settings, evaluate
from rea_kernel.operators import OPERATORS, Operator, get_operator
from rea_kernel.targets import get_target

from .test_kernel_operators import inputs_for

SUMMING = sorted(
    name for name, operator in OPERATORS.items() if type(operator).magnitude is not Operator.magnitude
)
CASES = {case: (name, fields) for case, name, fields in LONG_SUMS}


def test_the_operators_with_long_sums_give_their_magnitudes() -> None:
    assert SUMMING == [
        "dcn_cross_backward",
        "embedding_bag_pooled",
        "embedding_bag_pooled_backward",
        "embedding_bag_pooled_sparse_backward",
        "fm_interaction_backward",
        "layer_norm_backward",
        "linear_bias_act_backward",
    ]


@pytest.mark.parametrize("name", SUMMING)
def test_a_magnitude_has_its_outputs_shapes_and_bounds_them(name: str) -> None:
    """Each output's magnitude is the sum of its terms' absolute values, so (by the triangle
    inequality) at least the output's own absolute value; or all zero, for an output whose sums
    the tolerance alone covers."""
    operator = get_operator(name)
    for seed, shape in enumerate(operator.correctness_shapes):
        inputs = operator.make_inputs(shape, torch.float32, torch.Generator().manual_seed(seed))
        attributes = operator.attributes(shape)
        outputs = checks.tensors(operator.reference(*inputs, **attributes))
        magnitude = operator.magnitude(*inputs, **attributes)
        assert magnitude is not None
        magnitudes = checks.tensors(magnitude)
        assert len(magnitudes) == len(outputs)
        for output, size in zip(outputs, magnitudes, strict=True):
            assert size.shape == output.shape, shape
            if not output.is_floating_point() or not size.any():
                continue
            assert (size >= 0).all()
            assert (output.abs() <= size * (1 + 1e-4) + 1e-6).all(), shape


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_the_exact_answer_passes_on_every_correctness_shape(name: str) -> None:
    """The float64 result rounded to float32 is the best answer a kernel can give: the check
    must let it through wherever the float32 reference's own rounding lands."""
    operator = get_operator(name)
    answer = exact(operator)
    for seed, shape in enumerate(operator.correctness_shapes):
        inputs = operator.make_inputs(shape, torch.float32, torch.Generator().manual_seed(seed))
        attributes = operator.attributes(shape)
        comparison = checks.compare(
            answer(inputs, attributes), checks.expected_of(operator, inputs, attributes, torch.float32)
        )
        assert comparison.matches, (shape, comparison.reason)


@pytest.mark.parametrize("case", sorted(CASES))
def test_on_long_sums_exact_answers_pass_and_bfloat16_and_float16_fail(case: str) -> None:
    name, fields = CASES[case]
    operator = get_operator(name)
    answers = {
        "exact": [exact(operator)],
        "bfloat16": [rounded(operator, torch.bfloat16)],
        "float16": [rounded(operator, torch.float16)],
    }

    fractions = measure(name, fields, answers, seeds=1)

    assert fractions["exact"][1] < 0.5
    assert fractions["bfloat16"][1] > 4
    assert fractions["float16"][1] > 1


def test_the_fixed_tolerance_alone_rejected_exact_answers_on_hot_rows() -> None:
    """What the allowance is for: an embedding row looked up in thousands of bags sums thousands
    of gradients, and the reference's own float32 rounding is past the fixed tolerance."""
    name, fields = CASES["lookup backward: 10-row tables, 8,192 bags"]
    fractions = measure(name, fields, {"exact": [exact(get_operator(name))]}, seeds=1)

    assert fractions["exact"][0] > 5 and fractions["exact"][1] < 0.5


def test_a_dense_backward_summed_row_after_row_passes_and_one_missing_row_fails() -> None:
    """At 24,000 rows: the weight's gradient added up one row at a time in float32 (the order
    furthest from PyTorch's blocked product) passes; the same without the last row does not."""
    operator = get_operator("linear_bias_act_backward")
    name, fields = CASES["dense backward: 24,000 rows, 600 in, 9 out"]
    assert name == operator.name
    inputs = inputs_for(operator, fields, seed=5)
    grad_output, x, weight, output = inputs
    attributes = {"activation": fields["activation"]}
    expected = checks.expected_of(operator, inputs, attributes, torch.float32)
    grad_x, _, grad_b = expected.outputs
    row_by_row = torch.zeros(weight.shape)
    for g, row in zip(grad_output, x, strict=True):
        row_by_row += torch.outer(g, row)

    summed = checks.compare((grad_x, row_by_row, grad_b), expected)
    assert summed.matches and 0 < summed.used < 0.5
    short = operator.reference(grad_output[:-1], x[:-1], weight, output[:-1], **attributes)
    missing = checks.compare((grad_x, short[1], grad_b), expected)
    assert not missing.matches and missing.reason is not None and missing.reason.startswith("output 1")
    assert missing.used > 4
    for seed in range(3):  # the timed runs' check: the honest sum passes it too
        honest = checks.fingerprint((grad_x, row_by_row, grad_b), seed)
        assert checks.fingerprint_matches(honest, expected, seed)


def test_the_evaluator_passes_the_dense_backwards_template_at_a_large_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """262,144 rows: sandboxed, checked and timed as a search would, the template's kernel (its
    weight gradient summed in another order than PyTorch's) passes; with the fixed tolerance
    alone, as before, the same evaluation judged it incorrect."""
    cpu = get_target("cpu")
    name, fields = CASES["dense backward: 262,144 rows, 64 in, 4 out, relu"]
    settings = Settings(
        trials=2, repeats=3, warmup=1, time_compiled_reference=False, benchmark_shapes=(fields,)
    )
    candidate = cpu.render(name, cpu.default_params(name))

    evaluation = evaluate(candidate, name, settings)

    assert evaluation.passed, evaluation.reason
    assert evaluation.timings and evaluation.timings[0].shape == fields
    used = [check.allowance_used for check in evaluation.correctness if check.allowance_used is not None]
    assert len(used) == len(evaluation.correctness) and all(0 <= fraction <= 1 for fraction in used)
    assert f"(worst error {max(used):.2g} of the allowed)" in evaluation.reason
    monkeypatch.setattr(type(get_operator(name)), "magnitude", Operator.magnitude)
    fixed = evaluate(candidate, name, settings)
    assert not fixed.passed and fixed.reason.startswith("incorrect"), fixed.reason


def test_the_benchmark_prints_its_table_and_writes_its_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    written = tmp_path / "rows.json"

    main(["--seeds", "1", "--only", "FM backward", "--json", str(written)])

    printed = capsys.readouterr().out
    assert "FM backward: 512 fields" in printed and "templates" in printed
    (row,) = json.loads(written.read_text())
    assert row["operator"] == "fm_interaction_backward"
    assert row["fractions"]["templates"][1] < 1 < row["fractions"]["bfloat16"][1]
    with pytest.raises(SystemExit, match="no case"):
        main(["--only", "no such case"])


def test_the_benchmark_runs_the_triton_templates_in_the_interpreter_without_a_gpu(tmp_path: Path) -> None:
    """In a fresh Python: the interpreter must be asked for before triton is first imported, and
    this process may have imported it already."""
    pytest.importorskip("triton", reason="the triton target needs the triton package")
    written = tmp_path / "rows.json"
    command = [sys.executable, "-m", "rea_bench.tolerance", "--target", "triton", "--only", "FM backward"]
    environment = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}

    done = subprocess.run(
        [*command, "--seeds", "1", "--json", str(written)],
        capture_output=True,
        text=True,
        env=environment | {"TRITON_CACHE_DIR": str(tmp_path / "cache")},
        check=False,
        timeout=300,
    )

    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "triton-interpreter" in done.stdout
    (row,) = json.loads(written.read_text())
    assert row["fractions"]["templates"][1] < 1 < row["fractions"]["float16"][1]
