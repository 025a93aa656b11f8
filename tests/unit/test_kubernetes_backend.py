"""The Kubernetes backend without a cluster: its Job objects are checked against the Kubernetes
OpenAPI schema (kubernetes-validate) and against what the job side and the base contract need;
submit and cancel run against a fake BatchV1Api and, once, the real client against a stub HTTP
server that answers like the API server (201, then 409 AlreadyExists; 404 on delete)."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import kubernetes
import kubernetes_validate
import pytest
from kubernetes.client import ApiException
from kubernetes.utils import parse_quantity

from rea.events import JobSpec, JobSubmitted
from rea.settings import Settings
from rea_executor.backends.base import JOB_EVENT_ENV
from rea_executor.backends.kubernetes import (
    JOB_SIDE_MEMORY_MB,
    QUEUE_LABEL,
    START_MARGIN_S,
    KubernetesBackend,
    job_manifest,
    job_name,
)

CAMPAIGN = "a" * 32
SCHEMA_VERSIONS = sorted({"1.31", kubernetes_validate.latest_version()})
"""The oldest Kubernetes the project targets and the newest schema the installed package ships."""

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
LONG_ODD_ID = ("Campaign_ABC/Hypothesis=Cross.Features+DCN v2 · Ärger #" * 6) + "SEED-3"
JOB_IDS = [
    "job-1",
    f"{CAMPAIGN}-validation-h07-s3",
    LONG_ODD_ID,
    "---___---",  # nothing readable: the name is the hash alone
    "Job-A",
    "job-a",  # slugs alike with the one above: the hash tells them apart
    "job.a",
    "job_a",
]


def make_settings(**overrides: Any) -> Settings:
    """Settings with every field the manifest reads given, so REA_* variables do not leak in."""
    values: dict[str, Any] = {
        "kubernetes_namespace": "rea-jobs",
        "kubernetes_image": "registry.example/rea:1.2.3",
        "kubernetes_secret": "rea-credentials",
        "kubernetes_queue": None,
        "kubernetes_service_account": None,
        "job_python": "/opt/venv/bin/python",
        "topic_prefix": "rea-test",
        "mongo_db": "rea_test",
    }
    return Settings(**{**values, **overrides})


SETTINGS = {
    "plain": make_settings(),
    "kueue": make_settings(
        kubernetes_queue="rea-training", kubernetes_service_account="rea-job", kubernetes_secret="creds"
    ),
    "no-secret": make_settings(kubernetes_secret=None),
}


def make_event(
    job_id: str = "job-1",
    *,
    gpus: int = 1,
    cpus: float = 2.0,
    timeout_s: float = 1800,
    memory_mb: int = 4096,
) -> JobSubmitted:
    return JobSubmitted(
        campaign_id=CAMPAIGN,
        correlation_id="c",
        payload=JobSpec(
            job_id=job_id,
            campaign_id=CAMPAIGN,
            phase="validation",
            workload="ranker",
            dataset="synthetic",
            config={"lr": 0.01, "layers": [64, 32]},
            timeout_s=timeout_s,
            memory_mb=memory_mb,
            cpus=cpus,
            gpus=gpus,
            backend="kubernetes",
        ),
    )


def container_of(manifest: dict[str, Any]) -> dict[str, Any]:
    containers = manifest["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def env_of(manifest: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container_of(manifest)["env"]}


# ---- the Job object ---------------------------------------------------------------------


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
@pytest.mark.parametrize("variant", sorted(SETTINGS))
@pytest.mark.parametrize("gpus", [0, 1])
@pytest.mark.parametrize("job_id", JOB_IDS)
def test_every_manifest_is_a_valid_job(job_id: str, gpus: int, variant: str, version: str) -> None:
    manifest = job_manifest(make_event(job_id, gpus=gpus), SETTINGS[variant])
    kubernetes_validate.validate(manifest, version, strict=True)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "template", "spec", "containers", 0, "gpus"), 1),  # no such field
        (("spec", "activeDeadlineSeconds"), "1800"),  # a string where an integer belongs
        (("spec", "template", "spec", "restartPolicy"), ["Never"]),
    ],
)
def test_the_schema_check_rejects_a_malformed_job(path: tuple[str | int, ...], value: Any) -> None:
    """The validation above is live: a Job with a field Kubernetes does not know, or of the
    wrong type, fails it."""
    manifest = job_manifest(make_event(), SETTINGS["plain"])
    target: Any = manifest
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, SCHEMA_VERSIONS[-1], strict=True)


def test_the_name_is_a_short_dns_label_stable_per_job_id_and_distinct_across_ids() -> None:
    names = {job_id: job_name(job_id) for job_id in JOB_IDS}
    for job_id, name in names.items():
        assert len(name) <= 63, name
        assert DNS_LABEL.match(name), name
        assert name.startswith("rea-")
        assert job_name(job_id) == name
        assert job_manifest(make_event(job_id), SETTINGS["plain"])["metadata"]["name"] == name
    assert len(set(names.values())) == len(JOB_IDS)
    assert names["job-1"].startswith("rea-job-1-")  # readable where the id allows
    assert len(names[LONG_ODD_ID]) == 63


def test_labels_and_annotations_identify_the_job() -> None:
    manifest = job_manifest(make_event(LONG_ODD_ID), SETTINGS["plain"])
    metadata = manifest["metadata"]
    assert metadata["namespace"] == "rea-jobs"
    assert metadata["labels"] == {
        "app.kubernetes.io/name": "rea-job",
        "app.kubernetes.io/part-of": "rea",
        "rea.dev/campaign": CAMPAIGN,
    }
    assert metadata["annotations"]["rea.dev/job-id"] == LONG_ODD_ID  # in full, case and all
    assert metadata["annotations"]["rea.dev/phase"] == "validation"
    template = manifest["spec"]["template"]["metadata"]
    for labels in (metadata["labels"], template["labels"]):
        assert all(LABEL_VALUE.match(value) and len(value) <= 63 for value in labels.values()), labels


def test_a_campaign_id_that_is_no_label_value_gets_a_valid_stand_in() -> None:
    odd = "Campaign #7 / " + "x" * 80
    event = make_event().model_copy(
        update={"payload": make_event().payload.model_copy(update={"campaign_id": odd})}
    )
    manifest = job_manifest(event, SETTINGS["plain"])
    value = manifest["metadata"]["labels"]["rea.dev/campaign"]
    assert LABEL_VALUE.match(value) and len(value) <= 63, value
    assert manifest["metadata"]["annotations"]["rea.dev/campaign-id"] == odd
    kubernetes_validate.validate(manifest, SCHEMA_VERSIONS[-1], strict=True)


@pytest.mark.parametrize(
    ("cpus", "gpus", "memory_mb", "cpu"),
    [(2.0, 1, 4096, "2"), (0.5, 0, 1024, "500m"), (1.25, 2, 16384, "1250m"), (8, 0, 512, "8")],
)
def test_requests_and_limits_carry_the_jobs_resources(
    cpus: float, gpus: int, memory_mb: int, cpu: str
) -> None:
    manifest = job_manifest(make_event(cpus=cpus, gpus=gpus, memory_mb=memory_mb), SETTINGS["plain"])
    resources = container_of(manifest)["resources"]
    assert resources["requests"] == resources["limits"]  # Guaranteed QoS
    limits = resources["limits"]
    assert limits["cpu"] == cpu
    assert parse_quantity(limits["cpu"]) == Decimal(str(cpus))
    # The job's own memory, plus room for the job side's process next to it.
    assert parse_quantity(limits["memory"]) == (memory_mb + JOB_SIDE_MEMORY_MB) * 2**20
    if gpus:
        assert limits["nvidia.com/gpu"] == str(gpus)
    else:
        assert "nvidia.com/gpu" not in limits


@pytest.mark.parametrize("timeout_s", [1800, 1800.2, 0.5])
def test_kubernetes_never_retries_and_stops_the_job_past_its_deadline(timeout_s: float) -> None:
    spec = job_manifest(make_event(timeout_s=timeout_s), SETTINGS["plain"])["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    deadline = spec["activeDeadlineSeconds"]
    assert isinstance(deadline, int)
    assert deadline == math.ceil(timeout_s) + START_MARGIN_S
    assert deadline > timeout_s  # the job side's own timeout fires first and reports `timeout`
    assert spec["ttlSecondsAfterFinished"] > 0


def test_the_container_runs_the_job_side_with_its_event() -> None:
    settings = SETTINGS["plain"]
    event = make_event(LONG_ODD_ID)
    manifest = job_manifest(event, settings)
    container = container_of(manifest)
    assert container["name"] == "job"
    assert container["image"] == "registry.example/rea:1.2.3"
    assert container["command"] == ["/opt/venv/bin/python", "-m", "rea_executor.jobside"]
    assert importlib.util.find_spec("rea_executor.jobside") is not None
    env = env_of(manifest)
    assert set(env) == {JOB_EVENT_ENV, "REA_TOPIC_PREFIX", "REA_MONGO_DB"}
    assert env["REA_TOPIC_PREFIX"] == "rea-test"
    assert env["REA_MONGO_DB"] == "rea_test"
    decoded = JobSubmitted.model_validate_json(env[JOB_EVENT_ENV])
    assert decoded == event
    assert decoded.payload == event.payload


def test_credentials_come_only_from_the_secret() -> None:
    secrets = ["hunter2", "s3cret-pw", "sk-test-key-123"]
    settings = make_settings(
        kubernetes_secret="creds",
        mongo_uri=f"mongodb://rea:{secrets[0]}@mongo:27017",
        redis_url=f"redis://:{secrets[1]}@redis:6379/0",
        kafka_bootstrap="kafka.internal:9092",
        llm_api_key=secrets[2],
    )
    manifest = job_manifest(make_event(), settings)
    text = json.dumps(manifest)
    for leaked in [*secrets, "mongodb://", "redis://", "kafka.internal"]:
        assert leaked not in text
    container = container_of(manifest)
    assert all(set(item) == {"name", "value"} for item in container["env"])
    assert container["envFrom"] == [{"secretRef": {"name": "creds"}}]
    assert "envFrom" not in container_of(job_manifest(make_event(), SETTINGS["no-secret"]))


def test_kueue_label_and_suspend_only_with_a_queue() -> None:
    plain = job_manifest(make_event(), SETTINGS["plain"])
    assert QUEUE_LABEL not in plain["metadata"]["labels"]
    assert "suspend" not in plain["spec"]
    assert "serviceAccountName" not in plain["spec"]["template"]["spec"]
    queued = job_manifest(make_event(), SETTINGS["kueue"])
    assert queued["metadata"]["labels"][QUEUE_LABEL] == "rea-training"
    assert queued["spec"]["suspend"] is True  # Kueue unsuspends it once admitted
    assert queued["spec"]["template"]["spec"]["serviceAccountName"] == "rea-job"


def test_the_module_imports_and_builds_jobs_without_the_kubernetes_package() -> None:
    code = (
        "import sys; sys.modules['kubernetes'] = None\n"
        "from rea_executor.backends.kubernetes import job_manifest, KubernetesBackend\n"
        "from rea.events import JobSubmitted\n"
        "from rea.settings import Settings\n"
        "event = JobSubmitted.model_validate_json(sys.stdin.read())\n"
        "KubernetesBackend(Settings())\n"
        "print(job_manifest(event, Settings())['metadata']['name'])\n"
    )
    event = make_event("job-1")
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=event.model_dump_json(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == job_name("job-1")


# ---- submit and cancel ------------------------------------------------------------------


class FakeBatchApi:
    """Holds Jobs by (namespace, name) and answers like the API server: 409 on a second create,
    404 on deleting what is not there; ``fail_with`` makes every call raise that status."""

    def __init__(self, fail_with: int | None = None) -> None:
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.creates = 0
        self.deletes: list[tuple[str, str, str | None]] = []
        self.fail_with = fail_with

    def create_namespaced_job(
        self, namespace: str, body: Any, *, _request_timeout: float | None = None
    ) -> dict[str, Any]:
        self.creates += 1
        if self.fail_with is not None:
            raise ApiException(status=self.fail_with, reason="Forbidden")
        key = (namespace, body["metadata"]["name"])
        if key in self.jobs:
            raise ApiException(status=409, reason="AlreadyExists")
        self.jobs[key] = body
        return dict(body)

    def delete_namespaced_job(
        self,
        name: str,
        namespace: str,
        *,
        propagation_policy: str | None = None,
        _request_timeout: float | None = None,
    ) -> dict[str, Any]:
        self.deletes.append((namespace, name, propagation_policy))
        if self.fail_with is not None:
            raise ApiException(status=self.fail_with, reason="Internal")
        if self.jobs.pop((namespace, name), None) is None:
            raise ApiException(status=404, reason="NotFound")
        return {"kind": "Status", "status": "Success"}


async def test_submitting_a_job_twice_creates_it_once() -> None:
    api = FakeBatchApi()
    backend = KubernetesBackend(SETTINGS["kueue"], batch_api=api)
    event = make_event(LONG_ODD_ID)
    await backend.submit(event)
    await backend.submit(event)
    redelivered = make_event(LONG_ODD_ID)  # the same job in a new envelope (a replay)
    assert redelivered.event_id != event.event_id
    await backend.submit(redelivered)
    assert api.creates == 3
    assert list(api.jobs) == [("rea-jobs", job_name(LONG_ODD_ID))]
    assert api.jobs["rea-jobs", job_name(LONG_ODD_ID)] == job_manifest(event, SETTINGS["kueue"])
    await backend.submit(make_event("job-2"))
    assert len(api.jobs) == 2
    await backend.close()


async def test_cancel_deletes_the_job_by_the_same_name_and_ignores_an_unknown_one() -> None:
    api = FakeBatchApi()
    backend = KubernetesBackend(SETTINGS["plain"], batch_api=api)
    await backend.submit(make_event("job-1"))
    await backend.cancel("job-1")
    assert api.jobs == {}
    assert api.deletes == [("rea-jobs", job_name("job-1"), "Background")]
    await backend.cancel("job-1")  # gone already: 404, no error
    await backend.cancel("never-submitted")
    assert [name for _, name, _ in api.deletes] == [
        job_name(j) for j in ("job-1", "job-1", "never-submitted")
    ]


async def test_other_api_errors_are_raised() -> None:
    backend = KubernetesBackend(SETTINGS["plain"], batch_api=FakeBatchApi(fail_with=403))
    with pytest.raises(ApiException) as raised:
        await backend.submit(make_event())
    assert raised.value.status == 403
    backend = KubernetesBackend(SETTINGS["plain"], batch_api=FakeBatchApi(fail_with=500))
    with pytest.raises(ApiException):
        await backend.cancel("job-1")


async def test_without_an_api_it_tries_in_cluster_config_then_kubeconfig(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    api = FakeBatchApi()

    def in_cluster() -> None:
        calls.append("in-cluster")
        raise kubernetes.config.ConfigException("not in a cluster")

    monkeypatch.setattr(kubernetes.config, "load_incluster_config", in_cluster)
    monkeypatch.setattr(kubernetes.config, "load_kube_config", lambda: calls.append("kubeconfig"))
    monkeypatch.setattr(kubernetes.client, "BatchV1Api", lambda: api)
    backend = KubernetesBackend(SETTINGS["plain"])
    assert calls == []  # nothing is loaded until it is used
    await backend.submit(make_event())
    await backend.submit(make_event("job-2"))
    assert calls == ["in-cluster", "kubeconfig"]  # once
    assert len(api.jobs) == 2


class _StubApiServer(BaseHTTPRequestHandler):
    """Answers the two calls the backend makes as the API server would."""

    jobs: dict[str, Any]
    requests: list[tuple[str, str]]

    def _answer(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # the name http.server calls
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append(("POST", self.path))
        name = body["metadata"]["name"]
        if name in self.jobs:
            self._answer(409, {"kind": "Status", "code": 409, "reason": "AlreadyExists"})
        else:
            self.jobs[name] = body
            self._answer(201, body)

    def do_DELETE(self) -> None:
        self.requests.append(("DELETE", self.path))
        self._answer(404, {"kind": "Status", "code": 404, "reason": "NotFound"})

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads ``requests``."""


@pytest.fixture
def stub_api_server() -> Iterator[tuple[str, type[_StubApiServer]]]:
    handler = type("Handler", (_StubApiServer,), {"jobs": {}, "requests": []})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", handler
    finally:
        server.shutdown()
        server.server_close()


async def test_the_real_client_sends_the_manifest_and_its_409_and_404_are_no_errors(
    stub_api_server: tuple[str, type[_StubApiServer]],
) -> None:
    """With the real BatchV1Api: the body the API server receives is the manifest, unchanged by
    the client's models, and its real ApiException for 409 / 404 is recognised."""
    url, server = stub_api_server
    client = kubernetes.client.ApiClient(kubernetes.client.Configuration(host=url))
    backend = KubernetesBackend(SETTINGS["kueue"], batch_api=kubernetes.client.BatchV1Api(client))
    event = make_event(LONG_ODD_ID)
    try:
        await backend.submit(event)
        await backend.submit(event)
        await backend.cancel("never-submitted")
    finally:
        client.close()
    name = job_name(LONG_ODD_ID)
    assert server.jobs == {name: job_manifest(event, SETTINGS["kueue"])}
    jobs = "/apis/batch/v1/namespaces/rea-jobs/jobs"
    assert server.requests == [
        ("POST", jobs),
        ("POST", jobs),
        ("DELETE", f"{jobs}/{job_name('never-submitted')}?propagationPolicy=Background"),
    ]
