"""Cost estimates for training jobs, learned from the insights DB when it has history.

Cost scales roughly with epochs x data fraction (the fidelity knobs). With history, the
estimate is the mean observed CPU seconds per unit of fidelity on the same workload and
dataset, padded by a safety factor; without it, a deliberately generous prior.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PRIOR_CPU_SECONDS_PER_EPOCH = 20.0
SAFETY_FACTOR = 1.25


def fidelity_units(config: dict[str, Any]) -> float:
    return float(config.get("epochs", 1)) * float(config.get("data_fraction", 1.0))


@dataclass(frozen=True)
class CostModel:
    cpu_seconds_per_unit: float = PRIOR_CPU_SECONDS_PER_EPOCH
    observations: int = 0

    @classmethod
    def from_history(cls, rows: list[dict[str, Any]]) -> CostModel:
        """``rows``: past results with ``config`` and ``cost.cpu_seconds``."""
        rates = [
            row["cost"]["cpu_seconds"] / fidelity_units(row["config"])
            for row in rows
            if row.get("cost") and fidelity_units(row["config"]) > 0
        ]
        if not rates:
            return cls()
        return cls(cpu_seconds_per_unit=sum(rates) / len(rates), observations=len(rates))

    def estimate(self, config: dict[str, Any]) -> float:
        return round(self.cpu_seconds_per_unit * fidelity_units(config) * SAFETY_FACTOR, 2)
