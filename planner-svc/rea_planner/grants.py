"""Preflight grants in the planner: keeping each grant's state, and holding a campaign to its
grant's terms. Pure functions; the service loads the grant and passes it in, as it passes the
cost model.

A campaign is refused, with every reason, when its grant is unknown or revoked, or when its
workload, data, budget, backend or generated-code use fall outside the terms. A dataset that
reads files is judged by its files, resolved: each must lie under one of the grant's absolute
paths (a directory, or a shell pattern over the whole path); the dataset's name is not enough,
so ``criteo:/data/a/../b/x.tsv`` is judged as ``/data/b/x.tsv``. A dataset that reads no file
(synthetic data, a built-in download) must match one of the grant's name patterns.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from fnmatch import fnmatchcase
from pathlib import Path

from rea.events import GrantCreated, GrantRevoked
from rea.grants import GLOB_CHARACTERS, Grant
from rea.knobs import Role
from rea.store import Decision
from rea.workloads import Workload
from rea_planner.campaign import CampaignSpec


def on_grant_created(state: Grant | None, event: GrantCreated) -> Decision[Grant]:
    """Store a new grant, made by its signer; a grant id already used keeps its first terms."""
    if state is not None:
        return Decision()
    signer = event.signature.by if event.signature else event.payload.by
    return Decision(
        Grant(
            grant_id=event.grant_id,
            terms=event.payload.terms,
            created_by=signer,
            created_at=event.occurred_at,
        )
    )


def on_grant_revoked(state: Grant | None, event: GrantRevoked) -> Decision[Grant]:
    """Revoke a grant (once: the first revocation stands)."""
    if state is None or state.status == "revoked":
        return Decision()
    signer = event.signature.by if event.signature else event.payload.by
    revoked = state.model_copy(
        update={
            "status": "revoked",
            "revoked_by": signer,
            "revoked_at": event.occurred_at,
            "revoked_because": event.payload.reason,
        }
    )
    return Decision(revoked)


def on_grant_event(state: Grant | None, event: GrantCreated | GrantRevoked) -> Decision[Grant]:
    if isinstance(event, GrantCreated):
        return on_grant_created(state, event)
    return on_grant_revoked(state, event)


def dataset_files(workload: Workload, dataset: str) -> list[Path]:
    """The files ``dataset`` reads, resolved (a file that does not resolve is the data roots'
    concern, checked before the grant)."""
    paths = getattr(workload, "dataset_paths", None)
    named = list(paths(dataset)) if callable(paths) else []
    return [Path(path).resolve() for path in named]


def _within(path: Path, place: str) -> bool:
    """Whether a resolved ``path`` lies under the grant's ``place``: a directory or file, or a
    shell pattern matched against the whole path."""
    normal = os.path.normpath(place)
    if GLOB_CHARACTERS & set(normal):
        return fnmatchcase(str(path), normal)
    return path == Path(normal) or Path(normal) in path.parents


def dataset_granted(dataset: str, files: Sequence[Path], granted: Sequence[str]) -> bool:
    """Whether the grant's ``granted`` datasets cover ``dataset`` (see the module docstring)."""
    if files:
        places = [entry for entry in granted if entry.startswith("/")]
        return all(any(_within(path, place) for place in places) for path in files)
    return any(fnmatchcase(dataset, pattern) for pattern in granted if not pattern.startswith("/"))


def runs_generated_code(workload: Workload, spec: CampaignSpec) -> bool:
    """Whether the campaign's jobs would run generated kernels (the evolved-kernels knob on)."""
    baseline = workload.schema.resolve(spec.baseline)
    return workload.schema.role_value(baseline, Role.EVOLVED_KERNELS, False) is True


def grant_problems(
    spec: CampaignSpec, grant: Grant | None, workload: Workload, files: Sequence[Path]
) -> list[str]:
    """Every way ``spec`` falls outside ``grant`` (the grant it names, as loaded; None: none
    by that id), each naming the grant; empty when it is inside. ``files``: what the dataset
    reads (:func:`dataset_files`)."""
    if grant is None or grant.grant_id != spec.grant:
        return [f"grant: no grant {spec.grant!r} (an engineer creates one with `rea grant create`)"]
    named = f"grant {grant.grant_id!r}"
    if grant.status == "revoked":
        return [f"grant: {named} was {grant.describe_revocation()}"]
    terms = grant.terms
    problems = []
    if spec.workload not in terms.workloads:
        problems.append(
            f"workload: {spec.workload!r} is not among {named}'s workloads ({', '.join(terms.workloads)})"
        )
    if not dataset_granted(spec.dataset, files, terms.datasets):
        read = f" (reads {', '.join(map(str, files))})" if files else ""
        problems.append(
            f"dataset: {spec.dataset!r}{read} is not among {named}'s datasets ({', '.join(terms.datasets)})"
        )
    if spec.budget_cpu_seconds > terms.max_cpu_seconds:
        problems.append(
            f"budget_cpu_seconds: {spec.budget_cpu_seconds:g} is above {named}'s max "
            f"of {terms.max_cpu_seconds:g}"
        )
    if spec.job_gpus > 0:
        if terms.max_gpu_seconds is None:
            problems.append(f"job_gpus: {named} allows no GPU jobs (it has no max GPU seconds)")
        elif spec.budget_gpu_seconds is None:
            problems.append(
                f"budget_gpu_seconds: {named} caps GPU seconds at {terms.max_gpu_seconds:g}; "
                "set a budget within it"
            )
        elif spec.budget_gpu_seconds > terms.max_gpu_seconds:
            problems.append(
                f"budget_gpu_seconds: {spec.budget_gpu_seconds:g} is above {named}'s max "
                f"of {terms.max_gpu_seconds:g}"
            )
    if spec.backend not in terms.backends:
        problems.append(
            f"backend: {spec.backend!r} is not among {named}'s backends ({', '.join(terms.backends)})"
        )
    if runs_generated_code(workload, spec) and not terms.allow_kernel_codegen:
        problems.append(f"baseline: the jobs would run generated kernels, which {named} does not allow")
    return problems


def auto_approver(grant: Grant | None, estimate_cpu_seconds: float) -> str | None:
    """Who approves a plan estimated at ``estimate_cpu_seconds`` without a person: the grant's
    auto-approval, when it has one that covers the estimate and is not revoked; else None."""
    if grant is None or grant.status != "active":
        return None
    cap = grant.terms.auto_approve_up_to
    if cap is None or estimate_cpu_seconds > cap:
        return None
    return f"grant {grant.grant_id} (auto-approves up to {cap:g} CPU-s; granted by {grant.created_by})"
