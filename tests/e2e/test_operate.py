"""Operating a campaign on the real stack: a budget extension reaches every later phase, a stack
restarted under a campaign (`rea down && rea up`, or everything killed with SIGKILL) trains no
finished job again and stays within the cap by the workers' own measure, and `rea cancel`
stops the jobs in flight and releases what they reserved."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rea.client import Client
from rea.events import BudgetExtended, BudgetExtendedPayload, CampaignCancelled, PersonAction
from rea.executions import audit, executions_from_logs
from rea.ledger import JobLedger
from rea.settings import Settings
from rea.store import Store
from rea.workloads import get_workload
from rea_tools.stack import EmbeddedStack, StackState

from .helpers import (
    E2E_GRANT,
    campaign_request,
    e2e_grants,
    eventually,
    finished,
    first_estimate,
    result_of,
    run_rea,
    submit,
    where_it_stands,
)
from .test_runbook import campaign_where, publish_with_id

# The ranker's first catalogue hypotheses: what a 2-hypothesis campaign validates.
LEADING = ("dcn_v2", "dcn_v2_low_rank", "fm")

pytestmark = pytest.mark.e2e


def ledger_of(client: Client) -> JobLedger:
    return JobLedger(client.db["job_runs"])


async def test_a_budget_extension_reaches_exploitation_and_confirmation(
    services: EmbeddedStack, client: Client
) -> None:
    """A NaN on the baseline needs a retry the first plan's budget cannot cover: the campaign
    pauses in validation; extended, it runs every later phase within the new cap. The NaN leaves
    the reported baseline as requested (the runbook retries a baseline unchanged first)."""
    chances = {"nan": 0.5}

    def wanted(draws: dict[str, list[str | None]]) -> bool:
        """The baseline fails once; the leading hypotheses run clean after the extension, so one of
        them can beat the baseline (a campaign nothing improves ends without confirmation)."""
        return draws["baseline"] == ["nan", None] and all(draws[f"{h}@2"][0] is None for h in LEADING)

    campaign_id = campaign_where(wanted, [], chances, second_round=LEADING)
    services.start_services(workers=2, env={"REA_INJECT_FAULTS": json.dumps(chances)})
    budget = round(first_estimate(epochs=1) + 0.2, 2)  # no history: the baseline's retry cannot fit
    request = campaign_request(
        budget_cpu_seconds=budget,
        max_hypotheses=2,
        max_exploitation_trials=2,
        confirm_seeds=2,
    )
    await publish_with_id(client, campaign_id, request)
    paused = await client.wait_for(campaign_id, frozenset({"paused_budget"}), 240)
    assert paused is not None, await where_it_stands(client, campaign_id)

    extension = 400.0
    await client.publish(
        BudgetExtended(
            campaign_id=campaign_id,
            correlation_id=campaign_id,
            payload=BudgetExtendedPayload(cpu_seconds=extension, by="dana"),
        )
    )
    state = await finished(client, campaign_id, 600)

    assert state.status == "completed", state.reasons
    assert [(c.cpu_seconds, c.by) for c in state.budget_changes] == [(extension, "dana")]
    phases = await client.phases(campaign_id)
    kinds = [phase.phase.split("-")[0] for phase in phases]
    assert "exploitation" in kinds and kinds[-1] == "confirmation", kinds
    cap = budget + extension
    started = [p for p in phases if p.phase != "validation"]
    # Later phases were planned from the new cap, not the request's 26 CPU-s.
    assert all(p.budget_cpu_seconds > budget for p in started), [p.budget_cpu_seconds for p in phases]
    spent = sum(p.spent_cpu_seconds for p in phases)
    assert spent <= cap
    result = result_of(state)
    assert result.compute_seconds <= cap
    # The baseline stayed the baseline: its retry ran the requested config.
    requested = get_workload("ranker").schema.resolve({"epochs": 1})
    baseline = next(j for j in phases[0].jobs if j.spec.job_id == result.baseline.job_id)
    assert baseline.spec.job_id.endswith("-a2") and baseline.spec.config == requested
    assert result.baseline_changes == {}
    # A lowered learning rate may reach the winner only through a hypothesis' own NaN retry.
    lowered = [e for p in phases for e in p.runbook if e.action == "lower_lr_and_clip"]
    if not lowered:
        assert result.best_changes.get("learning_rate") != requested["learning_rate"] / 3


@pytest.fixture
def home(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A private `rea up` stack's environment; whatever a test leaves running is brought down."""
    env = {"REA_HOME": str(tmp_path / "rea"), "REA_TOPIC_PARTITIONS": "3"}
    try:
        yield env
    finally:
        run_rea(["down"], env, timeout=60)


def up(env: dict[str, str]) -> Client:
    done = run_rea(["up", "--workers", "2"], env, timeout=180)
    assert done.returncode == 0, done.stderr
    return Client(Settings(home=Path(env["REA_HOME"]), topic_partitions=3))


def kill_everything(home: Path) -> int:
    """SIGKILL every process of the stack at once, servers included: a node that died."""
    state = StackState.read(home)
    assert state is not None
    for process in state.processes:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    return len(state.processes)


async def restarted_mid_campaign(env: dict[str, str], stop: str) -> None:
    """Run a campaign on a `rea up` stack, stop the stack (``down`` or ``kill``) while a job runs
    and another has finished, bring it up again, and check by the workers' own logs that no job
    ran twice and the CPU they used stayed within the cap."""
    home = Path(env["REA_HOME"])
    budget = 300.0
    client = up(env)
    try:
        await client.ensure_grant(E2E_GRANT, e2e_grants(client.settings)[E2E_GRANT])  # its own stack
        campaign_id = await submit(
            client,
            campaign_request(
                budget_cpu_seconds=budget,
                max_hypotheses=3,
                baseline={"epochs": 3},
            ),
        )

        async def one_done_one_running() -> bool:
            jobs = [job for phase in await client.phases(campaign_id) for job in phase.jobs]
            statuses = {job.status for job in jobs}
            return "completed" in statuses and "running" in statuses

        await eventually(one_done_one_running, "a finished job and a running one", 240)
    finally:
        await client.close()
    if stop == "down":
        done = run_rea(["down"], env, timeout=120)
        assert done.returncode == 0, done.stderr
    else:
        assert kill_everything(home) > 0
        deadline = time.monotonic() + 30
        while StackState.read(home) is not None and time.monotonic() < deadline:
            time.sleep(0.2)

    client = up(env)
    try:
        state = await finished(client, campaign_id, 420)
        assert state.status == "completed", state.reasons
        runs = await ledger_of(client).of_campaign(campaign_id)
    finally:
        await client.close()

    executions = executions_from_logs(home / "logs")
    measured = audit(executions, runs)
    assert executions, "the workers logged no job process"
    assert measured.repeated() == {}, measured.repeated()
    assert measured.cpu_by_campaign[campaign_id] <= budget
    # Every completed job ran (once, above); a job lost with its worker was retried as another job.
    started = {execution.job_id for execution in executions}
    completed = {record.job_id for record in state.records if record.status == "completed"}
    assert completed <= started


async def test_rea_down_and_up_mid_campaign_runs_no_finished_job_again(home: dict[str, str]) -> None:
    await restarted_mid_campaign(home, "down")


async def test_whole_stack_sigkill_mid_campaign_runs_no_finished_job_again(home: dict[str, str]) -> None:
    await restarted_mid_campaign(home, "kill")


async def test_cancel_stops_the_jobs_in_flight_and_releases_their_reservation(
    services: EmbeddedStack, client: Client, store: Store
) -> None:
    services.start_services(workers=2)
    campaign_id = await submit(
        client,
        campaign_request(
            # Long jobs (fused optimisers made 20 epochs of 20,000 rows short enough to finish
            # before the cancellation reached them).
            dataset="synthetic:rows=40000,crosses=1,strength=3",
            max_hypotheses=4,
            baseline={"epochs": 30},
        ),
    )

    async def two_running() -> bool:
        runs = await ledger_of(client).of_campaign(campaign_id)
        return sum(run.status == "running" for run in runs) >= 2

    await eventually(two_running, "two jobs running", 180)
    running = [run for run in await ledger_of(client).of_campaign(campaign_id) if run.status == "running"]
    await client.publish(
        CampaignCancelled(
            campaign_id=campaign_id, correlation_id=campaign_id, payload=PersonAction(by="erin")
        )
    )
    cancelled_at = time.time()
    state = await client.wait_for(campaign_id, frozenset({"cancelled"}), 60)

    assert state is not None, await where_it_stands(client, campaign_id)
    assert state.cancelled_by == "erin"
    phases = await client.phases(campaign_id)
    assert [phase.status for phase in phases] == ["concluded"] * len(phases), [p.phase for p in phases]
    jobs = [job for phase in phases for job in phase.jobs]
    statuses = {job.spec.job_id: job.status for job in jobs}
    assert not {"pending", "submitted", "running"} & set(statuses.values()), statuses
    # Stopped, not left to finish: their processes are gone. A job may have finished on its own
    # between the ledger read and the cancellation reaching its worker; at least one may not.
    assert {statuses[run.job_id] for run in running} <= {"cancelled", "completed"}, statuses
    assert any(statuses[run.job_id] == "cancelled" for run in running), statuses
    for run in running:
        assert run.pid is not None and not _alive(run.pid)
    # Nothing is reserved any more: what is spent is what the finished jobs cost.
    charged = sum(j.output.cost.cpu_seconds if j.output and j.output.cost else 0.0 for j in jobs)
    assert sum(phase.spent_cpu_seconds for phase in phases) == pytest.approx(charged)
    later = [r for r in await ledger_of(client).of_campaign(campaign_id) if _started_after(r, cancelled_at)]
    assert later == [], "a job started after the cancellation"
    await asyncio.sleep(2)
    again = await client.campaign(campaign_id)
    assert again is not None and again.status == "cancelled"


def _alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] not in ("Z", "X")


def _started_after(run: Any, moment: float) -> bool:
    return run.started_at is not None and run.started_at.timestamp() > moment + 1
