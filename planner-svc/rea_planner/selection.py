"""The selection phase: the best few configs again on more seeds, so the winner is a mean.

Among dozens of single-seed results the lowest validation NE is biased low (the winner's
curse): at these data sizes a config's NE moves between seeds by about as much as most
hypotheses move it, so the best single run is partly the luckiest. When the search ends, the
``contenders`` best distinct configs by validation NE run again on ``selection_seeds`` more
seeds, and the winner is the config with the best *mean* validation NE among those measured on
the most seeds. The test split plays no part in the choice.

The extra seeds are the first ones the confirmation phase uses, so the winner's selection runs
count towards its confirmation and are not run twice. Selection takes at most
:data:`SELECTION_SHARE` of the budget: fewer contenders, or none, on a small one.
"""

from __future__ import annotations

import json
from statistics import fmean
from typing import Any

from rea.events import JobRecord, JobSpec, PhasePlan
from rea.phases import SELECTION, kind
from rea_planner.campaign import Campaign
from rea_planner.costs import CostModel
from rea_planner.jobs import make_job, plan_of, search_records

SELECTION_SHARE = 0.1
"""The most of a campaign's budget selection may take: on a small budget, searching further is
worth more than measuring the best few again."""


def config_key(config: dict[str, Any]) -> str:
    """One config, whatever the order of its keys."""
    return json.dumps(config, sort_keys=True, default=str)


def selection_runs(records: list[JobRecord]) -> list[JobRecord]:
    return [j for j in records if j.status == "completed" and j.validation and kind(j.phase) == SELECTION]


def contenders(records: list[JobRecord], count: int) -> list[JobRecord]:
    """The best search job of each of the ``count`` best distinct configs, by validation NE."""
    best: dict[str, JobRecord] = {}
    for job in sorted(search_records(records), key=_validation_ne):
        best.setdefault(config_key(job.config), job)
    return list(best.values())[:count]


def extra_seeds(campaign: Campaign) -> range:
    assert campaign.spec is not None
    return range(campaign.spec.seed + 1, campaign.spec.seed + 1 + campaign.spec.selection_seeds)


def plan_selection(
    campaign: Campaign, records: list[JobRecord], costs: CostModel, room: float
) -> PhasePlan | None:
    """The affordable contenders on the extra seeds, as many as fit in ``room``; None when
    selection is off, has run, or fewer than two contenders would take part."""
    if _selected(records):
        return None
    picked = affordable_contenders(campaign, records, costs)
    while len(picked) >= 2:
        jobs = _jobs(campaign, picked, costs)
        if sum(j.estimated_cpu_seconds for j in jobs) <= room:
            return plan_of(SELECTION, jobs)
        picked = picked[:-1]
    return None


def selection_reserve(campaign: Campaign, records: list[JobRecord], costs: CostModel) -> float:
    """CPU seconds to keep for the selection phase as the contenders stand now (0 when off)."""
    if _selected(records):
        return 0.0
    return sum(
        j.estimated_cpu_seconds
        for j in _jobs(campaign, affordable_contenders(campaign, records, costs), costs)
    )


def affordable_contenders(campaign: Campaign, records: list[JobRecord], costs: CostModel) -> list[JobRecord]:
    """The best ``contenders`` configs, fewer when their extra runs would take more than
    :data:`SELECTION_SHARE` of the budget; none when fewer than two remain (selection is off)."""
    assert campaign.spec is not None
    picked = contenders(records, campaign.spec.contenders)
    cap = SELECTION_SHARE * campaign.budget_cpu_seconds()
    while len(picked) >= 2 and sum(j.estimated_cpu_seconds for j in _jobs(campaign, picked, costs)) > cap:
        picked = picked[:-1]
    return picked if len(picked) >= 2 else []


def validation_by_config(records: list[JobRecord]) -> dict[str, dict[int, float]]:
    """Validation NE by seed, per config the search ran (keyed by :func:`config_key`), with
    the selection phase's runs of it."""
    by_config: dict[str, dict[int, float]] = {}
    for job in search_records(records):
        assert job.validation is not None
        by_config.setdefault(config_key(job.config), {})[job.seed] = job.validation.ne
    for job in selection_runs(records):
        # A run the runbook retried with another config (a halved batch) measured that config,
        # not the contender: it does not count.
        assert job.validation is not None
        if (seeds := by_config.get(config_key(job.config))) is not None:
            seeds[job.seed] = job.validation.ne
    return by_config


def best_by_mean(records: list[JobRecord]) -> JobRecord | None:
    """The winner: among configs measured on the most seeds (the contenders, once selection
    ran; every config before), the one with the lowest mean validation NE. Returned as its best
    search job, which names its hypotheses."""
    by_config = validation_by_config(records)
    if not by_config:
        return None
    most = max(len(seeds) for seeds in by_config.values())
    most_seeds = (k for k, seeds in by_config.items() if len(seeds) == most)
    key = min(most_seeds, key=lambda k: fmean(by_config[k].values()))
    return min((j for j in search_records(records) if config_key(j.config) == key), key=_validation_ne)


def mean_validation_ne(records: list[JobRecord], config: dict[str, Any]) -> float | None:
    """A config's validation NE over every seed the search and selection measured it on."""
    by_seed = validation_by_config(records).get(config_key(config))
    return fmean(by_seed.values()) if by_seed else None


def _jobs(campaign: Campaign, picked: list[JobRecord], costs: CostModel) -> list[JobSpec]:
    assert campaign.spec is not None
    return [
        make_job(campaign.spec, campaign.campaign_id, job.hypothesis_id, job.config, costs, SELECTION, seed)
        for job in picked
        for seed in extra_seeds(campaign)
    ]


def _selected(records: list[JobRecord]) -> bool:
    return any(kind(j.phase) == SELECTION for j in records)


def _validation_ne(job: JobRecord) -> float:
    return job.validation.ne if job.validation is not None else float("inf")
