"""A campaign with an LLM endpoint configured (a local test server): its valid proposals are
tried like any hypothesis; out-of-schema or malformed ones are dropped with a logged reason
and never reach a job."""

from __future__ import annotations

import json

import pytest

from rea.client import Client
from rea_tools.stack import EmbeddedStack

from ..llm_server import llm_server
from .helpers import campaign_request, finished, submit

pytestmark = pytest.mark.e2e

ANSWER = {
    "hypotheses": [
        {
            "id": "wider_tower",
            "title": "A wider MLP with a little dropout",
            "changes": {"mlp_width": 96, "dropout": 0.05},
            "rationale": "More capacity, lightly regularised.",
            "expected_gain": 0.003,
        },
        {
            "id": "huge_rate",
            "title": "A learning rate far outside the schema",
            "changes": {"learning_rate": 3.0},
            "rationale": "Faster.",
        },
        {"id": "rm_rf", "title": "Not a change", "changes": "rm -rf /", "rationale": "hostile"},
        "not even an object",
    ]
}


async def test_llm_hypotheses_are_validated_before_any_job(services: EmbeddedStack, client: Client) -> None:
    with llm_server(json.dumps(ANSWER)) as server:
        services.start_services(workers=2, env={"REA_LLM_BASE_URL": server.url, "REA_LLM_MODEL": "local"})
        campaign_id = await submit(client, campaign_request(max_hypotheses=3))
        state = await finished(client, campaign_id)

    assert state.status == "completed", state.reasons
    assert len(server.requests) == 1
    offered = {h.id: h for h in state.hypotheses}
    assert offered["llm_wider_tower"].source == "llm"
    tried = {r.hypothesis_id for r in state.records}
    assert "llm_wider_tower" in tried
    assert not {"llm_huge_rate", "llm_rm_rf"} & (tried | set(offered))
    assert all(r.config["learning_rate"] <= 0.05 for r in state.records)

    # The person reading `rea status` or the proposal sees what was left out and why.
    rejected = [line for line in state.dropped_hypotheses if line.startswith("llm: ")]
    assert len(rejected) == 3 and any("learning_rate=3.0 is outside" in line for line in rejected)

    log = (services.home / "logs" / "hypothesis.log").read_text()
    dropped = [json.loads(line) for line in log.splitlines() if "llm_hypothesis_dropped" in line]
    reasons = " | ".join(entry["reason"] for entry in dropped)
    assert len(dropped) == 3, reasons
    assert "learning_rate=3.0 is outside" in reasons and "changes" in reasons
