"""The kernel service's decisions about a search request, without a broker or a database."""

from __future__ import annotations

from rea.events import (
    KernelPublishedPayload,
    KernelSearchFailed,
    KernelSearchRequested,
    KernelSearchRequestedPayload,
)
from rea_kernel.searches import Capabilities, KernelSearch, on_search_requested, published_event

HERE = Capabilities(
    operators={"cpu": ("layer_norm", "fm_interaction"), "triton": ("layer_norm",)},
    unavailable={"triton": "triton-interpreter on cpu (no GPU): kernels can be checked but not timed"},
)


def requested(
    operator: str = "layer_norm", target: str = "cpu", synthesized: int = 0
) -> KernelSearchRequested:
    payload = KernelSearchRequestedPayload.model_validate(
        {"operator": operator, "target": target, "budget": 4, "synthesized": synthesized}
    )
    return KernelSearchRequested(search_id="s-1", correlation_id="c-1", payload=payload)


def test_a_search_this_service_can_run_is_accepted_to_run_later() -> None:
    decision = on_search_requested(None, requested(), HERE)
    assert decision.state is not None and decision.state.status == "requested"
    assert decision.state.request.budget == 4 and list(decision.emit) == []


def test_an_unknown_operator_is_refused_with_the_known_ones() -> None:
    decision = on_search_requested(None, requested("softmax"), HERE)
    assert decision.state is not None and decision.state.status == "failed"
    [failed] = decision.emit
    assert isinstance(failed, KernelSearchFailed) and failed.search_id == "s-1"
    assert failed.correlation_id == "c-1"
    assert "unknown operator 'softmax'" in failed.payload.reason and "fm_interaction" in failed.payload.reason


def test_a_target_that_cannot_time_here_is_refused_with_why() -> None:
    decision = on_search_requested(None, requested(target="triton"), HERE)
    assert decision.state is not None and decision.state.status == "failed"
    assert "no GPU" in decision.state.reason


def test_written_kernels_are_refused_where_no_llm_is_configured_and_accepted_where_one_is() -> None:
    refused = on_search_requested(None, requested(synthesized=3), HERE)
    assert refused.state is not None and refused.state.status == "failed"
    assert "no LLM endpoint" in refused.state.reason and "REA_LLM_BASE_URL" in refused.state.reason
    with_llm = HERE.model_copy(update={"synthesizer": "llm:test-model"})
    accepted = on_search_requested(None, requested(synthesized=3), with_llm)
    assert accepted.state is not None and accepted.state.status == "requested"
    assert accepted.state.request.synthesized == 3


def test_a_repeated_request_changes_nothing() -> None:
    seen = KernelSearch(search_id="s-1", request=requested().payload, status="running")
    decision = on_search_requested(seen, requested(), HERE)
    assert decision.state is None and list(decision.emit) == []


def test_the_published_event_of_a_search_has_one_id_however_often_it_is_made() -> None:
    payload = KernelPublishedPayload(
        operator="layer_norm",
        target="cpu",
        device="cpu: x",
        digest="d",
        speedup_vs_eager=1.2,
        evaluations=4,
        method="random",
    )
    assert (
        published_event("s-1", payload).event_id
        == published_event("s-1", payload).event_id
        == "s-1:published"
    )
