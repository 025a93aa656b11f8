"""Mini-batches: slices of a :class:`CtrData` as the tensors the model consumes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from rea_workload.datasets.data import CtrData


@dataclass(frozen=True)
class Batch:
    categorical: torch.Tensor  # int64 [B, single-valued fields]
    multi: list[tuple[torch.Tensor, torch.Tensor]]  # per multi-valued field: (values, offsets [B])
    dense: torch.Tensor  # float32 [B, dense features]
    labels: torch.Tensor  # float32 [B]

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: str | torch.device) -> Batch:
        """The same batch on ``device`` (a GPU's, to run a model there)."""
        return Batch(
            categorical=self.categorical.to(device),
            multi=[(values.to(device), offsets.to(device)) for values, offsets in self.multi],
            dense=self.dense.to(device),
            labels=self.labels.to(device),
        )


def to_batch(data: CtrData) -> Batch:
    return Batch(
        categorical=torch.from_numpy(np.ascontiguousarray(data.categorical, dtype=np.int64)),
        # EmbeddingBag takes one start offset per bag, without the closing total.
        multi=[(torch.from_numpy(m.values), torch.from_numpy(m.offsets[:-1])) for m in data.multi],
        dense=torch.from_numpy(np.ascontiguousarray(data.dense, dtype=np.float32)),
        labels=torch.from_numpy(np.ascontiguousarray(data.labels, dtype=np.float32)),
    )


def batches(data: CtrData, batch_size: int, rng: np.random.Generator | None = None) -> Iterator[Batch]:
    """Consecutive batches in row order, or in a fresh random order when ``rng`` is given."""
    order = rng.permutation(len(data)) if rng is not None else np.arange(len(data))
    for start in range(0, len(data), batch_size):
        yield to_batch(data.take(order[start : start + batch_size]))
