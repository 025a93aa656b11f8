"""Turn a dataset spec into encoded train/validation/test splits, cached per process."""

from __future__ import annotations

from functools import lru_cache

from rea_workload.datasets.criteo import load_criteo
from rea_workload.datasets.data import CtrData
from rea_workload.datasets.movielens import load_movielens
from rea_workload.datasets.packaged import load_packaged
from rea_workload.datasets.parquet import load_parquet
from rea_workload.datasets.spec import (
    CriteoSpec,
    DatasetSpec,
    MovieLensSpec,
    PackagedSpec,
    ParquetSpec,
    parse_spec,
)
from rea_workload.datasets.splits import Splits, split
from rea_workload.datasets.synthetic import generate_synthetic


def load_splits(text: str) -> Splits:
    """Splits of the data set named by the spec string; raises ValueError for a bad spec."""
    return _cached_splits(parse_spec(text))


def load_dataset(spec: DatasetSpec) -> CtrData:
    """The whole encoded data set, before splitting."""
    if isinstance(spec, MovieLensSpec):
        return load_movielens()
    if isinstance(spec, PackagedSpec):
        return load_packaged(spec.name)
    if isinstance(spec, CriteoSpec):
        return load_criteo(spec.path, spec.min_count)
    if isinstance(spec, ParquetSpec):
        return load_parquet(spec)
    return generate_synthetic(spec)


@lru_cache(maxsize=4)
def _cached_splits(spec: DatasetSpec) -> Splits:
    # A job process loads one data set; the cache spares tests and notebooks repeated loads.
    return split(load_dataset(spec))
