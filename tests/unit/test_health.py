"""The health probes every service serves beside its metrics."""

from __future__ import annotations

import httpx

from rea.metrics import STALE_AFTER_S, Health, Metrics
from rea_tools.stack import free_port


def test_liveness_follows_the_event_loop_heartbeat_and_readiness_needs_both() -> None:
    now = [0.0]
    health = Health(clock=lambda: now[0])
    assert health.answer("/healthz") == ("200 OK", b"ok\n")
    assert health.answer("/readyz") == ("503 Service Unavailable", b"not ok\n")
    health.ready = True
    assert health.answer("/readyz") == ("200 OK", b"ok\n")
    now[0] = STALE_AFTER_S + 1  # the loop stopped beating
    assert health.answer("/healthz") == health.answer("/readyz") == ("503 Service Unavailable", b"not ok\n")
    health.beat()
    assert health.answer("/healthz") == ("200 OK", b"ok\n")
    assert health.answer("/metrics") is None


def test_the_metrics_port_answers_probes_and_metrics() -> None:
    metrics, port = Metrics(), free_port()
    metrics.up.labels(service="t").set(1)
    metrics.serve(port)
    base = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{base}/healthz").status_code == 200
    assert httpx.get(f"{base}/readyz").status_code == 503
    metrics.health.ready = True
    assert httpx.get(f"{base}/readyz").status_code == 200
    assert 'rea_up{service="t"} 1.0' in httpx.get(f"{base}/metrics").text
