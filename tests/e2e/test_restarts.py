"""Crash safety: the executor is killed (SIGKILL) while jobs run, a new one takes over from
the state in MongoDB and the campaign completes with every result recorded exactly once.

"Exactly once" is counted from the insights DB's ``events`` collection, not from the results:
result rows are keyed by job id, so a job that ran or reported twice still has one row. Each
execution of a job publishes one ``job.started`` (a worker publishes it once it claims the job),
and each final report one ``job.completed``/``job.failed`` with its own event id (a redelivery
or a re-send of the same report keeps the id, so it is stored once).
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import pytest

from rea.client import Client
from rea.events import CampaignRequested, new_id
from rea.runtime import ensure_topics
from rea.settings import Settings
from rea.store import Store
from rea.topics import Topics
from rea_tools.stack import EmbeddedStack

from .helpers import (
    E2E_GRANT,
    campaign_request,
    e2e_grants,
    eventually,
    finished,
    recorded_results,
    result_of,
    submit,
)

pytestmark = pytest.mark.e2e


async def test_executor_killed_while_jobs_run(services: EmbeddedStack, client: Client, store: Store) -> None:
    services.start_services(workers=2)
    campaign_id = await submit(client, campaign_request(max_hypotheses=4, baseline={"epochs": 2}))

    async def a_job_is_running() -> bool:
        phase = await client.phase(campaign_id)
        return phase is not None and any(job.status == "running" for job in phase.jobs)

    await eventually(a_job_is_running, "a running job", 120)
    services.stop_process("executor", signal.SIGKILL)
    await asyncio.sleep(3)  # jobs finish and report while no executor is alive
    services.start_service("executor", "executor-2")

    state = await finished(client, campaign_id)

    assert state.status == "completed", state.reasons
    every_job = sorted(record.job_id for record in state.records)
    assert state.plan is not None and len(state.plan.jobs) == 5  # validation; combination may follow
    failed = [(r.job_id, r.error) for r in state.records if r.status != "completed"]
    assert result_of(state).jobs_completed == len(every_job), failed
    rows = await recorded_results(client, campaign_id, len(every_job))
    assert sorted(row["_id"] for row in rows) == every_job  # none lost
    runs, reports = await runs_and_reports(client, campaign_id, every_job)
    assert runs == dict.fromkeys(every_job, 1)  # each job ran once, none outside the records
    assert reports == dict.fromkeys(every_job, 1)  # and reported once
    phases = 1 + len(state.rounds)

    async def concluded() -> int:
        return await store.events.count_documents({"campaign_id": campaign_id, "type": "phase.concluded"})

    async def every_conclusion_logged() -> bool:
        # The logger records on its own schedule: the last phase's `phase.concluded` may reach
        # it after the planner has already completed the campaign.
        return await concluded() >= phases

    await eventually(every_conclusion_logged, "every phase.concluded in the events collection", 30)
    assert await concluded() == phases  # each phase concluded once
    submitted = await store.events.count_documents({"campaign_id": campaign_id, "type": "job.submitted"})
    assert submitted >= len(every_job)


async def test_broker_restart_loses_nothing(tmp_path: Path) -> None:
    """The embedded broker keeps its log in memory: kill -9 it mid-campaign and start a new
    one. Services notice (new cluster id, missing topics), re-create the topics and re-send
    what the state says is pending; the campaign completes with every result exactly once."""
    stack = EmbeddedStack(Settings(home=tmp_path / "rea", topic_partitions=3), attached=True)
    endpoints = stack.start_infra()
    await ensure_topics(endpoints.kafka_bootstrap, Topics("rea"), 3)
    client = Client(stack.settings, endpoints)
    try:
        stack.start_services(workers=2)
        await client.ensure_grant(E2E_GRANT, e2e_grants(client.settings)[E2E_GRANT])  # its own stack
        campaign_id = await submit(client, campaign_request(max_hypotheses=4, baseline={"epochs": 2}))

        async def a_job_finished() -> bool:
            phase = await client.phase(campaign_id)
            return phase is not None and any(job.status == "completed" for job in phase.jobs)

        await eventually(a_job_finished, "a finished job", 180)
        stack.restart_broker()

        state = await finished(client, campaign_id, 300)

        assert state.status == "completed", state.reasons
        every_job = sorted(record.job_id for record in state.records)
        assert result_of(state).jobs_completed == len(every_job)
        rows = await recorded_results(client, campaign_id, len(every_job))
        assert sorted(row["_id"] for row in rows) == every_job  # none lost
        runs, reports = await runs_and_reports(client, campaign_id, every_job, every_start_kept=False)
        # The old broker's unread events are gone with it, so a job's `job.started` may be
        # missing; a second one means the job ran again after the restart.
        assert set(runs) <= set(every_job) and max(runs.values(), default=1) == 1, runs
        assert reports == dict.fromkeys(every_job, 1)  # a lost report is re-sent, never re-run
    finally:
        await client.close()
        stack.stop()


async def test_two_executors_share_campaigns_and_one_takes_over(
    services: EmbeddedStack, client: Client, store: Store
) -> None:
    """Executors in one consumer group split campaigns by partition (campaign id is the key);
    kill one with SIGKILL and the other takes its partitions, and every campaign completes."""
    partitions = services.settings.topic_partitions
    ids = one_campaign_per_partition(partitions)
    for name in ("logger", "hypothesis", "planner"):
        services.start_service(name)
    services.start_service("executor", "executor-a")
    services.start_service("executor", "executor-b")
    for index in range(2):
        services.start_service("worker", f"worker-{index}")
    for campaign_id in ids:
        await client.publish(
            CampaignRequested(
                campaign_id=campaign_id,
                correlation_id=campaign_id,
                payload=campaign_request(max_hypotheses=2, baseline={"epochs": 2}),
            )
        )

    async def both_executors_worked() -> bool:
        counts = [await jobs_submitted_by(services, name) for name in ("executor-a", "executor-b")]
        return all(count > 0 for count in counts)

    await eventually(both_executors_worked, "both executors to submit jobs", 120)
    services.stop_process("executor-a", signal.SIGKILL)

    states = [await finished(client, campaign_id, 300) for campaign_id in ids]

    assert [state.status for state in states] == ["completed"] * len(ids)
    for state in states:
        jobs = sorted(record.job_id for record in state.records)
        rows = await recorded_results(client, state.campaign_id, len(jobs))
        assert sorted(row["_id"] for row in rows) == jobs  # none lost
        runs, reports = await runs_and_reports(client, state.campaign_id, jobs)
        assert runs == dict.fromkeys(jobs, 1)  # the surviving executor re-ran nothing
        assert reports == dict.fromkeys(jobs, 1)


async def runs_and_reports(
    client: Client, campaign_id: str, jobs: list[str], every_start_kept: bool = True, timeout_s: float = 90
) -> tuple[Counter[str], Counter[str]]:
    """Per job id, its ``job.started`` events (one per execution) and its distinct final reports,
    as the logger recorded them, once every job has a report (and a start, if none was lost)."""

    async def by_job(types: list[str]) -> Counter[str]:
        found = Counter[str]()
        query = {"campaign_id": campaign_id, "type": {"$in": types}}
        async for doc in client.db["events"].find(query, {"payload": 1}):
            payload = doc["payload"]
            found[payload["spec"]["job_id"] if "spec" in payload else payload["job_id"]] += 1
        return found

    async def all_there() -> bool:
        if not set(jobs) <= set(await by_job(FINAL_REPORTS)):
            return False
        return not every_start_kept or set(jobs) <= set(await by_job(STARTS))

    await eventually(all_there, f"every job's events of campaign {campaign_id} in the insights DB", timeout_s)
    return await by_job(STARTS), await by_job(FINAL_REPORTS)


STARTS = ["job.started"]
FINAL_REPORTS = ["job.completed", "job.failed"]


def one_campaign_per_partition(partitions: int) -> list[str]:
    """Campaign ids whose keys land on every partition, so both executors must get some."""
    from aiokafka.partitioner import DefaultPartitioner

    partitioner = DefaultPartitioner()
    chosen: dict[int, str] = {}
    while len(chosen) < partitions:
        campaign_id = new_id()
        chosen.setdefault(partitioner(campaign_id.encode(), list(range(partitions)), []), campaign_id)
    return list(chosen.values())


async def jobs_submitted_by(services: EmbeddedStack, name: str) -> float:
    import httpx

    port = next(p.metrics_port for p in services.processes if p.name == name)
    async with httpx.AsyncClient() as http:
        try:
            page = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
        except httpx.ConnectError:
            return 0.0  # not serving yet
    for line in page.splitlines():
        if line.startswith("rea_jobs_total") and 'outcome="submitted"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0
