"""Structured logs: JSON lines for services (one event per line), readable text for people."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import structlog

from rea.redaction import redact


def configure_logging(level: str = "INFO", *, json: bool = True, service: str | None = None) -> None:
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if service:
        structlog.contextvars.bind_contextvars(service=service)
    processors.append(structlog.processors.format_exc_info)
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    processors.append(_redacting(renderer))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)


def _redacting(renderer: structlog.types.Processor) -> Callable[[Any, str, structlog.types.EventDict], str]:
    """``renderer`` whose lines carry no URI password, whichever field or traceback held one."""

    def render(logger: Any, name: str, event: structlog.types.EventDict) -> str:
        return redact(str(renderer(logger, name, event)))

    return render
