"""The console's read side without servers: id prefixes, short ids, spend, best gain, job rows,
the live view's frame, and the commands that act on a campaign against a fake client."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from rea.client import (
    UnresolvedId,
    best_so_far,
    config_changes,
    format_changes,
    format_gain,
    job_records,
    job_rows,
    pick_match,
    short_ids,
    spent_cpu_seconds,
    summarize,
)
from rea.events import FINISHED_JOB_STATUSES, CampaignCancelled, Envelope
from rea.ledger import JobRun
from rea.views import CampaignView, PhaseView
from rea_tools import cli

CAMPAIGN = "3f2a91c0d4e5f60718293a4b5c6d7e8f"
BASELINE = {"embedding_dim": 8, "mlp_width": 64, "dropout": 0.0, "learning_rate": 0.001, "epochs": 3}
NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def job_id(phase: str, name: str, seed: int = 0) -> str:
    return f"{CAMPAIGN}-{phase}-{name}-s{seed}"


def spec(phase: str, hypothesis: str | None, config: dict[str, Any]) -> dict[str, Any]:
    """A JobSpec as the executor stores it (model_dump(mode="json"))."""
    return {
        "job_id": job_id(phase, hypothesis or "baseline"),
        "campaign_id": CAMPAIGN,
        "phase": phase,
        "hypothesis_id": hypothesis,
        "workload": "ranker",
        "dataset": "movielens-100k",
        "config": config,
        "seed": 0,
        "attempt": 1,
        "retry_of": None,
        "not_before": None,
        "estimated_cpu_seconds": 20.0,
        "diagnose": hypothesis is None,
        "timeout_s": 1800.0,
        "memory_mb": 4096,
    }


def metrics(ne: float) -> dict[str, Any]:
    return {"ne": ne, "auc": 0.78, "logloss": 0.52, "rows": 10000}


def output(val_ne: float | None, cpu: float, error: tuple[str, str] | None = None) -> dict[str, Any]:
    return {
        "status": "failed" if error else "ok",
        "validation": None if val_ne is None else metrics(val_ne),
        "test": None if val_ne is None else metrics(val_ne + 0.002),
        "cost": {"cpu_seconds": cpu, "wall_seconds": cpu * 1.2, "peak_rss_mb": 310.0, "measured": True},
        "error": None if error is None else {"kind": error[0], "message": error[1]},
    }


def tracked(
    phase: str,
    hypothesis: str | None,
    config: dict[str, Any],
    status: str,
    out: dict[str, Any] | None = None,
    worker: str | None = None,
) -> dict[str, Any]:
    """A TrackedJob in an executor's phase document."""
    return {"spec": spec(phase, hypothesis, config), "status": status, "output": out, "worker": worker}


def phase_state(
    phase: str, jobs: list[dict[str, Any]], spent: float, status: str = "running"
) -> dict[str, Any]:
    return {
        "campaign_id": CAMPAIGN,
        "phase": phase,
        "correlation_id": CAMPAIGN,
        "status": status,
        "budget_cpu_seconds": 600.0,
        "spent_cpu_seconds": spent,
        "budget_warned": False,
        "max_parallel_jobs": 2,
        "jobs": jobs,
        "runbook": [],
    }


def as_record(job: dict[str, Any]) -> dict[str, Any]:
    """The planner's JobRecord of a concluded job (one that never finished is recorded as failed,
    as the executor's ``TrackedJob.record`` does)."""
    out = job["output"] or {}
    return {
        "job_id": job["spec"]["job_id"],
        "hypothesis_id": job["spec"]["hypothesis_id"],
        "config": job["spec"]["config"],
        "status": job["status"] if job["status"] in FINISHED_JOB_STATUSES else "failed",
        "phase": job["spec"]["phase"],
        "seed": 0,
        "validation": out.get("validation"),
        "test": out.get("test"),
        "cost": out.get("cost"),
        "error": out.get("error"),
        "diagnostics": None,
    }


# A campaign that screened at low fidelity, validated, and is combining the winners now.
SCREENING_JOBS = [
    tracked("screening", None, {**BASELINE, "epochs": 1}, "completed", output(0.8600, 6.0)),
    tracked(
        "screening", "dcn_v2", {**BASELINE, "epochs": 1, "cross_layers": 2}, "completed", output(0.8300, 7.0)
    ),
]
VALIDATION_JOBS = [
    tracked("validation", None, BASELINE, "completed", output(0.8400, 20.0)),
    tracked("validation", "dcn_v2", {**BASELINE, "cross_layers": 2}, "completed", output(0.8200, 22.5)),
    tracked(
        "validation",
        "lr_up",
        {**BASELINE, "learning_rate": 0.003},
        "failed",
        output(None, 4.0, ("nan", "loss became NaN at epoch 2")),
    ),
]
COMBINATION_JOBS = [
    tracked("combination", "dcn_v2+dropout", {**BASELINE, "cross_layers": 2, "dropout": 0.1}, "running"),
    tracked(
        "combination",
        "dcn_v2+fm",
        {**BASELINE, "cross_layers": 2, "fm": True},
        "completed",
        output(0.8130, 25.0),
        "w-1",
    ),
    tracked("combination", "dcn_v2+ln", {**BASELINE, "cross_layers": 2, "layer_norm": True}, "submitted"),
    tracked("combination", "dcn_v2+wd", {**BASELINE, "cross_layers": 2, "weight_decay": 1e-5}, "pending"),
]
PHASES = [
    phase_state("screening", SCREENING_JOBS, 13.0, "concluded"),
    phase_state("validation", VALIDATION_JOBS, 46.5, "concluded"),
    phase_state("combination", COMBINATION_JOBS, 25.0),
]


def campaign(**changes: Any) -> dict[str, Any]:
    """The planner's Campaign state while it combines the winners."""
    state: dict[str, Any] = {
        "campaign_id": CAMPAIGN,
        "status": "running",
        "request": {"name": "crosses for the movie ranker", "dataset": "movielens-100k"},
        "spec": {
            "name": "crosses for the movie ranker",
            "dataset": "movielens-100k",
            "budget_cpu_seconds": 600.0,
        },
        "phase": "combination",
        "records": [as_record(job) for job in SCREENING_JOBS + VALIDATION_JOBS],
        "updated_at": "2025-03-01T11:58:00+00:00",
    }
    state.update(changes)
    return state


def read_campaign(**changes: Any) -> CampaignView:
    """What a reader gets of :func:`campaign`'s state (as ``Client.campaign`` returns it)."""
    return CampaignView.model_validate(campaign(**changes))


def read_phases(phases: list[dict[str, Any]]) -> list[PhaseView]:
    """What a reader gets of phase states (as ``Client.phases`` returns them)."""
    return [PhaseView.model_validate(phase) for phase in phases]


PHASE_VIEWS = read_phases(PHASES)


# ---- ids ------------------------------------------------------------------------------------


def test_a_unique_prefix_names_its_id() -> None:
    ids = [CAMPAIGN, "9b1e0c2d3e4f5a6b7c8d9e0f1a2b3c4d"]
    assert pick_match("campaign", "3f2a", [i for i in ids if i.startswith("3f2a")]) == CAMPAIGN


def test_a_whole_id_wins_over_the_longer_ids_it_starts() -> None:
    assert pick_match("job", "abc-s1", ["abc-s1", "abc-s10", "abc-s1-a2"]) == "abc-s1"


def test_a_prefix_matching_nothing_says_so() -> None:
    with pytest.raises(UnresolvedId) as raised:
        pick_match("campaign", "abc", [])
    assert str(raised.value) == "no campaign matches 'abc'"
    assert raised.value.matches == []


def test_an_ambiguous_prefix_lists_its_matches() -> None:
    matches = ["3f2a91c0aaaa", "3f2a91c0bbbb"]
    with pytest.raises(UnresolvedId) as raised:
        pick_match("campaign", "3f2a", matches)
    message = str(raised.value)
    assert "'3f2a' matches several campaigns" in message
    assert all(match in message for match in matches)
    assert raised.value.matches == matches


def test_an_empty_prefix_names_nothing() -> None:
    with pytest.raises(UnresolvedId, match="give a campaign id"):
        pick_match("campaign", "", [CAMPAIGN])


def test_short_ids_are_eight_characters_unless_another_id_shares_them() -> None:
    twin = "3f2a91c0d4ffffffffffffffffffffff"
    other = "9b1e0c2d3e4f5a6b7c8d9e0f1a2b3c4d"
    cut = short_ids([CAMPAIGN, other], among=[CAMPAIGN, twin, other])
    assert cut == {CAMPAIGN: "3f2a91c0d4e", other: "9b1e0c2d"}
    assert not twin.startswith(cut[CAMPAIGN])


def test_a_short_id_is_unique_against_ids_not_listed() -> None:
    hidden = "3f2a91c0ffffffffffffffffffffffff"  # a rejected campaign the list leaves out
    assert short_ids([CAMPAIGN], among=[hidden]) == {CAMPAIGN: "3f2a91c0d"}


def test_an_id_that_starts_another_is_shown_whole() -> None:
    assert short_ids(["abcdefgh1", "abcdefgh12"], among=[]) == {
        "abcdefgh1": "abcdefgh1",
        "abcdefgh12": "abcdefgh12",
    }


# ---- spend, budget, best --------------------------------------------------------------------


def test_spend_is_the_records_plus_the_running_phase() -> None:
    # records: screening 13 + validation 46.5; the running combination phase has charged 25
    assert spent_cpu_seconds(read_campaign(), PHASE_VIEWS) == pytest.approx(84.5)


def test_a_concluded_phase_the_planner_has_not_recorded_yet_counts_once() -> None:
    before = read_campaign(records=[as_record(job) for job in SCREENING_JOBS], phase="validation")
    assert spent_cpu_seconds(before, PHASE_VIEWS[:2]) == pytest.approx(59.5)


def test_a_finished_campaign_spends_what_its_records_say() -> None:
    records = [as_record(job) for job in SCREENING_JOBS + VALIDATION_JOBS + COMBINATION_JOBS]
    done = read_campaign(status="completed", phase=None, records=records)
    assert spent_cpu_seconds(done, PHASE_VIEWS) == pytest.approx(84.5)


def test_budget_adds_every_extension() -> None:
    assert read_campaign().budget_cpu_seconds() == 600.0
    extended = read_campaign(
        budget_changes=[
            {"cpu_seconds": 300.0, "by": "alice", "at": "2025-03-01T11:00:00+00:00", "reason": "more combos"},
            {"cpu_seconds": 100.0, "by": "bob", "at": "2025-03-01T11:30:00+00:00", "reason": ""},
        ]
    )
    assert extended.budget_cpu_seconds() == 1000.0


def test_an_invalid_request_has_no_budget() -> None:
    assert read_campaign(status="rejected", spec=None).budget_cpu_seconds() is None


def test_best_is_the_lowest_validation_ne_against_the_validation_baseline() -> None:
    best = best_so_far(job_records(read_campaign(), PHASE_VIEWS))
    assert best is not None
    # the running combination phase's finished job counts; screening's 0.83 (one epoch) does not
    assert best.hypothesis_id == "dcn_v2+fm"
    assert best.baseline_ne == 0.84
    assert best.gain == pytest.approx((0.84 - 0.813) / 0.84)
    assert format_gain(best) == "+3.2%"


def test_best_is_unknown_until_the_validation_baseline_completes() -> None:
    screened = read_campaign(records=[as_record(job) for job in SCREENING_JOBS], phase="validation")
    running = [phase_state("validation", [tracked("validation", None, BASELINE, "running")], 0.0)]
    assert best_so_far(job_records(screened, read_phases(PHASES[:1] + running))) is None
    assert format_gain(None) == ""


def test_no_better_config_is_a_zero_gain() -> None:
    only_baseline = read_campaign(records=[as_record(VALIDATION_JOBS[0]), as_record(VALIDATION_JOBS[2])])
    assert format_gain(best_so_far(job_records(only_baseline, []))) == "+0.0%"


def test_summary_of_a_running_campaign() -> None:
    summary = summarize(read_campaign(), PHASE_VIEWS)
    assert (summary.name, summary.status, summary.phase) == (
        "crosses for the movie ranker",
        "running",
        "combination",
    )
    assert summary.spent_cpu_seconds == pytest.approx(84.5)
    assert summary.budget_cpu_seconds == 600.0
    assert summary.best is not None and summary.best.hypothesis_id == "dcn_v2+fm"


def test_summary_of_a_rejected_request_names_it_from_the_request() -> None:
    rejected = CampaignView.model_validate(
        {
            "campaign_id": CAMPAIGN,
            "status": "rejected",
            "request": {"name": "typo", "budget_cpu_seconds": -1},
            "spec": None,
            "reasons": ["budget_cpu_seconds: must be greater than 0"],
        }
    )
    summary = summarize(rejected, [])
    assert (summary.name, summary.spent_cpu_seconds, summary.budget_cpu_seconds, summary.best) == (
        "typo",
        0.0,
        None,
        None,
    )


# ---- jobs -----------------------------------------------------------------------------------


def test_job_rows_show_what_each_job_changed_against_the_validation_baseline() -> None:
    rows = {row.short_id: row for row in job_rows(CAMPAIGN, PHASE_VIEWS)}
    assert list(rows)[:2] == ["screening-baseline-s0", "screening-dcn_v2-s0"]
    assert rows["screening-dcn_v2-s0"].changes == {"epochs": 1, "cross_layers": 2}
    assert rows["validation-baseline-s0"].changes == {}
    assert rows["combination-dcn_v2+fm-s0"].changes == {"cross_layers": 2, "fm": True}
    assert rows["combination-dcn_v2+fm-s0"].validation_ne == 0.813
    assert rows["combination-dcn_v2+fm-s0"].cpu_seconds == 25.0
    failed = rows["validation-lr_up-s0"]
    assert (failed.status, failed.failure, failed.validation_ne) == ("failed", "nan", None)
    assert failed.failure_message == "loss became NaN at epoch 2"
    assert rows["combination-dcn_v2+wd-s0"].job_id == job_id("combination", "dcn_v2+wd")


def test_while_only_screening_ran_its_baseline_is_the_reference() -> None:
    rows = job_rows(CAMPAIGN, PHASE_VIEWS[:1])
    assert [row.changes for row in rows] == [{}, {"cross_layers": 2}]


def test_config_changes_and_their_format() -> None:
    changed = config_changes({**BASELINE, "learning_rate": 0.003, "optimizer": "adagrad"}, BASELINE)
    assert changed == {"learning_rate": 0.003, "optimizer": "adagrad"}
    assert format_changes(changed) == "learning_rate=0.003 optimizer=adagrad"
    assert format_changes({"weight_decay": 1e-05, "fm": True}) == "weight_decay=1e-05 fm=True"


# ---- the live view --------------------------------------------------------------------------


def render(renderable: Any) -> str:
    out = Console(width=140, record=True, color_system=None)
    out.print(renderable)
    return out.export_text()


def test_the_watch_frame_shows_jobs_in_flight_budget_and_best() -> None:
    started = NOW - timedelta(seconds=65)
    runs = {
        job_id("combination", "dcn_v2+dropout"): JobRun(
            job_id=job_id("combination", "dcn_v2+dropout"),
            campaign_id=CAMPAIGN,
            phase="combination",
            worker="w-2",
            started_at=started,
            status="running",
            cpu_seconds=40.2,
        )
    }
    text = render(cli.watch_view(read_campaign(), PHASE_VIEWS, runs, NOW))
    assert f"{CAMPAIGN} crosses for the movie ranker: running, phase combination" in text
    assert "84.5 / 600 CPU-s (14%)" in text
    assert "+3.2% NE gain: dcn_v2+fm" in text
    assert "jobs: 6 finished, 2 in flight, 1 waiting" in text
    assert "combination-dcn_v2+dropout-s0" in text and "1m 05s" in text and "w-2" in text
    assert "combination-dcn_v2+ln-s0" in text and "waiting for a worker" in text


def test_the_portfolio_shows_each_campaigns_workload_spend_best_and_jobs_in_flight() -> None:
    other = read_campaign(
        campaign_id="f" * 32, spec={**campaign()["spec"], "workload": "autoint", "name": "towers"}
    )
    states = [read_campaign(), other]
    phases = {CAMPAIGN: PHASE_VIEWS, "f" * 32: []}
    text = render(cli.portfolio_table(states, phases, [CAMPAIGN, "f" * 32], show_all=False, wide=False))
    mine, theirs = (line for line in text.splitlines() if "towers" in line or "crosses" in line)
    assert "ranker" in mine and "84.5 / 600" in mine and "+3.2%" in mine and mine.rstrip(" │").endswith("2")
    assert "autoint" in theirs and "ffffffff" in theirs


# ---- commands against a fake client ---------------------------------------------------------


class FakeClient:
    """Stands in for :class:`rea.client.Client`: one campaign, whose states are played in order."""

    published: list[Envelope] = []
    states: list[CampaignView | BaseException] = []

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    async def close(self) -> None:
        return None

    async def resolve_campaign(self, prefix: str) -> str:
        return pick_match("campaign", prefix, [CAMPAIGN] if CAMPAIGN.startswith(prefix) else [])

    async def campaign(self, campaign_id: str) -> CampaignView | None:
        state = FakeClient.states.pop(0) if len(FakeClient.states) > 1 else FakeClient.states[0]
        if isinstance(state, BaseException):
            raise state
        return state

    async def phases(self, campaign_id: str, without_diagnostics: bool = False) -> list[PhaseView]:
        return PHASE_VIEWS

    async def job_runs(self, job_ids: list[str]) -> dict[str, JobRun]:
        return {}

    async def publish(self, event: Envelope) -> None:
        FakeClient.published.append(event)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> type[FakeClient]:
    monkeypatch.setattr(cli, "Client", FakeClient)
    monkeypatch.setattr(cli, "WATCH_POLL_S", 0.0)
    FakeClient.published = []
    FakeClient.states = [read_campaign()]
    return FakeClient


def test_cancel_publishes_for_the_full_id_of_a_prefix(fake: type[FakeClient]) -> None:
    result = CliRunner().invoke(cli.app, ["cancel", "3f2a91", "--by", "alice"])
    assert result.exit_code == 0, result.output
    assert f"Cancelling {CAMPAIGN}." in result.output
    [event] = fake.published
    assert isinstance(event, CampaignCancelled)
    assert (event.campaign_id, event.payload.by) == (CAMPAIGN, "alice")


def test_cancel_refuses_a_finished_campaign(fake: type[FakeClient]) -> None:
    fake.states = [read_campaign(status="completed")]
    result = CliRunner().invoke(cli.app, ["cancel", CAMPAIGN])
    assert result.exit_code == 1
    assert "is completed" in result.output
    assert fake.published == []


def test_a_prefix_matching_nothing_exits_1(fake: type[FakeClient]) -> None:
    result = CliRunner().invoke(cli.app, ["approve", "ffff"])
    assert result.exit_code == 1
    assert "no campaign matches 'ffff'" in result.output


def test_watch_ends_when_the_campaign_does(fake: type[FakeClient]) -> None:
    fake.states = [read_campaign(), read_campaign(status="cancelled", phase=None)]
    result = CliRunner().invoke(cli.app, ["status", "3f2a", "--watch"])
    assert result.exit_code == 0, result.output
    assert f"Campaign {CAMPAIGN} is cancelled." in result.output


def test_ctrl_c_leaves_the_watch_cleanly(fake: type[FakeClient]) -> None:
    fake.states = [read_campaign(), KeyboardInterrupt()]
    result = CliRunner().invoke(cli.app, ["status", "3f2a", "--watch"])
    assert result.exit_code == 0, result.output
    assert "Aborted" not in result.output
