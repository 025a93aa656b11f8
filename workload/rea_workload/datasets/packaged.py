"""The tables declared in :mod:`.tables`, read out of their package's archive as CTR tasks."""

from __future__ import annotations

import io
import re
import zipfile
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from rea_workload.datasets.archive import read_member
from rea_workload.datasets.data import CtrData, MultiValued
from rea_workload.datasets.encoding import encode_categorical, standardised
from rea_workload.datasets.tables import TABLES, PackagedTable

WORD = re.compile(r"[a-z']+")


def load_packaged(name: str) -> CtrData:
    table_spec = TABLES[name]
    table = _read_table(table_spec)
    table = table.filter(pc.is_valid(table[table_spec.label]))
    label = table[table_spec.label].to_numpy(zero_copy_only=False)
    if table_spec.positive_above is not None:
        labels = label > table_spec.positive_above
    else:
        labels = np.isin(label, table_spec.positive)
    encoded = [encode_categorical(table[c], table_spec.min_count) for c in table_spec.categorical]
    dense_names = [*table_spec.dense, *table_spec.log_dense]
    dense = np.zeros((len(labels), len(dense_names)), dtype=np.float32)
    for i, column in enumerate(dense_names):
        values = table[column].to_numpy(zero_copy_only=False).astype(np.float64)
        dense[:, i] = standardised(
            np.log1p(np.maximum(values, 0.0)) if column in table_spec.log_dense else values
        )
    multi, multi_names, multi_sizes = [], [], []
    if table_spec.words:
        words, size = _words(table, table_spec.words, table_spec.min_count)
        multi, multi_names, multi_sizes = [words], ["words"], [size]
    return CtrData(
        labels=labels.astype(np.float32),
        categorical=np.stack([ids for ids, _ in encoded], axis=1)
        if encoded
        else np.zeros((len(labels), 0), dtype=np.int64),
        categorical_names=list(table_spec.categorical),
        categorical_cardinalities=[size for _, size in encoded],
        dense=dense,
        dense_names=dense_names,
        multi=multi,
        multi_names=multi_names,
        multi_cardinalities=multi_sizes,
        metadata={"dataset": name, "label": table_spec.label, "source": table_spec.source},
    )


def _read_table(table_spec: PackagedTable) -> pa.Table:
    data = read_member(table_spec.distribution, table_spec.member)
    if table_spec.member.endswith(".csv.zip"):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            (only,) = archive.namelist()
            return pcsv.read_csv(io.BytesIO(archive.read(only)))
    return pq.read_table(io.BytesIO(data))


def _words(table: pa.Table, columns: tuple[str, ...], min_count: int) -> tuple[MultiValued, int]:
    """Each row's distinct lower-case words over ``columns``, as ids ``1..V`` (sorted vocabulary,
    words seen in fewer than ``min_count`` rows dropped); a row with none holds the OOV id 0."""
    texts = pc.binary_join_element_wise(*(pc.fill_null(table[c], "") for c in columns), " ")
    rows = [sorted(set(WORD.findall((text or "").lower()))) for text in texts.to_pylist()]
    counts = Counter(word for row in rows for word in row)
    vocabulary = {w: i + 1 for i, w in enumerate(sorted(w for w, n in counts.items() if n >= min_count))}
    ids = [[vocabulary[w] for w in row if w in vocabulary] or [0] for row in rows]
    return MultiValued.from_lists(ids), len(vocabulary) + 1
