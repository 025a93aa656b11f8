"""Fixtures: the real embedded servers (Tansu, SecantusDB, redis-server), started once per
session, and per test a private namespace on them (its own topic prefix and database) so
tests never collide."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import pytest_asyncio

from rea.client import Client
from rea.endpoints import Endpoints
from rea.runtime import ensure_topics
from rea.settings import Settings
from rea.store import Store
from rea.topics import Topics
from rea_tools.stack import EmbeddedStack

from .e2e.helpers import seed_grants

END_TO_END = "tests/e2e"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under pytest-xdist (``make test`` runs two workers) the end-to-end tests are one unit of
    work, run first, one test at a time, on one worker: each runs a stack of services and
    training jobs that leaves a core idle much of the time, and two at once would crowd a small
    machine. Every other file is a unit of its own, so its module-scoped fixtures (some take a
    minute) are set up once; those files run beside the end-to-end tests."""
    from xdist.scheduler import LoadScopeScheduling

    class EndToEndBesideTheRest(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return END_TO_END if path.startswith(f"{END_TO_END}/") else path

    config.option.loadscopereorder = False  # keep collection's order: tests/e2e comes first
    return EndToEndBesideTheRest(config, log)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    """When an end-to-end test fails, show the warnings and the last lines its services
    logged: a stuck campaign is diagnosed from what the services said, not from a time-out."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    tmp_path = getattr(item, "funcargs", {}).get("tmp_path")
    if report.failed and call.when == "call" and isinstance(tmp_path, Path):
        for log in sorted(tmp_path.glob("**/logs/*.log")):
            lines = log.read_text(errors="replace").splitlines()
            worth = [line for line in lines if '"level": "info"' not in line][-25:] + lines[-5:]
            report.sections.append((f"log {log.name}", "\n".join(line[:400] for line in worth)))


@pytest.fixture(scope="session")
def endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    """Servers shared by every test, without credentials (tests reach them with plain clients);
    tests/e2e/test_secured_stack.py runs the stack with its servers' authentication on."""
    home = tmp_path_factory.mktemp("servers")
    stack = EmbeddedStack(Settings(home=home, embedded_auth=False), attached=True)
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
    asyncio.run(seed_grants(made))
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
