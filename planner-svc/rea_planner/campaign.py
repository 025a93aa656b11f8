"""The campaign request a person submits, its validation, and the planner's campaign state."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rea.events import (
    CampaignResult,
    Checklist,
    Hypothesis,
    JobBackendName,
    JobRecord,
    PhasePlan,
    describe_error,
    utc_now,
)
from rea.grants import Grant
from rea.workloads import BrokenWorkload, Workload, dataset_problems, get_workload


class CampaignSpec(BaseModel):
    """What a person asks for: improve ``workload`` on ``dataset`` within a CPU budget."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    grant: str = Field(
        min_length=1,
        max_length=128,
        description="The preflight grant it runs under (`rea grant create`): what it may use, and "
        "up to what estimate its plan starts without a person's approval.",
    )
    workload: str = Field(default="ranker", description="A registered workload (entry point rea.workloads).")
    dataset: str = Field(min_length=1, description="A dataset spec string, e.g. movielens-100k.")
    objective: Literal["ne"] = "ne"
    budget_cpu_seconds: float = Field(gt=0, description="Hard cap on training jobs' CPU seconds.")
    budget_gpu_seconds: float | None = Field(
        default=None,
        gt=0,
        description="Hard cap on the GPU (device) seconds the jobs hold, for jobs that ask for GPUs; "
        "unset, GPU time is not capped (the CPU budget still is).",
    )
    max_parallel_jobs: int = Field(default=2, ge=1, le=256)
    max_hypotheses: int = Field(default=6, ge=1, le=100)
    baseline: dict[str, Any] = Field(
        default_factory=dict, description="Overrides of the workload's defaults."
    )
    seed: int = 0
    confirm_seeds: int = Field(
        default=3,
        ge=1,
        le=20,
        description="Seeds the winner and the baseline are compared over on the test split, for a "
        "confidence interval; 1 skips the confirmation phase.",
    )
    contenders: int = Field(
        default=3,
        ge=0,
        le=20,
        description="When the search ends, the best few configs by validation NE run again on "
        "selection_seeds more seeds and the winner is the best by its mean validation NE: the best "
        "of many single runs is biased low (the winner's curse). 0 or 1 picks the best single run.",
    )
    selection_seeds: int = Field(default=1, ge=1, le=10, description="Extra seeds per contender.")
    max_exploitation_trials: int | None = Field(
        default=None,
        ge=0,
        le=10_000,
        description="Optuna trials around the best combination; by default as many as the budget "
        "affords until tuning converges (see exploitation_patience); 0 skips exploitation.",
    )
    exploitation_patience: int = Field(
        default=8,
        ge=0,
        le=1000,
        description="Stop tuning once this many trials in a row found no better validation NE than "
        "the best so far (the campaign says so in its result); 0 tunes until the budget is spent.",
    )
    exploitation_scope: Literal["auto", "local", "global"] = Field(
        default="auto",
        description="Where exploitation searches. local: a trust region around the best config (its "
        "changed continuous knobs and the optimiser's step); global: every knob over its whole range, "
        "with every job the campaign ran told to the sampler; auto: each round goes to the one that "
        "has improved the best validation NE more per CPU-second so far (each is tried first).",
    )
    early_stopping: bool = Field(
        default=True,
        description="Stop an exploitation trial after an epoch whose validation NE is worse than the "
        "median of the campaign's finished jobs at that epoch (the median stopping rule); its CPU so "
        "far is still charged.",
    )
    validation_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Share of the budget single-hypothesis validation may use when exploitation follows "
        "it; the rest goes to combining and tuning the winners.",
    )
    screening: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Screen hypotheses at low fidelity first and validate the best third at full fidelity "
        "(successive halving). auto: when the learned cost model shows it saves at least half a job's "
        "cost; a job's fixed start-up cost can make a low-fidelity job nearly as dear as a full one.",
    )
    job_timeout_s: float = Field(default=1800, gt=0)
    job_memory_mb: int = Field(default=4096, ge=256)
    job_cpus: float = Field(default=1.0, gt=0, le=512, description="CPU cores each job asks its backend for.")
    job_gpus: int = Field(default=0, ge=0, le=64, description="GPUs each job asks its backend for.")
    backend: JobBackendName | None = Field(
        default=None,
        description="Where the jobs run: local (the job workers), ray (Ray Jobs) or kubernetes (a Job "
        "each); unset, the deployment's default (REA_JOB_BACKEND).",
    )


def validate_campaign(
    request: dict[str, Any],
    default_backend: JobBackendName = "local",
    data_roots: Sequence[Path] | None = None,
) -> tuple[CampaignSpec | None, list[str]]:
    """Parse a request; on failure return every reason it cannot run, for the rejection event.
    A campaign that names no backend runs on ``default_backend``; the files its dataset reads
    must be regular files under ``data_roots`` (None: not checked, for callers that check
    other rules only; the planner always passes the deployment's)."""
    try:
        spec = CampaignSpec.model_validate(request)
    except ValidationError as exc:
        return None, [_explained(reason) for reason in describe_error(exc).split("; ")]
    if spec.backend is None:
        spec = spec.model_copy(update={"backend": default_backend})
    reasons: list[str] = []
    try:
        workload = get_workload(spec.workload)
    except BrokenWorkload as broken:
        return None, [f"workload {spec.workload!r} is registered but cannot be used: {broken.reason}"]
    except KeyError:
        return None, [f"unknown workload {spec.workload!r}"]
    reasons += [f"dataset: {problem}" for problem in _dataset_problems(workload, spec.dataset, data_roots)]
    reasons += [f"baseline: {problem}" for problem in workload.schema.errors(spec.baseline)]
    if spec.budget_gpu_seconds is not None and spec.job_gpus == 0:
        reasons.append(
            "budget_gpu_seconds: the jobs ask for no GPU (job_gpus is 0), so nothing would spend it"
        )
    return (None, reasons) if reasons else (spec, [])


SELF_APPROVAL = "auto_approve_cpu_seconds"
"""A field requests once carried: a request that approves itself is refused, not obeyed."""


def _explained(reason: str) -> str:
    if reason.startswith(f"{SELF_APPROVAL}:"):
        return (
            f"{SELF_APPROVAL}: a campaign cannot approve itself; auto-approval comes from its grant "
            "(`rea grant create --auto-approve-up-to`)"
        )
    return reason


def _dataset_problems(workload: Workload, dataset: str, data_roots: Sequence[Path] | None) -> list[str]:
    """The files ``dataset`` would read outside ``data_roots``, else the workload's own
    objections. A workload whose checks raise has a bug, reported as a reason."""
    try:
        if data_roots is not None and (outside := dataset_problems(workload, dataset, data_roots)):
            return outside
        problem = workload.dataset_error(dataset)
    except Exception as error:
        return [f"the workload could not check it ({type(error).__name__}: {error})"]
    return [] if problem is None else [problem]


CampaignStatus = Literal[
    "planning",
    "rejected",
    "awaiting_approval",
    "running",
    "paused",
    "paused_budget",
    "cancelling",
    "cancelled",
    "completed",
    "failed",
]
ACTIVE: frozenset[str] = frozenset({"running", "paused", "paused_budget"})
CANCELLABLE: frozenset[str] = frozenset({"planning", "awaiting_approval", *ACTIVE})


class BudgetChange(BaseModel):
    """One change of the campaign's budget after it was submitted: who, when, how much, why."""

    cpu_seconds: float
    gpu_seconds: float = 0.0
    by: str
    at: datetime
    reason: str = ""


class Campaign(BaseModel):
    """The planner's state for one campaign: the truth about where it stands."""

    campaign_id: str
    status: CampaignStatus
    request: dict[str, Any]
    spec: CampaignSpec | None = None
    reasons: list[str] = Field(default_factory=list)
    hypotheses: list[Hypothesis] = Field(default_factory=list)
    dropped_hypotheses: list[str] = Field(default_factory=list)
    search_ended: str | None = Field(
        default=None, description="Why the search stopped, when it did before the budget was spent."
    )
    findings: list[str] = Field(
        default_factory=list,
        description="What the baseline's diagnostics showed, as 'signal: evidence'; the hypotheses were "
        "ranked by them (see rea.diagnostics).",
    )
    grant: Grant | None = Field(
        default=None,
        description="Its grant as it was when the campaign was admitted (its maxima hold after).",
    )
    dataset_files: list[str] = Field(
        default_factory=list, description="The files its dataset reads, resolved."
    )
    checklist: Checklist | None = Field(default=None, description="What approving its plan lets REA use.")
    plan: PhasePlan | None = Field(default=None, description="The plan a person (or its grant) approved.")
    budget_by_phase: dict[str, float] = Field(
        default_factory=dict, description="The estimate per phase shown with the plan."
    )
    phase: str | None = Field(default=None, description="The phase running now.")
    rounds: list[PhasePlan] = Field(
        default_factory=list,
        description="The phases after the first (validation rounds, combination, exploitation), planned "
        "with costs learned from the campaign's own jobs.",
    )
    confirmation: PhasePlan | None = None
    records: list[JobRecord] = Field(default_factory=list, description="Every concluded phase's jobs.")
    approved_by: str | None = None
    notices: list[str] = Field(
        default_factory=list, description="Pauses, resumes and budget warnings, in order."
    )
    budget_changes: list[BudgetChange] = Field(
        default_factory=list, description="Every change of the budget after submission, in order."
    )
    cancelled_by: str | None = None
    result: CampaignResult | None = None
    accepted_by: str | None = None
    accepted_at: datetime | None = None
    created_at: datetime = Field(default_factory=utc_now)
    updated_at: datetime = Field(default_factory=utc_now)

    def budget_cpu_seconds(self) -> float:
        """The cap every phase is planned against now: the request's budget and every change."""
        assert self.spec is not None
        return self.spec.budget_cpu_seconds + sum(change.cpu_seconds for change in self.budget_changes)

    def budget_gpu_seconds(self) -> float | None:
        """The GPU cap now (None: not capped): the request's and every change's."""
        assert self.spec is not None
        if self.spec.budget_gpu_seconds is None:
            return None
        return self.spec.budget_gpu_seconds + sum(change.gpu_seconds for change in self.budget_changes)

    def planning_budget(self, records: list[JobRecord]) -> float:
        """The CPU-s phases are planned against: the CPU budget, or less when the GPU budget runs
        out first. A job's GPU-s are estimated as its CPU-s / cpus x gpus (its wall time on its
        cores), so the GPU-s left convert to CPU-s at cpus / gpus on top of what was spent."""
        assert self.spec is not None
        cpu = self.budget_cpu_seconds()
        gpu = self.budget_gpu_seconds()
        if gpu is None or self.spec.job_gpus == 0:
            return cpu
        gpu_left = max(0.0, gpu - spent_gpu(records))
        return min(cpu, spent(records) + gpu_left * self.spec.job_cpus / self.spec.job_gpus)


def spent(records: list[JobRecord]) -> float:
    """The CPU seconds the jobs were charged."""
    return sum(j.cost.cpu_seconds for j in records if j.cost)


def spent_gpu(records: list[JobRecord]) -> float:
    """The GPU seconds the jobs were charged."""
    return sum(j.cost.gpu_seconds for j in records if j.cost)
