from __future__ import annotations

from pathlib import Path

import pytest

from rea_workload.datasets.spec import (
    CriteoSpec,
    MovieLensSpec,
    ParquetSpec,
    SyntheticSpec,
    parse_spec,
    spec_error,
)


def test_known_specs_parse() -> None:
    assert parse_spec("movielens-100k") == MovieLensSpec()
    assert parse_spec("synthetic") == SyntheticSpec()
    expected = SyntheticSpec(rows=500, strength=3.5, seed=7)
    assert parse_spec("synthetic:rows=500,strength=3.5,seed=7") == expected
    assert parse_spec("criteo:/data/day_0.tsv") == CriteoSpec(path=Path("/data/day_0.tsv"))
    assert parse_spec("criteo:/d.tsv?min_count=2") == CriteoSpec(path=Path("/d.tsv"), min_count=2)
    assert parse_spec("parquet:/t.parquet?label=click&dense=a,b&categorical=c") == ParquetSpec(
        path=Path("/t.parquet"), label="click", dense=("a", "b"), categorical=("c",)
    )


def test_synthetic_defaults_match_the_documented_generator() -> None:
    spec = SyntheticSpec()
    assert (spec.seed, spec.rows, spec.fields, spec.cardinality, spec.crosses) == (0, 20_000, 8, 50, 1)
    assert (spec.strength, spec.noise, spec.base_rate) == (2.0, 0.5, 0.25)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("imagenet", "unknown dataset 'imagenet'"),
        ("movielens-100k:rows=5", "movielens-100k takes no parameters"),
        ("synthetic:colour=red", "unknown parameter(s) ['colour']"),
        ("synthetic:rows=ten", "rows: Input should be a valid integer"),
        ("synthetic:rows=10", "rows: Input should be greater than or equal to 100"),
        ("synthetic:base_rate=1.5", "base_rate"),
        ("synthetic:fields=3,crosses=4", "crosses=4 exceeds the 3 pairs of 3 fields"),
        ("synthetic:rows", "expected key=value"),
        ("synthetic:seed=1,seed=2", "given twice"),
        ("criteo:", "criteo needs a file path"),
        ("parquet:/t.parquet", "parquet needs a label column"),
        ("parquet:/t.parquet?label=y&weights=w", "unknown parameter(s) ['weights']"),
    ],
)
def test_bad_specs_say_what_is_wrong(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_spec(text)
    assert fragment in str(caught.value)


def test_spec_error_checks_that_files_exist(tmp_path: Path) -> None:
    present = tmp_path / "day.tsv"
    present.write_text("")
    assert spec_error(f"criteo:{present}") is None
    absent = tmp_path / "absent.tsv"
    assert spec_error(f"criteo:{absent}") == f"criteo: no such file '{absent}'"
    assert spec_error("nope") is not None
