"""Shared bits of the end-to-end tests."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from rea.client import FINAL_STATUSES, Client
from rea.events import (
    CampaignRequested,
    CampaignResult,
    GrantCreated,
    GrantCreatedPayload,
    GrantTerms,
    JobRecord,
    new_id,
)
from rea.grants import COLLECTION as GRANTS
from rea.grants import Grant, own_terms
from rea.settings import Settings
from rea.store import Store
from rea.topics import Topics
from rea.views import CampaignView
from rea.workloads import get_workload, parameters_of, training_rows_of
from rea_planner.costs import CostModel, Fidelity
from rea_planner.grants import on_grant_event

# Small and fast, but a real training job through the real worker path.
FAST_DATASET = "synthetic:rows=3000,crosses=1,strength=3"

E2E_GRANT = "e2e"
"""The grant most tests' campaigns run under: everything local, every plan auto-approved."""
MANUAL_GRANT = "e2e-manual"
"""The same, but every plan waits for a person's approval."""


def e2e_grants(settings: Settings) -> dict[str, GrantTerms]:
    roomy = own_terms(settings, 100_000, team="e2e", max_gpu_seconds=100_000, allow_llm=True)
    return {
        E2E_GRANT: roomy.model_copy(update={"auto_approve_up_to": 100_000}),
        MANUAL_GRANT: roomy,
    }


async def seed_grants(settings: Settings) -> None:
    """Store the test grants in the test's namespace through the planner's own decision and
    transactional shell (tests about grants create theirs through the CLI and the planner)."""
    store = Store.connect(str(settings.mongo_uri), settings.mongo_db, Topics(settings.topic_prefix))
    try:
        for grant_id, terms in e2e_grants(settings).items():
            made = GrantCreated(
                grant_id=grant_id, correlation_id=grant_id, payload=GrantCreatedPayload(terms=terms, by="e2e")
            )
            await store.apply(
                consumer="planner",
                event=made,
                collection=GRANTS,
                key=grant_id,
                model=Grant,
                decide=on_grant_event,
            )
    finally:
        await store.close()


def first_estimate(dataset: str = FAST_DATASET, workload: str = "ranker", **baseline: Any) -> float:
    """What the planner estimates a baseline job at before any job has run (no history)."""
    loaded = get_workload(workload)
    rows, size = training_rows_of(loaded, dataset), partial(parameters_of, loaded, dataset=dataset)
    prior = CostModel.prior(Fidelity.of(loaded.schema), rows, size)
    return prior.estimate(loaded.schema.resolve(baseline))


def campaign_request(**overrides: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "name": "e2e",
        "workload": "ranker",
        "dataset": FAST_DATASET,
        "grant": E2E_GRANT,
        "budget_cpu_seconds": 600,
        "max_parallel_jobs": 2,
        "max_hypotheses": 3,
        "baseline": {"epochs": 1},
        "confirm_seeds": 1,  # most tests are about the flow, not the statistics
        "max_exploitation_trials": 0,  # nor about the search after validation
        "contenders": 0,  # nor about picking among the best few
    }
    request.update(overrides)
    return request


async def submit(client: Client, request: dict[str, Any]) -> str:
    campaign_id = new_id()
    await client.publish(
        CampaignRequested(campaign_id=campaign_id, correlation_id=campaign_id, payload=request)
    )
    return campaign_id


async def finished(client: Client, campaign_id: str, timeout_s: float = 240) -> CampaignView:
    state = await client.wait_for(campaign_id, FINAL_STATUSES, timeout_s)
    if state is None:
        stands = await where_it_stands(client, campaign_id)
        raise AssertionError(f"campaign {campaign_id} did not finish within {timeout_s}s\n{stands}")
    return state


def result_of(state: CampaignView) -> CampaignResult:
    """A campaign's result: a test that reads one fails when the campaign has none."""
    assert state.result is not None, (state.campaign_id, state.status, state.reasons)
    return state.result


def validation_ne(record: JobRecord) -> float:
    """A job record's validation NE: a test that reads one fails when the record has none."""
    assert record.validation is not None, record
    return record.validation.ne


async def where_it_stands(client: Client, campaign_id: str) -> str:
    """A campaign's status and every job's status per phase: what a timed-out test reports."""
    state = await client.campaign(campaign_id)
    lines = [f"campaign: {None if state is None else (state.status, state.phase)}"]
    for phase in await client.phases(campaign_id):
        jobs = ", ".join(f"{job.spec.job_id[-6:]}={job.status}" for job in phase.jobs)
        lines.append(f"{phase.phase} ({phase.status}): {jobs}")
    return "\n".join(lines)


async def recorded_results(
    client: Client, campaign_id: str, expected: int, timeout_s: float = 90
) -> list[dict[str, Any]]:
    """The campaign's rows in the insights DB once ``expected`` are there (or the time is up).

    The logger consumes events on its own schedule, so a campaign can finish before its
    last result is recorded; the caller then asserts on exactly which rows exist.
    """
    deadline = time.monotonic() + timeout_s
    rows = await client.results(campaign_id)
    while len(rows) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        rows = await client.results(campaign_id)
    return rows


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def run_rea(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the ``rea`` command line as a person would, pointed at this test's namespace."""
    return subprocess.run(
        [sys.executable, "-m", "rea_tools", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
