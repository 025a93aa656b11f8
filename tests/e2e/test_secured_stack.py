"""The embedded stack with its servers' authentication on (the default): SecantusDB with a SCRAM
user and redis-server with a password, both generated under ``<home>/secrets``. A campaign runs
end to end, anonymous clients are refused, a wrong password stops a service, the CLI and
``start_infra`` at once with an error naming the part, and no secret reaches a log, the stack's
record, a command line or a service's environment."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError

from rea.client import Client
from rea.runtime import ensure_topics
from rea.settings import Settings
from rea.signing import Keyring
from rea.topics import Topics
from rea_tools.stack import CredentialsRejected, EmbeddedStack, StackError

from .helpers import E2E_GRANT, campaign_request, e2e_grants, finished, run_rea, submit

pytestmark = pytest.mark.e2e

FAIL_FAST_S = 30.0
"""Well under the minute the runtime waits out an unreachable server: a refusal is not waited out."""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    made = EmbeddedStack(Settings(home=tmp_path_factory.mktemp("secured") / "rea", topic_partitions=3))
    try:
        endpoints = made.start_infra()
        asyncio.run(ensure_topics(endpoints.kafka_bootstrap, Topics("rea"), 3))
        made.start_services(workers=1)
        made.write_state()
        yield made
    finally:
        made.stop()


def server_passwords(stack: EmbeddedStack) -> tuple[str, str]:
    """The passwords of the stack's MongoDB and Redis."""
    folder = stack.home / "secrets"
    return (folder / "mongo-password").read_text(), (folder / "redis-password").read_text()


def secrets_of(stack: EmbeddedStack) -> list[str]:
    """The servers' passwords and the keys people's decisions are signed with."""
    keys = Keyring.load(Settings(home=stack.home).decision_keys_path()).keys.values()
    return [*server_passwords(stack), *(key.secret.hex() for key in keys)]


def pointed_at(stack: EmbeddedStack, settings: dict[str, str], drop: tuple[str, ...]) -> dict[str, str]:
    """An environment pointing a `rea` process at the stack's servers, with ``settings`` and
    without the settings in ``drop``."""
    assert stack.endpoints is not None
    env = {"REA_HOME": str(stack.home.parent / "elsewhere"), **stack.endpoints.env(), **settings}
    return {key: value for key, value in env.items() if key not in drop}


async def test_the_servers_refuse_anonymous_clients_and_the_secrets_are_private(stack: EmbeddedStack) -> None:
    assert stack.endpoints is not None
    anonymous: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        stack.endpoints.mongo_uri, serverSelectionTimeoutMS=5000
    )
    try:
        with pytest.raises(OperationFailure) as refused:
            await anonymous["rea"].list_collection_names()
        assert refused.value.code == 13  # Unauthorized
    finally:
        await anonymous.close()
    redis = Redis.from_url(stack.endpoints.redis_url)
    try:
        with pytest.raises(AuthenticationError):
            await redis.ping()
    finally:
        await redis.aclose()
    folder = stack.home / "secrets"
    assert folder.stat().st_mode & 0o777 == 0o700
    assert {path.name: path.stat().st_mode & 0o777 for path in folder.iterdir()} == {
        "mongo-password": 0o600,
        "redis-password": 0o600,
        "redis.conf": 0o600,
    }


async def test_a_campaign_runs_end_to_end_on_the_authenticated_servers(stack: EmbeddedStack) -> None:
    settings = Settings(home=stack.home)
    client = Client(settings)  # credentials from the stack's record, as the CLI's
    try:
        await client.ensure_grant(E2E_GRANT, e2e_grants(settings)[E2E_GRANT])  # a signed decision, too
        campaign_id = await submit(client, campaign_request(max_hypotheses=1))
        state = await finished(client, campaign_id)
        assert state.status == "completed", state.reasons
    finally:
        await client.close()


NO_MONGO_CREDENTIALS = ("REA_MONGO_USERNAME", "REA_MONGO_PASSWORD_FILE")


@pytest.mark.parametrize(
    ("part", "settings", "drop"),
    [
        ("MongoDB", {"REA_MONGO_PASSWORD": "not-the-password"}, ("REA_MONGO_PASSWORD_FILE",)),
        ("MongoDB", {}, NO_MONGO_CREDENTIALS),
        ("Redis", {"REA_REDIS_PASSWORD": "not-the-password"}, ()),
    ],
    ids=["mongo-wrong-password", "mongo-no-credentials", "redis-wrong-password"],
)
def test_a_service_with_a_wrong_password_stops_at_once_naming_the_part(
    stack: EmbeddedStack, part: str, settings: dict[str, str], drop: tuple[str, ...]
) -> None:
    env = pointed_at(stack, settings, drop)
    started = time.monotonic()
    service = run_rea(["service", "logger"], env, timeout=FAIL_FAST_S * 2)
    assert time.monotonic() - started < FAIL_FAST_S
    assert service.returncode != 0
    assert f"{part} rejected the connection" in service.stderr, service.stderr[-2000:]
    assert "Traceback" not in service.stderr
    if part == "MongoDB":  # `rea status` reads the database only
        status = run_rea(["status", "--json"], env)
        assert status.returncode == 2 and f"{part} rejected the connection" in status.stderr, status.stderr


def test_start_infra_refuses_a_configured_server_with_a_wrong_password(stack: EmbeddedStack) -> None:
    assert stack.endpoints is not None
    mongo, redis = server_passwords(stack)
    for mongo_password, redis_password in ((mongo, "not-the-password"), ("not-the-password", redis)):
        configured = Settings(
            home=stack.home.parent / "configured",
            kafka_bootstrap=stack.endpoints.kafka_bootstrap,
            mongo_uri=stack.endpoints.mongo_uri,
            redis_url=stack.endpoints.redis_url,
            mongo_username="rea",
            mongo_password=SecretStr(mongo_password),
            redis_password=SecretStr(redis_password),
        )
        started = time.monotonic()
        with pytest.raises(StackError, match="rejected the connection"):
            EmbeddedStack(configured).start_infra()
        assert time.monotonic() - started < FAIL_FAST_S


def test_no_secret_reaches_a_log_the_record_a_command_line_or_an_environment(stack: EmbeddedStack) -> None:
    secrets = secrets_of(stack)
    assert len(secrets) >= 3 and all(len(secret) >= 32 for secret in secrets)
    shown = run_rea(["status", "--stack", "--json"], {"REA_HOME": str(stack.home)})
    assert shown.returncode == 0, shown.stderr
    assert {row["name"] for row in json.loads(shown.stdout)} >= {"secantusdb", "redis", "logger", "worker-0"}
    seen = {"stack.json": (stack.home / "stack.json").read_text(), "rea status --stack": shown.stdout}
    for process in stack.processes:
        proc = Path(f"/proc/{process.pid}")
        seen[f"{process.name} argv"] = (proc / "cmdline").read_bytes().decode(errors="replace")
        seen[f"{process.name} environment"] = (proc / "environ").read_bytes().decode(errors="replace")
    stack.stop()  # what services log while stopping counts too
    logs = sorted((stack.home / "logs").glob("*.log"))
    assert {log.stem for log in logs} >= {"secantusdb", "redis", "planner", "executor", "worker-0"}
    seen |= {log.name: log.read_text(errors="replace") for log in logs}
    for where, text in seen.items():
        for secret in secrets:
            assert secret not in text, f"a secret in {where}"
    assert os.environ.get("REA_MONGO_PASSWORD") is None  # nothing above came from the test's own


def test_a_restart_keeps_the_user_and_a_lost_password_is_reset_on_request(stack: EmbeddedStack) -> None:
    stack.stop()
    again = EmbeddedStack(Settings(home=stack.home))
    try:
        again.start_infra()  # the user made at the first start, its password from the file
    finally:
        again.stop()
    (stack.home / "secrets" / "mongo-password").write_text("a-new-password-for-the-same-database")
    refused = EmbeddedStack(Settings(home=stack.home))
    try:
        with pytest.raises(CredentialsRejected, match=r"delete .*\.rea-users"):
            refused.start_infra()
    finally:
        refused.stop()
    (stack.home / "mongo" / ".rea-users").unlink()
    reset = EmbeddedStack(Settings(home=stack.home))
    try:
        endpoints = reset.start_infra()
        assert Path(str(endpoints.mongo_password_file)).read_text() == "a-new-password-for-the-same-database"
    finally:
        reset.stop()
