"""Bad input: malformed messages are dead-lettered with a reason and the services keep
running; invalid campaigns are rejected with a reason a person can act on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from rea.client import Client
from rea.events import DeadLetter
from rea.settings import Settings
from rea.store import Store
from rea_tools.stack import EmbeddedStack

from .helpers import campaign_request, eventually, finished, run_rea, submit

pytestmark = pytest.mark.e2e

MALFORMED: list[bytes] = [
    b"\xff\xfe\x00 not json",
    b'{"type": "campaign.requested"',
    b"[1, 2, 3]",
    json.dumps(
        {"type": "campaign.exploded", "version": 1, "campaign_id": "c", "correlation_id": "c", "payload": {}}
    ).encode(),
    json.dumps(
        {
            "type": "campaign.requested",
            "version": 99,
            "campaign_id": "c",
            "correlation_id": "c",
            "payload": {},
        }
    ).encode(),
    json.dumps(
        {
            "type": "job.completed",
            "version": 1,
            "campaign_id": 7,
            "correlation_id": "c",
            "payload": {"spec": "nope"},
        }
    ).encode(),
    b'{"type": "campaign.requested", "payload": "' + b"x" * 200_000 + b'"}',
]


async def test_malformed_events_reach_the_dead_letter_topic(
    services: EmbeddedStack, client: Client, store: Store, settings: Settings
) -> None:
    for name in ("logger", "hypothesis", "planner", "executor"):
        services.start_service(name)
    topics = [client.topics.campaign_requests, client.topics.job_events]
    for topic in topics:
        for raw in MALFORMED:
            await client.send(topic, b"bad", raw)

    consumer = AIOKafkaConsumer(
        client.topics.dead_letter,
        bootstrap_servers=str(settings.kafka_bootstrap),
        auto_offset_reset="earliest",
        group_id=f"{settings.topic_prefix}-probe",
    )
    await consumer.start()
    letters: list[DeadLetter] = []
    expected = {len(m) for m in MALFORMED}

    # Each consuming service dead-letters what it receives (the logger reads every topic too),
    # so count distinct original messages per topic.
    def sizes(topic: str) -> set[int]:
        return {letter.original_size for letter in letters if letter.topic == topic}

    try:

        async def collected() -> bool:
            batch = await consumer.getmany(timeout_ms=500)
            letters.extend(DeadLetter.model_validate_json(m.value) for ms in batch.values() for m in ms)
            return all(sizes(topic) == expected for topic in topics)

        await eventually(collected, "dead letters of both topics", 60)
    finally:
        await consumer.stop()

    for topic in topics:
        assert sizes(topic) == expected
    reasons = " | ".join(letter.reason for letter in letters)
    assert "Invalid JSON" in reasons
    assert "campaign.exploded" in reasons  # unknown type is named
    assert "version" in reasons  # unsupported version is named
    assert all(len(letter.original) <= 4096 for letter in letters)

    # The logger keeps them in the database for people to inspect.
    async def stored() -> bool:
        return await store.dead_letters.count_documents({}) >= len(letters)

    await eventually(stored, "dead letters recorded")

    # Every service is still running and still works.
    assert all(proc.poll() is None for proc in services.children.values())
    campaign_id = await submit(client, campaign_request(budget_cpu_seconds=-5))
    state = await finished(client, campaign_id, 60)
    assert state.status == "rejected"


INVALID: list[tuple[dict[str, Any], str]] = [
    ({"workload": "no-such-model"}, "unknown workload 'no-such-model'"),
    ({"dataset": "imagenet"}, "dataset"),
    ({"dataset": "criteo:/no/such/file.tsv"}, "/no/such/file.tsv"),
    ({"baseline": {"learning_rate": 5.0}}, "learning_rate"),
    ({"baseline": {"warp_drive": 1}}, "unknown knob 'warp_drive'"),
    ({"budget_cpu_seconds": 0}, "budget_cpu_seconds"),
    ({"budget_cpu_seconds": 0.5}, "cannot cover even the baseline"),
]


async def test_invalid_campaigns_are_rejected_with_reasons(services: EmbeddedStack, client: Client) -> None:
    for name in ("logger", "hypothesis", "planner"):
        services.start_service(name)
    submitted = [(await submit(client, campaign_request(**change)), why) for change, why in INVALID]
    missing = campaign_request()
    del missing["dataset"]
    submitted.append((await submit(client, missing), "dataset: Field required"))

    for campaign_id, why in submitted:
        state = await finished(client, campaign_id, 60)
        assert state.status == "rejected"
        assert any(why in reason for reason in state.reasons), (why, state.reasons)


def test_rea_submit_shows_the_rejection(services: EmbeddedStack, env: dict[str, str], tmp_path: Path) -> None:
    for name in ("hypothesis", "planner"):
        services.start_service(name)
    path = tmp_path / "campaign.yaml"
    path.write_text("name: bad\ndataset: movielens-100k\nbudget_cpu_seconds: -1\n")

    done = run_rea(["submit", str(path)], env)

    assert done.returncode == 1
    assert "Campaign rejected" in done.stderr
    assert "budget_cpu_seconds" in done.stderr and "greater than 0" in done.stderr

    # A portfolio: each document is published and answered on its own.
    portfolio = tmp_path / "portfolio.yaml"
    portfolio.write_text(
        "campaigns:\n"
        "  - {name: fine, grant: e2e-manual, dataset: 'synthetic:rows=2000', budget_cpu_seconds: 30}\n"
        "  - {name: bad, dataset: movielens-100k, budget_cpu_seconds: -1}\n"
    )
    done = run_rea(["submit", str(portfolio)], env)
    assert done.returncode == 1
    first, second = done.stdout.split()
    assert f"Campaign {first}: awaiting_approval" in done.stderr
    assert f"Campaign rejected: {second}" in done.stderr
