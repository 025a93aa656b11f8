"""The runbook: a declared table of failure patterns and what the executor does about each.

Applied without a human, within guardrails: at most ``MAX_ATTEMPTS`` attempts per job, the
same failure twice gives up on the job, and a retried config must still be legal for the
workload's knob schema. Failures of the infrastructure rather than of the config (a lost
worker, a killed process) are not the job's fault: they are retried up to
``MAX_INFRASTRUCTURE_ATTEMPTS`` times even when they repeat. Only what the table cannot
resolve escalates to a person.

The baseline is the reference every hypothesis is measured against, so a rule that changes the
config does not touch it on a first failure: the baseline is retried unchanged, and a one-off
failure (an unlucky batch, a faulty node) leaves the reference as it was. Only if it fails the
same way again is the rule's change applied, and the proposal reports the baseline as adjusted
by the runbook, with what changed and why.

Rules act on knob roles, never on knob names (:class:`~rea.knobs.Role`): an OOM halves the
knob playing the batch-size role; a NaN cuts the learning-rate role's knob and clips through the
gradient-clip role's knob when the workload has one, else lowers the learning rate alone. A
workload without the role a rule needs (no batch-size knob for an OOM, no learning-rate knob for
a NaN), or whose knob would go below its declared floor, cannot be helped by the rule: the job is given up
with that reason, never retried blindly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from rea.events import JobSpec
from rea.knobs import Knob, KnobSchema, Role
from rea.workloads import JobError, get_workload

Action = Literal["halve_batch", "lower_lr_and_clip", "resubmit", "drop", "escalate"]

MAX_ATTEMPTS = 3
INFRASTRUCTURE_FAILURES = frozenset({"lost_worker", "killed"})
MAX_INFRASTRUCTURE_ATTEMPTS = 5
BACKOFF_BASE_S = 2.0
BACKOFF_MAX_S = 60.0
LR_FACTOR = 1 / 3
CLIP_NORM = 1.0


@dataclass(frozen=True)
class Rule:
    failure: str
    action: Action
    description: str


RUNBOOK: tuple[Rule, ...] = (
    Rule("oom", "halve_batch", "Out of memory: retry with half the batch size."),
    Rule(
        "nan",
        "lower_lr_and_clip",
        "NaN or exploding loss: retry with a third of the learning rate, "
        f"clipping gradients at norm {CLIP_NORM:g} where the workload can clip.",
    ),
    Rule("lost_worker", "resubmit", "Lost worker: resubmit unchanged after an exponential backoff."),
    Rule("killed", "resubmit", "Job killed by a signal: resubmit unchanged after an exponential backoff."),
    Rule("invalid_config", "drop", "Invalid config: drop the job and record why; retrying cannot help."),
    Rule("cancelled", "drop", "Cancelled with its campaign: nothing is retried."),
    Rule(
        "pruned",
        "drop",
        "Stopped early: its learning curve was behind the campaign's median; nothing is retried.",
    ),
    Rule("timeout", "escalate", "Time limit reached: a person decides whether a longer limit is worth it."),
    Rule("error", "escalate", "Unrecognised error: a person should look at the job's log."),
)


@dataclass(frozen=True)
class Recovery:
    """What to do about one failed job; ``retry`` is the job to submit next, if any."""

    action: Action | Literal["give_up"]
    reason: str
    retry: JobSpec | None = None
    escalate: bool = False


CONFIG_CHANGES: frozenset[Action] = frozenset({"halve_batch", "lower_lr_and_clip"})
REFERENCE_FIRST = (
    "The baseline is the reference every hypothesis is compared with: retried unchanged first, so "
    "a one-off failure does not change it; the same failure again applies the runbook's change."
)


def rule_for(failure: str) -> Rule:
    return next((r for r in RUNBOOK if r.failure == failure), RUNBOOK[-1])


def recover(spec: JobSpec, error: JobError, earlier_failures: list[str], now: datetime) -> Recovery:
    """Decide from the runbook; a pure function of the failed job, its lineage and the clock."""
    rule = rule_for(error.kind)
    if rule.action == "drop":
        return Recovery("drop", rule.description)
    if rule.action == "escalate":
        return Recovery("escalate", rule.description, escalate=True)
    infrastructure = error.kind in INFRASTRUCTURE_FAILURES
    reference = spec.hypothesis_id is None
    repeats = earlier_failures.count(error.kind)
    if reference and rule.action in CONFIG_CHANGES and repeats == 0:
        return Recovery("resubmit", REFERENCE_FIRST, retry=_retry(spec, {}, now, 0.0))
    if repeats > (1 if reference else 0) and not infrastructure:
        return Recovery("give_up", f"the same failure ({error.kind}) twice: giving up on this job")
    if spec.attempt >= (MAX_INFRASTRUCTURE_ATTEMPTS if infrastructure else MAX_ATTEMPTS):
        return Recovery("give_up", f"{spec.attempt} attempts used: giving up on this job")
    schema = get_workload(spec.workload).schema
    try:
        changes = _changes(rule.action, schema, schema.resolve(spec.config))
    except ValueError as exc:
        return Recovery("give_up", f"{rule.description} Not possible for this workload: {exc}")
    problems = schema.errors(changes)
    if problems:
        return Recovery("give_up", f"{rule.description} Not possible: {'; '.join(problems)}")
    attempt = spec.attempt + 1
    delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (attempt - 2)) if rule.action == "resubmit" else 0.0
    return Recovery(rule.action, rule.description, retry=_retry(spec, changes, now, delay))


def _retry(spec: JobSpec, changes: dict[str, Any], now: datetime, delay: float) -> JobSpec:
    attempt = spec.attempt + 1
    return spec.model_copy(
        update={
            "job_id": f"{re.sub(r'-a[0-9]+$', '', spec.job_id)}-a{attempt}",
            "attempt": attempt,
            "retry_of": spec.job_id,
            "config": {**spec.config, **changes},
            "not_before": now + timedelta(seconds=delay) if delay else None,
        }
    )


def _changes(action: Action, schema: KnobSchema, config: dict[str, Any]) -> dict[str, Any]:
    """The rule's change to ``config``, through the knobs playing the roles it needs (the schema
    then refuses a value below a knob's floor); raises ValueError when the workload has no such
    knob."""
    if action == "halve_batch":
        batch = _knob(schema, Role.BATCH_SIZE, "batch-size knob")
        return {batch.name: int(config[batch.name]) // 2}
    if action == "lower_lr_and_clip":
        rate = _knob(schema, Role.LEARNING_RATE, "learning-rate knob")
        changes: dict[str, Any] = {rate.name: float(config[rate.name]) * LR_FACTOR}
        clip = schema.knob(Role.GRAD_CLIP)
        if clip is not None:
            changes[clip.name] = min(config[clip.name] or CLIP_NORM, CLIP_NORM)
        return changes
    return {}


def _knob(schema: KnobSchema, role: Role, what: str) -> Knob:
    knob = schema.knob(role)
    if knob is None:
        raise ValueError(f"it declares no {what} (role {role!s})")
    return knob
