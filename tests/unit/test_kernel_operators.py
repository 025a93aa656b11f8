"""The operator suite and the cpu target: each reference against an independent formulation
(in float64, by a different route), the shape spaces, and for every operator a cpu candidate
that passes the full evaluation."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from rea.kernels import Candidate
from rea_kernel.evaluator import Settings, evaluate
from rea_kernel.operators import OPERATORS, Operator, Result, get_operator
from rea_kernel.sandbox import Limits, Verdict
from rea_kernel.targets import CpuTarget, TargetUnavailableError, get_target

CPU = get_target("cpu")
needs_compiler = pytest.mark.skipif(CPU.unavailable() is not None, reason=str(CPU.unavailable()))


def inputs_for(operator: Operator[Any], shape: dict[str, Any], seed: int = 0) -> tuple[torch.Tensor, ...]:
    return operator.make_inputs(
        operator.parse_shape(shape), torch.float32, torch.Generator().manual_seed(seed)
    )


def single(result: Result) -> torch.Tensor:
    """A forward operator's result: one tensor."""
    assert isinstance(result, torch.Tensor)
    return result


def as_double(inputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    return [tensor.double() if tensor.is_floating_point() else tensor for tensor in inputs]


def pooled_by_loops(inputs: tuple[torch.Tensor, ...], mode: str) -> torch.Tensor:
    """Bag by bag, row by row: the definition, with no embedding_bag in sight."""
    weights, table_offsets, indices, offsets = as_double(inputs)
    tables = table_offsets.numel() - 1
    batch = (offsets.numel() - 1) // tables
    dim = weights.shape[1]
    out = torch.zeros(batch, tables * dim, dtype=torch.float64)
    for table in range(tables):
        for example in range(batch):
            bag = table * batch + example
            ids = indices[int(offsets[bag]) : int(offsets[bag + 1])].tolist()
            rows = [weights[int(table_offsets[table]) + row] for row in ids]
            if rows:
                pooled = torch.stack(rows).sum(0)
                out[example, table * dim : (table + 1) * dim] = (
                    pooled / len(rows) if mode == "mean" else pooled
                )
    return out


def weight_gradient_by_loops(inputs: tuple[torch.Tensor, ...], mode: str) -> torch.Tensor:
    """Each bag's output gradient added to each of its rows, one by one: the chain rule by hand."""
    grad_output, table_offsets, indices, offsets = as_double(inputs)
    tables = table_offsets.numel() - 1
    batch = grad_output.shape[0]
    dim = grad_output.shape[1] // tables
    grad = torch.zeros(int(table_offsets[-1]), dim, dtype=torch.float64)
    for table in range(tables):
        for example in range(batch):
            bag = table * batch + example
            ids = indices[int(offsets[bag]) : int(offsets[bag + 1])].tolist()
            for row in ids:
                share = grad_output[example, table * dim : (table + 1) * dim]
                grad[int(table_offsets[table]) + row] += share / len(ids) if mode == "mean" else share
    return grad


def cross_with_explicit_weight(inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    if len(inputs) == 4:
        x0, x, weight, bias = as_double(inputs)
    else:
        x0, x, u, v, bias = as_double(inputs)
        weight = u @ v
    return x0 * (x @ weight.T + bias) + x


def stack_layer_by_layer(inputs: tuple[torch.Tensor, ...], layers: int) -> torch.Tensor:
    """Each cross layer of a stack with its explicit weight, in float64."""
    x0, weights = inputs[0], inputs[1:]
    per_layer = len(weights) // layers
    x = x0.double()
    for layer in range(layers):
        own = weights[layer * per_layer : (layer + 1) * per_layer]
        x = cross_with_explicit_weight((x0, x, *own))
    return x


def dense_by_definition(inputs: tuple[torch.Tensor, ...], activation: str) -> torch.Tensor:
    x, weight, bias = as_double(inputs)
    out = x @ weight.T + bias
    if activation == "relu":
        return out.clamp(min=0)
    if activation == "gelu":
        return 0.5 * out * (1 + torch.special.erf(out / math.sqrt(2)))
    return out


def fm_by_pairs(inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    (embeddings,) = as_double(inputs)
    fields = embeddings.shape[1]
    total = torch.zeros(embeddings.shape[0], 1, dtype=torch.float64)
    for i in range(fields):
        for j in range(i + 1, fields):
            total[:, 0] += (embeddings[:, i] * embeddings[:, j]).sum(1)
    return total


def fm_gradient_by_pairs(inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Each field's gradient as the sum of its partners' embeddings, pair by pair."""
    grad_output, embeddings = as_double(inputs)
    fields = embeddings.shape[1]
    grad = torch.zeros_like(embeddings)
    for i in range(fields):
        for j in range(fields):
            if i != j:
                grad[:, i] += grad_output * embeddings[:, j]
    return grad


def layer_norm_by_moments(inputs: tuple[torch.Tensor, ...], eps: float) -> torch.Tensor:
    x, weight, bias = as_double(inputs)
    mean = x.mean(1, keepdim=True)
    variance = ((x - mean) ** 2).mean(1, keepdim=True)
    return (x - mean) / torch.sqrt(variance + eps) * weight + bias


def bce_by_probabilities(inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    logits, targets = as_double(inputs)
    probability = torch.sigmoid(logits)
    return -(targets * torch.log(probability) + (1 - targets) * torch.log1p(-probability)).mean()


INDEPENDENT: list[tuple[str, dict[str, Any], Any]] = [
    (
        "embedding_bag_pooled",
        {"tables": 3, "rows": 9, "dim": 5, "batch": 6, "max_bag": 3, "mode": "sum"},
        None,
    ),
    (
        "embedding_bag_pooled",
        {"tables": 2, "rows": 7, "dim": 3, "batch": 8, "max_bag": 2, "mode": "mean"},
        None,
    ),
    (
        "embedding_bag_pooled",
        {"tables": 4, "rows": 5, "dim": 4, "batch": 3, "max_bag": 0, "mode": "mean"},
        None,
    ),
    (
        "embedding_bag_pooled_backward",
        {"tables": 3, "rows": 4, "dim": 5, "batch": 6, "max_bag": 3, "mode": "mean"},
        None,
    ),
    (
        "embedding_bag_pooled_backward",
        {"tables": 2, "rows": 3, "dim": 2, "batch": 7, "max_bag": 4, "mode": "sum"},
        None,
    ),
    ("dcn_cross", {"batch": 5, "dim": 11, "rank": 0}, None),
    ("dcn_cross", {"batch": 6, "dim": 13, "rank": 3}, None),
    ("dcn_cross_stack", {"batch": 5, "dim": 11, "rank": 0, "layers": 3}, None),
    ("dcn_cross_stack", {"batch": 6, "dim": 13, "rank": 3, "layers": 2}, None),
    ("linear_bias_act", {"batch": 4, "in_features": 9, "out_features": 7, "activation": "relu"}, None),
    ("linear_bias_act", {"batch": 3, "in_features": 17, "out_features": 5, "activation": "gelu"}, None),
    ("linear_bias_act", {"batch": 2, "in_features": 6, "out_features": 3, "activation": "none"}, None),
    ("fm_interaction", {"batch": 4, "fields": 6, "dim": 5}, None),
    ("fm_interaction_backward", {"batch": 5, "fields": 4, "dim": 3}, None),
    ("fm_interaction_backward", {"batch": 2, "fields": 1, "dim": 7}, None),
    ("layer_norm", {"rows": 5, "dim": 19}, None),
    ("bce_with_logits", {"n": 37}, None),
    ("bce_with_logits", {"n": 0}, None),
]


def independent(name: str, shape: dict[str, Any], inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    if name == "embedding_bag_pooled":
        return pooled_by_loops(inputs, shape["mode"])
    if name == "embedding_bag_pooled_backward":
        return weight_gradient_by_loops(inputs, shape["mode"])
    if name == "dcn_cross":
        return cross_with_explicit_weight(inputs)
    if name == "dcn_cross_stack":
        return stack_layer_by_layer(inputs, shape["layers"])
    if name == "linear_bias_act":
        return dense_by_definition(inputs, shape["activation"])
    if name == "fm_interaction":
        return fm_by_pairs(inputs)
    if name == "fm_interaction_backward":
        return fm_gradient_by_pairs(inputs)
    if name == "layer_norm":
        return layer_norm_by_moments(inputs, 1e-5)
    return bce_by_probabilities(inputs)


@pytest.mark.parametrize(("name", "shape", "_"), INDEPENDENT, ids=lambda value: str(value))
def test_reference_matches_an_independent_formulation(name: str, shape: dict[str, Any], _: object) -> None:
    operator = get_operator(name)
    inputs = inputs_for(operator, shape, seed=7)
    reference = single(operator.reference(*inputs, **operator.attributes(operator.parse_shape(shape))))
    expected = independent(name, shape, inputs)
    tolerance = operator.tolerance(torch.float32)
    assert reference.dtype == torch.float32 and reference.shape == expected.shape
    assert torch.allclose(
        reference.double(), expected, atol=tolerance.atol, rtol=tolerance.rtol, equal_nan=True
    )


def test_the_lookups_sparse_backward_is_its_dense_backward_at_the_rows_looked_up() -> None:
    """Rows come out once each and in order, exactly the rows some bag looked up (a row whose
    gradients cancel to zero is still listed), with the dense gradient's rows as values."""
    dense, sparse = (
        get_operator("embedding_bag_pooled_backward"),
        get_operator("embedding_bag_pooled_sparse_backward"),
    )
    for seed, shape in enumerate(sparse.correctness_shapes):
        inputs = inputs_for(sparse, shape.model_dump(), seed)
        _, table_offsets, indices, offsets = inputs
        attributes = sparse.attributes(shape)
        rows, values = sparse.reference(*inputs, **attributes)
        tables = table_offsets.numel() - 1
        per_table = offsets[:: shape.batch].diff() if shape.batch else torch.zeros(tables, dtype=torch.int64)
        looked_up = sorted(set((indices + table_offsets[:-1].repeat_interleave(per_table)).tolist()))
        assert rows.dtype == torch.int64 and rows.tolist() == looked_up
        expected = single(dense.reference(*inputs, **attributes))[rows]
        torch.testing.assert_close(values, expected, atol=1e-5, rtol=1e-5)


def test_the_lookups_backward_reference_is_autograd_of_its_forward() -> None:
    forward, backward = get_operator("embedding_bag_pooled"), get_operator("embedding_bag_pooled_backward")
    for seed, shape in enumerate(backward.correctness_shapes):
        grad_output, table_offsets, indices, offsets = inputs_for(backward, shape.model_dump(), seed)
        attributes = backward.attributes(shape)
        weight = torch.randn(int(table_offsets[-1]), shape.dim, requires_grad=True)
        pooled = single(forward.reference(weight, table_offsets, indices, offsets, **attributes))
        expected = torch.zeros_like(weight)
        if pooled.requires_grad:  # an empty batch pools to a constant
            (expected,) = torch.autograd.grad(pooled, weight, grad_output)
        got = backward.reference(grad_output, table_offsets, indices, offsets, **attributes)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["linear_bias_act_backward", "layer_norm_backward", "dcn_cross_backward"])
def test_the_dense_backward_references_are_autograd_of_their_forward_in_float64(name: str) -> None:
    """On every correctness shape: the forward's own inputs, drawn from the same seed (the
    backward's inputs begin with the output gradient, then the forward's first inputs), through
    autograd in float64; one gradient per forward input (a low-rank cross: five)."""
    backward, forward = get_operator(name), get_operator(name.removesuffix("_backward"))
    for seed, shape in enumerate(backward.correctness_shapes):
        backward_inputs = inputs_for(backward, shape.model_dump(), seed)
        forward_inputs = inputs_for(forward, shape.model_dump(), seed)
        assert all(map(torch.equal, backward_inputs[1:3], forward_inputs[:2]))
        leaves = [tensor.double().requires_grad_() for tensor in forward_inputs]
        attributes = backward.attributes(shape)
        output = forward.reference(*leaves, **attributes)
        expected = torch.autograd.grad(output, leaves, backward_inputs[0].double(), allow_unused=True)
        got = backward.reference(*backward_inputs, **attributes)
        tolerance = backward.tolerance(torch.float32)
        assert len(got) == len(expected) == backward.outputs(shape)
        for gradient, wanted, leaf in zip(got, expected, leaves, strict=True):
            wanted = torch.zeros_like(leaf) if wanted is None else wanted
            assert gradient.dtype == torch.float32 and gradient.shape == leaf.shape
            torch.testing.assert_close(gradient.double(), wanted, atol=tolerance.atol, rtol=tolerance.rtol)


def test_the_losss_backward_reference_is_autograd_of_its_forward_in_float64() -> None:
    """The logits' gradient only: the targets are labels (a training call whose targets need a
    gradient runs PyTorch)."""
    backward, forward = get_operator("bce_with_logits_backward"), get_operator("bce_with_logits")
    for seed, shape in enumerate(backward.correctness_shapes):
        grad_output, logits, targets = inputs_for(backward, shape.model_dump(), seed)
        assert all(map(torch.equal, (logits, targets), inputs_for(forward, shape.model_dump(), seed)))
        leaf = logits.double().requires_grad_()
        loss = single(forward.reference(leaf, targets.double()))
        (expected,) = torch.autograd.grad(loss, leaf, grad_output.double())
        got = single(backward.reference(grad_output, logits, targets))
        tolerance = backward.tolerance(torch.float32)
        assert got.dtype == torch.float32 and got.shape == logits.shape
        torch.testing.assert_close(got.double(), expected, atol=tolerance.atol, rtol=tolerance.rtol)


def test_embedding_shapes_produce_empty_bags_and_empty_bags_pool_to_zeros() -> None:
    operator = get_operator("embedding_bag_pooled")
    shape = {"tables": 3, "rows": 9, "dim": 5, "batch": 6, "max_bag": 3, "mode": "mean"}
    weights, table_offsets, indices, offsets = inputs_for(operator, shape, seed=1)
    lengths = (offsets[1:] - offsets[:-1]).view(3, 6)
    assert (lengths == 0).any() and (lengths > 0).any()
    out = single(operator.reference(weights, table_offsets, indices, offsets, mode="mean")).view(6, 3, 5)
    empty_tables, empty_examples = (lengths == 0).nonzero(as_tuple=True)
    assert (out[empty_examples, empty_tables] == 0).all()
    assert table_offsets.tolist() == [0, 9, 19, 30]  # unequal tables: table t has rows + t rows


@pytest.mark.parametrize("operator", OPERATORS.values(), ids=lambda operator: operator.name)
def test_inputs_are_a_function_of_the_seed(operator: Operator[Any]) -> None:
    shape = operator.correctness_shapes[1].model_dump()
    first, again, other = (
        inputs_for(operator, shape, 3),
        inputs_for(operator, shape, 3),
        inputs_for(operator, shape, 4),
    )
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    assert all(tensor.is_contiguous() for tensor in first)


@pytest.mark.parametrize("operator", OPERATORS.values(), ids=lambda operator: operator.name)
def test_shape_spaces_cover_the_awkward_cases(operator: Operator[Any]) -> None:
    sizes = [
        [value for value in shape.model_dump().values() if type(value) is int]
        for shape in operator.correctness_shapes
    ]
    assert any(0 in shape for shape in sizes), "an empty case"
    assert any(any(size % 2 and size > 1 for size in shape) for shape in sizes), "an odd size"
    assert any(any(size > 1 and size & (size - 1) for size in shape) for shape in sizes), "a non-power-of-two"
    assert operator.benchmark_shapes
    buckets = [operator.bucket(shape) for shape in operator.benchmark_shapes]
    assert len(set(buckets)) == len(buckets)


@pytest.mark.parametrize("operator", OPERATORS.values(), ids=lambda operator: operator.name)
def test_nearby_shapes_differ_but_stay_close(operator: Operator[Any]) -> None:
    rng = random.Random(0)
    for shape in operator.benchmark_shapes:
        nearby = operator.nearby_shape(shape, rng)
        assert nearby != shape
        for key, value in shape.model_dump().items():
            moved = nearby.model_dump()[key]
            assert (
                moved == value if type(value) is not int or value < 4 else 0.7 * value <= moved <= 1.4 * value
            )


def test_the_cpu_target_offers_a_search_space_for_every_operator() -> None:
    assert set(CPU.operators()) == set(OPERATORS)
    for name in OPERATORS:
        space = CPU.search_space(name)
        assert space and all(choices for choices in space.values())
        first = CPU.render(name, CPU.default_params(name))
        assert first == CPU.render(name, CPU.default_params(name))  # rendering is pure
        assert set(first.sources) == {"kernel.py", "kernel.cpp"} and first.target == "cpu"


def test_rendering_refuses_parameters_outside_the_space() -> None:
    params = CPU.default_params("layer_norm")
    with pytest.raises(ValueError, match="threads"):
        CPU.render("layer_norm", {**params, "threads": 3})
    with pytest.raises(ValueError, match="takes parameters"):
        CPU.render("layer_norm", {**params, "unroll": 2})


def test_candidates_are_plain_values_with_plain_file_names() -> None:
    candidate = CPU.render("bce_with_logits", CPU.default_params("bce_with_logits"))
    assert Candidate.model_validate_json(candidate.model_dump_json()) == candidate
    for name in ("../kernel.py", "sub/kernel.py", ".hidden"):
        with pytest.raises(ValueError, match="plain file name"):
            Candidate(operator="layer_norm", target="cpu", sources={"kernel.py": "", name: ""})


@needs_compiler
def test_builds_are_cached_by_source(tmp_path: Path) -> None:
    candidate = CPU.render("fm_interaction", CPU.default_params("fm_interaction"))
    limits = Limits(wall_seconds=60)
    built = []
    for attempt in ("first", "second"):
        directory = tmp_path / attempt
        directory.mkdir()
        for name, text in candidate.sources.items():
            (directory / name).write_text(text)
        assert CPU.build(candidate, directory, tmp_path / "cache", limits) is None
        built.append((directory / "kernel.so").read_bytes())
    cached = list((tmp_path / "cache").rglob("*.so"))
    assert len(cached) == 1 and built[0] == built[1] == cached[0].read_bytes()
    # the sandbox logs each process it runs beside its directory: the compiler ran once
    assert (tmp_path / "first.stderr").exists() and not (tmp_path / "second.stderr").exists()


def test_a_missing_compiler_is_a_clear_error(tmp_path: Path) -> None:
    target = CpuTarget(compiler="no-such-compiler-here")
    assert "not on PATH" in str(target.unavailable())
    candidate = target.render("layer_norm", target.default_params("layer_norm"))
    with pytest.raises(TargetUnavailableError, match="C\\+\\+ compiler"):
        target.build(candidate, tmp_path, tmp_path / "cache", Limits())


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kernel-cache")


@needs_compiler
@pytest.mark.parametrize(
    ("operator", "changes"),
    [
        ("linear_bias_act", {"loop_order": "dot", "accumulator": "double", "erf": "std"}),
        ("linear_bias_act", {"loop_order": "axpy", "simd": False}),
        ("linear_bias_act", {"micro_rows": 12, "micro_vectors": 4, "erf": "rational", "threads": 2}),
        ("dcn_cross", {"micro_rows": 4, "micro_vectors": 1}),
        ("dcn_cross", {"micro_vectors": 1, "fused_tiles": 4, "tile_order": "panels", "threads": 2}),
        ("dcn_cross", {"low_rank": "two_pass", "micro_rows": 12}),
        ("dcn_cross", {"loop_order": "axpy", "block_rows": 1, "block_cols": 16}),
        ("dcn_cross_stack", {"micro_vectors": 1, "fused_tiles": 4, "tile_order": "panels", "threads": 2}),
        ("dcn_cross_stack", {"micro_rows": 12, "micro_vectors": 2, "simd": False}),
        ("bce_with_logits", {"softplus": "polynomial", "vector_width": "512", "accumulator": "float"}),
        ("bce_with_logits", {"softplus": "std", "chunk": 256, "simd": False}),
        ("embedding_bag_pooled", {"loop": "per_table", "store": "cached"}),
        ("embedding_bag_pooled", {"loop": "batch_major", "chunk": 16, "threads": 2}),
        ("embedding_bag_pooled", {"loop": "table_bag", "prefetch_bags": 1, "unroll": 4}),
        ("embedding_bag_pooled", {"loop": "ranges", "prefetch_rows": 32, "threads": 8}),
        ("embedding_bag_pooled", {"loop": "ranges", "prefetch_rows": 0, "store": "cached"}),
        ("embedding_bag_pooled_sparse_backward", {"sort": "std", "schedule": "static"}),
        ("embedding_bag_pooled_sparse_backward", {"radix_bits": 11, "simd": False, "threads": 2}),
        ("embedding_bag_pooled_sparse_backward", {"radix_bits": 16, "threads": 8}),
        ("layer_norm", {"store": "streaming", "variance": "one_pass", "threads": 2}),
        ("dcn_cross_backward", {"micro_rows": 4, "micro_vectors": 1, "tile_order": "panels", "threads": 2}),
        ("dcn_cross_backward", {"micro_rows": 12, "accumulator": "double", "simd": False}),
        ("linear_bias_act_backward", {"micro_rows": 4, "micro_vectors": 1, "tile_order": "panels"}),
        ("linear_bias_act_backward", {"micro_rows": 12, "accumulator": "double", "threads": 2}),
        ("linear_bias_act_backward", {"algorithm": "one_pass", "accumulator": "double", "threads": 2}),
        ("linear_bias_act_backward", {"algorithm": "one_pass", "simd": False}),
        ("layer_norm_backward", {"variance": "one_pass", "accumulator": "double", "simd": False}),
        ("fm_interaction_backward", {"chunk": 16, "accumulator": "double", "threads": 2}),
        ("bce_with_logits_backward", {"exp": "std", "block": 1024, "simd": False, "threads": 2}),
        ("bce_with_logits_backward", {"vector_width": "512", "block": 16384}),
    ],
)
def test_the_templates_fast_paths_are_correct_on_every_shape(
    operator: str, changes: dict[str, Any], cache_dir: Path
) -> None:
    """The dense templates' loop orders and register tiles (row and column counts that leave
    partial tiles and panels, an empty batch, one row), the low-rank cross fused by blocks of
    rows (a partial last block, a rank over several panels) or in two passes, the dense
    backward's one pass over the rows (one to eight output columns, more falling back to the
    products), BCE's softplus and
    its backward's exp both ways, and the lookup's loops (ranges split over more threads than
    there are bags) and layer norm with streaming stores (rows of 17 and 3 floats are never
    aligned) or cached ones, through the whole correctness check."""
    settings = Settings(
        trials=2,
        warmup=1,
        repeats=1,
        time_compiled_reference=False,
        cache_dir=cache_dir,
        threads=1,
        benchmark_shapes=(OPERATORS[operator].correctness_shapes[0].model_dump(),),
        cache_flush_bytes=4 << 20,
    )
    candidate = CPU.render(operator, {**CPU.default_params(operator), **changes})
    evaluation = evaluate(candidate, operator, settings)
    assert evaluation.verdict is Verdict.PASSED, evaluation.reason
    assert all(check.passed for check in evaluation.correctness)


@needs_compiler
@pytest.mark.parametrize("operator", OPERATORS.values(), ids=lambda operator: operator.name)
def test_every_operator_has_a_cpu_candidate_that_passes(operator: Operator[Any], cache_dir: Path) -> None:
    """The first point of each search space, through the whole evaluation: every correctness
    shape (empty bags and odd sizes included) on fresh seeds, then timing on the largest one."""
    largest = operator.correctness_shapes[-1].model_dump()
    settings = Settings(
        trials=2,
        warmup=1,
        repeats=3,
        time_compiled_reference=False,
        cache_dir=cache_dir,
        cache_flush_bytes=4 << 20,
        threads=1,
        benchmark_shapes=(largest,),
        limits=Limits(wall_seconds=120),
    )
    evaluation = evaluate(CPU.render(operator.name, CPU.default_params(operator.name)), operator, settings)
    assert evaluation.verdict is Verdict.PASSED, evaluation.reason
    assert len(evaluation.correctness) == 2 * len(operator.correctness_shapes)
    assert all(check.passed for check in evaluation.correctness)
    [timing] = [timing for timing in evaluation.timings if timing.purpose == "benchmark"]
    assert timing.shape == largest
    assert timing.device == evaluation.device == CPU.device_name()
    assert timing.candidate_seconds > 0 and timing.eager_seconds > 0 and timing.compiled_seconds is None
    assert timing.threads == 1
    assert evaluation.cost == pytest.approx(timing.candidate_seconds)


class EmulatedCpu(CpuTarget):
    """A target that, like an interpreter, cannot time its kernels honestly."""

    def times_kernels(self) -> bool:
        return False

    def device_name(self) -> str:
        return "an emulator: correctness only"


@needs_compiler
def test_a_target_that_cannot_time_kernels_is_checked_but_never_timed(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("rea_kernel.evaluator.get_target", lambda name: EmulatedCpu())
    operator = get_operator("fm_interaction")
    settings = Settings(trials=2, cache_dir=cache_dir, threads=1, limits=Limits(wall_seconds=120))
    evaluation = evaluate(CPU.render(operator.name, CPU.default_params(operator.name)), operator, settings)
    assert evaluation.verdict is Verdict.PASSED, evaluation.reason
    assert evaluation.correctness and not evaluation.timings and evaluation.cost is None
    assert evaluation.reason.endswith("not timed (an emulator: correctness only)")
