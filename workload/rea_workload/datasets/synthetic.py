"""A synthetic CTR generator with planted pairwise feature crosses.

The true logit of a row is::

    intercept + sum_f main[f][x_f] + strength * sum_{(a, b) planted} <u_ab[x_a], v_ab[x_b]> + noise

Main effects have a total standard deviation of 1, and each planted cross has standard
deviation ``strength``. A cross is a low-rank bilinear form of the two fields' values, which
a DCN-v2 cross layer or an FM term represents exactly, while a small ReLU MLP has to
approximate a product. Because the planted pairs are recorded in the metadata, experiments
on this data have a known right answer.
"""

from __future__ import annotations

import itertools

import numpy as np

from rea_workload.datasets.data import CtrData
from rea_workload.datasets.spec import SyntheticSpec

CROSS_RANK = 4


def generate_synthetic(spec: SyntheticSpec) -> CtrData:
    rng = np.random.default_rng(spec.seed)
    values = rng.integers(0, spec.cardinality, size=(spec.rows, spec.fields))

    main = rng.normal(0.0, 1.0 / np.sqrt(spec.fields), size=(spec.fields, spec.cardinality))
    logit = main[np.arange(spec.fields), values].sum(axis=1)

    all_pairs = list(itertools.combinations(range(spec.fields), 2))
    chosen = rng.choice(len(all_pairs), size=spec.crosses, replace=False)
    planted = sorted(all_pairs[i] for i in chosen)
    # Entries with variance 1/sqrt(rank) give <u, v> unit variance.
    scale = CROSS_RANK**-0.25
    for a, b in planted:
        u = rng.normal(0.0, scale, size=(spec.cardinality, CROSS_RANK))
        v = rng.normal(0.0, scale, size=(spec.cardinality, CROSS_RANK))
        logit += spec.strength * np.einsum("ij,ij->i", u[values[:, a]], v[values[:, b]])
    logit += rng.normal(0.0, spec.noise, size=spec.rows)

    logit += _intercept(logit, spec.base_rate)
    labels = (rng.random(spec.rows) < _sigmoid(logit)).astype(np.float32)
    names = [f"f{i}" for i in range(spec.fields)]
    return CtrData(
        labels=labels,
        categorical=values + 1,  # id 0 stays reserved for out-of-vocabulary values
        categorical_names=names,
        categorical_cardinalities=[spec.cardinality + 1] * spec.fields,
        dense=np.zeros((spec.rows, 0), dtype=np.float32),
        dense_names=[],
        metadata={
            "dataset": "synthetic",
            "planted_crosses": [[names[a], names[b]] for a, b in planted],
            "cross_rank": CROSS_RANK,
        },
    )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _intercept(logit: np.ndarray, base_rate: float) -> float:
    """The shift that makes the mean click probability equal ``base_rate`` (bisection)."""
    low, high = -50.0, 50.0
    for _ in range(60):
        mid = (low + high) / 2
        if _sigmoid(logit + mid).mean() < base_rate:
            low = mid
        else:
            high = mid
    return (low + high) / 2
