from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from rea.workloads import Workload, get_workload
from rea_workload import WORKLOAD
from rea_workload.schema import SCHEMA, RankerConfig


def test_defaults_are_valid_and_the_baseline_is_a_plain_mlp() -> None:
    defaults = SCHEMA.defaults()
    assert SCHEMA.errors(defaults) == []
    config = RankerConfig.from_overrides({})
    assert config.cross_layers == 0 and config.fm is False
    assert (config.embedding_dim, config.mlp_width, config.mlp_depth, config.epochs) == (8, 64, 2, 3)


def test_config_has_exactly_one_attribute_per_knob() -> None:
    assert [f.name for f in dataclasses.fields(RankerConfig)] == SCHEMA.names()


def test_every_knob_is_described_and_fidelity_knobs_are_marked() -> None:
    assert all(k.description for k in SCHEMA.knobs)
    assert {k.name for k in SCHEMA.knobs if k.fidelity} == {"epochs", "data_fraction"}


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"embedding_dim": 128}, "embedding_dim=128 is outside [4, 64]"),
        ({"dropout": 0.9}, "dropout=0.9 is outside"),
        ({"learning_rate": 0.0}, "learning_rate=0.0 is outside"),
        ({"mlp_depth": 2.5}, "mlp_depth must be an integer"),
        ({"optimizer": "lamb"}, "optimizer must be one of"),
        ({"fm": "yes"}, "fm must be true or false"),
        ({"epochs": 0}, "epochs=0 is outside [1, 30]"),
        ({"not_a_knob": 1}, "unknown knob 'not_a_knob'"),
    ],
)
def test_out_of_range_knobs_are_rejected(overrides: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError) as caught:
        RankerConfig.from_overrides(overrides)
    assert fragment in str(caught.value)


def test_int_knobs_accept_integral_floats() -> None:
    assert RankerConfig.from_overrides({"cross_layers": 2.0}).cross_layers == 2


def test_the_entry_point_provides_the_workload() -> None:
    workload = get_workload("ranker")
    assert workload is WORKLOAD
    assert isinstance(workload, Workload)
    assert workload.command()[1:] == ["-m", "rea_workload"]


def test_importing_the_workload_and_checking_specs_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from rea_workload import WORKLOAD\n"
        "assert WORKLOAD.dataset_error('synthetic:rows=500') is None\n"
        "assert WORKLOAD.dataset_error('movielens-100k') is None\n"
        "heavy = [m for m in ('torch', 'numpy', 'pyarrow', 'sklearn') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
