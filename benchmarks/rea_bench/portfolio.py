"""Portfolio: eight campaigns on two workloads at once on one stack, against the same eight one
after another on the same stack.

Both modes run the real services and workers (the embedded stack), the same campaign requests
(four on the ``ranker``, four on the ``autoint`` example, budgets of one and two units), each
set to spend its whole budget (``exploitation_patience=0``). The peer is the plain way to run
several campaigns on one pool: one at a time, each with the whole pool. Measured:

* **jobs per hour**: training jobs that ran to an end (the job ledger) per hour of wall time,
  from the first request to the last campaign's end; the goal is at least 0.9x the sequential
  rate (sharing must not cost throughput);
* **completed**: every campaign of both modes must complete;
* **share of worker CPU while all ran** (at once only): each campaign's CPU in the window when
  every campaign had started and none had ended, against its share of the budgets (the goal is
  within 25%).

    python -m rea_bench.portfolio             # 8 campaigns of 60 / 120 CPU-s, 2 workers
    python -m rea_bench.portfolio --unit 40   # a quicker run
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rea.client import FINAL_STATUSES, Client
from rea.events import CampaignRequested, new_id
from rea.grants import own_terms
from rea.ledger import JobLedger, JobRun
from rea.views import CampaignView
from rea_bench.common import Bench, embedded_stack, run, wait_until
from rea_bench.output import console, print_header, print_table

SERVICES = ("logger", "hypothesis", "planner", "executor")
DATASETS = ("synthetic:rows=3000,crosses=1,strength=3", "synthetic:seed=1,rows=3000,crosses=2,strength=2")
GOAL_RATIO = 0.9
GOAL_SHARE = 0.25
GRANT = "portfolio"


@dataclass
class Mode:
    name: str
    completed: int
    jobs: int
    seconds: float
    shares: dict[str, tuple[float, float]]  # campaign -> (CPU share while all ran, budget share)
    demand: dict[str, tuple[float, float]]  # campaign -> (share of the window with a job, mean gap s)

    @property
    def jobs_per_hour(self) -> float:
        return self.jobs / self.seconds * 3600


def requests(unit: float) -> list[dict[str, Any]]:
    """Four campaigns per workload over two data sets, budgets of one and two units."""
    made = []
    for index in range(8):
        workload = "ranker" if index % 2 == 0 else "autoint"
        budget = unit * (1 + index // 4)
        made.append(
            {
                "name": f"portfolio {index}",
                "workload": workload,
                "dataset": DATASETS[(index // 2) % 2],
                "grant": GRANT,
                "budget_cpu_seconds": budget,
                "max_parallel_jobs": 4,
                "max_hypotheses": 6,
                "confirm_seeds": 1,
                "exploitation_patience": 0,
                "baseline": {"epochs" if workload == "ranker" else "passes": 1},
                "seed": index,
            }
        )
    return made


async def start(bench: Bench, workers: int) -> None:
    for service in SERVICES:
        await bench.start_service(service)
    for index in range(workers):
        name = f"worker-{index}"
        bench.stack.start_service("worker", name)
        log = bench.stack.home / "logs" / f"{name}.log"

        async def started(log: Any = log) -> bool:
            return log.exists() and "service_started" in log.read_text(errors="replace")

        await wait_until(started, f"{name} to start", 90, poll_s=0.2)


async def campaigns(client: Client, batch: list[dict[str, Any]]) -> list[tuple[str, CampaignView | None]]:
    ids = [new_id() for _ in batch]
    for campaign_id, request in zip(ids, batch, strict=True):
        await client.publish(
            CampaignRequested(campaign_id=campaign_id, correlation_id=campaign_id, payload=request)
        )
    states = await asyncio.gather(*(client.wait_for(c, FINAL_STATUSES, 7200) for c in ids))
    return list(zip(ids, states, strict=True))


def cpu_in(run: JobRun, start: datetime, end: datetime) -> float:
    if run.started_at is None or run.finished_at is None or run.finished_at <= run.started_at:
        return 0.0
    overlap = (min(run.finished_at, end) - max(run.started_at, start)).total_seconds()
    return max(0.0, overlap) / (run.finished_at - run.started_at).total_seconds() * run.cpu_seconds


def demand_in(runs: list[JobRun], start: datetime, end: datetime) -> tuple[float, float]:
    """Why a share can fall short of the budget share: the part of the window in which the
    campaign had a job claimed by a worker (a campaign between rounds has none to be given a
    slot), and the mean wait from one phase's last job to the next phase's first."""
    spans = sorted(
        (r.claimed_at or r.started_at, r.finished_at, r.phase)
        for r in runs
        if r.started_at is not None and r.finished_at is not None
    )
    busy, reached = 0.0, start
    by_phase: dict[str, list[tuple[datetime, datetime]]] = {}
    for begin, finish, phase in spans:
        assert begin is not None and finish is not None
        by_phase.setdefault(phase, []).append((begin, finish))
        begin, finish = max(begin, reached), min(finish, end)
        if finish > begin:
            busy += (finish - begin).total_seconds()
            reached = finish
    bounds = sorted((min(b for b, _ in ps), max(f for _, f in ps)) for ps in by_phase.values())
    gaps = [
        (nxt[0] - last[1]).total_seconds() for last, nxt in itertools.pairwise(bounds) if nxt[0] > last[1]
    ]
    window = (end - start).total_seconds()
    return (busy / window if window > 0 else 0.0, sum(gaps) / len(gaps) if gaps else 0.0)


async def grant(bench: Bench, most: float) -> None:
    """The grant every campaign of the bench runs under: the largest budget, auto-approved."""
    terms = own_terms(bench.settings, most, team="portfolio", auto_approve_up_to=most)
    client = Client(bench.settings, bench.endpoints)
    try:
        await client.ensure_grant(GRANT, terms)
    finally:
        await client.close()


async def measure(bench: Bench, name: str, batch: list[dict[str, Any]], together: bool) -> Mode:
    client = Client(bench.settings, bench.endpoints)
    try:
        began = time.monotonic()
        with console.status(f"{name}: {len(batch)} campaigns"):
            if together:
                finished = await campaigns(client, batch)
            else:
                finished = [pair for request in batch for pair in await campaigns(client, [request])]
        seconds = time.monotonic() - began
        ledger = JobLedger(client.db["job_runs"])
        runs = {c: [r for r in await ledger.of_campaign(c) if r.finished_at] for c, _ in finished}
    finally:
        await client.close()
    completed = sum(state is not None and state.status == "completed" for _, state in finished)
    shares: dict[str, tuple[float, float]] = {}
    demand: dict[str, tuple[float, float]] = {}
    if together and all(runs.values()):
        start = max(min(r.started_at for r in rs if r.started_at) for rs in runs.values())
        end = min(max(r.finished_at for r in rs if r.finished_at) for rs in runs.values())
        used = {c: sum(cpu_in(r, start, end) for r in rs) for c, rs in runs.items()}
        demand = {c: demand_in(rs, start, end) for c, rs in runs.items()}
        budgets = {
            c: float(request["budget_cpu_seconds"]) for (c, _), request in zip(finished, batch, strict=True)
        }
        if sum(used.values()) > 0:
            shares = {c: (used[c] / sum(used.values()), budgets[c] / sum(budgets.values())) for c in used}
    return Mode(name, completed, sum(len(rs) for rs in runs.values()), seconds, shares, demand)


async def main(unit: float, workers: int) -> None:
    print_header("portfolio", {"campaigns": 8, "unit_cpu_s": unit, "workers": workers})
    batch = requests(unit)
    async with embedded_stack("portfolio") as bench:
        await start(bench, workers)
        await grant(bench, 2 * unit)
        together = await measure(bench, "at once", batch, together=True)
        sequential = await measure(bench, "one after another", batch, together=False)
    ratio = together.jobs_per_hour / sequential.jobs_per_hour
    print_table(
        "Eight campaigns on two workloads, one stack",
        ["mode", "completed", "jobs", "wall s", "jobs/hour", "vs one after another"],
        [
            [m.name, f"{m.completed}/8", str(m.jobs), f"{m.seconds:.0f}", f"{m.jobs_per_hour:.0f}", r]
            for m, r in ((together, f"{ratio:.2f}x"), (sequential, ""))
        ],
        caption=f"goal: at least {GOAL_RATIO}x, every campaign completed",
    )
    if together.shares:
        print_table(
            "Share of worker CPU while all eight ran (at once)",
            ["campaign", "workload", "budget share", "CPU share", "ratio", "with a job", "gap s"],
            [
                [
                    c[:8],
                    request["workload"],
                    f"{due:.1%}",
                    f"{share:.1%}",
                    f"{share / due:.2f}",
                    f"{together.demand[c][0]:.0%}",
                    f"{together.demand[c][1]:.1f}",
                ]
                for (c, (share, due)), request in zip(together.shares.items(), batch, strict=True)
            ],
            caption=f"goal: every ratio within 1 +/- {GOAL_SHARE}",
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--unit", type=float, default=60.0, help="CPU seconds of the smaller budgets")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    run(main(args.unit, args.workers))
