"""Fair shares of the workers: stride scheduling weighted by budget, as pure functions."""

from __future__ import annotations

from dataclasses import replace

import pytest

from rea_executor.service import JOINING_PASS_READ_SHARE, JOINING_PASS_TTL_S, Remembered
from rea_executor.shares import Tenant, grants, joining_pass, placements, slots


def tenant(key: str, weight: float = 100.0, stride_pass: float = 0.0, in_flight: int = 0, pending: int = 50,
           cost: float = 1.0, max_parallel: int = 8) -> Tenant:  # fmt: skip
    return Tenant(key, weight, stride_pass, in_flight, (cost,) * pending, max_parallel)


def simulate(tenants: list[Tenant], capacity: int, rounds: int) -> dict[str, int]:
    """Grant, then finish the oldest job in flight, ``rounds`` times: how many each ran."""
    ran = {t.key: 0 for t in tenants}
    running: list[str] = []
    by_key = {t.key: t for t in tenants}
    for _ in range(rounds):
        granted = grants(list(by_key.values()), capacity)
        for key, n in granted.items():
            t = by_key[key]
            spent = sum(t.pending_costs[:n])
            by_key[key] = replace(
                t,
                stride_pass=t.stride_pass + spent / t.weight,
                in_flight=t.in_flight + n,
                pending_costs=t.pending_costs[n:] + t.pending_costs[:n],  # an endless supply
            )
            running += [key] * n
        done = running.pop(0)
        by_key[done] = replace(by_key[done], in_flight=by_key[done].in_flight - 1)
        ran[done] += 1
    return ran


def test_without_a_worker_count_each_phase_submits_up_to_its_own_parallelism() -> None:
    assert grants([tenant("a", in_flight=1, max_parallel=2), tenant("b", pending=1)], None) == {
        "a": 1,
        "b": 1,
    }


def test_free_slots_go_to_the_lowest_pass_and_never_past_a_phases_parallelism() -> None:
    tenants = [
        tenant("a", stride_pass=5.0),
        tenant("b", stride_pass=0.0, max_parallel=1),
        tenant("c", 100, 1.0),
    ]
    assert grants(tenants, 3) == {"a": 0, "b": 1, "c": 2}  # c stays below a after one grant
    assert grants(tenants, 1) == {"a": 0, "b": 1, "c": 0}
    busy = [replace(t, in_flight=1) for t in tenants]
    assert grants(busy, 3) == {"a": 0, "b": 0, "c": 0}  # every slot is taken


@pytest.mark.parametrize(("weights", "capacity"), [((300.0, 100.0), 1), ((100.0, 100.0, 200.0, 400.0), 2)])
def test_over_time_each_campaign_runs_its_budget_share_of_the_jobs(
    weights: tuple[float, ...], capacity: int
) -> None:
    tenants = [tenant(f"t{i}", weight=w) for i, w in enumerate(weights)]
    ran = simulate(tenants, capacity, 800)
    total = sum(ran.values())
    for i, weight in enumerate(weights):
        assert ran[f"t{i}"] / total == pytest.approx(weight / sum(weights), abs=0.02)


def test_a_small_campaign_is_not_starved() -> None:
    ran = simulate([tenant("big", weight=10_000.0), tenant("small", weight=10.0)], 1, 3000)
    assert ran["small"] >= 2


def test_a_phase_joins_where_its_campaign_left_off_and_a_new_campaign_at_the_lowest_pass() -> None:
    running = [tenant("a", stride_pass=7.0), tenant("b", stride_pass=3.0)]
    assert joining_pass([]) == 0.0
    assert joining_pass(running) == 3.0  # a new campaign: owed nothing for arriving late
    assert joining_pass(running, campaigns_pass=5.0) == 5.0  # its next phase keeps its account
    assert joining_pass(running, campaigns_pass=1.0) == 1.0


def test_a_new_campaign_joins_at_what_the_others_really_used_not_at_estimates_in_flight() -> None:
    """Four first jobs estimated at 10 CPU-s each by a cold-start prior, in flight, really cost
    about 2 each: a newcomer joining at the charged pass would stay ahead of the running
    campaign once those estimates are corrected, and that campaign would take its turns."""
    running = replace(tenant("a", weight=90.0, stride_pass=40 / 90, in_flight=4), in_flight_cost=40.0)
    assert running.settled_pass == pytest.approx(0.0)
    assert joining_pass([running]) == pytest.approx(0.0)
    partly = replace(running, stride_pass=(30 + 2) / 90, in_flight=3, in_flight_cost=30.0)  # one ended
    assert joining_pass([partly, tenant("b", stride_pass=1.0)]) == pytest.approx(2 / 90)


def test_weights_hold_when_campaigns_run_as_many_short_phases() -> None:
    """Each round of two jobs is a phase of its own, which rejoins with its campaign's pass."""
    weights = {"small": 100.0, "big": 200.0}
    left = dict.fromkeys(weights, 2)  # jobs left in each campaign's current phase
    phases = {c: tenant(c, weight=w, pending=2, max_parallel=2) for c, w in weights.items()}
    ran = dict.fromkeys(weights, 0)
    for _ in range(300):
        [chosen] = [k for k, n in grants(list(phases.values()), 1).items() if n]
        t = phases[chosen]
        phases[chosen] = replace(t, stride_pass=t.stride_pass + 1.0 / t.weight)
        ran[chosen] += 1
        left[chosen] -= 1
        if not left[chosen]:  # the phase ends; the next one joins where it left off
            others = [p for k, p in phases.items() if k != chosen]
            phases[chosen] = replace(t, stride_pass=joining_pass(others, phases[chosen].stride_pass))
            left[chosen] = 2
    assert ran["big"] / sum(ran.values()) == pytest.approx(2 / 3, abs=0.02)


def test_competing_phases_queue_no_job_behind_a_worker_and_a_phase_alone_queues_one_each() -> None:
    """A queued job runs next on its worker whoever is owed the worker when it frees; a phase
    alone owes no one, and keeps its workers from waiting on a grant."""
    assert slots(3, [tenant("a")]) == 6
    assert slots(3, []) == 6
    assert slots(3, [tenant("a"), tenant("b")]) == 3


def test_jobs_go_to_a_partition_of_the_least_busy_worker() -> None:
    """A worker's partitions are its queue: a job keyed at random may wait behind a busy worker
    while another idles. Jobs running count for their worker, jobs sent but not started for
    the worker that reads their partition."""
    workers = {"w1": [0, 1], "w2": [2], "new": []}
    assert placements(workers, [("w1", None)], 1) == [2]
    assert placements(workers, [(None, 2), (None, 2)], 3) == [0, 0, 0]  # ties: by name
    assert placements(workers, [("w1", 0), ("gone", 5)], 2) == [2, 0]  # "gone": no longer a worker
    assert placements({"w": []}, [], 2) == [None, None]  # no worker has said what it reads yet


async def test_newcomers_share_one_reading_of_the_lowest_pass_for_a_second_or_ten_reads() -> None:
    now = [0.0]
    read_s = [0.0]
    reads: list[float] = []

    async def read() -> float:
        reads.append(now[0])
        now[0] += read_s[0]
        return float(len(reads))

    remembered = Remembered(JOINING_PASS_TTL_S, JOINING_PASS_READ_SHARE, lambda: now[0], read)
    assert [await remembered.get() for _ in range(3)] == [1.0, 1.0, 1.0]
    now[0] = JOINING_PASS_TTL_S
    read_s[0] = 0.5  # a slow read: reused for ten times as long as it took
    assert await remembered.get() == 2.0
    now[0] += 0.5 / JOINING_PASS_READ_SHARE - 0.01
    assert await remembered.get() == 2.0
    now[0] += 0.01
    assert await remembered.get() == 3.0
    assert reads == [0.0, JOINING_PASS_TTL_S, JOINING_PASS_TTL_S + 0.5 + 0.5 / JOINING_PASS_READ_SHARE]
