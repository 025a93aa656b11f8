"""Preflight grants as stored by the planner (collection ``grants``), read by people's tools.

An engineer grants a team's campaigns access ahead of time: which workloads and data, how
much compute, which backends, whether an LLM may propose hypotheses and whether jobs may run
generated kernels, and up to what estimate a plan may start without a person's approval
(``rea grant create``). A campaign names its grant; the planner holds it to the terms
(:mod:`rea_planner.grants`). A grant is created once and revoked once; new terms are a new
grant.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from rea.events import GrantTerms, JobBackendName
from rea.settings import Settings
from rea.workloads import workload_names

COLLECTION = "grants"

GrantStatus = Literal["active", "revoked"]
EVERY_BACKEND: list[JobBackendName] = ["local", "ray", "kubernetes"]
GLOB_CHARACTERS = frozenset("*?[")
"""A dataset entry holding any of these is a pattern, matched against names and paths."""


class Grant(BaseModel):
    """A grant and who made and revoked it (the signers of those decisions)."""

    grant_id: str
    terms: GrantTerms
    status: GrantStatus = "active"
    created_by: str
    created_at: datetime
    revoked_by: str | None = None
    revoked_at: datetime | None = None
    revoked_because: str = ""

    def describe_revocation(self) -> str:
        """ "revoked by NAME at TIME (because ...)", for the reasons a campaign is refused."""
        when = f" at {self.revoked_at:%Y-%m-%d %H:%M} UTC" if self.revoked_at else ""
        because = f": {self.revoked_because}" if self.revoked_because else ""
        return f"revoked by {self.revoked_by}{when}{because}"


def ceiling_problem(
    cpu_seconds: float,
    gpu_seconds: float | None,
    max_cpu_seconds: float | None,
    max_gpu_seconds: float | None,
) -> str | None:
    """Why a campaign's budget must not become ``cpu_seconds`` (and ``gpu_seconds``) under its
    grant's maxima (None: no cap), or None. The planner and the executor both judge a budget
    extension with it, from the maxima the campaign was admitted with, so they agree."""
    if max_cpu_seconds is not None and cpu_seconds > max_cpu_seconds:
        return f"{cpu_seconds:g} CPU-s would be above the grant's max of {max_cpu_seconds:g}"
    if gpu_seconds is not None and max_gpu_seconds is not None and gpu_seconds > max_gpu_seconds:
        return f"{gpu_seconds:g} GPU-s would be above the grant's max of {max_gpu_seconds:g}"
    return None


def own_terms(
    settings: Settings,
    max_cpu_seconds: float,
    *,
    team: str = "local",
    auto_approve_up_to: float | None = None,
    max_gpu_seconds: float | None = None,
    allow_llm: bool = False,
    allow_kernel_codegen: bool = False,
) -> GrantTerms:
    """Terms for a deployment's own campaigns (the demo, the chaos suite, benchmarks): every
    registered workload and backend, every built-in dataset and every file under the data roots."""
    return GrantTerms(
        team=team,
        workloads=workload_names(),
        datasets=["*", *(str(root) for root in settings.allowed_data_roots())],
        max_cpu_seconds=max_cpu_seconds,
        max_gpu_seconds=max_gpu_seconds,
        backends=EVERY_BACKEND,
        auto_approve_up_to=auto_approve_up_to,
        allow_llm=allow_llm,
        allow_kernel_codegen=allow_kernel_codegen,
    )
