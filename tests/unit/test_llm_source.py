"""The optional LLM hypothesis source: its untrusted output is validated against the knob
schema, cached in the insights DB, and never required."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rea.events import HypothesesRequested, HypothesesRequestedPayload
from rea.store import Store
from rea.workloads import get_workload
from rea_hypothesis.llm import GAIN_CAP, LlmEndpoint, llm_hypotheses, messages, parse
from rea_hypothesis.logic import from_catalogue, on_hypotheses_requested

from ..llm_server import llm_server

SCHEMA = get_workload("ranker").schema
BASELINE = SCHEMA.defaults()
OFFERED, _ = from_catalogue(SCHEMA, BASELINE, None)


def proposal(**overrides: Any) -> dict[str, Any]:
    made: dict[str, Any] = {
        "id": "wider_embeddings",
        "title": "Wider embeddings",
        "changes": {"embedding_dim": 24},
        "rationale": "More capacity per id.",
        "citation": "",
        "expected_gain": 0.004,
    }
    made.update(overrides)
    return made


def answer(*proposals: Any) -> str:
    return json.dumps({"hypotheses": list(proposals)})


def test_a_valid_proposal_becomes_a_hypothesis_marked_as_from_the_llm() -> None:
    accepted, dropped = parse(answer(proposal()), SCHEMA, BASELINE, OFFERED, 5)
    assert dropped == []
    (hypothesis,) = accepted
    assert hypothesis.id == "llm_wider_embeddings"
    assert hypothesis.source == "llm" and hypothesis.changes == {"embedding_dim": 24}


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        (proposal(changes={"no_such_knob": 1}), "unknown knob 'no_such_knob'"),
        (proposal(changes={"learning_rate": 7.0}), "learning_rate=7.0 is outside"),
        (proposal(changes={"optimizer": "lion"}), "optimizer must be one of"),
        (proposal(changes={"dropout": "0.2"}), "dropout must be a number"),
        (proposal(changes={"epochs": 30}), "epochs is a fidelity knob"),
        (proposal(changes={}), "changes"),
        (proposal(id="Bad Id+x"), "id"),
        (proposal(expected_gain="a lot"), "expected_gain"),
        (proposal(surprise=True), "surprise"),
        (proposal(changes={"embedding_dim": 8}), "the baseline already has it"),
        (proposal(changes={"cross_layers": 2, "cross_rank": 0}), "repeats a hypothesis"),
        ("just a string", "proposal 0"),
        (proposal(title="x" * 5000), "title"),
    ],
)
def test_out_of_schema_proposals_are_dropped_with_a_reason(item: Any, reason: str) -> None:
    accepted, dropped = parse(answer(item), SCHEMA, BASELINE, OFFERED, 5)
    assert accepted == []
    assert len(dropped) == 1 and reason in dropped[0], dropped


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Sure! Here are some ideas: raise the learning rate.", "not JSON"),
        ('{"hypotheses": [', "not JSON"),
        ('["a", "b"]', "'hypotheses' list"),
        ('{"ideas": []}', "'hypotheses' list"),
        ('{"hypotheses": ' + json.dumps(["x" * 200_000]) + "}", "more than"),
    ],
)
def test_malformed_answers_yield_nothing(text: str, reason: str) -> None:
    accepted, dropped = parse(text, SCHEMA, BASELINE, OFFERED, 5)
    assert accepted == [] and reason in dropped[0]


def test_good_parts_survive_bad_neighbours_and_claims_are_capped() -> None:
    text = (
        "```json\n"
        + answer(
            proposal(changes={"learning_rate": 9.0}),
            proposal(id="big_claim", changes={"mlp_depth": 3, "dropout": 0.1}, expected_gain=0.5),
            proposal(id="big_claim", changes={"mlp_depth": 4}),
            proposal(id="again", changes={"mlp_depth": 3, "dropout": 0.1}),
            proposal(id="one_more", changes={"batch_size": 128}),
        )
        + "\n```"
    )
    accepted, dropped = parse(text, SCHEMA, BASELINE, OFFERED, 1)
    assert [h.id for h in accepted] == ["llm_big_claim"]
    assert accepted[0].expected_gain == GAIN_CAP
    assert len(dropped) == 4
    assert "more than 1 proposals" in dropped[-1]


def test_the_request_describes_the_tunable_knobs_only() -> None:
    chat = messages(SCHEMA, BASELINE, ["dcn_v2"], 5)
    task = json.loads(chat[-1]["content"])
    names = {k["name"] for k in task["knobs"]}
    assert "learning_rate" in names and "epochs" not in names
    assert task["already_planned"] == ["dcn_v2"]


def request(max_hypotheses: int = 3) -> HypothesesRequested:
    payload = HypothesesRequestedPayload(
        workload="ranker", dataset="movielens-100k", baseline=BASELINE, max_hypotheses=max_hypotheses
    )
    return HypothesesRequested(campaign_id="c1", correlation_id="c1", payload=payload)


def test_llm_hypotheses_get_a_share_of_the_slots_and_dropped_ones_are_recorded() -> None:
    llm = parse(answer(proposal(), proposal(id="bad", changes={"nope": 1})), SCHEMA, BASELINE, OFFERED, 5)
    decision = on_hypotheses_requested(None, request(max_hypotheses=3), suggested=llm)
    assert decision.state is not None
    ids = [h.id for h in decision.state.hypotheses]
    assert len(ids) == 3 and "llm_wider_embeddings" in ids
    assert any("unknown knob 'nope'" in reason for reason in decision.state.rejected)
    without = on_hypotheses_requested(None, request(max_hypotheses=3))
    assert without.state is not None and all(h.source != "llm" for h in without.state.hypotheses)


async def test_answers_are_cached_in_the_insights_db(store: Store) -> None:
    cache = store.db["llm_answers"]
    with llm_server(answer(proposal())) as server:
        endpoint = LlmEndpoint(base_url=server.url, model="test-model", api_key="secret")
        first = await llm_hypotheses(endpoint, cache, SCHEMA, BASELINE, OFFERED)
        server.answer = answer(proposal(id="something_else"))
        second = await llm_hypotheses(endpoint, cache, SCHEMA, BASELINE, OFFERED)
    assert first == second and [h.id for h in first[0]] == ["llm_wider_embeddings"]
    assert len(server.requests) == 1
    assert server.requests[0]["path"] == "/v1/chat/completions"
    assert server.requests[0]["auth"] == "Bearer secret"
    assert server.requests[0]["body"]["model"] == "test-model"


async def test_a_failing_or_absent_endpoint_gives_no_hypotheses_and_a_reason(store: Store) -> None:
    cache = store.db["llm_answers"]
    with llm_server(status=503) as server:
        endpoint = LlmEndpoint(base_url=server.url, model="m")
        accepted, reasons = await llm_hypotheses(endpoint, cache, SCHEMA, BASELINE, OFFERED)
    assert accepted == [] and "503" in reasons[0]
    assert len(server.requests) == 3  # retried, then given up
    assert await cache.count_documents({}) == 0  # a failure is not remembered as an answer
    gone = LlmEndpoint(base_url=server.url, model="m", timeout_s=1)  # the server has stopped
    accepted, reasons = await llm_hypotheses(gone, cache, SCHEMA, BASELINE, OFFERED)
    assert accepted == [] and "no usable answer" in reasons[0]
