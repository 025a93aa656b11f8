"""What people's tools (the CLI, tests, notebooks) use to talk to a running REA."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaProducer
from pymongo import AsyncMongoClient

from rea.events import Envelope, encode_event
from rea.phases import order as phase_order
from rea.settings import Settings
from rea.stack import Endpoints, resolve_endpoints
from rea.topics import Topics

FINAL_STATUSES = frozenset({"rejected", "completed", "failed"})


class Client:
    def __init__(self, settings: Settings, endpoints: Endpoints | None = None) -> None:
        self.settings = settings
        self.endpoints = endpoints or resolve_endpoints(settings)
        self.topics = Topics(settings.topic_prefix)
        self.mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            self.endpoints.mongo_uri, tz_aware=True, serverSelectionTimeoutMS=10_000
        )
        self.db = self.mongo[settings.mongo_db]

    async def close(self) -> None:
        await self.mongo.close()

    async def publish(self, event: Envelope) -> None:
        await self.send(self.topics.for_event(event.type), event.key(), encode_event(event))

    async def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.endpoints.kafka_bootstrap,
            enable_idempotence=self.settings.kafka_idempotence,
        )
        await producer.start()
        try:
            await producer.send_and_wait(topic, value, key=key)
        finally:
            await producer.stop()

    async def campaign(self, campaign_id: str) -> dict[str, Any] | None:
        doc = await self.db["campaigns"].find_one({"_id": campaign_id})
        return None if doc is None else dict(doc["state"])

    async def campaigns(self, limit: int = 50) -> list[dict[str, Any]]:
        cursor = self.db["campaigns"].find().sort("state.created_at", -1).limit(limit)
        return [doc["state"] async for doc in cursor]

    async def phase(self, campaign_id: str, phase: str = "validation") -> dict[str, Any] | None:
        doc = await self.db["phases"].find_one({"_id": f"{campaign_id}:{phase}"})
        return None if doc is None else dict(doc["state"])

    async def proposal(self, campaign_id: str) -> dict[str, Any] | None:
        """The stored launch proposal: ``markdown``, ``html`` and ``images`` (file name -> PNG)."""
        return await self.db["proposals"].find_one({"_id": campaign_id})

    async def phases(self, campaign_id: str) -> list[dict[str, Any]]:
        """Every phase the executor ran for the campaign, in the order phases run."""
        states = [
            dict(doc["state"]) async for doc in self.db["phases"].find({"state.campaign_id": campaign_id})
        ]
        return sorted(states, key=lambda state: phase_order(state["phase"]))

    async def results(self, campaign_id: str) -> list[dict[str, Any]]:
        return [
            doc async for doc in self.db["results"].find({"campaign_id": campaign_id}).sort("recorded_at", 1)
        ]

    async def wait_for(
        self, campaign_id: str, statuses: frozenset[str], timeout_s: float, poll_s: float = 0.5
    ) -> dict[str, Any] | None:
        """Wait until the campaign reaches one of ``statuses``; returns its state (None on time-out)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = await self.campaign(campaign_id)
            if state is not None and state["status"] in statuses:
                return state
            await asyncio.sleep(poll_s)
        return None
