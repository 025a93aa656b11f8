"""Preflight grants through the real stack: a grant made by a signed decision, campaigns held
to it, auto-approval from it and never from the request, revocation, and the trail."""

from __future__ import annotations

import pytest

from rea.client import Client
from rea.events import GrantCreated, GrantCreatedPayload, GrantTerms, encode_event
from rea.store import Store
from rea_tools.stack import EmbeddedStack

from .helpers import FAST_DATASET, MANUAL_GRANT, campaign_request, eventually, finished, submit

pytestmark = pytest.mark.e2e

ANSWERED = frozenset({"rejected", "awaiting_approval", "running", "completed", "failed"})


async def test_campaigns_run_only_inside_their_grant(
    services: EmbeddedStack, client: Client, store: Store
) -> None:
    for name in ("logger", "hypothesis", "planner", "executor"):
        services.start_service(name)
    services.start_service("worker", "worker-0")
    terms = GrantTerms(
        team="ads",
        workloads=["ranker"],
        datasets=["synthetic*"],
        max_cpu_seconds=600,
        backends=["local"],
        auto_approve_up_to=600,
    )
    grant = await client.create_grant("ads", terms, by="erin")
    assert (grant.status, grant.created_by) == ("active", "erin")

    # A grant nobody signed never reaches the planner's state.
    forged = GrantCreated(
        grant_id="forged", correlation_id="forged", payload=GrantCreatedPayload(terms=terms, by="mallory")
    )
    await client.send(client.topics.control, forged.key(), encode_event(forged))

    inside = await submit(client, campaign_request(grant="ads", max_hypotheses=1))
    outside = await submit(
        client,
        campaign_request(grant="ads", dataset="movielens-100k", budget_cpu_seconds=601, max_hypotheses=1),
    )
    self_approved = await submit(
        client, campaign_request(grant=MANUAL_GRANT, auto_approve_cpu_seconds=10**6, max_hypotheses=1)
    )
    unknown = await submit(client, campaign_request(grant="forged", max_hypotheses=1))

    ran = await finished(client, inside, 240)
    assert ran.status == "completed", ran.reasons
    assert ran.approved_by == "grant ads (auto-approves up to 600 CPU-s; granted by erin)"

    refused = await finished(client, outside, 60)
    assert refused.status == "rejected"
    assert refused.reasons == [
        "dataset: 'movielens-100k' is not among grant 'ads''s datasets (synthetic*)",
        "budget_cpu_seconds: 601 is above grant 'ads''s max of 600",
    ]
    selfish = await finished(client, self_approved, 60)
    assert selfish.status == "rejected" and selfish.reasons[0].startswith(
        "auto_approve_cpu_seconds: a campaign cannot approve itself"
    )
    nobody = await finished(client, unknown, 60)
    assert nobody.status == "rejected" and nobody.reasons[0].startswith("grant: no grant 'forged'")
    assert await client.grant("forged") is None

    async def forgery_refused() -> bool:
        letter = await store.dead_letters.find_one(
            {"reason": "refused decision: unsigned", "service": "planner"}
        )
        return letter is not None and '"grant_id":"forged"' in letter["original"]

    await eventually(forgery_refused, "the planner to dead-letter the unsigned grant")

    # Revoked: no new campaign starts under it; the trail shows who granted and who revoked.
    gone = await client.revoke_grant("ads", by="frank", reason="team moved")
    assert gone.status == "revoked" and gone.revoked_by == "frank"
    late = await submit(client, campaign_request(grant="ads", dataset=FAST_DATASET, max_hypotheses=1))
    after = await finished(client, late, 60)
    assert after.status == "rejected"
    assert after.reasons[0].startswith("grant: grant 'ads' was revoked by frank at ")
    assert after.reasons[0].endswith(": team moved")

    trail = [(entry.type, entry.decided_by, entry.verdict) for entry in await client.audit(inside)]
    assert ("grant.created", "erin", "accepted") in trail
    assert ("grant.revoked", "frank", "accepted") in trail
