"""Idle CPU and wake latency: what a quiet stack costs, and how fast it answers when it wakes.

The embedded stack (Tansu, SecantusDB, redis-server) and every service with two job workers
run; the benchmark reads each process's CPU seconds from ``/proc`` at the start and the end of
each window and prints the share of one core each used. Goal: the whole stack at most 5% of one
core, broker included, in both windows:

* **idle**: no campaign at all;
* **hibernating**: campaigns whose jobs are all in flight and long. The benchmark plays the
  job side: the phases' jobs name a remote backend (no local worker takes them), it reads each
  ``job.submitted`` from the job queue and answers only later.

Then the **wakes**: one job of a hibernating campaign finishes at a time, ``--gap`` seconds
apart (longer than ``REA_KAFKA_AWAKE_S``, so every consumer has fallen asleep), published as
the job side publishes it (the broker's ack, then a ring of the doorbell). A wake is the time
from that ``job.completed`` to the next ``job.submitted`` read from the job queue. Goal: p99 at
most 50 ms.

Peers, in a window of their own on the same broker: an idle aiokafka consumer subscribed to one
topic, with REA's fetch wait (``REA_KAFKA_FETCH_MAX_WAIT_MS``) and with aiokafka's default
(500 ms): the client's CPU and what it added to the broker's.

    python -m rea_bench.idle_cpu                  # 60 s windows, 30 wakes
    python -m rea_bench.idle_cpu --seconds 20 --wakes 10
    REA_KAFKA_DOORBELL=false python -m rea_bench.idle_cpu   # what-if: no doorbell
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import textwrap
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from redis.asyncio import Redis
from rich.progress import Progress

from rea.doorbell import Doorbell
from rea.events import JobCompleted, JobSubmitted, PhaseStarted, new_id, parse_event
from rea.settings import Settings
from rea_bench.common import (
    Bench,
    cpu_seconds,
    embedded_stack,
    job_completed,
    kafka_producer,
    phase_started,
    publish,
    run,
    summary,
)
from rea_bench.output import console, print_header, print_table
from rea_bench.wake_latency import Wake, stage_breakdown

SERVICES = ("logger", "hypothesis", "planner", "executor")
WORKERS = 2
SETTLE_S = 10.0
CAMPAIGNS = 3
GOAL_CPU_PERCENT = 5.0
GOAL_WAKE_P99_MS = 50.0
REMOTE = "ray"  # no launcher runs, so the benchmark answers these jobs itself

IDLE_CONSUMER = textwrap.dedent(
    """
    import asyncio, sys
    from aiokafka import AIOKafkaConsumer

    async def main() -> None:
        bootstrap, topic, group, wait = sys.argv[1:5]
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=group, fetch_max_wait_ms=int(wait)
        )
        await consumer.start()
        async for _ in consumer:
            pass

    asyncio.run(main())
    """
)

Pids = dict[str, int]


async def cpu_window(pids: Pids, seconds: float, what: str) -> dict[str, float]:
    """CPU seconds each process used over a window of ``seconds``."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    with console.status(f"measuring {what} for {seconds:.0f} s"):
        await asyncio.sleep(seconds)
    return {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}


def remote_phase(campaign_id: str, jobs: int) -> PhaseStarted:
    event = phase_started(campaign_id, jobs, max_parallel_jobs=1)
    specs = [spec.model_copy(update={"backend": REMOTE}) for spec in event.payload.plan.jobs]
    plan = event.payload.plan.model_copy(update={"jobs": specs})
    return event.model_copy(update={"payload": event.payload.model_copy(update={"plan": plan})})


class JobSidePlayer:
    """Reads the job queue and answers submissions as a job side would: publish, then ring."""

    def __init__(self, bench: Bench, producer: AIOKafkaProducer, queue: AIOKafkaConsumer) -> None:
        self.bench, self.producer, self.queue = bench, producer, queue
        self.doorbell = Doorbell.channel_for(bench.settings.topic_prefix)
        self.redis = Redis.from_url(bench.endpoints.redis_url)  # held, as a job side holds it
        self.in_flight: dict[str, JobSubmitted] = {}

    async def next_submission(self, timeout_s: float = 30.0) -> tuple[JobSubmitted, float, float]:
        record = await asyncio.wait_for(self.queue.getone(), timeout_s)
        seen, seen_wall = time.perf_counter(), time.time() * 1000
        event = parse_event(record.value or b"")
        if not isinstance(event, JobSubmitted):
            raise RuntimeError(f"unexpected {event.type} on the job queue")
        self.in_flight[event.campaign_id] = event
        return event, seen, seen_wall

    async def finish(self, campaign_id: str, seed: int) -> tuple[JobCompleted, float, float]:
        """Complete the campaign's job in flight: the event, and when it was sent (monotonic, and
        wall-clock epoch ms for the stage breakdown)."""
        submitted = self.in_flight.pop(campaign_id)
        completion = job_completed(submitted.payload, seed=seed)
        sent, sent_wall = time.perf_counter(), time.time() * 1000
        await publish(self.producer, self.bench.topics, completion)
        if self.bench.settings.kafka_doorbell:
            topic = self.bench.topics.for_event(completion.type)
            await self.redis.publish(self.doorbell, topic)
        return completion, sent, sent_wall


async def hibernate_and_wake(
    bench: Bench, pids: Pids, seconds: float, wakes: int, gap_s: float
) -> tuple[dict[str, float], list[Wake]]:
    """Hibernating campaigns' CPU over ``seconds``, then ``wakes`` wakes ``gap_s`` apart."""
    bootstrap, partitions = bench.endpoints.kafka_bootstrap, bench.settings.topic_partitions
    queue = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=bench.settings.kafka_fetch_max_wait_ms,
    )
    await queue.start()
    queue.assign([TopicPartition(bench.topics.job_queue, p) for p in range(partitions)])
    await queue.seek_to_beginning()
    try:
        async with kafka_producer(bootstrap) as producer:
            player = JobSidePlayer(bench, producer, queue)
            campaigns = [new_id() for _ in range(CAMPAIGNS)]
            per_campaign = wakes // CAMPAIGNS + 2
            for campaign_id in campaigns:
                await publish(producer, bench.topics, remote_phase(campaign_id, per_campaign))
            for _ in campaigns:
                await player.next_submission()
            await asyncio.sleep(SETTLE_S)
            queue.pause(*queue.assignment())  # the instrument's own fetches are not the stack's
            used = await cpu_window(pids, seconds, f"{CAMPAIGNS} campaigns hibernating on jobs in flight")
            queue.resume(*queue.paused())
            measured: list[Wake] = []
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task(f"wakes, {gap_s:.1f} s apart", total=wakes)
                for index in range(wakes):
                    await asyncio.sleep(gap_s)
                    completion, sent, sent_wall = await player.finish(campaigns[index % CAMPAIGNS], index)
                    following, seen, seen_wall = await player.next_submission()
                    wake = Wake(
                        completion.event_id, following.event_id, sent_wall, seen_wall, (seen - sent) * 1000
                    )
                    measured.append(wake)
                    progress.advance(task)
            await player.redis.aclose()
            return used, measured
    finally:
        await queue.stop()


def start_peers(bench: Bench, waits: dict[str, int]) -> dict[str, subprocess.Popen[bytes]]:
    """One idle aiokafka consumer process per fetch wait, each in a group of its own."""
    topic = bench.topics.control
    return {
        name: subprocess.Popen(
            [
                sys.executable,
                "-c",
                IDLE_CONSUMER,
                *(bench.endpoints.kafka_bootstrap, topic, f"idle-{i}", str(wait)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i, (name, wait) in enumerate(waits.items())
    }


async def peers_window(bench: Bench, broker_pid: int, seconds: float, fetch_wait: int) -> dict[str, float]:
    """Each peer alone for ``seconds``: its CPU and the broker's over the same window."""
    used: dict[str, float] = {}
    for name, wait in {f"aiokafka, {fetch_wait} ms": fetch_wait, "aiokafka, 500 ms": 500}.items():
        proc = start_peers(bench, {name: wait})[name]
        try:
            await asyncio.sleep(SETTLE_S)
            window = await cpu_window({name: proc.pid, "tansu": broker_pid}, seconds, f"peer: {name}")
        finally:
            proc.kill()
            proc.wait()
        used[name], used[f"{name} (broker)"] = window[name], window["tansu"]
    return used


def percent(cpu_s: float, seconds: float) -> str:
    return f"{100 * cpu_s / seconds:.1f}%"


def report(
    pids: Pids,
    idle: dict[str, float],
    hibernating: dict[str, float],
    peers: dict[str, float],
    wakes: list[Wake],
    stages: dict[str, list[float]],
    seconds: float,
) -> None:
    rows = [[name, percent(idle[name], seconds), percent(hibernating[name], seconds)] for name in pids]
    totals = [sum(idle.values()), sum(hibernating.values())]
    rows.append(["whole stack", *(percent(total, seconds) for total in totals)])
    worst = max(100 * total / seconds for total in totals)
    cpu_verdict = "met" if worst <= GOAL_CPU_PERCENT else "missed"
    print_table(
        f"CPU over {seconds:.0f} s (% of one core)",
        ["process", "idle", "hibernating"],
        rows,
        caption=f"goal: the whole stack <= {GOAL_CPU_PERCENT:.0f}% of one core: {cpu_verdict}",
    )
    stats = summary([wake.latency_ms for wake in wakes])
    verdict = "met" if stats["p99"] <= GOAL_WAKE_P99_MS else "missed"
    keys = ("p50", "p90", "p99", "max")
    rows = [["wake: job.completed -> next job.submitted", *(f"{stats[key]:.1f}" for key in keys)]]
    for name, values in stages.items():
        part = summary(values)
        rows.append([f"  {name}", *(f"{part[key]:.0f}" for key in keys)])
    print_table(
        f"Wake latency after hibernation, ms ({len(wakes)} wakes; stages from MongoDB, +/-1 ms)",
        ["", *keys],
        rows,
        caption=f"goal: p99 <= {GOAL_WAKE_P99_MS:.0f} ms: {verdict}",
    )

    def added(name: str) -> str:
        return percent(max(0.0, peers[f"{name} (broker)"] - idle["tansu"]), seconds)

    names = [name for name in peers if not name.endswith("(broker)")]
    print_table(
        "Peers: one idle consumer each, alone with the idle stack",
        ["consumer", "client", "added to the broker"],
        [[name, percent(peers[name], seconds), added(name)] for name in names],
    )


async def measure(seconds: float, wakes: int, gap_s: float) -> None:
    settings = Settings()
    print_header(
        "idle CPU and wake latency",
        {
            "window_s": seconds,
            "workers": WORKERS,
            "wakes": wakes,
            "gap_s": gap_s,
            "fetch_max_wait_ms": settings.kafka_fetch_max_wait_ms,
            "doorbell": settings.kafka_doorbell,
            "awake_s": settings.kafka_awake_s,
            "idle_poll_s": settings.kafka_idle_poll_s,
        },
    )
    async with embedded_stack("idle") as bench:
        pids = {name: bench.pid(name) for name in ("tansu", "secantusdb", "redis")}
        for service in SERVICES:
            pids[service] = await bench.start_service(service)
        for index in range(WORKERS):
            name = f"worker-{index}"
            bench.stack.start_service("worker", name)
            pids[name] = bench.pid(name)
        with console.status(f"letting everything settle ({SETTLE_S:.0f} s)"):
            await asyncio.sleep(SETTLE_S)
        idle = await cpu_window(pids, seconds, "the idle stack")
        hibernating, measured = await hibernate_and_wake(bench, pids, seconds, wakes, gap_s)
        stages = await stage_breakdown(bench, measured)
        for service in SERVICES:
            bench.check_alive(service)
        peers = await peers_window(bench, pids["tansu"], seconds, settings.kafka_fetch_max_wait_ms)
    report(pids, idle, hibernating, peers, measured, stages, seconds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="each CPU window")
    parser.add_argument("--wakes", type=int, default=30)
    parser.add_argument("--gap", type=float, default=2.0, help="seconds between wakes")
    args = parser.parse_args(argv)
    run(measure(args.seconds, args.wakes, args.gap))


if __name__ == "__main__":
    main()
