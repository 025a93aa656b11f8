"""The doorbell's rules: when a consumer may sleep, what wakes it, which consumers a ring wakes,
what a glance finds. Consumers here are recording stand-ins for aiokafka's (pause, resume,
assignment, positions, end offsets); the doorbell on the real broker and Redis is tested in
``tests/e2e/test_doorbell.py``."""

from __future__ import annotations

from dataclasses import dataclass, field

from rea.doorbell import Doorbell, Sleeper, Wakefulness, behind
from rea.metrics import Metrics


@dataclass
class Consumer:
    assigned: set[str] = field(default_factory=lambda: {"t-0", "t-1"})
    paused_now: set[str] = field(default_factory=set)
    resumes: int = 0
    positions: dict[str, int] = field(default_factory=lambda: {"t-0": 3, "t-1": 7})
    ends: dict[str, int] = field(default_factory=lambda: {"t-0": 3, "t-1": 7})

    def assignment(self) -> set[str]:
        return set(self.assigned)

    def paused(self) -> set[str]:
        return set(self.paused_now)

    def pause(self, *partitions: str) -> None:
        self.paused_now |= set(partitions)

    def resume(self, *partitions: str) -> None:
        self.paused_now -= set(partitions)
        self.resumes += 1

    async def position(self, partition: str) -> int:
        return self.positions[partition]

    async def end_offsets(self, partitions: list[str]) -> dict[str, int]:
        return {tp: self.ends[tp] for tp in partitions}


def asleep(consumer: Consumer) -> Sleeper:
    sleeper = Sleeper(frozenset({"t"}), lambda: consumer, Wakefulness(1.0))
    sleeper.settle(0.0)  # first sight of its partitions: awake a while, they may hold a backlog
    sleeper.settle(1.0)
    assert sleeper.asleep
    return sleeper


def test_a_consumer_stays_awake_for_a_while_after_its_last_event() -> None:
    awake = Wakefulness(awake_s=1.0)
    awake.stir(10.0)
    assert not awake.may_sleep(10.5)
    assert awake.may_sleep(11.0)
    awake.stir(9.5)  # an older stir never shortens the while
    assert not awake.may_sleep(10.9)


def test_backlog_is_an_end_offset_past_the_position_or_a_position_not_known() -> None:
    assert not behind({"t-0": 5, "t-1": 0}, {"t-0": 5, "t-1": 0})
    assert behind({"t-0": 5, "t-1": 0}, {"t-0": 5, "t-1": 1})
    assert behind({"t-0": None}, {"t-0": 0})


def test_settle_pauses_every_assigned_partition_once_the_consumer_may_sleep() -> None:
    consumer = Consumer()
    sleeper = Sleeper(frozenset({"t"}), lambda: consumer, Wakefulness(1.0))
    sleeper.settle(0.0)
    assert consumer.paused_now == set() and not sleeper.asleep
    sleeper.settle(1.0)
    assert consumer.paused_now == {"t-0", "t-1"} and sleeper.asleep


def test_partitions_handed_out_by_a_rebalance_get_a_while_awake_then_sleep_too() -> None:
    consumer = Consumer()
    sleeper = asleep(consumer)
    consumer.assigned = {"t-0", "t-1", "t-2"}  # a rebalance: the new one is not paused
    sleeper.settle(1.5)
    assert consumer.paused_now == {"t-0", "t-1"}
    sleeper.settle(2.5)
    assert consumer.paused_now == {"t-0", "t-1", "t-2"}


def test_a_stir_resumes_a_sleeping_consumer_and_says_so_only_then() -> None:
    consumer = Consumer()
    sleeper = Sleeper(frozenset({"t"}), lambda: consumer, Wakefulness(1.0))
    sleeper.settle(0.0)
    assert not sleeper.stir(0.5)  # awake already: nothing to resume
    sleeper.settle(2.0)
    assert sleeper.stir(2.1)
    assert consumer.paused_now == set() and consumer.resumes == 1
    sleeper.settle(2.5)
    assert not sleeper.asleep  # a second wake keeps it awake its while


def test_a_consumer_not_started_yet_is_left_alone() -> None:
    sleeper = Sleeper(frozenset({"t"}), lambda: None, Wakefulness(1.0))
    sleeper.settle(100.0)
    assert not sleeper.asleep and not sleeper.stir(100.0)


async def test_a_glance_wakes_a_sleeping_consumer_only_when_its_partitions_hold_unread_events() -> None:
    bell = Doorbell(None, "p.doorbell", "svc", Metrics(), awake_s=1.0, glance_every_s=5.0)  # type: ignore[arg-type]
    consumer = Consumer()
    bell.sleepers.append(asleep(consumer))
    await bell.glance()
    assert consumer.paused_now == {"t-0", "t-1"}  # caught up: it sleeps on
    consumer.ends["t-1"] = 8  # a producer that does not ring wrote one event
    await bell.glance()
    assert consumer.paused_now == set() and not bell.sleepers[0].asleep
    assert bell.metrics.consumer_wakes.labels(service="svc", cause="glance")._value.get() == 1


def test_a_ring_wakes_the_consumers_of_its_topic_only() -> None:
    bell = Doorbell(None, "p.doorbell", "svc", Metrics(), awake_s=1.0, glance_every_s=5.0)  # type: ignore[arg-type]
    jobs, campaigns = Consumer(), Consumer()
    on_jobs = bell.watch(["p.jobs"], lambda: jobs)
    on_campaigns = bell.watch(["p.campaigns"], lambda: campaigns)
    for sleeper in (on_jobs, on_campaigns):
        sleeper.settle(0.0)
        sleeper.settle(1.0)
    bell.heard("p.jobs")
    assert not on_jobs.asleep and jobs.paused_now == set()
    assert on_campaigns.asleep and campaigns.paused_now == {"t-0", "t-1"}
    assert bell.metrics.consumer_wakes.labels(service="svc", cause="ring")._value.get() == 1
