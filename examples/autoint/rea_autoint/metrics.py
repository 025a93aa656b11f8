"""NE, AUC and log loss, computed here rather than borrowed, as a user's own workload would.

NE is log loss divided by the entropy of the evaluated split's own positive rate: 1.0 is no
better than predicting the base rate, lower is better, and it compares across click rates.
"""

from __future__ import annotations

import math

import numpy as np

from rea.workloads import SplitMetrics

_EPS = 1e-7


def log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean binary cross-entropy; probabilities are clipped so a confident mistake stays finite."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(probabilities, dtype=np.float64), _EPS, 1.0 - _EPS)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def base_rate_entropy(labels: np.ndarray) -> float:
    """Log loss of predicting the split's positive rate for every row (0 for a single class)."""
    rate = float(np.mean(labels)) if len(labels) else 0.0
    if rate <= 0.0 or rate >= 1.0:
        return 0.0
    return -(rate * math.log(rate) + (1.0 - rate) * math.log(1.0 - rate))


def normalized_entropy(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Log loss over base-rate entropy; 1.0 for a single-class split, where NE is undefined."""
    entropy = base_rate_entropy(labels)
    return 1.0 if entropy == 0.0 else log_loss(labels, probabilities) / entropy


def auc(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """ROC AUC; 0.5 (chance) for a single-class split, where AUC is undefined."""
    # Imported here: scikit-learn takes seconds to import, which a job that fails early never pays.
    from sklearn.metrics import roc_auc_score

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
