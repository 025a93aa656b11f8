"""Any parquet table with a 0/1 label column, for users who bring their own data."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rea_workload.datasets.data import CtrData
from rea_workload.datasets.encoding import encode_categorical, standardised
from rea_workload.datasets.spec import ParquetSpec


def load_parquet(spec: ParquetSpec) -> CtrData:
    table = pq.read_table(spec.path)
    columns = table.column_names
    missing = [c for c in (spec.label, *(spec.dense or ()), *(spec.categorical or ())) if c not in columns]
    if missing:
        raise ValueError(f"{spec.path}: no column(s) {missing}; columns are {columns}")
    dense_names, categorical_names = _feature_columns(table, spec)

    labels = np.asarray(table[spec.label].to_numpy(zero_copy_only=False), dtype=np.float64)
    if not np.isin(labels, (0.0, 1.0)).all():
        raise ValueError(f"{spec.path}: label column {spec.label!r} must hold only 0 and 1")
    dense = np.zeros((len(labels), len(dense_names)), dtype=np.float32)
    for i, name in enumerate(dense_names):
        dense[:, i] = standardised(table[name].to_numpy(zero_copy_only=False).astype(np.float64))
    encoded = [encode_categorical(table[c], spec.min_count) for c in categorical_names]
    return CtrData(
        labels=labels.astype(np.float32),
        categorical=np.stack([ids for ids, _ in encoded], axis=1)
        if encoded
        else np.zeros((len(labels), 0), dtype=np.int64),
        categorical_names=categorical_names,
        categorical_cardinalities=[size for _, size in encoded],
        dense=dense,
        dense_names=dense_names,
        metadata={"dataset": "parquet", "path": str(spec.path), "label": spec.label},
    )


def _feature_columns(table: pa.Table, spec: ParquetSpec) -> tuple[list[str], list[str]]:
    """Explicit column lists win; with neither given, float columns are dense, the rest categorical."""
    if spec.dense is not None or spec.categorical is not None:
        return list(spec.dense or ()), list(spec.categorical or ())
    features = [f for f in table.schema if f.name != spec.label]
    dense = [f.name for f in features if pa.types.is_floating(f.type)]
    return dense, [f.name for f in features if f.name not in dense]
