"""The experiment logger's insights documents."""

from __future__ import annotations

from datetime import datetime

import pytest

from rea.events import (
    DeadLetter,
    JobCompleted,
    JobFailed,
    JobFinishedPayload,
    JobSpec,
    PlanApproved,
    PlanApprovedPayload,
)
from rea.workloads import EpochRecord, JobCost, JobError, JobOutput, SplitMetrics
from rea_logger.records import dead_letter_document, event_document, result_document

FOLLOW = {"campaign_id": "camp-1", "correlation_id": "corr-1"}
CONFIG = {"epochs": 2, "fm": True, "learning_rate": 0.003, "optimizer": "adagrad"}


def spec() -> JobSpec:
    return JobSpec(
        job_id="camp-1-validation-fm-s3",
        campaign_id="camp-1",
        phase="validation",
        hypothesis_id="fm",
        workload="ranker",
        dataset="movielens-100k",
        config=CONFIG,
        seed=3,
        attempt=2,
        timeout_s=60,
        memory_mb=1024,
    )


def split(ne: float) -> SplitMetrics:
    return SplitMetrics(ne=ne, auc=0.75, logloss=0.45, rows=2000)


COST = JobCost(cpu_seconds=42.5, wall_seconds=30.0, peak_rss_mb=321.0)


def test_completed_job_document() -> None:
    output = JobOutput(
        status="ok",
        train=split(0.7),
        validation=split(0.8),
        test=split(0.82),
        history=[
            EpochRecord(epoch=1, train_loss=0.5, val_ne=0.85),
            EpochRecord(epoch=2, train_loss=0.4, val_ne=0.8),
        ],
        samples_per_second=900.0,
        parameters=12345,
        cost=COST,
    )
    event = JobCompleted(**FOLLOW, payload=JobFinishedPayload(spec=spec(), output=output, worker="h/w-1"))
    doc = result_document(event)
    assert doc["_id"] == "camp-1-validation-fm-s3"
    assert doc["status"] == "completed"
    assert doc["config"] == CONFIG
    assert doc["validation"] == {"ne": 0.8, "auc": 0.75, "logloss": 0.45, "rows": 2000}
    assert doc["test"]["ne"] == 0.82 and doc["train"]["ne"] == 0.7
    cost = {
        "cpu_seconds": 42.5,
        "wall_seconds": 30.0,
        "peak_rss_mb": 321.0,
        "gpu_seconds": 0.0,
        "measured": True,
    }
    assert doc["cost"] == cost
    assert doc["diagnostics"] is None  # only a diagnosed (baseline) job has them
    assert doc["error"] is None
    assert [h["val_ne"] for h in doc["history"]] == [0.85, 0.8]
    assert (doc["samples_per_second"], doc["parameters"]) == (900.0, 12345)
    assert (doc["campaign_id"], doc["phase"], doc["hypothesis_id"]) == ("camp-1", "validation", "fm")
    assert (doc["workload"], doc["dataset"], doc["seed"], doc["attempt"]) == (
        "ranker",
        "movielens-100k",
        3,
        2,
    )
    assert (doc["worker"], doc["event_id"]) == ("h/w-1", event.event_id)
    assert isinstance(doc["recorded_at"], datetime) and doc["recorded_at"].tzinfo is not None


def test_failed_job_document_captures_the_error_and_cost() -> None:
    output = JobOutput(status="failed", cost=COST, error=JobError(kind="oom", message="MemoryError"))
    event = JobFailed(**FOLLOW, payload=JobFinishedPayload(spec=spec(), output=output, worker="h/w-2"))
    doc = result_document(event)
    assert doc["_id"] == "camp-1-validation-fm-s3"
    assert doc["status"] == "failed"
    assert doc["error"] == {"kind": "oom", "message": "MemoryError"}
    assert doc["cost"]["cpu_seconds"] == 42.5
    assert doc["validation"] is None and doc["test"] is None and doc["train"] is None
    assert doc["history"] == []
    assert doc["config"] == CONFIG


def test_redelivered_result_has_the_same_key() -> None:
    output = JobOutput(status="ok", validation=split(0.8), test=split(0.8))
    a = JobCompleted(**FOLLOW, payload=JobFinishedPayload(spec=spec(), output=output, worker="w"))
    b = JobCompleted(**FOLLOW, payload=JobFinishedPayload(spec=spec(), output=output, worker="w"))
    assert a.event_id != b.event_id
    assert result_document(a)["_id"] == result_document(b)["_id"]
    assert result_document(a)["cost"] is None


def test_event_document_is_keyed_by_event_id_and_keeps_a_real_datetime() -> None:
    event = PlanApproved(**FOLLOW, payload=PlanApprovedPayload(approved_by="alice"))
    doc = event_document(event)
    assert doc["_id"] == event.event_id and "event_id" not in doc
    assert doc["type"] == "plan.approved"
    assert doc["payload"] == {"approved_by": "alice", "auto": False}
    assert doc["occurred_at"] == event.occurred_at


@pytest.mark.parametrize("size", [10, 10_000])
def test_dead_letter_document(size: int) -> None:
    letter = DeadLetter(
        reason="invalid event: x", service="planner", topic="t", original="y", original_size=size
    )
    doc = dead_letter_document(letter)
    assert doc["_id"] == letter.id and "id" not in doc
    assert (doc["reason"], doc["original_size"]) == ("invalid event: x", size)
    assert doc["occurred_at"] == letter.occurred_at
