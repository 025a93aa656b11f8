"""Start sandboxed Python children by forking a process that has already imported their modules.

Every evaluation runs the harness twice (the candidate's process and the baselines'), and a
fresh Python spends one to two seconds of CPU importing PyTorch before it does anything: for a
small evaluation (a test's, a screened draft's with its build cached), most of the CPU the
evaluation takes. :func:`start_forked` is a
:data:`rea_kernel.sandbox.Launcher` that asks a *fork server* instead: a trusted Python started
once with the children's interpreter flags and import-time environment, which imports the
program's module (``-m``) and then forks a child for each request, as
:mod:`multiprocessing`'s ``forkserver`` does for its workers.

The child gets what :func:`rea_kernel.sandbox.start_exec` gives one: its own session and process
group, the caller's descriptors as stdin, stdout, stderr and report pipe and no other, its folder
as working directory, its whole environment, the limits and the Landlock confinement (applied by
the child itself, before its program runs, and before it tells the server it started), and death
with its parent. Its program then runs as ``python -m`` or ``python -c`` would run it, and the
child exits with ``os._exit``, without the server's ``atexit`` handlers. What differs is its
memory: the server's modules are already imported, and Python's and PyTorch's random state are
the server's until reseeded (Python's is, on fork; the harness seeds PyTorch's itself). A
module the server imported has read its environment variables already, so a server serves only
children with its own environment but for ``HOME``, ``TMPDIR`` and the report descriptor
(``tempfile``'s cached folder is reset in each child); one server runs per distinct interpreter
flags, module and environment; the few most recently used are kept, and any whose children
still run.

Forking is safe because the server runs no code of its own in threads. Importing PyTorch
starts one idle native thread (NumPy's OpenBLAS pool), which OpenBLAS's at-fork handler shuts
down before the first fork (the server then has one thread; a child starts its own pool when
it needs one). :mod:`rea_executor.warm` forks training jobs the same way, one at a time
with its own log; this server runs several children at once and hands each the caller's
descriptors, which the sandbox's report pipe and stdin need.

Process model: the caller holds one end of a socket pair; the server, the other. A request is
one message (JSON) with five descriptors: the child's stdin, stdout, stderr and report pipe, and
a *status* pipe the server answers on: ``started PID`` (or ``failed REASON``), later
``exit CODE``. The server keeps an exited child as a zombie until the caller closes its end of
the status pipe (:meth:`ForkedChild.release`), so the process group the caller signals cannot be
another's meanwhile. When the caller's end of the socket closes (the caller exited or was
killed), the server kills every child's group, stopped or not, and exits.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import runpy
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import types
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from rea_kernel import landlock
from rea_kernel.landlock import Confinement
from rea_kernel.sandbox import (
    REPORT_FD_VARIABLE,
    Limits,
    LineReader,
    Spawn,
    child_setup,
    scrubbed_environment,
    signal_group,
)

PER_CHILD_VARIABLES = ("HOME", "TMPDIR", REPORT_FD_VARIABLE)
"""The variables a child of a server may have of its own; the rest of its environment is the
server's, read by the modules the server imported."""
SERVERS_KEPT = 4
START_SECONDS = 120.0
"""How long a request waits for its child to start: the first waits for the server's imports."""
_REPORT_FD, _READY_FD = 3, 4
"""Where a child finds its report pipe and, while it sets itself up, its channel to the server."""


@dataclass(frozen=True)
class Program:
    """A Python command line the server can run: ``python [FLAGS] -m MODULE ARGS`` or
    ``python [FLAGS] -c CODE ARGS``, with this interpreter."""

    flags: tuple[str, ...]
    kind: str
    target: str
    arguments: tuple[str, ...]

    @classmethod
    def parse(cls, argv: Sequence[str]) -> Program:
        if not argv or argv[0] != sys.executable:
            raise ValueError(f"a fork server runs only this interpreter ({sys.executable}), not {argv[:1]}")
        for index, word in enumerate(argv[1:], start=1):
            if word in ("-m", "-c") and index + 1 < len(argv):
                return cls(tuple(argv[1:index]), word, argv[index + 1], tuple(argv[index + 2 :]))
            if not (word.startswith("-") and len(word) == 2 and word[1].isalpha()):
                break
        raise ValueError(f"a fork server runs 'python [FLAGS] -m MODULE' or '-c CODE', not {list(argv)}")

    @property
    def preload(self) -> str | None:
        """The module the server imports ahead of its children: the one they run."""
        return self.target if self.kind == "-m" else None

    def run(self) -> None:
        """Run as Python runs ``-m`` or ``-c``: as ``__main__``, with ``sys.argv`` to match."""
        if not sys.flags.safe_path:  # the server's own folder would be first on the path
            sys.path[0] = os.getcwd() if self.kind == "-m" else ""
        if self.kind == "-m":
            sys.argv = [self.target, *self.arguments]
            runpy.run_module(self.target, run_name="__main__", alter_sys=True)
        else:
            sys.argv = ["-c", *self.arguments]
            main = types.ModuleType("__main__")
            sys.modules["__main__"] = main
            exec(compile(self.target, "<string>", "exec"), main.__dict__)


# the caller's side ------------------------------------------------------------------------------


class ServerGoneError(OSError):
    """The server could not take the request or did not answer it: it died, or is stuck."""


class ForkedChild:
    """A child of a fork server, driven like :class:`subprocess.Popen` (:class:`rea_kernel.sandbox.Child`)."""

    def __init__(
        self,
        pid: int,
        stdin: IO[bytes],
        status: LineReader,
        argv: Sequence[str],
        released: Callable[[], None],
    ) -> None:
        self.pid = pid
        self.stdin: IO[bytes] | None = stdin
        self.returncode: int | None = None
        self._status = status
        self._argv = list(argv)
        self._released: Callable[[], None] | None = released
        self._server_gone = False

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            deadline = None if timeout is None else time.monotonic() + timeout
            line = self._status.line(deadline)
            if line is None and not self._status.ended:
                raise subprocess.TimeoutExpired(self._argv, timeout or 0.0)
            word, _, code = (line or "").partition(" ")
            self._server_gone = word != "exit"
            self.returncode = int(code) if word == "exit" else -signal.SIGKILL  # died with the server
        return self.returncode

    def signal_group(self, number: signal.Signals) -> None:
        """Signal the child's group while its server holds its id: not once the server is seen
        gone, since the child died with it and its id may have been reaped and taken since."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.wait(timeout=0)
        if not self._server_gone:
            signal_group(self.pid, number)

    def release(self) -> None:
        """Let the server reap the child: its process id is free for reuse from now on."""
        if self._released is None:
            return
        os.close(self._status.fd)
        if self.stdin is not None:
            with contextlib.suppress(OSError):
                self.stdin.close()
        self._released()
        self._released = None


class ForkServer:
    """One server process and the caller's end of its socket. :meth:`spawn` is thread-safe."""

    def __init__(self, flags: Sequence[str], preload: str | None, environment: Mapping[str, str]) -> None:
        self._home = Path(tempfile.mkdtemp(prefix="rea-forkserver-"))
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = [sys.executable, *flags, "-m", "rea_kernel.forkserver", str(theirs.fileno())]
        with theirs:
            self.process = subprocess.Popen(
                [*argv, *([preload] if preload else [])],
                cwd=self._home,
                env=scrubbed_environment(self._home, environment),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
            )
        self._socket = ours
        self._lock = threading.Lock()
        self._children = 0

    def alive(self) -> bool:
        return self.process.poll() is None

    def busy(self) -> bool:
        """Whether a child of this server has not been released yet."""
        with self._lock:
            return self._children > 0

    def _released(self) -> None:
        with self._lock:
            self._children -= 1

    def spawn(self, spawn: Spawn) -> ForkedChild:
        """Ask for a child; raises :class:`OSError` if it could not be started."""
        stdin_read, stdin_write = os.pipe()
        status_read, status_write = os.pipe()
        request = {
            "argv": list(spawn.argv),
            "directory": str(spawn.directory.absolute()),  # the server has a folder of its own
            "environment": dict(spawn.environment),
            "limits": spawn.limits.model_dump(mode="json"),
            "confinement": None if spawn.confinement is None else _paths(spawn.confinement),
        }
        try:
            with self._lock:
                socket.send_fds(
                    self._socket,
                    [json.dumps(request).encode()],
                    [stdin_read, spawn.stdout, spawn.stderr, spawn.report, status_write],
                )
        except OSError as error:
            for fd in (stdin_read, stdin_write, status_read, status_write):
                os.close(fd)
            raise ServerGoneError(f"the fork server took no request: {error}") from error
        os.close(stdin_read)
        os.close(status_write)
        status = LineReader(status_read)
        answer = status.line(time.monotonic() + START_SECONDS) or ""
        word, _, detail = answer.partition(" ")
        if word != "started":
            os.close(stdin_write)
            os.close(status_read)
            if word != "failed":
                raise ServerGoneError(f"the fork server did not answer (exit status {self.process.poll()})")
            raise OSError(f"could not start {list(spawn.argv)[:4]}: {detail}")
        with self._lock:
            self._children += 1
        return ForkedChild(int(detail), open(stdin_write, "wb"), status, spawn.argv, self._released)

    def close(self) -> None:
        """End the server: it kills the children it still has and exits."""
        self._socket.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self._home, ignore_errors=True)


class ForkServers:
    """The servers a process keeps, by interpreter flags, module and environment: the
    :data:`SERVERS_KEPT` most recently used, and any other whose children still run; each is
    started again if it died."""

    def __init__(self, kept: int = SERVERS_KEPT) -> None:
        self._kept = kept
        self._servers: OrderedDict[tuple[Any, ...], ForkServer] = OrderedDict()
        self._lock = threading.Lock()

    def start(self, spawn: Spawn) -> ForkedChild:
        program = Program.parse(spawn.argv)
        shared = {name: value for name, value in spawn.environment.items() if name not in PER_CHILD_VARIABLES}
        key = (program.flags, program.preload, frozenset(shared.items()))
        for attempt in range(2):
            server = self._server(key, program, shared)
            try:
                return server.spawn(spawn)
            except ServerGoneError:
                self._retire(key, server)
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _retire(self, key: tuple[Any, ...], server: ForkServer) -> None:
        with self._lock:
            if self._servers.get(key) is server:
                del self._servers[key]
        server.close()

    def _server(self, key: tuple[Any, ...], program: Program, shared: Mapping[str, str]) -> ForkServer:
        retired = []
        with self._lock:
            server = self._servers.pop(key, None)
            if server is None or not server.alive():  # one that died since is retired on its first request
                retired += [server] if server is not None else []
                server = ForkServer(program.flags, program.preload, shared)
            self._servers[key] = server
            for old_key, old in list(self._servers.items())[: -self._kept]:
                if not old.busy():
                    retired.append(self._servers.pop(old_key))
        for old in retired:
            old.close()
        return server

    def close(self) -> None:
        with self._lock:
            servers, self._servers = list(self._servers.values()), OrderedDict()
        for server in servers:
            server.close()


_SERVERS = ForkServers()
"""This process's servers. Module state, as :mod:`multiprocessing` keeps its one fork server:
a server outlives any single evaluation, and is shared by the evaluations a process runs."""
atexit.register(_SERVERS.close)


def start_forked(spawn: Spawn) -> ForkedChild:
    """A :data:`rea_kernel.sandbox.Launcher`: fork ``spawn``'s child from this process's server
    for its program (started on first use). ``spawn.argv`` must be this interpreter running a
    module (``-m``, imported by the server ahead) or code (``-c``)."""
    return _SERVERS.start(spawn)


def _paths(confinement: Confinement) -> dict[str, Any]:
    """A confinement as JSON: its grants' paths as strings, absolute from the caller's folder
    (not resolved: the child follows links itself, as Landlock's rules are made)."""
    return {
        name: [os.path.abspath(path) for path in value] if isinstance(value, tuple) else value
        for name, value in asdict(confinement).items()
    }


def _confinement(data: dict[str, Any]) -> Confinement:
    def paths(name: str) -> tuple[Path, ...]:
        return tuple(map(Path, data[name]))

    return Confinement(
        read=paths("read"),
        execute=paths("execute"),
        read_write=paths("read_write"),
        devices=paths("devices"),
        allow_tcp=bool(data["allow_tcp"]),
    )


# the server's side -----------------------------------------------------------------------------


class _Server:
    """The serving loop: requests from the socket, exits of children from ``SIGCHLD``."""

    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.status: dict[int, int] = {}  # running or unreleased child -> its status pipe
        self.exited: set[int] = set()
        self.wake_read, wake_write = os.pipe()
        for fd in (self.wake_read, wake_write):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(wake_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is for its caller, which closes it
        self.poller = select.poll()
        self.poller.register(control.fileno(), select.POLLIN)
        self.poller.register(self.wake_read, select.POLLIN)

    def serve(self) -> None:
        while True:
            for fd, _ in self.poller.poll():
                if fd == self.control.fileno():
                    if not self.request():
                        self.end()
                        return
                elif fd == self.wake_read:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self.wake_read, 512):
                            pass
                    self.notice_exits()
                else:  # the caller closed a status pipe: the child's id may go
                    self.reap(fd)

    def request(self) -> bool:
        message, fds, _, _ = socket.recv_fds(self.control, 1 << 20, 5)
        if not message:
            return False
        try:
            if len(fds) != 5:
                raise ValueError(f"a request comes with 5 descriptors, not {len(fds)}")
            self.fork(json.loads(message), *fds)
        except Exception as error:  # a request this server cannot serve is answered, not fatal
            if len(fds) == 5:
                _write_line(fds[4], f"failed {type(error).__name__}: {error}")
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
        return True

    def fork(
        self, request: dict[str, Any], stdin: int, stdout: int, stderr: int, report: int, status: int
    ) -> None:
        confinement = request["confinement"]
        restriction = None if confinement is None else landlock.prepare(_confinement(confinement))
        setup = child_setup(Limits.model_validate(request["limits"]), restriction)
        program = Program.parse(request["argv"])
        ready_read, ready_write = os.pipe()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError:
            os.close(ready_read)
            os.close(ready_write)
            raise
        if pid == 0:
            _child(request, (stdin, stdout, stderr, report, ready_write), setup, program)
        os.close(ready_write)
        for fd in (stdin, stdout, stderr, report):
            os.close(fd)
        with os.fdopen(ready_read, "rb") as ready:
            failure = ready.read().decode(errors="replace")
        if failure:
            os.waitpid(pid, 0)
            _write_line(status, f"failed {failure}")
            os.close(status)
            return
        self.status[pid] = status
        _write_line(status, f"started {pid}")

    def notice_exits(self) -> None:
        """Tell the caller of each child that exited; keep it as a zombie until released."""
        for pid, status in list(self.status.items()):
            if pid in self.exited:
                continue
            result = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            if result is None:
                continue
            self.exited.add(pid)
            code = result.si_status if result.si_code == os.CLD_EXITED else -result.si_status
            if not _write_line(status, f"exit {code}"):
                self.reap(status)
            else:
                self.poller.register(status, 0)  # POLLERR: the caller closed its end

    def reap(self, status: int) -> None:
        pid = next((pid for pid, fd in self.status.items() if fd == status), None)
        if pid is None:
            return
        with contextlib.suppress(KeyError):
            self.poller.unregister(status)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # what it left behind in its group
        os.waitpid(pid, 0)
        os.close(status)
        del self.status[pid]
        self.exited.discard(pid)

    def end(self) -> None:
        """The caller is gone: no child of its outlives it, stopped or not."""
        for pid in self.status:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        for pid in self.status:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def _write_line(fd: int, line: str) -> bool:
    try:
        os.write(fd, line.encode() + b"\n")
    except OSError:
        return False
    return True


def _child(
    request: dict[str, Any],
    fds: tuple[int, int, int, int, int],
    setup: Callable[[], None],
    program: Program,
) -> None:
    """Become the sandboxed child, run its program, exit; never returns to the serving loop."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.setsid()
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 16) for fd in fds]  # out of 0-4's way first
        for target, fd in enumerate(high):
            os.dup2(fd, target)
        os.closerange(_READY_FD + 1, os.sysconf("SC_OPEN_MAX"))
        os.chdir(request["directory"])
        os.environ.clear()
        os.environ.update(request["environment"] | {REPORT_FD_VARIABLE: str(_REPORT_FD)})
        tempfile.tempdir = None
        setup()
    except BaseException:
        with contextlib.suppress(OSError):
            os.write(_READY_FD, traceback.format_exc(limit=3).encode()[-2000:])
        os._exit(1)
    os.close(_READY_FD)
    try:
        program.run()
        code = 0
    except SystemExit as leaving:
        code = _exit_code(leaving.code)
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _exit_code(code: object) -> int:
    """The status Python exits with after ``SystemExit(code)``."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def main(arguments: Sequence[str]) -> None:
    control = socket.socket(fileno=int(arguments[0]))
    if len(arguments) > 1:
        __import__(arguments[1])
    _Server(control).serve()


if __name__ == "__main__":
    main(sys.argv[1:])
