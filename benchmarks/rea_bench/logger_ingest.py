"""Logger ingest: job results per second recorded by the experiment-logger service process.

N synthetic ``job.completed`` events are published to the job-events topic first; then the
real logger service process starts and the benchmark waits until all N are in the
``results`` collection. The rate is taken from the logger's own ``recorded_at`` stamps
(first to last result), so the service's start-up is not counted; the wall time from
process start is shown too.

Peers, in the same run and on the same SecantusDB, after the logger, from one asyncio PyMongo
client in this process, writing the very documents the logger writes (``rea_logger.records``,
the first ``--peer-results`` of them) into a database with the same indexes
(``Store.ensure_indexes``):

* ``insert_one`` of each result document, one after another;
* ``insert_one`` of the event document and then the result document: the unbatched logger's
  writes, without Kafka, parsing or its dedup;
* the same with ``retryWrites=false`` on the client (PyMongo's default, used by the services,
  is true: SecantusDB then keeps a record of every write for retries, up to 10,000 for
  30 minutes, and scans them all on each write);
* ``insert_many`` of the result documents, 1,000 at a time;
* ``insert_many`` (unordered, duplicates tolerated) of 1,000 event documents, then of their
  1,000 result documents: the logger's write pattern, batched.

The logger's rate is also shown per quarter of its run, and the CPU seconds of the logger,
SecantusDB and Tansu (``/proc/PID/stat``) per result, for the logger while it records and
during each peer. ``--profile DIR`` samples the logger and SecantusDB with py-spy.

    python -m rea_bench.logger_ingest            # small: 2,000 results
    python -m rea_bench.logger_ingest --full     # 20,000 results
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from pymongo import AsyncMongoClient
from pymongo.errors import BulkWriteError

from rea.events import JobCompleted, encode_event, new_id
from rea.store import Store
from rea_bench.common import (
    Bench,
    Doc,
    cpu_seconds,
    embedded_stack,
    job_completed,
    job_spec,
    kafka_producer,
    publish_many,
    py_spy,
    ratio,
    run,
    utc_ms,
    wait_until,
)
from rea_bench.output import console, print_header, print_table
from rea_logger.records import event_document, result_document

GOAL_PER_S = 2000.0
SMALL = {"results": 2_000}
FULL = {"results": 20_000}
JOBS_PER_CAMPAIGN = 10
BATCH = 1000
INGEST_TIMEOUT_S = 1800.0
PEER_RESULTS = 2_000
SERVERS = ("secantusdb", "tansu")


@dataclass
class Run:
    name: str
    rate: float  # results per second
    seconds: float
    cpu_ms_per_result: dict[str, float] = field(default_factory=dict)
    note: str = ""


class CpuMeter:
    """CPU seconds of some processes between ``start`` and ``stop`` (see ``cpu_seconds``)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.started: dict[str, float] = {}

    def snapshot(self) -> dict[str, float]:
        now = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        return {**now, "benchmark process": time.process_time()}

    def start(self) -> None:
        self.started = self.snapshot()

    def per_result_ms(self, results: int) -> dict[str, float]:
        now = self.snapshot()
        return {name: (now[name] - self.started[name]) * 1000 / results for name in now}


def completions(count: int) -> list[JobCompleted]:
    events: list[JobCompleted] = []
    campaign_id = new_id()
    for index in range(count):
        if index % JOBS_PER_CAMPAIGN == 0:
            campaign_id = new_id()
        events.append(job_completed(job_spec(campaign_id, index % JOBS_PER_CAMPAIGN), seed=index))
    return events


async def logger_run(bench: Bench, events: list[JobCompleted], profile: Path | None) -> Run:
    """Publish every event, start the logger, wait until every result is recorded."""
    started = time.monotonic()
    async with kafka_producer(bench.endpoints.kafka_bootstrap) as producer:
        with console.status(f"publishing {len(events):,} job.completed events"):
            await publish_many(
                producer, bench.topics.job_events, [(e.key(), encode_event(e)) for e in events]
            )
    published = time.monotonic() - started
    client = bench.mongo()
    db = client[bench.settings.mongo_db]
    try:
        started = time.monotonic()
        with console.status("starting the logger service"):
            pid = await bench.start_service("logger")
        meter = CpuMeter({"logger": pid, **{name: bench.pid(name) for name in SERVERS}})
        window: list[int] = []  # results recorded when the CPU window opened
        profiled = {"logger": pid, "secantusdb": bench.pid("secantusdb")}
        with console.status("the logger is recording") as status:

            async def all_recorded() -> bool:
                bench.check_alive("logger")
                recorded = await db["results"].count_documents({})
                if recorded and not window:
                    meter.start()
                    window.append(recorded)
                status.update(f"the logger is recording: {recorded:,} / {len(events):,}")
                return recorded >= len(events)

            async with py_spy(profiled, profile and profile / "logger-run"):
                await wait_until(
                    all_recorded, "the logger to record every result", INGEST_TIMEOUT_S, poll_s=1.0
                )
        wall = time.monotonic() - started
        cpu = meter.per_result_ms(max(1, len(events) - window[0]))
        stamps = [
            utc_ms(doc["recorded_at"])
            async for doc in db["results"].find({}, {"recorded_at": 1}).sort("recorded_at", 1)
        ]
        logged = await db["events"].count_documents({})
    finally:
        await client.close()
    quarters = [stamps[len(stamps) * q // 4 : len(stamps) * (q + 1) // 4] for q in range(4)]
    note = (
        f"published in {published:.1f} s before the logger started; {wall:.1f} s from its process start "
        f"to the last result; {logged:,} events logged; results/s by quarter of the run: "
        + ", ".join(f"{rate_of(quarter):,.0f}" for quarter in quarters)
    )
    span = (stamps[-1] - stamps[0]) / 1000
    return Run("logger service (recorded_at, first -> last)", rate_of(stamps), span, cpu, note)


def rate_of(stamps_ms: list[float]) -> float:
    """Results per second over sorted ``recorded_at`` stamps (epoch ms)."""
    span = (stamps_ms[-1] - stamps_ms[0]) / 1000 if len(stamps_ms) > 1 else 0.0
    return (len(stamps_ms) - 1) / span if span > 0 else float("nan")


async def insert_each(store: Store, events: list[JobCompleted]) -> None:
    for event in events:
        await store.results.insert_one(result_document(event))


async def insert_pairs(store: Store, events: list[JobCompleted]) -> None:
    """What the logger writes per job.completed today: the event, then the result."""
    for event in events:
        await store.events.insert_one(event_document(event))
        await store.results.insert_one(result_document(event))


async def insert_batches(store: Store, events: list[JobCompleted]) -> None:
    for start in range(0, len(events), BATCH):
        await store.results.insert_many([result_document(e) for e in events[start : start + BATCH]])


async def insert_pair_batches(store: Store, events: list[JobCompleted]) -> None:
    """The logger's write pattern, batched: unordered insert_many of events, then of results,
    with duplicate keys tolerated (how a batching logger would keep its insert-if-absent)."""
    for start in range(0, len(events), BATCH):
        chunk = events[start : start + BATCH]
        for collection, docs in (
            (store.events, [event_document(e) for e in chunk]),
            (store.results, [result_document(e) for e in chunk]),
        ):
            try:
                await collection.insert_many(docs, ordered=False)
            except BulkWriteError as exc:
                if any(error.get("code") != 11000 for error in exc.details.get("writeErrors", [])):
                    raise


@dataclass(frozen=True)
class Peer:
    name: str
    write: Callable[[Store, list[JobCompleted]], Awaitable[None]]
    retry_writes: bool = True  # PyMongo's default, which the services use


PEERS = (
    Peer("insert_one result", insert_each),
    Peer("insert_one event, then result (unbatched logger's writes)", insert_pairs),
    Peer("the same, client with retryWrites=false", insert_pairs, retry_writes=False),
    Peer(f"insert_many results x{BATCH}", insert_batches),
    Peer(f"insert_many events, then results x{BATCH}, unordered", insert_pair_batches),
)


async def peer_runs(bench: Bench, events: list[JobCompleted], profile: Path | None) -> list[Run]:
    """Plain inserts of the logger's documents from this process (see the module docstring)."""
    runs: list[Run] = []
    for index, peer in enumerate(PEERS):
        client: AsyncMongoClient[Doc] = AsyncMongoClient(
            bench.endpoints.mongo_uri, tz_aware=True, retryWrites=peer.retry_writes
        )
        store = Store(client, f"{bench.settings.mongo_db}_peer{index}", bench.topics)
        meter = CpuMeter({name: bench.pid(name) for name in SERVERS})
        try:
            await store.ensure_indexes()
            with console.status(f"peer: {peer.name}"):
                async with py_spy(
                    {"secantusdb": bench.pid("secantusdb")}, profile and profile / f"peer{index}"
                ):
                    meter.start()
                    started = time.perf_counter()
                    await peer.write(store, events)
                    seconds = time.perf_counter() - started
            runs.append(
                Run(f"peer: {peer.name}", len(events) / seconds, seconds, meter.per_result_ms(len(events)))
            )
        finally:
            await store.close()
    return runs


def report(count: int, logger: Run, peers: list[Run]) -> None:
    rows = [[logger.name, f"{logger.rate:,.0f}", "1.0x", f"{logger.seconds:.1f}"]]
    rows += [
        [peer.name, f"{peer.rate:,.0f}", ratio(peer.rate, logger.rate), f"{peer.seconds:.1f}"]
        for peer in peers
    ]
    print_table(
        f"Results recorded per second ({count:,} job.completed)",
        ["", "results/s", "vs logger", "seconds"],
        rows,
        caption=logger.note,
    )
    columns = ["logger", *SERVERS, "benchmark process"]
    print_table(
        "CPU per result (ms; 2 cores give 2 ms of CPU per ms)",
        ["", *columns],
        [
            [
                run_.name,
                *(
                    f"{run_.cpu_ms_per_result[c]:.2f}" if c in run_.cpu_ms_per_result else "-"
                    for c in columns
                ),
            ]
            for run_ in (logger, *peers)
        ],
    )
    verdict = "[green]met[/green]" if logger.rate >= GOAL_PER_S else "[red]missed[/red]"
    console.print(f"goal >= {GOAL_PER_S:,.0f} results/s: {verdict} ({logger.rate:,.0f} results/s)")


async def main(args: argparse.Namespace) -> None:
    count = args.results or (FULL if args.full else SMALL)["results"]
    print_header("logger ingest", {"results": count})
    events = completions(count)
    async with embedded_stack("logger", keep=args.keep) as bench:
        logger = await logger_run(bench, events, args.profile)
        bench.stack.stop_process("logger")
        peers = await peer_runs(bench, events[: args.peer_results or PEER_RESULTS], args.profile)
    report(count, logger, peers)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m rea_bench.logger_ingest",
        description="Results/s recorded by the logger service vs plain inserts into the same SecantusDB.",
    )
    parser.add_argument(
        "--full", action="store_true", help=f"the documented full size: {FULL['results']:,} results"
    )
    parser.add_argument("--results", type=int, help=f"job.completed events (small {SMALL['results']:,})")
    parser.add_argument(
        "--peer-results",
        type=int,
        help=f"how many of the same documents each peer writes (default {PEER_RESULTS:,}, or all if fewer)",
    )
    parser.add_argument(
        "--profile", type=Path, help="also sample the logger and SecantusDB with py-spy; raw profiles go here"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary home and its logs")
    return parser.parse_args(argv)


if __name__ == "__main__":
    run(main(parse_args()))
