"""The runbook: a declared table of failures and the recovery each gets, within guardrails."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import pytest

from rea.events import JobSpec
from rea.workloads import JobError, get_workload
from rea_executor import runbook
from rea_executor.runbook import (
    BACKOFF_BASE_S,
    BACKOFF_MAX_S,
    CLIP_NORM,
    INFRASTRUCTURE_FAILURES,
    LR_FACTOR,
    MAX_ATTEMPTS,
    MAX_INFRASTRUCTURE_ATTEMPTS,
    REFERENCE_FIRST,
    RUNBOOK,
    Recovery,
    recover,
    rule_for,
)

SCHEMA = get_workload("ranker").schema
NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
BATCH = SCHEMA["batch_size"]
LR = SCHEMA["learning_rate"]
assert BATCH.low is not None and LR.low is not None
MIN_BATCH = int(BATCH.low)
MIN_LR = LR.low

EXPECTED_ACTIONS = {
    "oom": "halve_batch",
    "nan": "lower_lr_and_clip",
    "lost_worker": "resubmit",
    "killed": "resubmit",
    "invalid_config": "drop",
    "cancelled": "drop",
    "pruned": "drop",
    "timeout": "escalate",
    "error": "escalate",
}
RETRYING = [kind for kind, action in EXPECTED_ACTIONS.items() if action not in ("drop", "escalate")]
CONFIG_FAILURES = [kind for kind in RETRYING if kind not in INFRASTRUCTURE_FAILURES]


def job(job_id: str = "camp-1-validation-h1-s0", attempt: int = 1, **config: Any) -> JobSpec:
    return JobSpec(
        job_id=job_id,
        campaign_id="camp-1",
        phase="validation",
        hypothesis_id="h1",
        workload="ranker",
        dataset="synthetic:rows=3000",
        config=SCHEMA.resolve(config),
        seed=7,
        attempt=attempt,
        estimated_cpu_seconds=12.5,
        timeout_s=60,
        memory_mb=1024,
    )


def error(kind: str) -> JobError:
    return JobError.model_validate({"kind": kind, "message": f"it failed: {kind}"})


def retried(recovery: Recovery) -> JobSpec:
    assert recovery.retry is not None, recovery.reason
    return recovery.retry


# ---- the table ----------------------------------------------------------------------


def test_every_failure_kind_has_exactly_one_declared_rule() -> None:
    failures = [rule.failure for rule in RUNBOOK]
    assert len(failures) == len(set(failures))
    kinds = set(get_args(JobError.model_fields["kind"].annotation))
    assert set(failures) == kinds == set(EXPECTED_ACTIONS)
    assert {rule.failure: rule.action for rule in RUNBOOK} == EXPECTED_ACTIONS
    assert all(rule.description for rule in RUNBOOK)


@pytest.mark.parametrize("kind", sorted(EXPECTED_ACTIONS))
def test_rule_for_finds_the_declared_rule(kind: str) -> None:
    rule = rule_for(kind)
    assert rule.failure == kind and rule.action == EXPECTED_ACTIONS[kind]


def test_an_undeclared_failure_falls_back_to_the_error_rule() -> None:
    rule = rule_for("cosmic_ray")
    assert rule.failure == "error" and rule.action == "escalate"


def test_guardrail_constants() -> None:
    assert MAX_ATTEMPTS == 3
    assert pytest.approx(1 / 3) == LR_FACTOR
    assert CLIP_NORM == 1.0
    assert 0 < BACKOFF_BASE_S < BACKOFF_MAX_S


# ---- each rule -----------------------------------------------------------------------


def test_oom_retries_with_half_the_batch_and_nothing_else_changed() -> None:
    failed = job(batch_size=256, dropout=0.1)
    recovery = recover(failed, error("oom"), [], NOW)
    assert recovery.action == "halve_batch" and not recovery.escalate
    assert recovery.reason == rule_for("oom").description
    retry = retried(recovery)
    assert retry.config == {**failed.config, "batch_size": 128}
    assert SCHEMA.errors(retry.config) == []
    assert retry.not_before is None  # only a resubmit backs off


def test_oom_with_an_odd_batch_rounds_down_to_an_int() -> None:
    retry = retried(recover(job(batch_size=255), error("oom"), [], NOW))
    assert retry.config["batch_size"] == 127 and isinstance(retry.config["batch_size"], int)


def test_oom_can_halve_down_to_the_schema_minimum() -> None:
    retry = retried(recover(job(batch_size=2 * MIN_BATCH), error("oom"), [], NOW))
    assert retry.config["batch_size"] == MIN_BATCH
    assert SCHEMA.errors(retry.config) == []


@pytest.mark.parametrize("batch", [MIN_BATCH, MIN_BATCH + 1, 2 * MIN_BATCH - 1])
def test_oom_below_the_schema_minimum_gives_up_naming_the_knob(batch: int) -> None:
    recovery = recover(job(batch_size=batch), error("oom"), [], NOW)
    assert recovery.action == "give_up"
    assert recovery.retry is None and not recovery.escalate
    assert "batch_size" in recovery.reason
    assert f"batch_size={batch // 2}" in recovery.reason


@pytest.mark.parametrize(("clip", "expected_clip"), [(0.0, 1.0), (5.0, 1.0), (1.0, 1.0), (0.5, 0.5)])
def test_nan_retries_with_a_third_of_the_lr_and_clipping(clip: float, expected_clip: float) -> None:
    failed = job(learning_rate=3e-3, grad_clip=clip, mlp_depth=3)
    recovery = recover(failed, error("nan"), [], NOW)
    assert recovery.action == "lower_lr_and_clip" and not recovery.escalate
    retry = retried(recovery)
    assert retry.config["learning_rate"] == pytest.approx(1e-3)
    # clipping is switched on (0 disables it) and never loosened
    assert retry.config["grad_clip"] == expected_clip
    assert {k: v for k, v in retry.config.items() if k not in ("learning_rate", "grad_clip")} == {
        k: v for k, v in failed.config.items() if k not in ("learning_rate", "grad_clip")
    }
    assert SCHEMA.errors(retry.config) == []
    assert retry.not_before is None


def test_nan_with_the_lr_near_its_minimum_gives_up_naming_the_knob() -> None:
    recovery = recover(job(learning_rate=2 * MIN_LR), error("nan"), [], NOW)
    assert recovery.action == "give_up" and recovery.retry is None
    assert "learning_rate" in recovery.reason


@pytest.mark.parametrize("kind", [k for k, a in EXPECTED_ACTIONS.items() if a == "resubmit"])
def test_resubmit_retries_unchanged_after_a_backoff(kind: str) -> None:
    failed = job(batch_size=512)
    recovery = recover(failed, error(kind), [], NOW)
    assert recovery.action == "resubmit" and not recovery.escalate
    retry = retried(recovery)
    assert retry.config == failed.config
    assert retry.not_before == NOW + timedelta(seconds=BACKOFF_BASE_S)


def test_invalid_config_is_dropped_without_a_retry() -> None:
    recovery = recover(job(), error("invalid_config"), [], NOW)
    assert recovery == Recovery("drop", rule_for("invalid_config").description)
    assert recovery.retry is None and not recovery.escalate


@pytest.mark.parametrize("kind", ["timeout", "error"])
def test_timeout_and_unrecognised_errors_escalate_to_a_person(kind: str) -> None:
    recovery = recover(job(), error(kind), [], NOW)
    assert recovery.action == "escalate" and recovery.escalate is True
    assert recovery.retry is None
    assert recovery.reason == rule_for(kind).description


@pytest.mark.parametrize("kind", ["invalid_config", "pruned", "timeout", "error"])
def test_drop_and_escalate_apply_on_any_attempt(kind: str) -> None:
    recovery = recover(job(attempt=MAX_ATTEMPTS), error(kind), [kind], NOW)
    assert recovery.action == EXPECTED_ACTIONS[kind] and recovery.retry is None


# ---- the retried job -------------------------------------------------------------------


@pytest.mark.parametrize("kind", RETRYING)
def test_a_retry_keeps_the_job_identity_and_points_at_the_failed_job(kind: str) -> None:
    failed = job()
    retry = retried(recover(failed, error(kind), [], NOW))
    assert retry.job_id == f"{failed.job_id}-a2"
    assert retry.attempt == 2
    assert retry.retry_of == failed.job_id
    same = [
        *("campaign_id", "phase", "hypothesis_id", "workload", "dataset", "seed"),
        *("estimated_cpu_seconds", "timeout_s", "memory_mb"),
    ]
    assert {f: getattr(retry, f) for f in same} == {f: getattr(failed, f) for f in same}


def test_retry_ids_count_attempts_without_stacking_suffixes() -> None:
    first = job("camp-1-validation-h1-s0", batch_size=1024)
    second = retried(recover(first, error("oom"), [], NOW))
    third = retried(recover(second, error("nan"), ["oom"], NOW))
    assert second.job_id == "camp-1-validation-h1-s0-a2"
    assert third.job_id == "camp-1-validation-h1-s0-a3"
    assert (second.retry_of, third.retry_of) == (first.job_id, second.job_id)
    assert (second.attempt, third.attempt) == (2, 3)
    # each retry builds on the config of the attempt before it
    assert third.config["batch_size"] == 512
    assert third.config["learning_rate"] == pytest.approx(first.config["learning_rate"] * LR_FACTOR)


def test_recover_is_pure() -> None:
    failed = job(batch_size=256)
    before = failed.model_copy(deep=True)
    earlier = ["nan"]
    first = recover(failed, error("oom"), earlier, NOW)
    second = recover(failed, error("oom"), earlier, NOW)
    assert first == second
    assert failed == before and earlier == ["nan"]
    assert first.retry is not failed


# ---- guardrails --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", CONFIG_FAILURES)
def test_the_same_failure_twice_gives_up(kind: str) -> None:
    recovery = recover(job("j-a2", attempt=2), error(kind), [kind], NOW)
    assert recovery.action == "give_up" and recovery.retry is None and not recovery.escalate
    assert kind in recovery.reason and "twice" in recovery.reason


@pytest.mark.parametrize("kind", sorted(INFRASTRUCTURE_FAILURES))
def test_a_repeated_infrastructure_failure_is_retried_again(kind: str) -> None:
    """A lost worker or a killed process says nothing about the config: repeating it is no reason to stop."""
    recovery = recover(job("j-a2", attempt=2), error(kind), [kind], NOW)
    assert recovery.action == "resubmit" and retried(recovery).attempt == 3


def test_a_different_earlier_failure_does_not_stop_a_retry() -> None:
    recovery = recover(job("j-a2", attempt=2), error("oom"), ["nan"], NOW)
    assert retried(recovery).attempt == 3


@pytest.mark.parametrize("kind", RETRYING)
def test_no_retry_once_max_attempts_are_used(kind: str) -> None:
    limit = MAX_INFRASTRUCTURE_ATTEMPTS if kind in INFRASTRUCTURE_FAILURES else MAX_ATTEMPTS
    assert retried(recover(job("j-a2", attempt=limit - 1), error(kind), [], NOW)).attempt == limit
    recovery = recover(job("j-a3", attempt=limit), error(kind), [], NOW)
    assert recovery.action == "give_up" and recovery.retry is None
    assert f"{limit} attempts" in recovery.reason


@pytest.mark.parametrize(
    ("failures", "limit"),
    [
        (["oom", "nan", "oom", "nan"], MAX_ATTEMPTS),
        (["lost_worker", "killed"] * 4, MAX_INFRASTRUCTURE_ATTEMPTS),
    ],
)
def test_a_failing_job_gets_at_most_max_attempts(failures: list[str], limit: int) -> None:
    """Chain failures that the same-failure rule does not stop, so only the attempt limit does."""
    spec, earlier = job(batch_size=4096), list[str]()
    attempts = [spec]
    for kind in failures:
        recovery = recover(spec, error(kind), earlier, NOW)
        if recovery.retry is None:
            assert recovery.action == "give_up"
            break
        earlier.append(kind)
        spec = recovery.retry
        attempts.append(spec)
    assert len(attempts) == limit
    assert [a.attempt for a in attempts] == list(range(1, limit + 1))


def test_backoff_grows_exponentially_and_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    # Lift the attempt limit so the cap is reachable; earlier failures are left empty so
    # the same-failure guardrail does not stop the chain.
    monkeypatch.setattr(runbook, "MAX_INFRASTRUCTURE_ATTEMPTS", 20)
    spec = job()
    delays = []
    for _ in range(9):
        spec = retried(recover(spec, error("lost_worker"), [], NOW))
        assert spec.not_before is not None
        delays.append((spec.not_before - NOW).total_seconds())
    assert delays == [min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**n) for n in range(9)]
    assert delays[:3] == [BACKOFF_BASE_S, 2 * BACKOFF_BASE_S, 4 * BACKOFF_BASE_S]
    assert delays[-1] == BACKOFF_MAX_S and max(delays) == BACKOFF_MAX_S
    assert spec.job_id == "camp-1-validation-h1-s0-a10"


def test_backoff_counts_from_the_failure_time() -> None:
    later = NOW + timedelta(hours=1)
    retry = retried(recover(job(), error("lost_worker"), [], later))
    assert retry.not_before == later + timedelta(seconds=BACKOFF_BASE_S)


def test_oom_on_a_config_that_leaves_batch_size_at_its_default_does_not_crash() -> None:
    partial = job().model_copy(update={"config": {"epochs": 2}})
    recovery = recover(partial, error("oom"), [], NOW)
    assert recovery.action in ("halve_batch", "give_up")
    if recovery.retry is not None:
        assert recovery.retry.config["batch_size"] == int(BATCH.default) // 2


# ---- the baseline is the reference -------------------------------------------------


@pytest.mark.parametrize("kind", CONFIG_FAILURES)
def test_a_baseline_is_retried_unchanged_first_then_the_rule_applies(kind: str) -> None:
    baseline = job(batch_size=256).model_copy(update={"hypothesis_id": None})
    first = recover(baseline, error(kind), [], NOW)
    assert first.action == "resubmit" and first.reason == REFERENCE_FIRST
    assert retried(first).config == baseline.config and retried(first).not_before is None
    second = recover(retried(first), error(kind), [kind], NOW)
    assert second.action == rule_for(kind).action
    assert retried(second).config != baseline.config
    third = recover(retried(second), error(kind), [kind, kind], NOW)
    assert third.action == "give_up"


@pytest.mark.parametrize("kind", CONFIG_FAILURES)
def test_a_hypothesis_gets_the_rules_change_at_once(kind: str) -> None:
    recovery = recover(job(batch_size=256), error(kind), [], NOW)
    assert recovery.action == rule_for(kind).action


class _Renamed:
    """A workload whose knobs share no name with the ranker's: the runbook finds them by role."""

    def __init__(self, *, batch: bool = True, clip: bool = True) -> None:
        from rea.knobs import Knob, KnobSchema, Role

        knobs = [
            Knob(
                name="step", role=Role.LEARNING_RATE, type="float", low=1e-5, high=1.0, log=True, default=0.01
            )
        ]
        if batch:
            knobs.append(
                Knob(name="rows_per_step", role=Role.BATCH_SIZE, type="int", low=8, high=4096, default=512)
            )
        if clip:
            knobs.append(
                Knob(name="max_norm", role=Role.GRAD_CLIP, type="float", low=0.0, high=50.0, default=0.0)
            )
        self.schema = KnobSchema(knobs=knobs)


def renamed_job(monkeypatch: pytest.MonkeyPatch, workload: _Renamed) -> JobSpec:
    monkeypatch.setattr(runbook, "get_workload", lambda name: workload)
    return job().model_copy(update={"workload": "renamed", "config": workload.schema.defaults()})


def test_oom_halves_whatever_knob_plays_the_batch_size_role(monkeypatch: pytest.MonkeyPatch) -> None:
    recovery = recover(renamed_job(monkeypatch, _Renamed()), error("oom"), [], NOW)
    assert recovery.action == "halve_batch" and recovery.retry is not None
    assert recovery.retry.config["rows_per_step"] == 256


def test_nan_lowers_the_learning_rate_role_and_clips_through_the_clip_role(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recovery = recover(renamed_job(monkeypatch, _Renamed()), error("nan"), [], NOW)
    assert recovery.retry is not None
    assert recovery.retry.config["step"] == pytest.approx(0.01 * LR_FACTOR)
    assert recovery.retry.config["max_norm"] == CLIP_NORM


def test_nan_without_a_clip_role_lowers_the_learning_rate_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    recovery = recover(renamed_job(monkeypatch, _Renamed(clip=False)), error("nan"), [], NOW)
    assert recovery.action == "lower_lr_and_clip" and recovery.retry is not None
    assert set(recovery.retry.config) == {"step", "rows_per_step"}
    assert recovery.retry.config["step"] == pytest.approx(0.01 * LR_FACTOR)


def test_oom_without_a_batch_size_role_gives_up_saying_so(monkeypatch: pytest.MonkeyPatch) -> None:
    recovery = recover(renamed_job(monkeypatch, _Renamed(batch=False)), error("oom"), [], NOW)
    assert recovery.action == "give_up" and recovery.retry is None
    assert "no batch-size knob" in recovery.reason
