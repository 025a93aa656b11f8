"""A kernel search as the kernel service keeps it, and the pure decisions about it.

A search is a MongoDB document (``kernel_searches``, keyed by ``search_id``) and nothing else:
the request is accepted or refused here, a runner claims accepted searches one at a time, and
what a search found is recorded here when it ends. The service holds no search in memory
between those steps, so a restarted service picks up where the last one stopped.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from rea.events import (
    KernelPublished,
    KernelPublishedPayload,
    KernelSearchFailed,
    KernelSearchFailedPayload,
    KernelSearchRequested,
    KernelSearchRequestedPayload,
    describe_error,
    utc_now,
)
from rea.kernels import ParamValue
from rea.store import Decision
from rea_kernel.operators import get_operator

COLLECTION = "kernel_searches"
SearchStatus = Literal["requested", "running", "published", "failed"]
FINISHED: frozenset[str] = frozenset({"published", "failed"})


class KernelSearch(BaseModel):
    search_id: str
    request: KernelSearchRequestedPayload
    status: SearchStatus = "requested"
    reason: str = Field(default="", description="Why it failed, or what it published.")
    runner: str | None = Field(default=None, description="The service instance running it.")
    evaluations: int = 0
    starts: list[dict[str, ParamValue]] | None = Field(
        default=None,
        description="The registry's points the search starts from (a warm start), fixed when it "
        "first runs: a search run again after a crash evaluates the same ones.",
    )
    published: list[str] = Field(default_factory=list, description="Registry keys it set.")
    requested_at: datetime = Field(default_factory=utc_now)
    updated_at: datetime = Field(default_factory=utc_now)


class Capabilities(BaseModel):
    """What this kernel service can search: its operators per target, and why a target cannot
    run here (a fact about the machine, like the planner's cost model: an input to decisions)."""

    operators: Mapping[str, tuple[str, ...]]
    unavailable: Mapping[str, str]
    synthesizer: str | None = Field(
        default=None, description="Who writes kernels here (llm:MODEL), if anyone."
    )

    def refusal(self, request: KernelSearchRequestedPayload) -> str | None:
        if request.synthesized and self.synthesizer is None:
            return (
                f"{request.synthesized} written kernels were asked for and no LLM endpoint is configured "
                "on the kernel service: set REA_LLM_BASE_URL (and REA_LLM_MODEL or REA_KERNEL_LLM_MODEL)"
            )
        if request.target in self.unavailable:
            return f"the {request.target} target cannot run here: {self.unavailable[request.target]}"
        known = self.operators.get(request.target, ())
        if request.operator not in known:
            return f"unknown operator {request.operator!r} for {request.target}; known: {', '.join(known)}"
        return None


def shape_problem(request: KernelSearchRequestedPayload) -> str | None:
    """Why the shapes a request asks for are not shapes of its operator, or None."""
    for shape in request.shapes:
        try:
            get_operator(request.operator).parse_shape(shape)
        except KeyError:
            return None  # an unknown operator is refused for that
        except ValidationError as error:
            return f"shape {shape} is not a {request.operator} shape: {describe_error(error)}"
    return None


def on_search_requested(
    state: KernelSearch | None, event: KernelSearchRequested, capabilities: Capabilities
) -> Decision[KernelSearch]:
    """Accept a search to run later, or refuse it with the reason; a repeated request is a no-op."""
    if state is not None:
        return Decision()
    refusal = capabilities.refusal(event.payload) or shape_problem(event.payload)
    search = KernelSearch(search_id=event.search_id, request=event.payload)
    if refusal is None:
        return Decision(search)
    failed = search.model_copy(update={"status": "failed", "reason": refusal})
    return Decision(failed, [failure(failed, event.correlation_id)])


def failure(search: KernelSearch, correlation_id: str) -> KernelSearchFailed:
    return KernelSearchFailed(
        search_id=search.search_id,
        correlation_id=correlation_id,
        payload=KernelSearchFailedPayload(
            operator=search.request.operator, target=search.request.target, reason=search.reason
        ),
    )


def published_event(search_id: str, payload: KernelPublishedPayload) -> KernelPublished:
    """Its id is fixed by the search, so a search run again after a crash publishes it once."""
    return KernelPublished(
        event_id=f"{search_id}:published", search_id=search_id, correlation_id=search_id, payload=payload
    )
