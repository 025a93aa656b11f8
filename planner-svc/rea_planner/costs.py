"""Cost estimates for training jobs, learned from the insights DB when it has history.

Two models, and an estimate takes the larger (a budget is better over- than under-estimated):

- the *rate*: mean CPU seconds per unit of fidelity (epochs x data fraction); without any
  history, a deliberately generous prior;
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

PRIOR_CPU_SECONDS_PER_EPOCH = 20.0
SAFETY_FACTOR = 1.25
REFERENCE_BATCH = 256
MIN_FIT_OBSERVATIONS = 3


def fidelity_units(config: dict[str, Any]) -> float:
    return float(config.get("epochs", 1)) * float(config.get("data_fraction", 1.0))


def _features(config: dict[str, Any]) -> list[float]:
    units = fidelity_units(config)
    return [1.0, units, units * REFERENCE_BATCH / max(float(config.get("batch_size", REFERENCE_BATCH)), 1.0)]


@dataclass(frozen=True)
class CostModel:
    cpu_seconds_per_unit: float = PRIOR_CPU_SECONDS_PER_EPOCH
    observations: int = 0
    fit: tuple[float, float, float] | None = None  # (fixed, per unit, per step-unit) CPU seconds
    fidelities: tuple[float, float] | None = None  # the lowest and highest fidelity units seen

    @classmethod
    def from_history(cls, rows: list[dict[str, Any]]) -> CostModel:
        """``rows``: past results with ``config`` and ``cost.cpu_seconds``."""
        seen = [
            (row["config"], float(row["cost"]["cpu_seconds"]))
            for row in rows
            if row.get("cost") and fidelity_units(row["config"]) > 0
        ]
        if not seen:
            return cls()
        rate = sum(cpu / fidelity_units(config) for config, cpu in seen) / len(seen)
        fit = None
        if len(seen) >= MIN_FIT_OBSERVATIONS:
            coefficients, _ = nnls(
                np.array([_features(c) for c, _ in seen]), np.array([cpu for _, cpu in seen])
            )
            fit = (float(coefficients[0]), float(coefficients[1]), float(coefficients[2]))
        units = [fidelity_units(config) for config, _ in seen]
        return cls(
            cpu_seconds_per_unit=rate, observations=len(seen), fit=fit, fidelities=(min(units), max(units))
        )

    @property
    def knows_fixed_cost(self) -> bool:
        """Whether the fit has seen jobs at two or more fidelities, so its start-up cost is real."""
        return (
            self.fit is not None and self.fidelities is not None and self.fidelities[0] < self.fidelities[1]
        )

    def estimate(self, config: dict[str, Any]) -> float:
        units = fidelity_units(config)
        if self.fidelities is not None and not self.knows_fixed_cost and units < self.fidelities[0]:
            config = {**config, "epochs": self.fidelities[0], "data_fraction": 1.0}
            units = self.fidelities[0]
        by_rate = self.cpu_seconds_per_unit * units
        by_fit = 0.0 if self.fit is None else float(np.dot(self.fit, _features(config)))
        return round(max(by_rate, by_fit) * SAFETY_FACTOR, 2)
