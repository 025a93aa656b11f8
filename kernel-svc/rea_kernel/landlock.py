"""Landlock, through ctypes: a process gives up, for itself and everything it starts, the files
it may touch, TCP and signals to processes outside, with no privilege needed (Linux 5.13+).

Three system calls do it: ``landlock_create_ruleset`` names the rights to deny by default,
``landlock_add_rule`` gives some back beneath a folder (or on one file), and
``landlock_restrict_self`` puts the calling thread under the ruleset for good; its children
and programs it executes inherit it. Their numbers are the same on x86_64 and aarch64 (the
generic syscall table). ``PR_SET_NO_NEW_PRIVS`` comes first, as an unprivileged process must.

What Landlock can deny grew with its ABI version, which the running kernel reports
(:func:`landlock_abi`): 1 files, 2 moving files between folders (``REFER``), 3 truncating,
4 TCP bind and connect, 5 device ioctls, 6 abstract Unix sockets and signals to processes
outside (``scoped``). This module confines as much as the running ABI can, as Landlock's
documentation recommends (best effort): every right the kernel does not know is left out of
the ruleset, and ABI 0 (no Landlock: an old kernel, disabled at boot, a seccomp filter that
hides it) confines nothing. Callers say which ABI they got and decide what that means.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntFlag
from pathlib import Path

CREATE_RULESET, ADD_RULE, RESTRICT_SELF = 444, 445, 446
CREATE_RULESET_VERSION = 1 << 0
RULE_PATH_BENEATH = 1
PR_SET_NO_NEW_PRIVS = 38
NEWEST_ABI_USED = 6
"""The ABI beyond which this module uses nothing new: at it, everything here is enforced."""


class AccessFs(IntFlag):
    EXECUTE = 1 << 0
    WRITE_FILE = 1 << 1
    READ_FILE = 1 << 2
    READ_DIR = 1 << 3
    REMOVE_DIR = 1 << 4
    REMOVE_FILE = 1 << 5
    MAKE_CHAR = 1 << 6
    MAKE_DIR = 1 << 7
    MAKE_REG = 1 << 8
    MAKE_SOCK = 1 << 9
    MAKE_FIFO = 1 << 10
    MAKE_BLOCK = 1 << 11
    MAKE_SYM = 1 << 12
    REFER = 1 << 13  # ABI 2
    TRUNCATE = 1 << 14  # ABI 3
    IOCTL_DEV = 1 << 15  # ABI 5


class AccessNet(IntFlag):  # ABI 4
    BIND_TCP = 1 << 0
    CONNECT_TCP = 1 << 1


class Scope(IntFlag):  # ABI 6
    ABSTRACT_UNIX_SOCKET = 1 << 0
    SIGNAL = 1 << 1


_FS_BY_ABI = {
    1: AccessFs((1 << 13) - 1),
    2: AccessFs.REFER,
    3: AccessFs.TRUNCATE,
    5: AccessFs.IOCTL_DEV,
}
"""The file rights each ABI version added."""
FILE_ONLY = (
    AccessFs.EXECUTE | AccessFs.WRITE_FILE | AccessFs.READ_FILE | AccessFs.TRUNCATE | AccessFs.IOCTL_DEV
)
"""The rights a rule on a single file (rather than a folder) may give; the kernel refuses others."""
READ = AccessFs.READ_FILE | AccessFs.READ_DIR
EXECUTE = READ | AccessFs.EXECUTE
DEVICE = AccessFs.READ_FILE | AccessFs.WRITE_FILE | AccessFs.TRUNCATE | AccessFs.IOCTL_DEV
EVERYTHING = AccessFs((1 << 16) - 1)


def handled_fs(abi: int) -> AccessFs:
    """The file rights ``abi`` can deny."""
    return AccessFs(sum(rights for version, rights in _FS_BY_ABI.items() if version <= abi))


def handled_net(abi: int) -> AccessNet:
    return AccessNet.BIND_TCP | AccessNet.CONNECT_TCP if abi >= 4 else AccessNet(0)


def handled_scopes(abi: int) -> Scope:
    return Scope.ABSTRACT_UNIX_SOCKET | Scope.SIGNAL if abi >= 6 else Scope(0)


@dataclass(frozen=True)
class Confinement:
    """What a confined process may still do. Files: ``read`` beneath these paths, ``execute``
    (read and run programs) beneath these, everything beneath ``read_write``, and read, write
    and ioctl on the ``devices`` (device files, or folders of them). No TCP unless
    ``allow_tcp``; never a signal or an abstract Unix socket to a process outside. Paths that
    do not exist are skipped; symbolic links are followed by the confined process itself
    (``/proc/self`` grants its own process)."""

    read: tuple[Path, ...] = ()
    execute: tuple[Path, ...] = ()
    read_write: tuple[Path, ...] = ()
    devices: tuple[Path, ...] = ()
    allow_tcp: bool = False

    def __or__(self, other: Confinement) -> Confinement:
        """Both confinements' grants together."""
        return Confinement(
            read=(*self.read, *other.read),
            execute=(*self.execute, *other.execute),
            read_write=(*self.read_write, *other.read_write),
            devices=(*self.devices, *other.devices),
            allow_tcp=self.allow_tcp or other.allow_tcp,
        )


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.open.restype = ctypes.c_int


def _syscall(number: int, *arguments: object) -> int:
    """``syscall(2)``, every integer argument passed as a full register (it is variadic)."""
    passed = [ctypes.c_long(argument) if isinstance(argument, int) else argument for argument in arguments]
    return int(_libc.syscall(ctypes.c_long(number), *passed))


def _failed(call: str) -> OSError:
    number = ctypes.get_errno()
    return OSError(number, f"{call}: {os.strerror(number)}")


@functools.cache
def landlock_abi() -> int:
    """The Landlock ABI version the running kernel speaks; 0 where it has none."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "aarch64"):
        return 0
    return max(0, _syscall(CREATE_RULESET, None, 0, CREATE_RULESET_VERSION))


class Restriction:
    """A :class:`Confinement` made ready for one Landlock ABI: the ruleset's structure and each
    rule's path and rights are computed here, in the parent, so that :meth:`apply`, run in a
    child between fork and exec, makes only system calls.

    The child opens each path itself (``O_PATH``, close-on-exec) and closes it after adding its
    rule: descriptors opened in the parent would have to live from here to the fork, in a
    parent that may start children from several threads at once, and be closed after; and a
    path that has gone by then is simply skipped, as one that never existed is here.
    """

    def __init__(self, confinement: Confinement, abi: int) -> None:
        self.abi = abi
        handled = handled_fs(abi)
        self._attr = _RulesetAttr(
            handled,
            0 if confinement.allow_tcp else handled_net(abi),
            handled_scopes(abi),
        )
        self._attr_size = 8 * (1 if abi < 4 else 2 if abi < 6 else 3)  # the fields this ABI knows
        grants = (
            (confinement.read, READ),
            (confinement.execute, EXECUTE),
            (confinement.read_write, EVERYTHING),
            (confinement.devices, DEVICE),
        )
        self.rules = tuple(_rules(grants, handled)) if abi > 0 else ()
        self._rule = _PathBeneathAttr()

    def apply(self) -> None:
        """Confine the calling process and all it starts from now on (a no-op at ABI 0).
        Raises :class:`OSError` if the kernel refuses: a process is never left less confined
        than its caller was told."""
        if self.abi == 0:
            return
        if _libc.prctl(
            PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)
        ):
            raise _failed("prctl(PR_SET_NO_NEW_PRIVS)")
        ruleset = _syscall(CREATE_RULESET, ctypes.byref(self._attr), self._attr_size, 0)
        if ruleset < 0:
            raise _failed("landlock_create_ruleset")
        try:
            for path, access in self.rules:
                fd = _libc.open(path, os.O_PATH | os.O_CLOEXEC)
                if fd < 0:
                    continue
                self._rule.allowed_access, self._rule.parent_fd = access, fd
                added = _syscall(ADD_RULE, ruleset, RULE_PATH_BENEATH, ctypes.byref(self._rule), 0)
                os.close(fd)
                if added < 0:
                    raise _failed(f"landlock_add_rule({path.decode(errors='replace')})")
            if _syscall(RESTRICT_SELF, ruleset, 0) < 0:
                raise _failed("landlock_restrict_self")
        finally:
            os.close(ruleset)


def _rules(
    grants: Iterable[tuple[tuple[Path, ...], AccessFs]], handled: AccessFs
) -> Iterable[tuple[bytes, int]]:
    """Each existing path once, with every right granted on it that the ruleset handles (only
    a file's rights where it is not a folder). Paths are made absolute here, since the child
    opens them from its own working directory, but not resolved: the child follows the links."""
    merged: dict[bytes, AccessFs] = {}
    for paths, access in grants:
        for path in filter(os.path.exists, paths):
            key = os.fsencode(os.path.abspath(path))
            merged[key] = merged.get(key, AccessFs(0)) | (
                access if os.path.isdir(path) else access & FILE_ONLY
            )
    return ((path, int(access & handled)) for path, access in merged.items() if access & handled)


def prepare(confinement: Confinement, abi: int | None = None) -> Restriction:
    """``confinement`` ready to apply at the running kernel's ABI, or at an older ``abi``."""
    running = landlock_abi()
    return Restriction(confinement, running if abi is None else min(abi, running))


def confine(confinement: Confinement) -> int:
    """Confine the calling process now; the ABI it was confined at (0: not at all)."""
    restriction = prepare(confinement)
    restriction.apply()
    return restriction.abi


__all__ = [
    "NEWEST_ABI_USED",
    "AccessFs",
    "AccessNet",
    "Confinement",
    "Restriction",
    "Scope",
    "confine",
    "landlock_abi",
    "prepare",
]
