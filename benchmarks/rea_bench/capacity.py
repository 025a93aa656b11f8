"""Capacity: many hibernated campaigns, and what they cost the executor process in memory.

Only the real executor service process runs. The benchmark publishes ``phase.started`` for N
campaigns; each phase's jobs all fit ``max_parallel_jobs``, so the executor submits every one
of them and then the campaign waits for results that never come: it is hibernated, a
MongoDB document and nothing else. The executor's resident memory (VmRSS from
``/proc/PID/status``) is read before and after.

Peers, in the same process and the same run, each with N events that create no state, so
growth that belongs to campaigns is told apart from allocator noise:

* **ignored**: ``plan.proposed`` events (the same plan, the same bytes) on the planner topic;
  the executor parses each and skips it (it has no handler for the type).
* **handled, no state**: ``job.started`` for phases that do not exist; each runs the full
  ``Store.apply`` transaction (dedup marker) but leaves no phase document and emits nothing.

Order: warm-up (a few of each kind), then ignored, handled-no-state, campaigns, and ignored
again (so a one-time growth in the first stage shows as such). Each stage
ends when the executor's consumer group has committed every message and, for campaigns,
its outbox relay has published every ``job.submitted``.

    python -m rea_bench.capacity            # small: 500 campaigns
    python -m rea_bench.capacity --full     # 10,000 campaigns
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition
from pymongo import AsyncMongoClient

from rea.events import (
    Envelope,
    JobStarted,
    JobStartedPayload,
    PlanProposed,
    PlanProposedPayload,
    encode_event,
    new_id,
)
from rea.topics import Topics
from rea_bench.common import (
    Bench,
    Doc,
    consumer_group_lag,
    embedded_stack,
    kafka_producer,
    phase_started,
    publish_many,
    rss_mb,
    run,
    wait_until,
)
from rea_bench.output import console, print_header, print_table

GOAL_GROWTH_MB = 200.0
SMALL = {"campaigns": 500}
FULL = {"campaigns": 10_000}
WARMUP = 50
CAMPAIGNS_STAGE = "hibernated campaigns (phase.started)"
STAGE_TIMEOUT_S = 1800.0


@dataclass
class Stage:
    name: str
    events: int
    seconds: float
    rss_before: float
    rss_after: float
    rss_peak: float

    @property
    def growth(self) -> float:
        return self.rss_after - self.rss_before


def ignored_event(jobs: int) -> Envelope:
    plan = phase_started(new_id(), jobs, jobs).payload.plan
    campaign_id = plan.jobs[0].campaign_id
    return PlanProposed(
        campaign_id=campaign_id,
        correlation_id=campaign_id,
        payload=PlanProposedPayload(plan=plan, requires_approval=False),
    )


def stateless_event(jobs: int) -> Envelope:
    campaign_id = new_id()
    return JobStarted(
        campaign_id=campaign_id,
        correlation_id=campaign_id,
        payload=JobStartedPayload(job_id=f"{campaign_id}-none", phase="validation", worker="bench-worker"),
    )


def campaign_event(jobs: int) -> Envelope:
    """A phase whose jobs all start at once, so every job is submitted and the phase then waits."""
    return phase_started(new_id(), jobs, max_parallel_jobs=jobs)


async def run_stage(
    bench: Bench,
    producer: AIOKafkaProducer,
    db_client: AsyncMongoClient[Doc],
    pid: int,
    name: str,
    make: Callable[[int], Envelope],
    count: int,
    jobs: int,
) -> Stage:
    """Publish ``count`` events and wait until the executor has handled all of them."""
    topics: Topics = bench.topics
    outbox = db_client[bench.settings.mongo_db]["outbox"]
    before = rss_mb(pid)
    peak = before
    started = time.monotonic()
    ends: dict[TopicPartition, int] = {}
    with console.status(f"{name}: publishing {count} events"):
        for offset in range(0, count, 1000):
            events = [make(jobs) for _ in range(min(1000, count - offset))]
            topic = topics.for_event(events[0].type)
            acked = await publish_many(producer, topic, [(e.key(), encode_event(e)) for e in events])
            ends.update({tp: max(end, ends.get(tp, 0)) for tp, end in acked.items()})

    async def done() -> bool:
        nonlocal peak
        bench.check_alive("executor")
        peak = max(peak, rss_mb(pid))
        lag = await consumer_group_lag(bench.endpoints.kafka_bootstrap, bench.topics.group("executor"), ends)
        return lag == 0 and await outbox.count_documents({"published": False}) == 0

    with console.status(f"{name}: waiting for the executor"):
        await wait_until(done, f"the executor to handle the {name} events", STAGE_TIMEOUT_S, poll_s=1.0)
    seconds = time.monotonic() - started
    after = rss_mb(pid)
    return Stage(name, count, seconds, before, after, max(peak, after))


async def measure(bench: Bench, campaigns: int, jobs: int) -> tuple[list[Stage], dict[str, int], float]:
    pid = await bench.start_service("executor")
    client = bench.mongo()
    try:
        async with kafka_producer(bench.endpoints.kafka_bootstrap) as producer:
            for name, make in (("warm-up", stateless_event), ("warm-up", ignored_event)):
                await run_stage(bench, producer, client, pid, name, make, WARMUP, jobs)
            await run_stage(bench, producer, client, pid, "warm-up", campaign_event, WARMUP, jobs)
            start_rss = rss_mb(pid)
            stages = [
                await run_stage(bench, producer, client, pid, name, make, campaigns, jobs)
                for name, make in (
                    ("peer: ignored events (plan.proposed)", ignored_event),
                    ("peer: handled, no state (job.started, unknown phase)", stateless_event),
                    (CAMPAIGNS_STAGE, campaign_event),
                    ("peer: ignored events again, after the campaigns", ignored_event),
                )
            ]
        db = client[bench.settings.mongo_db]
        counts = {
            "phases (hibernated campaigns)": await db["phases"].count_documents({"state.status": "running"}),
            "outbox (job.submitted, published)": await db["outbox"].count_documents({"published": True}),
            "processed_events (dedup markers)": await db["processed_events"].count_documents({}),
        }
    finally:
        await client.close()
    return stages, counts, start_rss


def report(stages: list[Stage], counts: dict[str, int], start_rss: float, campaigns: int, jobs: int) -> None:
    rows = []
    for stage in stages:
        per_event_kb = stage.growth * 1024 / stage.events
        rows.append(
            [
                stage.name,
                f"{stage.events:,}",
                f"{stage.seconds:.1f}",
                f"{stage.events / stage.seconds:,.0f}",
                f"{stage.rss_before:.1f}",
                f"{stage.rss_after:.1f}",
                f"{stage.rss_peak:.1f}",
                f"{stage.growth:+.1f}",
                f"{per_event_kb:+.2f}",
            ]
        )
    print_table(
        "Executor process memory (VmRSS, MiB) while campaigns hibernate",
        ["stage", "events", "seconds", "events/s", "RSS before", "RSS after", "peak", "growth", "KiB/event"],
        rows,
        caption=f"RSS after warm-up {start_rss:.1f} MiB; {jobs} jobs per phase, all submitted, none done",
    )
    print_table(
        "MongoDB documents after the run (warm-up included)",
        ["collection", "documents"],
        [[name, f"{value:,}"] for name, value in counts.items()],
    )
    campaign = next(stage for stage in stages if stage.name == CAMPAIGNS_STAGE)
    peers = ", ".join(f"{stage.growth:+.1f}" for stage in stages if stage is not campaign)
    largest = max(stage.growth for stage in stages if stage is not campaign)
    within = "within" if campaign.growth <= largest else "above"
    verdict = "[green]met[/green]" if campaign.growth < GOAL_GROWTH_MB else "[red]missed[/red]"
    console.print(
        f"RSS growth over {campaigns:,} hibernated campaigns: {campaign.growth:+.1f} MiB "
        f"({campaign.growth * 1024 / campaigns:+.2f} KiB per campaign), {within} the range of the "
        f"stateless peers ({peers} MiB for the same number of events). "
        f"Goal growth < {GOAL_GROWTH_MB:.0f} MB: {verdict}"
    )


async def main(args: argparse.Namespace) -> None:
    campaigns = args.campaigns or (FULL if args.full else SMALL)["campaigns"]
    print_header("capacity", {"campaigns": campaigns, "jobs_per_phase": args.jobs, "warmup": WARMUP})
    async with embedded_stack("capacity", keep=args.keep) as bench:
        stages, counts, start_rss = await measure(bench, campaigns, args.jobs)
    report(stages, counts, start_rss, campaigns, args.jobs)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m rea_bench.capacity",
        description="Executor memory with many hibernated campaigns vs the same number of stateless events.",
    )
    parser.add_argument(
        "--full", action="store_true", help=f"the documented full size: {FULL['campaigns']:,} campaigns"
    )
    parser.add_argument("--campaigns", type=int, help=f"hibernated campaigns (small {SMALL['campaigns']})")
    parser.add_argument("--jobs", type=int, default=3, help="jobs per phase, all submitted (default 3)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home and its logs")
    return parser.parse_args(argv)


if __name__ == "__main__":
    run(main(parse_args()))
