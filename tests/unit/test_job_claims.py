"""Claiming a job on the real Redis and MongoDB: at most one execution per job id, and a claim
cut short by a dropped connection is taken up again by its own holder, never lost."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from pymongo.errors import AutoReconnect
from redis.asyncio import Redis

from rea.events import JobSpec, JobSubmitted
from rea.leases import JobLeases
from rea.ledger import JobLedger, JobRun
from rea.runtime import Runtime, connect
from rea.settings import Settings
from rea.store import Store
from rea_executor.jobside import JobSide, on_delivery
from tests.unit.test_events import job_spec


async def test_a_lease_is_taken_again_by_its_holder_only(settings: Settings) -> None:
    redis = Redis.from_url(str(settings.redis_url))
    leases = JobLeases(redis, settings.topic_prefix)
    try:
        assert await leases.claim("job-1", "worker-a", 5)
        assert await leases.claim("job-1", "worker-a", 5)
        assert not await leases.claim("job-1", "worker-b", 5)
        assert await leases.holder("job-1") == "worker-a"
        await leases.release("job-1")
        assert await leases.claim("job-1", "worker-b", 5)
    finally:
        await redis.aclose()


async def test_a_ledger_claim_comes_back_to_its_worker_until_the_job_starts(store: Store) -> None:
    ledger: JobLedger = store.ledger
    assert await ledger.claim("job-1", "camp-1", "validation", "worker-a")
    assert await ledger.claim("job-1", "camp-1", "validation", "worker-a")  # its own, not started
    assert not await ledger.claim("job-1", "camp-1", "validation", "worker-b")
    await ledger.started("job-1", pid=123)
    assert not await ledger.claim("job-1", "camp-1", "validation", "worker-a")  # it ran once

    assert await ledger.claim("job-2", "camp-1", "validation", "worker-a")
    await ledger.request_cancel("job-2", "camp-1", "validation")
    assert not await ledger.claim("job-2", "camp-1", "validation", "worker-a")

    assert await ledger.claim("job-3", "camp-1", "validation", "worker-a")
    assert await ledger.declare_lost("job-3", "camp-1", "validation", b"lost")
    assert not await ledger.claim("job-3", "camp-1", "validation", "worker-a")


class Recorded(JobSide):
    """A job side that records which jobs it would run, instead of training them."""

    ran: list[str]

    async def _run_claimed(self, event: JobSubmitted, spec: JobSpec) -> None:
        self.ran.append(spec.job_id)


@pytest_asyncio.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    made, _ = await connect("job-claims", settings)
    try:
        yield made
    finally:
        await made.close()


def submitted(job_id: str) -> JobSubmitted:
    return JobSubmitted(campaign_id="camp-1", correlation_id="camp-1", payload=job_spec(job_id))


async def test_a_claim_whose_acknowledgement_was_lost_is_run_on_the_retry(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    side = Recorded(runtime, "host/worker-0")
    side.ran = []
    claim = side.ledger.claim

    async def insert_then_drop(*args: str) -> bool:
        await claim(*args)  # the insert reached the server; its answer did not come back
        raise AutoReconnect("connection closed")

    monkeypatch.setattr(side.ledger, "claim", insert_then_drop)
    with pytest.raises(AutoReconnect):
        await side.take(submitted("job-cut-short"))
    monkeypatch.setattr(side.ledger, "claim", claim)
    assert await side.take(submitted("job-cut-short"))  # the handler's retry, after the outage
    assert side.ran == ["job-cut-short"]

    other = Recorded(runtime, "host/worker-1")
    other.ran = []
    assert not await other.take(submitted("job-cut-short"))  # nobody else runs it
    assert other.ran == []


async def test_a_second_copy_of_a_job_being_taken_is_not_run_twice(runtime: Runtime) -> None:
    side = Recorded(runtime, "host/worker-0")
    side.ran = []
    side.taking.add("job-busy")
    assert not await side.take(submitted("job-busy"))
    assert side.ran == []


def run_record(**fields: object) -> JobRun:
    return JobRun.model_validate({"job_id": "job-1", "worker": "host/worker-0", **fields})


@pytest.mark.parametrize(
    ("run", "action"),
    [
        pytest.param(None, "claim", id="never-claimed"),
        pytest.param(run_record(), "claim", id="own-claim-cut-short"),
        pytest.param(run_record(worker="host/worker-1"), "skip", id="claimed-elsewhere"),
        pytest.param(run_record(status="running"), "skip", id="own-but-started"),
        pytest.param(run_record(cancel=True), "skip", id="own-but-cancelled"),
        pytest.param(run_record(final=b"done", status="completed"), "resend", id="finished"),
        pytest.param(run_record(worker=None, final=b"lost", status="lost"), "resend", id="declared-lost"),
    ],
)
def test_what_a_delivered_job_needs_follows_its_ledger_record(run: JobRun | None, action: str) -> None:
    assert on_delivery(run, "host/worker-0") == action
