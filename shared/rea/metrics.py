"""Prometheus metrics shared by every service, each process with its own registry, served with
the health probes (``/healthz``, ``/readyz``) that an orchestrator (Kubernetes, the embedded
stack's supervisor) asks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

STALE_AFTER_S = 30.0
"""A service whose event loop has not beaten for this long is not alive (a stuck loop still
answers HTTP: the server runs on its own thread)."""


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
