"""How every client authenticates and encrypts: the options for MongoDB, Redis and Kafka clients
built from the settings (credentials, TLS files), and the clear, non-retryable error a rejected
credential becomes (:mod:`rea.redaction` keeps passwords out of what is shown).

Credentials come from the settings (``REA_MONGO_PASSWORD``, or a file named by
``REA_MONGO_PASSWORD_FILE``: a mounted Secret), else from the files the embedded stack
generated (:class:`rea.endpoints.Endpoints` names them); never from code, and never printed.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from aiokafka.errors import (
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    IllegalSaslStateError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from faststream.kafka.security import parse_security
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512
from pydantic import SecretStr
from pymongo.errors import OperationFailure
from redis.exceptions import AuthenticationError, AuthenticationWrongNumberOfArgsError, ResponseError

from rea.endpoints import Endpoints
from rea.settings import Settings, read_secret

MONGO_AUTH_FAILED = 18
MONGO_UNAUTHORIZED = 13
KAFKA_AUTH_ERRORS = (
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    IllegalSaslStateError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)


class AuthenticationFailed(RuntimeError):
    """A server rejected REA's credentials, or wanted some: retrying cannot help, so a process
    stops at once and says which part refused and which settings to check (never a secret)."""

    def __init__(self, part: str, advice: str) -> None:
        super().__init__(f"{part} rejected the connection: {advice}")
        self.part = part


def auth_failure(exc: BaseException) -> AuthenticationFailed | None:
    """What ``exc`` means when a server refused our credentials; None for any other error."""
    if isinstance(exc, AuthenticationFailed):
        return exc
    if isinstance(exc, OperationFailure) and exc.code == MONGO_AUTH_FAILED:
        return AuthenticationFailed(
            "MongoDB", "authentication failed; check REA_MONGO_USERNAME and REA_MONGO_PASSWORD(_FILE)"
        )
    if isinstance(exc, OperationFailure) and exc.code == MONGO_UNAUTHORIZED:
        return AuthenticationFailed(
            "MongoDB", "it requires authentication; set REA_MONGO_USERNAME and REA_MONGO_PASSWORD(_FILE)"
        )
    if isinstance(exc, AuthenticationError | AuthenticationWrongNumberOfArgsError) or (
        isinstance(exc, ResponseError) and "AUTH" in str(exc)
    ):
        return AuthenticationFailed("Redis", "authentication failed; check REA_REDIS_PASSWORD(_FILE)")
    if isinstance(exc, KAFKA_AUTH_ERRORS):
        return AuthenticationFailed(
            "Kafka",
            "SASL authentication failed; check REA_KAFKA_SECURITY_PROTOCOL, REA_KAFKA_SASL_MECHANISM, "
            "REA_KAFKA_SASL_USERNAME and REA_KAFKA_SASL_PASSWORD(_FILE)",
        )
    return None


def is_auth_error(exc: BaseException) -> bool:
    return auth_failure(exc) is not None


def _secret(value: SecretStr | None, file: str | None) -> str | None:
    """The configured secret, else the one in the embedded stack's ``file``, else None."""
    if value is not None:
        return value.get_secret_value()
    return read_secret(Path(file)) if file else None


def mongo_options(settings: Settings, endpoints: Endpoints) -> dict[str, Any]:
    """Keyword arguments for a pymongo client: the credentials and TLS files configured, else
    those of the embedded stack (credentials in the URI itself also work), and how long a pooled
    connection may sit idle."""
    options: dict[str, Any] = {"maxIdleTimeMS": settings.mongo_max_idle_ms}
    if settings.mongo_password is not None:
        username, password = settings.mongo_username, settings.mongo_password.get_secret_value()
    elif endpoints.mongo_password_file:
        username, password = endpoints.mongo_username, read_secret(Path(endpoints.mongo_password_file))
    else:
        username, password = None, None
    if username and password is not None:
        options.update(username=username, password=password, authSource=settings.mongo_auth_source)
    if settings.mongo_tls:
        options["tls"] = True
    if settings.mongo_tls_ca_file:
        options.update(tls=True, tlsCAFile=str(settings.mongo_tls_ca_file))
    if settings.mongo_tls_certificate_key_file:
        options.update(tls=True, tlsCertificateKeyFile=str(settings.mongo_tls_certificate_key_file))
    return options


def redis_options(settings: Settings, endpoints: Endpoints) -> dict[str, Any]:
    """Keyword arguments for ``Redis.from_url``: the password configured, else the embedded
    stack's; TLS is the URL's (``rediss://``), with the CA and client certificate configured."""
    options: dict[str, Any] = {}
    password = _secret(settings.redis_password, endpoints.redis_password_file)
    if password is not None:
        options["password"] = password
    if settings.redis_username:
        options["username"] = settings.redis_username
    if settings.redis_tls_ca_file:
        options["ssl_ca_certs"] = str(settings.redis_tls_ca_file)
    if settings.redis_tls_cert_file:
        options["ssl_certfile"] = str(settings.redis_tls_cert_file)
    if settings.redis_tls_key_file:
        options["ssl_keyfile"] = str(settings.redis_tls_key_file)
    return options


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext:
    """A verifying TLS context: the configured CA (else the system's), and a client certificate
    when one is configured (mutual TLS)."""
    context = ssl.create_default_context(
        cafile=str(settings.kafka_tls_ca_file) if settings.kafka_tls_ca_file else None
    )
    if settings.kafka_tls_cert_file:
        context.load_cert_chain(
            str(settings.kafka_tls_cert_file),
            str(settings.kafka_tls_key_file) if settings.kafka_tls_key_file else None,
        )
    return context


def kafka_security(settings: Settings) -> BaseSecurity | None:
    """FastStream's security object for the configured protocol; None for plain text."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = kafka_ssl_context(settings) if protocol.endswith("SSL") else None
    if protocol == "SSL":
        return BaseSecurity(ssl_context=context)
    username = settings.kafka_sasl_username or ""
    password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
    use_ssl = protocol == "SASL_SSL"
    kinds = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}
    return kinds[settings.kafka_sasl_mechanism](username, password, ssl_context=context, use_ssl=use_ssl)


def kafka_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for an aiokafka client (producer, consumer, admin), from the same
    security object the services' broker uses."""
    return parse_security(kafka_security(settings))


CONNECTION_SETTINGS = (
    "kafka_security_protocol",
    "kafka_sasl_mechanism",
    "kafka_sasl_username",
    "kafka_sasl_password_file",
    "kafka_tls_ca_file",
    "kafka_tls_cert_file",
    "kafka_tls_key_file",
    "mongo_username",
    "mongo_password_file",
    "mongo_auth_source",
    "mongo_tls",
    "mongo_tls_ca_file",
    "mongo_tls_certificate_key_file",
    "redis_username",
    "redis_password_file",
    "redis_tls_ca_file",
    "redis_tls_cert_file",
    "redis_tls_key_file",
)
"""How to connect, without a secret: protocols, users, and the files that hold secrets and
certificates."""


def connection_env(settings: Settings) -> dict[str, str]:
    """The connection settings configured, as variables for a process started elsewhere (a Ray
    job side): never a secret itself, so a remote job side reads its secrets from files its node
    has (``REA_*_PASSWORD_FILE``), not from the job's metadata."""
    return {
        f"REA_{name.upper()}": str(value).lower() if isinstance(value, bool) else str(value)
        for name in CONNECTION_SETTINGS
        if name in settings.model_fields_set and (value := getattr(settings, name)) is not None
    }
