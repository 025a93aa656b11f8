"""The phases a campaign runs, in order, and how their names are numbered.

screening (optional: every single hypothesis and the baseline at low fidelity, the best third
promoted; successive halving) → validation (single hypotheses vs the baseline at full fidelity;
further rounds are "validation-2", ...) →
combination (the winners stacked, pairs checked for interaction; then rounds "combination-2",
... adding other hypotheses to the best config, then taking its own out one by one) →
exploitation (Optuna
around the best combination, in rounds "exploitation-1", ...) → selection (the best few configs
again on more seeds, so the winner is picked on a mean, not on one lucky run) → confirmation
(the winner and the baseline on more seeds, on the test split).
"""

from __future__ import annotations

from typing import Literal

PhaseKind = Literal["screening", "validation", "combination", "exploitation", "selection", "confirmation"]

SCREENING: PhaseKind = "screening"
VALIDATION: PhaseKind = "validation"
COMBINATION: PhaseKind = "combination"
EXPLOITATION: PhaseKind = "exploitation"
SELECTION: PhaseKind = "selection"
CONFIRMATION: PhaseKind = "confirmation"
KINDS: tuple[PhaseKind, ...] = (SCREENING, VALIDATION, COMBINATION, EXPLOITATION, SELECTION, CONFIRMATION)

# Phases whose jobs compete to be the winner (picked on validation NE).
SEARCH_KINDS: frozenset[str] = frozenset({VALIDATION, COMBINATION, EXPLOITATION})


def kind(phase: str) -> str:
    """ "validation-2" -> "validation"; a name without a round number is its own kind."""
    name, _, number = phase.rpartition("-")
    return name if name and number.isdigit() else phase


def round_number(phase: str) -> int:
    """ "validation" -> 1, "validation-2" -> 2, "exploitation-3" -> 3."""
    _, _, number = phase.rpartition("-")
    return int(number) if number.isdigit() else 1


def numbered(phase_kind: PhaseKind, number: int) -> str:
    """The name of a kind's ``number``-th round (the first screening or validation round has no number)."""
    return phase_kind if phase_kind in (SCREENING, VALIDATION) and number == 1 else f"{phase_kind}-{number}"


def order(phase: str) -> tuple[int, int]:
    """A sort key: kinds in the order they run, rounds in order within a kind."""
    found = kind(phase)
    position = KINDS.index(found) if found in KINDS else len(KINDS)
    return position, round_number(phase)
