"""The embedded stack's supervisor: ``rea up`` starts it beside the stack, and it starts again
any process of the stack that exits — a service, a job worker or an embedded server — so a
service killed by the OS does not stay down until someone runs ``rea down && rea up``.

Restarts back off exponentially per process (1 s, 2 s, 4 s, ... up to a minute) and the count
starts over once a process has stayed up for a minute. Each restart is recorded in the stack's
record (``<home>/stack.json``: restarts, last exit), which ``rea status`` shows. The supervisor
checks once a second: reading a process table entry per process costs nothing an idle stack
would notice. ``rea down`` stops the supervisor first.

What to do is decided by :func:`restart_due`, a pure function of the time and what was seen.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from rea.processes import is_running
from rea_tools.stack import SUPERVISOR, ManagedProcess, StackState, spawn

log = structlog.get_logger()

CHECK_INTERVAL_S = 1.0
BACKOFF_MAX_S = 60.0
STABLE_AFTER_S = 60.0


@dataclass
class Down:
    """A process seen exited: since when, and how many restarts in a row it has had."""

    since: float
    in_a_row: int


def backoff_s(in_a_row: int) -> float:
    """How long to wait before the next restart of a process restarted ``in_a_row`` times."""
    return float(min(BACKOFF_MAX_S, 2**in_a_row))


def in_a_row_after(process: ManagedProcess, previous: int, now: float) -> int:
    """Restarts in a row so far: a process that stayed up a minute starts over."""
    return 0 if now - process.started_at >= STABLE_AFTER_S else previous


def restart_due(down: Down, now: float) -> bool:
    return now - down.since >= backoff_s(down.in_a_row)


class Supervisor:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        self.down: dict[str, Down] = {}
        self.in_a_row: dict[str, int] = {}

    def running(self, pid: int) -> bool:
        child = self.children.get(pid)
        return child.poll() is None if child is not None else is_running(pid)

    def exit_of(self, pid: int) -> str:
        """Why it ended, when it was started here (else only that it did: not our child)."""
        child = self.children.pop(pid, None)
        code = child.returncode if child is not None else None
        if code is None:
            return "exited"
        return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"

    def check(self, now: float) -> bool:
        """One pass; False when the stack is gone (the supervisor then leaves too)."""
        state = StackState.read(self.home)
        if state is None:
            return False
        changed = False
        for process in state.processes:
            if process.name == SUPERVISOR or self.running(process.pid):
                continue
            down = self.down.get(process.name)
            if down is None:
                previous = in_a_row_after(process, self.in_a_row.get(process.name, 0), now)
                down = self.down[process.name] = Down(since=now, in_a_row=previous)
                process.last_exit = self.exit_of(process.pid)
                log.warning("process_exited", name=process.name, pid=process.pid, exit=process.last_exit)
                changed = True
            if restart_due(down, now):
                self.restart(process)
                self.in_a_row[process.name] = down.in_a_row + 1
                del self.down[process.name]
                changed = True
        if changed:
            state.write(self.home)
        return True

    def restart(self, process: ManagedProcess) -> None:
        proc, started = spawn(process.name, process.argv, self.home, process.env, attached=False)
        self.children[proc.pid] = proc
        process.pid, process.started_at = started.pid, started.started_at
        process.restarts += 1
        log.warning("process_restarted", name=process.name, pid=proc.pid, restarts=process.restarts)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set() and self.check(time.time()):
            stop.wait(CHECK_INTERVAL_S)


def main(home: Path) -> None:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("supervisor_started", home=str(home), pid=os.getpid())
    Supervisor(home).run(stop)
