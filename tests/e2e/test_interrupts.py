"""Nothing left behind: `rea demo`, `rea bench` and `rea chaos`, stopped by a signal (SIGTERM
from a supervisor or `timeout`, SIGINT from Ctrl-C, SIGHUP from a closed terminal) while their
servers, services and training jobs run, stop every process they started and say so.

Each test runs the real command, records every process below it from ``/proc`` until the
servers and at least one job process run, signals it, then checks each recorded process (pid
and start time) and every process that carries the command's marker in its environment
(inherited by everything it starts, orphans included) is gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import pytest

from .helpers import FAST_DATASET

pytestmark = pytest.mark.e2e

MARK = "REA_INTERRUPT_TEST"
GONE_WITHIN_S = 20.0
SERVERS = ("/tansu", "secantusd", "redis-server")
JOB = "-m rea_workload"  # a job started cold
ZYGOTE = "-m rea_executor.warm"  # a job forked warm is a child of a zygote, with its argv
# Optuna first, so the REA servers run too. Its first job would train for a minute (about 40
# CPU-s): longer than the grace, so a bench that waits for it fails the test.
BENCH = [
    "bench",
    "--workload", "synthetic:rows=100000,crosses=1,strength=3",
    "--methods", "optuna,rea",
    "--budget-cpu-seconds", "100000",
    "--seeds", "1",
    "--confirm-seeds", "1",
    "--parallel", "1",
    "--epochs", "30",
]  # fmt: skip


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    start: int  # clock ticks after boot: with the pid, names one process
    state: str
    argv: str


def _processes() -> dict[int, Proc]:
    found: dict[int, Proc] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        pid = int(entry.name)
        found[pid] = Proc(pid, int(fields[1]), int(fields[19]), fields[0], argv.strip())
    return found


def _below(root: int, table: dict[int, Proc]) -> dict[int, Proc]:
    found: dict[int, Proc] = {}
    frontier = {root}
    while frontier:
        frontier = {p.pid for p in table.values() if p.ppid in frontier and p.pid not in found}
        found.update({pid: table[pid] for pid in frontier})
    return found


def _marked(marker: str) -> list[Proc]:
    """Running processes whose environment carries this test's marker."""
    table = _processes()
    needle = f"{MARK}={marker}".encode()
    marked = []
    for proc in table.values():
        try:
            environ = Path(f"/proc/{proc.pid}/environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0") and proc.state != "Z":
            marked.append(proc)
    return marked


def _survivors(recorded: dict[int, Proc], marker: str) -> list[Proc]:
    table = _processes()
    left = [
        table[pid]
        for pid, proc in recorded.items()
        if pid in table and table[pid].start == proc.start and table[pid].state != "Z"
    ]
    return left + [p for p in _marked(marker) if p.pid not in recorded]


def _servers_and_a_job(command: int, procs: dict[int, Proc], job_parent: str) -> bool:
    """Every server runs, and a job process under a worker (or under the command itself)."""
    argvs = [p.argv for p in procs.values()]
    if not all(any(server in argv for argv in argvs) for server in SERVERS):
        return False
    for proc in procs.values():
        starter = _started_job(proc, procs)
        if starter is None:
            continue
        if job_parent == "command" and starter == command:
            return True
        if job_parent == "worker" and starter in procs and "rea_tools service worker" in procs[starter].argv:
            return True
    return False


def _started_job(proc: Proc, procs: dict[int, Proc]) -> int | None:
    """Whoever started ``proc`` if it is a training job: its parent for a cold job, its
    zygote's parent for a job forked warm; None for any other process."""
    if JOB in proc.argv:
        return proc.ppid
    parent = procs.get(proc.ppid)
    if parent is not None and ZYGOTE in parent.argv:
        return parent.ppid
    return None


def _interrupt(
    tmp_path: Path, args: list[str], sig: signal.Signals, ready: Callable[[int, dict[int, Proc]], bool]
) -> None:
    marker = uuid4().hex
    env = {**os.environ, "REA_HOME": str(tmp_path / "home"), MARK: marker}
    for external in ("REA_KAFKA_BOOTSTRAP", "REA_MONGO_URI", "REA_REDIS_URL"):
        env.pop(external, None)  # the command must start its own parts
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        command = subprocess.Popen(
            [sys.executable, "-m", "rea_tools", *args], env=env, cwd=tmp_path, stdout=stdout, stderr=stderr
        )
    recorded: dict[int, Proc] = {}
    try:
        deadline = time.monotonic() + 240
        while True:
            now = _below(command.pid, _processes())
            recorded.update(now)
            if ready(command.pid, now):
                break
            assert command.poll() is None, f"exited with {command.returncode}:\n{err.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no job ran within 240 s:\n{err.read_text()[-3000:]}"
            time.sleep(0.2)

        command.send_signal(sig)
        signalled = time.monotonic()
        with contextlib.suppress(subprocess.TimeoutExpired):
            command.wait(timeout=GONE_WITHIN_S)
        exited = command.poll() is not None
        left = _survivors(recorded, marker)
        while left and time.monotonic() - signalled < GONE_WITHIN_S:
            time.sleep(0.5)
            left = _survivors(recorded, marker)
    finally:
        if command.poll() is None:
            command.kill()
            command.wait()
        for proc in _survivors(recorded, marker):  # leave the machine clean even when failing
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)

    assert exited, f"still running {GONE_WITHIN_S:g} s after {sig.name}:\n{err.read_text()[-3000:]}"
    assert not left, "left running:\n" + "\n".join(f"{p.pid} {p.argv[:160]}" for p in left)
    assert any(_started_job(p, recorded) is not None for p in recorded.values())
    assert command.returncode == 128 + sig, (command.returncode, err.read_text()[-3000:])
    lines = [line for line in err.read_text().splitlines() if line.strip()]
    assert lines and f"interrupted by {sig.name}" in lines[-1], lines[-5:]


@pytest.mark.timeout(360)
def test_sigterm_stops_everything_rea_demo_started(tmp_path: Path) -> None:
    """Servers, services, workers and the job a worker runs: all gone, with a message."""
    _interrupt(
        tmp_path,
        ["demo", "--workers", "1", "--dataset", FAST_DATASET],
        signal.SIGTERM,
        lambda command, procs: _servers_and_a_job(command, procs, "worker"),
    )
    assert not (tmp_path / "home" / "stack.json").exists()


@pytest.mark.timeout(360)
def test_ctrl_c_stops_the_optuna_jobs_rea_bench_runs_itself(tmp_path: Path) -> None:
    """Optuna's jobs run in the bench's own thread pool, which would wait for them to finish:
    they are killed instead, and the REA servers stopped."""
    _interrupt(
        tmp_path,
        [*BENCH, "--out", str(tmp_path / "bench")],
        signal.SIGINT,
        lambda command, procs: _servers_and_a_job(command, procs, "command"),
    )


@pytest.mark.timeout(420)
def test_sighup_stops_everything_rea_chaos_started(tmp_path: Path) -> None:
    """The fault injector restarts services and whole stacks: whatever runs at the signal goes."""
    _interrupt(
        tmp_path,
        ["chaos", "--campaigns", "1", "--malformed", "10", "--home", str(tmp_path / "chaos")],
        signal.SIGHUP,
        lambda command, procs: _servers_and_a_job(command, procs, "worker"),
    )
