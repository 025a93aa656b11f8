"""Criteo-format click logs: ``label, I1..I13, C1..C26``, tab separated, empty = missing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as csv

from rea_workload.datasets.data import CtrData
from rea_workload.datasets.encoding import encode_categorical

DENSE = [f"I{i}" for i in range(1, 14)]
CATEGORICAL = [f"C{i}" for i in range(1, 27)]


def load_criteo(path: Path, min_count: int) -> CtrData:
    names = ["label", *DENSE, *CATEGORICAL]
    types = {"label": pa.int64(), **{c: pa.float64() for c in DENSE}, **{c: pa.string() for c in CATEGORICAL}}
    table = csv.read_csv(
        path,
        read_options=csv.ReadOptions(column_names=names),
        parse_options=csv.ParseOptions(delimiter="\t", quote_char=False),
        convert_options=csv.ConvertOptions(column_types=types, strings_can_be_null=True),
    )
    labels = table["label"].to_numpy()
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"{path}: the label column must be 0 or 1")
    # Counts are heavy-tailed and sometimes negative: log1p of the clipped value, missing -> 0.
    dense = np.stack(
        [np.log1p(np.maximum(pc.fill_null(table[c], 0.0).to_numpy(), 0.0)) for c in DENSE], axis=1
    )
    encoded = [encode_categorical(table[c], min_count) for c in CATEGORICAL]
    return CtrData(
        labels=labels.astype(np.float32),
        categorical=np.stack([ids for ids, _ in encoded], axis=1),
        categorical_names=CATEGORICAL,
        categorical_cardinalities=[size for _, size in encoded],
        dense=dense.astype(np.float32),
        dense_names=DENSE,
        metadata={"dataset": "criteo", "path": str(path), "min_count": min_count},
    )
