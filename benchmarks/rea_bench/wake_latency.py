"""Wake latency: a ``job.completed`` published -> the next ``job.submitted`` seen on the job queue.

Only the real executor service process runs (no workers, no planner). The benchmark plays
planner and worker: it publishes ``phase.started`` for campaigns whose phase has many jobs
and ``max_parallel_jobs=1``, reads each ``job.submitted`` from the job-queue topic and answers
it with a synthetic ``job.completed``, one at a time. Each answer wakes the hibernated phase
document, and the time until the next submission is one wake.

Peers, measured in the same run and interleaved campaign by campaign, on the same Tansu with
the same message bytes and consumer settings:

* **A, produce -> consume**: aiokafka sends one message and an idle consumer reads it.
* **B, one relay hop without a database**: the same path as a wake minus the executor's
  work: a consumer reads the message and a second producer forwards it to the topic the
  measuring consumer already waits on (consume -> produce -> consume, in-process aiokafka).

Where a wake's time goes is read back from MongoDB: the executor stamps its processed-event
marker when the handler starts, the outbox entry when the decision is made and
``published_at`` when the relay's send was acknowledged (millisecond precision).

``--fetch-max-wait-ms N`` is a what-if: the executor runs with ``REA_KAFKA_FETCH_MAX_WAIT_MS=N``
instead of the shipped setting, and the benchmark's own consumers use N too.

    python -m rea_bench.wake_latency            # small: 3 campaigns x 11 jobs = 30 wakes
    python -m rea_bench.wake_latency --full     # 20 campaigns x 51 jobs = 1,000 wakes
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition
from rich.progress import Progress

from rea.events import JobSubmitted, encode_event, new_id, parse_event
from rea.settings import Settings
from rea_bench.common import (
    Bench,
    embedded_stack,
    job_completed,
    kafka_producer,
    phase_started,
    publish,
    py_spy,
    ratio,
    run,
    summary,
    utc_ms,
)
from rea_bench.output import console, print_header, print_table

GOAL_P99_MS = 50.0
SHIPPED_FETCH_MAX_WAIT_MS = Settings().kafka_fetch_max_wait_ms  # what REA's services use
SMALL = {"campaigns": 3, "jobs": 11, "relay_per_campaign": 10}
FULL = {"campaigns": 20, "jobs": 51, "relay_per_campaign": 20}
STATS = ("p50", "p90", "p99", "max")


@dataclass
class Wake:
    completion_id: str
    submitted_id: str
    published_ms: float  # wall clock, epoch ms, just before the completion was sent
    observed_ms: float  # wall clock, epoch ms, when the next submission was read
    latency_ms: float  # monotonic


@dataclass
class Results:
    wakes: list[Wake] = field(default_factory=list)
    produce_consume: list[float] = field(default_factory=list)
    relay_hop: list[float] = field(default_factory=list)


@dataclass
class Peers:
    """The broker-only paths the wakes are compared with (see the module docstring)."""

    producer: AIOKafkaProducer
    direct: AIOKafkaConsumer  # peer A reads the topic it produces to
    relay_in: AIOKafkaConsumer  # peer B: the relay reads here ...
    relay_out: AIOKafkaConsumer  # ... and the measuring consumer reads here
    topics: tuple[str, str, str]  # (direct, relay in, relay out)
    value: bytes


def consumer(bootstrap: str, fetch_max_wait_ms: int) -> AIOKafkaConsumer:
    """A consumer with the settings REA's services get from FastStream (aiokafka defaults)."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=fetch_max_wait_ms,
    )


async def assign_all(made: AIOKafkaConsumer, topic: str, partitions: int) -> AIOKafkaConsumer:
    await made.start()
    made.assign([TopicPartition(topic, p) for p in range(partitions)])
    await made.seek_to_beginning()
    return made


async def next_submission(queue: AIOKafkaConsumer, timeout_s: float) -> tuple[JobSubmitted, float, float]:
    record = await asyncio.wait_for(queue.getone(), timeout_s)
    seen, seen_wall = time.perf_counter(), time.time() * 1000
    event = parse_event(record.value or b"")
    if not isinstance(event, JobSubmitted):
        raise RuntimeError(f"unexpected {event.type} on the job queue")
    return event, seen, seen_wall


async def run_campaign(
    bench: Bench, producer: AIOKafkaProducer, queue: AIOKafkaConsumer, jobs: int, timeout_s: float
) -> list[Wake]:
    """Start one phase and answer every submission with a completion; returns the wakes."""
    campaign_id = new_id()
    await publish(producer, bench.topics, phase_started(campaign_id, jobs, max_parallel_jobs=1))
    submitted, _, _ = await next_submission(queue, timeout_s)
    wakes: list[Wake] = []
    for index in range(1, jobs):
        completion = job_completed(submitted.payload, seed=index)
        sent_wall, sent = time.time() * 1000, time.perf_counter()
        await publish(producer, bench.topics, completion)
        following, seen, seen_wall = await next_submission(queue, timeout_s)
        if following.campaign_id != campaign_id or following.payload.job_id == submitted.payload.job_id:
            raise RuntimeError(f"expected the next job of {campaign_id}, got {following.payload.job_id}")
        wakes.append(
            Wake(completion.event_id, following.event_id, sent_wall, seen_wall, (seen - sent) * 1000)
        )
        submitted = following
    await publish(producer, bench.topics, job_completed(submitted.payload))  # the phase concludes
    return wakes


async def round_trips(
    peers: Peers, topic: str, reader: AIOKafkaConsumer, count: int, timeout_s: float, tag: str
) -> list[float]:
    """Produce one message to ``topic`` (acked), then wait until ``reader`` gets one; in ms."""
    times: list[float] = []
    for index in range(count):
        sent = time.perf_counter()
        await peers.producer.send_and_wait(topic, peers.value, key=f"{tag}{index}".encode())
        await asyncio.wait_for(reader.getone(), timeout_s)
        times.append((time.perf_counter() - sent) * 1000)
    return times


async def produce_consume(peers: Peers, count: int, timeout_s: float) -> list[float]:
    """Peer A: produce one message (acked), then read it with an idle consumer."""
    return await round_trips(peers, peers.topics[0], peers.direct, count, timeout_s, "k")


async def relay(peers: Peers, forwarder: AIOKafkaProducer) -> None:
    """Peer B's middle: what the executor does, minus MongoDB: consume, then produce."""
    while True:
        record = await peers.relay_in.getone()
        await forwarder.send_and_wait(peers.topics[2], record.value, key=record.key)


async def relay_hops(peers: Peers, count: int, timeout_s: float) -> list[float]:
    """Peer B: produce to the relay's topic and wait for the forwarded copy."""
    return await round_trips(peers, peers.topics[1], peers.relay_out, count, timeout_s, "r")


async def stage_breakdown(bench: Bench, wakes: list[Wake]) -> dict[str, list[float]]:
    """Split each wake by the executor's own timestamps in MongoDB (see the module docstring)."""
    client = bench.mongo()
    try:
        db = client[bench.settings.mongo_db]
        markers = {
            doc["_id"]: utc_ms(doc["at"])
            async for doc in db["processed_events"].find(
                {"_id": {"$in": [f"executor:{w.completion_id}" for w in wakes]}}
            )
        }
        outbox = {
            doc["_id"]: (utc_ms(doc["created_at"]), utc_ms(doc["published_at"]))
            async for doc in db["outbox"].find({"_id": {"$in": [w.submitted_id for w in wakes]}})
        }
    finally:
        await client.close()
    names = (
        "completion sent -> executor handler starts",
        "handler: marker insert, phase read, decide, replace",
        "outbox write, commit, relay query, send ack",
        "relay's send acked -> job.submitted read",
    )
    stages: dict[str, list[float]] = {name: [] for name in names}
    for wake in wakes:
        started = markers.get(f"executor:{wake.completion_id}")
        entry = outbox.get(wake.submitted_id)
        if started is None or entry is None:
            continue
        created, published = entry
        values = (
            started - wake.published_ms,
            created - started,
            published - created,
            wake.observed_ms - published,
        )
        for name, value in zip(names, values, strict=True):
            stages[name].append(value)
    return stages


async def create_topics(bench: Bench, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bench.endpoints.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, bench.settings.topic_partitions, 1) for name in names])
    finally:
        await admin.close()


async def measure(
    bench: Bench, campaigns: int, jobs: int, relay_per_campaign: int, fetch_wait: int, timeout_s: float
) -> Results:
    bootstrap, partitions = bench.endpoints.kafka_bootstrap, bench.settings.topic_partitions
    names = [f"{bench.settings.topic_prefix}.bench.{name}" for name in ("direct", "relay-in", "relay-out")]
    await create_topics(bench, names)
    made = [consumer(bootstrap, fetch_wait) for _ in range(4)]
    queue = await assign_all(made[0], bench.topics.job_queue, partitions)
    results = Results()
    sample = encode_event(job_completed(phase_started(new_id(), 1, 1).payload.plan.jobs[0]))
    try:
        async with kafka_producer(bootstrap) as producer, kafka_producer(bootstrap) as forwarder:
            peers = Peers(
                producer,
                await assign_all(made[1], names[0], partitions),
                await assign_all(made[2], names[1], partitions),
                await assign_all(made[3], names[2], partitions),
                (names[0], names[1], names[2]),
                sample,
            )
            relay_task = asyncio.create_task(relay(peers, forwarder))
            try:
                with Progress(console=console, transient=True) as progress:
                    task = progress.add_task("wakes and peers, campaign by campaign", total=campaigns)
                    for _ in range(campaigns):
                        wakes = await run_campaign(bench, producer, queue, jobs, timeout_s)
                        results.wakes.extend(wakes)
                        results.produce_consume.extend(await produce_consume(peers, len(wakes), timeout_s))
                        hops = min(len(wakes), relay_per_campaign)
                        results.relay_hop.extend(await relay_hops(peers, hops, timeout_s))
                        bench.check_alive("executor")
                        progress.advance(task)
            finally:
                relay_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await relay_task
    finally:
        for each in made:
            await each.stop()
    return results


def report(results: Results, stages: dict[str, list[float]], warmup: int, fetch_wait: int) -> None:
    wake = summary([w.latency_ms for w in results.wakes[warmup:]])
    peer_a = summary(results.produce_consume[warmup:])
    peer_b = summary(results.relay_hop[warmup:])

    def row(name: str, n: int, stats: dict[str, float]) -> list[str]:
        return [name, str(n)] + [f"{stats[k]:.1f}" for k in STATS]

    rows = [
        row("executor wake: job.completed -> job.submitted", len(results.wakes) - warmup, wake),
        row("peer A: produce -> consume", len(results.produce_consume) - warmup, peer_a),
        row("peer B: relay hop, no database", len(results.relay_hop) - warmup, peer_b),
        ["ratio wake / peer A", ""] + [ratio(wake[k], peer_a[k]) for k in STATS],
        ["ratio wake / peer B", ""] + [ratio(wake[k], peer_b[k]) for k in STATS],
    ]
    print_table(
        f"Wake latency (ms), consumers' fetch_max_wait_ms={fetch_wait}",
        ["", "n", *STATS],
        rows,
        caption=f"first {warmup} samples of each kind dropped; peers send {len(_sample_bytes())}-byte "
        "messages, the size of one job.completed",
    )
    stage_rows = []
    for name, values in stages.items():
        stats = summary(values[warmup:])
        stage_rows.append([name, *(f"{stats[k]:.0f}" for k in STATS)])
    print_table(
        "Where a wake's time goes (ms, from the executor's MongoDB timestamps, +/-1 ms)",
        ["stage", *STATS],
        stage_rows,
    )
    verdict = "[green]met[/green]" if wake["p99"] < GOAL_P99_MS else "[red]missed[/red]"
    console.print(f"goal p99 < {GOAL_P99_MS:.0f} ms: {verdict} (p99 = {wake['p99']:.1f} ms)")


def _sample_bytes() -> bytes:
    return encode_event(job_completed(phase_started("c" * 32, 1, 1).payload.plan.jobs[0]))


async def main(args: argparse.Namespace) -> None:
    size = FULL if args.full else SMALL
    campaigns = args.campaigns or size["campaigns"]
    jobs = args.jobs or size["jobs"]
    relay_per_campaign = args.relay_per_campaign or size["relay_per_campaign"]
    fetch_wait = args.fetch_max_wait_ms or SHIPPED_FETCH_MAX_WAIT_MS
    if jobs < 2:
        raise SystemExit("--jobs must be at least 2 (a wake needs a next job)")
    print_header(
        "wake latency",
        {
            "campaigns": campaigns,
            "jobs_per_phase": jobs,
            "wakes": campaigns * (jobs - 1),
            "warmup": args.warmup,
            "fetch_max_wait_ms": fetch_wait if args.fetch_max_wait_ms else f"{fetch_wait} (as shipped)",
        },
    )
    async with embedded_stack("wake", keep=args.keep) as bench:
        with console.status("starting the executor service"):
            await bench.start_service("executor", args.fetch_max_wait_ms)
        profiled = {"executor": bench.pid("executor"), "secantusdb": bench.pid("secantusdb")}
        async with py_spy(profiled, args.profile):
            results = await measure(bench, campaigns, jobs, relay_per_campaign, fetch_wait, args.timeout)
        stages = await stage_breakdown(bench, results.wakes)
    report(results, stages, min(args.warmup, len(results.wakes) - 1), fetch_wait)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m rea_bench.wake_latency",
        description="Executor wake latency (job.completed -> next job.submitted) vs broker-only peers.",
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help=f"the documented full size: {FULL['campaigns']} campaigns x {FULL['jobs']} jobs "
        f"= {FULL['campaigns'] * (FULL['jobs'] - 1)} wakes",
    )
    parser.add_argument(
        "--campaigns", type=int, help=f"campaigns, one after another (small {SMALL['campaigns']})"
    )
    parser.add_argument(
        "--jobs", type=int, help=f"jobs per phase, giving jobs-1 wakes each (small {SMALL['jobs']})"
    )
    parser.add_argument(
        "--relay-per-campaign",
        type=int,
        help=f"peer B samples after each campaign (small {SMALL['relay_per_campaign']}, "
        f"full {FULL['relay_per_campaign']})",
    )
    parser.add_argument(
        "--fetch-max-wait-ms",
        type=int,
        help="what-if: run the executor (and this benchmark's consumers) with this fetch_max_wait_ms "
        f"instead of the shipped {SHIPPED_FETCH_MAX_WAIT_MS}",
    )
    parser.add_argument(
        "--warmup", type=int, default=5, help="first samples of each kind left out (default 5)"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for any one message")
    parser.add_argument(
        "--profile",
        type=Path,
        help="also sample the executor and SecantusDB with py-spy; raw profiles go here",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary home and its logs")
    return parser.parse_args(argv)


if __name__ == "__main__":
    run(main(parse_args()))
