"""Credentials and TLS through settings: secrets from files, the client options built from them,
passwords redacted wherever a URI is shown, and rejected credentials told apart from blips."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
from dataclasses import replace
from pathlib import Path

import certifi
import pytest
import structlog
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed
from faststream.security import SASLScram512
from pydantic import SecretStr, ValidationError
from pymongo.errors import AutoReconnect, OperationFailure
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError

from rea.bus import _is_retryable
from rea.endpoints import Endpoints
from rea.logs import _redacting
from rea.redaction import redact
from rea.security import (
    auth_failure,
    connection_env,
    kafka_options,
    kafka_security,
    mongo_options,
    redis_options,
)
from rea.settings import Settings
from rea_tools.stack import EmbeddedStack, StackState

PLAIN = Endpoints("kafka:9092", "mongodb://mongo:27017", "redis://redis:6379/0")


@pytest.mark.parametrize(
    ("shown", "redacted"),
    [
        ("mongodb://rea:s3cr%40t@mongo:27017/?tls=true", "mongodb://rea:***@mongo:27017/?tls=true"),
        ("redis://:hunter2@redis:6379/0", "redis://:***@redis:6379/0"),
        ("rediss://default:hunter2@redis:6380", "rediss://default:***@redis:6380"),
        ("failed: 'mongodb+srv://u:p@c.example/' (x)", "failed: 'mongodb+srv://u:***@c.example/' (x)"),
        ("https://llm/v1?api=1&password=abc&x=2", "https://llm/v1?api=1&password=***&x=2"),
        ("mongodb://mongo:27017/?directConnection=true", "mongodb://mongo:27017/?directConnection=true"),
        ("redis://redis@host:6379", "redis://redis@host:6379"),
        ("tcp://127.0.0.1:9092 and alice@example.com", "tcp://127.0.0.1:9092 and alice@example.com"),
    ],
)
def test_redact_hides_the_password_of_every_uri_and_nothing_else(shown: str, redacted: str) -> None:
    assert redact(shown) == redacted


def test_a_secret_may_come_from_a_file_and_is_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mongo").write_text("from-a-file\n")  # a Secret's file may end with a newline
    (tmp_path / "redis").write_text("redis-secret")
    monkeypatch.setenv("REA_MONGO_USERNAME", "rea")
    monkeypatch.setenv("REA_MONGO_PASSWORD_FILE", str(tmp_path / "mongo"))
    monkeypatch.setenv("REA_REDIS_PASSWORD_FILE", str(tmp_path / "redis"))
    settings = Settings()
    assert settings.mongo_password == SecretStr("from-a-file")
    assert settings.redis_password == SecretStr("redis-secret")
    assert "from-a-file" not in repr(settings) and "redis-secret" not in str(settings.model_dump())
    monkeypatch.setenv("REA_REDIS_PASSWORD", "given")  # a value wins over a file
    assert Settings().redis_password == SecretStr("given")


def test_an_unreadable_secret_file_or_half_a_credential_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="REA_MONGO_PASSWORD_FILE: cannot read"):
        Settings(mongo_username="rea", mongo_password_file=tmp_path / "missing")
    with pytest.raises(ValidationError, match="REA_MONGO_USERNAME and REA_MONGO_PASSWORD"):
        Settings(mongo_username="rea")
    with pytest.raises(ValidationError, match="needs REA_KAFKA_SASL_USERNAME"):
        Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="rea")


def test_mongo_options_come_from_the_settings_else_from_the_embedded_stacks_files(tmp_path: Path) -> None:
    idle = {"maxIdleTimeMS": 60_000}  # retired before SecantusDB's 300 s idle timeout closes them
    assert mongo_options(Settings(), PLAIN) == idle
    assert mongo_options(Settings(mongo_max_idle_ms=5_000), PLAIN) == {"maxIdleTimeMS": 5_000}
    configured = Settings(
        mongo_username="svc",
        mongo_password=SecretStr("pw"),
        mongo_auth_source="rea",
        mongo_tls_ca_file=tmp_path / "ca.pem",
    )
    assert mongo_options(configured, PLAIN) == {
        **idle,
        "username": "svc",
        "password": "pw",
        "authSource": "rea",
        "tls": True,
        "tlsCAFile": str(tmp_path / "ca.pem"),
    }
    (tmp_path / "mongo-password").write_text("generated")
    embedded = replace(PLAIN, mongo_username="rea", mongo_password_file=str(tmp_path / "mongo-password"))
    assert mongo_options(Settings(), embedded) == {
        **idle,
        "username": "rea",
        "password": "generated",
        "authSource": "admin",
    }
    assert mongo_options(configured, embedded)["password"] == "pw"  # the settings win


def test_redis_options_carry_the_password_and_the_tls_files(tmp_path: Path) -> None:
    (tmp_path / "redis-password").write_text("generated")
    embedded = replace(PLAIN, redis_password_file=str(tmp_path / "redis-password"))
    assert redis_options(Settings(), embedded) == {"password": "generated"}
    configured = Settings(
        redis_password=SecretStr("pw"), redis_username="rea", redis_tls_ca_file=tmp_path / "ca"
    )
    assert redis_options(configured, embedded) == {
        "password": "pw",
        "username": "rea",
        "ssl_ca_certs": str(tmp_path / "ca"),
    }


def test_kafka_security_follows_the_protocol() -> None:
    assert kafka_security(Settings()) is None and kafka_options(Settings()) == {}
    sasl = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="rea",
        kafka_sasl_password=SecretStr("pw"),
        kafka_tls_ca_file=Path(certifi.where()),
    )
    assert isinstance(kafka_security(sasl), SASLScram512)
    options = kafka_options(sasl)
    assert {key: options[key] for key in ("security_protocol", "sasl_mechanism", "sasl_plain_username")} == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "rea",
    }
    assert options["sasl_plain_password"] == "pw"
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    plain_sasl = Settings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="rea",
        kafka_sasl_password=SecretStr("pw"),
    )
    assert kafka_options(plain_sasl)["security_protocol"] == "SASL_PLAINTEXT"
    assert kafka_options(plain_sasl)["ssl_context"] is None
    assert kafka_options(Settings(kafka_security_protocol="SSL"))["security_protocol"] == "SSL"


def test_a_rejected_credential_is_named_and_never_waited_out() -> None:
    mongo = OperationFailure("authentication failed", code=18)
    for error, part in (
        (mongo, "MongoDB"),
        (OperationFailure("command find requires authentication", code=13), "MongoDB"),
        (AuthenticationError("invalid username-password pair"), "Redis"),
        (SaslAuthenticationFailed(), "Kafka"),
    ):
        refused = auth_failure(error)
        assert refused is not None and refused.part == part
        assert str(refused).startswith(f"{part} rejected the connection")
        assert not _is_retryable(error)
    for blip in (AutoReconnect("gone"), RedisConnectionError("gone"), KafkaConnectionError()):
        assert auth_failure(blip) is None
    assert _is_retryable(AutoReconnect("gone")) and _is_retryable(KafkaConnectionError())


def test_logs_carry_no_uri_password() -> None:
    render = _redacting(structlog.processors.JSONRenderer())
    line = render(
        None, "info", {"event": "x", "uri": "mongodb://rea:hunter2@mongo/", "error": "redis://:pw@r"}
    )
    assert "hunter2" not in line and ":pw@" not in line
    assert json.loads(line)["uri"] == "mongodb://rea:***@mongo/"


def test_a_remote_job_side_gets_secret_files_never_secrets(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("hunter2")
    settings = Settings(
        mongo_username="rea",
        mongo_password_file=tmp_path / "pw",
        redis_password=SecretStr("hunter3"),
        mongo_tls=True,
    )
    env = connection_env(settings)
    assert env == {
        "REA_MONGO_USERNAME": "rea",
        "REA_MONGO_PASSWORD_FILE": str(tmp_path / "pw"),
        "REA_MONGO_TLS": "true",
    }


def test_a_setting_holding_a_password_reaches_a_process_but_is_not_recorded(tmp_path: Path) -> None:
    stack = EmbeddedStack(Settings(home=tmp_path))
    stack.endpoints = PLAIN
    uri = "mongodb://rea:hunter2@mongo:27017/"
    out = tmp_path / "seen"
    proc = stack._start("probe", ["sh", "-c", f'printf %s "$REA_MONGO_URI" > {out}'], {"REA_MONGO_URI": uri})
    try:
        assert proc.wait(10) == 0
    finally:
        stack.children.clear()
    assert out.read_text() == uri
    assert stack.processes[0].env == {}
    StackState(Endpoints("k", uri, "r"), stack.processes).write(tmp_path)
    assert "hunter2" not in (tmp_path / "stack.json").read_text()
    assert subprocess.run(["grep", "-r", "hunter2", str(tmp_path / "logs")], check=False).returncode == 1
    assert os.environ.get("REA_MONGO_URI") != uri
