from __future__ import annotations

import math

import numpy as np
import pytest

from rea_workload.metrics import auc, log_loss, normalized_entropy, split_metrics


@pytest.fixture
def labels() -> np.ndarray:
    return (np.random.default_rng(0).random(10_000) < 0.3).astype(np.float32)


def test_predicting_the_base_rate_has_ne_one(labels: np.ndarray) -> None:
    assert normalized_entropy(labels, np.full(len(labels), labels.mean())) == pytest.approx(1.0, abs=1e-6)


def test_perfect_predictions_have_ne_near_zero(labels: np.ndarray) -> None:
    assert normalized_entropy(labels, labels.astype(np.float64)) < 1e-5
    assert auc(labels, labels) == 1.0


def test_a_wrong_base_rate_is_worse_than_the_right_one(labels: np.ndarray) -> None:
    assert normalized_entropy(labels, np.full(len(labels), 0.5)) > 1.0


def test_log_loss_matches_the_closed_form() -> None:
    assert log_loss(np.array([1.0, 0.0]), np.array([0.8, 0.4])) == pytest.approx(
        -(math.log(0.8) + math.log(0.6)) / 2
    )


def test_confident_mistakes_stay_finite() -> None:
    assert math.isfinite(log_loss(np.array([1.0, 0.0]), np.array([0.0, 1.0])))


def test_single_class_sets_give_documented_finite_values() -> None:
    ones = np.ones(10)
    assert auc(ones, np.linspace(0, 1, 10)) == 0.5
    assert normalized_entropy(ones, np.full(10, 0.9)) == 1.0


def test_split_metrics_counts_rows(labels: np.ndarray) -> None:
    metrics = split_metrics(labels, np.full(len(labels), 0.3))
    assert metrics.rows == len(labels) and metrics.auc == 0.5
