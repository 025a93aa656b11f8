"""The embedded stack never gives two of its services the same metrics port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rea.settings import Settings
from rea_tools import stack


def test_a_port_handed_to_a_service_that_has_not_bound_it_yet_is_not_handed_out_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    embedded = stack.EmbeddedStack(Settings(home=tmp_path))
    embedded.processes.append(
        stack.ManagedProcess(name="planner", pid=1, log="planner.log", metrics_port=20001)
    )
    draws: Iterator[int] = iter([20001, 20001, 20002])
    monkeypatch.setattr(stack, "free_port", lambda: next(draws))
    assert embedded._metrics_port() == 20002
