"""Preflight grants: the planner holds every campaign to its grant's terms, auto-approval
comes from the grant and never from the request, and a budget grows only within the grant."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from rich.console import Console

from rea.events import (
    BudgetExtended,
    BudgetExtendedPayload,
    CampaignRejected,
    CampaignRequested,
    GrantCreated,
    GrantCreatedPayload,
    GrantRevoked,
    GrantRevokedPayload,
    GrantTerms,
    HypothesesRequested,
    PhaseStarted,
    PlanProposed,
    Signature,
)
from rea.grants import Grant
from rea_executor import logic as executor
from rea_planner import logic
from rea_planner.grants import auto_approver, dataset_granted, on_grant_event
from rea_tools.cli import grant_table

from .test_executor_logic import spec as job_spec
from .test_executor_logic import started as phase_started
from .test_planner_logic import (
    BASELINE_COST,
    COSTS,
    FOLLOW,
    approved,
    generated,
    grant,
    hypothesis,
    planning,
    request,
    running,
)

REVOKED_AT = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)


def revoked(made: Grant) -> Grant:
    return made.model_copy(
        update={
            "status": "revoked",
            "revoked_by": "frank",
            "revoked_at": REVOKED_AT,
            "revoked_because": "moved",
        }
    )


def admit(made: Grant | None, roots: list[Path] | None = None, **overrides: Any) -> tuple[str, list[str]]:
    event = CampaignRequested(**FOLLOW, payload=request(**overrides))
    decision = logic.on_campaign_requested(None, event, data_roots=roots, grant=made)
    assert decision.state is not None
    if decision.state.status == "rejected":
        [told] = decision.emit
        assert isinstance(told, CampaignRejected) and told.payload.reasons == decision.state.reasons
    return decision.state.status, decision.state.reasons


# ---- admission -----------------------------------------------------------------------


def test_a_campaign_inside_its_grant_is_admitted_with_the_grant_recorded() -> None:
    made = grant(allow_llm=True)
    decision = logic.on_campaign_requested(None, CampaignRequested(**FOLLOW, payload=request()), grant=made)
    assert decision.state is not None and decision.state.status == "planning"
    assert decision.state.grant == made
    [ask] = decision.emit
    assert isinstance(ask, HypothesesRequested) and ask.payload.allow_llm is True


def test_the_llm_is_asked_only_when_the_grant_allows_it() -> None:
    decision = logic.on_campaign_requested(
        None, CampaignRequested(**FOLLOW, payload=request()), grant=grant()
    )
    [ask] = decision.emit
    assert isinstance(ask, HypothesesRequested) and ask.payload.allow_llm is False


def test_a_campaign_without_its_grant_is_rejected() -> None:
    assert admit(None) == (
        "rejected",
        ["grant: no grant 'team-a' (an engineer creates one with `rea grant create`)"],
    )
    other = grant().model_copy(update={"grant_id": "team-b"})
    assert admit(other)[1][0].startswith("grant: no grant 'team-a'")


def test_a_campaign_under_a_revoked_grant_is_rejected_with_who_and_when() -> None:
    assert admit(revoked(grant())) == (
        "rejected",
        ["grant: grant 'team-a' was revoked by frank at 2026-12-02 09:30 UTC: moved"],
    )


def test_every_way_outside_the_grant_is_named_at_once() -> None:
    narrow = grant(
        workloads=["autoint"],
        datasets=["movielens-*"],
        max_cpu_seconds=500,
        max_gpu_seconds=None,
        backends=["ray"],
        allow_kernel_codegen=False,
    )
    status, reasons = admit(
        narrow,
        workload="ranker",
        budget_cpu_seconds=600,
        job_gpus=1,
        backend="local",
        baseline={"use_evolved_kernels": True},
    )
    assert status == "rejected"
    assert reasons == [
        "workload: 'ranker' is not among grant 'team-a''s workloads (autoint)",
        "dataset: 'synthetic:rows=3000' is not among grant 'team-a''s datasets (movielens-*)",
        "budget_cpu_seconds: 600 is above grant 'team-a''s max of 500",
        "job_gpus: grant 'team-a' allows no GPU jobs (it has no max GPU seconds)",
        "backend: 'local' is not among grant 'team-a''s backends (ray)",
        "baseline: the jobs would run generated kernels, which grant 'team-a' does not allow",
    ]


def test_gpu_jobs_need_a_gpu_budget_within_the_grant() -> None:
    capped = grant(max_gpu_seconds=100)
    assert admit(capped, job_gpus=1)[1] == [
        "budget_gpu_seconds: grant 'team-a' caps GPU seconds at 100; set a budget within it"
    ]
    assert admit(capped, job_gpus=1, budget_gpu_seconds=200)[1] == [
        "budget_gpu_seconds: 200 is above grant 'team-a''s max of 100"
    ]
    assert admit(capped, job_gpus=1, budget_gpu_seconds=100)[0] == "planning"


def test_the_spec_reasons_come_first_and_the_grant_is_judged_only_for_a_valid_spec() -> None:
    status, reasons = admit(grant(max_cpu_seconds=10), budget_cpu_seconds=-1)
    assert status == "rejected" and len(reasons) == 1 and reasons[0].startswith("budget_cpu_seconds: ")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """Two teams' data under one root, and a link from one into the other."""
    for team in ("a", "b"):
        (tmp_path / team).mkdir()
        (tmp_path / team / "day_0.tsv").write_text("1\t" + "\t".join(["0"] * 13 + ["x"] * 26) + "\n")
    (tmp_path / "a" / "borrowed.tsv").symlink_to(tmp_path / "b" / "day_0.tsv")
    return tmp_path


def test_a_file_dataset_is_granted_by_where_its_files_really_are(data: Path) -> None:
    team_a = grant(datasets=[f"{data}/a"])
    assert admit(team_a, [data], dataset=f"criteo:{data}/a/day_0.tsv")[0] == "planning"
    for sneaky in (f"{data}/b/day_0.tsv", f"{data}/a/../b/day_0.tsv", f"{data}/a/borrowed.tsv"):
        status, reasons = admit(team_a, [data], dataset=f"criteo:{sneaky}")
        assert status == "rejected", sneaky
        assert reasons == [
            f"dataset: 'criteo:{sneaky}' (reads {data}/b/day_0.tsv) is not among grant 'team-a''s "
            f"datasets ({data}/a)"
        ]


def test_a_dataset_name_pattern_never_grants_files() -> None:
    """``criteo:*`` in a grant would match any path: file datasets are judged by their files."""
    assert not dataset_granted("criteo:/etc/passwd", [Path("/etc/passwd")], ["criteo:*", "*"])
    assert dataset_granted("criteo:/data/a/x.tsv", [Path("/data/a/x.tsv")], ["/data/a"])
    assert dataset_granted("criteo:/data/a/x.tsv", [Path("/data/a/x.tsv")], ["/data/*/x.tsv"])
    assert not dataset_granted("criteo:/data/ab/x.tsv", [Path("/data/ab/x.tsv")], ["/data/a"])
    assert dataset_granted("synthetic:rows=300", [], ["synthetic*"])
    assert not dataset_granted("movielens-100k", [], ["synthetic*", "/data"])


# ---- approval ------------------------------------------------------------------------


def test_a_request_cannot_approve_itself() -> None:
    """The cap once carried by the request is refused, never obeyed."""
    status, reasons = admit(grant(), auto_approve_cpu_seconds=10**9)
    assert status == "rejected"
    assert reasons == [
        "auto_approve_cpu_seconds: a campaign cannot approve itself; auto-approval comes from its grant "
        "(`rea grant create --auto-approve-up-to`)"
    ]


def test_the_grant_auto_approves_up_to_its_cap_and_never_when_revoked() -> None:
    made = grant(auto_approve_up_to=100)
    assert auto_approver(made, 100) == "grant team-a (auto-approves up to 100 CPU-s; granted by erin)"
    assert auto_approver(made, 100.01) is None
    assert auto_approver(grant(), 1) is None
    assert auto_approver(revoked(made), 1) is None


def test_the_plan_is_proposed_with_its_checklist() -> None:
    state = planning(auto_approve_up_to=None, confirm_seeds=1)
    decision = logic.on_hypotheses_generated(state, generated(hypothesis("fm", {"fm": True})), COSTS)
    assert decision.state is not None and decision.state.status == "awaiting_approval"
    [proposed] = decision.emit
    assert isinstance(proposed, PlanProposed)
    listed = proposed.payload.checklist
    assert listed is not None and listed == decision.state.checklist
    assert listed.lines() == [
        "grant: team-a (team ranking)",
        "data: synthetic:rows=3000",
        f"budget: 1000 CPU-s (the plan is estimated at {2 * BASELINE_COST:g}), GPU: none",
        "backend: the deployment default",
        "LLM: no",
        "generated code: no",
    ]


def test_a_grant_revoked_while_planning_rejects_the_campaign() -> None:
    state = planning(auto_approve_up_to=10_000)
    decision = logic.on_hypotheses_generated(state, generated(), COSTS, grant=revoked(grant(10_000)))
    assert decision.state is not None and decision.state.status == "rejected"
    assert decision.state.reasons == ["grant: 'team-a' was revoked by frank at 2026-12-02 09:30 UTC: moved"]
    assert not any(isinstance(event, PhaseStarted) for event in decision.emit)


def test_a_plan_whose_grant_was_revoked_cannot_be_approved() -> None:
    waiting = logic.on_hypotheses_generated(planning(), generated(), COSTS).state
    assert waiting is not None and waiting.status == "awaiting_approval"
    decision = logic.on_plan_approved(waiting, approved("alice"), grant=revoked(grant()))
    assert decision.state is not None and decision.state.status == "rejected"
    assert decision.state.reasons[0].endswith("before the plan was approved")
    assert [type(event) for event in decision.emit] == [CampaignRejected]
    assert logic.on_plan_approved(waiting, approved("alice"), grant=grant()).state.status == "running"  # type: ignore[union-attr]


# ---- budget extensions -----------------------------------------------------------------


def extension(cpu_seconds: float) -> BudgetExtended:
    return BudgetExtended(**FOLLOW, payload=BudgetExtendedPayload(cpu_seconds=cpu_seconds, by="dana"))


def test_the_planner_extends_a_budget_only_up_to_the_grants_max() -> None:
    state = running(budget_cpu_seconds=1000).model_copy(update={"grant": grant(max_cpu_seconds=1500)})
    within = logic.on_budget_extended(state, extension(500)).state
    assert within is not None and within.budget_cpu_seconds() == 1500
    beyond = logic.on_budget_extended(within, extension(1)).state
    assert (
        beyond is not None
        and beyond.budget_cpu_seconds() == 1500
        and beyond.budget_changes == within.budget_changes
    )
    assert beyond.notices[-1] == (
        "budget extension by 1 CPU-s by dana refused: 1501 CPU-s would be above the grant's max of 1500"
    )


def test_the_executor_raises_a_running_phase_only_up_to_the_same_max() -> None:
    event = phase_started([job_spec(0)], budget=1000)
    capped = event.model_copy(update={"payload": event.payload.model_copy(update={"max_cpu_seconds": 1500})})
    phase = executor.on_phase_started(None, capped).state
    assert phase is not None and phase.max_cpu_seconds == 1500
    grown = executor.on_budget_extended(phase, extension(500)).state
    assert grown is not None and grown.budget_cpu_seconds == 1500
    assert executor.on_budget_extended(grown, extension(1)).state is None


def test_a_started_phase_carries_its_grants_maxima() -> None:
    state = planning(auto_approve_up_to=1000).model_copy(
        update={"grant": grant(1000, max_cpu_seconds=4000, max_gpu_seconds=50)}
    )
    decision = logic.on_hypotheses_generated(state, generated(), COSTS)
    started = decision.emit[-1]
    assert isinstance(started, PhaseStarted)
    assert (started.payload.max_cpu_seconds, started.payload.max_gpu_seconds) == (4000, 50)


# ---- the grant's own state -------------------------------------------------------------


def signed_by(who: str) -> Signature:
    return Signature(by=who, key_id="k", nonce="0" * 32, expires_at=REVOKED_AT, value="x")


def test_a_grant_is_created_once_by_its_signer_and_revoked_once() -> None:
    terms = grant().terms
    made = GrantCreated(
        grant_id="team-a",
        correlation_id="c",
        occurred_at=REVOKED_AT,
        payload=GrantCreatedPayload(terms=terms, by="erin"),
        signature=signed_by("erin"),
    )
    first = on_grant_event(None, made).state
    assert first is not None and (first.created_by, first.created_at, first.status) == (
        "erin",
        REVOKED_AT,
        "active",
    )
    again = made.model_copy(
        update={"payload": GrantCreatedPayload(terms=grant(max_cpu_seconds=1).terms, by="erin")}
    )
    assert on_grant_event(first, again).state is None
    revoke = GrantRevoked(
        grant_id="team-a",
        correlation_id="c",
        payload=GrantRevokedPayload(by="frank", reason="moved"),
        signature=signed_by("frank"),
    )
    gone = on_grant_event(first, revoke).state
    assert gone is not None and (gone.status, gone.revoked_by, gone.revoked_because) == (
        "revoked",
        "frank",
        "moved",
    )
    assert on_grant_event(gone, revoke).state is None
    assert on_grant_event(None, revoke).state is None


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"auto_approve_up_to": 2000}, "auto_approve_up_to cannot exceed max_cpu_seconds"),
        ({"workloads": []}, "workloads"),
        ({"backends": ["slurm"]}, "backends.0"),
        ({"max_cpu_seconds": 0}, "max_cpu_seconds"),
        ({"surprise": True}, "surprise"),
    ],
)
def test_grant_terms_out_of_shape_are_refused(change: dict[str, Any], says: str) -> None:
    body = {**grant().terms.model_dump(), "max_cpu_seconds": 1000, **change}
    with pytest.raises(ValidationError, match=says):
        GrantTerms.model_validate(body)


def test_the_grant_list_reads_whole_words_in_80_columns() -> None:
    """`rea grant list` without a terminal (80 columns): every status and date whole."""
    listed = [
        grant(auto_approve_up_to=600).model_copy(update={"grant_id": "ranking-3f2a91"}),
        revoked(grant()),
    ]
    out = Console(width=80, record=True, color_system=None)
    out.print(grant_table(listed))
    text = out.export_text()
    for word in ("ranking-3f2a91", "active", "revoked", "2026-12-01 00:00", "≤ 600", "erin"):
        assert word in text, text
