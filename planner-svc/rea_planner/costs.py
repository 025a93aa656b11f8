"""Cost estimates for training jobs, learned from the insights DB when it has history.

Two models, and an estimate takes the larger (a budget is better over- than under-estimated):

- the *rate*: mean CPU seconds per unit of fidelity (epochs x data fraction, found by their
  roles: :class:`Fidelity`); without any history, a prior (:meth:`CostModel.prior`) scaled by
  the training rows and the model size the workload reports, or a deliberately generous one;
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

from collections.abc import Callable
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
cost is taken 2.7x higher, since a user's model is often larger than the reference one. Kept
as it is when the workload counts the model's parameters too (the per-parameter cost below
adds to it): a parameter count does not see every cost, e.g. attention's weights are applied
once per field."""
PRIOR_CPU_SECONDS_PER_ROW_PARAMETER = 1.1e-10
"""What each of the model's parameters adds to the prior's cost per row and epoch, when the
workload counts them (``parameters``): ``PRIOR_CPU_SECONDS_PER_ROW + this x parameters``, as a
forward and backward pass does work in proportion to the weights a row goes through.
Measured through the reference ranker's entrypoint on this project's 2-core machines, shared
with other work (a run's CPU-s vary by about 1.5), on ``synthetic:rows=40000`` (32,000
training rows) at 1 and 4 epochs, the cost per row and epoch being the difference over
3 x 32,000::

    python -m rea_workload --job JOB.json --output RESULT.json   # RESULT: cost.cpu_seconds
    JOB: {"job_id": "m", "dataset": "synthetic:rows=40000", "config": {<size>, "epochs": 1 or 4}}

    size: embedding_dim, mlp_width x mlp_depth   parameters   1 epoch     4 epochs     per row-epoch
    4, 16 x 1                                         2,177   4.7, 5.7    5.9, 8.4     1.2e-5, 2.8e-5
    8, 64 x 2 (the default)                          11,649   5.2, 7.1    6.9, 5.7     1.7e-5, (<0)
    16, 256 x 2                                     105,601   5.6         8.7          3.2e-5
    32, 512 x 3                                     670,465   10.3, 10.0  19.9, 18.0   1.0e-4, 8.3e-5

Least squares through them: 1.9e-5 CPU-s per row-epoch plus 1.08e-10 per parameter. Table
parameters cost less, but not nothing: the ranker's dense gradients and Adam update every row
of every embedding table at every step (a sparse optimiser would touch only the rows looked
up). On ``synthetic:rows=40000,cardinality=20000`` the default (1,288,449 parameters, 99% in
tables) took 9.0 and 15.0 CPU-s, 6.3e-5 per row-epoch, and ``embedding_dim`` 32 (5,140,929)
14.6 and 32.9 CPU-s, 1.9e-4: 3.3e-11 per table parameter. One rate for every parameter needs
only the total a workload can count, and errs high (about 3x) for a model that is mostly
tables, the side a budget is better erring on. Weights shared across fields cost more than the
law says: AutoInt (``python -m rea_autoint``) with ``field_dim`` 32, three two-head residual
layers and ``tower_units`` 256 (185,601 parameters) took 12.8 and 25.4 CPU-s, 1.3e-4 per
row-epoch against the law's 6.0e-5; its first jobs' real costs replace the prior."""
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


ParameterCount = Callable[[dict[str, Any]], int | None]
"""The parameter count of the model a config builds, None when unknown: the workload's, read
through :func:`rea.workloads.parameters_of`. It must be cheap and deterministic (no I/O): the
planner's decisions call it for every config they price."""


@dataclass(frozen=True)
class ReportedSize:
    """What the prior scales with, as the workload reports it: the training rows, and the size of
    the model each config builds (a config's own, since a hypothesis may widen the model)."""

    training_rows: int
    parameters: ParameterCount | None = None

    def per_unit(self, config: dict[str, Any]) -> float:
        """A cost per row, plus one per row and parameter: the work of a forward and backward
        pass grows with the weights each row goes through."""
        count = self.parameters(config) if self.parameters is not None else None
        per_row = PRIOR_CPU_SECONDS_PER_ROW + PRIOR_CPU_SECONDS_PER_ROW_PARAMETER * (count or 0)
        return self.training_rows * per_row


@dataclass(frozen=True)
class CostModel:
    fidelity: Fidelity
    cpu_seconds_per_unit: float = PRIOR_CPU_SECONDS_PER_EPOCH
    observations: int = 0
    fit: tuple[float, float, float] | None = None  # (fixed, per unit, per step-unit) CPU seconds
    fidelities: tuple[float, float] | None = None  # the lowest and highest fidelity units seen
    size: ReportedSize | None = None  # the prior's, when the workload reports its training rows

    @classmethod
    def from_history(
        cls,
        fidelity: Fidelity,
        rows: list[dict[str, Any]],
        training_rows: int | None = None,
        parameters: ParameterCount | None = None,
    ) -> CostModel:
        """``rows``: past results of one workload with ``config`` and ``cost.cpu_seconds``; without
        any, the prior (:meth:`prior`, from ``training_rows`` and ``parameters`` when known)."""
        seen = [
            (row["config"], float(row["cost"]["cpu_seconds"]))
            for row in rows
            if row.get("cost") and fidelity.units(row["config"]) > 0
        ]
        if not seen:
            return cls.prior(fidelity, training_rows, parameters)
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
    def prior(
        cls, fidelity: Fidelity, training_rows: int | None, parameters: ParameterCount | None = None
    ) -> CostModel:
        """What to expect before any job has run: from the data's size when the workload reports
        it (a start-up cost plus a cost per row and epoch, more for a config whose model has more
        parameters, when the workload counts them), else the generic prior. The first jobs' real
        costs replace it within a phase."""
        if not training_rows:
            return cls(fidelity)
        return cls(fidelity, cpu_seconds_per_unit=0.0, size=ReportedSize(training_rows, parameters))

    @property
    def knows_fixed_cost(self) -> bool:
        """Whether the fit has seen jobs at two or more fidelities, so its start-up cost is real."""
        return (
            self.fit is not None and self.fidelities is not None and self.fidelities[0] < self.fidelities[1]
        )

    def _fit_for(self, config: dict[str, Any]) -> tuple[float, float, float] | None:
        """The fit that prices ``config``: the learned one, or the prior's for this config's model."""
        if self.size is None:
            return self.fit
        return (PRIOR_START_CPU_SECONDS, self.size.per_unit(config), 0.0)

    def estimate(self, config: dict[str, Any]) -> float:
        units = self.fidelity.units(config)
        if self.fidelities is not None and not self.knows_fixed_cost and units < self.fidelities[0]:
            config = self.fidelity.at_units(config, self.fidelities[0])
            units = self.fidelities[0]
        by_rate = self.cpu_seconds_per_unit * units
        fit = self._fit_for(config)
        by_fit = 0.0 if fit is None else float(np.dot(fit, self.fidelity.features(config)))
        return round(max(by_rate, by_fit) * SAFETY_FACTOR, 2)
