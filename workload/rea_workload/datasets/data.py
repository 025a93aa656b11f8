"""The in-memory form of an encoded CTR data set, shared by every loader and the trainer.

Every sparse feature is already mapped to integer ids in ``[0, cardinality)``, with id 0
reserved for missing, rare and unseen values, so the model only needs table sizes.
Multi-valued fields (e.g. a movie's genres) are stored in CSR form (``values`` plus
``offsets``) because that is what ``nn.EmbeddingBag`` consumes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class MultiValued:
    """One multi-valued field in CSR form: row ``i`` holds ``values[offsets[i]:offsets[i + 1]]``."""

    values: np.ndarray
    offsets: np.ndarray

    def take(self, rows: np.ndarray) -> MultiValued:
        starts = self.offsets[rows]
        lengths = self.offsets[rows + 1] - starts
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # Position j of the output comes from starts[row] + (j - offsets[row]).
        gather = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
        return MultiValued(self.values[gather], offsets)

    @classmethod
    def from_lists(cls, rows: list[list[int]]) -> MultiValued:
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum([len(r) for r in rows], out=offsets[1:])
        values = np.fromiter((v for r in rows for v in r), dtype=np.int64, count=int(offsets[-1]))
        return cls(values, offsets)


@dataclass(frozen=True)
class CtrData:
    """Labels plus single-valued ids, multi-valued ids and dense floats for ``len(self)`` rows."""

    labels: np.ndarray  # float32 [n], 0/1
    categorical: np.ndarray  # int64 [n, len(categorical_names)]
    categorical_names: list[str]
    categorical_cardinalities: list[int]
    dense: np.ndarray  # float32 [n, len(dense_names)]
    dense_names: list[str]
    multi: list[MultiValued] = field(default_factory=list)
    multi_names: list[str] = field(default_factory=list)
    multi_cardinalities: list[int] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.labels)
        if self.categorical.shape != (n, len(self.categorical_names)):
            raise ValueError(f"categorical ids have shape {self.categorical.shape}, expected ({n}, ...)")
        if self.dense.shape != (n, len(self.dense_names)):
            raise ValueError(f"dense features have shape {self.dense.shape}, expected ({n}, ...)")
        if any(len(m.offsets) != n + 1 for m in self.multi):
            raise ValueError("every multi-valued field needs one offset per row plus one")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def positive_rate(self) -> float:
        return float(self.labels.mean()) if len(self) else 0.0

    def take(self, rows: np.ndarray) -> CtrData:
        """The given rows, in the given order (metadata is shared)."""
        return CtrData(
            labels=self.labels[rows],
            categorical=self.categorical[rows],
            categorical_names=self.categorical_names,
            categorical_cardinalities=self.categorical_cardinalities,
            dense=self.dense[rows],
            dense_names=self.dense_names,
            multi=[m.take(rows) for m in self.multi],
            multi_names=self.multi_names,
            multi_cardinalities=self.multi_cardinalities,
            metadata=self.metadata,
        )
