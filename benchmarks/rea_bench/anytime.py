"""Anytime results: what a method had found after each share of its budget.

A method's trials, in the order they finished, with the CPU seconds each used (every trial
counts, a failed or stopped one too) and its validation NE when it gave one. From them: the
best-so-far curve over CPU seconds, and the config with the best validation NE among the
trials done within part of the budget, which the bench confirms on the test split, so "REA at
half the budget" can be set against "Optuna at the full budget". Every method is read the same
way here, whatever rule it used to pick its final config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Trial:
    cpu_seconds: float
    validation_ne: float | None
    """None when the trial gave no result (failed, pruned or stopped)."""
    config: dict[str, Any]


def curve(trials: list[Trial]) -> list[tuple[float, float]]:
    """(CPU seconds spent so far, best validation NE so far) after each trial that lowered it."""
    points: list[tuple[float, float]] = []
    spent = 0.0
    for trial in trials:
        spent += trial.cpu_seconds
        if trial.validation_ne is not None and (not points or trial.validation_ne < points[-1][1]):
            points.append((round(spent, 2), trial.validation_ne))
    return points


def best_within(trials: list[Trial], cpu_seconds: float) -> dict[str, Any] | None:
    """The config with the lowest validation NE among the trials finished within ``cpu_seconds``
    (counted in the order they finished); None when none gave a result by then."""
    spent, best, best_ne = 0.0, None, float("inf")
    for trial in trials:
        spent += trial.cpu_seconds
        if spent > cpu_seconds:
            break
        if trial.validation_ne is not None and trial.validation_ne < best_ne:
            best, best_ne = trial.config, trial.validation_ne
    return best
