"""What the experiment logger writes to the insights DB, as plain functions of events."""

from __future__ import annotations

from typing import Any

from rea.events import AnyEvent, CampaignCompleted, DeadLetter, JobCompleted, JobFailed, utc_now
from rea.insights import EFFECTS, WINNERS, family


def event_document(event: AnyEvent) -> dict[str, Any]:
    """Every event, verbatim, keyed by ``event_id`` so a redelivery is stored once."""
    return {
        "_id": event.event_id,
        **event.model_dump(mode="json", exclude={"event_id"}),
        "occurred_at": event.occurred_at,
    }


def result_document(event: JobCompleted | JobFailed) -> dict[str, Any]:
    """One row per finished job, keyed by ``job_id``: config, metrics, cost and failure."""
    spec, output = event.payload.spec, event.payload.output
    return {
        "_id": spec.job_id,
        "campaign_id": event.campaign_id,
        "phase": spec.phase,
        "hypothesis_id": spec.hypothesis_id,
        "workload": spec.workload,
        "dataset": spec.dataset,
        "seed": spec.seed,
        "attempt": spec.attempt,
        "config": spec.config,
        "status": "completed" if isinstance(event, JobCompleted) else "failed",
        "train": output.train.model_dump() if output.train else None,
        "validation": output.validation.model_dump() if output.validation else None,
        "test": output.test.model_dump() if output.test else None,
        "history": [h.model_dump() for h in output.history],
        "samples_per_second": output.samples_per_second,
        "parameters": output.parameters,
        "cost": output.cost.model_dump() if output.cost else None,
        "error": output.error.model_dump() if output.error else None,
        "diagnostics": output.diagnostics.model_dump() if output.diagnostics else None,
        "worker": event.payload.worker,
        "event_id": event.event_id,
        "recorded_at": utc_now(),
    }


def dead_letter_document(letter: DeadLetter) -> dict[str, Any]:
    return {
        "_id": letter.id,
        **letter.model_dump(mode="json", exclude={"id"}),
        "occurred_at": letter.occurred_at,
    }


Upsert = tuple[str, dict[str, Any], dict[str, Any]]  # (collection, filter, update)


def insight_updates(event: CampaignCompleted) -> list[Upsert]:
    """A completed campaign's lessons for its family: each validated hypothesis' effect (one
    document per family and hypothesis, one field per campaign, so a redelivery rewrites the
    same value) and the winning changes (one document per campaign)."""
    payload = event.payload
    if not payload.workload:
        return []
    name = family(payload.workload, payload.dataset)
    updates: list[Upsert] = [
        (
            EFFECTS,
            {"_id": f"{name}|{hypothesis_id}"},
            {
                "$set": {
                    "family": name,
                    "hypothesis_id": hypothesis_id,
                    f"effects.{event.campaign_id}": effect,
                }
            },
        )
        for hypothesis_id, effect in payload.result.effects.items()
    ]
    if payload.result.best_changes:
        updates.append(
            (
                WINNERS,
                {"_id": event.campaign_id},
                {
                    "$set": {
                        "family": name,
                        "dataset": payload.dataset,
                        "changes": payload.result.best_changes,
                        "gain": payload.result.ne_relative_gain,
                        "verdict": payload.result.verdict,
                        "completed_at": event.occurred_at,
                    }
                },
            )
        )
    return updates
