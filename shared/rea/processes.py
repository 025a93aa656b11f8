"""Leave nothing behind: a command interrupted by Ctrl-C, SIGTERM, SIGHUP or a timeout stops
every process it started.

Python's default action for SIGTERM and SIGHUP ends the process at once, without running
``finally`` blocks, so ``stack.stop()`` never runs and the children outlive their parent
(``PR_SET_PDEATHSIG`` only SIGTERMs them, and a service then drains on its own, for tens of
seconds, with nobody waiting for it). :func:`exit_on_interrupt` turns those signals into
:class:`Interrupted`, a ``KeyboardInterrupt``, so the command unwinds through its clean-up as
on Ctrl-C; whatever is still running once it has, is killed. The process tree comes from
``/proc`` (Linux); a process is named by its pid and start time, so a recycled pid is never hit.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PR_SET_CHILD_SUBREAPER = 36

Procs = dict[int, int]  # pid -> start time (clock ticks after boot): a process, not just a pid


class Interrupted(KeyboardInterrupt):
    """A stop signal, raised in the main thread wherever it happens to be, as Ctrl-C is."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _table() -> dict[int, tuple[int, int, int]]:
    """pid -> (parent pid, process group, start time) of every process now."""
    table: dict[int, tuple[int, int, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            table[int(entry.name)] = (int(fields[1]), int(fields[2]), int(fields[19]))
        except (OSError, ValueError, IndexError):
            continue  # it ended meanwhile
    return table


def descendants(roots: Iterable[int], outside_groups: bool = False) -> Procs:
    """Every process below ``roots`` now (children, grandchildren...). ``outside_groups``: only
    those outside the process groups the roots lead, which ``killpg(root)`` does not reach
    (training jobs run in sessions of their own)."""
    roots = set(roots)
    if not roots:
        return {}
    table = _table()
    found: Procs = {}
    frontier = roots
    while frontier:
        frontier = {pid for pid, (ppid, _, _) in table.items() if ppid in frontier and pid not in found}
        found.update({pid: table[pid][2] for pid in frontier})
    if outside_groups:
        return {pid: start for pid, start in found.items() if table[pid][1] not in roots}
    return found


def kill(procs: Procs, sig: int = signal.SIGKILL) -> None:
    """Signal each process that is still the one recorded, and its group when it leads one."""
    if not procs:
        return
    table = _table()
    for pid, start in procs.items():
        now = table.get(pid)
        if now is None or now[2] != start:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if now[1] == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)


def _adopt_orphans() -> None:
    """Linux: processes orphaned below this one (a job whose worker was SIGKILLed) are
    reparented to it instead of init, so they stay findable as its descendants."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1)


@contextmanager
def stop_signals_interrupt(on_signal: Callable[[], None] | None = None) -> Iterator[None]:
    """While the block runs, the first SIGINT, SIGTERM or SIGHUP raises :class:`Interrupted` in
    the main thread (after ``on_signal``); later ones are ignored, so they cannot cut short the
    clean-up the first one started. The previous handlers come back at the end."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread; elsewhere nothing changes
        return
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if received:
            return
        received.append(signum)
        if on_signal is not None:
            on_signal()
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler_before in previous.items():
            signal.signal(sig, handler_before)


@contextmanager
def exit_on_interrupt(command: str, console: Console) -> Iterator[None]:
    """For a command that starts processes: a stop signal unwinds it through its ``finally``
    blocks (which stop what it started gracefully), then anything still running below it, or
    orphaned since the signal, is killed; it exits with 128 + the signal's number and one line."""
    running: Procs = {}

    def at_signal() -> None:
        _adopt_orphans()
        running.update(descendants([os.getpid()]))

    signum = 0
    try:
        with stop_signals_interrupt(at_signal):
            yield
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
    finally:
        if signum or running:  # interrupted, however the clean-up went
            kill({**running, **descendants([os.getpid()])})
    if signum:
        name = signal.Signals(signum).name
        console.print(
            f"[red]rea {command}: interrupted by {name}; stopped what it started.[/red]", soft_wrap=True
        )
        raise SystemExit(128 + signum)


@contextmanager
def new_children_killed_on_error(
    settled: Callable[[], bool] = lambda: True, timeout_s: float = 30.0
) -> Iterator[None]:
    """On an exception (an interrupt, above all), SIGKILL each process started below this one
    during the block, from any thread, with its process group: children, and jobs forked by a
    zygote started before the block. ``settled`` says when the threads that start jobs are
    done; until then (at most ``timeout_s``) processes that appear meanwhile are killed too.

    For job processes a command runs itself: they live in sessions of their own, and a thread
    pool waits for its jobs to end before the exception can go any further.
    """
    me = os.getpid()
    before = set(descendants([me]))
    try:
        yield
    except BaseException:
        deadline = time.monotonic() + timeout_s
        while True:
            done = settled()
            kill({pid: start for pid, start in descendants([me]).items() if pid not in before})
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        raise


def is_running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not). It never reaps: a child's parent may still want
    its exit status (the supervisor reports why a process ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not is_zombie(pid)


def is_zombie(pid: int) -> bool:
    """Killed but not yet reaped: an orphan whose new parent (a container's PID 1, often) has not
    waited for it still answers signal 0, yet nothing of it runs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]
