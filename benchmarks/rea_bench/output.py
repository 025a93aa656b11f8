"""How every benchmark prints: one rich console, a header naming the machine and the settings,
and tables. Kept apart from :mod:`rea_bench.common` so that a benchmark with no stack (the
kernels, on a GPU machine with only PyTorch beside REA) prints without Kafka or MongoDB clients."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from rich.console import Console
from rich.table import Table

console = Console(width=None if sys.stdout.isatty() else 120)


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], caption: str = "") -> None:
    table = Table(title=title, caption=caption or None, caption_justify="left")
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def print_header(name: str, settings: dict[str, object]) -> None:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    shown = ", ".join(f"{key}={value}" for key, value in settings.items())
    console.print(
        f"[bold]{name}[/bold]  {when}  {os.cpu_count()} CPUs, Python {platform.python_version()}\n"
        f"[dim]{shown}[/dim]"
    )
