"""Vocabulary encoding of raw categorical columns into dense integer ids."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

OOV_ID = 0


def encode_categorical(values: pa.Array | pa.ChunkedArray, min_count: int = 1) -> tuple[np.ndarray, int]:
    """Map values to ids ``1..V`` in sorted vocabulary order; nulls and values seen fewer than
    ``min_count`` times share :data:`OOV_ID`. Returns the ids and the table size ``V + 1``.

    The vocabulary is built from the whole column: that uses no labels, and keeps ids
    identical for every job regardless of how the rows are later split.
    """
    counts = pc.value_counts(values)
    vocabulary = counts.field("values")
    keep = pc.and_(pc.greater_equal(counts.field("counts"), min_count), pc.is_valid(vocabulary))
    vocabulary = pc.filter(vocabulary, keep)
    vocabulary = pc.take(vocabulary, pc.sort_indices(vocabulary))
    positions = pc.index_in(values, value_set=vocabulary).fill_null(-1)
    ids = np.asarray(positions.to_numpy(zero_copy_only=False), dtype=np.int64) + 1
    return ids, len(vocabulary) + 1


def standardised(column: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance, missing -> 0: arbitrary scales would otherwise stall an MLP."""
    finite = np.isfinite(column)
    if not finite.any():
        return np.zeros_like(column)
    mean, std = column[finite].mean(), column[finite].std()
    return np.where(finite, (column - mean) / (std if std > 0 else 1.0), 0.0)
