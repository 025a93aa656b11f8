"""Event contracts: one pydantic model per event type, each versioned.

Every event carries ``event_id``, ``type``, ``version``, ``occurred_at``, ``correlation_id``,
its subject and a typed ``payload``. A campaign's events carry ``campaign_id`` (:class:`Envelope`),
a kernel search's carry ``search_id`` (:class:`KernelEnvelope`). Consumers dedup on
``event_id``; Kafka messages are keyed by the subject (job work by ``job_id``), so one
consumer owns a campaign, or a search, at a time. A message that does not parse as one of these models
(bad JSON, unknown type, unsupported version, wrong field types) is dead-lettered.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args
from uuid import uuid4

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from rea.kernels import KernelUse
from rea.workloads import Diagnostics, JobCost, JobError, JobOutput, ModelFootprint, SplitMetrics


def new_id() -> str:
    return uuid4().hex


def utc_now() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """What every event carries, whatever it is about. Each kind of subject has its own envelope
    below: the subject is the Kafka key, so one consumer owns a subject at a time."""

    model_config = ConfigDict(frozen=True)

    event_id: str = Field(default_factory=new_id, min_length=1, max_length=128)
    type: str
    version: int
    occurred_at: datetime = Field(default_factory=utc_now)
    correlation_id: str = Field(min_length=1, max_length=128)

    def key(self) -> bytes:
        """The Kafka message key: the event's subject."""
        raise NotImplementedError

    def about_campaign(self) -> str | None:
        """The campaign it belongs to; None for an event about something else."""
        return None

    def placed_partition(self) -> int | None:
        """The partition its producer chose for it; None: the key's."""
        return None


class Envelope(Event):
    """An event of a campaign."""

    campaign_id: str = Field(min_length=1, max_length=128)

    def key(self) -> bytes:
        """The campaign, so one consumer owns a campaign at a time."""
        return self.campaign_id.encode()

    def about_campaign(self) -> str | None:
        return self.campaign_id


class KernelEnvelope(Event):
    """An event of a KernelEvolve search, which belongs to no campaign: a kernel serves every
    model that runs the operator on that device."""

    search_id: str = Field(min_length=1, max_length=128)

    def key(self) -> bytes:
        """The search, so one kernel service owns a search at a time."""
        return self.search_id.encode()


# ---- payloads -------------------------------------------------------------------------


class Hypothesis(BaseModel):
    """A proposed change to the baseline config, with where it came from and why."""

    id: str
    title: str
    technique: str
    changes: dict[str, Any]
    source: Literal["catalogue", "workload", "schema", "history", "diagnostics", "llm"]
    rationale: str
    citation: str = ""
    expected_gain: float = Field(default=0.0, description="Prior relative NE reduction, e.g. 0.01 = 1%.")
    signals: list[str] = Field(
        default_factory=list, description="What the technique addresses, e.g. interactions, overfitting."
    )


BudgetResource = Literal["cpu_seconds", "gpu_seconds"]
"""What a budget caps: CPU seconds of the jobs' processes, GPU (device) seconds the jobs held."""

JobBackendName = Literal["local", "ray", "kubernetes"]
"""The job backends (:mod:`rea_executor.backends`): the local job workers, Ray Jobs, Kubernetes Jobs."""


class JobSpec(BaseModel):
    """Everything a worker needs to run one training job."""

    job_id: str
    campaign_id: str
    phase: str
    hypothesis_id: str | None = Field(default=None, description="None for the baseline.")
    workload: str
    dataset: str
    config: dict[str, Any]
    seed: int = 0
    attempt: int = 1
    retry_of: str | None = Field(
        default=None, description="The job this one retries, after a runbook action."
    )
    not_before: datetime | None = Field(
        default=None, description="Backoff: a worker waits until then to start."
    )
    estimated_cpu_seconds: float = 0.0
    estimated_gpu_seconds: float = Field(
        default=0.0, description="GPU (device) seconds it will hold: 0 for a job that asks for none."
    )
    diagnose: bool = Field(default=False, description="Measure the run's diagnostics (baselines).")
    timeout_s: float
    memory_mb: int
    cpus: float = Field(default=1.0, gt=0, description="CPU cores the job asks its backend for.")
    gpus: int = Field(default=0, ge=0, description="GPUs the job asks its backend for.")
    backend: JobBackendName = Field(default="local", description="Where it runs (rea_executor.backends).")
    stop_above: dict[int, float] = Field(
        default_factory=dict,
        description="Early stopping: a validation NE above stop_above[e] after epoch e ends the job as "
        "pruned, with the CPU it used (the planner's median-stopping rule).",
    )


class PhasePlan(BaseModel):
    phase: str
    jobs: list[JobSpec]
    estimated_cpu_seconds: float
    estimated_gpu_seconds: float = 0.0


FINISHED_JOB_STATUSES: frozenset[str] = frozenset({"completed", "failed", "retried", "cancelled"})
"""A job in one of these is over: it reported, failed for good, was replaced by a retry, or was
cancelled with its campaign (before it started, or stopped while it ran)."""
IN_FLIGHT_JOB_STATUSES: frozenset[str] = frozenset({"submitted", "running"})
"""A job in one of these was handed to a worker (or a cluster) and has not finished."""


class JobRecord(BaseModel):
    """A finished job as the executor saw it: enough to pick a winner without the logs."""

    job_id: str
    hypothesis_id: str | None
    config: dict[str, Any]
    status: Literal["completed", "failed", "retried", "cancelled"]
    phase: str = "validation"
    seed: int = 0
    validation: SplitMetrics | None = None
    test: SplitMetrics | None = None
    cost: JobCost | None = None
    error: JobError | None = None
    diagnostics: Diagnostics | None = None
    footprint: ModelFootprint | None = None
    kernels: list[KernelUse] = Field(
        default_factory=list, description="With evolved kernels: what ran per operator and shape bucket."
    )
    val_ne_by_epoch: list[float] = Field(
        default_factory=list, description="Validation NE after each epoch it reported: its learning curve."
    )


class MetricSummary(BaseModel):
    """One config's test-split metrics; ``ne`` and ``auc`` are means over ``ne_by_seed``'s seeds."""

    job_id: str
    hypothesis_id: str | None = None
    ne: float
    auc: float
    validation_ne: float
    ne_by_seed: dict[int, float] = Field(default_factory=dict)


class Interaction(BaseModel):
    """Two hypotheses stacked: is their joint effect the sum of their own (validation NE deltas
    vs the baseline), better (synergistic) or worse (conflicting), beyond ``tolerance``?"""

    pair: tuple[str, str]
    effects: tuple[float, float]
    expected: float = Field(description="The sum of the two effects: what an additive pair would give.")
    observed: float
    tolerance: float
    kind: Literal["additive", "synergistic", "conflicting"]


class CampaignResult(BaseModel):
    baseline: MetricSummary
    best: MetricSummary
    best_changes: dict[str, Any]
    ne_delta: float = Field(description="best.ne - baseline.ne on the test split (negative is better).")
    ne_relative_gain: float = Field(description="(baseline.ne - best.ne) / baseline.ne on the test split.")
    auc_delta: float
    jobs_completed: int
    jobs_failed: int
    compute_seconds: float
    seeds: int = Field(default=1, description="Seeds both configs were compared over on the test split.")
    ne_delta_low: float | None = Field(default=None, description="Confidence interval of ne_delta (Welch).")
    ne_delta_high: float | None = None
    p_value: float | None = None
    confidence: float = 0.95
    verdict: Literal["better", "worse", "not significant", "too few seeds"] = "too few seeds"
    notes: list[str] = Field(default_factory=list, description="Why the result is what it is.")
    baseline_changes: dict[str, Any] = Field(
        default_factory=dict,
        description="What the runbook changed in the baseline config, when the baseline itself could not "
        "train as requested (empty: the baseline is the campaign's own).",
    )
    best_hypotheses: list[str] = Field(
        default_factory=list, description="The hypotheses whose changes the winning config carries."
    )
    interactions: list[Interaction] = Field(default_factory=list)
    effects: dict[str, float] = Field(
        default_factory=dict,
        description="Each validated hypothesis' relative validation-NE gain over the baseline (one seed).",
    )


# ---- events ---------------------------------------------------------------------------


class CampaignRequested(Envelope):
    """A person's campaign request. The payload is left loose on purpose: the planner validates
    it against ``CampaignSpec`` and answers with a ``campaign.rejected`` that says why."""

    type: Literal["campaign.requested"] = "campaign.requested"
    version: Literal[1] = 1
    payload: dict[str, Any]


class CampaignRejectedPayload(BaseModel):
    reasons: list[str]


class CampaignRejected(Envelope):
    type: Literal["campaign.rejected"] = "campaign.rejected"
    version: Literal[1] = 1
    payload: CampaignRejectedPayload


class HypothesesRequestedPayload(BaseModel):
    workload: str
    dataset: str
    baseline: dict[str, Any]
    max_hypotheses: int
    allow_llm: bool = Field(default=False, description="Whether the campaign's grant lets it ask the LLM.")


class HypothesesRequested(Envelope):
    type: Literal["hypotheses.requested"] = "hypotheses.requested"
    version: Literal[1] = 1
    payload: HypothesesRequestedPayload


class HypothesesGeneratedPayload(BaseModel):
    hypotheses: list[Hypothesis]
    rejected: list[str] = Field(
        default_factory=list,
        description="Hypotheses left out and why: expected to hurt by history, or an LLM proposal that "
        "failed validation. (Catalogue entries that do not apply to the workload are not listed.)",
    )
    findings: list[str] = Field(
        default_factory=list,
        description="What a past run of the same baseline showed (see rea.diagnostics), already used "
        "to rank the hypotheses; empty when no such run was found.",
    )


class HypothesesGenerated(Envelope):
    type: Literal["hypotheses.generated"] = "hypotheses.generated"
    version: Literal[1] = 1
    payload: HypothesesGeneratedPayload


class Checklist(BaseModel):
    """The preflight checklist shown with a plan: what approving it lets REA touch and spend."""

    grant_id: str
    team: str
    dataset: str
    files: list[str] = Field(default_factory=list, description="The files the dataset reads, resolved.")
    budget_cpu_seconds: float
    budget_gpu_seconds: float | None = None
    estimate_cpu_seconds: float
    backend: JobBackendName | None = Field(default=None, description="None: the deployment's default.")
    llm: bool = Field(description="Whether hypotheses may come from the LLM.")
    generated_kernels: bool = Field(description="Whether the jobs run generated kernels.")

    def lines(self) -> list[str]:
        """The checklist as a person reads it."""
        gpu = "none" if self.budget_gpu_seconds is None else f"{self.budget_gpu_seconds:g} GPU-s"
        return [
            f"grant: {self.grant_id} (team {self.team})",
            f"data: {self.dataset}" + (f" ({', '.join(self.files)})" if self.files else ""),
            f"budget: {self.budget_cpu_seconds:g} CPU-s (the plan is estimated at "
            f"{self.estimate_cpu_seconds:g}), GPU: {gpu}",
            f"backend: {self.backend or 'the deployment default'}",
            f"LLM: {'yes' if self.llm else 'no'}",
            f"generated code: {'yes (evolved kernels)' if self.generated_kernels else 'no'}",
        ]


class PlanProposedPayload(BaseModel):
    plan: PhasePlan
    requires_approval: bool
    budget_by_phase: dict[str, float] = Field(
        default_factory=dict, description="Estimated CPU seconds per phase kind; the plan is the first."
    )
    checklist: Checklist | None = None


class PlanProposed(Envelope):
    type: Literal["plan.proposed"] = "plan.proposed"
    version: Literal[1] = 1
    payload: PlanProposedPayload


class Signature(BaseModel):
    """A person's signature over a decision (see :mod:`rea.signing`): who signed, with which
    key, a nonce that makes the decision usable once, and when it stops being valid."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    by: str = Field(min_length=1, max_length=128)
    key_id: str = Field(min_length=1, max_length=128)
    alg: Literal["hmac-sha256"] = "hmac-sha256"
    nonce: str = Field(pattern=r"^[0-9a-f]{32}$")
    expires_at: AwareDatetime
    value: str = Field(min_length=1, max_length=128, description="Base64 of the MAC.")


class SignedDecision(Event):
    """A person's decision. Services act on it only when it carries a valid signature of the
    person it names (:mod:`rea.decisions`)."""

    signature: Signature | None = None

    def decided_by(self) -> str:
        """The person the decision names (who approved, paused, extended, granted...)."""
        payload = getattr(self, "payload")  # noqa: B009 (every decision has one; its type varies)
        return str(getattr(payload, "approved_by", None) or payload.by)


class PersonDecision(Envelope, SignedDecision):
    """A person's decision about a campaign."""


class PlanApprovedPayload(BaseModel):
    approved_by: str
    auto: bool = False


class PlanApproved(PersonDecision):
    """A person's (or the auto-approve policy's) approval of the proposed plan and its budget."""

    type: Literal["plan.approved"] = "plan.approved"
    version: Literal[1] = 1
    payload: PlanApprovedPayload


class PersonAction(BaseModel):
    by: str = "cli"


class ProposalAccepted(PersonDecision):
    """A person accepted the launch proposal of a completed campaign (its winning config)."""

    type: Literal["proposal.accepted"] = "proposal.accepted"
    version: Literal[1] = 1
    payload: PersonAction


class CampaignPaused(PersonDecision):
    """A person paused the campaign: jobs in flight finish, no new ones start."""

    type: Literal["campaign.paused"] = "campaign.paused"
    version: Literal[1] = 1
    payload: PersonAction


class CampaignResumed(PersonDecision):
    type: Literal["campaign.resumed"] = "campaign.resumed"
    version: Literal[1] = 1
    payload: PersonAction


class CampaignCancelled(PersonDecision):
    """A person cancelled the campaign: no job starts, jobs in flight are stopped, their
    reservations released, and the campaign ends as ``cancelled`` with what it found so far."""

    type: Literal["campaign.cancelled"] = "campaign.cancelled"
    version: Literal[1] = 1
    payload: PersonAction


class GrantEnvelope(Event):
    """An event of a preflight grant: what a team lets REA spend and read on its behalf."""

    grant_id: str = Field(min_length=1, max_length=128)

    def key(self) -> bytes:
        """The grant, so its creation and revocation reach the planner in order."""
        return self.grant_id.encode()


class GrantTerms(BaseModel):
    """What a grant allows. A campaign runs only inside its grant's terms; the plan starts
    without a person's approval only when its estimate is within ``auto_approve_up_to``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    team: str = Field(min_length=1, max_length=128)
    workloads: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(min_length=1, max_length=64)
    datasets: list[Annotated[str, Field(min_length=1, max_length=1024)]] = Field(
        min_length=1,
        max_length=64,
        description="Dataset specs the campaigns may use, as shell patterns (synthetic*, movielens-100k), "
        "and absolute paths (a directory or a pattern) the files a dataset reads must lie in.",
    )
    max_cpu_seconds: float = Field(
        gt=0, description="The most CPU seconds one campaign may be budgeted, extensions included."
    )
    max_gpu_seconds: float | None = Field(
        default=None,
        gt=0,
        description="The most GPU seconds one campaign may be budgeted; None: no GPU jobs.",
    )
    backends: list[JobBackendName] = Field(min_length=1, max_length=3)
    auto_approve_up_to: float | None = Field(
        default=None, ge=0, description="Plans estimated at or below this many CPU seconds start unapproved."
    )
    allow_llm: bool = Field(default=False, description="Hypotheses may be asked of the configured LLM.")
    allow_kernel_codegen: bool = Field(
        default=False, description="Jobs may run generated kernels (the workload's evolved-kernels knob)."
    )

    @model_validator(mode="after")
    def _cap_within_max(self) -> GrantTerms:
        if self.auto_approve_up_to is not None and self.auto_approve_up_to > self.max_cpu_seconds:
            raise ValueError("auto_approve_up_to cannot exceed max_cpu_seconds")
        return self


class GrantCreatedPayload(BaseModel):
    terms: GrantTerms
    by: str = Field(min_length=1, max_length=128)


class GrantCreated(GrantEnvelope, SignedDecision):
    """A person granted a team's campaigns the terms. A grant id is created once: new terms
    are a new grant (and the old one revoked), so a campaign's grant never changes under it."""

    type: Literal["grant.created"] = "grant.created"
    version: Literal[1] = 1
    payload: GrantCreatedPayload


class GrantRevokedPayload(BaseModel):
    by: str = Field(min_length=1, max_length=128)
    reason: str = Field(default="", max_length=500)


class GrantRevoked(GrantEnvelope, SignedDecision):
    """A person revoked a grant: no new campaign under it starts, and no plan under it is
    approved, by a person or by the grant. Campaigns already running keep their approved budget
    (and may be extended up to the grant's max): cancel them to stop them."""

    type: Literal["grant.revoked"] = "grant.revoked"
    version: Literal[1] = 1
    payload: GrantRevokedPayload


class BudgetExtendedPayload(BaseModel):
    cpu_seconds: float = Field(default=0.0, ge=0)
    gpu_seconds: float = Field(default=0.0, ge=0)
    by: str = "cli"

    @model_validator(mode="after")
    def _raises_something(self) -> BudgetExtendedPayload:
        if self.cpu_seconds <= 0 and self.gpu_seconds <= 0:
            raise ValueError("an extension adds CPU seconds, GPU seconds or both")
        return self

    def describe(self) -> str:
        """ "200 CPU-s", "3600 GPU-s" or "200 CPU-s and 3600 GPU-s"."""
        parts = [f"{self.cpu_seconds:g} CPU-s"] if self.cpu_seconds else []
        parts += [f"{self.gpu_seconds:g} GPU-s"] if self.gpu_seconds else []
        return " and ".join(parts)


class BudgetExtended(PersonDecision):
    """A person raised the campaign's CPU or GPU budget (resumes a campaign paused for budget)."""

    type: Literal["budget.extended"] = "budget.extended"
    version: Literal[1] = 1
    payload: BudgetExtendedPayload


class PhaseStatusPayload(BaseModel):
    phase: str
    cause: Literal["person", "budget"]
    reason: str
    spent_cpu_seconds: float
    budget_cpu_seconds: float
    resource: BudgetResource = Field(
        default="cpu_seconds", description="The budget the pause or warning is about."
    )
    spent_gpu_seconds: float = 0.0
    budget_gpu_seconds: float | None = None


class PhasePaused(Envelope):
    """The executor stopped starting jobs: a person paused it, or the budget is spent."""

    type: Literal["phase.paused"] = "phase.paused"
    version: Literal[1] = 1
    payload: PhaseStatusPayload


class PhaseResumed(Envelope):
    type: Literal["phase.resumed"] = "phase.resumed"
    version: Literal[1] = 1
    payload: PhaseStatusPayload


class BudgetWarning(Envelope):
    """80% of the budget is spent."""

    type: Literal["budget.warning"] = "budget.warning"
    version: Literal[1] = 1
    payload: PhaseStatusPayload


class PhaseStartedPayload(BaseModel):
    plan: PhasePlan
    budget_cpu_seconds: float
    budget_gpu_seconds: float | None = Field(
        default=None, description="What is left of the campaign's GPU budget; None: GPU-s are not capped."
    )
    max_parallel_jobs: int
    campaign_budget_cpu_seconds: float | None = Field(
        default=None,
        description="The campaign's approved budget: its weight when campaigns share the workers "
        "(the phase's own budget when absent).",
    )
    max_cpu_seconds: float | None = Field(
        default=None,
        description="The most the budget may be extended to (the campaign's grant); None: no cap.",
    )
    max_gpu_seconds: float | None = Field(
        default=None, description="The most the GPU budget may be extended to; None: no cap."
    )


class PhaseStarted(Envelope):
    type: Literal["phase.started"] = "phase.started"
    version: Literal[1] = 1
    payload: PhaseStartedPayload


class JobSubmitted(Envelope):
    type: Literal["job.submitted"] = "job.submitted"
    version: Literal[1] = 1
    payload: JobSpec
    partition: int | None = Field(
        default=None,
        ge=0,
        description="The job queue partition of the worker it was placed on (the least busy "
        "when it was submitted); None: by its key.",
    )

    def key(self) -> bytes:
        """Jobs are keyed by job id so they spread over every worker in the group."""
        return self.payload.job_id.encode()

    def placed_partition(self) -> int | None:
        return self.partition


class JobStartedPayload(BaseModel):
    job_id: str
    phase: str
    worker: str


class JobStarted(Envelope):
    type: Literal["job.started"] = "job.started"
    version: Literal[1] = 1
    payload: JobStartedPayload


class JobFinishedPayload(BaseModel):
    spec: JobSpec
    output: JobOutput
    worker: str


class JobCompleted(Envelope):
    type: Literal["job.completed"] = "job.completed"
    version: Literal[1] = 1
    payload: JobFinishedPayload


class JobFailed(Envelope):
    type: Literal["job.failed"] = "job.failed"
    version: Literal[1] = 1
    payload: JobFinishedPayload


class PhaseConcludedPayload(BaseModel):
    phase: str
    jobs: list[JobRecord]


class PhaseConcluded(Envelope):
    type: Literal["phase.concluded"] = "phase.concluded"
    version: Literal[1] = 1
    payload: PhaseConcludedPayload


class RunbookEntry(BaseModel):
    """One runbook decision about a failed job: what failed, what was done, and why."""

    job_id: str
    hypothesis_id: str | None
    failure: str
    message: str
    action: str
    reason: str
    retry_job_id: str | None = None
    escalated: bool = False


class RunbookApplied(Envelope):
    """The executor handled a failed job by its runbook (or escalated it to a person)."""

    type: Literal["runbook.applied"] = "runbook.applied"
    version: Literal[1] = 1
    payload: RunbookEntry


class CampaignCompletedPayload(BaseModel):
    result: CampaignResult
    workload: str = ""
    dataset: str = ""


class CampaignCompleted(Envelope):
    type: Literal["campaign.completed"] = "campaign.completed"
    version: Literal[1] = 1
    payload: CampaignCompletedPayload


# ---- KernelEvolve ----------------------------------------------------------------------

KernelTargetName = Literal["cpu", "triton"]
KernelParam = int | str | bool


class KernelSearchRequestedPayload(BaseModel):
    """Search kernels for one operator on one target, within a number of candidate evaluations."""

    model_config = ConfigDict(extra="forbid")

    operator: str = Field(min_length=1, max_length=64, description="A registered operator (rea_kernel).")
    target: KernelTargetName = "cpu"
    budget: int = Field(default=24, ge=1, le=1000, description="Candidates evaluated, at most.")
    method: Literal["mcts_evolution", "random"] = "mcts_evolution"
    seed: int = Field(default=0, ge=0)
    requested_by: str = Field(default="cli", min_length=1, max_length=128)
    shapes: list[dict[str, int | float | str]] = Field(
        default_factory=list,
        max_length=8,
        description="The shapes to time candidates on (the operator's shape fields, e.g. the ones a "
        "trainer reported in its kernel use); empty: the operator's benchmark shapes.",
    )
    synthesized: int = Field(
        default=0,
        ge=0,
        le=200,
        description="Candidates an LLM writes after the search, on top of the budget (the kernel "
        "service needs an endpoint: REA_LLM_BASE_URL).",
    )
    warm_start: bool = Field(
        default=True,
        # Off the wire at its default, so a request signed before the field existed still verifies.
        exclude_if=lambda warm: warm is True,
        description="Evaluate the registry's kernels for this operator on this device (found for "
        "other shapes) first, within the budget; false: a cold search, as when comparing methods.",
    )

    def describe(self) -> str:
        """'layer_norm on cpu: 24 evaluations + 4 written by an LLM', for the audit trail."""
        written = f" + {self.synthesized} written by an LLM" if self.synthesized else ""
        return f"{self.operator} on {self.target}: {self.budget} evaluations{written}"


class KernelSearchRequested(KernelEnvelope, SignedDecision):
    """A person's request for a kernel search, signed like their other decisions: it spends
    machine time (and LLM calls, with ``synthesized``), and its winner goes into the registry
    that trainers run kernels from."""

    type: Literal["kernel.search.requested"] = "kernel.search.requested"
    version: Literal[1] = 1
    payload: KernelSearchRequestedPayload

    def decided_by(self) -> str:
        return self.payload.requested_by


class KernelCandidateEvaluatedPayload(BaseModel):
    """One candidate's verdict: what a search tried and what the evaluator found."""

    operator: str
    target: KernelTargetName
    device: str = Field(description="Where it was checked and timed, e.g. the CPU's model name.")
    evaluation: int = Field(ge=1, description="Its place in the search: 1 for the first candidate.")
    digest: str
    params: dict[str, KernelParam] = Field(default_factory=dict)
    author: str = Field(default="template", description="'template', or the LLM that wrote it (llm:MODEL).")
    note: str = Field(
        default="", description="What a written kernel does differently, in its author's words."
    )
    verdict: str
    reason: str
    speedup_vs_eager: float | None = Field(
        default=None, description="Geometric mean over the timed shapes; None when not timed."
    )


class KernelCandidateEvaluated(KernelEnvelope):
    type: Literal["kernel.candidate.evaluated"] = "kernel.candidate.evaluated"
    version: Literal[1] = 1
    payload: KernelCandidateEvaluatedPayload


class KernelPublishedPayload(BaseModel):
    """The best correct candidate of a search, kept in the kernel registry."""

    operator: str
    target: KernelTargetName
    device: str
    digest: str
    params: dict[str, KernelParam] = Field(default_factory=dict)
    speedup_vs_eager: float = Field(description="Geometric mean over the benchmark shapes.")
    speedup_vs_compiled: float | None = None
    evaluations: int = Field(ge=1)
    method: Literal["mcts_evolution", "random"]
    author: str = Field(default="template", description="Who wrote the winner: 'template' or llm:MODEL.")


class KernelPublished(KernelEnvelope):
    type: Literal["kernel.published"] = "kernel.published"
    version: Literal[1] = 1
    payload: KernelPublishedPayload


class KernelSearchFailedPayload(BaseModel):
    operator: str
    target: KernelTargetName
    reason: str


class KernelSearchFailed(KernelEnvelope):
    """A search that published nothing: an unknown operator, a target this machine lacks, or no
    candidate that passed the evaluator."""

    type: Literal["kernel.search.failed"] = "kernel.search.failed"
    version: Literal[1] = 1
    payload: KernelSearchFailedPayload


AnyEvent = Annotated[
    CampaignRequested
    | CampaignRejected
    | HypothesesRequested
    | HypothesesGenerated
    | PlanProposed
    | PlanApproved
    | PhaseStarted
    | JobSubmitted
    | JobStarted
    | JobCompleted
    | JobFailed
    | PhaseConcluded
    | CampaignPaused
    | CampaignResumed
    | CampaignCancelled
    | BudgetExtended
    | PhasePaused
    | PhaseResumed
    | BudgetWarning
    | RunbookApplied
    | CampaignCompleted
    | ProposalAccepted
    | KernelSearchRequested
    | KernelCandidateEvaluated
    | KernelPublished
    | KernelSearchFailed
    | GrantCreated
    | GrantRevoked,
    Field(discriminator="type"),
]

_ADAPTER: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)

EVENT_TYPES: tuple[type[Event], ...] = get_args(get_args(AnyEvent)[0])
"""Every event model, for consumers that handle them all (the experiment logger)."""


PUBLISHED_BY_PEOPLE: frozenset[str] = frozenset(
    model.model_fields["type"].default
    for model in (
        CampaignRequested,
        PlanApproved,
        ProposalAccepted,
        CampaignPaused,
        CampaignResumed,
        CampaignCancelled,
        BudgetExtended,
        KernelSearchRequested,
        GrantCreated,
        GrantRevoked,
    )
)
"""The types of the events a person (through the CLI or any Kafka client) publishes, rather
than a service: held to the smaller of the two size limits."""


class EventLimits(BaseModel):
    """How large a message a consumer accepts. Services' own events (a whole campaign's result)
    may be large; a person's request or decision never needs much, and a large one is an
    attempt to make every consumer parse and store it."""

    model_config = ConfigDict(frozen=True)

    max_bytes: int = Field(default=1 << 20, ge=1024, description="Any message (Kafka's default cap).")
    max_person_bytes: int = Field(default=64 << 10, ge=1024, description="An event people publish.")

    def too_large(self, size: int, event: Event | None = None) -> str | None:
        """Why a message of ``size`` bytes (``event``, once parsed) is refused, or None."""
        by_people = event is not None and event.type in PUBLISHED_BY_PEOPLE
        limit = self.max_person_bytes if by_people else self.max_bytes
        if size <= limit:
            return None
        whose = f" for a {event.type} event" if by_people and event is not None else ""
        return f"too large: {size} bytes (limit {limit}{whose})"


def parse_event(raw: bytes | str) -> AnyEvent:
    """Parse one message body; raises pydantic.ValidationError (with the reason) when it is not an event."""
    return _ADAPTER.validate_json(raw)


def encode_event(event: Event) -> bytes:
    return event.model_dump_json().encode()


def describe_error(error: ValidationError) -> str:
    """A one-line, person-readable account of every validation problem."""
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "message"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


class DeadLetter(BaseModel):
    """What the dead-letter topic carries: the original bytes (as text) and why they were refused."""

    id: str = Field(default_factory=new_id)
    reason: str
    service: str
    topic: str
    partition: int | None = None
    offset: int | None = None
    original: str = Field(description="The refused message, decoded as UTF-8 with replacement, truncated.")
    original_size: int
    occurred_at: datetime = Field(default_factory=utc_now)
