"""Event contracts: round trips, refusal of malformed input, and topic routing."""

from __future__ import annotations

import json
import typing
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from rea.events import (
    AnyEvent,
    CampaignCompleted,
    CampaignCompletedPayload,
    CampaignRequested,
    CampaignResult,
    Envelope,
    Event,
    HypothesesGenerated,
    HypothesesGeneratedPayload,
    Hypothesis,
    JobCompleted,
    JobFinishedPayload,
    JobRecord,
    JobSpec,
    JobSubmitted,
    KernelPublished,
    KernelPublishedPayload,
    KernelSearchRequested,
    KernelSearchRequestedPayload,
    MetricSummary,
    PhaseConcluded,
    PhaseConcludedPayload,
    describe_error,
    encode_event,
    parse_event,
)
from rea.topics import Topics
from rea.workloads import EpochRecord, JobCost, JobError, JobOutput, SplitMetrics

FOLLOW = {"campaign_id": "camp-1", "correlation_id": "corr-1"}


def job_spec(job_id: str = "camp-1-validation-baseline-s0") -> JobSpec:
    return JobSpec(
        job_id=job_id,
        campaign_id="camp-1",
        phase="validation",
        hypothesis_id=None,
        workload="ranker",
        dataset="synthetic:rows=3000",
        config={"epochs": 2, "learning_rate": 0.001, "fm": True, "optimizer": "adam"},
        estimated_cpu_seconds=12.5,
        timeout_s=60,
        memory_mb=1024,
    )


def split(ne: float) -> SplitMetrics:
    return SplitMetrics(ne=ne, auc=0.7, logloss=0.5, rows=100)


def union_members() -> list[type[Envelope]]:
    union, *_ = typing.get_args(AnyEvent)
    return list(typing.get_args(union))


def event_type(cls: type[Envelope]) -> str:
    return str(cls.model_fields["type"].default)


def sample_events() -> list[Event]:
    output = JobOutput(
        status="ok",
        train=split(0.8),
        validation=split(0.82),
        test=split(0.83),
        history=[EpochRecord(epoch=1, train_loss=0.6, val_ne=0.85)],
        samples_per_second=1234.5,
        parameters=4321,
        cost=JobCost(cpu_seconds=3.5, wall_seconds=2.0, peak_rss_mb=150.0),
    )
    summary = MetricSummary(job_id="j", ne=0.8, auc=0.7, validation_ne=0.81)
    return [
        CampaignRequested(**FOLLOW, payload={"name": "n", "dataset": "movielens-100k", "nested": {"a": [1]}}),
        HypothesesGenerated(
            **FOLLOW,
            payload=HypothesesGeneratedPayload(
                hypotheses=[
                    Hypothesis(
                        id="fm",
                        title="FM",
                        technique="fm_interaction",
                        changes={"fm": True},
                        source="catalogue",
                        rationale="because",
                        citation="Rendle 2010",
                        expected_gain=0.008,
                    )
                ]
            ),
        ),
        JobSubmitted(**FOLLOW, payload=job_spec()),
        JobCompleted(**FOLLOW, payload=JobFinishedPayload(spec=job_spec(), output=output, worker="w1")),
        PhaseConcluded(
            **FOLLOW,
            payload=PhaseConcludedPayload(
                phase="validation",
                jobs=[
                    JobRecord(job_id="a", hypothesis_id=None, config={}, status="completed", test=split(0.8)),
                    JobRecord(
                        job_id="b",
                        hypothesis_id="fm",
                        config={"fm": True},
                        status="failed",
                        error=JobError(kind="oom", message="MemoryError"),
                    ),
                ],
            ),
        ),
        CampaignCompleted(
            **FOLLOW,
            payload=CampaignCompletedPayload(
                result=CampaignResult(
                    baseline=summary,
                    best=summary,
                    best_changes={},
                    ne_delta=0.0,
                    ne_relative_gain=0.0,
                    auc_delta=0.0,
                    jobs_completed=1,
                    jobs_failed=0,
                    compute_seconds=3.5,
                )
            ),
        ),
        KernelSearchRequested(
            search_id="s-1",
            correlation_id="s-1",
            payload=KernelSearchRequestedPayload(operator="layer_norm", budget=8),
        ),
        KernelPublished(
            search_id="s-1",
            correlation_id="s-1",
            payload=KernelPublishedPayload(
                operator="layer_norm",
                target="cpu",
                device="cpu: Intel(R) Xeon(R)",
                digest="0123abcd",
                params={"threads": 2, "simd": True, "order": "rows"},
                speedup_vs_eager=1.7,
                evaluations=8,
                method="mcts_evolution",
            ),
        ),
    ]


def test_a_kernel_search_event_belongs_to_no_campaign_and_is_keyed_by_its_search() -> None:
    event = KernelSearchRequested(
        search_id="s-9", correlation_id="s-9", payload=KernelSearchRequestedPayload(operator="fm_interaction")
    )
    assert event.key() == b"s-9" and event.about_campaign() is None
    assert Topics("pfx").for_event(event.type) == "pfx.kernel.requests"
    with pytest.raises(ValidationError, match="budget"):
        KernelSearchRequestedPayload(operator="fm_interaction", budget=0)


@pytest.mark.parametrize("event", sample_events(), ids=lambda e: e.type)
def test_round_trip_preserves_type_and_every_field(event: Event) -> None:
    parsed = parse_event(encode_event(event))
    assert type(parsed) is type(event)
    assert parsed == event
    assert parse_event(encode_event(event).decode()) == event  # str input too


def test_envelope_defaults_are_fresh_and_timezone_aware() -> None:
    a = CampaignRequested(**FOLLOW, payload={})
    b = CampaignRequested(**FOLLOW, payload={})
    assert a.event_id != b.event_id
    assert a.occurred_at.tzinfo is not None
    assert a.version == 1


def valid_dict(event: Event) -> dict[str, typing.Any]:
    return typing.cast(dict[str, typing.Any], json.loads(encode_event(event)))


def refusal(raw: bytes | str) -> str:
    with pytest.raises(ValidationError) as caught:
        parse_event(raw)
    reason = describe_error(caught.value)
    assert reason and "\n" not in reason
    return reason


@pytest.mark.parametrize("raw", [b"\xff\xfe\x00garbage", b"{", b"", b"not json at all"])
def test_malformed_bytes_are_refused_with_a_json_reason(raw: bytes) -> None:
    assert "Invalid JSON" in refusal(raw)


@pytest.mark.parametrize("raw", [b"[]", b"42", b'"text"'])
def test_json_that_is_not_an_object_is_refused(raw: bytes) -> None:
    refusal(raw)


def test_unknown_type_is_refused_naming_the_type() -> None:
    body = valid_dict(CampaignRequested(**FOLLOW, payload={}))
    body["type"] = "campaign.exploded"
    assert "campaign.exploded" in refusal(json.dumps(body))


def test_missing_type_is_refused_naming_the_discriminator() -> None:
    body = valid_dict(CampaignRequested(**FOLLOW, payload={}))
    del body["type"]
    assert "'type'" in refusal(json.dumps(body))


def test_unsupported_version_is_refused_naming_version() -> None:
    body = valid_dict(CampaignRequested(**FOLLOW, payload={}))
    body["version"] = 2
    reason = refusal(json.dumps(body))
    assert "version" in reason and "campaign.requested" in reason


@pytest.mark.parametrize(
    ("field", "value"),
    [("campaign_id", 5), ("campaign_id", ""), ("correlation_id", None), ("occurred_at", "yesterday")],
)
def test_wrong_envelope_field_is_refused_naming_it(field: str, value: object) -> None:
    body = valid_dict(CampaignRequested(**FOLLOW, payload={}))
    body[field] = value
    assert f"campaign.requested.{field}:" in refusal(json.dumps(body))


def test_missing_envelope_field_is_refused_naming_it() -> None:
    body = valid_dict(CampaignRequested(**FOLLOW, payload={}))
    del body["campaign_id"]
    assert "campaign_id: Field required" in refusal(json.dumps(body))


def test_wrong_payload_field_type_is_refused_naming_the_nested_field() -> None:
    body = valid_dict(JobSubmitted(**FOLLOW, payload=job_spec()))
    body["payload"]["memory_mb"] = "lots"
    body["payload"]["config"] = ["not", "a", "dict"]
    reason = refusal(json.dumps(body))
    assert "job.submitted.payload.memory_mb:" in reason
    assert "job.submitted.payload.config:" in reason


def test_payload_wrong_shape_for_completed_job_is_refused() -> None:
    body = valid_dict(sample_events()[3])
    body["payload"]["output"]["status"] = "great"
    assert "payload.output.status" in refusal(json.dumps(body))


# ---- topics -------------------------------------------------------------------------


def test_union_introspection_sees_every_event_class() -> None:
    members = union_members()
    assert len(members) == 28
    assert len({event_type(cls) for cls in members}) == len(members)  # every type name is distinct


@pytest.mark.parametrize("cls", union_members(), ids=event_type)
def test_every_event_type_has_a_topic(cls: type[Envelope]) -> None:
    topics = Topics("pfx")
    topic = topics.for_event(event_type(cls))
    assert topic in topics.all()
    assert topic != topics.dead_letter
    assert topic.startswith("pfx.")


def test_specific_routes() -> None:
    topics = Topics("x")
    assert topics.for_event("campaign.requested") == topics.campaign_requests
    assert topics.for_event("plan.approved") == topics.control
    assert topics.for_event("proposal.accepted") == topics.control
    assert topics.for_event("job.submitted") == topics.job_queue
    for job_event in ("job.started", "job.completed", "job.failed"):
        assert topics.for_event(job_event) == topics.job_events
    assert topics.for_event("phase.concluded") == topics.executor_events
    assert topics.for_event("hypotheses.generated") == topics.hypothesis_events
    assert len(set(topics.all())) == len(topics.all())
    with pytest.raises(KeyError):
        topics.for_event("campaign.exploded")


def test_job_submitted_is_keyed_by_job_id_others_by_campaign_id() -> None:
    events = [event for event in sample_events() if isinstance(event, Envelope)]
    for event in events:
        expected = event.payload.job_id if isinstance(event, JobSubmitted) else event.campaign_id
        assert event.key() == expected.encode()
    submitted = next(e for e in events if isinstance(e, JobSubmitted))
    assert submitted.key() == b"camp-1-validation-baseline-s0" != submitted.campaign_id.encode()


def test_occurred_at_round_trips_exactly() -> None:
    at = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    event = CampaignRequested(**FOLLOW, payload={}, occurred_at=at)
    assert parse_event(encode_event(event)).occurred_at == at
