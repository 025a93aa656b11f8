"""Fair shares of the job workers between campaigns: stride scheduling, weighted by budget.

Many campaigns run at once on one pool of workers. Each running phase is a *tenant* whose
weight is its campaign's approved budget; a paused phase, or a campaign waiting for approval
(no phase yet), is no tenant and takes no share. A worker slot that frees up goes to the tenant
with the lowest *pass*: the CPU seconds it was granted, divided by its weight (Waldspurger and
Weihl, Stride Scheduling, 1995). Granting a job advances the tenant's pass by the job's
estimated CPU seconds over its weight, corrected to what it really used when it ends, so over
time each campaign's share of worker CPU follows its share of the budgets, and no campaign
starves: every grant to the others raises their pass until the waiting one is lowest.

A campaign's pass carries over from one of its phases to the next (``joining_pass``), so over
its life a campaign's CPU follows its budget share: one resumed after a pause is granted first
until it has caught up. A campaign's first phase joins at the lowest *settled* pass among the
running tenants (what their finished jobs really used, not the estimates of those in flight):
it is owed nothing for arriving late, and a running campaign whose first jobs were estimated
high (a cold-start prior several times their real cost) is not put behind the newcomers once
those estimates are corrected (measured before: a 90 CPU-s campaign that started first took
1.5x its share while four ran).

Slots (:func:`slots`): a job submitted but not yet started holds its slot. While campaigns
compete, there is one slot per live worker and no job waits in a queue: a worker's queue is
its own Kafka partitions, so a job queued there runs after that worker's current job whoever
is owed the next free worker, and a campaign back from planning its next round would find
the queues filled by those that were not (measured with two queued slots per worker: the
larger campaigns got 0.6-0.9 of their share, the smaller up to 1.7). A phase alone
keeps one job queued per worker, so a worker never waits on a grant. Without a count of
workers (``None``) nothing is shared: every phase submits up to its own parallelism.

Placement (:func:`placements`): each granted job is sent to a partition of the live worker with
the fewest jobs, so a job does not wait behind a busy worker while another idles.

Pure functions of the tenants, the workers and the capacity, so the executor's decisions stay
replayable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Tenant:
    """A running phase as the share-out sees it."""

    key: str
    weight: float
    stride_pass: float
    in_flight: int
    pending_costs: tuple[float, ...]
    """Estimated CPU seconds of its pending jobs, in the order it would submit them."""
    max_parallel: int
    in_flight_cost: float = 0.0
    """Estimated CPU seconds of its jobs in flight: charged to its pass when they were granted,
    corrected to what they used when they end."""

    @property
    def settled_pass(self) -> float:
        """The pass without the estimates of the jobs in flight: what it has really used."""
        return self.stride_pass - self.in_flight_cost / max(self.weight, 1e-9)


def joining_pass(tenants: list[Tenant], campaigns_pass: float | None = None) -> float:
    """Where a phase that starts now joins: where its campaign's last phase left off, so short
    phases (an exploitation round) do not reset a campaign's account; a campaign's first phase
    joins at the lowest settled pass of the running tenants (0 if none), owed nothing for having
    arrived late."""
    if campaigns_pass is not None:
        return campaigns_pass
    return min((t.settled_pass for t in tenants), default=0.0)


QUEUE_DEPTH_ALONE = 2
"""Slots per live worker while a single phase runs: its running job and the next one."""


def slots(workers: int, tenants: list[Tenant]) -> int:
    """The jobs that may be in flight at once: one per worker while phases compete for them
    (a queued job would run before whoever is owed the worker when it frees), one more per
    worker queued when a phase runs alone."""
    return workers * (QUEUE_DEPTH_ALONE if len(tenants) <= 1 else 1)


def grants(tenants: list[Tenant], capacity: int | None) -> dict[str, int]:
    """How many more jobs each tenant may submit now: the free slots, handed out one at a time
    to the tenant with the lowest pass that still has a pending job and room under its own
    parallelism. Ties go to the tenant listed first."""
    if capacity is None:
        return {t.key: max(0, min(t.max_parallel - t.in_flight, len(t.pending_costs))) for t in tenants}
    free = capacity - sum(t.in_flight for t in tenants)
    granted = {t.key: 0 for t in tenants}
    passes = {t.key: t.stride_pass for t in tenants}
    while free > 0:
        ready = [
            t
            for t in tenants
            if granted[t.key] < len(t.pending_costs) and t.in_flight + granted[t.key] < t.max_parallel
        ]
        if not ready:
            break
        chosen = min(ready, key=lambda t: passes[t.key])
        passes[chosen.key] += chosen.pending_costs[granted[chosen.key]] / max(chosen.weight, 1e-9)
        granted[chosen.key] += 1
        free -= 1
    return granted


def placements(
    workers: Mapping[str, Sequence[int]], in_flight: Iterable[tuple[str | None, int | None]], count: int
) -> list[int | None]:
    """Where ``count`` new jobs go: each to a job queue partition of the live worker with the
    fewest jobs, counting those it runs and those already sent to its partitions. A worker's
    partitions are its queue, so a job sent by key alone may wait behind a busy worker while
    another idles. ``in_flight``: (worker running it, partition it was sent to) of every job
    submitted and not finished. None (by key) when no worker has said which partitions it reads.
    """
    readers = {w: sorted(ps) for w, ps in sorted(workers.items()) if ps}
    if not readers:
        return [None] * count
    owner = {p: w for w, ps in readers.items() for p in ps}
    load = dict.fromkeys(readers, 0)
    for worker, partition in in_flight:
        holder = worker if worker in load else owner.get(partition) if partition is not None else None
        if holder is not None:
            load[holder] += 1
    placed: list[int | None] = []
    for _ in range(count):
        least = min(load, key=lambda w: (load[w], w))
        load[least] += 1
        placed.append(readers[least][0])
    return placed
