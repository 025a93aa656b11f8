"""An optional hypothesis source: any OpenAI-compatible chat endpoint (``REA_LLM_BASE_URL``).

Its output is untrusted. Every proposal is parsed and checked here against a strict shape and
the workload's knob schema before it can become a :class:`~rea.events.Hypothesis`; whatever
fails is dropped with a logged reason, so nothing malformed ever reaches a job. Answers are
cached in the insights DB by the exact request, so a redelivered request, a restarted service
or a replayed campaign sees the same proposals without asking again. Nothing depends on it:
with no endpoint configured, or one that fails, the catalogue and history carry on alone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import httpx
import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pymongo.asynchronous.collection import AsyncCollection

from rea.events import Hypothesis, utc_now
from rea.knobs import KnobSchema
from rea.llm import ChatEndpoint, UnusableAnswer, ask, listed

log = structlog.get_logger()

ID_PREFIX = "llm_"
GAIN_CAP = 0.01
"""An untrusted claim of gain ranks no higher than this (a relative NE reduction of 1%): it
must not push aside catalogue techniques with published evidence before it has any."""
MAX_ANSWER_CHARS = 100_000


class Proposal(BaseModel):
    """One proposal as the model must write it; anything else in the answer is rejected."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")
    title: str = Field(min_length=1, max_length=200)
    changes: dict[str, Any] = Field(min_length=1, max_length=8)
    rationale: str = Field(min_length=1, max_length=2000)
    citation: str = Field(default="", max_length=300)
    expected_gain: float = Field(default=0.0, ge=-1.0, le=1.0)


@dataclass(frozen=True)
class LlmEndpoint(ChatEndpoint):
    """The chat endpoint, and how many hypotheses to ask it for."""

    max_hypotheses: int = 5


def messages(
    schema: KnobSchema, baseline: dict[str, Any], known: list[str], limit: int
) -> list[dict[str, str]]:
    """The chat request: the knob schema, the baseline and the answer's exact shape."""
    knobs = [
        {
            "name": k.name,
            "type": k.type,
            **({"low": k.low, "high": k.high} if k.type in ("int", "float") else {}),
            **({"choices": k.choices} if k.choices else {}),
            "description": k.description,
        }
        for k in schema.knobs
        if k.tunable
    ]
    task = {
        "task": (
            f"Propose up to {limit} changes to this click-through-rate ranking model that are "
            "likely to lower its normalized entropy (log loss relative to the base rate). "
            "Each changes one to a few knobs; stay inside each knob's range or choices."
        ),
        "knobs": knobs,
        "baseline": {name: baseline[name] for name in (k["name"] for k in knobs) if name in baseline},
        "already_planned": known,
        "answer_format": {
            "hypotheses": [
                {
                    "id": "short_snake_case_name",
                    "title": "one line",
                    "changes": {"knob_name": "new value"},
                    "rationale": "why it should help this model",
                    "citation": "paper title (year), or empty",
                    "expected_gain": "relative NE reduction, e.g. 0.005",
                }
            ]
        },
    }
    return [
        {"role": "system", "content": "You are a ranking-model engineer. Answer with one JSON object only."},
        {"role": "user", "content": json.dumps(task, sort_keys=True)},
    ]


def parse(
    answer: str, schema: KnobSchema, baseline: dict[str, Any], offered: list[Hypothesis], limit: int
) -> tuple[list[Hypothesis], list[str]]:
    """Validated hypotheses from the model's answer, and why each rejected part was dropped.

    Rejects: text that is not one JSON object with a ``hypotheses`` list (code fences around it
    are tolerated), proposals of the wrong shape, unknown knobs, values out of range, fidelity
    knobs (they change the cost, not the model), changes the baseline already has, and ids or
    changes that repeat a hypothesis already on ``offered``."""
    try:
        items = listed(answer, "hypotheses", MAX_ANSWER_CHARS)
    except UnusableAnswer as exc:
        return [], [str(exc)]
    fidelity = {k.name for k in schema.knobs if k.fidelity}
    execution = {k.name for k in schema.knobs if k.execution}
    accepted: list[Hypothesis] = []
    dropped: list[str] = []
    taken = {h.id for h in offered}
    seen_changes = [h.changes for h in offered]
    for index, item in enumerate(items):
        label = f"proposal {index}" + (f" ({item.get('id')!r})" if isinstance(item, dict) else "")
        if len(accepted) >= limit:
            dropped.append(f"{label}: more than {limit} proposals")
            continue
        try:
            proposal = Proposal.model_validate(item)
        except ValidationError as exc:
            shape = "; ".join(f"{_where(e['loc'])}: {e['msg']}" for e in exc.errors())
            dropped.append(f"{label}: {shape}")
            continue
        problems = schema.errors(proposal.changes)
        problems += [f"{name} is a fidelity knob" for name in proposal.changes if name in fidelity]
        problems += [f"{name} is an execution knob" for name in proposal.changes if name in execution]
        if problems:
            dropped.append(f"{label}: {'; '.join(problems)}")
            continue
        changes = {name: schema[name].coerce(value) for name, value in proposal.changes.items()}
        hypothesis_id = ID_PREFIX + proposal.id
        if all(baseline.get(name) == value for name, value in changes.items()):
            dropped.append(f"{label}: the baseline already has it")
        elif hypothesis_id in taken or changes in seen_changes:
            dropped.append(f"{label}: repeats a hypothesis already on offer")
        else:
            taken.add(hypothesis_id)
            seen_changes.append(changes)
            accepted.append(
                Hypothesis(
                    id=hypothesis_id,
                    title=proposal.title,
                    technique="llm",
                    changes=changes,
                    source="llm",
                    rationale=proposal.rationale,
                    citation=proposal.citation,
                    expected_gain=max(0.0, min(proposal.expected_gain, GAIN_CAP)),
                )
            )
    return accepted, dropped


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(map(str, loc)) or "proposal"


async def llm_hypotheses(
    endpoint: LlmEndpoint,
    cache: AsyncCollection[dict[str, Any]],
    schema: KnobSchema,
    baseline: dict[str, Any],
    offered: list[Hypothesis],
) -> tuple[list[Hypothesis], list[str]]:
    """The endpoint's validated hypotheses for this baseline (from the cache when it was asked
    before) and why anything was dropped. Never raises for the endpoint's sake: a failure is
    one reason in the list and no hypotheses."""
    chat = messages(schema, baseline, [h.id for h in offered], endpoint.max_hypotheses)
    key = hashlib.sha256(
        json.dumps([endpoint.base_url, endpoint.model, chat], sort_keys=True).encode()
    ).hexdigest()
    cached = await cache.find_one({"_id": key})
    if cached is not None:
        answer = str(cached["answer"])
    else:
        try:
            answer = await ask(endpoint, chat)
        except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as exc:
            reason = f"llm: endpoint gave no usable answer ({type(exc).__name__}: {exc})"
            log.warning("llm_unavailable", reason=reason)
            return [], [reason]
        await cache.update_one(
            {"_id": key},
            {"$setOnInsert": {"answer": answer, "model": endpoint.model, "asked_at": utc_now()}},
            upsert=True,
        )
    accepted, dropped = parse(answer, schema, baseline, offered, endpoint.max_hypotheses)
    for reason in dropped:
        log.warning("llm_hypothesis_dropped", reason=reason)
    return accepted, [f"llm: {reason}" for reason in dropped]
