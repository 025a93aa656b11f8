"""Fixtures: the real embedded servers (Tansu, SecantusDB, redis-server), started once per
session, and per test a private namespace on them (its own topic prefix and database) so
tests never collide."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from uuid import uuid4

import pytest
import pytest_asyncio

from rea.client import Client
from rea.runtime import ensure_topics
from rea.settings import Settings
from rea.stack import EmbeddedStack, Endpoints
from rea.store import Store
from rea.topics import Topics


@pytest.fixture(scope="session")
def endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    stack = EmbeddedStack(Settings(home=tmp_path_factory.mktemp("servers")), attached=True)
    try:
        yield stack.start_infra()
    finally:
        stack.stop()


@pytest.fixture
def settings(endpoints: Endpoints, tmp_path: Path) -> Settings:
    namespace = f"t{uuid4().hex[:10]}"
    made = Settings(
        home=tmp_path / "rea",
        kafka_bootstrap=endpoints.kafka_bootstrap,
        mongo_uri=endpoints.mongo_uri,
        redis_url=endpoints.redis_url,
        topic_prefix=namespace,
        mongo_db=namespace,
        topic_partitions=3,
    )
    asyncio.run(ensure_topics(endpoints.kafka_bootstrap, Topics(namespace), made.topic_partitions))
    return made


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    """Environment that points a `rea` subprocess at this test's namespace."""
    return {
        "REA_HOME": str(settings.home),
        "REA_KAFKA_BOOTSTRAP": str(settings.kafka_bootstrap),
        "REA_MONGO_URI": str(settings.mongo_uri),
        "REA_REDIS_URL": str(settings.redis_url),
        "REA_TOPIC_PREFIX": settings.topic_prefix,
        "REA_MONGO_DB": settings.mongo_db,
    }


@pytest.fixture
def services(settings: Settings) -> Iterator[EmbeddedStack]:
    """REA's services as real processes on this test's namespace; the test starts what it needs."""
    stack = EmbeddedStack(settings, attached=True)
    stack.start_infra()
    try:
        yield stack
    finally:
        stack.stop()


@pytest_asyncio.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    made = Client(
        settings, Endpoints(str(settings.kafka_bootstrap), str(settings.mongo_uri), str(settings.redis_url))
    )
    try:
        yield made
    finally:
        await made.close()


@pytest_asyncio.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    made = Store.connect(str(settings.mongo_uri), settings.mongo_db, Topics(settings.topic_prefix))
    await made.ensure_indexes()
    try:
        yield made
    finally:
        await made.close()
