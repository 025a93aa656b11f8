"""Failures handled without a human: injected OOM, NaN and killed jobs go through the runbook,
a lost worker's lease expires into exactly one `job.failed`, and retries never overspend."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import pytest

from rea.client import Client
from rea.events import BudgetExtended, BudgetExtendedPayload, new_id
from rea.store import Store
from rea_executor.jobside import drawn_fault
from rea_tools.stack import EmbeddedStack

from .helpers import (
    campaign_request,
    eventually,
    finished,
    first_estimate,
    recorded_results,
    result_of,
    submit,
)

pytestmark = pytest.mark.e2e

FAILURE_OF = {"oom": "oom", "nan": "nan", "kill": "killed"}


def campaign_where(
    wanted: Any, hypotheses: list[str], chances: dict[str, float], second_round: tuple[str, ...] = ()
) -> str:
    """A campaign id whose deterministic fault draws (job ids derive from it) satisfy ``wanted``:
    draws by name for the first validation round, and by ``name@2`` for ``second_round``'s names."""
    for _ in range(10_000):
        campaign_id = new_id()
        rounds = [("validation", name, name) for name in ["baseline", *hypotheses]]
        rounds += [("validation-2", f"{name}@2", name) for name in second_round]
        draws = {
            key: [drawn_fault(chances, f"{campaign_id}-{phase}-{name}-s0{suffix}") for suffix in ("", "-a2")]
            for phase, key, name in rounds
        }
        if wanted(draws):
            return campaign_id
    raise AssertionError("no campaign id satisfies the wanted draws")


async def publish_with_id(client: Client, campaign_id: str, request: dict[str, Any]) -> None:
    from rea.events import CampaignRequested

    await client.publish(
        CampaignRequested(campaign_id=campaign_id, correlation_id=campaign_id, payload=request)
    )


async def test_injected_faults_are_recovered_by_the_runbook(
    services: EmbeddedStack, client: Client, store: Store
) -> None:
    chances = {"oom": 0.2, "nan": 0.2, "kill": 0.2}
    hypotheses = ["dcn_v2", "dcn_v2_low_rank", "fm"]

    def wanted(draws: dict[str, list[str | None]]) -> bool:
        first = {d[0] for d in draws.values()}
        return {"oom", "nan", "kill"} <= first and draws["baseline"][1] is None and None in first

    campaign_id = campaign_where(wanted, hypotheses, chances)
    services.start_services(workers=2, env={"REA_INJECT_FAULTS": json.dumps(chances)})
    await publish_with_id(client, campaign_id, campaign_request(max_hypotheses=3))

    state = await finished(client, campaign_id)

    assert state.status == "completed", state.reasons
    # Extension rounds may follow validation, so every phase's jobs and decisions count.
    phases = await client.phases(campaign_id)
    jobs = [job for phase in phases for job in phase.jobs]
    runbook = [entry for phase in phases for entry in phase.runbook]
    entries = {entry.job_id: entry for entry in runbook}
    for job in jobs:
        job_id = job.spec.job_id
        fault = drawn_fault(chances, job_id)
        if fault is None:
            assert job.status == "completed", job_id
            continue
        entry = entries[job_id]
        assert entry.failure == FAILURE_OF[fault]
        assert job.status in ("retried", "failed")
        if job.spec.attempt == 1:  # a first failure is retried the runbook's way
            retry = next(j for j in jobs if j.spec.job_id == entry.retry_job_id)
            if job.spec.hypothesis_id is None:  # the reference is first retried unchanged
                assert entry.action == "resubmit"
                assert retry.spec.config == job.spec.config
                continue
            assert (
                entry.action == {"oom": "halve_batch", "nan": "lower_lr_and_clip", "kill": "resubmit"}[fault]
            )
            if fault == "oom":
                assert retry.spec.config["batch_size"] == job.spec.config["batch_size"] // 2
            if fault == "nan":
                assert retry.spec.config["learning_rate"] < job.spec.config["learning_rate"]
                assert retry.spec.config["grad_clip"] == 1.0

    # Every attempt is in the insights DB exactly once, and so is every runbook decision.
    attempts = sorted(job.spec.job_id for job in jobs)
    rows = await recorded_results(client, campaign_id, len(attempts))
    assert sorted(row["_id"] for row in rows) == attempts

    async def runbook_logged() -> bool:
        count = await store.events.count_documents({"campaign_id": campaign_id, "type": "runbook.applied"})
        return count == len(runbook)

    await eventually(runbook_logged, "runbook decisions in the insights DB")


async def test_a_lost_worker_becomes_one_job_failed_and_is_resubmitted(
    services: EmbeddedStack, client: Client, store: Store
) -> None:
    fast_leases = {"REA_LEASE_TTL_S": "2"}
    for name in ("logger", "hypothesis", "planner"):
        services.start_service(name)
    services.start_service("executor", "executor-a", env=fast_leases)
    services.start_service("executor", "executor-b", env=fast_leases)  # two executors see every expiry
    services.start_service("worker", "worker-0", env=fast_leases)
    campaign_id = await submit(
        client, campaign_request(max_hypotheses=1, max_parallel_jobs=1, baseline={"epochs": 3})
    )

    async def training() -> bool:
        """A job whose training process runs (the job ledger has its pid) and has used CPU."""
        runs = await store.ledger.of_campaign(campaign_id)
        return any(run.pid is not None and run.cpu_seconds > 0 for run in runs)

    await eventually(training, "a job in training", 120)
    [run] = [run for run in await store.ledger.of_campaign(campaign_id) if run.pid is not None]
    lost = run.job_id
    services.stop_process("worker-0", signal.SIGKILL)
    services.start_service("worker", "worker-1", env=fast_leases)

    state = await finished(client, campaign_id)

    assert state.status == "completed", state.reasons
    phase = await client.phase(campaign_id)
    assert phase is not None
    entry = next(e for e in phase.runbook if e.job_id == lost)
    assert entry.failure == "lost_worker" and entry.action == "resubmit"
    retry = next(job for job in phase.jobs if job.spec.job_id == entry.retry_job_id)
    assert retry.status == "completed" and retry.spec.retry_of == lost

    async def failure_logged() -> bool:
        return await store.events.count_documents({"type": "job.failed", "payload.spec.job_id": lost}) > 0

    await eventually(failure_logged, "the lost worker's job.failed")
    await asyncio.sleep(3)  # time for any second executor's duplicate to show up, if there were one
    failures = [doc async for doc in store.events.find({"type": "job.failed", "payload.spec.job_id": lost})]
    assert len(failures) == 1
    assert failures[0]["payload"]["output"]["error"]["kind"] == "lost_worker"
    # Its worker could not measure its last moments: it is charged the larger of the CPU the
    # ledger saw it use and its reserved estimate, never nothing.
    charged = failures[0]["payload"]["output"]["cost"]
    estimate = failures[0]["payload"]["spec"]["estimated_cpu_seconds"]
    sampled = (await store.ledger.get(lost) or run).cpu_seconds
    assert charged["measured"] is False
    assert charged["cpu_seconds"] == pytest.approx(max(estimate, sampled)) and charged["cpu_seconds"] > 0
    assert retry.output is not None and retry.output.cost is not None, retry
    assert phase.spent_cpu_seconds >= charged["cpu_seconds"] + retry.output.cost.cpu_seconds - 0.01
    assert len([e for e in phase.runbook if e.job_id == lost]) == 1


async def test_a_retry_that_would_overspend_pauses_until_the_budget_is_extended(
    services: EmbeddedStack, client: Client, store: Store
) -> None:
    chances = {"nan": 0.5}
    campaign_id = campaign_where(lambda d: d["baseline"] == ["nan", None], [], chances)
    services.start_services(workers=1, env={"REA_INJECT_FAULTS": json.dumps(chances)})
    # No history: the plan (the baseline alone) fits a budget 0.2 CPU-s above a job's first
    # estimate, but its retry after the NaN does not (the failed attempt spent more than that).
    budget = round(first_estimate(epochs=1) + 0.2, 2)
    await publish_with_id(
        client,
        campaign_id,
        campaign_request(budget_cpu_seconds=budget, max_hypotheses=1),
    )

    state = await client.wait_for(campaign_id, frozenset({"paused_budget"}), 240)
    assert state is not None, (await client.campaign(campaign_id), await client.phase(campaign_id))
    phase = await client.phase(campaign_id)
    assert phase is not None and phase.status == "paused_budget"
    assert [job.status for job in phase.jobs] == ["retried", "pending"]
    assert phase.spent_cpu_seconds <= phase.budget_cpu_seconds

    await client.publish(
        BudgetExtended(
            campaign_id=campaign_id,
            correlation_id=campaign_id,
            payload=BudgetExtendedPayload(cpu_seconds=30, by="carol"),
        )
    )
    state = await finished(client, campaign_id)

    assert state.status == "completed", state.reasons
    assert any("budget extended by 30 CPU-s by carol" in notice for notice in state.notices)
    phase = await client.phase(campaign_id)
    assert phase is not None and phase.budget_cpu_seconds == pytest.approx(budget + 30)
    assert phase.spent_cpu_seconds <= phase.budget_cpu_seconds
    assert result_of(state).baseline.job_id.endswith("-a2")
