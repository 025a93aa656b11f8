"""Wake latency: a ``job.completed`` published -> the next ``job.submitted`` seen on the job queue.

Only the real executor service process runs (no workers, no planner). The benchmark plays
planner and worker: it publishes ``phase.started`` for campaigns whose phase has many jobs
and ``max_parallel_jobs=1``, reads each ``job.submitted`` from the job-queue topic and answers
it with a synthetic ``job.completed``, one at a time. Each answer wakes the hibernated phase
document, and the time until the next submission is one wake.

Peer, measured in the same run and interleaved campaign by campaign: the raw broker round
trip on the same Tansu (aiokafka produce -> consume on a plain topic, the same message bytes,
the same consumer settings). A wake crosses the broker twice, so about 2x the round trip is
its floor. Where the time goes is read back from MongoDB: the executor stamps its
processed-event marker when the handler starts, the outbox entry when the decision is made
and ``published_at`` when the relay's send was acknowledged (millisecond precision).

    python -m benchmarks.wake_latency            # small: 3 campaigns x 11 jobs = 30 wakes
    python -m benchmarks.wake_latency --full     # 20 campaigns x 51 jobs = 1,000 wakes
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition
from rich.progress import Progress

from benchmarks._common import (
    Bench,
    console,
    embedded_stack,
    job_completed,
    kafka_producer,
    phase_started,
    print_header,
    print_table,
    publish,
    ratio,
    summary,
    utc_ms,
)
from rea.events import JobSubmitted, encode_event, new_id, parse_event

GOAL_P99_MS = 50.0
SMALL = {"campaigns": 3, "jobs": 11}
FULL = {"campaigns": 20, "jobs": 51}


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
    pings: list[float] = field(default_factory=list)


def queue_consumer(bootstrap: str) -> AIOKafkaConsumer:
    """The consumer settings REA's services get from FastStream (aiokafka defaults)."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )


async def assign_all(consumer: AIOKafkaConsumer, topic: str, partitions: int) -> None:
    await consumer.start()
    consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
    await consumer.seek_to_beginning()


async def next_submission(consumer: AIOKafkaConsumer, timeout_s: float) -> tuple[JobSubmitted, float, float]:
    record = await asyncio.wait_for(consumer.getone(), timeout_s)
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
    producer: AIOKafkaProducer, ping: AIOKafkaConsumer, topic: str, value: bytes, count: int, timeout_s: float
) -> list[float]:
    """Raw broker round trips: produce one message (acked) and wait until the consumer reads it."""
    times: list[float] = []
    for index in range(count):
        sent = time.perf_counter()
        await producer.send_and_wait(topic, value, key=f"k{index}".encode())
        await asyncio.wait_for(ping.getone(), timeout_s)
        times.append((time.perf_counter() - sent) * 1000)
    return times


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
    stages: dict[str, list[float]] = {
        "broker -> executor handler starts": [],
        "handler: reads, decide, replace": [],
        "commit + relay query + send ack": [],
        "relay ack -> observer reads it": [],
    }
    names = list(stages)
    for wake in wakes:
        started = markers.get(f"executor:{wake.completion_id}")
        entry = outbox.get(wake.submitted_id)
        if started is None or entry is None:
            continue
        created, published = entry
        for name, value in zip(
            names,
            (
                started - wake.published_ms,
                created - started,
                published - created,
                wake.observed_ms - published,
            ),
            strict=True,
        ):
            stages[name].append(value)
    return stages


async def measure(bench: Bench, campaigns: int, jobs: int, timeout_s: float) -> Results:
    ping_topic = f"{bench.settings.topic_prefix}.bench.ping"
    partitions = bench.settings.topic_partitions
    admin = AIOKafkaAdminClient(bootstrap_servers=bench.endpoints.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(ping_topic, partitions, 1)])
    finally:
        await admin.close()
    queue, ping = (
        queue_consumer(bench.endpoints.kafka_bootstrap),
        queue_consumer(bench.endpoints.kafka_bootstrap),
    )
    await assign_all(queue, bench.topics.job_queue, partitions)
    await assign_all(ping, ping_topic, partitions)
    results = Results()
    sample = encode_event(job_completed(phase_started(new_id(), 1, 1).payload.plan.jobs[0]))
    try:
        async with kafka_producer(bench.endpoints.kafka_bootstrap) as producer:
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task("wakes and round trips", total=campaigns)
                for _ in range(campaigns):  # interleaved, so both see the same machine
                    wakes = await run_campaign(bench, producer, queue, jobs, timeout_s)
                    results.wakes.extend(wakes)
                    results.pings.extend(
                        await round_trips(producer, ping, ping_topic, sample, len(wakes), timeout_s)
                    )
                    bench.check_alive("executor")
                    progress.advance(task)
    finally:
        await queue.stop()
        await ping.stop()
    return results


def report(results: Results, stages: dict[str, list[float]], warmup: int, message_bytes: int) -> None:
    wakes = [w.latency_ms for w in results.wakes[warmup:]]
    pings = results.pings[warmup:]
    wake, rtt = summary(wakes), summary(pings)
    rows = [
        ["executor wake (job.completed -> job.submitted)", str(len(wakes))]
        + [f"{wake[k]:.1f}" for k in ("p50", "p90", "p99", "max")],
        ["peer: broker round trip (produce -> consume)", str(len(pings))]
        + [f"{rtt[k]:.1f}" for k in ("p50", "p90", "p99", "max")],
        ["ratio wake / round trip", ""] + [ratio(wake[k], rtt[k]) for k in ("p50", "p90", "p99", "max")],
    ]
    print_table(
        "Wake latency (ms)",
        ["", "n", "p50", "p90", "p99", "max"],
        rows,
        caption=f"{warmup} warm-up samples of each dropped; peer messages are {message_bytes} bytes, "
        "the size of one job.completed",
    )
    stage_rows = []
    for name, values in stages.items():
        values = values[warmup:]
        s = summary(values)
        stage_rows.append([name, f"{s['p50']:.0f}", f"{s['p90']:.0f}", f"{s['p99']:.0f}", f"{s['max']:.0f}"])
    print_table(
        "Where a wake's time goes (ms, from the executor's MongoDB timestamps, +/-1 ms)",
        ["stage", "p50", "p90", "p99", "max"],
        stage_rows,
    )
    met = wake["p99"] < GOAL_P99_MS
    verdict = "[green]met[/green]" if met else "[red]missed[/red]"
    console.print(f"goal p99 < {GOAL_P99_MS:.0f} ms: {verdict} (p99 = {wake['p99']:.1f} ms)")


async def main(args: argparse.Namespace) -> None:
    campaigns = args.campaigns or (FULL if args.full else SMALL)["campaigns"]
    jobs = args.jobs or (FULL if args.full else SMALL)["jobs"]
    if jobs < 2:
        raise SystemExit("--jobs must be at least 2 (a wake needs a next job)")
    print_header(
        "wake latency",
        {
            "campaigns": campaigns,
            "jobs_per_phase": jobs,
            "wakes": campaigns * (jobs - 1),
            "warmup": args.warmup,
        },
    )
    async with embedded_stack("wake", keep=args.keep) as bench:
        with console.status("starting the executor service"):
            await bench.start_service("executor")
        results = await measure(bench, campaigns, jobs, args.timeout)
        stages = await stage_breakdown(bench, results.wakes)
    sample = encode_event(job_completed(phase_started(new_id(), 1, 1).payload.plan.jobs[0]))
    report(results, stages, min(args.warmup, len(results.wakes) - 1), len(sample))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.wake_latency",
        description="Executor wake latency (job.completed -> next job.submitted) vs a broker round trip.",
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help=f"the documented full size: {FULL['campaigns']} campaigns "
        f"x {FULL['jobs']} jobs = {FULL['campaigns'] * (FULL['jobs'] - 1)} wakes",
    )
    parser.add_argument(
        "--campaigns", type=int, help=f"campaigns, one after another (small: {SMALL['campaigns']})"
    )
    parser.add_argument(
        "--jobs", type=int, help=f"jobs per phase; each phase gives jobs-1 wakes (small: {SMALL['jobs']})"
    )
    parser.add_argument(
        "--warmup", type=int, default=5, help="first samples of each kind left out (default 5)"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for any one message")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home and its logs")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
