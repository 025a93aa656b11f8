"""Job backends: the registry, the Ray submission (against a stand-in job server; the real one
is exercised in tests/e2e/test_ray_backend.py), and the backend a campaign's jobs carry."""

from __future__ import annotations

import json

import httpx
import pytest

from rea.endpoints import Endpoints
from rea.events import JobSpec, JobSubmitted
from rea.settings import Settings
from rea_executor.backends import BACKENDS, make_backend
from rea_executor.backends.base import JOB_EVENT_ENV
from rea_executor.backends.local import LocalBackend
from rea_executor.backends.ray import RayBackend, submission
from rea_planner.campaign import validate_campaign

ENDPOINTS = Endpoints("kafka:9092", "mongodb://mongo:27017", "redis://redis:6379/0")


def submitted(gpus: int = 0) -> JobSubmitted:
    spec = JobSpec(
        job_id="c" * 32 + "-validation-baseline-s0",
        campaign_id="c" * 32,
        phase="validation",
        workload="ranker",
        dataset="synthetic:rows=3000",
        config={"epochs": 1},
        timeout_s=600,
        memory_mb=2048,
        cpus=2,
        gpus=gpus,
        backend="ray",
    )
    return JobSubmitted(campaign_id=spec.campaign_id, correlation_id=spec.campaign_id, payload=spec)


def test_every_backend_is_registered_under_its_own_name() -> None:
    settings = Settings()
    for name in BACKENDS:
        assert make_backend(name, settings, ENDPOINTS).name == name
    assert isinstance(make_backend("local", settings, ENDPOINTS), LocalBackend)


def test_a_ray_submission_carries_the_job_its_resources_and_where_to_report() -> None:
    event = submitted(gpus=1)
    request = submission(event, Settings(job_python="/opt/venv/bin/python", topic_prefix="team"), ENDPOINTS)
    assert request["submission_id"] == event.payload.job_id  # what makes a repeat a no-op
    assert request["entrypoint"] == "/opt/venv/bin/python -m rea_executor.jobside"
    assert (request["entrypoint_num_cpus"], request["entrypoint_num_gpus"]) == (2, 1)
    assert request["entrypoint_memory"] == 2048 * 1024 * 1024
    env = request["runtime_env"]["env_vars"]
    assert JobSubmitted.model_validate_json(env[JOB_EVENT_ENV]) == event
    assert env["REA_KAFKA_BOOTSTRAP"] == "kafka:9092" and env["REA_TOPIC_PREFIX"] == "team"
    assert "entrypoint_num_gpus" not in submission(submitted(gpus=0), Settings(), ENDPOINTS)


class JobServer:
    """Answers as Ray's job server does: a second job with a known submission id is refused."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, object]] = {}
        self.stopped: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path == "/api/jobs/":
            body = json.loads(request.content)
            if body["submission_id"] in self.jobs:
                return httpx.Response(
                    500, text=f"Job with submission_id {body['submission_id']} already exists"
                )
            self.jobs[body["submission_id"]] = body
            return httpx.Response(200, json={"submission_id": body["submission_id"]})
        job_id = path.removeprefix("/api/jobs/").removesuffix("/stop")
        if job_id not in self.jobs:
            return httpx.Response(404, text="no such job")
        if path.endswith("/stop"):
            self.stopped.append(job_id)
            return httpx.Response(200, json={"stopped": True})
        return httpx.Response(200, json={"status": "RUNNING"})


async def test_submitting_a_ray_job_twice_runs_it_once_and_cancel_is_safe_for_unknown_jobs() -> None:
    server = JobServer()
    client = httpx.AsyncClient(transport=httpx.MockTransport(server), base_url="http://ray:8265")
    backend = RayBackend(Settings(), ENDPOINTS, client)
    event = submitted()
    await backend.submit(event)
    await backend.submit(event)  # a redelivery
    assert list(server.jobs) == [event.payload.job_id]
    await backend.cancel("never-submitted")
    await backend.cancel(event.payload.job_id)
    assert server.stopped == [event.payload.job_id]
    await backend.close()


async def test_a_ray_refusal_that_is_not_a_repeat_is_an_error() -> None:
    refusing = httpx.MockTransport(lambda request: httpx.Response(400 if request.method == "POST" else 404))
    backend = RayBackend(
        Settings(), ENDPOINTS, httpx.AsyncClient(transport=refusing, base_url="http://ray:8265")
    )
    with pytest.raises(httpx.HTTPStatusError):
        await backend.submit(submitted())
    await backend.close()


def test_a_campaign_runs_on_the_backend_it_names_else_on_the_default() -> None:
    request = {"name": "n", "grant": "g", "dataset": "synthetic:rows=3000", "budget_cpu_seconds": 100}
    named, _ = validate_campaign({**request, "backend": "kubernetes", "job_gpus": 1}, default_backend="ray")
    default, _ = validate_campaign(request, default_backend="ray")
    assert named is not None and (named.backend, named.job_gpus) == ("kubernetes", 1)
    assert default is not None and default.backend == "ray"
    _, reasons = validate_campaign({**request, "backend": "slurm"})
    assert any("backend" in reason for reason in reasons), reasons
