"""How the evaluator's correctness check holds up on long sums: correct answers in, wrong ones out.

A weight's gradient sums over the batch, a hot embedding row over every bag that holds it, a
long bag over its ids. Float32's rounding error grows with such a sum, so a fixed tolerance
that was right at one batch size rejects correct kernels at a larger one (and the call stays on
PyTorch). The check allows, on top of the tolerance, a few units of roundoff times the sum of
the terms' magnitudes (:data:`rea_kernel.checks.SUM_ORDER_ROUNDINGS`). This benchmark measures,
per operator on shapes with long sums, the worst error of each kind of answer as a fraction of
what the check allows (at most 1 passes), against the float32 reference:

- ``exact``: the float64 result rounded to float32, the best answer a kernel can give;
- ``templates``: a target's template kernels (the default point and, where a rule picks
  another, that one), built and run here: `cpu` by default, `triton` on a GPU (in Triton's
  interpreter without one: slow at these sizes, so pick cases with ``--only``);
- ``bfloat16`` and ``float16``: the reference run on inputs rounded to 8 and 11 significant
  bits (a kernel that computes in bfloat16, or in TF32 as GPU matrix units do), which must fail.

Each with the fixed tolerance alone (``fixed``) and with the allowance for the sums.

    python -m rea_bench.tolerance
    python -m rea_bench.tolerance --no-kernels --seeds 5
    python -m rea_bench.tolerance --only lookup
    python -m rea_bench.tolerance --target triton
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from rich.progress import Progress

from rea_bench.output import console, print_header, print_table
from rea_kernel import checks
from rea_kernel.harness import Kernel
from rea_kernel.operators import Operator, Result, get_operator
from rea_kernel.sandbox import Limits
from rea_kernel.targets import TARGETS, Target, get_target

Answer = Callable[[Sequence[torch.Tensor], dict[str, Any]], Result]


def _bags(**fields: Any) -> dict[str, Any]:
    return {"dim": 16, "max_bag": 20, **fields}


LONG_SUMS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    (
        "dense backward: 24,000 rows, 600 in, 9 out",
        "linear_bias_act_backward",
        {"batch": 24000, "in_features": 600, "out_features": 9, "activation": "none"},
    ),
    (
        "dense backward: 262,144 rows, 64 in, 4 out, relu",
        "linear_bias_act_backward",
        {"batch": 262144, "in_features": 64, "out_features": 4, "activation": "relu"},
    ),
    ("cross backward: 65,536 rows, dim 64", "dcn_cross_backward", {"batch": 65536, "dim": 64}),
    (
        "cross backward: 65,536 rows, dim 64, rank 16",
        "dcn_cross_backward",
        {"batch": 65536, "dim": 64, "rank": 16},
    ),
    ("layer norm backward: 65,536 rows, dim 64", "layer_norm_backward", {"rows": 65536, "dim": 64}),
    ("layer norm backward: 1,048,576 rows, dim 16", "layer_norm_backward", {"rows": 1048576, "dim": 16}),
    (
        "lookup: bags of up to 2,000 ids",
        "embedding_bag_pooled",
        _bags(tables=2, rows=100, batch=64, max_bag=2000, mode="sum"),
    ),
    (
        "lookup backward: 10-row tables, 8,192 bags",
        "embedding_bag_pooled_backward",
        _bags(tables=2, rows=10, batch=8192, mode="sum"),
    ),
    (
        "lookup backward: 2 rows, 100,000 bags, mean",
        "embedding_bag_pooled_backward",
        _bags(tables=1, rows=2, batch=100000, mode="mean"),
    ),
    (
        "sparse lookup backward: 10-row tables",
        "embedding_bag_pooled_sparse_backward",
        _bags(tables=2, rows=10, batch=8192, mode="sum"),
    ),
    ("FM backward: 512 fields", "fm_interaction_backward", {"batch": 64, "fields": 512, "dim": 16}),
)
"""Shapes whose sums run from a few hundred terms (FM's 512 fields) to about half a million (a
table of two rows looked up 100,000 times in bags of up to 20 ids)."""


def worst(output: Result, expected: checks.Expected) -> float:
    """The largest ``|out - ref| / allowed`` over the outputs (at most 1 passes)."""
    return checks.compare(output, expected).used


def exact(operator: Operator) -> Answer:
    """The reference in float64, rounded to float32."""

    def answer(inputs: Sequence[torch.Tensor], attributes: dict[str, Any]) -> Result:
        wide = operator.reference(*(t.double() if t.is_floating_point() else t for t in inputs), **attributes)
        return tuple(t.float() if t.is_floating_point() else t for t in checks.tensors(wide))

    return answer


def rounded(operator: Operator, dtype: torch.dtype) -> Answer:
    """The reference on float inputs rounded to ``dtype`` (and back)."""

    def answer(inputs: Sequence[torch.Tensor], attributes: dict[str, Any]) -> Result:
        narrow = (t.to(dtype).float() if t.is_floating_point() else t for t in inputs)
        return operator.reference(*narrow, **attributes)

    return answer


def measure(
    name: str, fields: dict[str, Any], answers: dict[str, list[Answer]], seeds: int
) -> dict[str, tuple[float, float]]:
    """Per kind of answer, the worst fraction of the allowance any of its answers shows over
    ``seeds`` draws: (with the fixed tolerance, with the allowance for sums)."""
    operator = get_operator(name)
    shape = operator.parse_shape(fields)
    attributes = operator.attributes(shape)
    fractions = {label: (0.0, 0.0) for label, kind in answers.items() if kind}
    for seed in range(seeds):
        inputs = operator.make_inputs(shape, torch.float32, torch.Generator().manual_seed(seed))
        with_sums = checks.expected_of(operator, inputs, attributes, torch.float32)
        fixed = checks.expect(with_sums.outputs, operator.tolerance(torch.float32))
        for label, kind in answers.items():
            for answer in kind:
                output = answer(inputs, attributes)
                before = fractions[label]
                fractions[label] = (
                    max(before[0], worst(output, fixed)),
                    max(before[1], worst(output, with_sums)),
                )
    return fractions


def template_kernels(
    target: Target, name: str, fields: dict[str, Any], directory: Path, loaded: dict[str, Kernel]
) -> list[Answer]:
    """``target``'s default point for ``name`` and, where its rule picks another for ``fields``,
    that one, loaded into this process once each (``loaded``, by digest: a library this process
    has mapped is not written again)."""
    default = target.default_params(name)
    points = [default, {**default, **target.suggested_params(name, fields)}]
    answers: list[Answer] = []
    for point in points[: 1 if points[1] == default else 2]:
        candidate = target.render(name, point)
        if candidate.digest not in loaded:
            loaded[candidate.digest] = target.load(
                candidate,
                directory / candidate.digest,
                directory / "cache",
                Limits(),
                torch.get_num_threads(),
            )
        answers.append(_calling(loaded[candidate.digest], target.device))
    return answers


def _calling(kernel: Kernel, device: str) -> Answer:
    """``kernel`` on copies of the inputs on ``device``, its outputs brought back to the CPU."""

    def answer(inputs: Sequence[torch.Tensor], attributes: dict[str, Any]) -> Result:
        outputs = checks.tensors(kernel(*(tensor.to(device) for tensor in inputs), **attributes))
        return tuple(tensor.cpu() for tensor in outputs)

    return answer


def cell(fraction: float) -> str:
    return f"[green]{fraction:.3g}[/green]" if fraction <= 1 else f"[red]{fraction:.3g}[/red]"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m rea_bench.tolerance", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seeds", type=int, default=3, help="input draws per shape (worst taken)")
    parser.add_argument("--target", choices=list(TARGETS), default="cpu", help="whose template kernels")
    parser.add_argument("--no-kernels", action="store_true", help="skip the template kernels")
    parser.add_argument("--only", action="append", default=[], help="cases whose name or operator has this")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    cases = [
        (case, name, fields)
        for case, name, fields in LONG_SUMS
        if not args.only or any(part in case or part in name for part in args.only)
    ]
    if not cases:
        raise SystemExit(f"no case matches {args.only}")
    target = get_target(args.target)
    if target.name == "triton" and target.device == "cpu":
        # Its kernels run in Triton's interpreter here, which must be asked for before triton is
        # first imported (the target's availability check imports it).
        os.environ.setdefault("TRITON_INTERPRET", "1")
    unavailable = target.unavailable()
    if unavailable and not args.no_kernels:
        raise SystemExit(f"the {target.name} target cannot run here: {unavailable} (or pass --no-kernels)")
    kernels = not args.no_kernels
    print_header(
        "correctness check on long sums",
        {
            "seeds": args.seeds,
            "sum order roundings": checks.SUM_ORDER_ROUNDINGS,
            "templates": target.device_name() if kernels else "none",
        },
    )
    rows: list[dict[str, Any]] = []
    loaded: dict[str, Kernel] = {}
    with tempfile.TemporaryDirectory() as scratch, Progress(console=console, transient=True) as progress:
        task = progress.add_task("shapes", total=len(cases))
        for case, name, fields in cases:
            operator = get_operator(name)
            answers = {
                "exact": [exact(operator)],
                "templates": template_kernels(target, name, fields, Path(scratch), loaded) if kernels else [],
                "bfloat16": [rounded(operator, torch.bfloat16)],
                "float16": [rounded(operator, torch.float16)],
            }
            fractions = measure(name, fields, answers, args.seeds)
            rows.append({"case": case, "operator": name, "shape": fields, "fractions": fractions})
            progress.advance(task)
    shown = [("exact", True), ("exact", False), ("templates", True), ("templates", False)]
    shown += [("bfloat16", False), ("float16", False)]
    shown = [(kind, fixed) for kind, fixed in shown if all(kind in row["fractions"] for row in rows)]
    print_table(
        "worst error as a fraction of what the check allows (at most 1 passes)",
        ["long sum", *(f"{kind}{' (fixed)' if fixed else ''}" for kind, fixed in shown)],
        [
            [row["case"], *(cell(row["fractions"][kind][0 if fixed else 1]) for kind, fixed in shown)]
            for row in rows
        ],
        caption=(
            "(fixed): the operator's tolerance alone, as before; otherwise with "
            f"{checks.SUM_ORDER_ROUNDINGS} units of roundoff times each element's terms' magnitudes "
            "added. Exact answers and the templates' kernels must pass, the bfloat16 and float16 "
            "ones fail."
        ),
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
