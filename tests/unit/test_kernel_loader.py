"""Registry kernels in a trainer: the model reaches every operator through ``rea_workload.ops``;
with ``use_evolved_kernels`` it runs the registry's kernels for its device where they exist and
PyTorch elsewhere, and reports which ran; the metrics are the same within float tolerance."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from rea.kernels import Candidate, KernelEntry, Provenance, registry_key
from rea.workloads import JobInput, JobOutput
from rea_kernel.loader import RegistryKernels
from rea_kernel.operators import OPERATORS, dtype_name
from rea_kernel.targets import get_target
from rea_workload.ops import BACKWARDS, PYTORCH, Ops
from rea_workload.train import KERNEL_CACHE_ENV, train

CPU = get_target("cpu")
pytestmark = pytest.mark.skipif(CPU.unavailable() is not None, reason=str(CPU.unavailable()))
DATASET = "synthetic:rows=1500,fields=5"
# Every operator the ranker runs: a low-rank and a full-rank cross, FM, layer norm, dense layers.
EVERY_OPERATOR = {"cross_layers": 1, "cross_rank": 4, "fm": True, "layer_norm": True, "epochs": 1}
MANUAL = Provenance(search_id="test", method="manual", seed=0, evaluations=1)


def entry(
    operator: str, bucket: str, candidate: Candidate | None = None, device: str = "", speedup: float = 1.5
) -> KernelEntry:
    """A registry entry for the cpu target's default kernel: a fixture for where kernels run,
    so its timings are placeholders, not measurements."""
    kernel = candidate or CPU.render(operator, CPU.default_params(operator))
    return KernelEntry(
        operator=operator,
        bucket=bucket,
        dtype="float32",
        target="cpu",
        device=device or CPU.device_name(),
        candidate=kernel,
        speedup_vs_eager=speedup,
        candidate_seconds=1.0,
        eager_seconds=speedup,
        shape={},
        correct_trials=1,
        provenance=MANUAL,
    )


def job(config: dict[str, Any], kernels: list[KernelEntry] = []) -> JobInput:  # noqa: B006 - read only
    return JobInput(job_id="j", dataset=DATASET, config=config, seed=3, kernels=kernels)


@pytest.mark.parametrize("name", sorted(PYTORCH))
def test_the_models_pytorch_operators_compute_the_kernel_suites_references(name: str) -> None:
    """The ops the ranker runs are KernelEvolve's operators (same names, inputs, attributes), so a
    registry kernel, held to the reference, can stand in for them; checked on the awkward shapes."""
    operator = OPERATORS[name]
    for shape in operator.correctness_shapes:
        inputs = operator.make_inputs(shape, torch.float32, torch.Generator().manual_seed(7))
        attributes = operator.attributes(shape)
        expected = operator.reference(*inputs, **attributes)
        got = PYTORCH[name](*inputs, **attributes)
        assert isinstance(expected, torch.Tensor)
        tolerance = operator.tolerance(torch.float32)
        assert got.shape == expected.shape, shape
        torch.testing.assert_close(got, expected, atol=tolerance.atol, rtol=tolerance.rtol, equal_nan=True)


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_an_operators_inputs_give_back_its_shape_and_so_its_bucket(name: str) -> None:
    operator = OPERATORS[name]
    for shape in (*operator.correctness_shapes, *operator.benchmark_shapes):
        inputs = operator.make_inputs(shape, torch.float32, torch.Generator().manual_seed(1))
        seen = operator.shape_of(inputs, operator.attributes(shape)).model_dump()
        wanted = shape.model_dump()
        if "max_bag" in wanted:  # the longest bag drawn, at most the longest allowed
            assert seen.pop("max_bag") <= wanted.pop("max_bag")
        assert seen == wanted


def test_a_kernel_runs_for_its_bucket_pytorch_elsewhere_and_each_call_is_reported(tmp_path: Path) -> None:
    operator = OPERATORS["embedding_bag_pooled"]
    shapes = [s for s in operator.correctness_shapes if s.batch > 0]
    inputs = [operator.make_inputs(s, torch.float32, torch.Generator().manual_seed(2)) for s in shapes]
    first = operator.bucket(operator.shape_of(inputs[0], {"mode": shapes[0].mode}))
    kernels = RegistryKernels(
        [entry("embedding_bag_pooled", first), entry("layer_norm", "d8-r8", device="cpu: another machine")],
        tmp_path / "built",
        tmp_path / "cache",
        threads=1,
    )
    ops = Ops(kernels)
    for shape, tensors in zip(shapes, inputs, strict=True):
        got = ops.embedding_bag_pooled(*tensors, mode=shape.mode)
        torch.testing.assert_close(got, operator.reference(*tensors, mode=shape.mode), atol=1e-5, rtol=1e-5)
    uses = {use.bucket: use for use in kernels.usage()}
    key = registry_key("embedding_bag_pooled", first, "float32", "cpu", CPU.device_name())
    assert uses[first].kernel == key and uses[first].calls == 1
    others = [use for bucket, use in uses.items() if bucket != first]
    assert others and all(use.kernel is None and "no registry kernel" in use.reason for use in others)
    assert kernels.entries.keys() == {key}  # another machine's kernel is no evidence about this one


def test_a_kernel_that_will_not_build_falls_back_to_pytorch_with_the_reason(tmp_path: Path) -> None:
    rendered = CPU.render("fm_interaction", CPU.default_params("fm_interaction"))
    broken = rendered.model_copy(update={"sources": {**rendered.sources, "kernel.cpp": "not C++"}})
    x = torch.randn(4, 3, 8)
    bucket = OPERATORS["fm_interaction"].bucket(OPERATORS["fm_interaction"].shape_of((x,), {}))
    kernels = RegistryKernels([entry("fm_interaction", bucket, broken)], tmp_path, tmp_path / "c", threads=1)
    out = Ops(kernels).fm_interaction(x)
    torch.testing.assert_close(out, PYTORCH["fm_interaction"](x))
    (use,) = kernels.usage()
    assert use.kernel is None and "did not load" in use.reason and "does not compile" in use.reason


def test_a_kernel_slower_than_pytorch_in_its_evaluation_is_not_run(tmp_path: Path) -> None:
    x = torch.randn(4, 3, 8)
    bucket = OPERATORS["fm_interaction"].bucket(OPERATORS["fm_interaction"].shape_of((x,), {}))
    slow = entry("fm_interaction", bucket, speedup=0.8)
    kernels = RegistryKernels([slow], tmp_path, tmp_path / "c", threads=1)
    Ops(kernels).fm_interaction(x)
    (use,) = kernels.usage()
    assert use.kernel is None and "0.80x eager" in use.reason and not kernels.loaded


def test_a_cross_stack_runs_its_kernel_or_else_each_layers(tmp_path: Path) -> None:
    """Without the stack's kernel the layers run one by one, each by its own kernel where the
    registry has one; with it, one call computes them all."""
    stack = OPERATORS["dcn_cross_stack"]
    shape = stack.parse_shape({"batch": 9, "dim": 14, "rank": 3, "layers": 3})
    x0, *weights = stack.make_inputs(shape, torch.float32, torch.Generator().manual_seed(4))
    layers = [weights[i : i + 3] for i in range(0, len(weights), 3)]
    expected = stack.reference(x0, *weights, layers=3)
    cross = OPERATORS["dcn_cross"].bucket(OPERATORS["dcn_cross"].shape_of((x0, x0, *layers[0]), {}))
    for published, ran in (
        ([entry("dcn_cross", cross)], [("dcn_cross", 3)]),
        (
            [entry("dcn_cross", cross), entry("dcn_cross_stack", stack.bucket(shape))],
            [("dcn_cross_stack", 1)],
        ),
    ):
        kernels = RegistryKernels(published, tmp_path, tmp_path / "c", threads=1)
        torch.testing.assert_close(Ops(kernels).dcn_cross_stack(x0, layers), expected, atol=1e-4, rtol=1e-4)
        assert [(use.operator, use.calls) for use in kernels.usage() if use.kernel] == ran


def test_a_first_cross_layer_whose_x_is_x0_trains_with_both_gradients_added(tmp_path: Path) -> None:
    """A stack's first cross layer passes one tensor as x0 and x: the backward kernel's two
    gradients of it add up, as PyTorch's do."""
    x0, weight, bias = cross_layer(5, 6, rank=0)[1:]
    cross = OPERATORS["dcn_cross"]
    bucket = cross.bucket(cross.shape_of((x0, x0, weight, bias), {}))
    kernels = RegistryKernels(
        [entry("dcn_cross", bucket), entry("dcn_cross_backward", bucket)], tmp_path, tmp_path / "c", threads=1
    )
    gradients = []
    for ops in (Ops(kernels), Ops()):
        leaf = x0.clone().requires_grad_()
        ops.dcn_cross(leaf, leaf, weight, bias).backward(torch.ones(5, 6))
        gradients.append(leaf.grad)
    torch.testing.assert_close(*gradients, atol=1e-4, rtol=1e-4)
    assert [use.calls for use in kernels.usage()] == [1, 1]
    with torch.no_grad():
        Ops(kernels).dcn_cross(x0, x0, weight, bias)
    assert sorted(use.calls for use in kernels.usage()) == [1, 2]


def test_a_training_call_without_the_backward_kernel_runs_pytorch_both_ways(tmp_path: Path) -> None:
    x = torch.randn(4, 3, 8, requires_grad=True)
    bucket = OPERATORS["fm_interaction"].bucket(OPERATORS["fm_interaction"].shape_of((x,), {}))
    kernels = RegistryKernels([entry("fm_interaction", bucket)], tmp_path, tmp_path / "c", threads=1)
    Ops(kernels).fm_interaction(x).sum().backward()
    assert x.grad is not None
    uses = {use.operator: use for use in kernels.usage()}
    assert uses["fm_interaction_backward"].kernel is None and uses["fm_interaction_backward"].calls == 1
    assert uses["fm_interaction"].calls == 0  # its kernel exists, but was not run without its pair


def test_a_sparse_training_lookup_runs_the_sparse_backward_kernel_with_pytorchs_gradient(
    tmp_path: Path,
) -> None:
    """Ids repeated within and across bags, an empty bag, mean pooling: the kernel pair's
    gradient is PyTorch's sparse one, its rows once each and in order (autograd drops the
    coalesced mark when it stores a gradient; the optimisers' step restores it)."""
    lookup = OPERATORS["embedding_bag_pooled"]
    shape = lookup.parse_shape({"tables": 3, "rows": 6, "dim": 5, "batch": 9, "max_bag": 4, "mode": "mean"})
    weights, *bags = lookup.make_inputs(shape, torch.float32, torch.Generator().manual_seed(2))
    bucket = lookup.bucket(shape)
    published = [entry("embedding_bag_pooled", bucket), entry("embedding_bag_pooled_sparse_backward", bucket)]
    kernels = RegistryKernels(published, tmp_path, tmp_path / "c", threads=1)
    gradients = []
    for ops in (Ops(kernels), Ops()):
        leaf = weights.clone().requires_grad_()
        pooled = ops.embedding_bag_pooled(leaf, *bags, mode="mean", sparse_gradient=True)
        pooled.backward(torch.randn(pooled.shape, generator=torch.Generator().manual_seed(1)))
        assert leaf.grad is not None and leaf.grad.is_sparse
        gradients.append(leaf.grad)
    by_kernel, by_pytorch = gradients
    assert torch.equal(by_kernel._indices(), by_pytorch.coalesce().indices())
    torch.testing.assert_close(by_kernel.to_dense(), by_pytorch.to_dense(), atol=1e-5, rtol=1e-5)
    assert sorted((use.operator, use.calls, use.kernel is not None) for use in kernels.usage()) == [
        ("embedding_bag_pooled", 1, True),
        ("embedding_bag_pooled_sparse_backward", 1, True),
    ]


@pytest.mark.parametrize("optimizer", ["rowwise_adagrad", "sparse_adam"])
def test_the_trainer_with_sparse_tables_and_registry_kernels_reports_the_same_metrics(
    optimizer: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KERNEL_CACHE_ENV, str(tmp_path))
    config = {"embedding_optimizer": optimizer, "epochs": 1}
    plain = train(job(config))
    asked = train(job({**config, "use_evolved_kernels": True}))
    lookups = [use for use in asked.kernels if use.operator.startswith("embedding_bag_pooled")]
    sparse_pair = {"embedding_bag_pooled", "embedding_bag_pooled_sparse_backward"}
    assert {use.operator for use in lookups} == sparse_pair
    trained = train(
        job({**config, "use_evolved_kernels": True}, [entry(use.operator, use.bucket) for use in lookups])
    )
    ran = {use.operator: use.calls for use in trained.kernels if use.kernel is not None}
    assert ran.keys() == sparse_pair
    assert ran["embedding_bag_pooled_sparse_backward"] > 0  # one per training step
    _close(plain, trained, tolerance=1e-3, same_training=False)


def dense_layer(batch: int, width_in: int, width: int) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(batch)
    sizes = ((batch, width_in), (width, width_in), (width,))
    return tuple(torch.randn(*size, generator=generator) for size in sizes)


def cross_layer(batch: int, dim: int, rank: int) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(batch + rank)
    weights = ((dim, dim),) if rank == 0 else ((dim, rank), (rank, dim))
    sizes = ((batch, dim), (batch, dim), *weights, (dim,))
    return tuple(torch.randn(*size, generator=generator) / 2 for size in sizes)


def normalised_layer(rows: int, dim: int) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(rows)
    x = torch.randn(rows, dim, generator=generator) * 3 + 1
    return x, 1 + torch.randn(dim, generator=generator) / 10, torch.randn(dim, generator=generator)


@pytest.mark.parametrize(
    ("name", "inputs", "attributes"),
    [
        pytest.param("linear_bias_act", dense_layer(9, 13, 7), {"activation": "relu"}, id="linear-relu"),
        pytest.param("linear_bias_act", dense_layer(1, 5, 1), {"activation": "none"}, id="linear-head"),
        pytest.param(
            "layer_norm", normalised_layer(6, 11), {"eps": 1e-5, "activation": "none"}, id="layer-norm"
        ),
        pytest.param(
            "layer_norm", normalised_layer(7, 12), {"eps": 1e-5, "activation": "relu"}, id="layer-norm-relu"
        ),
        pytest.param("dcn_cross", cross_layer(7, 9, rank=0), {}, id="cross"),
        pytest.param("dcn_cross", cross_layer(7, 9, rank=3), {}, id="low-rank-cross"),
        pytest.param(
            "fm_interaction", (torch.randn(5, 4, 3, generator=torch.Generator().manual_seed(5)),), {}, id="fm"
        ),
        pytest.param(
            "bce_with_logits", (torch.randn(37) * 4, torch.randint(0, 2, (37,)).float()), {}, id="loss"
        ),
    ],
)
def test_a_training_call_runs_the_forward_and_backward_kernels_with_pytorchs_gradients(
    name: str, inputs: tuple[torch.Tensor, ...], attributes: dict[str, Any], tmp_path: Path
) -> None:
    forward = OPERATORS[name]
    bucket = forward.bucket(forward.shape_of(inputs, attributes))
    published = [entry(name, bucket), entry(f"{name}_backward", bucket)]
    kernels = RegistryKernels(published, tmp_path, tmp_path / "c", threads=1)
    gradients = []
    differentiated = BACKWARDS[name].gradients  # None: every input (the loss's targets: none)
    for ops in (Ops(kernels), Ops()):
        leaves = [
            tensor.clone().requires_grad_(differentiated is None or position in differentiated)
            for position, tensor in enumerate(inputs)
        ]
        output = getattr(ops, name)(*leaves, **attributes)
        output.backward(torch.randn(output.shape, generator=torch.Generator().manual_seed(1)))
        gradients.append([leaf.grad for leaf in leaves])
    for by_kernel, by_pytorch in zip(*gradients, strict=True):
        torch.testing.assert_close(by_kernel, by_pytorch, atol=1e-4, rtol=1e-4)
    assert sorted((use.operator, use.calls, use.kernel is not None) for use in kernels.usage()) == [
        (name, 1, True),
        (f"{name}_backward", 1, True),
    ]


def test_a_loss_whose_targets_need_a_gradient_trains_with_pytorch_whose_backward_gives_it(
    tmp_path: Path,
) -> None:
    logits, targets = torch.randn(9, requires_grad=True), torch.rand(9, requires_grad=True)
    bucket = OPERATORS["bce_with_logits"].bucket(OPERATORS["bce_with_logits"].shape_of((logits, targets), {}))
    published = [entry("bce_with_logits", bucket), entry("bce_with_logits_backward", bucket)]
    kernels = RegistryKernels(published, tmp_path, tmp_path / "c", threads=1)
    Ops(kernels).bce_with_logits(logits, targets).backward()
    assert logits.grad is not None and targets.grad is not None
    torch.testing.assert_close(targets.grad, -logits.detach() / 9)
    assert kernels.usage() == []


def test_a_gelu_layer_trains_with_the_plain_layers_kernels_and_pytorchs_gelu(tmp_path: Path) -> None:
    inputs = dense_layer(5, 6, 3)
    dense = OPERATORS["linear_bias_act"]
    plain = dense.bucket(dense.shape_of(inputs, {"activation": "none"}))
    gelu = dense.bucket(dense.shape_of(inputs, {"activation": "gelu"}))
    published = [entry("linear_bias_act", bucket) for bucket in (plain, gelu)]
    kernels = RegistryKernels(
        [*published, entry("linear_bias_act_backward", plain)], tmp_path, tmp_path / "c", threads=1
    )
    gradients = []
    for ops in (Ops(kernels), Ops()):
        leaves = [tensor.clone().requires_grad_() for tensor in inputs]
        ops.linear_bias_act(*leaves, activation="gelu").pow(2).sum().backward()
        gradients.append([leaf.grad for leaf in leaves])
    for by_kernel, by_pytorch in zip(*gradients, strict=True):
        torch.testing.assert_close(by_kernel, by_pytorch, atol=1e-4, rtol=1e-4)
    ran = sorted((use.operator, use.bucket) for use in kernels.usage() if use.kernel is not None)
    assert ran == [("linear_bias_act", plain), ("linear_bias_act_backward", plain)]
    with torch.no_grad():  # inference runs the fused gelu kernel
        Ops(kernels).linear_bias_act(*inputs, activation="gelu")
    assert (gelu, 1) in [(use.bucket, use.calls) for use in kernels.usage() if use.kernel is not None]


def _close(a: JobOutput, b: JobOutput, tolerance: float = 1e-5, same_training: bool = True) -> None:
    for split in ("train", "validation", "test"):
        left, right = getattr(a, split), getattr(b, split)
        for metric in ("ne", "auc", "logloss"):
            assert math.isclose(
                getattr(left, metric), getattr(right, metric), rel_tol=tolerance, abs_tol=1e-6
            )
    if same_training:  # training ran PyTorch in both
        assert [h.train_loss for h in a.history] == [h.train_loss for h in b.history]


@pytest.mark.parametrize("config", [EVERY_OPERATOR, {"cross_layers": 2, "epochs": 1}])
def test_the_trainer_with_registry_kernels_reports_the_same_metrics(
    config: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KERNEL_CACHE_ENV, str(tmp_path))
    plain = train(job(config))
    asked = train(job({**config, "use_evolved_kernels": True}))  # the registry has nothing yet
    assert not plain.kernels and asked.kernels
    assert all(use.kernel is None and use.reason for use in asked.kernels)
    _close(plain, asked)

    # Publish the cpu target's default kernel for every bucket the job asked for, run it again:
    # evaluation runs them; training does not, since no backward was published.
    forward_uses = [use for use in asked.kernels if OPERATORS[use.operator].direction == "forward"]
    forwards = [entry(use.operator, use.bucket) for use in forward_uses]
    ran = train(job({**config, "use_evolved_kernels": True}, forwards))
    used = {use.operator for use in ran.kernels if use.kernel is not None and use.calls > 0}
    trained_operators = {"embedding_bag_pooled", "dcn_cross", "linear_bias_act", "bce_with_logits"}
    if config.get("fm"):
        trained_operators |= {"fm_interaction", "layer_norm"}
    # Evaluation runs the crosses as one stack and computes no loss; training, layer by layer.
    assert used == trained_operators - {"dcn_cross", "bce_with_logits"} | {"dcn_cross_stack"}
    backwards = [use for use in ran.kernels if OPERATORS[use.operator].direction == "backward"]
    assert {use.operator for use in backwards} == {f"{name}_backward" for name in trained_operators}
    assert all(use.kernel is None and "no registry kernel" in use.reason for use in backwards)
    assert all(use.calls > 0 for use in backwards)
    assert all(
        use.kernel.endswith(CPU.device_name()) and dtype_name(torch.float32) in use.kernel
        for use in ran.kernels
        if use.kernel
    )
    _close(plain, ran)

    # With the backwards too, training steps run the pairs: the same model within float tolerance
    # (the gradients are summed in another order, so the training losses drift in the last bits).
    published = [*forwards, *(entry(use.operator, use.bucket) for use in backwards)]
    trained = train(job({**config, "use_evolved_kernels": True}, published))
    uses = {(use.operator, use.bucket): use for use in trained.kernels}
    for backward in backwards:
        assert uses[(backward.operator, backward.bucket)].kernel is not None
        assert uses[(backward.operator, backward.bucket)].calls == backward.calls  # one per training step
    assert all(use.kernel is not None for use in trained.kernels)
    _close(plain, trained, tolerance=1e-3, same_training=False)
    assert trained.history[0].train_loss == pytest.approx(plain.history[0].train_loss, rel=1e-4)
