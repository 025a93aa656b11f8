"""People's decisions through the real stack: only a signed one moves a campaign; unsigned,
forged, altered, expired and replayed ones are dead-lettered with the reason, and everything
lands in the audit trail `rea audit` shows."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from rea.client import Client
from rea.events import PlanApproved, PlanApprovedPayload, encode_event, utc_now
from rea.settings import Settings
from rea.signing import DecisionKey, Keyring, Signer, new_nonce
from rea.store import Store
from rea_tools.stack import EmbeddedStack

from .helpers import MANUAL_GRANT, campaign_request, eventually, run_rea, submit

pytestmark = pytest.mark.e2e


async def test_only_a_signed_decision_moves_a_campaign(
    services: EmbeddedStack, client: Client, store: Store, settings: Settings, env: dict[str, str]
) -> None:
    for name in ("logger", "hypothesis", "planner", "executor"):
        services.start_service(name)
    campaign_id = await submit(client, campaign_request(grant=MANUAL_GRANT, max_hypotheses=1))
    assert await client.wait_for(campaign_id, frozenset({"awaiting_approval"}), 60) is not None

    def approval(by: str = "alice", hours_ago: float = 0) -> PlanApproved:
        return PlanApproved(
            campaign_id=campaign_id,
            correlation_id=campaign_id,
            occurred_at=utc_now() - timedelta(hours=hours_ago),
            payload=PlanApprovedPayload(approved_by=by),
        )

    stranger = DecisionKey("local", bytes(range(32)))
    local = Keyring.load(settings.decision_keys_path()).keys["local"]  # what `rea up` made
    signed = client.sign(approval())
    an_hour_ago = utc_now() - timedelta(hours=1)
    forgeries = {
        "unsigned": approval(),
        "bad signature": Signer(stranger, "mallory").sign(approval("mallory"), utc_now(), 300, new_nonce()),
        "altered": signed.model_copy(update={"payload": PlanApprovedPayload(approved_by="mallory")}),
        "expired at": Signer(local, "alice").sign(approval(hours_ago=1), an_hour_ago, 300, new_nonce()),
    }
    for event in forgeries.values():  # sent as they are: the client would sign an unsigned one
        await client.send(client.topics.control, event.key(), encode_event(event))

    async def refused() -> list[str]:
        letters = store.dead_letters.find({"reason": {"$regex": "^refused decision: "}, "service": "planner"})
        return [letter["reason"] async for letter in letters]

    async def all_refused() -> bool:
        return len(await refused()) == len(forgeries)

    await eventually(all_refused, "the planner to refuse every forged approval")
    reasons = await refused()
    assert sum("unsigned" in reason for reason in reasons) == 1
    assert sum("bad signature" in reason for reason in reasons) == 2  # another key; altered
    assert sum("expired at" in reason for reason in reasons) == 1
    state = await client.campaign(campaign_id)
    assert state is not None and state.status == "awaiting_approval" and state.approved_by is None

    await client.send(client.topics.control, signed.key(), encode_event(signed))
    state = await client.wait_for(campaign_id, frozenset({"running", "completed"}), 60)
    assert state is not None and state.approved_by == "alice"
    await client.send(client.topics.control, signed.key(), encode_event(signed))  # the same bytes again

    async def replay_refused() -> bool:
        return any("replayed" in reason for reason in await refused())

    await eventually(replay_refused, "the planner to refuse the replayed approval")

    cancelled = run_rea(["cancel", campaign_id, "--by", "carol"], env)
    assert cancelled.returncode == 0, cancelled.stderr
    assert (await client.wait_for(campaign_id, frozenset({"cancelled"}), 120)) is not None

    async def cancellation_audited() -> bool:
        entries = await client.audit(campaign_id)
        return {e.consumer for e in entries if e.type == "campaign.cancelled"} == {"planner", "executor"}

    await eventually(cancellation_audited, "both services to audit the cancellation")
    trail = run_rea(["audit", campaign_id, "--json"], env)
    assert trail.returncode == 0, trail.stderr
    entries = [json.loads(line) for line in trail.stdout.splitlines()]
    planner = [(e["type"], e["verdict"], e["decided_by"]) for e in entries if e["consumer"] == "planner"]
    assert planner.count(("plan.approved", "refused", "mallory")) == 2
    assert planner.count(("plan.approved", "refused", "alice")) == 3  # unsigned, expired, replayed
    assert planner.count(("plan.approved", "accepted", "alice")) == 1
    assert ("campaign.cancelled", "accepted", "carol") in planner
    shown = run_rea(["audit", campaign_id], env)
    assert shown.returncode == 0 and "replayed" in shown.stdout and "carol" in shown.stdout
