"""Statistics for comparing configs over seeds: deltas with confidence intervals, and winners
picked with the multiple comparisons in mind.

A metric where lower is better (NE, log loss) is compared as ``candidate - reference``: a
negative delta is an improvement. With fewer than two seeds on either side there is no
variance estimate, so no interval and no claim of significance: the verdict says so rather
than guessing. Intervals are Welch's t (unequal variances; SciPy), the usual choice for a
handful of seeds per arm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import fmean
from typing import Literal

from scipy import stats

Verdict = Literal["better", "worse", "not significant", "too few seeds"]


@dataclass(frozen=True)
class Delta:
    """``candidate - reference`` for a lower-is-better metric, over seeds."""

    mean: float
    low: float | None
    high: float | None
    p_value: float | None
    relative_gain: float  # (reference - candidate) / reference: +0.01 is a 1% improvement
    n_candidate: int
    n_reference: int
    confidence: float

    def verdict(self, alpha: float | None = None) -> Verdict:
        """``alpha`` overrides the test level, e.g. a Holm-adjusted one (see ``holm``)."""
        if self.p_value is None:
            return "too few seeds"
        if self.p_value >= (1 - self.confidence if alpha is None else alpha):
            return "not significant"
        return "better" if self.mean < 0 else "worse"


def compare(candidate: Sequence[float], reference: Sequence[float], confidence: float = 0.95) -> Delta:
    """Welch's t comparison of two sets of per-seed metric values (lower is better)."""
    if not candidate or not reference:
        raise ValueError("both sides need at least one value")
    mean_candidate, mean_reference = fmean(candidate), fmean(reference)
    mean = mean_candidate - mean_reference
    gain = (mean_reference - mean_candidate) / mean_reference if mean_reference else 0.0
    low = high = p_value = None
    if len(candidate) >= 2 and len(reference) >= 2:
        if len(set(candidate)) == 1 and len(set(reference)) == 1:
            # No spread on either side (fully deterministic runs): the difference is exact.
            p_value, low, high = (1.0 if mean == 0 else 0.0), mean, mean
        else:
            result = stats.ttest_ind(candidate, reference, equal_var=False)
            interval = result.confidence_interval(confidence)
            p_value, low, high = float(result.pvalue), float(interval.low), float(interval.high)
    return Delta(mean, low, high, p_value, gain, len(candidate), len(reference), confidence)


def holm(p_values: Sequence[float], alpha: float = 0.05) -> list[bool]:
    """Holm-Bonferroni: which of several hypotheses are rejected at family-wise level ``alpha``.

    Screening many hypotheses against one baseline, the best-looking one is often luck; Holm
    keeps the chance of any false win at ``alpha`` and is never less powerful than Bonferroni.
    """
    order = sorted(range(len(p_values)), key=lambda index: p_values[index])
    rejected = [False] * len(p_values)
    for rank, index in enumerate(order):
        if p_values[index] > alpha / (len(p_values) - rank):
            break
        rejected[index] = True
    return rejected
