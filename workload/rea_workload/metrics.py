"""Ranking metrics: normalized entropy (NE), AUC and log loss.

NE is the headline metric: the average log loss divided by the log loss of always
predicting the evaluated set's own positive rate. 1.0 means no better than the base rate,
lower is better, 0 is perfect. Unlike raw log loss it is comparable across data sets with
different click rates.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import roc_auc_score

from rea.workloads import SplitMetrics

_EPS = 1e-7


def log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean binary cross-entropy, with probabilities clipped so a confident mistake stays finite."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(probabilities, dtype=np.float64), _EPS, 1.0 - _EPS)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def base_rate_entropy(labels: np.ndarray) -> float:
    """Log loss of predicting the positive rate of ``labels`` for every row."""
    rate = float(np.mean(labels))
    if rate <= 0.0 or rate >= 1.0:
        return 0.0
    return -(rate * math.log(rate) + (1.0 - rate) * math.log(1.0 - rate))


def normalized_entropy(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Log loss over base-rate entropy.

    A single-class set has zero entropy, so NE is undefined there; we return 1.0 ("no
    better than the base rate") rather than a non-finite value that cannot go into JSON.
    """
    entropy = base_rate_entropy(labels)
    if entropy == 0.0:
        return 1.0
    return log_loss(labels, probabilities) / entropy


def auc(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """ROC AUC; 0.5 (chance) for a single-class set, where AUC is undefined."""
    if len(np.unique(labels)) < 2:
        return 0.5
    return float(roc_auc_score(labels, probabilities))


def split_metrics(labels: np.ndarray, probabilities: np.ndarray) -> SplitMetrics:
    return SplitMetrics(
        ne=normalized_entropy(labels, probabilities),
        auc=auc(labels, probabilities),
        logloss=log_loss(labels, probabilities),
        rows=len(labels),
    )
