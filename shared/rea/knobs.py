"""Knob schemas: the declared search space of a workload.

A workload publishes every setting the agent may change as a :class:`Knob`. The planner
validates each config against the schema before a job is ever submitted, so untrusted
configs (from hypotheses, an LLM, or a person's YAML) never reach a trainer unchecked.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

KnobType = Literal["int", "float", "bool", "categorical"]


class Knob(BaseModel):
    """One tunable setting: its type, legal range, default and the technique it belongs to."""

    name: str
    type: KnobType
    default: Any
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = None
    technique: str = Field(description="The ranking technique this knob expresses, e.g. 'dcn_v2'.")
    description: str = ""
    fidelity: bool = Field(
        default=False, description="True for knobs that trade accuracy for cost (epochs, data fraction)."
    )

    @model_validator(mode="after")
    def _check_declaration(self) -> Knob:
        if self.type in ("int", "float"):
            if self.low is None or self.high is None or self.low > self.high:
                raise ValueError(f"knob {self.name!r}: numeric knobs need low <= high")
            if self.log and self.low <= 0:
                raise ValueError(f"knob {self.name!r}: a log-scale knob needs low > 0")
        if self.type == "categorical" and not self.choices:
            raise ValueError(f"knob {self.name!r}: categorical knobs need choices")
        error = self.check(self.default)
        if error:
            raise ValueError(f"knob {self.name!r}: default is invalid: {error}")
        return self

    def check(self, value: Any) -> str | None:
        """Return why ``value`` is not legal for this knob, or None when it is."""
        if self.type == "bool":
            return None if isinstance(value, bool) else f"{self.name} must be true or false, got {value!r}"
        if self.type == "categorical":
            assert self.choices is not None
            return (
                None
                if any(value == c and type(value) is type(c) for c in self.choices)
                else f"{self.name} must be one of {self.choices}, got {value!r}"
            )
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{self.name} must be a number, got {value!r}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"{self.name} must be finite, got {value!r}"
        if self.type == "int" and isinstance(value, float) and not value.is_integer():
            return f"{self.name} must be an integer, got {value!r}"
        assert self.low is not None and self.high is not None
        if not self.low <= value <= self.high:
            return f"{self.name}={value!r} is outside [{_fmt(self.low)}, {_fmt(self.high)}]"
        return None

    def coerce(self, value: Any) -> Any:
        """Normalise a legal value to the knob's Python type (e.g. 3.0 -> 3 for an int knob)."""
        if self.type == "int":
            return int(value)
        if self.type == "float":
            return float(value)
        return value


class KnobSchema(BaseModel):
    """The whole search space of a workload, keyed by knob name."""

    knobs: list[Knob]

    @model_validator(mode="after")
    def _unique_names(self) -> KnobSchema:
        names = [k.name for k in self.knobs]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ValueError(f"duplicate knob names: {sorted(duplicates)}")
        return self

    def __getitem__(self, name: str) -> Knob:
        for knob in self.knobs:
            if knob.name == name:
                return knob
        raise KeyError(name)

    def names(self) -> list[str]:
        return [k.name for k in self.knobs]

    def defaults(self) -> dict[str, Any]:
        return {k.name: k.default for k in self.knobs}

    def errors(self, overrides: dict[str, Any]) -> list[str]:
        """Every reason why ``overrides`` is not a legal partial config (empty when it is)."""
        known = {k.name: k for k in self.knobs}
        problems = []
        for name, value in overrides.items():
            knob = known.get(name)
            if knob is None:
                problems.append(f"unknown knob {name!r}")
                continue
            error = knob.check(value)
            if error:
                problems.append(error)
        return problems

    def resolve(self, overrides: dict[str, Any], base: dict[str, Any] | None = None) -> dict[str, Any]:
        """``base`` (the defaults if None) updated with ``overrides``; raises ValueError naming
        every bad value."""
        problems = self.errors(overrides)
        if problems:
            raise ValueError("; ".join(problems))
        config = dict(base) if base is not None else self.defaults()
        config.update({name: self[name].coerce(value) for name, value in overrides.items()})
        return config


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"
