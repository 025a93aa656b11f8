"""Plots as PNG bytes, for the launch proposal and the benchmark report.

Each plot gets a figure of its own through matplotlib's object API (no pyplot), so renders
share no state and need no display.
"""

from __future__ import annotations

import io

from matplotlib.axes import Axes
from matplotlib.figure import Figure


def figure(width: float, height: float) -> tuple[Figure, Axes]:
    made = Figure(figsize=(width, height))
    return made, made.add_subplot()


def png(made: Figure) -> bytes:
    buffer = io.BytesIO()
    made.tight_layout()
    made.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()
