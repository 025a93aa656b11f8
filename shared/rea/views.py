"""The typed read model of campaign and phase state: what everyone outside the planner and the
executor (the CLI, the logger, the chaos suite, benchmarks, notebooks) reads of their documents.

The planner owns ``campaigns`` and the executor owns ``phases``; each stores its state model as
``{"_id": ..., "state": {...}}``. A reader goes through these views instead of indexing raw
dictionaries: each declares the fields readers rely on and ignores the rest, so a writer may add
fields freely, and a field a reader needs cannot vanish unnoticed (``tests/unit/test_views.py``
parses what each writer stores).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rea.events import (
    IN_FLIGHT_JOB_STATUSES,
    CampaignResult,
    Checklist,
    Hypothesis,
    JobRecord,
    JobSpec,
    PhasePlan,
    RunbookEntry,
)
from rea.workloads import JobOutput


class View(BaseModel):
    """A reader's view: unknown fields are ignored, and nothing a reader does changes the store."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class CampaignSpecView(View):
    """The validated request, as readers show it."""

    name: str
    grant: str | None = None
    workload: str = "ranker"
    dataset: str
    budget_cpu_seconds: float
    budget_gpu_seconds: float | None = None
    max_parallel_jobs: int = 1
    backend: str | None = None


class BudgetChangeView(View):
    cpu_seconds: float
    gpu_seconds: float = 0.0
    by: str
    at: datetime
    reason: str = ""


class CampaignView(View):
    """A campaign as the planner keeps it: where it stands, what it ran, what it found."""

    campaign_id: str
    status: str
    request: dict[str, Any] = Field(default_factory=dict)
    spec: CampaignSpecView | None = None
    reasons: list[str] = Field(default_factory=list)
    hypotheses: list[Hypothesis] = Field(default_factory=list)
    dropped_hypotheses: list[str] = Field(default_factory=list)
    search_ended: str | None = None
    findings: list[str] = Field(default_factory=list)
    plan: PhasePlan | None = None
    checklist: Checklist | None = None
    budget_by_phase: dict[str, float] = Field(default_factory=dict)
    phase: str | None = None
    rounds: list[PhasePlan] = Field(default_factory=list)
    confirmation: PhasePlan | None = None
    records: list[JobRecord] = Field(default_factory=list)
    approved_by: str | None = None
    notices: list[str] = Field(default_factory=list)
    budget_changes: list[BudgetChangeView] = Field(default_factory=list)
    cancelled_by: str | None = None
    result: CampaignResult | None = None
    accepted_by: str | None = None
    accepted_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def name(self) -> str:
        return self.spec.name if self.spec else str(self.request.get("name", ""))

    @property
    def workload(self) -> str:
        return self.spec.workload if self.spec else str(self.request.get("workload", "ranker"))

    def budget_cpu_seconds(self) -> float | None:
        """The cap: the request's budget plus every extension a person made (None when the
        request was invalid and there is no budget to speak of)."""
        if self.spec is None:
            return None
        return self.spec.budget_cpu_seconds + sum(change.cpu_seconds for change in self.budget_changes)

    def budget_gpu_seconds(self) -> float | None:
        """The GPU-second cap with its extensions; None when GPU seconds are not capped."""
        if self.spec is None or self.spec.budget_gpu_seconds is None:
            return None
        return self.spec.budget_gpu_seconds + sum(change.gpu_seconds for change in self.budget_changes)


class CampaignStage(View):
    """Only where a campaign stands: what a gauge over every campaign needs to read."""

    status: str
    phase: str | None = None


class JobView(View):
    """One job as the executor tracks it."""

    spec: JobSpec
    status: str
    output: JobOutput | None = None
    worker: str | None = None
    partition: int | None = Field(default=None, description="The job-queue partition it was sent to.")
    failures: list[str] = Field(default_factory=list)

    @property
    def in_flight(self) -> bool:
        """Handed to a worker (or a cluster) and not finished yet."""
        return self.status in IN_FLIGHT_JOB_STATUSES


class PhaseView(View):
    """One phase of a campaign as the executor runs it."""

    campaign_id: str
    phase: str
    status: str
    budget_cpu_seconds: float
    spent_cpu_seconds: float = 0.0
    budget_gpu_seconds: float | None = None
    spent_gpu_seconds: float = 0.0
    max_parallel_jobs: int = 1
    jobs: list[JobView] = Field(default_factory=list)
    runbook: list[RunbookEntry] = Field(default_factory=list)


def campaign_view(document: dict[str, Any]) -> CampaignView:
    """The view of a stored ``campaigns`` document."""
    return CampaignView.model_validate(document["state"])


def phase_view(document: dict[str, Any]) -> PhaseView:
    """The view of a stored ``phases`` document (a projection may leave the jobs' bulky fields out)."""
    return PhaseView.model_validate(document["state"])
