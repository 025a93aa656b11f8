"""Permutation importance on a model that reads one feature only."""

from __future__ import annotations

import numpy as np

from rea_workload.datasets.data import CtrData
from rea_workload.datasets.loader import load_splits
from rea_workload.diagnostics import permutation_importance


def test_only_the_feature_a_model_reads_matters() -> None:
    data = load_splits("synthetic:rows=4000").validation
    reads = data.categorical_names[0]

    def predict(rows: CtrData) -> np.ndarray:
        # Reads feature 0 only: a clipped per-id click rate, learnt from the unshuffled rows.
        ids = rows.categorical[:, 0]
        rate = {i: data.labels[data.categorical[:, 0] == i].mean() for i in np.unique(data.categorical[:, 0])}
        return np.clip(np.array([rate.get(i, 0.5) for i in ids]), 0.02, 0.98)

    importance = permutation_importance(predict, data, seed=0)
    assert importance[reads] > 0
    assert all(value == 0 for name, value in importance.items() if name != reads)
