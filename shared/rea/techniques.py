"""Techniques: the unit of a hypothesis, written against knob roles so one technique serves
every workload that declares the roles it needs.

A :class:`Technique` names its knob changes (a function of the baseline), the condition under
which it applies, a prior effect (relative NE reduction) and where the idea comes from. REA's
catalogue (``rea_hypothesis.catalogue``) is a tuple of them; a workload may ship its own as a
``techniques`` attribute (see :mod:`rea.workloads`), the way Optuna takes a user's sampler:
the hypothesis service ranks a workload's techniques beside the catalogue's.

The contract of ``changes``: it receives the baseline as a :class:`Baseline` and returns the
knob changes, keyed by :class:`~rea.knobs.Role` (bound to whatever knob the workload declares
for it) or by a plain knob name (a workload's own technique may name its own knobs). It raises
``KeyError`` (with the missing role or name) when the workload lacks a knob it needs; the
technique is then skipped with that reason. ``condition`` says whether the technique makes
sense for this baseline at all (for example: clipping only when the baseline does not clip).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rea.knobs import Knob, KnobSchema, Role


@dataclass(frozen=True)
class Baseline:
    """A baseline config as a technique reads it: by role (``base[Role.X]``) or by knob name
    (``base.config["name"]``). Reading a role no knob plays raises ``KeyError(role)``."""

    config: Mapping[str, Any]
    roles: Mapping[Role, Any]

    @classmethod
    def of(cls, schema: KnobSchema, config: Mapping[str, Any]) -> Baseline:
        return cls(dict(config), schema.by_role(config))

    def __getitem__(self, role: Role) -> Any:
        return self.roles[role]

    def __contains__(self, role: object) -> bool:
        return role in self.roles

    def get(self, role: Role, default: Any = None) -> Any:
        return self.roles.get(role, default)


Changes = dict[Role | str, Any]


def _always(_: Baseline) -> bool:
    return True


@dataclass(frozen=True)
class Technique:
    id: str
    title: str
    technique: str
    """The family of ideas it belongs to (e.g. ``dcn_v2``): what insights are kept under."""
    changes: Callable[[Baseline], Changes]
    helps_when: str
    prior_gain: float
    citation: str
    signals: frozenset[str] = frozenset()
    """Diagnostic signals of a baseline run that point to this technique (see ``rea.diagnostics``)."""
    condition: Callable[[Baseline], bool] = field(default=_always)

    def bind(self, schema: KnobSchema, baseline: Mapping[str, Any]) -> dict[str, Any]:
        """This technique's changes to ``baseline`` as knob names and values; raises ``KeyError``
        naming a role or knob the workload lacks, ``ValueError`` when the condition does not hold.

        A numeric value is clamped into its knob's declared range: "10x the learning rate" on a
        workload that allows at most 5x means "as high as the workload allows". Other values are
        returned as they are, for the schema to check."""
        view = Baseline.of(schema, baseline)
        if not self.condition(view):
            raise ValueError("its condition does not hold for this baseline")
        names = schema.roles()
        bound: dict[str, Any] = {}
        for key, value in self.changes(view).items():
            if isinstance(key, Role):
                if key not in names:
                    raise KeyError(key)
                name = names[key]
            elif key in schema.names():
                name = key
            else:
                raise KeyError(key)
            bound[name] = _clamped(schema[name], value)
        return bound


def _clamped(knob: Knob, value: Any) -> Any:
    if knob.type not in ("int", "float") or isinstance(value, bool) or not isinstance(value, int | float):
        return value
    assert knob.low is not None and knob.high is not None
    inside = min(max(value, knob.low), knob.high)
    return round(inside) if knob.type == "int" else float(inside)


def scaled(role: Role, factor: float, as_int: bool = False) -> Callable[[Baseline], Changes]:
    """The change "multiply the baseline's ``role`` knob by ``factor``"."""

    def change(base: Baseline) -> Changes:
        value = base[role] * factor
        return {role: round(value) if as_int else value}

    return change
