"""The triton target: every operator's kernels, at their default and at other points of their
search spaces, match the reference in Triton's interpreter (on CPU tensors, no GPU needed) over
the correctness shapes (empty bags, odd and empty sizes), and compile for a real GPU (sm_90,
through Triton's own compiler and ptxas, still without one); a candidate passes the evaluator
end to end, checked for correctness and never timed.

The interpreter takes effect only where ``TRITON_INTERPRET`` is set before triton is first
imported (``triton.language``'s own helpers are jit functions too), and this process has
imported it already, without: so the kernels run in a fresh Python, all cases in one, which
reports a result per case (``python this_file.py MODE DIRECTORY SHARE SHARES``). The cases are
split among as many such Pythons as the machine has cores, run side by side: the interpreter
runs one program at a time on one core, and takes minutes for them all.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from unittest import mock

import pytest
import torch

from rea.kernels import Candidate, ParamValue
from rea_kernel import checks, evaluator
from rea_kernel.operators import OPERATORS, Operator, Shape, get_operator
from rea_kernel.sandbox import Limits, Verdict
from rea_kernel.targets import TargetUnavailableError
from rea_kernel.targets.triton import TritonTarget

triton = pytest.importorskip("triton", reason="the triton target needs the triton package")
TRITON = TritonTarget()
Mode = Literal["interpret", "compile"]


@dataclass(frozen=True)
class Case:
    """An operator's kernel at its default point, moved to ``overrides``."""

    operator: str
    overrides: dict[str, ParamValue] = field(default_factory=dict)

    @property
    def id(self) -> str:
        moved = "-".join(f"{name}={value}" for name, value in self.overrides.items())
        return f"{self.operator}-{moved or 'default'}"

    def candidate(self) -> Candidate:
        return TRITON.render(self.operator, {**TRITON.default_params(self.operator), **self.overrides})


# Beside each default: the other algorithms, other block sizes and launch options. Blocks stay
# large enough that the interpreter, which runs one program at a time, finishes quickly.
CASES = (
    Case("embedding_bag_pooled"),
    Case("embedding_bag_pooled", {"grid": "bag_tables", "BLOCK_D": 16, "BLOCK_T": 8, "num_warps": 2}),
    Case("embedding_bag_pooled", {"BLOCK_D": 16, "BLOCK_L": 1, "num_stages": 1}),
    Case("embedding_bag_pooled_backward"),
    Case("embedding_bag_pooled_backward", {"scatter": "atomic", "BLOCK_D": 16, "num_warps": 1}),
    Case("embedding_bag_pooled_sparse_backward"),
    Case(
        "embedding_bag_pooled_sparse_backward", {"grid": "row", "BLOCK_D": 16, "BLOCK_L": 4, "num_warps": 2}
    ),
    Case("dcn_cross"),
    Case(
        "dcn_cross", {"low_rank": "fused", "BLOCK_M": 16, "BLOCK_N": 64, "GROUP_M": 1, "precision": "tf32x3"}
    ),
    Case("dcn_cross_stack"),
    Case("dcn_cross_stack", {"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 16, "precision": "tf32x3"}),
    Case("dcn_cross_backward"),
    Case("dcn_cross_backward", {"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 16, "BLOCK_C": 32}),
    Case("linear_bias_act"),
    Case(
        "linear_bias_act", {"BLOCK_M": 64, "BLOCK_N": 16, "BLOCK_K": 64, "GROUP_M": 4, "precision": "tf32x3"}
    ),
    Case("fm_interaction"),
    Case("fm_interaction", {"BLOCK_B": 64, "BLOCK_F": 1, "BLOCK_D": 16}),
    Case("fm_interaction", {"BLOCK_B": 4, "BLOCK_F": 32, "BLOCK_D": 64, "num_warps": 1}),
    Case("fm_interaction_backward"),
    Case("fm_interaction_backward", {"BLOCK_B": 1, "BLOCK_F": 4, "BLOCK_D": 16}),
    Case("linear_bias_act_backward"),
    Case("linear_bias_act_backward", {"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 16, "BLOCK_C": 32}),
    Case("layer_norm"),
    Case("layer_norm", {"stats": "one_pass", "BLOCK_D": 128, "BLOCK_R": 2}),
    Case("layer_norm", {"row": "whole", "BLOCK_R": 8}),
    Case("layer_norm", {"row": "whole", "stats": "one_pass", "BLOCK_R": 4, "num_warps": 8}),
    Case("layer_norm_backward"),
    Case("layer_norm_backward", {"BLOCK_R": 4, "BLOCK_C": 32, "num_warps": 1}),
    Case("bce_with_logits"),
    Case("bce_with_logits", {"reduction": "atomic", "BLOCK": 256, "CHUNKS": 4}),
    Case("bce_with_logits_backward"),
    Case("bce_with_logits_backward", {"BLOCK": 256, "num_warps": 1}),
)


# the child's side: run or compile every case, in a fresh Python -------------------------


def load(candidate: Candidate, directory: Path) -> Callable[..., torch.Tensor]:
    """The candidate's run(), imported from its kernel.py written into ``directory``."""
    directory.mkdir(parents=True)
    path = directory / "kernel.py"
    path.write_text(candidate.sources["kernel.py"])
    spec = importlib.util.spec_from_file_location(f"triton_candidate_{candidate.digest}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    run: Callable[..., torch.Tensor] = module.run
    return run


def interpreter_shapes(operator: Operator[Any]) -> list[Shape]:
    """The operator's correctness shapes, except that the 26-table embedding shapes keep 9 of
    their 33 and 257 examples: the interpreter takes milliseconds per program, and the default
    grid has one per bag (6682 of them at 257 examples: a minute)."""
    return [
        shape.model_copy(update={"batch": 9}) if getattr(shape, "tables", 0) > 20 else shape
        for shape in operator.correctness_shapes
    ]


def mismatch_in_the_interpreter(case: Case, directory: Path) -> str | None:
    """What is wrong with the case's outputs over the shapes (None: nothing)."""
    operator = get_operator(case.operator)
    run = load(case.candidate(), directory)
    for seed, shape in enumerate(interpreter_shapes(operator)):
        inputs = operator.make_inputs(shape, torch.float32, torch.Generator().manual_seed(seed))
        originals = [tensor.clone() for tensor in inputs]
        attributes = operator.attributes(shape)
        output = run(*inputs, **attributes)
        expected = checks.expected_of(operator, originals, attributes, torch.float32)
        comparison = checks.compare(output, expected)
        problem = checks.output_problem(output, "cpu", inputs, operator.outputs(shape)) or comparison.reason
        if not all(map(torch.equal, inputs, originals)):
            problem = problem or "modified an input"
        if problem:
            return f"{problem} on {shape}"
    return None


def failure_to_compile_for_a_gpu(case: Case, directory: Path) -> str | None:
    """Loads the kernel as on a GPU machine (the interpreter off) and compiles every launch
    run() makes, with the signature Triton would specialise on, for an sm_90 GPU."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction, mangle_type

    compiled: list[str] = []

    def compile_launch(kernel: Any, *args: Any, grid: Any, warmup: bool, **kwargs: Any) -> None:
        options = {key: kwargs.pop(key) for key in ("num_warps", "num_stages") if key in kwargs}
        bound = inspect.signature(kernel.fn).bind(*args, **kwargs).arguments
        constexprs = {param.name: bound[param.name] for param in kernel.params if param.is_constexpr}
        types = {
            name: "constexpr" if name in constexprs else mangle_type(value) for name, value in bound.items()
        }
        triton.compile(
            ASTSource(kernel, types, constexprs), target=GPUTarget("cuda", 90, 32), options=options
        )
        compiled.append(kernel.__name__)

    operator = get_operator(case.operator)
    shape = operator.correctness_shapes[1]
    inputs = operator.make_inputs(shape, torch.float32, torch.Generator().manual_seed(0))
    with (
        mock.patch.object(torch.cuda, "is_available", return_value=True),
        mock.patch.object(JITFunction, "run", compile_launch),
    ):
        load(case.candidate(), directory)(*inputs, **operator.attributes(shape))
    return None if compiled else "run() launched no kernel"


def check_cases(mode: Mode, directory: Path, share: int, shares: int) -> None:
    """The child: the problem (None if none) of every ``shares``-th case from ``share`` on, as
    results.json in ``directory``."""
    check = mismatch_in_the_interpreter if mode == "interpret" else failure_to_compile_for_a_gpu
    directory.mkdir(parents=True, exist_ok=True)
    results: dict[str, str | None] = {}
    for case in CASES[share::shares]:
        try:
            results[case.id] = check(case, directory / case.id)
        except Exception as error:  # one case's failure is its own, not the others'
            results[case.id] = f"{type(error).__name__}: {error}"[:2000]
    (directory / "results.json").write_text(json.dumps(results))


# the tests ------------------------------------------------------------------------------


def in_fresh_pythons(mode: Mode, directory: Path) -> dict[str, str | None]:
    """Every case's result, from one fresh Python per core, each checking its share."""
    environment = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    if mode == "interpret":
        environment["TRITON_INTERPRET"] = "1"
    environment["TRITON_CACHE_DIR"] = str(directory / "triton-cache")
    shares = max(1, min(len(os.sched_getaffinity(0)), 4))
    children = [
        subprocess.Popen(
            [sys.executable, __file__, mode, str(directory / str(share)), str(share), str(shares)],
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for share in range(shares)
    ]
    results: dict[str, str | None] = {}
    try:
        for share, child in enumerate(children):
            _, errors = child.communicate(timeout=300)
            assert child.returncode == 0, errors[-3000:]
            results |= json.loads((directory / str(share) / "results.json").read_text())
    finally:
        for child in children:
            child.kill()
            child.wait()
    assert set(results) == {case.id for case in CASES}
    return results


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str | None]:
    return in_fresh_pythons("interpret", tmp_path_factory.mktemp("interpreted"))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str | None]:
    pytest.importorskip("triton.backends.nvidia", reason="this triton has no NVIDIA backend")
    return in_fresh_pythons("compile", tmp_path_factory.mktemp("compiled"))


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_kernels_match_the_reference_in_the_interpreter(
    case: Case, interpreted: dict[str, str | None]
) -> None:
    assert interpreted[case.id] is None, interpreted[case.id]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_kernels_compile_for_a_gpu(case: Case, compiled: dict[str, str | None]) -> None:
    """The interpreter runs code the compiler rejects (Python on tensors, shapes that are not
    constexpr); every launch must also compile, through ptxas, to a cubin."""
    assert compiled[case.id] is None, compiled[case.id]


def test_the_target_offers_a_plain_search_space_for_every_operator() -> None:
    assert set(TRITON.operators()) == set(OPERATORS)
    for name in OPERATORS:
        space = TRITON.search_space(name)
        assert {"num_warps", "num_stages"} <= set(space)
        assert all(choices and len(set(choices)) == len(choices) for choices in space.values())
        first = TRITON.render(name, TRITON.default_params(name))
        assert first == TRITON.render(name, TRITON.default_params(name))  # rendering is pure
        assert set(first.sources) == {"kernel.py"} and first.target == "triton"
        source = first.sources["kernel.py"]
        assert source.index('os.environ["TRITON_INTERPRET"] = "1"') < source.index("import triton")


def test_without_a_gpu_the_target_interprets_and_must_not_be_timed() -> None:
    assert TRITON.unavailable() is None
    if torch.cuda.is_available():
        assert TRITON.device == "cuda" and TRITON.times_kernels()
        assert torch.cuda.get_device_name() in TRITON.device_name()
    else:
        assert TRITON.device == "cpu" and not TRITON.times_kernels()
        assert "interpreter" in TRITON.device_name() and "correctness only" in TRITON.device_name()


def test_rendering_refuses_parameters_outside_the_space() -> None:
    params = TRITON.default_params("layer_norm")
    with pytest.raises(ValueError, match="BLOCK_R"):
        TRITON.render("layer_norm", {**params, "BLOCK_R": 3})
    with pytest.raises(ValueError, match="takes parameters"):
        TRITON.render("layer_norm", {**params, "BLOCK_L": 8})


def test_a_parameter_the_chosen_algorithm_ignores_does_not_change_the_kernel() -> None:
    """Tables per program only matter to the bag_tables grid: elsewhere they render the same
    candidate, which a search need not evaluate twice."""
    default = Case("embedding_bag_pooled").candidate().digest
    assert Case("embedding_bag_pooled", {"BLOCK_T": 16}).candidate().digest == default
    bag_tables = Case("embedding_bag_pooled", {"grid": "bag_tables"}).candidate().digest
    assert bag_tables != default
    assert (
        Case("embedding_bag_pooled", {"grid": "bag_tables", "BLOCK_T": 16}).candidate().digest != bag_tables
    )


def test_build_checks_that_the_source_is_python(tmp_path: Path) -> None:
    good = Case("layer_norm").candidate()
    assert TRITON.build(good, tmp_path, tmp_path / "cache", Limits()) is None
    broken = good.model_copy(update={"sources": {"kernel.py": "def run(:\n"}})
    failure = TRITON.build(broken, tmp_path, tmp_path / "cache", Limits())
    assert (
        failure is not None and failure.verdict is Verdict.REJECTED and "not valid Python" in failure.reason
    )


def test_a_missing_triton_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    candidate = Case("layer_norm").candidate()
    monkeypatch.setitem(sys.modules, "triton", None)  # importing it now fails, as when it is absent
    assert "importing it failed" in str(TRITON.unavailable())
    with pytest.raises(TargetUnavailableError, match="triton package"):
        TRITON.build(candidate, tmp_path, tmp_path / "cache", Limits())


@pytest.mark.skipif(
    TRITON.times_kernels(),
    reason="end to end in the interpreter; on a GPU the harness's guard refuses Triton's compiler (ptxas)",
)
def test_a_candidate_passes_the_evaluator_checked_but_never_timed(tmp_path: Path) -> None:
    """In the sandboxed, guarded child and its scrubbed environment, kernel.py turns the
    interpreter on by itself; the evaluator times nothing, though the operator has benchmark
    shapes."""
    assert isinstance(evaluator.get_target("triton"), TritonTarget)
    operator = get_operator("layer_norm")
    settings = evaluator.Settings(
        trials=2,
        correctness_shapes=tuple(shape.model_dump() for shape in operator.correctness_shapes[:4]),
        cache_dir=tmp_path / "cache",
        limits=Limits(wall_seconds=120),
    )
    evaluation = evaluator.evaluate(Case("layer_norm", {"stats": "one_pass"}).candidate(), operator, settings)
    assert evaluation.verdict is Verdict.PASSED, evaluation.reason
    assert len(evaluation.correctness) == 8 and all(check.passed for check in evaluation.correctness)
    assert evaluation.timings == [] and "not timed" in evaluation.reason
    assert evaluation.device == TRITON.device_name()


if __name__ == "__main__":
    mode: Mode = "compile" if sys.argv[1] == "compile" else "interpret"
    check_cases(mode, Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
