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
from rea.techniques import Technique
from rea.workloads import Diagnostics, get_workload, techniques_of
from rea_hypothesis.catalogue import CATALOGUE
from rea_hypothesis.derived import from_schema


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
    own: tuple[Technique, ...] = (),
) -> tuple[list[Hypothesis], list[str]]:
    """Concrete hypotheses, best prior first: the catalogue's and the workload's ``own``
    techniques bound to this workload's knobs by role, then schema-derived moves of every tunable
    knob none of them changes (:mod:`rea_hypothesis.derived`). Skips techniques the workload
    cannot express or that would not change the baseline, with the reason."""
    hypotheses: list[Hypothesis] = []
    skipped: list[str] = []
    covered: set[str] = set()
    ranked = sorted(
        [(t, "catalogue") for t in catalogue] + [(t, "workload") for t in own], key=lambda p: -p[0].prior_gain
    )
    for technique, source in ranked:
        try:
            changes = technique.bind(schema, baseline)
        except KeyError as missing:
            skipped.append(f"{technique.id}: the workload declares no knob for {missing.args[0]!s}")
            continue
        except ValueError as reason:
            skipped.append(f"{technique.id}: {reason}")
            continue
        problems = schema.errors(changes)
        if problems:
            skipped.append(f"{technique.id}: {'; '.join(problems)}")
            continue
        changes = {k: schema[k].coerce(v) for k, v in changes.items()}
        covered |= set(changes)
        if all(baseline.get(k) == v for k, v in changes.items()):
            skipped.append(f"{technique.id}: the baseline already has it")
            continue
        hypotheses.append(
            Hypothesis(
                id=technique.id,
                title=technique.title,
                technique=technique.technique,
                changes=changes,
                source=source,
                rationale=f"Helps when {technique.helps_when}.",
                citation=technique.citation,
                expected_gain=technique.prior_gain,
                signals=sorted(technique.signals),
            )
        )
    taken = {h.id for h in hypotheses}
    hypotheses += [h for h in from_schema(schema, baseline, covered) if h.id not in taken]
    return hypotheses[:limit] if limit is not None else hypotheses, skipped


PAST_BEST_ID = "history_best"


def with_history(
    hypotheses: list[Hypothesis], history: History, schema: KnobSchema, baseline: dict[str, Any]
) -> tuple[list[Hypothesis], list[str]]:
    """Re-rank by history: each hypothesis' expected gain becomes its past effects (on this
    family, and on other models and data) shrunk toward the catalogue prior; one that is
    expected to hurt is left out (with the reason); the best configuration found before on the
    family is offered first. Without history, unchanged."""
    ranked: list[Hypothesis] = []
    skipped: list[str] = []
    for hypothesis in hypotheses:
        known = history.expected(hypothesis.id, hypothesis.expected_gain)
        if known is None:
            ranked.append(hypothesis)
            continue
        expected, evidence = known
        note = " " + evidence
        if expected < 0:
            skipped.append(f"{hypothesis.id}: expected to hurt ({evidence})")
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
        tunable = {knob.name for knob in schema.knobs if knob.tunable}
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
        workload = get_workload(request.workload)
        schema = workload.schema
        hypotheses, skipped = from_catalogue(schema, request.baseline, None, own=techniques_of(workload))
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
