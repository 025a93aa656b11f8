"""Signed decisions: what a signature covers, and every way a forged one is told apart."""

from __future__ import annotations

import json
import stat
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as fuzzing
from hypothesis import strategies as st
from typer.testing import CliRunner

from rea.events import (
    BudgetExtended,
    BudgetExtendedPayload,
    CampaignPaused,
    PersonAction,
    PlanApproved,
    PlanApprovedPayload,
    parse_event,
)
from rea.signing import DecisionKey, Keyring, Signer, verify
from rea_tools import cli

NOW = datetime.fromisoformat("2026-12-04T06:00:00+00:00")
SHARED = DecisionKey("local", bytes(range(32)))
ALICE = DecisionKey("alice-key", bytes(range(1, 33)), identity="alice")
KEYRING = Keyring({"local": SHARED, "alice-key": ALICE})
NONCE = "0123456789abcdef0123456789abcdef"
FOLLOW = {"campaign_id": "camp-1", "correlation_id": "camp-1", "occurred_at": NOW}


def approval(by: str = "alice") -> PlanApproved:
    return PlanApproved(**FOLLOW, payload=PlanApprovedPayload(approved_by=by))


def signed(event: PlanApproved, key: DecisionKey = ALICE, ttl_s: float = 300) -> PlanApproved:
    return Signer(key, event.decided_by()).sign(event, NOW, ttl_s, NONCE)


def judged(event: PlanApproved | BudgetExtended | CampaignPaused, at: datetime = NOW) -> str | None:
    return verify(event, KEYRING, at, max_ttl_s=900, skew_s=30)


def test_a_signed_decision_holds_after_the_wire() -> None:
    event = signed(approval())
    assert judged(event) is None
    assert judged(parse_event(event.model_dump_json())) is None  # type: ignore[arg-type]
    extension = BudgetExtended(**FOLLOW, payload=BudgetExtendedPayload(cpu_seconds=200.5, by="bob"))
    shared = Signer(SHARED, "bob").sign(extension, NOW, 300, NONCE)
    assert judged(parse_event(shared.model_dump_json())) is None  # type: ignore[arg-type]


def test_unsigned_and_unknown_keys_are_refused() -> None:
    assert judged(approval()) == "unsigned"
    stranger = DecisionKey("stranger", bytes(32))
    assert judged(signed(approval(), stranger)) == "signed with an unknown key 'stranger'"


def test_a_key_with_another_identity_is_refused() -> None:
    mallory = DecisionKey("alice-key", ALICE.secret, identity="alice")
    forged = signed(approval(), mallory)
    forged = forged.model_copy(update={"signature": forged.signature.model_copy(update={"by": "mallory"})})  # type: ignore[union-attr]
    assert judged(forged) == "signed as 'mallory' with the key of 'alice'"
    with pytest.raises(ValueError, match="signs only for 'alice'"):
        Signer(ALICE, "mallory")


def test_a_wrong_key_is_refused() -> None:
    impostor = DecisionKey("alice-key", bytes(32), identity="alice")
    assert (
        judged(signed(approval(), impostor))
        == "bad signature: the decision was altered, or signed with another key"
    )


@pytest.mark.parametrize(
    "change",
    [
        {"campaign_id": "camp-2"},
        {"event_id": "another"},
        {"occurred_at": NOW - timedelta(seconds=1)},
        {"payload": PlanApprovedPayload(approved_by="alice", auto=True)},
    ],
    ids=["campaign", "event id", "time", "payload"],
)
def test_any_altered_field_breaks_the_signature(change: dict[str, object]) -> None:
    altered = signed(approval()).model_copy(update=change)
    assert judged(altered) == "bad signature: the decision was altered, or signed with another key"


def test_an_altered_expiry_or_signer_breaks_the_signature() -> None:
    event = signed(approval(), SHARED)
    signature = event.signature
    assert signature is not None
    for change in ({"expires_at": NOW + timedelta(days=9)}, {"by": "bob"}, {"nonce": "f" * 32}):
        altered = event.model_copy(update={"signature": signature.model_copy(update=change)})
        assert judged(altered) == "bad signature: the decision was altered, or signed with another key"


def test_a_decision_in_someone_elses_name_is_refused() -> None:
    event = Signer(SHARED, "bob").sign(approval(by="bob"), NOW, 300, NONCE)
    assert judged(event) is None
    renamed = approval(by="alice")
    mismatched = Signer(SHARED, "bob").sign(renamed, NOW, 300, NONCE)
    assert judged(mismatched) == "signed by 'bob' but made in the name of 'alice'"


def test_times_are_judged_with_the_allowed_skew() -> None:
    event = signed(approval(), ttl_s=300)
    assert judged(event, NOW + timedelta(seconds=320)) is None  # within the skew
    assert (
        judged(event, NOW + timedelta(seconds=400))
        == f"expired at {(NOW + timedelta(seconds=300)).isoformat()}"
    )
    assert judged(event, NOW - timedelta(seconds=60)) == f"made in the future ({NOW.isoformat()})"
    assert judged(signed(approval(), ttl_s=3600)) == "valid for longer than the 900 s a decision may be"


def test_the_person_action_decisions_name_their_person() -> None:
    paused = CampaignPaused(**FOLLOW, payload=PersonAction(by="carol"))
    assert paused.decided_by() == "carol"
    assert judged(Signer(SHARED, "carol").sign(paused, NOW, 60, NONCE)) is None


def test_a_keyring_is_created_private_and_loads_back(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "decisions.json"
    made = Keyring.create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Keyring.load(path) == made and list(made.keys) == ["local"]
    with pytest.raises(FileExistsError):
        Keyring.create(path)
    assert Keyring.load(tmp_path / "none.json").keys == {}
    (tmp_path / "bad.json").write_text(json.dumps({"k": {"key": "abcd"}}))
    with pytest.raises(ValueError, match="at least 16 bytes"):
        Keyring.load(tmp_path / "bad.json")
    (tmp_path / "worse.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="is not a decision keyring"):
        Keyring.load(tmp_path / "worse.json")


@fuzzing(max_examples=2000, deadline=None, derandomize=True, database=None)
@given(
    by=st.text(min_size=1, max_size=40),
    key_id=st.text(min_size=1, max_size=20),
    nonce=st.text(max_size=40),
    value=st.text(max_size=200),
    expires=st.datetimes(),
)
def test_verification_never_raises_on_garbage(
    by: str, key_id: str, nonce: str, value: str, expires: datetime
) -> None:
    document = json.loads(signed(approval()).model_dump_json())
    document["signature"] = {
        "by": by,
        "key_id": key_id,
        "nonce": nonce,
        "value": value,
        "expires_at": expires.isoformat(),
    }
    try:
        event = PlanApproved.model_validate(document)
    except ValueError:
        return
    assert judged(event) is not None


def test_rea_keys_adds_keys_and_lists_them_without_secrets(tmp_path: Path) -> None:
    services, alice = tmp_path / "keys" / "decisions.json", tmp_path / "alice.json"
    runner = CliRunner()
    added = runner.invoke(
        cli.app,
        ["keys", "add", "alice", "--identity", "alice", "--file", str(services), "--export", str(alice)],
    )
    assert added.exit_code == 0, added.output
    assert runner.invoke(cli.app, ["keys", "add", "team", "--file", str(services)]).exit_code == 0
    everyone, own = Keyring.load(services), Keyring.load(alice)
    assert set(everyone.keys) == {"alice", "team"} and own.keys == {"alice": everyone.keys["alice"]}
    assert everyone.keys["team"].identity is None
    assert stat.S_IMODE(services.stat().st_mode) == stat.S_IMODE(alice.stat().st_mode) == 0o600
    listed = runner.invoke(cli.app, ["keys", "list", "--file", str(services)])
    assert "alice\talice" in listed.output and "team\t(shared)" in listed.output
    assert everyone.keys["alice"].secret.hex() not in listed.output
    again = runner.invoke(cli.app, ["keys", "add", "alice", "--file", str(services)])
    assert again.exit_code == 2 and "already has a key 'alice'" in again.output
