"""Idle CPU: what a stack with no campaign costs, per process, over a minute.

The embedded stack (Tansu, SecantusDB, redis-server) and every service with two job workers
run with nothing to do; the benchmark reads each process's CPU seconds from ``/proc`` at the
start and the end of the window and prints the share of one core each used. Goal: the whole
stack at most 5% of one core.

Peers, in the same run and on the same broker, show what idling costs a plain Kafka client:
an aiokafka consumer (in a process of its own) subscribed to one topic, once with REA's fetch
wait (``REA_KAFKA_FETCH_MAX_WAIT_MS``, 20 ms by default) and once with aiokafka's default
(500 ms). Their difference is the price of the short fetch wait that keeps wakes fast on a
broker that answers a waiting fetch only on re-check.

    python -m benchmarks.idle_cpu                 # a 60 s window
    python -m benchmarks.idle_cpu --seconds 20    # shorter
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import textwrap

from benchmarks._common import Bench, console, cpu_seconds, embedded_stack, print_header, print_table, run
from rea.settings import Settings

SERVICES = ("logger", "hypothesis", "planner", "executor")
WORKERS = 2
SETTLE_S = 10.0

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


async def measure(seconds: float) -> None:
    fetch_wait = Settings().kafka_fetch_max_wait_ms
    print_header("idle CPU", {"window_s": seconds, "workers": WORKERS, "fetch_max_wait_ms": fetch_wait})
    async with embedded_stack("idle") as bench:
        pids = {name: bench.pid(name) for name in ("tansu", "secantusdb", "redis")}
        for service in SERVICES:
            pids[service] = await bench.start_service(service)
        for index in range(WORKERS):
            name = f"worker-{index}"
            bench.stack.start_service("worker", name)
            pids[name] = bench.pid(name)
        peers = start_peers(
            bench, {"peer: aiokafka consumer, 20 ms": fetch_wait, "peer: aiokafka, 500 ms": 500}
        )
        try:
            with console.status(f"letting everything settle ({SETTLE_S:.0f} s)"):
                await asyncio.sleep(SETTLE_S)
            every = {**pids, **{name: proc.pid for name, proc in peers.items()}}
            before = {name: cpu_seconds(pid) for name, pid in every.items()}
            with console.status(f"measuring for {seconds:.0f} s"):
                await asyncio.sleep(seconds)
            used = {name: cpu_seconds(pid) - before[name] for name, pid in every.items()}
        finally:
            for proc in peers.values():
                proc.kill()
                proc.wait()
    share = {name: 100 * cpu / seconds for name, cpu in used.items()}
    stack_total = sum(share[name] for name in pids)
    rows = [[name, f"{used[name]:.2f}", f"{share[name]:.1f}%"] for name in pids]
    rows.append(["whole stack", f"{sum(used[n] for n in pids):.2f}", f"{stack_total:.1f}%"])
    rows += [[name, f"{used[name]:.2f}", f"{share[name]:.1f}%"] for name in peers]
    verdict = "met" if stack_total <= 5 else "missed"
    print_table(
        f"Idle CPU over {seconds:.0f} s, no campaign",
        ["process", "CPU-s", "% of one core"],
        rows,
        caption=f"goal: the whole stack <= 5% of one core: {verdict}",
    )


def start_peers(bench: Bench, waits: dict[str, int]) -> dict[str, subprocess.Popen[bytes]]:
    """One idle aiokafka consumer process per fetch wait, each in a group of its own."""
    topic = bench.topics.control
    return {
        name: subprocess.Popen(
            [
                sys.executable,
                "-c",
                IDLE_CONSUMER,
                bench.endpoints.kafka_bootstrap,
                topic,
                f"idle-{i}",
                str(wait),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i, (name, wait) in enumerate(waits.items())
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    run(measure(args.seconds))


if __name__ == "__main__":
    main()
