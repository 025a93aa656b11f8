"""The observability kit: the Grafana dashboards and Prometheus alert rules in deploy/ use only
metrics that REA exposes (``rea.metrics.Metrics``), with labels those metrics have; the rules
pass ``promtool check rules``; and the executor's decisions update the job, runbook and budget
metrics. The same queries run against a real Prometheus in tests/e2e/test_prometheus.py."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.metrics import MetricWrapperBase

from rea.events import (
    JobFailed,
    JobFinishedPayload,
    JobSpec,
    JobStarted,
    JobStartedPayload,
    PhasePlan,
    PhaseStarted,
    PhaseStartedPayload,
)
from rea.metrics import BUDGET_CAMPAIGNS_KEPT, Metrics
from rea.workloads import JobCost, JobError, JobOutput, get_workload
from rea_executor import logic
from rea_executor.service import record_metrics
from rea_executor.state import PhaseExecution

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"

PROMETHEUS_OWN = {"up": frozenset({"job", "instance"})}
"""Series Prometheus writes itself for every scrape target (the rules use ``up`` for a target
that cannot be scraped)."""
TARGET_LABELS = frozenset({"job", "instance"})
"""Labels Prometheus adds to every scraped series."""
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or"})
KEYWORDS_TOO = frozenset({"unless", "offset", "inf", "nan", "atan2"})
COMPARISON = re.compile(r"(==|!=|>=|<=|>|<)(\s*bool\b)?")


# --- reading the dashboards and the rules (the end-to-end test reuses these) -----------------


def dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows too (rows themselves hold no query)."""
    found: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            found += panel.get("panels", [])
        else:
            found.append(panel)
    return found


def panel_queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every target of every dashboard panel."""
    return [
        (f"{name} / {panel['title']} / {target['refId']}", target["expr"])
        for name, dashboard in dashboards().items()
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
    ]


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def _outside_quotes_and_braces(expr: str) -> list[tuple[str, bool]]:
    """``expr`` cut into (text, is_plain) pieces: plain text, or a string / label matcher."""
    pieces = re.split(r'("(?:[^"\\]|\\.)*"|\{[^}]*\})', expr)
    return [(piece, index % 2 == 0) for index, piece in enumerate(pieces)]


def at_rest(expr: str) -> str:
    """An alert's expression turned into the quantity it watches, which has data even while the
    alert is quiet: each comparison becomes a ``bool`` comparison (0 or 1 for every series,
    instead of only the series that cross the threshold), and ``absent(X)`` becomes ``(X)``
    (the series whose absence it alerts on). Label matchers and strings are left alone."""
    out: list[str] = []
    for piece, plain in _outside_quotes_and_braces(expr):
        if plain:
            piece = COMPARISON.sub(lambda found: found[0] if found[2] else f"{found[1]} bool", piece)
            piece = re.sub(r"\babsent\s*\(", "(", piece)
        out.append(piece)
    return "".join(out)


def selectors(expr: str) -> list[tuple[str, frozenset[str]]]:
    """The metrics ``expr`` selects, each with the label names its matchers use. Functions,
    aggregations and their ``by``/``on`` clauses, keywords, ranges and numbers are not metrics."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"(?<![\w.])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?:ms|[smhdwy])?(?!\w)", " ", text)  # numbers
    found: list[tuple[str, frozenset[str]]] = []
    for match in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*(\{[^}]*\})?(\s*\()?", text):
        name, matchers, call = match.groups()
        if not name and not matchers:
            continue
        if name and (call or name in KEYWORDS | KEYWORDS_TOO):
            continue
        assert name, f"a selector without a metric name in {expr!r}"
        labels = frozenset(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", matchers or ""))
        found.append((name, labels))
    return found


def exposed_series(metrics: Metrics | None = None) -> dict[str, frozenset[str]]:
    """Every series name a REA process can expose, with its label names."""
    metrics = metrics or Metrics()
    metrics.up.labels(service="probe").set(1)  # families derived from rea_up show samples then
    series: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    for wrapper in vars(metrics).values():
        if isinstance(wrapper, MetricWrapperBase):
            labels = set(wrapper._labelnames)
            for suffix in SUFFIXES[str(wrapper._type)]:
                series.setdefault(wrapper._name + suffix, set()).update(
                    labels | ({"le"} if suffix == "_bucket" else set())
                )
    return {name: frozenset(labels) for name, labels in series.items()}


# --- the dashboards -------------------------------------------------------------------------


def test_every_dashboard_parses_and_every_panel_queries_prometheus() -> None:
    found = dashboards()
    expected = {"campaigns-overview", "jobs-and-failures", "budget", "event-flow"}
    assert set(found) == {f"{name}.json" for name in expected}
    uids = [dashboard["uid"] for dashboard in found.values()]
    assert len(set(uids)) == len(uids)
    for name, dashboard in found.items():
        assert dashboard["schemaVersion"] >= 36, name
        assert dashboard["title"] and panels(dashboard), name
        ids = [panel["id"] for panel in panels(dashboard)]
        assert len(set(ids)) == len(ids), f"{name}: panel ids repeat"
        for panel in panels(dashboard):
            where = f"{name} / {panel.get('title')}"
            assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, where
            assert panel.get("targets"), f"{where} has no query"
            for target in panel["targets"]:
                assert target["expr"].strip(), f"{where} has an empty query"
                assert target.get("datasource", {}).get("uid", "prometheus") == "prometheus", where
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, where


def test_grafana_provisioning_points_at_prometheus_and_the_dashboards() -> None:
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    (source,) = datasources["datasources"]
    assert (source["type"], source["uid"]) == ("prometheus", "prometheus")
    assert source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "rea.yml").read_text())["providers"]
    assert [p["options"]["path"] for p in providers] == ["/var/lib/grafana/dashboards"]
    assert providers[0]["type"] == "file"


# --- metric names and labels ----------------------------------------------------------------


def test_the_selector_parser_finds_metrics_not_functions_or_labels() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, service) (rate(rea_handler_seconds_bucket{type!="x"}[5m]))) '
        "/ on (service) group_left max without (instance) (rea_up offset 5m) > 0.9 and up == 0 or vector(1)"
    )
    assert selectors(expr) == [
        ("rea_handler_seconds_bucket", frozenset({"type"})),
        ("rea_up", frozenset()),
        ("up", frozenset()),
    ]


def test_at_rest_keeps_the_quantity_and_leaves_matchers_alone() -> None:
    assert at_rest('rea_x{a!="b",c=~"d>e"} > 0.9 and on () absent(rea_y == 1)') == (
        'rea_x{a!="b",c=~"d>e"} > bool 0.9 and on () (rea_y == bool 1)'
    )
    assert at_rest("a >= bool 1") == "a >= bool 1"


def _every_query() -> list[tuple[str, str]]:
    rules = [(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()]
    return panel_queries() + rules


@pytest.mark.parametrize(("where", "expr"), _every_query(), ids=[where for where, _ in _every_query()])
def test_every_metric_a_panel_or_alert_uses_is_one_rea_exposes(where: str, expr: str) -> None:
    series = {**exposed_series(), **PROMETHEUS_OWN}
    used = selectors(expr)
    assert any(name.startswith("rea_") for name, _ in used), f"{where}: no REA metric in {expr!r}"
    for name, labels in used:
        assert name in series, f"{where}: {name} is not exposed by rea.metrics.Metrics ({expr!r})"
        unknown = labels - series[name] - TARGET_LABELS
        assert not unknown, f"{where}: {name} has no label {sorted(unknown)}"


def test_every_rea_family_has_the_service_label() -> None:
    for name, labels in exposed_series().items():
        if not name.endswith("_created"):
            assert "service" in labels, name


# --- the alert rules ------------------------------------------------------------------------


def test_every_alert_says_how_bad_and_what_happened() -> None:
    rules = alert_rules()
    names = {rule["alert"] for rule in rules}
    assert {
        "ReaCampaignStalled",
        "ReaDeadLettersGrowing",
        "ReaBudgetNearlySpent",
        "ReaJobsEscalated",
        "ReaServiceDown",
    } <= names
    for rule in rules:
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
    documented = (ROOT / "docs" / "metrics.md").read_text()
    assert all(name in documented for name in names), "docs/metrics.md explains every alert"


def test_promtool_accepts_the_alert_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: `apt-get install prometheus` brings it)")
    checked = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


# --- what the services record ---------------------------------------------------------------

SCHEMA = get_workload("ranker").schema
FOLLOW = {"campaign_id": "camp-1", "correlation_id": "corr-1"}


def _spec(n: int) -> JobSpec:
    return JobSpec(
        job_id=f"job-{n}",
        campaign_id="camp-1",
        phase="validation",
        hypothesis_id=None if n == 0 else f"h{n}",
        workload="ranker",
        dataset="synthetic:rows=3000",
        config=SCHEMA.resolve({"epochs": 1}),
        estimated_cpu_seconds=10.0,
        timeout_s=60,
        memory_mb=1024,
    )


def _value(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, {"service": "executor", **labels})
    return 0.0 if value is None else value


def test_the_executor_counts_jobs_runbook_actions_and_the_phase_budget() -> None:
    metrics = Metrics()
    specs = [_spec(0), _spec(1), _spec(2)]
    plan = PhasePlan(phase="validation", jobs=specs, estimated_cpu_seconds=30.0)
    start = PhaseStarted(
        **FOLLOW, payload=PhaseStartedPayload(plan=plan, budget_cpu_seconds=100.0, max_parallel_jobs=2)
    )
    decision = logic.on_phase_started(None, start)
    record_metrics(metrics, "executor", start, decision)
    state = decision.state
    assert isinstance(state, PhaseExecution)
    submitted = {"state": "submitted", "backend": "local", "kind": "none"}
    assert _value(metrics, "rea_job_transitions_total", **submitted) == 2
    budget = {"campaign": "camp-1", "resource": "cpu_seconds"}
    assert _value(metrics, "rea_budget_limit", **budget) == 100.0
    assert _value(metrics, "rea_budget_reserved", **budget) == 20.0  # two jobs in flight
    assert _value(metrics, "rea_budget_remaining", **budget) == 80.0
    assert _value(metrics, "rea_budget_open", **budget) == 1.0

    began = JobStarted(**FOLLOW, payload=JobStartedPayload(job_id="job-0", phase="validation", worker="w"))
    decision = logic.on_job_started(state, began)
    record_metrics(metrics, "executor", began, decision)
    assert _value(metrics, "rea_job_transitions_total", state="started", backend="local", kind="none") == 1
    assert decision.state is not None
    state = decision.state

    output = JobOutput(
        status="failed",
        error=JobError(kind="oom", message="out of memory"),
        cost=JobCost(cpu_seconds=4.0, wall_seconds=5.0, peak_rss_mb=100.0),
    )
    failed = JobFailed(**FOLLOW, payload=JobFinishedPayload(spec=specs[0], output=output, worker="w"))
    decision = logic.on_job_finished(state, failed)
    record_metrics(metrics, "executor", failed, decision)
    assert _value(metrics, "rea_job_transitions_total", state="failed", backend="local", kind="oom") == 1
    # The baseline is retried unchanged first (the runbook's reference rule).
    assert _value(metrics, "rea_runbook_actions_total", failure="oom", action="resubmit") == 1
    assert _value(metrics, "rea_budget_spent", **budget) == 4.0
    # A duplicate result changes nothing, so nothing is counted twice.
    record_metrics(metrics, "executor", failed, logic.on_job_finished(decision.state, failed))
    assert _value(metrics, "rea_job_transitions_total", state="failed", backend="local", kind="oom") == 1


def test_budget_series_are_kept_for_a_bounded_number_of_campaigns() -> None:
    metrics = Metrics()
    for n in range(BUDGET_CAMPAIGNS_KEPT + 5):
        metrics.set_budget("executor", f"c{n}", limit=10.0, spent=1.0, reserved=2.0, open_=n % 2 == 0)
    text = generate_latest(metrics.registry).decode()
    assert text.count("rea_budget_limit{") == BUDGET_CAMPAIGNS_KEPT
    assert 'campaign="c0"' not in text and f'campaign="c{BUDGET_CAMPAIGNS_KEPT + 4}"' in text


def test_a_service_start_is_counted_once_it_serves() -> None:
    metrics = Metrics()
    assert "rea_service_starts_total{" not in generate_latest(metrics.registry).decode()
    metrics.up.labels(service="planner").set(1)  # what rea.runtime.serve does once started
    assert metrics.registry.get_sample_value("rea_service_starts_total", {"service": "planner"}) == 1.0
    started = metrics.registry.get_sample_value("rea_service_start_time_seconds", {"service": "planner"})
    assert started == metrics.started_at
