"""Deterministic 80/10/10 train/validation/test splits.

The permutation uses a fixed seed, independent of the training seed, so every job of every
method sees identical splits and their metrics are comparable. The test split is for final
reporting only; methods select configs on validation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rea_workload.datasets.data import CtrData

SPLIT_SEED = 20_240_917
TRAIN_SHARE = 0.8
VALIDATION_SHARE = 0.1


@dataclass(frozen=True)
class Splits:
    train: CtrData
    validation: CtrData
    test: CtrData


def split(data: CtrData) -> Splits:
    order = np.random.default_rng(SPLIT_SEED).permutation(len(data))
    n_train = int(len(data) * TRAIN_SHARE)
    n_validation = int(len(data) * VALIDATION_SHARE)
    return Splits(
        train=data.take(order[:n_train]),
        validation=data.take(order[n_train : n_train + n_validation]),
        test=data.take(order[n_train + n_validation :]),
    )


def subsample(train: CtrData, fraction: float) -> CtrData:
    """The first ``fraction`` of the (already shuffled) training rows.

    Taking a prefix makes low-fidelity subsamples fixed and nested: a job at 0.1 sees a
    subset of what a job at 0.5 sees, whatever its seed.
    """
    if fraction >= 1.0:
        return train
    return train.take(np.arange(max(1, math.ceil(len(train) * fraction))))
