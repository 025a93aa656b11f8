"""The sandbox on its own, with small stdlib children: limits, deadlines, process groups, the
scrubbed environment, and the report pipe an evaluator talks to a child through."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rea_kernel.sandbox import (
    PASSED_THROUGH,
    REPORT_FD_VARIABLE,
    Limits,
    SandboxedProcess,
    Verdict,
    run_sandboxed,
)

QUICK = Limits(wall_seconds=10, memory_bytes=1 << 30, file_bytes=1 << 20)


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    made = tmp_path / "child"
    made.mkdir()
    return made


def python(code: str) -> list[str]:
    return [sys.executable, "-I", "-c", code]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_a_hang_is_killed_at_the_deadline(directory: Path) -> None:
    limits = Limits(wall_seconds=0.5)
    started = time.monotonic()
    finished = run_sandboxed(python("while True: pass"), directory, limits)
    assert time.monotonic() - started < 5
    assert finished.failure(limits) == (
        Verdict.TIMED_OUT,
        "still running at the 0.5 s wall-clock limit; killed",
    )


@pytest.mark.parametrize("leave", ["while it runs", "when it exits"])
def test_grandchildren_die_with_the_child(directory: Path, leave: str) -> None:
    wait = "; wait" if leave == "while it runs" else ""
    finished = run_sandboxed(
        ["sh", "-c", f"sleep 60 & echo $! > grandchild{wait}"], directory, Limits(wall_seconds=1)
    )
    assert finished.killed_at_deadline == (leave == "while it runs")
    grandchild = int((directory / "grandchild").read_text())
    deadline = time.monotonic() + 5
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(grandchild)


def test_crashes_are_named_by_their_signal(directory: Path) -> None:
    finished = run_sandboxed(python("import os; os.abort()"), directory, QUICK)
    verdict, reason = finished.failure(QUICK) or (None, "")
    assert verdict is Verdict.CRASHED and "SIGABRT" in reason


def test_cpu_time_is_limited(directory: Path) -> None:
    limits = Limits(wall_seconds=30, cpu_seconds=1)
    finished = run_sandboxed(python("while True: pass"), directory, limits)
    assert not finished.killed_at_deadline
    verdict, reason = finished.failure(limits) or (None, "")
    assert verdict is Verdict.TIMED_OUT and "CPU time" in reason


def test_a_runaway_allocation_fails_inside_the_child(directory: Path) -> None:
    code = "blocks = []\nwhile True: blocks.append(bytearray(64 << 20))"
    finished = run_sandboxed(python(code), directory, QUICK)
    assert finished.returncode == 1 and "MemoryError" in finished.stderr


def test_a_gpu_child_counts_its_heap_not_the_addresses_it_reserves(directory: Path) -> None:
    """A GPU runtime reserves far more address space than it touches: such a child is limited
    by RLIMIT_DATA, which a runaway allocation still hits, and a large reservation does not."""
    limits = QUICK.model_copy(update={"memory_counts": "data"})
    code = (
        "import mmap, resource as r\n"
        "reserved = mmap.mmap(-1, 4 << 30, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, prot=0)\n"
        "print(r.getrlimit(r.RLIMIT_DATA)[0], len(reserved) >> 30, flush=True)\n"
        "blocks = []\nwhile True: blocks.append(bytearray(64 << 20))"
    )
    finished = run_sandboxed(python(code), directory, limits)
    assert finished.stdout.split() == [str(QUICK.memory_bytes), "4"], finished.stderr
    assert finished.returncode == 1 and "MemoryError" in finished.stderr


def test_the_child_runs_with_the_limits_and_no_core_dumps(directory: Path) -> None:
    code = (
        "import resource as r\n"
        "print(r.getrlimit(r.RLIMIT_AS)[0], r.getrlimit(r.RLIMIT_FSIZE)[0], r.getrlimit(r.RLIMIT_CORE)[1])"
    )
    finished = run_sandboxed(python(code), directory, QUICK)
    assert finished.stdout.split() == [str(QUICK.memory_bytes), str(QUICK.file_bytes), "0"]


def test_the_environment_is_scrubbed(directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REA_MONGO_URI", "mongodb://user:s3cr3t@db")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    finished = run_sandboxed(python(code), directory, QUICK, {"EXTRA": "given"})
    environment = json.loads(finished.stdout)
    expected = {"PATH", "HOME", "TMPDIR", "LANG", "EXTRA", REPORT_FD_VARIABLE}
    assert set(environment) - set(PASSED_THROUGH) == expected
    assert "s3cr3t" not in finished.stdout
    assert Path(environment["HOME"]).is_relative_to(directory) and Path(environment["TMPDIR"]).is_relative_to(
        directory
    )


def test_the_caller_talks_to_the_child_through_stdin_and_the_report_pipe(directory: Path) -> None:
    code = (
        "import os, sys\n"
        "fd = int(os.environ['KERNEL_REPORT_FD'])\n"
        "os.write(fd, b'ready\\n')\n"
        "for line in sys.stdin:\n"
        "    os.write(fd, line.upper().encode())\n"
    )
    with SandboxedProcess(python(code), directory, QUICK) as process:
        assert process.receive() == "ready"
        process.send("time this")
        assert process.receive() == "TIME THIS"
    assert process.finish().returncode == 0
    assert process.receive() is None  # the pipe is closed: no more reports, no waiting


def test_a_paused_child_and_its_grandchildren_use_no_cpu_and_keep_their_deadline(directory: Path) -> None:
    """While another process is timed, the child is stopped: its threads and grandchildren make
    no progress, and the time stopped does not count towards its wall-clock limit."""
    code = (
        "import os, subprocess, sys\n"
        "fd = int(os.environ['KERNEL_REPORT_FD'])\n"
        "subprocess.Popen(['sh', '-c', 'while :; do date +%s%N > next; mv next grandchild; done'])\n"
        "os.write(fd, b'ready\\n')\n"
        "for line in sys.stdin:\n"
        "    os.write(fd, line.encode())\n"
    )
    limits = Limits(wall_seconds=1.5, memory_bytes=1 << 30, file_bytes=1 << 20)
    with SandboxedProcess(python(code), directory, limits) as process:
        assert process.receive() == "ready"
        time.sleep(0.3)
        process.pause()
        time.sleep(0.2)  # a write under way when the signal came lands first
        stopped = (directory / "grandchild").read_text()
        time.sleep(1.5)  # past the wall-clock limit, but stopped
        assert (directory / "grandchild").read_text() == stopped
        process.resume()
        process.send("still here")
        assert process.receive() == "still here"
        time.sleep(0.2)
        assert (directory / "grandchild").read_text() != stopped
    assert not process.finish().killed_at_deadline


def test_a_child_started_ahead_of_its_work_can_count_its_limit_from_its_first_job(directory: Path) -> None:
    """The evaluator starts its baselines while the candidate's trials run: the wait before its
    first job does not use up its wall-clock limit, but its work is held to all of it."""
    code = (
        "import os, sys, time\n"
        "fd = int(os.environ['KERNEL_REPORT_FD'])\n"
        "for line in sys.stdin:\n"
        "    time.sleep(float(line))\n"
        "    os.write(fd, line.encode())\n"
    )
    limits = Limits(wall_seconds=1.0, memory_bytes=1 << 30, file_bytes=1 << 20)
    with SandboxedProcess(python(code), directory, limits) as process:
        time.sleep(1.2)  # past the limit, waiting for its first job
        process.count_from_now()
        process.send("0.5")
        assert process.receive() == "0.5"
        process.send("0.8")  # 1.3 s of work in all: beyond the limit
        assert process.receive() is None
    assert process.finish().killed_at_deadline


CALLER = f"""
import os, sys, time
from pathlib import Path
from rea_kernel.sandbox import Limits, SandboxedProcess

child = (
    "import os, sys; open('pid', 'w').write(str(os.getpid())); "
    "os.write(int(os.environ['{REPORT_FD_VARIABLE}']), b'ready' + bytes([10])); sys.stdin.read()"
)
process = SandboxedProcess([sys.executable, "-I", "-c", child], Path(sys.argv[1]), Limits(wall_seconds=60))
assert process.receive() == "ready"
process.pause()
print("paused", flush=True)
time.sleep(60)
"""


def test_a_child_dies_with_its_caller_even_while_stopped(directory: Path) -> None:
    """A service killed while its candidate's process is stopped between timed rounds leaves no
    process waiting forever."""
    argv = [sys.executable, "-c", CALLER, str(directory)]
    caller = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert caller.stdout is not None and caller.stdout.readline() == "paused\n"
        child = int((directory / "pid").read_text())
        assert alive(child)
    finally:
        caller.kill()
        caller.wait()
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    survived = alive(child)
    if survived:
        os.kill(child, signal.SIGKILL)
    assert not survived


def test_leaving_on_an_error_kills_the_child_at_once(directory: Path) -> None:
    started = time.monotonic()
    with (
        pytest.raises(RuntimeError),
        SandboxedProcess(python("import time; time.sleep(60)"), directory, QUICK) as process,
    ):
        raise RuntimeError("the caller has seen enough")
    assert time.monotonic() - started < 5
    assert process.finish().returncode == -signal.SIGKILL
