"""What the benchmarks share: an embedded stack in a temporary home, realistic events,
Kafka and MongoDB clients, percentiles and process memory (tables: :mod:`rea_bench.output`).

Every benchmark starts its own stack (Tansu, SecantusDB, redis-server on 127.0.0.1) under a
fresh temporary ``REA_HOME`` with its own topic prefix and database, starts only the REA
service processes it measures, and stops all of it in ``finally``.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition
from pymongo import AsyncMongoClient

from rea.endpoints import Endpoints
from rea.events import (
    Envelope,
    JobCompleted,
    JobFinishedPayload,
    JobSpec,
    PhasePlan,
    PhaseStarted,
    PhaseStartedPayload,
    encode_event,
)
from rea.runtime import ensure_topics
from rea.settings import Settings
from rea.topics import Topics
from rea.workloads import EpochRecord, JobCost, JobOutput, SplitMetrics
from rea_bench.output import console, print_table
from rea_tools.stack import EmbeddedStack
from rea_workload import WORKLOAD

Doc = dict[str, Any]
SERVICE_START_TIMEOUT_S = 90.0
PHASE = "validation"


def run(main: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run``, with SIGTERM treated like Ctrl-C so the stack is stopped either way."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    asyncio.run(main)


# ---- the stack ------------------------------------------------------------------------


@dataclass
class Bench:
    """A running embedded stack with this benchmark's private namespace."""

    stack: EmbeddedStack
    settings: Settings
    endpoints: Endpoints
    topics: Topics

    async def start_service(self, service: str, fetch_max_wait_ms: int | None = None) -> int:
        """Start ``python -m rea_tools service <service>``; wait until it reports started; return its pid.

        ``fetch_max_wait_ms`` overrides the service's ``REA_KAFKA_FETCH_MAX_WAIT_MS`` (a what-if).
        """
        env = None if fetch_max_wait_ms is None else {"REA_KAFKA_FETCH_MAX_WAIT_MS": str(fetch_max_wait_ms)}
        self.stack.start_service(service, env=env)
        proc = self.stack.children[service]
        log = self.stack.home / "logs" / f"{service}.log"

        async def started() -> bool:
            self.check_alive(service)
            return log.exists() and "service_started" in log.read_text(errors="replace")

        await wait_until(started, f"the {service} service to start", SERVICE_START_TIMEOUT_S, poll_s=0.2)
        return proc.pid

    def pid(self, name: str) -> int:
        """The pid of a process of the stack: a service, "tansu", "secantusdb" or "redis"."""
        return self.stack.children[name].pid

    def check_alive(self, service: str) -> None:
        proc = self.stack.children[service]
        if proc.poll() is not None:
            log = self.stack.home / "logs" / f"{service}.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{service} exited with code {proc.returncode}:\n{tail}")

    def mongo(self) -> AsyncMongoClient[Doc]:
        return AsyncMongoClient(self.endpoints.mongo_uri, tz_aware=True, serverSelectionTimeoutMS=10_000)


@asynccontextmanager
async def embedded_stack(name: str, *, partitions: int = 6, keep: bool = False) -> AsyncIterator[Bench]:
    """Start Tansu, SecantusDB and redis-server in a temporary home; always stop them afterwards."""
    home = Path(tempfile.mkdtemp(prefix=f"rea-bench-{name}-"))
    namespace = f"bench{uuid4().hex[:8]}"
    settings = Settings(
        home=home,
        kafka_bootstrap=None,
        mongo_uri=None,
        redis_url=None,
        topic_prefix=namespace,
        mongo_db=namespace,
        topic_partitions=partitions,
        embedded_auth=False,  # measured without credentials, as before; the benchmarks' clients use none
    )
    stack = EmbeddedStack(settings, attached=True)
    try:
        with console.status("starting Tansu, SecantusDB and redis-server"):
            endpoints = stack.start_infra()
            topics = Topics(namespace)
            await ensure_topics(endpoints.kafka_bootstrap, topics, partitions)
        yield Bench(stack, settings, endpoints, topics)
    finally:
        with console.status("stopping the stack"):
            stack.stop()
        if keep:
            console.print(f"[dim]kept {home} (logs in {home / 'logs'})[/dim]")
        else:
            shutil.rmtree(home, ignore_errors=True)


async def wait_until(
    check: Callable[[], Awaitable[bool]], what: str, timeout_s: float, poll_s: float = 0.25
) -> float:
    """Poll ``check`` until it is true; returns the seconds it took, raises TimeoutError past the limit."""
    start = time.monotonic()
    while True:
        if await check():
            return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        await asyncio.sleep(poll_s)


# ---- Kafka ----------------------------------------------------------------------------


@asynccontextmanager
async def kafka_producer(bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    """A plain producer (no idempotence: Tansu does not support it; no linger)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=0)
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


async def publish(producer: AIOKafkaProducer, topics: Topics, event: Envelope) -> None:
    """Publish one event where REA publishes it (its topic and key) and wait for the broker's ack."""
    await producer.send_and_wait(topics.for_event(event.type), encode_event(event), key=event.key())


async def publish_many(
    producer: AIOKafkaProducer, topic: str, messages: Sequence[tuple[bytes, bytes]], chunk: int = 1000
) -> dict[TopicPartition, int]:
    """Publish (key, value) pairs as fast as the producer batches them, ``chunk`` acks at a time.

    Returns the end offset each partition has after them (as the broker acknowledged it).
    """
    ends: dict[TopicPartition, int] = {}
    for start in range(0, len(messages), chunk):
        futures = [
            await producer.send(topic, value, key=key) for key, value in messages[start : start + chunk]
        ]
        for meta in await asyncio.gather(*futures):
            tp = TopicPartition(meta.topic, meta.partition)
            ends[tp] = max(ends.get(tp, 0), meta.offset + 1)
    return ends


async def consumer_group_lag(bootstrap: str, group: str, ends: dict[TopicPartition, int]) -> int:
    """How many messages below ``ends`` consumer group ``group`` has not committed yet.

    The ends come from the producer's acknowledgements: Tansu's ListOffsets answer is not
    the log end for batched partitions, while its OffsetFetch is exact.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group, partitions=list(ends))
    finally:
        await admin.close()
    lag = 0
    for tp, end in ends.items():
        meta = committed.get(tp)
        lag += max(0, end - (meta.offset if meta is not None and meta.offset >= 0 else 0))
    return lag


# ---- events ---------------------------------------------------------------------------

RANKER_CONFIG: dict[str, Any] = WORKLOAD.schema.resolve({})


def job_spec(campaign_id: str, index: int, estimated_cpu_seconds: float = 10.0) -> JobSpec:
    """A job as the planner makes it: the reference ranker with its full resolved config."""
    return JobSpec(
        job_id=f"{campaign_id}-{PHASE}-j{index:04d}-s0",
        campaign_id=campaign_id,
        phase=PHASE,
        hypothesis_id=None if index == 0 else f"h{index:04d}",
        workload="ranker",
        dataset="synthetic:seed=0,rows=20000,crosses=1",
        config={**RANKER_CONFIG, "learning_rate": 0.001 * (1 + index % 5)},
        seed=0,
        estimated_cpu_seconds=estimated_cpu_seconds,
        timeout_s=1800.0,
        memory_mb=4096,
    )


def phase_started(campaign_id: str, jobs: int, max_parallel_jobs: int) -> PhaseStarted:
    """A phase with ``jobs`` jobs and a budget that covers all of them."""
    specs = [job_spec(campaign_id, i) for i in range(jobs)]
    estimate = sum(spec.estimated_cpu_seconds for spec in specs)
    return PhaseStarted(
        campaign_id=campaign_id,
        correlation_id=campaign_id,
        payload=PhaseStartedPayload(
            plan=PhasePlan(phase=PHASE, jobs=specs, estimated_cpu_seconds=estimate),
            budget_cpu_seconds=estimate * 2,
            max_parallel_jobs=max_parallel_jobs,
        ),
    )


def job_output(seed: int) -> JobOutput:
    """What a worker reports for a finished 3-epoch ranker job (metrics, history, cost)."""
    wobble = (seed % 97) / 10_000

    def split(rows: int) -> SplitMetrics:
        return SplitMetrics(ne=0.81 - wobble, auc=0.77 + wobble, logloss=0.55 - wobble, rows=rows)

    return JobOutput(
        status="ok",
        train=split(14_000),
        validation=split(3_000),
        test=split(3_000),
        history=[EpochRecord(epoch=e, train_loss=0.6 - 0.02 * e, val_ne=0.82 - 0.004 * e) for e in (1, 2, 3)],
        samples_per_second=51_234.5,
        parameters=123_456,
        cost=JobCost(cpu_seconds=9.5 + wobble, wall_seconds=5.2, peak_rss_mb=412.0),
    )


def job_completed(spec: JobSpec, seed: int = 0) -> JobCompleted:
    return JobCompleted(
        campaign_id=spec.campaign_id,
        correlation_id=spec.campaign_id,
        payload=JobFinishedPayload(spec=spec, output=job_output(seed), worker="bench-worker"),
    )


# ---- measurements ---------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of ``values``."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values) if values else math.nan,
    }


def ratio(value: float, reference: float) -> str:
    return "n/a" if reference <= 0 or math.isnan(reference) else f"{value / reference:.1f}x"


def rss_mb(pid: int) -> float:
    """Resident set size of a process (VmRSS from /proc/PID/status), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (from /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def utc_ms(at: datetime) -> float:
    """A datetime (as MongoDB returns it, millisecond precision) as epoch milliseconds."""
    return at.astimezone(UTC).timestamp() * 1000


# ---- profiling (optional: needs `pip install py-spy`) -----------------------------------


@asynccontextmanager
async def py_spy(pids: dict[str, int], out: Path | None, rate: int = 100) -> AsyncIterator[None]:
    """Sample the given processes with py-spy while the block runs; print where they spent time.

    Does nothing when ``out`` is None. Raw (collapsed-stack) profiles go to ``out/<name>.txt``.
    """
    if out is None:
        yield
        return
    binary = shutil.which("py-spy")
    if binary is None:
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    out.mkdir(parents=True, exist_ok=True)
    procs = {
        name: await asyncio.create_subprocess_exec(
            binary,
            "record",
            "-p",
            str(pid),
            "-r",
            str(rate),
            "-f",
            "raw",
            "-o",
            str(out / f"{name}.txt"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for name, pid in pids.items()
    }
    try:
        yield
    finally:
        for proc in procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
        for proc in procs.values():
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
    for name in pids:
        print_profile(name, out / f"{name}.txt")


def print_profile(name: str, path: Path, top: int = 12) -> None:
    """The functions a py-spy raw profile spent most samples in (inclusive), busy samples only."""
    if not path.exists():
        console.print(f"[yellow]no profile for {name} at {path}[/yellow]")
        return
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
        own[frames[-1]] = own.get(frames[-1], 0) + count
    ranked = sorted(own.items(), key=lambda item: -item[1])[:top]
    rows = [[frame, f"{100 * n / total:.1f}", f"{100 * inclusive[frame] / total:.1f}"] for frame, n in ranked]
    print_table(
        f"py-spy: {name}, {total:,} busy samples (raw profile: {path})", ["frame", "self %", "incl %"], rows
    )
