"""The sandbox on its own, with small stdlib children: limits, deadlines, process groups, the
scrubbed environment, and the report pipe an evaluator talks to a child through. Every test runs
with each way of starting a child (a launcher): afresh, and forked from a fork server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rea_kernel.forkserver import ForkServers, start_forked
from rea_kernel.sandbox import (
    PASSED_THROUGH,
    REPORT_FD_VARIABLE,
    Launcher,
    Limits,
    SandboxedProcess,
    Verdict,
    run_sandboxed,
    start_exec,
)

QUICK = Limits(wall_seconds=10, memory_bytes=1 << 30, file_bytes=1 << 20)


LAUNCHERS: dict[str, Launcher] = {"exec": start_exec, "forked": start_forked}


@pytest.fixture(params=sorted(LAUNCHERS))
def launcher(request: pytest.FixtureRequest) -> Launcher:
    return LAUNCHERS[request.param]


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


def test_a_hang_is_killed_at_the_deadline(directory: Path, launcher: Launcher) -> None:
    limits = Limits(wall_seconds=0.5)
    started = time.monotonic()
    finished = run_sandboxed(python("while True: pass"), directory, limits, launcher=launcher)
    assert time.monotonic() - started < 5
    assert finished.failure(limits) == (
        Verdict.TIMED_OUT,
        "still running at the 0.5 s wall-clock limit; killed",
    )


@pytest.mark.parametrize("leave", ["while it runs", "when it exits"])
def test_grandchildren_die_with_the_child(directory: Path, leave: str, launcher: Launcher) -> None:
    code = (
        "import subprocess\n"
        "sleeper = subprocess.Popen(['sleep', '60'])\n"
        "open('grandchild', 'w').write(str(sleeper.pid))\n"
        + ("sleeper.wait()\n" if leave == "while it runs" else "")
    )
    finished = run_sandboxed(python(code), directory, Limits(wall_seconds=1), launcher=launcher)
    assert finished.killed_at_deadline == (leave == "while it runs")
    grandchild = int((directory / "grandchild").read_text())
    deadline = time.monotonic() + 5
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(grandchild)


def test_crashes_are_named_by_their_signal(directory: Path, launcher: Launcher) -> None:
    finished = run_sandboxed(python("import os; os.abort()"), directory, QUICK, launcher=launcher)
    verdict, reason = finished.failure(QUICK) or (None, "")
    assert verdict is Verdict.CRASHED and "SIGABRT" in reason


def test_cpu_time_is_limited(directory: Path, launcher: Launcher) -> None:
    limits = Limits(wall_seconds=30, cpu_seconds=1)
    finished = run_sandboxed(python("while True: pass"), directory, limits, launcher=launcher)
    assert not finished.killed_at_deadline
    verdict, reason = finished.failure(limits) or (None, "")
    assert verdict is Verdict.TIMED_OUT and "CPU time" in reason


def test_a_runaway_allocation_fails_inside_the_child(directory: Path, launcher: Launcher) -> None:
    code = "blocks = []\nwhile True: blocks.append(bytearray(64 << 20))"
    finished = run_sandboxed(python(code), directory, QUICK, launcher=launcher)
    assert finished.returncode == 1 and "MemoryError" in finished.stderr


def test_a_gpu_child_counts_its_heap_not_the_addresses_it_reserves(
    directory: Path, launcher: Launcher
) -> None:
    """A GPU runtime reserves far more address space than it touches: such a child is limited
    by RLIMIT_DATA, which a runaway allocation still hits, and a large reservation does not."""
    limits = QUICK.model_copy(update={"memory_counts": "data"})
    code = (
        "import mmap, resource as r\n"
        "reserved = mmap.mmap(-1, 4 << 30, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, prot=0)\n"
        "print(r.getrlimit(r.RLIMIT_DATA)[0], len(reserved) >> 30, flush=True)\n"
        "blocks = []\nwhile True: blocks.append(bytearray(64 << 20))"
    )
    finished = run_sandboxed(python(code), directory, limits, launcher=launcher)
    assert finished.stdout.split() == [str(QUICK.memory_bytes), "4"], finished.stderr
    assert finished.returncode == 1 and "MemoryError" in finished.stderr


def test_the_child_runs_with_the_limits_and_no_core_dumps(directory: Path, launcher: Launcher) -> None:
    code = (
        "import resource as r\n"
        "print(r.getrlimit(r.RLIMIT_AS)[0], r.getrlimit(r.RLIMIT_FSIZE)[0], r.getrlimit(r.RLIMIT_CORE)[1])"
    )
    finished = run_sandboxed(python(code), directory, QUICK, launcher=launcher)
    assert finished.stdout.split() == [str(QUICK.memory_bytes), str(QUICK.file_bytes), "0"]


def test_the_environment_is_scrubbed(
    directory: Path, launcher: Launcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REA_MONGO_URI", "mongodb://user:s3cr3t@db")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    finished = run_sandboxed(python(code), directory, QUICK, {"EXTRA": "given"}, launcher=launcher)
    environment = json.loads(finished.stdout)
    expected = {"PATH", "HOME", "TMPDIR", "LANG", "EXTRA", REPORT_FD_VARIABLE}
    assert set(environment) - set(PASSED_THROUGH) == expected
    assert "s3cr3t" not in finished.stdout
    assert Path(environment["HOME"]).is_relative_to(directory) and Path(environment["TMPDIR"]).is_relative_to(
        directory
    )


def test_the_caller_talks_to_the_child_through_stdin_and_the_report_pipe(
    directory: Path, launcher: Launcher
) -> None:
    code = (
        "import os, sys\n"
        "fd = int(os.environ['KERNEL_REPORT_FD'])\n"
        "os.write(fd, b'ready\\n')\n"
        "for line in sys.stdin:\n"
        "    os.write(fd, line.upper().encode())\n"
    )
    with SandboxedProcess(python(code), directory, QUICK, launcher=launcher) as process:
        assert process.receive() == "ready"
        process.send("time this")
        assert process.receive() == "TIME THIS"
    assert process.finish().returncode == 0
    assert process.receive() is None  # the pipe is closed: no more reports, no waiting


def test_a_paused_child_and_its_grandchildren_use_no_cpu_and_keep_their_deadline(
    directory: Path, launcher: Launcher
) -> None:
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
    with SandboxedProcess(python(code), directory, limits, launcher=launcher) as process:
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


def test_a_child_started_ahead_of_its_work_can_count_its_limit_from_its_first_job(
    directory: Path, launcher: Launcher
) -> None:
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
    with SandboxedProcess(python(code), directory, limits, launcher=launcher) as process:
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
from rea_kernel.forkserver import start_forked
from rea_kernel.sandbox import Limits, SandboxedProcess, start_exec

child = (
    "import os, sys; open('pid', 'w').write(str(os.getpid())); "
    "os.write(int(os.environ['{REPORT_FD_VARIABLE}']), b'ready' + bytes([10])); sys.stdin.read()"
)
launcher = start_forked if sys.argv[2] == "forked" else start_exec
process = SandboxedProcess(
    [sys.executable, "-I", "-c", child], Path(sys.argv[1]), Limits(wall_seconds=60), launcher=launcher
)
assert process.receive() == "ready"
process.pause()
print("paused", flush=True)
time.sleep(60)
"""


def test_a_child_dies_with_its_caller_even_while_stopped(directory: Path, launcher: Launcher) -> None:
    """A service killed while its candidate's process is stopped between timed rounds leaves no
    process waiting forever."""
    name = next(name for name, known in LAUNCHERS.items() if known is launcher)
    argv = [sys.executable, "-c", CALLER, str(directory), name]
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


def test_leaving_on_an_error_kills_the_child_at_once(directory: Path, launcher: Launcher) -> None:
    started = time.monotonic()
    with (
        pytest.raises(RuntimeError),
        SandboxedProcess(
            python("import time; time.sleep(60)"), directory, QUICK, launcher=launcher
        ) as process,
    ):
        raise RuntimeError("the caller has seen enough")
    assert time.monotonic() - started < 5
    assert process.finish().returncode == -signal.SIGKILL


def test_a_child_that_cannot_be_set_up_raises_in_its_caller(tmp_path: Path, launcher: Launcher) -> None:
    """A folder that is not there: the caller hears of it at once, as from ``subprocess``, not
    as a child that started and died."""
    with pytest.raises(OSError):
        run_sandboxed(python("pass"), tmp_path / "missing", QUICK, launcher=launcher)


# the fork server's own behaviour -------------------------------------------------------------


def test_a_fork_server_imports_the_module_once_and_runs_it_as_main_in_each_child(tmp_path: Path) -> None:
    """``-m MODULE``: the server imports the module (and what it imports) ahead; each child
    runs it as ``__main__``, with its arguments, as ``python -m`` would."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "preloaded.py").write_text(
        "import os, sys\n"
        "with open(os.environ['IMPORTS'], 'a') as log:\n"
        "    log.write(f'{__name__} {os.getpid()}\\n')\n"
    )
    imports = tmp_path / "imports"
    environment = {"PYTHONPATH": str(code), "IMPORTS": str(imports)}
    argv = [sys.executable, "-s", "-P", "-m", "preloaded"]
    limits = QUICK.model_copy(update={"confine": False})  # the log is outside the child's folder
    children = []
    for number in range(2):
        directory = tmp_path / f"child-{number}"
        directory.mkdir()
        finished = run_sandboxed(
            [*argv, "--an-argument"], directory, limits, environment, launcher=start_forked
        )
        assert finished.returncode == 0, finished.stderr
        children.append(directory)
    lines = imports.read_text().splitlines()
    server = lines[0].split()
    assert server[0] == "preloaded"
    mains = [line.split() for line in lines[1:]]
    assert [name for name, _ in mains] == ["__main__", "__main__"]
    assert len({server[1], *(pid for _, pid in mains)}) == 3  # the server, then each child


def test_children_of_a_server_have_their_own_environment(tmp_path: Path) -> None:
    """Children whose environments differ beyond their own folders come from different
    servers: a module the server imported has read the server's variables."""
    seen = []
    for value in ("one", "two"):
        directory = tmp_path / value
        directory.mkdir()
        code = "import os; print(os.environ['SETTING'], os.getppid())"
        finished = run_sandboxed(python(code), directory, QUICK, {"SETTING": value}, launcher=start_forked)
        seen.append(finished.stdout.split())
    assert [value for value, _ in seen] == ["one", "two"]
    assert seen[0][1] != seen[1][1]


def test_a_dead_fork_server_is_started_again(tmp_path: Path) -> None:
    """A server killed from outside takes its children with it; the next child gets a new one."""
    code = (
        "import os, sys\n"
        "os.write(int(os.environ['KERNEL_REPORT_FD']), f'{os.getppid()}\\n'.encode())\n"
        "sys.stdin.read()\n"
    )
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    with SandboxedProcess(python(code), first, QUICK, {"SERVER": "killed"}, launcher=start_forked) as process:
        server = int(process.receive() or 0)
        os.kill(server, signal.SIGKILL)
        assert process.finish().returncode == -signal.SIGKILL
    finished = run_sandboxed(
        python("print('again')"), second, QUICK, {"SERVER": "killed"}, launcher=start_forked
    )
    assert finished.returncode == 0 and finished.stdout == "again\n"


def test_a_fork_server_runs_only_its_interpreter(directory: Path) -> None:
    with pytest.raises(ValueError, match="fork server"):
        run_sandboxed(["sh", "-c", "true"], directory, QUICK, launcher=start_forked)


def test_a_server_is_retired_only_once_its_children_are_done(tmp_path: Path) -> None:
    """Past the servers a process keeps, the least recently used goes, but not while a child
    of it runs: that child's evaluation would be killed."""
    servers = ForkServers(kept=1)
    echo = (
        "import os, sys\n"
        "for line in sys.stdin:\n"
        "    os.write(int(os.environ['KERNEL_REPORT_FD']), f'{line.strip()} {os.getppid()}\\n'.encode())\n"
    )
    folders = {name: tmp_path / name for name in ("kept", "other", "third", "again")}
    for folder in folders.values():
        folder.mkdir()
    try:
        with SandboxedProcess(
            python(echo), folders["kept"], QUICK, {"SERVER": "a"}, launcher=servers.start
        ) as kept:
            kept.send("one")
            first = (kept.receive() or "").split()
            other = run_sandboxed(
                python("pass"), folders["other"], QUICK, {"SERVER": "b"}, launcher=servers.start
            )
            assert other.returncode == 0
            kept.send("two")
            assert (kept.receive() or "").split() == ["two", first[1]]  # its server is still there
        third = run_sandboxed(
            python("pass"), folders["third"], QUICK, {"SERVER": "c"}, launcher=servers.start
        )
        assert third.returncode == 0
        code = "import os; print(os.getppid())"
        again = run_sandboxed(python(code), folders["again"], QUICK, {"SERVER": "a"}, launcher=servers.start)
        assert again.stdout.strip() != first[1]  # retired once idle, started anew
    finally:
        servers.close()
