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
    kafka_bootstrap: str
    mongo_uri: str
    redis_url: str

    def env(self) -> dict[str, str]:
        return {
            "REA_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "REA_MONGO_URI": self.mongo_uri,
            "REA_REDIS_URL": self.redis_url,
        }


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
    """Configured URLs win; the rest come from the running embedded stack."""
    configured = (settings.kafka_bootstrap, settings.mongo_uri, settings.redis_url)
    if all(configured):
        return Endpoints(*configured)  # type: ignore[arg-type]
    recorded = recorded_endpoints(settings.home)
    if recorded is None:
        raise NoRunningStack(f"no running stack under {settings.home}: start one with `rea up`")
    return Endpoints(
        settings.kafka_bootstrap or recorded.kafka_bootstrap,
        settings.mongo_uri or recorded.mongo_uri,
        settings.redis_url or recorded.redis_url,
    )
