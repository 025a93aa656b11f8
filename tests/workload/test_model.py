from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import torch

from rea.workloads import parameters_of
from rea_workload import WORKLOAD
from rea_workload.batches import batches
from rea_workload.datasets.data import CtrData, MultiValued
from rea_workload.datasets.loader import load_splits
from rea_workload.datasets.spec import FeatureSizes, feature_sizes
from rea_workload.model import RankerModel
from rea_workload.schema import RankerConfig
from rea_workload.workload import ranker_parameters

ARCHITECTURES: list[dict[str, Any]] = [
    {},
    {"embedding_dim": 32, "mlp_width": 512, "mlp_depth": 3},
    {"cross_layers": 2, "fm": True},
    {"cross_layers": 3, "cross_rank": 4, "layer_norm": True},
    {"cross_layers": 1, "cross_rank": 64, "embedding_dim": 4},  # a rank above the width is full rank
    {"hash_buckets": 16, "embedding_dim": 16},
]


def built(data: CtrData, config: dict[str, Any]) -> int:
    return sum(p.numel() for p in RankerModel(data, RankerConfig.from_overrides(config)).parameters())


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


@pytest.mark.parametrize("overrides", [{}, {"cross_layers": 2, "fm": True}])
def test_data_with_dense_features_only_trains_through_every_architecture(
    overrides: dict[str, object],
) -> None:
    """Dense-only data (a protein-homology table: 74 numbers a row) has no field to embed."""
    rows = 64
    rng = np.random.default_rng(0)
    data = CtrData(
        labels=(rng.random(rows) < 0.3).astype(np.float32),
        categorical=np.zeros((rows, 0), dtype=np.int64),
        categorical_names=[],
        categorical_cardinalities=[],
        dense=rng.normal(size=(rows, 5)).astype(np.float32),
        dense_names=list("abcde"),
    )
    model = RankerModel(data, RankerConfig.from_overrides(overrides))
    logits, embeddings = model(next(batches(data, 32)))
    assert logits.shape == (32,) and torch.isfinite(logits).all() and embeddings.shape == (32, 0, 8)
    logits.sum().backward()
    assert ranker_parameters(
        FeatureSizes(categorical=(), dense=5), RankerConfig.from_overrides(overrides)
    ) == built(data, overrides)


def test_low_rank_cross_layers_have_fewer_parameters() -> None:
    data = load_splits("synthetic:rows=500").train

    def size(**overrides: object) -> int:
        return sum(p.numel() for p in RankerModel(data, RankerConfig.from_overrides(overrides)).parameters())

    assert size(cross_layers=1, cross_rank=4) < size(cross_layers=1) and size() < size(cross_layers=1)


def test_hashing_shrinks_only_fields_larger_than_the_bucket_count() -> None:
    data = load_splits("synthetic:rows=500,cardinality=100").train
    model = RankerModel(data, RankerConfig.from_overrides({"hash_buckets": 30}))
    assert set(model.embeddings.rows) == {30}
    roomy = RankerModel(data, RankerConfig.from_overrides({"hash_buckets": 1000}))
    assert set(roomy.embeddings.rows) == {101}


def test_the_initial_prediction_is_the_base_rate() -> None:
    data = load_splits("synthetic:rows=2000").train
    model = RankerModel(data, RankerConfig.from_overrides({}))
    with torch.no_grad():
        logits, _ = model(next(batches(data, len(data))))
    assert float(torch.sigmoid(logits).mean()) == pytest.approx(data.positive_rate, abs=0.05)
    assert np.isclose(model.head.bias.item(), np.log(data.positive_rate / (1 - data.positive_rate)))


@pytest.mark.parametrize("config", ARCHITECTURES)
def test_the_workload_counts_the_parameters_of_the_model_a_config_builds(config: dict[str, Any]) -> None:
    dataset = "synthetic:rows=500,fields=5,cardinality=100"
    data = load_splits(dataset).train
    assert feature_sizes(dataset) == FeatureSizes(tuple(data.categorical_cardinalities))
    assert WORKLOAD.parameters(config, dataset) == built(data, config)


@pytest.mark.parametrize("config", ARCHITECTURES[:4])
def test_the_count_covers_multi_valued_and_dense_fields(config: dict[str, Any]) -> None:
    rows = 4
    data = CtrData(
        labels=np.array([0, 1, 0, 1], dtype=np.float32),
        categorical=np.zeros((rows, 2), dtype=np.int64),
        categorical_names=["user", "item"],
        categorical_cardinalities=[30, 70],
        dense=np.zeros((rows, 3), dtype=np.float32),
        dense_names=["a", "b", "c"],
        multi=[MultiValued.from_lists([[1], [2, 3], [], [4]])],
        multi_names=["genres"],
        multi_cardinalities=[20],
    )
    sizes = FeatureSizes(categorical=(30, 70), multi=(20,), dense=3)
    assert ranker_parameters(sizes, RankerConfig.from_overrides(config)) == built(data, config)


def test_the_count_is_unknown_where_the_vocabularies_are_known_only_from_the_data() -> None:
    for dataset in ("movielens-100k", "criteo:/no/such.tsv", "parquet:/no/such.parquet?label=y", "imagenet"):
        assert WORKLOAD.parameters({}, dataset) is None
    assert parameters_of(WORKLOAD, {"cross_layers": 99}, "synthetic") is None  # an invalid config


def test_counting_is_cheap_and_does_not_import_torch() -> None:
    code = (
        "import sys; from rea_workload import WORKLOAD; "
        "assert WORKLOAD.parameters({'mlp_width': 512}, 'synthetic:cardinality=1000000') > 64_000_000; "
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
