"""Hypothesis generation: turn catalogue techniques into concrete, schema-valid changes, ranked
by their prior and by what they did before on the same workload family (``rea.insights``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from rea.diagnostics import findings, rerank
from rea.events import (
    HypothesesGenerated,
    HypothesesGeneratedPayload,
    HypothesesRequested,
    Hypothesis,
)
from rea.insights import History
from rea.knobs import KnobSchema
from rea.store import Decision
from rea.workloads import Diagnostics, get_workload
from rea_hypothesis.catalogue import CATALOGUE, Technique


class HypothesisSet(BaseModel):
    """What was proposed for a campaign, kept so a repeated request gets the same answer."""

    campaign_id: str
    hypotheses: list[Hypothesis]
    skipped: list[str]
    rejected: list[str] = []
    findings: list[str] = []


def from_catalogue(
    schema: KnobSchema,
    baseline: dict[str, Any],
    limit: int | None,
    catalogue: tuple[Technique, ...] = CATALOGUE,
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
    return hypotheses[:limit] if limit is not None else hypotheses, skipped


PAST_BEST_ID = "history_best"


def with_history(
    hypotheses: list[Hypothesis], history: History, schema: KnobSchema, baseline: dict[str, Any]
) -> tuple[list[Hypothesis], list[str]]:
    """Re-rank by history: each hypothesis' expected gain becomes its past effects shrunk toward
    the catalogue prior; one that is expected to hurt is left out (with the reason); the best
    configuration found before on the family is offered first. Without history, unchanged."""
    ranked: list[Hypothesis] = []
    skipped: list[str] = []
    for hypothesis in hypotheses:
        seen = history.effects.get(hypothesis.id)
        if seen is None:
            ranked.append(hypothesis)
            continue
        expected = seen.shrunk(hypothesis.expected_gain)
        note = f" History on {history.family}: {seen.describe()}; expected gain {expected:+.2%}."
        if expected < 0:
            skipped.append(f"{hypothesis.id}: expected to hurt ({seen.describe()})")
            continue
        ranked.append(
            hypothesis.model_copy(
                update={
                    "expected_gain": expected,
                    "source": "history",
                    "rationale": hypothesis.rationale + note,
                }
            )
        )
    ranked.sort(key=lambda h: -h.expected_gain)
    best = history.best
    if best is not None:
        tunable = {knob.name for knob in schema.knobs if not knob.fidelity}
        changes = {k: v for k, v in best.changes.items() if k in tunable and baseline.get(k) != v}
        if changes and not schema.errors(changes):
            ranked.insert(
                0,
                Hypothesis(
                    id=PAST_BEST_ID,
                    title="The best configuration found before on this family",
                    technique="history",
                    changes=changes,
                    source="history",
                    rationale=(
                        f"Campaign {best.campaign_id} on {history.family} found it: test NE gain "
                        f"{best.gain:+.2%} ({best.verdict})."
                    ),
                    expected_gain=best.gain,
                ),
            )
    return ranked, skipped


LLM_SHARE = 3
"""With an LLM configured, up to a third of the hypotheses (at least one) may be its proposals:
a source someone chose to add should be tried, not ranked out by the catalogue's priors."""


def merged(ranked: list[Hypothesis], suggested: list[Hypothesis], limit: int) -> list[Hypothesis]:
    """The best ``limit`` of catalogue/history hypotheses and the LLM's, its share kept."""
    share = min(len(suggested), max(1, limit // LLM_SHARE)) if suggested else 0
    chosen = ranked[: limit - share] + suggested[:share]
    return sorted(chosen, key=lambda h: (h.id != PAST_BEST_ID, -h.expected_gain))


def on_hypotheses_requested(
    state: HypothesisSet | None,
    event: HypothesesRequested,
    history: History | None = None,
    suggested: tuple[list[Hypothesis], list[str]] = ([], []),
    diagnostics: Diagnostics | None = None,
) -> Decision[HypothesisSet]:
    """Answer a campaign's request: catalogue hypotheses ranked by history and by ``diagnostics``
    of a past run of the same baseline (when there is one), plus ``suggested``: the LLM's
    validated hypotheses and why any of its proposals were dropped (:mod:`rea_hypothesis.llm`)."""
    if state is None:
        request = event.payload
        schema = get_workload(request.workload).schema
        hypotheses, skipped = from_catalogue(schema, request.baseline, None)
        hypotheses, unlikely = with_history(hypotheses, history or History.empty(), schema, request.baseline)
        found = findings(diagnostics) if diagnostics else []
        from_llm, dropped = suggested
        state = HypothesisSet(
            campaign_id=event.campaign_id,
            hypotheses=merged(rerank(hypotheses, found), from_llm, request.max_hypotheses),
            skipped=skipped,
            rejected=[*unlikely, *dropped],
            findings=[str(f) for f in found],
        )
    answer = HypothesesGenerated(
        campaign_id=event.campaign_id,
        correlation_id=event.correlation_id,
        payload=HypothesesGeneratedPayload(
            hypotheses=state.hypotheses, rejected=state.rejected, findings=state.findings
        ),
    )
    return Decision(state, [answer])
