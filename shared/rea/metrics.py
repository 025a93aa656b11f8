"""Prometheus metrics shared by every service, each process with its own registry, served with
the health probes (``/healthz``, ``/readyz``) that an orchestrator (Kubernetes, the embedded
stack's supervisor) asks."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

STALE_AFTER_S = 30.0
"""A service whose event loop has not beaten for this long is not alive (a stuck loop still
answers HTTP: the server runs on its own thread)."""

BUDGET_CAMPAIGNS_KEPT = 200
"""The budget gauges (the only families labelled by campaign) keep the campaigns this process
set most recently, at most this many: the oldest one's series are removed past it."""
WAKE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
JOB_DURATION_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


class Health:
    """Liveness from the event loop's heartbeat; readiness once the service consumes events."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.last_beat = clock()
        self.ready = False

    def beat(self) -> None:
        self.last_beat = self.clock()

    def alive(self) -> bool:
        return self.clock() - self.last_beat < STALE_AFTER_S

    def answer(self, path: str) -> tuple[str, bytes] | None:
        """The probe's HTTP status and body, or None for a path that is not a probe."""
        if path == "/healthz":
            ok = self.alive()
        elif path == "/readyz":
            ok = self.ready and self.alive()
        else:
            return None
        return ("200 OK", b"ok\n") if ok else ("503 Service Unavailable", b"not ok\n")


class Metrics:
    """The metric families every REA process exposes; services add their own to ``registry``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events_consumed = Counter(
            "rea_events_consumed_total",
            "Events handled, by type.",
            ["service", "type"],
            registry=self.registry,
        )
        self.handler_seconds = Histogram(
            "rea_handler_seconds",
            "Time spent in event handlers.",
            ["service", "type"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "rea_dead_letters_total",
            "Messages sent to the dead-letter topic.",
            ["service", "topic"],
            registry=self.registry,
        )
        self.outbox_published = Counter(
            "rea_outbox_published_total", "Outbox entries published.", ["service"], registry=self.registry
        )
        self.jobs = Counter(
            "rea_jobs_total",
            "Jobs by lifecycle step and outcome.",
            ["service", "outcome"],
            registry=self.registry,
        )
        self.job_cpu_seconds = Counter(
            "rea_job_cpu_seconds_total",
            "CPU seconds spent by training jobs.",
            ["service"],
            registry=self.registry,
        )
        self.up = Gauge("rea_up", "1 while the service runs.", ["service"], registry=self.registry)
        self.health = Health()
        # Added for the dashboards and alerts (docs/metrics.md); every family has `service`.
        self.started_at = time.time()
        self.registry.register(_Starts(self.up, self.started_at))
        self.wake_seconds = Histogram(
            "rea_wake_seconds",
            "Executor: from a job.completed/job.failed handled to the next job.submitted decided.",
            ["service"],
            buckets=WAKE_BUCKETS,
            registry=self.registry,
        )
        self.campaigns = Gauge(
            "rea_campaigns",
            "Planner: campaigns by status and phase kind (counted from the campaigns collection).",
            ["service", "status", "phase"],
            registry=self.registry,
        )
        self.job_transitions = Counter(
            "rea_job_transitions_total",
            "Executor: jobs reaching a state (submitted, started, completed, failed by kind), by backend.",
            ["service", "state", "backend", "kind"],
            registry=self.registry,
        )
        self.job_duration = Histogram(
            "rea_job_duration_seconds",
            "Job side: wall time of the jobs this process ran, by backend and outcome.",
            ["service", "backend", "outcome"],
            buckets=JOB_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.runbook_actions = Counter(
            "rea_runbook_actions_total",
            "Executor: runbook decisions on failed jobs, by failure kind and action (give_up: for good).",
            ["service", "failure", "action"],
            registry=self.registry,
        )
        budget_labels = ["service", "campaign", "resource"]
        self.budget_limit = Gauge(
            "rea_budget_limit",
            "Executor: the budget of the campaign's current phase (what the guardrail enforces).",
            budget_labels,
            registry=self.registry,
        )
        self.budget_spent = Gauge(
            "rea_budget_spent",
            "Executor: what the campaign's current phase has spent.",
            budget_labels,
            registry=self.registry,
        )
        self.budget_reserved = Gauge(
            "rea_budget_reserved",
            "Executor: spent plus the estimates of the jobs in flight, in the current phase.",
            budget_labels,
            registry=self.registry,
        )
        self.budget_remaining = Gauge(
            "rea_budget_remaining",
            "Executor: the current phase's budget less what is reserved (room for new jobs).",
            budget_labels,
            registry=self.registry,
        )
        self.budget_open = Gauge(
            "rea_budget_open",
            "Executor: 1 while the campaign's current phase is not concluded, else 0.",
            budget_labels,
            registry=self.registry,
        )
        self._budget_keys: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self.consumer_wakes = Counter(
            "rea_consumer_wakes_total",
            "Doorbell: sleeping consumers woken, by cause (ring, handler, glance, reconnect).",
            ["service", "cause"],
            registry=self.registry,
        )
        self.consumers_asleep = Gauge(
            "rea_consumers_asleep",
            "Doorbell: this process's consumers that are paused, fetching nothing, until a ring.",
            ["service"],
            registry=self.registry,
        )
        self.doorbell_failures = Counter(
            "rea_doorbell_failures_total",
            "Doorbell: rings that could not be sent (Redis away); their events wait for a glance.",
            ["service"],
            registry=self.registry,
        )
        self.insights_written = Counter(
            "rea_insights_written_total",
            "Logger: documents written to the insights DB, by collection.",
            ["service", "collection"],
            registry=self.registry,
        )
        self.kernel_candidates = Counter(
            "rea_kernel_candidates_total",
            "KernelEvolve: candidate kernels evaluated, by target and verdict.",
            ["service", "target", "verdict"],
            registry=self.registry,
        )
        self.kernel_searches = Counter(
            "rea_kernel_searches_total",
            "KernelEvolve: searches ended, by status (published, failed).",
            ["service", "status"],
            registry=self.registry,
        )

    def set_budget(
        self,
        service: str,
        campaign: str,
        *,
        limit: float,
        spent: float,
        reserved: float,
        open_: bool,
        resource: str = "cpu_seconds",
    ) -> None:
        """Set the budget gauges of ``campaign``; past ``BUDGET_CAMPAIGNS_KEPT`` campaigns, the
        series of the one set longest ago are removed (bounded cardinality)."""
        key = (service, campaign, resource)
        self._budget_keys[key] = None
        self._budget_keys.move_to_end(key)
        values = (
            (self.budget_limit, limit),
            (self.budget_spent, spent),
            (self.budget_reserved, reserved),
            (self.budget_remaining, limit - reserved),
            (self.budget_open, 1.0 if open_ else 0.0),
        )
        for gauge, value in values:
            gauge.labels(*key).set(value)
        while len(self._budget_keys) > BUDGET_CAMPAIGNS_KEPT:
            oldest, _ = self._budget_keys.popitem(last=False)
            for gauge, _value in values:
                gauge.remove(*oldest)

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Expose ``/metrics``, ``/healthz`` and ``/readyz`` on ``port`` (0 = do not serve)."""
        if not port:
            return
        metrics = make_wsgi_app(self.registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            probe = self.health.answer(environ.get("PATH_INFO", ""))
            if probe is None:
                return metrics(environ, start_response)
            status, body = probe
            start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
            return [body]

        server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_SilentHandler)
        threading.Thread(target=server.serve_forever, daemon=True, name="metrics").start()


class _Starts(Collector):
    """``rea_service_starts_total`` (1 per start of a process) and ``rea_service_start_time_seconds``
    for each service this process runs as. A service has started when :func:`rea.runtime.serve`
    sets its ``rea_up``, so the starts are read from that gauge: no service counts itself.

    A restarted process starts its counter at 1 again, so restarts are counted with
    ``changes(rea_service_start_time_seconds[1h])`` (each start sets a new time)."""

    def __init__(self, up: Gauge, started_at: float) -> None:
        self.up = up
        self.started_at = started_at

    def _families(self) -> tuple[CounterMetricFamily, GaugeMetricFamily]:
        return (
            CounterMetricFamily(
                "rea_service_starts", "Starts of this service process (1 once it serves).", labels=["service"]
            ),
            GaugeMetricFamily(
                "rea_service_start_time_seconds",
                "Unix time this service process started; a change is a restart.",
                labels=["service"],
            ),
        )

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        starts, start_time = self._families()
        samples = [sample for family in self.up.collect() for sample in family.samples]
        services = sorted({sample.labels["service"] for sample in samples})
        for service in services:
            starts.add_metric([service], 1.0, created=self.started_at)
            start_time.add_metric([service], self.started_at)
        yield starts
        yield start_time
