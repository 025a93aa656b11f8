"""The trained model's serving footprint: its parameters, its size and what inference costs.

A quality gain that doubles the model or its latency may not be worth shipping, so every job
reports this beside its metrics, measured the same way for every config so they compare.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from rea.workloads import ModelFootprint
from rea_workload.batches import Batch, batches
from rea_workload.datasets.data import CtrData

TIMED_ROWS = 50_000  # a prefix of the test split: a stable time, and a bounded cost on big data sets
WARMUP_BATCHES = 3
MIN_TIMED_SECONDS = 0.2  # repeat short passes until this much was timed, so tiny splits time stably
MAX_PASSES = 20
BYTES_PER_MB = 2**20


def measure_footprint(model: nn.Module, data: CtrData, batch_size: int) -> ModelFootprint | None:
    """Parameters, size (parameters plus buffers, MiB) and inference ms per 1,000 rows of ``data``.

    Inference is timed in eval mode under ``torch.no_grad()`` at the thread count torch runs
    with: the trainer pins one thread per job (jobs run side by side, one per core), so this is
    single-threaded latency. Batches are built before the clock starts, so the time is the
    model's (forward pass and sigmoid), not the data conversion's. After ``WARMUP_BATCHES``
    untimed batches, whole passes are timed with ``time.perf_counter`` and the fastest is kept:
    the one least disturbed by other jobs on the machine. None when ``data`` has no rows.
    """
    rows = data.take(np.arange(min(len(data), TIMED_ROWS)))
    if len(rows) == 0:
        return None
    prepared = list(batches(rows, batch_size))
    tensors = [*model.parameters(), *model.buffers()]
    size = sum(t.numel() * t.element_size() for t in tensors)
    model.eval()
    with torch.no_grad():
        for index in range(WARMUP_BATCHES):
            _infer(model, prepared[index % len(prepared)])
        passes: list[float] = []
        while len(passes) < MAX_PASSES and (not passes or sum(passes) < MIN_TIMED_SECONDS):
            start = time.perf_counter()
            for batch in prepared:
                _infer(model, batch)
            passes.append(time.perf_counter() - start)
    return ModelFootprint(
        parameters=sum(p.numel() for p in model.parameters()),
        size_mb=size / BYTES_PER_MB,
        inference_ms_per_1k_rows=min(passes) * 1e6 / len(rows),
    )


def _infer(model: nn.Module, batch: Batch) -> torch.Tensor:
    return torch.sigmoid(model(batch)[0])
