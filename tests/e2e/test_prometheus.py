"""The dashboards and alert rules against a real Prometheus scraping a real embedded stack: after
one small campaign, every query of every Grafana panel returns data, and so does every alert
rule's watched quantity; Prometheus itself loads the rules and evaluates them without error.

The rule for alert expressions (:func:`tests.unit.test_observability.at_rest`): an alert is a
condition that is normally false, so its expression alone returns nothing at rest. Each
comparison is evaluated as a ``bool`` comparison instead (``x > 0.9`` becomes ``x > bool 0.9``:
0 or 1 for every series of ``x``), and ``absent(x)`` as ``(x)``; the result must not be empty,
which proves every metric the rule reads is scraped with the labels it matches on.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from rea.client import Client
from rea_tools.stack import EmbeddedStack, free_port

from ..unit.test_observability import ALERTS, alert_rules, at_rest, panel_queries
from .helpers import campaign_request, finished, submit

pytestmark = pytest.mark.e2e

SCRAPE_INTERVAL = "1s"
INSTALL_TIMEOUT_S = 600


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    """Debian's Prometheus, installed with apt-get when it is missing (the test skips, saying
    why, only when that fails: no apt-get, not root, no package index reachable)."""
    found = shutil.which("prometheus")
    if found:
        return found
    if shutil.which("apt-get") is None:
        pytest.skip("Prometheus is not installed and there is no apt-get to install it with")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"],
    )
    for argv in steps:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, env=env)
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"Prometheus is not installed and `{' '.join(argv)}` failed: {exc}")
        if done.returncode != 0:
            pytest.skip(f"Prometheus is not installed and `{' '.join(argv)}` failed: {done.stderr[-500:]}")
    found = shutil.which("prometheus")
    if not found:
        pytest.skip("`apt-get install prometheus` succeeded but no prometheus binary is on PATH")
    return found


@contextmanager
def running_prometheus(binary: str, targets: list[str], home: Path) -> Iterator[str]:
    """Prometheus scraping ``targets`` every second with REA's alert rules loaded; yields its URL."""
    home.mkdir(parents=True, exist_ok=True)
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [{"job_name": "rea", "static_configs": [{"targets": targets}]}],
    }
    (home / "prometheus.yml").write_text(yaml.safe_dump(config))
    address = f"127.0.0.1:{free_port()}"
    log = home / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={home / 'prometheus.yml'}",
                f"--storage.tsdb.path={home / 'tsdb'}",
                f"--web.listen-address={address}",
                "--log.level=warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://{address}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"Prometheus exited ({proc.returncode}):\n{log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"Prometheus not ready in 60 s:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def query(http: httpx.AsyncClient, expr: str) -> list[dict[str, Any]]:
    answer = await http.get("/api/v1/query", params={"query": expr})
    body = answer.json()
    assert answer.status_code == 200 and body["status"] == "success", f"{expr!r}: {body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def value(http: httpx.AsyncClient, expr: str) -> float:
    """The single value of a scalar-like query, 0 when it has no data."""
    result = await query(http, expr)
    return float(result[0]["value"][1]) if result else 0.0


async def until(http: httpx.AsyncClient, expr: str, minimum: float, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while (seen := await value(http, expr)) < minimum:
        if time.monotonic() > deadline:
            raise AssertionError(f"{expr} stayed at {seen} < {minimum} for {timeout_s:.0f} s")
        await asyncio.sleep(1)


async def test_every_dashboard_query_and_alert_has_data_in_a_real_prometheus(
    services: EmbeddedStack, client: Client, prometheus_binary: str, tmp_path: Path
) -> None:
    services.start_services(workers=2)
    targets = [f"127.0.0.1:{p.metrics_port}" for p in services.processes if p.metrics_port]
    assert len(targets) >= 6  # logger, hypothesis, planner, executor, two workers (and a launcher)
    with running_prometheus(prometheus_binary, targets, tmp_path / "prometheus") as url:
        async with httpx.AsyncClient(base_url=url, timeout=15) as http:
            await until(http, "sum(up)", len(targets), 120)  # every service serves its metrics
            await until(http, "count(rea_up == 1)", len(targets), 30)

            request = campaign_request(max_hypotheses=2, max_parallel_jobs=1)  # each result wakes it
            campaign_id = await submit(client, request)
            state = await finished(client, campaign_id, timeout_s=180)
            assert state.status == "completed", state.reasons

            # The planner counts campaigns every 10 s; the logger records on its own schedule.
            await until(http, 'sum(rea_campaigns{status="completed"})', 1, 45)
            await until(http, 'sum(rea_insights_written_total{collection="results"})', 3, 45)
            await until(http, "sum(rea_wake_seconds_count)", 1, 15)
            await asyncio.sleep(3)  # a few more scrapes, so every rate has two samples

            empty: list[str] = []
            panels = panel_queries()
            for where, expr in panels:
                if not await query(http, expr):
                    empty.append(f"{where}: {expr}")
            rules = alert_rules()
            for rule in rules:
                if not await query(http, at_rest(rule["expr"])):
                    empty.append(f"alert {rule['alert']}: {at_rest(rule['expr'])}")
            assert not empty, "queries without data:\n" + "\n".join(empty)

            budget = f'rea_budget_limit{{campaign="{campaign_id}",resource="cpu_seconds"}}'
            assert await value(http, budget) > 0
            assert await value(http, 'sum(rea_job_transitions_total{state="completed"})') >= 3
            assert await value(http, "sum(rea_service_starts_total)") == len(targets)

            loaded = (await http.get("/api/v1/rules")).json()["data"]["groups"]
            evaluated = {rule["name"]: rule for group in loaded for rule in group["rules"]}
            assert set(evaluated) == {rule["alert"] for rule in rules}
            broken = {
                name: rule.get("lastError") for name, rule in evaluated.items() if rule["health"] != "ok"
            }
            assert not broken, broken
            firing = {rule["name"] for rule in evaluated.values() if rule["state"] != "inactive"}
            print(
                f"checked {len(panels)} dashboard queries and {len(rules)} alert expressions "
                f"against {len(targets)} scraped services; pending or firing: {sorted(firing) or 'none'}"
            )
