from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rea_workload.datasets.data import MultiValued
from rea_workload.datasets.loader import load_dataset, load_splits
from rea_workload.datasets.spec import parse_spec
from rea_workload.datasets.splits import subsample


def test_multi_valued_take_gathers_bags_in_row_order() -> None:
    bags = MultiValued.from_lists([[1, 2], [], [3], [4, 5, 6]])
    taken = bags.take(np.array([3, 1, 0]))
    assert taken.values.tolist() == [4, 5, 6, 1, 2]
    assert taken.offsets.tolist() == [0, 3, 3, 5]


def test_synthetic_data_records_its_planted_crosses_and_base_rate() -> None:
    data = load_dataset(parse_spec("synthetic:rows=20000,crosses=2,seed=3"))
    assert len(data) == 20_000
    assert data.categorical.shape == (20_000, 8)
    assert data.categorical.min() >= 1 and data.categorical.max() <= 50
    planted = data.metadata["planted_crosses"]
    assert len(planted) == 2
    assert all(field in data.categorical_names for pair in planted for field in pair)
    assert data.positive_rate == pytest.approx(0.25, abs=0.02)


def test_synthetic_data_is_a_pure_function_of_its_spec() -> None:
    spec = parse_spec("synthetic:rows=500,seed=9")
    first, second = load_dataset(spec), load_dataset(spec)
    assert np.array_equal(first.labels, second.labels)
    assert np.array_equal(first.categorical, second.categorical)
    other = load_dataset(parse_spec("synthetic:rows=500,seed=10"))
    assert not np.array_equal(first.categorical, other.categorical)


def test_splits_are_80_10_10_disjoint_and_fixed() -> None:
    splits = load_splits("synthetic:rows=1000")
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (800, 100, 100)
    again = load_splits("synthetic:rows=1000")
    assert np.array_equal(splits.test.categorical, again.test.categorical)


def test_data_fraction_takes_a_nested_prefix() -> None:
    train = load_splits("synthetic:rows=1000").train
    small, large = subsample(train, 0.1), subsample(train, 0.5)
    assert (len(small), len(large)) == (80, 400)
    assert np.array_equal(large.categorical[:80], small.categorical)
    assert subsample(train, 1.0) is train


def test_criteo_tsv_is_encoded(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    lines = []
    for i in range(200):
        dense = ["" if j == 0 and i % 3 == 0 else str(int(rng.integers(-2, 1000))) for j in range(13)]
        sparse = ["" if j == 1 else ("a1b2c3d4" if i % 2 else f"{i:08x}") for j in range(26)]
        lines.append("\t".join([str(i % 4 == 0), *dense, *sparse]).replace("True", "1").replace("False", "0"))
    path = tmp_path / "day.tsv"
    path.write_text("\n".join(lines) + "\n")

    data = load_dataset(parse_spec(f"criteo:{path}?min_count=2"))
    assert len(data) == 200 and data.dense.shape == (200, 13) and data.categorical.shape == (200, 26)
    assert data.positive_rate == pytest.approx(0.25)
    assert np.isfinite(data.dense).all() and data.dense.min() >= 0.0
    assert (data.dense[::3, 0] == 0.0).all()  # missing -> 0
    # C1 holds one frequent value and 100 unique ones: the unique ones fall below min_count.
    assert data.categorical_cardinalities[0] == 2
    assert set(np.unique(data.categorical[:, 0])) == {0, 1}
    assert (data.categorical[:, 1] == 0).all()  # all missing -> the OOV id


def test_parquet_infers_dense_and_categorical_columns(tmp_path: Path) -> None:
    path = tmp_path / "table.parquet"
    table = pa.table(
        {
            "click": [0, 1, 1, 0],
            "price": [1.0, 2.0, None, 4.0],
            "country": ["de", "fr", "de", None],
            "shop": [10, 11, 10, 12],
        }
    )
    pq.write_table(table, path)
    data = load_dataset(parse_spec(f"parquet:{path}?label=click"))
    assert data.dense_names == ["price"] and data.categorical_names == ["country", "shop"]
    assert data.dense[2, 0] == 0.0 and abs(float(data.dense[[0, 1, 3], 0].mean())) < 1e-6
    assert data.categorical[:, 0].tolist() == [1, 2, 1, 0]

    explicit = load_dataset(parse_spec(f"parquet:{path}?label=click&categorical=shop"))
    assert explicit.dense_names == [] and explicit.categorical_names == ["shop"]
    with pytest.raises(ValueError, match="no column"):
        load_dataset(parse_spec(f"parquet:{path}?label=clicked"))
