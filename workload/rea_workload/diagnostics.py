"""Permutation feature importance: how much worse the trained model predicts when one
feature's values are shuffled across rows (Breiman, Random Forests, 2001; Fisher et al., All
Models are Wrong, but Many are Useful, 2019). Model-agnostic and needs no retraining: one
extra prediction pass per feature, on at most ``MAX_ROWS`` validation rows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from rea_workload.datasets.data import CtrData
from rea_workload.metrics import normalized_entropy

MAX_ROWS = 20_000


def permutation_importance(
    predict: Callable[[CtrData], np.ndarray], data: CtrData, seed: int
) -> dict[str, float]:
    """Validation NE increase per feature when its column is shuffled (higher matters more)."""
    rng = np.random.default_rng(seed)
    rows = data.take(np.arange(min(len(data), MAX_ROWS)))
    base = normalized_entropy(rows.labels, predict(rows))
    importance: dict[str, float] = {}
    for index, name in enumerate(rows.categorical_names):
        column = rows.categorical.copy()
        column[:, index] = rng.permutation(column[:, index])
        importance[name] = _increase(predict, replace(rows, categorical=column), base)
    for index, name in enumerate(rows.dense_names):
        dense = rows.dense.copy()
        dense[:, index] = rng.permutation(dense[:, index])
        importance[name] = _increase(predict, replace(rows, dense=dense), base)
    for index, name in enumerate(rows.multi_names):
        multi = list(rows.multi)
        multi[index] = multi[index].take(rng.permutation(len(rows)))
        importance[name] = _increase(predict, replace(rows, multi=multi), base)
    return importance


def _increase(predict: Callable[[CtrData], np.ndarray], shuffled: CtrData, base: float) -> float:
    return round(normalized_entropy(shuffled.labels, predict(shuffled)) - base, 6)
