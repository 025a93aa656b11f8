"""Multi-fidelity screening: successive halving over the single hypotheses.

Every hypothesis and the baseline first train at a third of their epochs; the best third
(at least one) by validation NE go on to the validation phase at full fidelity, with the
baseline (Jamieson & Talwalkar, Non-stochastic Best Arm Identification and Hyperparameter
Optimization, 2016; Li et al., Hyperband, 2018). One rung: with a handful of epochs a second
would leave too little training to rank by. Screening only pays when a low-fidelity job is
much cheaper than a full one, so ``auto`` asks the learned cost model first.
"""

from __future__ import annotations

import math
from typing import Any

from rea.events import JobRecord, PhasePlan
from rea.phases import SCREENING, VALIDATION, kind
from rea.workloads import get_workload
from rea_planner.campaign import Campaign, CampaignSpec
from rea_planner.costs import CostModel, Fidelity
from rea_planner.jobs import make_job, plan_of

ETA = 3
"""Keep the best 1/ETA, trained at 1/ETA of the epochs: the usual successive-halving rate."""
MIN_SAVING = 0.5
"""``auto`` screens when a low-fidelity job costs at most this share of a full one."""


def low_fidelity(fidelity: Fidelity, config: dict[str, Any]) -> dict[str, Any]:
    """``config`` at a third of its epochs (through the epochs role's knob)."""
    assert fidelity.epochs is not None
    return {**config, fidelity.epochs: max(1, int(config[fidelity.epochs]) // ETA)}


def worth_screening(spec: CampaignSpec, costs: CostModel, hypotheses: int) -> bool:
    """Whether to screen: asked for, or (``auto``) cheap enough by a cost model that has seen
    real jobs at two or more fidelities (the prior, or a fit from one fidelity, knows no
    start-up cost, so it cannot tell); never with fewer epochs or hypotheses than it takes to
    halve them, nor for a workload without an epochs knob."""
    baseline = get_workload(spec.workload).schema.resolve(spec.baseline)
    epochs = costs.fidelity.epochs
    if spec.screening == "off" or epochs is None or int(baseline[epochs]) < ETA or hypotheses < ETA:
        return False
    if spec.screening == "on":
        return True
    low, full = costs.estimate(low_fidelity(costs.fidelity, baseline)), costs.estimate(baseline)
    return costs.knows_fixed_cost and low <= MIN_SAVING * full


def promoted(records: list[JobRecord]) -> list[str]:
    """The hypotheses that survive screening: the best third by low-fidelity validation NE."""
    done = [
        j
        for j in records
        if kind(j.phase) == SCREENING and j.status == "completed" and j.validation and j.hypothesis_id
    ]
    ranked = sorted(done, key=lambda j: j.validation.ne if j.validation else math.inf)
    return [j.hypothesis_id for j in ranked[: max(1, math.ceil(len(ranked) / ETA))] if j.hypothesis_id]


def plan_promotion(campaign: Campaign, records: list[JobRecord], costs: CostModel) -> PhasePlan:
    """The validation phase after screening: the baseline (diagnosed) and the survivors at full
    fidelity, the configs they were screened with otherwise unchanged."""
    assert campaign.spec is not None
    spec = campaign.spec
    baseline = get_workload(spec.workload).schema.resolve(spec.baseline)
    jobs = [make_job(spec, campaign.campaign_id, None, baseline, costs, VALIDATION, diagnose=True)]
    screened = {j.hypothesis_id: j.config for j in records if kind(j.phase) == SCREENING}
    epochs = costs.fidelity.epochs
    assert epochs is not None  # nothing is screened without an epochs knob
    for hypothesis_id in promoted(records):
        config = {**screened[hypothesis_id], epochs: baseline[epochs]}
        jobs.append(make_job(spec, campaign.campaign_id, hypothesis_id, config, costs, VALIDATION))
    return plan_of(VALIDATION, jobs)
