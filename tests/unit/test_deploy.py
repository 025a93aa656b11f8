"""The deployment files: the kustomize tree under deploy/k8s, docker-compose.yml and the
Prometheus configuration.

No cluster and no Docker engine run in these tests. Every kustomization is rendered with
``kubectl kustomize`` and each rendered object is validated against the Kubernetes OpenAPI
schema (``kubernetes_validate``, strict: unknown fields fail), except the one custom resource,
KEDA's ScaledObject, whose apiVersion, kind and the fields REA relies on are checked instead.
The kustomize tests skip when ``kubectl`` is not installed; nothing else skips.

docker-compose.yml is validated against the Compose Specification's JSON schema as the
check-jsonschema package ships it (``check_jsonschema/builtin_schemas/vendor/compose-spec.json``),
and then for what REA relies on: each REA service runs the REA image with ``service NAME``, and
every file Prometheus and Grafana mount exists in the repository or is listed in
:data:`WRITTEN_ELSEWHERE` (files another part of the project provides, named in deploy/README.md).
"""

from __future__ import annotations

import base64
import functools
import importlib.resources
import importlib.util
import json
import shutil
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes.utils import parse_quantity

from rea.runtime import SERVICES as SERVICE_MODULES
from rea.settings import Settings
from rea.topics import Topics
from rea_executor.backends.kubernetes import JOB_SIDE_MEMORY_MB

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
README = ROOT / "deploy" / "README.md"

SERVICES = tuple(SERVICE_MODULES)
KUSTOMIZATIONS = ("base", "overlays/dev", "overlays/prod", *(f"services/{name}" for name in SERVICES))
SCHEMA_VERSIONS = sorted({"1.31", kubernetes_validate.latest_version()})
"""The oldest Kubernetes the project targets and the newest schema the installed package ships."""

CREDENTIALS = ("REA_KAFKA_BOOTSTRAP", "REA_MONGO_URI", "REA_REDIS_URL")
SECRET_ONLY = {
    *CREDENTIALS,
    "REA_LLM_API_KEY",
    "REA_MONGO_PASSWORD",
    "REA_REDIS_PASSWORD",
    "REA_KAFKA_SASL_PASSWORD",
}
METRICS_PORT = 9100
CUSTOM_RESOURCES = {("keda.sh/v1alpha1", "ScaledObject")}
"""Kinds the Kubernetes schema does not know: checked field by field in this module instead."""
NAMESPACED_EXEMPT = {"Namespace"}
WRITTEN_ELSEWHERE = {
    "deploy/prometheus/alerts.yml",
    "deploy/grafana/provisioning",
    "deploy/grafana/dashboards",
}
"""Paths docker-compose.yml mounts that the dashboards and alerts work provides (deploy/README.md)."""

needs_kubectl = pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl (with its built-in kustomize) is not installed"
)

Obj = dict[str, Any]


@functools.cache
def render(kustomization: str) -> tuple[Obj, ...]:
    """The objects ``kubectl kustomize deploy/k8s/<kustomization>`` renders."""
    done = subprocess.run(
        ["kubectl", "kustomize", str(K8S / kustomization)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"kubectl kustomize {kustomization} failed:\n{done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc is not None)


def of_kind(objects: tuple[Obj, ...], kind: str) -> list[Obj]:
    return [obj for obj in objects if obj["kind"] == kind]


def named(objects: tuple[Obj, ...], kind: str, name: str) -> Obj:
    matches = [obj for obj in of_kind(objects, kind) if obj["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def config(objects: tuple[Obj, ...]) -> dict[str, str]:
    """The data of the render's one rea-config ConfigMap (its name carries kustomize's hash)."""
    maps = [m for m in of_kind(objects, "ConfigMap") if m["metadata"]["name"].startswith("rea-config")]
    assert len(maps) == 1, f"expected one rea-config ConfigMap, found {len(maps)}"
    data: dict[str, str] = maps[0]["data"]
    return data


def containers(deployment: Obj) -> list[Obj]:
    found: list[Obj] = deployment["spec"]["template"]["spec"]["containers"]
    return found


def all_deployments() -> Iterator[tuple[str, Obj]]:
    for kustomization in KUSTOMIZATIONS:
        for deployment in of_kind(render(kustomization), "Deployment"):
            yield kustomization, deployment


def memory(quantity: str) -> Decimal:
    value: Decimal = parse_quantity(quantity)
    return value


# --- Kubernetes: rendering and schema ------------------------------------------------------


@needs_kubectl
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_kustomization_renders(kustomization: str) -> None:
    objects = render(kustomization)
    assert objects
    for obj in objects:
        assert {"apiVersion", "kind", "metadata"} <= obj.keys()
        if obj["kind"] not in NAMESPACED_EXEMPT:
            assert obj["metadata"].get("namespace") == "rea", (obj["kind"], obj["metadata"]["name"])


@needs_kubectl
@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_rendered_object_is_valid_kubernetes(kustomization: str, version: str) -> None:
    for obj in render(kustomization):
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_RESOURCES:
            continue  # test_the_keda_scaled_object
        # Any other kind the schema does not know raises SchemaNotFoundError: add a check for it.
        kubernetes_validate.validate(obj, version, strict=True)


@needs_kubectl
def test_the_schema_check_rejects_a_malformed_deployment() -> None:
    """The validation above is live: a field Kubernetes does not know fails it."""
    deployment = json.loads(json.dumps(named(render("base"), "Deployment", "rea-planner")))
    containers(deployment)[0]["livenessProbe"]["httpGet"]["portName"] = "metrics"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, SCHEMA_VERSIONS[-1], strict=True)


# --- Kubernetes: the Deployments -----------------------------------------------------------


@needs_kubectl
def test_every_deployment_has_resources_and_both_probes_on_the_metrics_port() -> None:
    checked = 0
    for kustomization, deployment in all_deployments():
        where = f"{kustomization}: {deployment['metadata']['name']}"
        port = int(config(render(kustomization))["REA_METRICS_PORT"])
        assert port == METRICS_PORT
        for container in containers(deployment):
            resources = container["resources"]
            for kind in ("cpu", "memory"):
                request, limit = resources["requests"][kind], resources["limits"][kind]
                assert parse_quantity(request) <= parse_quantity(limit), (
                    f"{where}: {kind} {request} > {limit}"
                )
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert ports["metrics"] == port, where
            for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                get = container[probe]["httpGet"]
                assert (get["path"], get["port"]) == (path, "metrics"), f"{where}: {probe}"
            checked += 1
    assert checked >= 3 * len(SERVICES)


@needs_kubectl
def test_every_deployment_runs_one_rea_service_locked_down() -> None:
    for kustomization, deployment in all_deployments():
        where = f"{kustomization}: {deployment['metadata']['name']}"
        pod = deployment["spec"]["template"]
        spec = pod["spec"]
        (container,) = containers(deployment)
        name = deployment["metadata"]["name"].removeprefix("rea-")
        assert container["args"] == ["service", name], where
        assert name in SERVICE_MODULES, where
        assert "command" not in container, f"{where}: the image's entrypoint is `rea`"
        assert container["image"].split(":")[0].rsplit("/", 1)[-1] == "rea", where
        annotations = pod["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", where
        assert annotations["prometheus.io/port"] == str(METRICS_PORT), where
        assert annotations["prometheus.io/path"] == "/metrics", where
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["runAsUser"] > 0, where
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, where
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
        assert spec["enableServiceLinks"] is False, f"{where}: Service links inject REA_* variables"
        # A read-only root: /tmp and REA_HOME are emptyDir volumes.
        empty = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        home = config(render(kustomization))["REA_HOME"]
        for path in ("/tmp", home):
            assert mounts.get(path) in empty, f"{where}: {path} is not a writable emptyDir"


def judges_decisions(service: str) -> bool:
    """Whether the service's wiring gates people's decisions (and so needs the keyring)."""
    spec = importlib.util.find_spec(SERVICE_MODULES[service])
    assert spec is not None and spec.origin is not None
    return "DecisionGate.for_service" in Path(spec.origin).read_text()


def test_the_services_that_judge_decisions_are_known() -> None:
    assert {name for name in SERVICES if judges_decisions(name)} == {"planner", "executor", "kernel"}


@needs_kubectl
def test_every_service_that_judges_decisions_mounts_the_keyring() -> None:
    """Without the keyring at REA_DECISION_KEYS_FILE a service refuses every decision."""
    for kustomization, deployment in all_deployments():
        name = deployment["metadata"]["name"].removeprefix("rea-")
        if not judges_decisions(name):
            continue
        where = f"{kustomization}: {deployment['metadata']['name']}"
        keyring = Path(config(render(kustomization))["REA_DECISION_KEYS_FILE"])
        spec = deployment["spec"]["template"]["spec"]
        (container,) = containers(deployment)
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert str(keyring.parent) in mounts, f"{where}: nothing mounted at {keyring.parent}"
        mount = mounts[str(keyring.parent)]
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert mount.get("readOnly") is True, where
        assert volumes[mount["name"]]["secret"]["secretName"] == "rea-decision-keys", where


@needs_kubectl
def test_credentials_come_only_from_the_secret() -> None:
    for kustomization, deployment in all_deployments():
        where = f"{kustomization}: {deployment['metadata']['name']}"
        secret = config(render(kustomization))["REA_KUBERNETES_SECRET"]
        for container in containers(deployment):
            env = {e["name"]: e for e in container.get("env", [])}
            for name in SECRET_ONLY & env.keys():
                assert "value" not in env[name], f"{where}: {name} given literally"
                assert env[name]["valueFrom"]["secretKeyRef"]["name"] == secret, f"{where}: {name}"
            assert set(CREDENTIALS) <= env.keys(), f"{where}: a credential is missing"
            for source in container.get("envFrom", []):
                # Whole Secrets may be taken; ConfigMaps are checked below for credentials.
                assert {"configMapRef", "secretRef"} & source.keys(), where
    for kustomization in KUSTOMIZATIONS:
        for config_map in of_kind(render(kustomization), "ConfigMap"):
            leaked = SECRET_ONLY & config_map.get("data", {}).keys()
            assert not leaked, f"{kustomization}: {config_map['metadata']['name']} holds {leaked}"


@needs_kubectl
def test_every_service_takes_the_optional_credentials_from_the_whole_secret() -> None:
    """Passwords (REA_MONGO_PASSWORD, REA_REDIS_PASSWORD, REA_KAFKA_SASL_PASSWORD) are optional
    keys of the Secret: a container takes the Secret whole, so whichever it holds arrive."""
    for kustomization, deployment in all_deployments():
        secret = config(render(kustomization))["REA_KUBERNETES_SECRET"]
        for container in containers(deployment):
            sources = [
                source["secretRef"]["name"] for source in container["envFrom"] if "secretRef" in source
            ]
            assert sources == [secret], f"{kustomization}: {deployment['metadata']['name']}"


@needs_kubectl
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_configmap_key_is_a_rea_setting(kustomization: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A typo in deploy/k8s/components/rea-config/config.env would be silently ignored by
    Settings (extra="ignore"): each key must name a field, and the values must parse."""
    data = config(render(kustomization))
    fields = {f"REA_{field.upper()}" for field in Settings.model_fields}
    fields.add("REA_DATA_CACHE")  # the data sets' archive cache (rea_workload.datasets.archive)
    assert data.keys() <= fields, data.keys() - fields
    for key, value in data.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert (settings.metrics_host, settings.metrics_port) == ("0.0.0.0", METRICS_PORT)
    assert settings.kafka_idempotence is True


@needs_kubectl
@pytest.mark.parametrize("name", SERVICES)
def test_each_service_directory_deploys_that_service_alone(name: str) -> None:
    objects = render(f"services/{name}")
    assert [d["metadata"]["name"] for d in of_kind(objects, "Deployment")] == [f"rea-{name}"]
    assert [n["metadata"]["name"] for n in of_kind(objects, "Namespace")] == ["rea"]
    config(objects)  # its own copy of the shared ConfigMap, so that it runs alone
    deployment = named(objects, "Deployment", f"rea-{name}")
    config_maps = {m["metadata"]["name"] for m in of_kind(objects, "ConfigMap")}
    for source in containers(deployment)[0]["envFrom"]:
        if "configMapRef" in source:
            assert source["configMapRef"]["name"] in config_maps
    service = named(objects, "Service", f"rea-{name}")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"}
    ]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


@needs_kubectl
@pytest.mark.parametrize("kustomization", ["base", "overlays/dev", "overlays/prod"])
def test_the_base_and_overlays_hold_every_service_once(kustomization: str) -> None:
    objects = render(kustomization)
    assert sorted(d["metadata"]["name"] for d in of_kind(objects, "Deployment")) == sorted(
        f"rea-{name}" for name in SERVICES
    )
    assert sorted(s["metadata"]["name"] for s in of_kind(objects, "Service")) == sorted(
        f"rea-{name}" for name in SERVICES
    )
    config(objects)


@needs_kubectl
@pytest.mark.parametrize("kustomization", ["base", "overlays/dev", "overlays/prod", "services/launcher"])
def test_the_launcher_may_manage_jobs_and_agrees_with_its_settings(kustomization: str) -> None:
    objects = render(kustomization)
    data = config(objects)
    launcher = named(objects, "Deployment", "rea-launcher")
    spec = launcher["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["REA_LAUNCHER_BACKEND"] == "kubernetes"
    assert data["REA_KUBERNETES_NAMESPACE"] == launcher["metadata"]["namespace"]
    # The training Jobs run the image the services run, and take the services' Secret.
    assert data["REA_KUBERNETES_IMAGE"] == container["image"]
    assert data["REA_KUBERNETES_SECRET"] == "rea-credentials"
    account = spec["serviceAccountName"]
    named(objects, "ServiceAccount", account)
    bindings = [
        b
        for b in of_kind(objects, "RoleBinding")
        if {"kind": "ServiceAccount", "name": account, "namespace": "rea"} in b["subjects"]
    ]
    assert len(bindings) == 1
    role = named(objects, "Role", bindings[0]["roleRef"]["name"])
    allowed = {
        verb
        for rule in role["rules"]
        if "batch" in rule["apiGroups"] and "jobs" in rule["resources"]
        for verb in rule["verbs"]
    }
    assert allowed == {"create", "get", "list", "delete"}


@needs_kubectl
@pytest.mark.parametrize("kustomization", ["base", "overlays/dev", "overlays/prod", "services/worker"])
def test_a_worker_has_room_for_the_largest_job(kustomization: str) -> None:
    """The worker's memory limit holds a job of REA_JOB_MEMORY_MB, the job side's own process
    and the in-memory /dev/shm volume."""
    objects = render(kustomization)
    worker = named(objects, "Deployment", "rea-worker")
    limit = memory(containers(worker)[0]["resources"]["limits"]["memory"])
    shm = sum(
        memory(v["emptyDir"].get("sizeLimit", "0"))
        for v in worker["spec"]["template"]["spec"]["volumes"]
        if v.get("emptyDir", {}).get("medium") == "Memory"
    )
    job = memory(f"{int(config(objects)['REA_JOB_MEMORY_MB']) + JOB_SIDE_MEMORY_MB}Mi")
    assert limit >= job + shm, f"{kustomization}: limit {limit} < job {job} + shm {shm}"


# --- Kubernetes: the overlays and KEDA -----------------------------------------------------


@needs_kubectl
def test_the_dev_overlay_generates_a_placeholder_secret() -> None:
    objects = render("overlays/dev")
    for deployment in of_kind(objects, "Deployment"):
        assert deployment["spec"]["replicas"] == 1
    secret = named(objects, "Secret", "rea-credentials")  # unhashed: the launcher's Jobs name it
    values = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    assert values.keys() == set(CREDENTIALS)
    for key, value in values.items():
        assert "@" not in value, f"{key}: no user or password in the dev overlay"


@needs_kubectl
def test_the_prod_overlay_expects_the_secret_and_guards_disruptions() -> None:
    objects = render("overlays/prod")
    assert not of_kind(objects, "Secret"), "prod's Secret is created by the operator"
    for deployment in of_kind(objects, "Deployment"):
        assert not containers(deployment)[0]["image"].endswith(":latest")
    base_worker = named(render("base"), "Deployment", "rea-worker")
    worker = named(objects, "Deployment", "rea-worker")
    assert memory(containers(worker)[0]["resources"]["limits"]["memory"]) > memory(
        containers(base_worker)[0]["resources"]["limits"]["memory"]
    )
    budgets = of_kind(objects, "PodDisruptionBudget")
    assert budgets
    for budget in budgets:
        selector = budget["spec"]["selector"]["matchLabels"]
        guarded = [
            d
            for d in of_kind(objects, "Deployment")
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(guarded) == 1, budget["metadata"]["name"]
        if "minAvailable" in budget["spec"]:
            # Otherwise the budget blocks every node drain.
            assert guarded[0]["spec"]["replicas"] > budget["spec"]["minAvailable"]


@needs_kubectl
def test_the_keda_scaled_object() -> None:
    """The ScaledObject (components/keda-workers, in prod) scales the worker Deployment on the
    lag of the worker group on the job queue, from zero, with no credential of its own."""
    objects = render("overlays/prod")
    data = config(objects)
    (scaled,) = of_kind(objects, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    target = spec["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
    worker = named(objects, "Deployment", target["name"])
    assert containers(worker)[0]["args"] == ["service", "worker"]
    assert "replicas" not in worker["spec"], "KEDA's HPA owns the worker count"
    assert spec["minReplicaCount"] == 0
    assert 1 <= spec["maxReplicaCount"] <= int(data["REA_TOPIC_PARTITIONS"])
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    topics = Topics(data["REA_TOPIC_PREFIX"])
    assert meta["topic"] == topics.job_queue
    assert meta["consumerGroup"] == topics.group("workers")  # rea_executor.worker subscribes so
    assert "bootstrapServers" not in meta
    env_source = next(c for c in containers(worker) if c["name"] == target["envSourceContainerName"])
    bootstrap = next(e for e in env_source["env"] if e["name"] == meta["bootstrapServersFromEnv"])
    assert bootstrap["valueFrom"]["secretKeyRef"]["key"] == "REA_KAFKA_BOOTSTRAP"
    assert int(meta["lagThreshold"]) >= 1
    assert meta["offsetResetPolicy"] == "earliest"  # as REA's consumers (rea.bus)
    assert isinstance(spec["cooldownPeriod"], int) and isinstance(spec["pollingInterval"], int)


# --- docker-compose.yml and Prometheus -----------------------------------------------------


def compose() -> Obj:
    loaded: Obj = yaml.safe_load(COMPOSE.read_text())
    return loaded


def compose_schema() -> Obj:
    try:
        vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    except ModuleNotFoundError as exc:  # a dev dependency: pip install check-jsonschema
        raise AssertionError(
            "the Compose Specification schema comes from the check-jsonschema package (dev extra)"
        ) from exc
    schema: Obj = json.loads(vendor.joinpath("compose-spec.json").read_text())
    return schema


def test_compose_file_follows_the_compose_specification() -> None:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    validator.validate(compose())
    broken = compose()
    broken["services"]["planner"]["comand"] = ["service", "planner"]  # a misspelt key fails
    assert not validator.is_valid(broken)


def test_compose_runs_every_rea_service_from_the_image() -> None:
    services = compose()["services"]
    rea = {name: s for name, s in services.items() if s.get("command", [None])[0] == "service"}
    # The launcher needs a Ray or Kubernetes cluster, which the compose file does not start.
    assert {s["command"][1] for s in rea.values()} >= set(SERVICES) - {"launcher"}
    for name, service in rea.items():
        assert service["command"] == ["service", name]
        assert name in SERVICE_MODULES
        assert service["image"] == "rea:latest"
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        env = service["environment"]
        assert (env["REA_METRICS_HOST"], str(env["REA_METRICS_PORT"])) == ("0.0.0.0", str(METRICS_PORT))


def test_compose_mounts_exist_or_are_provided_by_the_dashboards_work() -> None:
    services = compose()["services"]
    readme = README.read_text()
    mounted: dict[str, str] = {}
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source, target = volume.split(":")[:2]
            if not source.startswith("./"):
                continue  # a named volume
            path = source.removeprefix("./").rstrip("/")
            mounted[target] = path
            if not (ROOT / path).exists():
                assert path in WRITTEN_ELSEWHERE, f"{name} mounts {path}, which does not exist"
                assert path in readme, f"{path} is not described in deploy/README.md"
    assert mounted["/etc/prometheus/prometheus.yml"] == "deploy/prometheus/prometheus.yml"
    for rule_file in yaml.safe_load(PROMETHEUS.read_text())["rule_files"]:
        assert mounted[rule_file] == "deploy/prometheus/alerts.yml"


def test_prometheus_scrapes_every_rea_service_on_the_metrics_port() -> None:
    prometheus = yaml.safe_load(PROMETHEUS.read_text())
    assert "/etc/prometheus/alerts.yml" in prometheus["rule_files"]
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    assert set(SERVICES) <= jobs.keys()
    compose_services = compose()["services"]
    for name in SERVICES:
        targets: list[tuple[str, int]] = []
        for sd in jobs[name].get("dns_sd_configs", []):
            targets += [(host, sd["port"]) for host in sd["names"]]
        for static in jobs[name].get("static_configs", []):
            targets += [(t.rsplit(":", 1)[0], int(t.rsplit(":", 1)[1])) for t in static["targets"]]
        assert targets, name
        for host, port in targets:
            assert port == METRICS_PORT, name
            if name in compose_services:
                assert host == name, f"{name}: scrapes {host}, not the compose service"
