"""Jobs as the planner makes them, and the records of jobs that ran: the helpers every phase uses."""

from __future__ import annotations

from rea.events import JobRecord, JobSpec, PhasePlan
from rea.phases import EXPLOITATION, SEARCH_KINDS, kind
from rea_planner.campaign import CampaignSpec
from rea_planner.costs import CostModel

JOIN = "+"  # "a+b": hypotheses a and b combined
TRIAL = "~t"  # "a+b~t3": the third exploitation trial, in a trust region around the config a+b
GLOBAL_TRIAL = "~g"  # "a~g7": the seventh, from the whole space; its config still carries a
WITHOUT = "~-"  # "a+b+c~-b": the config a+b+c with b taken out (a pruning round's job)


def stack_of(hypothesis_id: str) -> str:
    """The name without its trial number: "a+b~t3" -> "a+b", "a~g7" -> "a", "~g2" -> ""."""
    return hypothesis_id.split(TRIAL, 1)[0].split(GLOBAL_TRIAL, 1)[0]


def parts(hypothesis_id: str | None) -> list[str]:
    """The hypotheses a job's config carries: "a+b" -> [a, b]; a tuned trial "a+b~t3" -> [a, b];
    a pruned config "a+b+c~-b" -> [a, c]; a trial from the whole space that carries none "~g2" -> []."""
    if not hypothesis_id:
        return []
    stacked, _, removed = stack_of(hypothesis_id).partition(WITHOUT)
    return [name for name in stacked.split(JOIN) if name and name != removed]


def is_pruned(hypothesis_id: str | None) -> bool:
    """Whether the config is one a pruning round made by taking a hypothesis out of a stack."""
    return hypothesis_id is not None and WITHOUT in stack_of(hypothesis_id)


def make_job(
    spec: CampaignSpec,
    campaign_id: str,
    hypothesis_id: str | None,
    config: dict[str, object],
    costs: CostModel,
    phase: str,
    seed: int | None = None,
    diagnose: bool = False,
) -> JobSpec:
    name = hypothesis_id or "baseline"
    seed = spec.seed if seed is None else seed
    cpu_seconds = costs.estimate(config)
    return JobSpec(
        job_id=f"{campaign_id}-{phase}-{name}-s{seed}",
        campaign_id=campaign_id,
        phase=phase,
        hypothesis_id=hypothesis_id,
        workload=spec.workload,
        dataset=spec.dataset,
        config=config,
        seed=seed,
        estimated_cpu_seconds=cpu_seconds,
        estimated_gpu_seconds=gpu_estimate(cpu_seconds, spec.job_cpus, spec.job_gpus),
        diagnose=diagnose,
        timeout_s=spec.job_timeout_s,
        memory_mb=spec.job_memory_mb,
        cpus=spec.job_cpus,
        gpus=spec.job_gpus,
        backend=spec.backend or "local",
    )


def gpu_estimate(cpu_seconds: float, cpus: float, gpus: int) -> float:
    """A job's GPU-s: its GPUs held for its wall time, taken as its CPU-s spread over its cores.
    An estimate (a GPU-bound job may use its cores less); the job side measures the real time."""
    return round(cpu_seconds / cpus * gpus, 3) if gpus else 0.0


def plan_of(phase: str, jobs: list[JobSpec]) -> PhasePlan:
    return PhasePlan(
        phase=phase,
        jobs=jobs,
        estimated_cpu_seconds=round(sum(j.estimated_cpu_seconds for j in jobs), 2),
        estimated_gpu_seconds=round(sum(j.estimated_gpu_seconds for j in jobs), 2),
    )


def search_records(records: list[JobRecord]) -> list[JobRecord]:
    """The jobs that compete to be the winner: completed and measured, in a search phase."""
    return [
        j
        for j in records
        if j.status == "completed" and j.validation and j.test and kind(j.phase) in SEARCH_KINDS
    ]


def stopped_early(job: JobRecord) -> bool:
    """Whether the runner stopped the job behind its early-stopping bar (not a failure)."""
    return job.error is not None and job.error.kind == "pruned"


def best_so_far(records: list[JobRecord]) -> JobRecord | None:
    """The best config of every search phase so far, by validation NE."""
    return min(
        search_records(records), key=lambda j: j.validation.ne if j.validation else float("inf"), default=None
    )


def anchor(records: list[JobRecord]) -> JobRecord | None:
    """The best config of the validation and combination phases, by validation NE: what
    combination extends and exploitation tunes."""
    found = [j for j in search_records(records) if kind(j.phase) != EXPLOITATION]
    return min(found, key=lambda j: j.validation.ne if j.validation else float("inf"), default=None)


def still_dropped(dropped: list[str], ran: list[str | None]) -> list[str]:
    """The "<id>: reason" lines of hypotheses no job carried: the first plan's "over budget"
    lines go stale once a later round runs the hypothesis (the winner itself was once listed as
    dropped). ``ran``: the hypothesis ids of jobs, alone or stacked ("a+b~t3" carries a and b)."""
    carried = {name for hypothesis_id in ran for name in parts(hypothesis_id)}
    return [line for line in dropped if line.split(":", 1)[0].strip() not in carried]
