"""Cost estimates for training jobs, learned from the insights DB when it has history.

Two models, and an estimate takes the larger (a budget is better over- than under-estimated):

- the *rate*: mean CPU seconds per unit of fidelity (epochs x data fraction, found by their
  roles: :class:`Fidelity`); without any history, a prior (:meth:`CostModel.prior`) scaled by
  the training rows the workload reports, or a deliberately generous one;
- the *fit*: ``fixed + per_unit * u + per_step * u * 256 / batch_size`` by non-negative least
  squares (SciPy), once there are at least three observations. It knows what the rate cannot:
  a job pays a fixed start-up cost (importing the framework, loading data) whatever its
  fidelity, and a smaller batch means more optimiser steps for the same data.

Both are padded by a safety factor.

The fit can tell the start-up cost from the per-epoch cost only when the history holds jobs
at two or more fidelities; from one fidelity (a campaign without screening) the split is
arbitrary, so a lower fidelity is then estimated at the lowest one seen — never assumed cheaper
— and ``knows_fixed_cost`` says so to whoever would plan on the difference (screening).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import nnls

from rea.knobs import KnobSchema, Role

PRIOR_CPU_SECONDS_PER_EPOCH = 20.0
"""The prior when nothing is known of the data: generous, for a job of unknown size."""
PRIOR_START_CPU_SECONDS = 8.0
PRIOR_CPU_SECONDS_PER_ROW = 4e-5
"""The prior when the workload says how many training rows there are: a start-up cost
(importing the framework, loading data) plus a cost per row and epoch. Measured on the
reference ranker on this project's 2-core machines: about 7 CPU-s to start and 1.5e-5 CPU-s per
row and epoch (``synthetic:rows=40000`` at 1 and 4 epochs: 7.5 and 8.9 CPU-s); the per-row
cost is taken 2.7x higher, since a user's model is often larger than the reference one."""
SAFETY_FACTOR = 1.25
REFERENCE_BATCH = 256
MIN_FIT_OBSERVATIONS = 3


@dataclass(frozen=True)
class Fidelity:
    """Where a workload keeps the knobs a job's cost scales with, found by their roles: epochs
    times data fraction are a job's *units* of work, and its batch size sets the optimiser steps
    per unit. A workload without one of the roles counts it as 1 (a whole pass, all the data)."""

    epochs: str | None = None
    data_fraction: str | None = None
    batch_size: str | None = None

    @classmethod
    def of(cls, schema: KnobSchema) -> Fidelity:
        names = schema.roles()
        return cls(names.get(Role.EPOCHS), names.get(Role.DATA_FRACTION), names.get(Role.BATCH_SIZE))

    def units(self, config: dict[str, Any]) -> float:
        epochs = float(config.get(self.epochs, 1)) if self.epochs else 1.0
        share = float(config.get(self.data_fraction, 1.0)) if self.data_fraction else 1.0
        return epochs * share

    def features(self, config: dict[str, Any]) -> list[float]:
        units = self.units(config)
        batch = float(config.get(self.batch_size, REFERENCE_BATCH)) if self.batch_size else REFERENCE_BATCH
        return [1.0, units, units * REFERENCE_BATCH / max(batch, 1.0)]

    def at_units(self, config: dict[str, Any], units: float) -> dict[str, Any]:
        """``config`` trained for ``units`` (as epochs, on all the data)."""
        changed = dict(config)
        if self.epochs:
            changed[self.epochs] = units
        if self.data_fraction:
            changed[self.data_fraction] = 1.0
        return changed


@dataclass(frozen=True)
class CostModel:
    fidelity: Fidelity
    cpu_seconds_per_unit: float = PRIOR_CPU_SECONDS_PER_EPOCH
    observations: int = 0
    fit: tuple[float, float, float] | None = None  # (fixed, per unit, per step-unit) CPU seconds
    fidelities: tuple[float, float] | None = None  # the lowest and highest fidelity units seen

    @classmethod
    def from_history(
        cls, fidelity: Fidelity, rows: list[dict[str, Any]], training_rows: int | None = None
    ) -> CostModel:
        """``rows``: past results of one workload with ``config`` and ``cost.cpu_seconds``; without
        any, the prior (:meth:`prior`, from ``training_rows`` when known)."""
        seen = [
            (row["config"], float(row["cost"]["cpu_seconds"]))
            for row in rows
            if row.get("cost") and fidelity.units(row["config"]) > 0
        ]
        if not seen:
            return cls.prior(fidelity, training_rows)
        rate = sum(cpu / fidelity.units(config) for config, cpu in seen) / len(seen)
        fit = None
        if len(seen) >= MIN_FIT_OBSERVATIONS:
            coefficients, _ = nnls(
                np.array([fidelity.features(c) for c, _ in seen]), np.array([cpu for _, cpu in seen])
            )
            fit = (float(coefficients[0]), float(coefficients[1]), float(coefficients[2]))
        units = [fidelity.units(config) for config, _ in seen]
        return cls(
            fidelity,
            cpu_seconds_per_unit=rate,
            observations=len(seen),
            fit=fit,
            fidelities=(min(units), max(units)),
        )

    @classmethod
    def prior(cls, fidelity: Fidelity, training_rows: int | None) -> CostModel:
        """What to expect before any job has run: from the data's size when the workload reports
        it (a start-up cost plus a cost per row and epoch), else the generic prior. The model
        size is not used: the first jobs' real costs replace the prior within a phase."""
        if not training_rows:
            return cls(fidelity)
        per_unit = training_rows * PRIOR_CPU_SECONDS_PER_ROW
        return cls(fidelity, cpu_seconds_per_unit=0.0, fit=(PRIOR_START_CPU_SECONDS, per_unit, 0.0))

    @property
    def knows_fixed_cost(self) -> bool:
        """Whether the fit has seen jobs at two or more fidelities, so its start-up cost is real."""
        return (
            self.fit is not None and self.fidelities is not None and self.fidelities[0] < self.fidelities[1]
        )

    def estimate(self, config: dict[str, Any]) -> float:
        units = self.fidelity.units(config)
        if self.fidelities is not None and not self.knows_fixed_cost and units < self.fidelities[0]:
            config = self.fidelity.at_units(config, self.fidelities[0])
            units = self.fidelities[0]
        by_rate = self.cpu_seconds_per_unit * units
        by_fit = 0.0 if self.fit is None else float(np.dot(self.fit, self.fidelity.features(config)))
        return round(max(by_rate, by_fit) * SAFETY_FACTOR, 2)
