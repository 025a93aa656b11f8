"""Where a campaign may read data from: regular files under the deployment's data roots.

A campaign names its dataset, and anyone who can publish a campaign request names it, so a
file path in a dataset spec is untrusted input. Without confinement, ``criteo:/etc/shadow`` or a
symlink planted in a shared folder would have REA read, train on and report on any file the
service can read. The rule is checked on the path as the file system resolves it (every
symlink and ``..`` followed), so no spelling of a path escapes it.
"""

from __future__ import annotations

import stat
from collections.abc import Sequence
from pathlib import Path


def confinement_problem(path: Path, roots: Sequence[Path]) -> str | None:
    """Why a job must not read ``path``, or None when it is a regular file inside one of
    ``roots`` after resolving symlinks and ``..``. Relative paths are refused: they would mean
    whatever the reading process's working directory makes them."""
    shown = repr(str(path))
    if "\0" in str(path):
        return f"{shown} contains a NUL byte"
    if not path.is_absolute():
        return f"{shown} is relative: name the file by its absolute path under a data root"
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError):  # missing, a symlink loop, unreadable directory
        return f"no such file {shown}"
    allowed = [root.resolve() for root in roots]
    if not any(resolved.is_relative_to(root) for root in allowed):
        where = ", ".join(str(root) for root in allowed) or "none configured"
        return f"{shown} is outside the data roots ({where}); a deployment allows more with REA_DATA_ROOTS"
    try:
        mode = resolved.stat().st_mode
    except OSError:
        return f"no such file {shown}"
    if not stat.S_ISREG(mode):
        return f"{shown} is not a regular file"
    return None


__all__ = ["confinement_problem"]
