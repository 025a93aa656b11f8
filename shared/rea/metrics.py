"""Prometheus metrics shared by every service, each process with its own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


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

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Expose ``/metrics`` on ``port`` (0 = do not serve)."""
        if port:
            start_http_server(port, addr=host, registry=self.registry)
