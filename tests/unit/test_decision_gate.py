"""The decision gate on the real SecantusDB: signatures, replays and the audit trail."""

from __future__ import annotations

from datetime import datetime, timedelta

from rea.decisions import AUDIT, AuditEntry, DecisionGate, Delivery
from rea.events import (
    KernelSearchRequested,
    KernelSearchRequestedPayload,
    PhasePlan,
    PhaseStarted,
    PhaseStartedPayload,
    PlanApproved,
    PlanApprovedPayload,
)
from rea.signing import DecisionKey, Keyring, Signer, signing_bytes
from rea.store import Store

NOW = datetime.fromisoformat("2026-12-04T06:00:00+00:00")
KEY = DecisionKey("local", bytes(range(32)))
FOLLOW = {"campaign_id": "camp-1", "correlation_id": "camp-1", "occurred_at": NOW}
AT = Delivery(topic="control", partition=0, offset=7)


def gate(store: Store, consumer: str = "planner", required: bool = True) -> DecisionGate:
    return DecisionGate(store.db, consumer, Keyring({"local": KEY}), required=required, clock=lambda: NOW)


def approval(nonce: str = "a" * 32, by: str = "alice") -> PlanApproved:
    event = PlanApproved(**FOLLOW, payload=PlanApprovedPayload(approved_by=by))
    return Signer(KEY, by).sign(event, NOW, 300, nonce)


async def trail(store: Store) -> list[AuditEntry]:
    return [AuditEntry.model_validate(doc) async for doc in store.db[AUDIT].find().sort("at", 1)]


async def test_a_signed_decision_passes_once_and_is_audited(store: Store) -> None:
    judge = gate(store)
    event = approval()
    assert await judge(event, AT) is None
    assert await judge(event, AT) is None  # the broker delivering it again: the same position
    [entry] = await trail(store)
    assert (entry.verdict, entry.decided_by, entry.signed_by, entry.key_id) == (
        "accepted",
        "alice",
        "alice",
        "local",
    )
    assert entry.summary == "plan.approved" and entry.consumer == "planner"


async def test_a_replay_is_refused_and_audited(store: Store) -> None:
    judge = gate(store)
    event = approval()
    assert await judge(event, AT) is None
    again = Delivery(topic="control", partition=0, offset=99)
    assert await judge(event, again) == "replayed: this signed decision was already received"
    same_nonce = approval()  # a new event, signed with a nonce already used
    assert same_nonce.event_id != event.event_id
    assert await judge(same_nonce, again) == "replayed: this signed decision was already received"
    verdicts = sorted((entry.event_id == event.event_id, entry.verdict) for entry in await trail(store))
    assert verdicts == [(False, "refused"), (True, "accepted"), (True, "refused")]


async def test_each_service_keeps_its_own_nonces(store: Store) -> None:
    event = approval()
    assert await gate(store, "planner")(event, AT) is None
    assert await gate(store, "executor")(event, AT) is None
    assert {entry.consumer for entry in await trail(store)} == {"planner", "executor"}


async def test_forgeries_are_refused_with_the_reason(store: Store) -> None:
    judge = gate(store)
    unsigned = PlanApproved(**FOLLOW, payload=PlanApprovedPayload(approved_by="mallory"))
    assert await judge(unsigned, AT) == "unsigned"
    other_key = DecisionKey("local", bytes(32))
    forged = Signer(other_key, "mallory").sign(unsigned, NOW, 300, "b" * 32)
    assert await judge(forged, AT) == "bad signature: the decision was altered, or signed with another key"
    stale = PlanApproved(
        **{**FOLLOW, "occurred_at": NOW - timedelta(hours=1)},
        payload=PlanApprovedPayload(approved_by="alice"),
    )
    late = Signer(KEY, "alice").sign(stale, NOW - timedelta(hours=1), 300, "c" * 32)
    assert (await judge(late, AT) or "").startswith("expired at")
    assert [entry.verdict for entry in await trail(store)] == ["refused"] * 3


async def test_unsigned_decisions_pass_where_signatures_are_not_required(store: Store) -> None:
    unsigned = PlanApproved(**FOLLOW, payload=PlanApprovedPayload(approved_by="bob"))
    assert await gate(store, required=False)(unsigned, AT) is None
    [entry] = await trail(store)
    assert (entry.verdict, entry.signed_by) == ("accepted", None)


async def test_other_events_pass_unaudited(store: Store) -> None:
    started = PhaseStarted(
        **FOLLOW,
        payload=PhaseStartedPayload(
            plan=PhasePlan(phase="validation", jobs=[], estimated_cpu_seconds=1.0),
            budget_cpu_seconds=10.0,
            max_parallel_jobs=1,
        ),
    )
    assert await gate(store)(started, AT) is None
    assert await trail(store) == []


async def test_a_kernel_search_request_is_a_signed_decision_in_its_requesters_name(store: Store) -> None:
    """A search spends machine time and LLM calls and feeds the registry trainers read: the
    kernel service acts only on a request signed by the person it names."""
    judge = gate(store, consumer="kernel")
    request = KernelSearchRequested(
        search_id="s-1",
        correlation_id="s-1",
        occurred_at=NOW,
        payload=KernelSearchRequestedPayload(operator="layer_norm", synthesized=4, requested_by="alice"),
    )
    assert await judge(request, AT) == "unsigned"
    signed = Signer(KEY, "alice").sign(request, NOW, 300, "c" * 32)
    more = signed.payload.model_copy(update={"synthesized": 200})
    assert await judge(signed.model_copy(update={"payload": more}), AT) == (
        "bad signature: the decision was altered, or signed with another key"
    )
    cold = signed.payload.model_copy(update={"warm_start": False})
    assert (await judge(signed.model_copy(update={"payload": cold}), AT) or "").startswith("bad signature")
    # At its default the field is not signed: requests signed before it existed still verify.
    assert b"warm_start" not in signing_bytes(signed)
    other = Signer(KEY, "mallory").sign(request, NOW, 300, "d" * 32)
    assert await judge(other, AT) == "signed by 'mallory' but made in the name of 'alice'"
    assert await judge(signed, AT) is None
    entries = await trail(store)
    assert [(e.search_id, e.verdict) for e in entries] == [("s-1", "refused")] * 3 + [("s-1", "accepted")]
    assert (
        entries[-1].summary
        == "kernel.search.requested layer_norm on cpu: 24 evaluations + 4 written by an LLM"
    )
