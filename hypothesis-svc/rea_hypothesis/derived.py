"""Hypotheses derived from a workload's knob schema alone, for knobs no technique covers.

A team's model has knobs no catalogue knows (a residual switch, a pooling choice, a role REA
has no technique for). Each would be invisible to every phase before exploitation if hypotheses
came only from techniques, so every tunable knob no bound technique changes gets plain moves:

- a log-scale number: halved and doubled;
- a linear number: a quarter of its range down and up (one step for a small integer range);
- a boolean: flipped;
- a categorical: each other choice.

Moves are clamped into the knob's range and dropped when they would not change the baseline.
They carry no citation, so they rank below every cited technique (``DERIVED_PRIOR``, smaller
than any catalogue prior), the first move of each knob ahead of any knob's second, so a short
list still covers as many knobs as it can.
"""

from __future__ import annotations

import re
from typing import Any

from rea.events import Hypothesis
from rea.knobs import Knob, KnobSchema

DERIVED_PRIOR = 0.0005
"""Expected gain of a schema-derived move: below every cited technique, above nothing."""
LINEAR_STEP = 0.25


def moves(knob: Knob, value: Any) -> list[tuple[str, Any]]:
    """The knob's plain moves from ``value``: (a name for the move, the new value)."""
    if knob.type == "bool":
        return [("on" if not value else "off", not value)]
    if knob.type == "categorical":
        return [(f"is_{choice}", choice) for choice in knob.choices or [] if choice != value]
    assert knob.low is not None and knob.high is not None
    if knob.log:
        candidates = [("down", value / 2), ("up", value * 2)]
    else:
        step = (knob.high - knob.low) * LINEAR_STEP
        if knob.type == "int":
            step = max(1, round(step))
        candidates = [("down", value - step), ("up", value + step)]
    found: list[tuple[str, Any]] = []
    for name, raw in candidates:
        moved = min(max(raw, knob.low), knob.high)
        moved = round(moved) if knob.type == "int" else float(moved)
        if moved != value:
            found.append((name, moved))
    return found


def from_schema(schema: KnobSchema, baseline: dict[str, Any], covered: set[str]) -> list[Hypothesis]:
    """Plain moves of every tunable knob outside ``covered`` (the knobs some technique changes)."""
    per_knob: list[list[Hypothesis]] = []
    for knob in schema.knobs:
        if not knob.tunable or knob.name in covered:
            continue
        value = baseline.get(knob.name, knob.default)
        per_knob.append(
            [
                Hypothesis(
                    id=_identifier(f"{knob.name}_{move}"),
                    title=f"{knob.name} {_fmt(value)} -> {_fmt(moved)}",
                    technique=knob.technique or knob.name,
                    changes={knob.name: moved},
                    source="schema",
                    rationale=(
                        f"No technique covers {knob.name!r}"
                        + (f" ({knob.description.rstrip('.')})" if knob.description else "")
                        + "; a plain move within its declared range, so the knob is not left untried."
                    ),
                    expected_gain=DERIVED_PRIOR,
                )
                for move, moved in moves(knob, value)
            ]
        )
    ranked: list[Hypothesis] = []
    for depth in range(max((len(m) for m in per_knob), default=0)):
        ranked += [
            h.model_copy(update={"expected_gain": DERIVED_PRIOR / (1 + depth)})
            for m in per_knob
            if depth < len(m)
            for h in [m[depth]]
        ]
    return ranked


def _identifier(text: str) -> str:
    """A hypothesis id safe inside job ids: letters, digits and underscores."""
    return re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_").lower()


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
