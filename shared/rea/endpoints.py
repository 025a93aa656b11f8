"""Where Kafka, MongoDB and Redis are: configured URLs, else what the running embedded stack
recorded.

The embedded stack (``rea up``, :mod:`rea_tools.stack`) writes ``<home>/stack.json``; services
and clients read only its ``endpoints`` from here, so the runtime never depends on the tool
that started it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rea.processes import is_running
from rea.settings import Settings

STACK_RECORD = "stack.json"


class NoRunningStack(RuntimeError):
    """Some endpoint is not configured and no embedded stack runs to supply it."""


@dataclass(frozen=True)
class Endpoints:
    """Where the parts are, and where the embedded stack keeps the credentials it generated for
    them (file names, not secrets: what ``stack.json`` may hold)."""

    kafka_bootstrap: str
    mongo_uri: str
    redis_url: str
    mongo_username: str | None = None
    mongo_password_file: str | None = None
    redis_password_file: str | None = None

    def env(self) -> dict[str, str]:
        """The settings that point a process at these parts, credential files included."""
        env = {
            "REA_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "REA_MONGO_URI": self.mongo_uri,
            "REA_REDIS_URL": self.redis_url,
        }
        if self.mongo_username and self.mongo_password_file:
            env["REA_MONGO_USERNAME"] = self.mongo_username
            env["REA_MONGO_PASSWORD_FILE"] = self.mongo_password_file
        if self.redis_password_file:
            env["REA_REDIS_PASSWORD_FILE"] = self.redis_password_file
        return env


def recorded_endpoints(home: Path) -> Endpoints | None:
    """The endpoints of the embedded stack recorded under ``home``; None when there is no record
    or none of its processes runs any more (a stale record names servers that are gone)."""
    path = home / STACK_RECORD
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    if not any(is_running(process["pid"]) for process in data["processes"]):
        return None
    return Endpoints(**data["endpoints"])


def resolve_endpoints(settings: Settings) -> Endpoints:
    """Configured URLs win; the rest come from the running embedded stack, with the credential
    files it generated for them."""
    configured = (settings.kafka_bootstrap, settings.mongo_uri, settings.redis_url)
    if all(configured):
        return Endpoints(*configured)  # type: ignore[arg-type]
    recorded = recorded_endpoints(settings.home)
    if recorded is None:
        raise NoRunningStack(f"no running stack under {settings.home}: start one with `rea up`")
    embedded_mongo = not settings.mongo_uri
    return Endpoints(
        settings.kafka_bootstrap or recorded.kafka_bootstrap,
        settings.mongo_uri or recorded.mongo_uri,
        settings.redis_url or recorded.redis_url,
        recorded.mongo_username if embedded_mongo else None,
        recorded.mongo_password_file if embedded_mongo else None,
        None if settings.redis_url else recorded.redis_password_file,
    )
