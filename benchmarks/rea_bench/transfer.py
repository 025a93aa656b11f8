"""Transfer: what a method learned on one suite, carried to the cases of another.

The experiment a team runs before trusting a tool's memory: a campaign on a new data set with
the insights DB that earlier campaigns left (``rea-transfer``), against the same campaign on an
empty DB (``rea``) and against Optuna warm-started with the best configs its earlier studies
found (``optuna-transfer``, ``optuna-gp-transfer``; the cold ``optuna`` runs are the peer at
100%). The earlier work is one run per case of the *teaching* suite, on the same seed and
budget; REA's campaigns there write the insights DB its transfer run starts from, and each
Optuna variant's best config per teaching case is enqueued, after the baseline, in its transfer
study (``study.enqueue_trial``, as a user warm-starts a study by hand).

A teaching config is carried to another model the way REA carries a technique: by knob name
where both models declare the knob, else by role (``learning_rate`` on one model is ``lr`` on
another), clamped into the target's range; what the target cannot express is left at its
baseline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rea.knobs import KnobSchema

SUFFIX = "-transfer"
TRANSFERABLE = ("rea", "optuna", "optuna-gp")
"""Methods with a transfer variant: REA (its insights DB) and the Optuna variants (their best
configs); random search has nothing to carry."""
TRANSFER_METHODS = tuple(f"{method}{SUFFIX}" for method in TRANSFERABLE)


def taught(method: str) -> str:
    """The cold method a transfer method runs: ``optuna-transfer`` -> ``optuna``."""
    return method.removesuffix(SUFFIX)


def is_transfer(method: str) -> bool:
    return method.endswith(SUFFIX)


@dataclass
class Lessons:
    """What one seed's teaching runs left behind."""

    seed: int
    insights_db: str | None = None
    """The database REA's teaching campaigns wrote their insights to (None: REA did not teach)."""
    best_changes: dict[str, list[tuple[str, dict[str, Any]]]] = field(default_factory=dict)
    """Per Optuna variant, (model, best config's changes to its baseline) of its run on each
    teaching case."""
    runs: list[dict[str, Any]] = field(default_factory=list)
    """One summary per teaching run, for results.json: method, case, seed, CPU-s, changes."""


def translated(
    changes: dict[str, Any],
    source: KnobSchema,
    target: KnobSchema,
    target_baseline: dict[str, Any],
    space: set[str],
) -> dict[str, Any]:
    """``changes`` to a ``source`` config, as a config of ``target`` restricted to the knobs in
    ``space`` (those the target's study samples); other knobs keep the target's baseline."""
    roles = target.roles()
    out = {name: target_baseline[name] for name in space}
    for name, value in changes.items():
        knob = source[name] if name in source.names() else None
        if name in space:
            goal = name
        elif knob is not None and knob.role is not None and roles.get(knob.role) in space:
            goal = roles[knob.role]
        else:
            continue
        fitted = _fitted(target, goal, value)
        if fitted is not None:
            out[goal] = fitted
    return out


def _fitted(schema: KnobSchema, name: str, value: Any) -> Any:
    """``value`` as a value of knob ``name`` (a number clamped into its range, an int rounded),
    or None when the knob cannot take it (a choice it does not offer, a type it does not have)."""
    knob = schema[name]
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if numeric and knob.low is not None and knob.high is not None:
        inside = min(max(value, knob.low), knob.high)
        value = round(inside) if knob.type == "int" else float(inside)
    return None if knob.check(value) else value
