"""A what-if, for the benchmarks only: run one REA service with another consumer ``fetch_max_wait_ms``.

    python -m benchmarks._tuned_service executor 10

The project's code is not changed: this process wraps FastStream's ``KafkaBroker.subscriber``
so every subscription the service makes gets the given ``fetch_max_wait_ms`` (FastStream and
aiokafka default to 500), then runs ``rea service <name>`` as usual. It exists to measure the
effect of that one setting on the embedded Tansu, whose fetch handler polls its storage
instead of waking when data arrives.
"""

from __future__ import annotations

import sys
from typing import Any

from faststream.kafka import KafkaBroker


def main(argv: list[str]) -> None:
    if len(argv) != 2 or not argv[1].isdigit():
        raise SystemExit("usage: python -m benchmarks._tuned_service SERVICE FETCH_MAX_WAIT_MS")
    service, wait_ms = argv[0], int(argv[1])
    original = KafkaBroker.subscriber

    def subscriber(self: KafkaBroker, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("fetch_max_wait_ms", wait_ms)
        return original(self, *args, **kwargs)

    setattr(KafkaBroker, "subscriber", subscriber)  # noqa: B010 - a what-if, on purpose

    from rea.cli import app

    app(["service", service])


if __name__ == "__main__":
    main(sys.argv[1:])
