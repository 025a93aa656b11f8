from __future__ import annotations

import numpy as np
import pytest
import torch

from rea_workload.batches import batches
from rea_workload.datasets.loader import load_splits
from rea_workload.model import RankerModel
from rea_workload.schema import RankerConfig


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"cross_layers": 2},
        {"cross_layers": 3, "cross_rank": 4},
        {"fm": True, "layer_norm": True, "dropout": 0.2, "mlp_depth": 4},
        {"hash_buckets": 16},
    ],
)
def test_every_architecture_maps_a_batch_to_one_logit_per_row(overrides: dict[str, object]) -> None:
    data = load_splits("synthetic:rows=500").train
    model = RankerModel(data, RankerConfig.from_overrides(overrides))
    batch = next(batches(data, 32))
    logits, embeddings = model(batch)
    assert logits.shape == (32,) and torch.isfinite(logits).all()
    assert embeddings.shape == (32, 8, 8)


def test_low_rank_cross_layers_have_fewer_parameters() -> None:
    data = load_splits("synthetic:rows=500").train

    def size(**overrides: object) -> int:
        return sum(p.numel() for p in RankerModel(data, RankerConfig.from_overrides(overrides)).parameters())

    assert size(cross_layers=1, cross_rank=4) < size(cross_layers=1) and size() < size(cross_layers=1)


def test_hashing_shrinks_only_fields_larger_than_the_bucket_count() -> None:
    data = load_splits("synthetic:rows=500,cardinality=100").train
    model = RankerModel(data, RankerConfig.from_overrides({"hash_buckets": 30}))
    assert {t.num_embeddings for t in model.tables} == {30}
    roomy = RankerModel(data, RankerConfig.from_overrides({"hash_buckets": 1000}))
    assert {t.num_embeddings for t in roomy.tables} == {101}


def test_the_initial_prediction_is_the_base_rate() -> None:
    data = load_splits("synthetic:rows=2000").train
    model = RankerModel(data, RankerConfig.from_overrides({}))
    with torch.no_grad():
        logits, _ = model(next(batches(data, len(data))))
    assert float(torch.sigmoid(logits).mean()) == pytest.approx(data.positive_rate, abs=0.05)
    assert np.isclose(model.head.bias.item(), np.log(data.positive_rate / (1 - data.positive_rate)))
