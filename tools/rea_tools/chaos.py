"""The fault-injection suite (`rea chaos`): run campaigns on a private embedded stack while
killing services, restarting the broker, replaying events, feeding garbage, stopping the whole
stack (as `rea down && rea up` does) and killing all of it with SIGKILL — then check that nothing
was lost, executed twice, overspent or crashed.

Executions and their CPU are counted from the workers' own logs (:mod:`rea.executions`), not
from the records the services keep; each fault is counted where it took effect (a runbook entry
for a failed job, a dead letter for a malformed message), so a run whose faults did not land
fails instead of passing.

Everything is seeded and bounded in time; traffic goes only to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from rich.console import Console
from rich.table import Table

from rea.client import Client
from rea.events import FINISHED_JOB_STATUSES, CampaignRequested
from rea.executions import audit, executions_from_logs
from rea.grants import own_terms
from rea.ledger import JobLedger
from rea.runtime import ensure_topics
from rea.settings import Settings
from rea.topics import Topics
from rea_tools.stack import SERVICES, EmbeddedStack

FINAL = frozenset({"completed", "failed", "rejected", "paused_budget"})
MAX_MESSAGE = 900_000
GRANT = "chaos"
"""The grant the suite's campaigns run under: everything local, auto-approved."""


@dataclass(frozen=True)
class ChaosPlan:
    campaigns: int = 3
    workers: int = 2
    hypotheses: int = 3
    malformed: int = 1000
    duplicates: int = 200
    service_kills: int = 1
    broker_restarts: int = 1
    stack_restarts: int = 1
    stack_kills: int = 1
    job_faults: dict[str, float] = field(default_factory=lambda: {"oom": 0.1, "nan": 0.1, "kill": 0.1})
    dataset: str = "synthetic:rows=3000,crosses=1,strength=3"
    seed: int = 0
    timeout_s: float = 600.0


@dataclass
class ChaosReport:
    campaigns: int = 0
    completed: int = 0
    paused_for_budget: int = 0
    unfinished: list[str] = field(default_factory=list)
    results_lost: int = 0
    miscounted_phases: int = 0
    executions: int = 0
    executed_more_than_once: int = 0
    cpu_beyond_cap: float = 0.0
    overspend_cpu_seconds: float = 0.0
    crashes: list[str] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    landed: Counter[str] = field(default_factory=Counter)
    missed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return (
            not self.unfinished
            and self.results_lost == 0
            and self.miscounted_phases == 0
            and self.executions > 0
            and self.executed_more_than_once == 0
            and self.cpu_beyond_cap == 0
            and self.overspend_cpu_seconds == 0
            and not self.crashes
            and not self.missed
        )

    def table(self) -> Table:
        table = Table("check", "value", title=f"rea chaos: {'PASSED' if self.passed else 'FAILED'}")
        table.add_row("campaigns completed", f"{self.completed} of {self.campaigns}")
        table.add_row("campaigns paused for budget (by design)", str(self.paused_for_budget))
        table.add_row("campaigns unfinished", str(len(self.unfinished)))
        table.add_row("results lost", str(self.results_lost))
        table.add_row("phases whose spend is not their jobs' charges", str(self.miscounted_phases))
        table.add_row("job processes started (workers' logs)", str(self.executions))
        table.add_row("jobs executed more than once", str(self.executed_more_than_once))
        table.add_row("CPU beyond the cap (CPU-s, workers' measure)", f"{self.cpu_beyond_cap:g}")
        table.add_row("overspend (CPU-s, accounted)", f"{self.overspend_cpu_seconds:g}")
        table.add_row("service crashes", str(len(self.crashes)))
        table.add_row("faults that did not land", str(len(self.missed)))
        for kind, count in sorted(self.faults.items()):
            table.add_row(f"faults injected: {kind}", str(count))
        for kind, count in sorted(self.landed.items()):
            table.add_row(f"faults seen landing: {kind}", str(count))
        table.add_row("seconds", f"{self.seconds:.0f}")
        return table


def hostile_messages(rng: random.Random, count: int) -> list[bytes]:
    """Bad JSON, wrong types, unknown types and versions, huge payloads, binary noise."""
    envelope = {
        "event_id": "x",
        "campaign_id": "c",
        "correlation_id": "c",
        "occurred_at": "2026-01-01T00:00:00Z",
    }
    makers = [
        lambda: bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64))),
        lambda: b'{"type": "campaign.requested", "payload": ',
        lambda: json.dumps({**envelope, "type": f"no.such.{rng.randint(0, 99)}", "version": 1}).encode(),
        lambda: json.dumps(
            {**envelope, "type": "job.completed", "version": rng.randint(2, 99), "payload": {}}
        ).encode(),
        lambda: json.dumps(
            {**envelope, "type": "job.completed", "version": 1, "payload": {"spec": 7}}
        ).encode(),
        lambda: json.dumps(
            {**envelope, "type": "phase.started", "version": 1, "campaign_id": ["x"]}
        ).encode(),
        lambda: json.dumps([rng.random() for _ in range(10)]).encode(),
        lambda: b"null",
        lambda: json.dumps({**envelope, "type": "campaign.requested", "payload": "x" * MAX_MESSAGE}).encode(),
    ]
    huge = len(makers) - 1
    picks = [rng.randrange(huge) for _ in range(count - 3)] + [huge] * 3
    return [makers[i]() for i in picks]


class Chaos:
    def __init__(self, plan: ChaosPlan, home: Path, console: Console) -> None:
        self.plan = plan
        self.rng = random.Random(plan.seed)
        self.console = console
        self.settings = Settings(home=home, topic_partitions=3)
        self.stack = EmbeddedStack(self.settings, attached=True)
        self.service_env = {"REA_INJECT_FAULTS": json.dumps(plan.job_faults), "REA_LEASE_TTL_S": "3"}
        self.report = ChaosReport(campaigns=plan.campaigns)
        self.client: Client

    async def run(self) -> ChaosReport:
        started = time.monotonic()
        try:
            endpoints = self.stack.start_infra()
            await ensure_topics(endpoints.kafka_bootstrap, Topics(self.settings.topic_prefix), 3)
        except BaseException:  # an interrupt, above all: what did start must stop
            self.stack.stop()
            raise
        self.client = Client(self.settings, endpoints)
        try:
            self.stack.start_services(self.plan.workers, env=self.service_env)
            ids = [await self._submit(self.client, index) for index in range(self.plan.campaigns)]
            deadline = started + self.plan.timeout_s
            # A request is the submitter's until the planner holds it durably (the embedded
            # broker's log is memory only); the faults start once every campaign is accepted.
            await self._wait(self.client, ids, deadline, accepted=True)
            # Garbage first, until the dead letters are recorded: the embedded broker keeps its log
            # in memory, so a restart would lose malformed messages no consumer had read yet.
            await self._feed_garbage(self.client)
            await self._dead_lettered(self.client, deadline)
            await self._havoc(deadline)
            await self._stack_faults(ids, deadline)
            await self._wait(self.client, ids, deadline)
            await self._check(self.client, ids)
        finally:
            try:
                await self.client.close()
            finally:
                self.stack.stop()
        self.report.seconds = time.monotonic() - started
        return self.report

    async def _submit(self, client: Client, index: int) -> str:
        """The last campaign gets a budget with no room for retries: it may pause, as designed.
        Ids derive from the seed, so the faults drawn for each job are the same every run."""
        campaign_id = f"chaos-{self.plan.seed}-{index}"
        budget = 55 if index == self.plan.campaigns - 1 else 2000
        request: dict[str, Any] = {
            "name": f"chaos {index}",
            "dataset": self.plan.dataset,
            "grant": GRANT,
            "budget_cpu_seconds": budget,
            "max_parallel_jobs": 2,
            "max_hypotheses": self.plan.hypotheses,
            "max_exploitation_trials": 2,
            "baseline": {"epochs": 1},
            "job_timeout_s": 120,
        }
        await client.ensure_grant(
            GRANT, own_terms(self.settings, 2000, team="chaos", auto_approve_up_to=2000)
        )
        await client.publish(
            CampaignRequested(campaign_id=campaign_id, correlation_id=campaign_id, payload=request)
        )
        return campaign_id

    async def _havoc(self, deadline: float) -> None:
        """Kill -9 each service in turn at random moments, restart it; restart the broker; replay events."""
        victims = [*SERVICES, *(f"worker-{i}" for i in range(self.plan.workers))] * self.plan.service_kills
        actions: list[str] = victims + ["broker"] * self.plan.broker_restarts
        self.rng.shuffle(actions)
        for action in actions:
            await asyncio.sleep(self.rng.uniform(1.0, 4.0))
            if time.monotonic() > deadline:
                return
            self._note_crashes()
            if action == "broker":
                self.stack.restart_broker()
                self.report.faults["broker restarts"] += 1
            else:
                self._kill_and_restart(action)
                self.report.faults["service kills (-9)"] += 1
            self.report.faults["events replayed"] += await self._replay(self.client)

    async def _stack_faults(self, ids: list[str], deadline: float) -> None:
        """Stop the whole stack under running campaigns and bring it up again on the same data:
        SIGKILL to every process at once (a node that died), then a clean stop (`rea down &&
        rea up`). A fault planned after every campaign finished is reported as not landed."""
        faults = ["stack kills (-9 all)"] * self.plan.stack_kills + [
            "stack restarts"
        ] * self.plan.stack_restarts
        for fault in faults:
            await asyncio.sleep(self.rng.uniform(1.0, 3.0))
            if time.monotonic() > deadline:
                return
            states = [await self.client.campaign(campaign_id) for campaign_id in ids]
            if all(state is not None and state.status in FINAL for state in states):
                self.report.missed.append(f"{fault}: every campaign had finished before it")
                continue
            self._note_crashes()
            await self.client.close()
            if fault.startswith("stack kills"):
                for process in self.stack.processes:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
            self.stack.stop()
            endpoints = self.stack.start_infra()
            await ensure_topics(endpoints.kafka_bootstrap, Topics(self.settings.topic_prefix), 3)
            self.stack.start_services(self.plan.workers, env=self.service_env)
            self.client = Client(self.settings, endpoints)
            self.report.faults[fault] += 1

    def _note_crashes(self) -> None:
        """A service that exited on its own, before any fault was aimed at it, is a crash."""
        for name, proc in list(self.stack.children.items()):
            if proc.poll() is not None:
                self.report.crashes.append(f"{name} exited with {proc.returncode}")
                service = "worker" if name.startswith("worker") else name
                if service in (*SERVICES, "worker"):
                    self.stack.stop_process(name)
                    self.stack.start_service(service, name, env=self.service_env)

    def _kill_and_restart(self, name: str) -> None:
        self.stack.stop_process(name, signal.SIGKILL)
        service = "worker" if name.startswith("worker") else name
        self.stack.start_service(service, name, env=self.service_env)

    async def _replay(self, client: Client) -> int:
        """Re-deliver already-published events, shuffled: duplicates and reordering at once.
        The outbox holds each event's exact bytes, topic and key."""
        sample = self.plan.duplicates // max(1, self.plan.campaigns * 3)
        recent = [
            doc
            async for doc in client.db["outbox"].find({"published": True}).sort("created_at", -1).limit(200)
        ]
        docs = self.rng.sample(recent, min(sample, len(recent)))  # shuffled: replayed out of order
        for doc in docs:
            await _send_retrying(client.send, doc["topic"], bytes(doc["key"]), bytes(doc["value"]))
        return len(docs)

    async def _feed_garbage(self, client: Client) -> None:
        topics = [t for t in client.topics.all() if t != client.topics.dead_letter]
        producer = AIOKafkaProducer(
            bootstrap_servers=client.endpoints.kafka_bootstrap, max_request_size=2**21
        )
        await producer.start()

        async def send(topic: str, key: bytes, value: bytes) -> None:
            await producer.send_and_wait(topic, value, key=key)

        try:
            for raw in hostile_messages(self.rng, self.plan.malformed):
                topic = self.rng.choice(topics)
                await _send_retrying(send, topic, b"chaos", raw)
                self.report.faults["malformed messages"] += 1
        finally:
            await producer.stop()

    async def _dead_lettered(self, client: Client, deadline: float) -> None:
        """Wait (bounded) until every malformed message sent is in the dead-letter collection."""
        sent = self.report.faults["malformed messages"]
        until = min(deadline, time.monotonic() + 120)
        while time.monotonic() < until and await client.db["dead_letters"].count_documents({}) < sent:
            await asyncio.sleep(0.5)

    async def _wait(self, client: Client, ids: list[str], deadline: float, accepted: bool = False) -> None:
        while time.monotonic() < deadline:
            states = [await client.campaign(campaign_id) for campaign_id in ids]
            if all(state is not None and (accepted or state.status in FINAL) for state in states):
                return
            await asyncio.sleep(0.5)

    async def _recorded(self, client: Client, campaign_id: str, expected: int) -> list[dict[str, Any]]:
        """The logger records on its own schedule: give it a bounded while to catch up."""
        deadline = time.monotonic() + 90
        rows = await client.results(campaign_id)
        while len(rows) < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            rows = await client.results(campaign_id)
        return rows

    async def _check(self, client: Client, ids: list[str]) -> None:
        self._note_crashes()
        ledger = JobLedger(client.db["job_runs"])
        runs = [run for campaign_id in ids for run in await ledger.of_campaign(campaign_id)]
        measured = audit(executions_from_logs(self.stack.home / "logs"), runs)
        self.report.executions = len(measured.executions)
        self.report.executed_more_than_once = len(measured.repeated())
        for campaign_id in ids:
            state = await client.campaign(campaign_id)
            status = state.status if state else "missing"
            if status == "completed":
                self.report.completed += 1
            elif status == "paused_budget":
                self.report.paused_for_budget += 1
            else:
                self.report.unfinished.append(f"{campaign_id}: {status}")
            cap = state.budget_cpu_seconds() if state is not None else None
            if cap is not None:
                used = measured.cpu_by_campaign.get(campaign_id, 0.0)
                self.report.cpu_beyond_cap += round(max(0.0, used - cap), 3)
            phases = await client.phases(campaign_id)
            finished = [job for phase in phases for job in phase.jobs if job.status in FINISHED_JOB_STATUSES]
            rows = await self._recorded(client, campaign_id, len(finished))
            recorded = {row["_id"] for row in rows}
            self.report.results_lost += sum(1 for job in finished if job.spec.job_id not in recorded)
            for phase in phases:
                charged = sum(
                    job.output.cost.cpu_seconds if job.output and job.output.cost else 0.0
                    for job in phase.jobs
                    if job.status in FINISHED_JOB_STATUSES
                )
                if abs(charged - phase.spent_cpu_seconds) > 1e-6:  # a result counted twice, or not at all
                    self.report.miscounted_phases += 1
                # Each phase's cap is what the campaign's budget had left when the phase started.
                self.report.overspend_cpu_seconds += max(
                    0.0, phase.spent_cpu_seconds - phase.budget_cpu_seconds
                )
                for entry in phase.runbook:
                    self.report.landed[f"job failures in the runbook: {entry.failure}"] += 1
        await self._check_faults_landed(client)

    async def _check_faults_landed(self, client: Client) -> None:
        """Each kind of fault must show where it takes effect, or the run proves nothing."""
        letters = await client.db["dead_letters"].count_documents({})
        self.report.landed["dead letters recorded"] = letters
        sent = self.report.faults["malformed messages"]
        if letters < sent:
            self.report.missed.append(f"{sent} malformed messages sent, {letters} dead letters recorded")
        job_failures = sum(n for kind, n in self.report.landed.items() if kind.startswith("job failures"))
        if any(self.plan.job_faults.values()) and job_failures == 0:
            self.report.missed.append("job faults were drawn, but no failure reached the runbook")
        for kind in ("service kills (-9)", "broker restarts", "stack kills (-9 all)", "stack restarts"):
            planned = {
                "service kills (-9)": self.plan.service_kills * (len(SERVICES) + self.plan.workers),
                "broker restarts": self.plan.broker_restarts,
                "stack kills (-9 all)": self.plan.stack_kills,
                "stack restarts": self.plan.stack_restarts,
            }[kind]
            if self.report.faults[kind] < planned and not any(m.startswith(kind) for m in self.report.missed):
                self.report.missed.append(f"{kind}: {self.report.faults[kind]} of {planned} injected")


async def _send_retrying(
    send: Callable[[str, bytes, bytes], Awaitable[Any]],
    topic: str,
    key: bytes,
    value: bytes,
    attempts: int = 60,
) -> None:
    """The broker may be restarting under us: try again shortly, for up to ~15 s."""
    for attempt in range(attempts):
        try:
            await send(topic, key, value)
            return
        except Exception:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.25)


async def run_chaos(plan: ChaosPlan, home: Path, console: Console | None = None) -> ChaosReport:
    return await Chaos(plan, home, console or Console(stderr=True)).run()
