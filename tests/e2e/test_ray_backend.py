"""The ``ray`` job backend against a real local Ray head (``ray start --head`` from the ``ray``
package): a campaign's jobs run as Ray jobs, their results arrive as events published by the
job side, and a job stopped on the Ray side reaches the runbook and is run again."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rea.client import Client
from rea_tools.stack import EmbeddedStack, free_port

from .helpers import campaign_request, eventually, finished, recorded_results, submit

pytestmark = pytest.mark.e2e

RAY = Path(sys.executable).with_name("ray")


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """A Ray head of its own (2 CPUs), its session files under a short temporary folder (Ray's
    sockets live there and a Unix socket path is limited to about 100 characters)."""
    temp = Path(tempfile.mkdtemp(prefix="rea-ray-"))
    dashboard = free_port()
    subprocess.run(
        [
            str(RAY), "start", "--head", f"--port={free_port()}", f"--dashboard-port={dashboard}",
            "--num-cpus=2", "--include-dashboard=true", "--disable-usage-stats", f"--temp-dir={temp}",
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{dashboard}"
    finally:
        subprocess.run([str(RAY), "stop", "--force"], capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


def start_ray_services(services: EmbeddedStack, ray_address: str) -> None:
    """Every service but the local workers, and a launcher for Ray: no job can run but there."""
    for name in ("logger", "hypothesis", "planner", "executor"):
        services.start_service(name)
    env = {"REA_LAUNCHER_BACKEND": "ray", "REA_RAY_ADDRESS": ray_address, "REA_JOB_PYTHON": sys.executable}
    services.start_service("launcher", "launcher-ray", env=env)


def ray_job(ray_address: str, job_id: str) -> dict[str, object] | None:
    response = httpx.get(f"{ray_address}/api/jobs/{job_id}", timeout=30)
    return response.json() if response.status_code == 200 else None


async def test_a_campaign_runs_its_jobs_as_ray_jobs(
    services: EmbeddedStack, client: Client, ray_address: str
) -> None:
    start_ray_services(services, ray_address)
    campaign_id = await submit(client, campaign_request(backend="ray", max_hypotheses=2))

    state = await finished(client, campaign_id, 420)

    assert state.status == "completed", state.reasons
    records = state.records
    assert records and all(record.status == "completed" for record in records)
    rows = await recorded_results(client, campaign_id, len(records))
    assert {row["_id"] for row in rows} == {record.job_id for record in records}
    for row in rows:
        assert str(row["worker"]).startswith("ray/"), row["worker"]  # the job side on Ray reported it

    async def every_ray_job_succeeded() -> bool:  # the last job side may still be leaving
        jobs = [ray_job(ray_address, str(row["_id"])) for row in rows]
        return all(job is not None and job["status"] == "SUCCEEDED" for job in jobs)

    await eventually(every_ray_job_succeeded, "every Ray job to succeed", 60)


async def test_a_job_stopped_on_the_ray_side_is_run_again_by_the_runbook(
    services: EmbeddedStack, client: Client, ray_address: str
) -> None:
    start_ray_services(services, ray_address)
    campaign_id = await submit(
        client, campaign_request(backend="ray", max_hypotheses=1, baseline={"epochs": 3})
    )
    stopped: list[str] = []

    async def stop_a_running_job() -> bool:
        phase = await client.phase(campaign_id)
        running = [job for job in (phase.jobs if phase else []) if job.status == "running"]
        if not running:
            return False
        job_id = running[0].spec.job_id
        response = httpx.post(f"{ray_address}/api/jobs/{job_id}/stop", timeout=30)
        stopped.append(job_id)
        return response.status_code == 200

    await eventually(stop_a_running_job, "a running Ray job to stop", 240)
    state = await finished(client, campaign_id, 420)

    failures = [(r.job_id, r.status, r.error) for r in state.records if r.status != "completed"]
    assert state.status == "completed", (state.reasons, failures)
    by_id = {record.job_id: record for record in state.records}
    lost = by_id[stopped[0]]
    assert lost.status == "retried", lost
    assert lost.error is not None and lost.error.kind in {"killed", "lost_worker"}, lost.error
    retry = by_id[f"{stopped[0]}-a2"]
    assert retry.status == "completed", retry
