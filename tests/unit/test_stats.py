"""Statistics: the answers are known from the data each test builds."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats

from rea.stats import compare, holm


def test_a_clear_improvement_is_better_with_an_interval_below_zero() -> None:
    delta = compare([0.800, 0.801, 0.799], [0.820, 0.821, 0.819])
    assert delta.mean == pytest.approx(-0.020)
    assert delta.low is not None and delta.high is not None and delta.low < delta.mean < delta.high < 0
    assert delta.relative_gain == pytest.approx(0.020 / 0.820)
    assert delta.verdict() == "better"


def test_overlapping_noise_is_not_significant() -> None:
    delta = compare([0.80, 0.83, 0.81], [0.81, 0.80, 0.83])
    assert delta.low is not None and delta.high is not None and delta.low < 0 < delta.high
    assert delta.verdict() == "not significant"


def test_a_regression_is_worse() -> None:
    assert compare([0.85, 0.851, 0.849], [0.80, 0.801, 0.799]).verdict() == "worse"


def test_one_seed_gives_a_point_estimate_and_no_claim() -> None:
    delta = compare([0.80], [0.82, 0.83])
    assert delta.mean == pytest.approx(-0.025)
    assert (delta.low, delta.high, delta.p_value) == (None, None, None)
    assert delta.verdict() == "too few seeds"


def test_runs_without_spread_differ_exactly_or_not_at_all() -> None:
    assert compare([0.8, 0.8], [0.8, 0.8]).verdict() == "not significant"
    exact = compare([0.7, 0.7], [0.8, 0.8])
    assert (exact.low, exact.high, exact.verdict()) == (pytest.approx(-0.1), pytest.approx(-0.1), "better")


def test_the_interval_covers_the_true_difference_at_about_its_confidence() -> None:
    rng = np.random.default_rng(7)
    covered = 0
    trials = 400
    for _ in range(trials):
        candidate = rng.normal(0.79, 0.01, size=4)
        reference = rng.normal(0.80, 0.02, size=5)
        delta = compare(list(candidate), list(reference), confidence=0.9)
        assert delta.low is not None and delta.high is not None
        covered += delta.low <= -0.01 <= delta.high
    assert 0.85 <= covered / trials <= 0.95


def test_the_p_value_is_welchs() -> None:
    candidate, reference = [0.80, 0.81, 0.805, 0.79], [0.82, 0.823, 0.818]
    expected = scipy_stats.ttest_ind(candidate, reference, equal_var=False).pvalue
    assert compare(candidate, reference).p_value == pytest.approx(expected)


def test_holm_rejects_in_order_and_stops_at_the_first_that_fails() -> None:
    # Thresholds for 4 tests at 0.05: 0.0125, 0.0167, 0.025, 0.05.
    assert holm([0.010, 0.040, 0.015, 0.030]) == [True, False, True, False]
    assert holm([0.001, 0.002, 0.003, 0.004]) == [True, True, True, True]
    assert holm([0.02, 0.001]) == [True, True]
    assert holm([0.03, 0.03]) == [False, False]
    assert holm([]) == []


def test_holm_is_stricter_than_testing_each_alone() -> None:
    p_values = [0.04, 0.045, 0.03]
    assert all(p < 0.05 for p in p_values)
    assert holm(p_values) == [False, False, False]
