"""The stack's supervisor: exited processes start again, with backoff, and are recorded."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from rea.endpoints import Endpoints
from rea.processes import is_running
from rea_tools.stack import SUPERVISOR, ManagedProcess, StackState, spawn
from rea_tools.supervisor import (
    BACKOFF_MAX_S,
    STABLE_AFTER_S,
    Down,
    Supervisor,
    backoff_s,
    in_a_row_after,
    restart_due,
)


def wait_dead(pid: int) -> None:
    """Until ``pid`` is a zombie, without reaping it: its parent (the supervisor) reads its exit."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        stat = Path(f"/proc/{pid}/stat")
        if not stat.exists() or stat.read_text().rpartition(")")[2].split()[0] == "Z":
            return
        time.sleep(0.01)


def test_restarts_back_off_and_start_over_once_a_process_stayed_up() -> None:
    assert [backoff_s(n) for n in range(8)] == [1, 2, 4, 8, 16, 32, BACKOFF_MAX_S, BACKOFF_MAX_S]
    assert not restart_due(Down(since=100.0, in_a_row=2), now=103.9)
    assert restart_due(Down(since=100.0, in_a_row=2), now=104.0)
    flapping = ManagedProcess(name="executor", pid=1, log="", started_at=100.0)
    assert in_a_row_after(flapping, previous=3, now=100.0 + STABLE_AFTER_S - 1) == 3
    assert in_a_row_after(flapping, previous=3, now=100.0 + STABLE_AFTER_S) == 0


def test_an_exited_process_is_started_again_and_recorded(tmp_path: Path) -> None:
    proc, sleeper = spawn("sleeper", ["sleep", "60"], tmp_path, {"REA_X": "1"}, attached=False)
    itself = ManagedProcess(name=SUPERVISOR, pid=os.getpid(), log="")  # never restarts itself
    StackState(Endpoints("k", "m", "r"), [sleeper, itself]).write(tmp_path)
    supervisor = Supervisor(tmp_path)
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        t = sleeper.started_at
        assert supervisor.check(now=t + 1)  # seen down
        assert supervisor.check(now=t + 2)  # a second later: started again
        recorded = StackState.read(tmp_path)
        assert recorded is not None and recorded.processes[0].restarts == 1
        again = recorded.processes[0]
        assert again.last_exit == "exited"  # not its child: only that it ended is known
        assert again.pid != sleeper.pid and is_running(again.pid) and again.env == {"REA_X": "1"}

        os.kill(again.pid, signal.SIGKILL)
        wait_dead(again.pid)
        assert supervisor.check(now=t + 3)
        assert supervisor.check(now=t + 4)  # the second restart in a row waits 2 s
        state = StackState.read(tmp_path)
        assert state is not None and state.processes[0].restarts == 1
        assert state.processes[0].last_exit == "killed by SIGKILL"  # its own child: the exit is known
        assert supervisor.check(now=t + 5)
        state = StackState.read(tmp_path)
        assert state is not None and state.processes[0].restarts == 2
    finally:
        for process in (StackState.read(tmp_path) or StackState(Endpoints("k", "m", "r"))).processes:
            if process.name != SUPERVISOR and is_running(process.pid):
                os.kill(process.pid, signal.SIGKILL)
