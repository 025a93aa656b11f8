"""Hypothesis generation: turn catalogue techniques into concrete, schema-valid changes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from rea.events import (
    HypothesesGenerated,
    HypothesesGeneratedPayload,
    HypothesesRequested,
    Hypothesis,
)
from rea.knobs import KnobSchema
from rea.store import Decision
from rea.workloads import get_workload
from rea_hypothesis.catalogue import CATALOGUE, Technique


class HypothesisSet(BaseModel):
    """What was proposed for a campaign, kept so a repeated request gets the same answer."""

    campaign_id: str
    hypotheses: list[Hypothesis]
    skipped: list[str]


def from_catalogue(
    schema: KnobSchema, baseline: dict[str, Any], limit: int, catalogue: tuple[Technique, ...] = CATALOGUE
) -> tuple[list[Hypothesis], list[str]]:
    """Concrete hypotheses, best prior first; skips techniques that are invalid for this
    workload's schema or would not change the baseline (with the reason)."""
    hypotheses: list[Hypothesis] = []
    skipped: list[str] = []
    for technique in sorted(catalogue, key=lambda t: -t.prior_gain):
        try:
            changes = technique.changes(baseline)
        except KeyError as missing:
            skipped.append(f"{technique.id}: workload has no knob {missing}")
            continue
        problems = schema.errors(changes)
        if problems:
            skipped.append(f"{technique.id}: {'; '.join(problems)}")
            continue
        changes = {k: schema[k].coerce(v) for k, v in changes.items()}
        if all(baseline.get(k) == v for k, v in changes.items()):
            skipped.append(f"{technique.id}: the baseline already has it")
            continue
        hypotheses.append(
            Hypothesis(
                id=technique.id,
                title=technique.title,
                technique=technique.technique,
                changes=changes,
                source="catalogue",
                rationale=f"Helps when {technique.helps_when}.",
                citation=technique.citation,
                expected_gain=technique.prior_gain,
                signals=sorted(technique.signals),
            )
        )
    return hypotheses[:limit], skipped


def on_hypotheses_requested(
    state: HypothesisSet | None, event: HypothesesRequested
) -> Decision[HypothesisSet]:
    if state is None:
        request = event.payload
        hypotheses, skipped = from_catalogue(
            get_workload(request.workload).schema, request.baseline, request.max_hypotheses
        )
        state = HypothesisSet(campaign_id=event.campaign_id, hypotheses=hypotheses, skipped=skipped)
    answer = HypothesesGenerated(
        campaign_id=event.campaign_id,
        correlation_id=event.correlation_id,
        payload=HypothesesGeneratedPayload(hypotheses=state.hypotheses),
    )
    return Decision(state, [answer])
