"""The trainer's optimisers: fused dense ones, and sparse ones for the embedding tables that touch
only the rows a batch looked up."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch

from rea.workloads import JobInput
from rea_workload.batches import batches
from rea_workload.datasets.loader import load_splits
from rea_workload.model import RankerModel
from rea_workload.ops import Call, Kernel, Ops
from rea_workload.optim import RowwiseAdagrad, build_optimizers, clip_gradients, coalesced
from rea_workload.schema import RankerConfig
from rea_workload.train import train

DATA = "synthetic:rows=4000,cardinality=500"


def job(**config: Any) -> JobInput:
    return JobInput(job_id="test", dataset=DATA, config=config, seed=0)


def model_and_batch(**config: Any) -> tuple[RankerModel, Any]:
    torch.manual_seed(0)
    data = load_splits(DATA).train
    model = RankerModel(data, RankerConfig.from_overrides(config))
    return model, next(iter(batches(data, 64)))


@pytest.mark.parametrize("name", ["adam", "adamw", "adagrad", "sgd"])
def test_the_optimiser_is_pytorchs_fused_one_on_the_cpu(name: str) -> None:
    model, _ = model_and_batch(optimizer=name)
    (optimizer,) = build_optimizers(model, RankerConfig.from_overrides({"optimizer": name})).each
    assert all(group["fused"] for group in optimizer.param_groups)
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {id(p) for p in model.parameters()}


def test_sparse_adagrad_on_the_tables_trains_the_same_model_as_dense_adagrad() -> None:
    """Adagrad moves no row without gradient, so only the work differs."""
    config = {"optimizer": "adagrad", "learning_rate": 0.02, "epochs": 2, "embedding_l2": 1e-4}
    dense = train(job(**config))
    sparse = train(job(**config, embedding_optimizer="adagrad"))
    assert dense.status == sparse.status == "ok"
    for split in ("train", "validation", "test"):
        assert getattr(sparse, split).ne == pytest.approx(getattr(dense, split).ne, abs=1e-5)
    assert [h.train_loss for h in sparse.history] == pytest.approx(
        [h.train_loss for h in dense.history], abs=1e-5
    )


def test_lazy_adam_on_the_tables_learns_and_is_not_dense_adam() -> None:
    dense = train(job(epochs=2, learning_rate=0.01))
    lazy = train(job(epochs=2, learning_rate=0.01, embedding_optimizer="sparse_adam"))
    assert lazy.status == "ok" and lazy.train is not None and lazy.test is not None and dense.test is not None
    assert lazy.train.ne < 0.9 and lazy.history[1].train_loss < lazy.history[0].train_loss  # it fits
    assert lazy.test.ne != dense.test.ne  # rows a batch skips keep their moments: another optimiser


@pytest.mark.parametrize("choice", ["adagrad", "rowwise_adagrad", "sparse_adam"])
def test_a_sparse_tables_gradient_holds_the_rows_looked_up_and_only_they_move(choice: str) -> None:
    model, batch = model_and_batch(embedding_optimizer=choice)
    optimizers = build_optimizers(model, RankerConfig.from_overrides({"embedding_optimizer": choice}))
    before = model.embeddings.weight.detach().clone()
    logits, _ = model(batch)
    model.ops.bce_with_logits(logits, batch.labels).backward()
    gradient = model.embeddings.weight.grad
    assert gradient is not None and gradient.is_sparse
    looked_up = set(gradient.coalesce().indices()[0].tolist())
    offsets = model.embeddings.table_offsets[: model.n_single].numpy()
    expected = {int(row) for row in (batch.categorical.numpy() + offsets).ravel()}
    assert looked_up == expected
    optimizers.step()
    moved = set(np.flatnonzero((model.embeddings.weight.detach() != before).any(dim=1).numpy()).tolist())
    assert moved == looked_up


def test_rowwise_adagrad_keeps_one_sum_per_row_and_moves_only_the_rows_with_gradient() -> None:
    lr, eps = 0.5, 1e-8
    start = torch.arange(8.0).view(4, 2)
    sparse, dense = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    values = torch.tensor([[3.0, 4.0], [1.0, 1.0], [0.0, 2.0]])
    sparse.grad = torch.sparse_coo_tensor(torch.tensor([[2, 0, 2]]), values, (4, 2))  # row 2 twice
    dense.grad = sparse.grad.to_dense()
    optimizers = [RowwiseAdagrad([sparse], lr=lr, eps=eps), RowwiseAdagrad([dense], lr=lr, eps=eps)]
    for optimizer in optimizers:
        optimizer.step()
    row2 = torch.tensor([3.0, 6.0])  # the two gradients of row 2, summed
    sums = torch.tensor([1.0, 0.0, (9 + 36) / 2, 0.0])
    assert torch.equal(optimizers[0].state[sparse]["sum"], sums)
    assert torch.equal(optimizers[1].state[dense]["sum"], sums)
    expected = start.clone()
    expected[0] -= lr / (1.0 + eps) * torch.tensor([1.0, 1.0])
    expected[2] -= lr / (float(np.sqrt(22.5)) + eps) * row2
    assert torch.allclose(sparse.detach(), expected) and torch.allclose(dense.detach(), expected)
    assert torch.equal(sparse.detach()[[1, 3]], start[[1, 3]])


def test_a_gradient_whose_rows_are_in_order_is_marked_coalesced_and_others_are_coalesced() -> None:
    values = torch.arange(6.0).view(3, 2)
    in_order = torch.sparse_coo_tensor(torch.tensor([[0, 2, 5]]), values, (6, 2))
    assert not in_order.is_coalesced()
    marked = coalesced(in_order)
    assert marked.is_coalesced() and torch.equal(marked.to_dense(), in_order.to_dense())
    for rows in ([2, 0, 5], [0, 2, 2]):  # out of order; a row twice
        gradient = torch.sparse_coo_tensor(torch.tensor([rows]), values, (6, 2))
        merged = coalesced(gradient)
        assert merged.is_coalesced() and torch.equal(merged.to_dense(), gradient.to_dense())
        assert merged._indices()[0].tolist() == sorted(set(rows))


def test_clipping_measures_and_scales_a_sparse_gradient_as_its_dense_equal() -> None:
    table = torch.nn.Parameter(torch.zeros(10, 2))
    dense = torch.nn.Parameter(torch.zeros(3))
    indices = torch.tensor([[1, 4, 1]])  # row 1 twice: coalescing sums it
    table.grad = torch.sparse_coo_tensor(indices, torch.tensor([[3.0, 0.0], [0.0, 4.0], [1.0, 0.0]]), (10, 2))
    dense.grad = torch.tensor([0.0, 0.0, 4.0])
    as_dense = [table.grad.to_dense(), dense.grad.clone()]
    expected = float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in as_dense])))
    assert expected == pytest.approx(float(np.sqrt(16 + 16 + 16)))
    assert clip_gradients([table, dense], 0.0) == pytest.approx(expected)  # measured, not clipped
    assert torch.equal(table.grad.to_dense(), as_dense[0])
    assert clip_gradients([table, dense], 1.0) == pytest.approx(expected)
    scaled = torch.cat([table.grad.to_dense().flatten(), dense.grad])
    assert float(torch.linalg.vector_norm(scaled)) == pytest.approx(1.0, rel=1e-5)
    assert torch.allclose(table.grad.to_dense(), as_dense[0] / expected, rtol=1e-5)


def test_every_sparse_combination_trains() -> None:
    for overrides in (
        {"embedding_optimizer": "adagrad", "optimizer": "sgd", "grad_clip": 0.5, "lr_schedule": "cosine"},
        {"embedding_optimizer": "sparse_adam", "optimizer": "adamw", "fm": True, "hash_buckets": 50},
        {"embedding_optimizer": "rowwise_adagrad", "learning_rate": 0.02, "lr_schedule": "warmup_cosine"},
    ):
        out = train(job(**overrides))
        assert out.status == "ok", overrides
    diagnosed = train(job(embedding_optimizer="sparse_adam").model_copy(update={"diagnose": True}))
    assert diagnosed.diagnostics is not None and diagnosed.diagnostics.grad_norm_max > 0


class _Recording:
    """A kernel provider that has nothing and records what it was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def find(self, calls: Sequence[Call]) -> list[Kernel] | None:
        self.asked += [name for name, _, _ in calls]
        return None


def test_a_sparse_training_lookup_asks_for_the_sparse_backward_and_without_it_runs_pytorch() -> None:
    provider = _Recording()
    model, batch = model_and_batch(embedding_optimizer="adagrad")
    model.ops = Ops(provider)
    logits, _ = model(batch)
    assert provider.asked[:2] == ["embedding_bag_pooled", "embedding_bag_pooled_sparse_backward"]
    assert "embedding_bag_pooled_backward" not in provider.asked
    model.ops.bce_with_logits(logits, batch.labels).backward()
    assert model.embeddings.weight.grad is not None and model.embeddings.weight.grad.is_sparse
    provider.asked.clear()
    with torch.no_grad():
        model(batch)
    assert provider.asked[0] == "embedding_bag_pooled"
    assert "embedding_bag_pooled_sparse_backward" not in provider.asked
