"""Run an untrusted command in a child process that cannot take the caller down with it, nor
reach past what it needs.

The child gets resource limits (address space, CPU time, file size, no core dumps), a wall-clock
deadline after which its whole process group is killed, a scrubbed environment (a minimal PATH,
HOME and TMPDIR inside its own directory, no ``REA_*`` or credential variables) and that
directory as its working directory. A hang, a crash or a runaway allocation ends the child and
is reported as data (:class:`Exit`), never as an exception in the caller. A child whose caller
dies (a service killed mid-evaluation) is killed too, where Linux's ``PR_SET_PDEATHSIG`` is
there: a child stopped between timed rounds would otherwise wait forever, holding its memory.

Where the kernel has Landlock (:mod:`rea_kernel.landlock`), the child is also confined before
its program starts, with everything it starts in turn, and native code as much as Python, since
the kernel enforces it (:func:`confinement`): it reads and runs only the system's programs and
libraries, the Python installation and the code its caller hands it on its ``PYTHONPATH``;
reads ``/sys`` and, of ``/proc``, the machine's state and its own process; writes only in its
own directory, shared memory and the harmless devices; opens no TCP connection and listens on no
TCP port; and signals no process, and reaches no abstract Unix socket, outside its confinement.
The user's home, REA's settings and secrets, the repository, databases' files, the rest of
``/tmp`` and other processes' ``/proc`` entries (the evaluator's environment) are out of reach.
On an older kernel the child is confined as far as its Landlock ABI allows, a warning says
what is left open, and :attr:`Exit.landlock_abi` says at which ABI it ran (0: not confined);
``Limits.confine`` turns confinement off for a machine where it gets in the way.

A child is started afresh (:func:`start_exec`: fork and execute its program) or forked from a
process that has already imported its program's modules (:func:`rea_kernel.forkserver.start_forked`),
whichever :data:`Launcher` its caller passes: limits, confinement, environment, folder,
descriptors and process group are the same either way, and one contract suite tests both.

Not contained even so: the child runs as the caller's user (as root, with root's capabilities,
raw sockets among them, and every file it may read, ``/etc/shadow`` included); UDP and every
protocol but TCP; Unix sockets with a path (a database listening on one is reachable by a child
that knows where); what is in ``/dev/shm``; CPU and GPU side channels (caches, timing); and the
kernel's own bugs. A process the child starts cannot read its own ``/proc/self`` (Landlock names
the child's process, not its descendants'); programs do without it. Candidates from untrusted
authors that must not reach even these belong in a container or a VM on top of this.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import resource
import select
import signal
import site
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from rea_kernel import landlock
from rea_kernel.landlock import Confinement

PATH = "/usr/local/bin:/usr/bin:/bin"
PROGRAM_PATH = f"{PATH}:/usr/sbin:/sbin"
"""Where a program named by its bare name is found, to judge whether a child may start it."""
PASSED_THROUGH = ("LD_LIBRARY_PATH", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
"""Variables a child inherits: how to load libraries and how many threads the machine's owner
allows. Nothing else of the caller's environment crosses."""

SYSTEM_FOLDERS = ("/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc", "/opt")
"""Programs, libraries and their configuration: a confined child reads and runs what is here."""
PROC_ENTRIES = (
    *("self", "thread-self", "cpuinfo", "meminfo", "stat", "vmstat", "loadavg", "uptime", "version"),
    *("filesystems", "mounts", "cgroups", "pressure", "devices", "modules", "driver", "sys"),
)
"""What a confined child reads of ``/proc``: the machine's state and its own process (``self``,
resolved by the child as itself), never another process's, whose ``environ`` would give away
the caller's settings (Landlock's ptrace scoping leaves ``/proc/PID/environ`` readable)."""
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
SHARED_MEMORY = "/dev/shm"

REPORT_FD_VARIABLE = "KERNEL_REPORT_FD"
TAIL_CHARS = 4000
_OUT_OF_MEMORY_MARKS = ("bad_alloc", "Cannot allocate memory", "can't allocate memory", "MemoryError")

log = logging.getLogger(__name__)
"""Standard logging, not structlog: this module runs where KernelEvolve is measured, which may hold
only torch and pydantic (a GPU machine); a service shows these records on its stderr."""


class Verdict(StrEnum):
    """How an evaluation ended: passed, or the way the candidate failed."""

    PASSED = "passed"
    REJECTED = "rejected"
    CRASHED = "crashed"
    TIMED_OUT = "timed_out"
    OUT_OF_MEMORY = "out_of_memory"


class Limits(BaseModel):
    """What one child process may use. ``cpu_seconds`` counts every thread, so it defaults to
    the wall-clock limit times the cores: a busy multi-threaded kernel is stopped by the wall
    clock, a spinning one by either."""

    model_config = ConfigDict(frozen=True)

    wall_seconds: float = Field(default=300.0, gt=0)
    cpu_seconds: float | None = Field(default=None, gt=0)
    memory_bytes: int = Field(default=8 << 30, gt=0)
    memory_counts: Literal["address_space", "data"] = Field(
        default="address_space",
        description="What memory_bytes bounds: every mapping (RLIMIT_AS), or the heap and private "
        "writable mappings (RLIMIT_DATA), what a runaway host allocation grows. A GPU runtime "
        "reserves far more virtual addresses than it touches, so a GPU child takes 'data'.",
    )
    file_bytes: int = Field(default=256 << 20, gt=0)
    confine: bool = Field(
        default=True,
        description="Confine the child with Landlock where the kernel has it (see confinement()): no "
        "file outside what it needs, no TCP, no signal to a process outside. Off only for a machine "
        "where it gets in the way.",
    )

    def cpu_limit(self) -> int:
        return int(self.cpu_seconds or self.wall_seconds * (os.cpu_count() or 1)) + 1


@dataclass(frozen=True)
class Exit:
    """How a sandboxed process ended, with the ends of what it printed."""

    returncode: int
    killed_at_deadline: bool
    wall_seconds: float
    stdout: str
    stderr: str
    landlock_abi: int = 0
    """The Landlock ABI the child was confined at; 0: not confined (turned off, or no Landlock)."""

    def failure(self, limits: Limits) -> tuple[Verdict, str] | None:
        """The verdict and reason when the process died of a limit or a signal; None when it
        exited by itself (what a non-zero exit status means is the caller's to say)."""
        if self.killed_at_deadline:
            return (
                Verdict.TIMED_OUT,
                f"still running at the {limits.wall_seconds:g} s wall-clock limit; killed",
            )
        if self.returncode >= 0:
            return None
        number = -self.returncode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        if number == signal.SIGXCPU:
            return Verdict.TIMED_OUT, f"used up its {limits.cpu_limit()} s of CPU time; killed"
        if number == signal.SIGKILL:
            return (
                Verdict.OUT_OF_MEMORY,
                "killed by SIGKILL from outside the evaluator (the out-of-memory killer)",
            )
        if number == signal.SIGXFSZ:
            return Verdict.CRASHED, f"wrote a file over the {limits.file_bytes} byte limit; killed"
        if any(mark in self.stderr for mark in _OUT_OF_MEMORY_MARKS):
            return (
                Verdict.OUT_OF_MEMORY,
                f"died with {name} after an allocation failed ({limits.memory_bytes} bytes allowed)",
            )
        last = last_line(self.stderr)
        return Verdict.CRASHED, f"crashed with {name}" + (f": {last}" if last else "")


def last_line(text: str) -> str:
    """The last line of ``text`` that says anything (a traceback's exception, a compiler's
    error), shortened for a reason a person reads."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def scrubbed_environment(home: Path, extra: Mapping[str, str] = {}) -> dict[str, str]:
    """The whole environment of a child: nothing of the caller's but :data:`PASSED_THROUGH`."""
    (home / "home").mkdir(exist_ok=True)
    (home / "tmp").mkdir(exist_ok=True)
    environment = {"PATH": PATH, "HOME": str(home / "home"), "TMPDIR": str(home / "tmp"), "LANG": "C.UTF-8"}
    environment |= {name: os.environ[name] for name in PASSED_THROUGH if name in os.environ}
    return environment | dict(extra)


def confinement(directory: Path, environment: Mapping[str, str] = {}) -> Confinement:
    """What every confined child may touch: read and run the system's programs and libraries
    and the Python installation (not the user's site, nor the folders of editable installs:
    a child reads the code its caller hands it on its ``PYTHONPATH``), read ``/sys`` and
    :data:`PROC_ENTRIES`, use the harmless devices, and do anything in its own directory (its
    HOME and TMPDIR are there) and in shared memory."""
    python = {sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages()}
    python_path = [
        directory / entry for entry in environment.get("PYTHONPATH", "").split(os.pathsep) if entry
    ]
    return Confinement(
        read=(Path("/sys"), *(Path("/proc", entry) for entry in PROC_ENTRIES), *python_path),
        execute=(*map(Path, SYSTEM_FOLDERS), *map(Path, sorted(python))),
        read_write=(directory, Path(SHARED_MEMORY)),
        devices=tuple(map(Path, DEVICES)),
    )


@functools.cache
def _confinement_abi() -> int:
    """The running kernel's Landlock ABI, with a warning (once a process) where it confines
    less than the sandbox asks for."""
    abi = landlock.landlock_abi()
    if abi < landlock.NEWEST_ABI_USED:
        log.warning(
            "kernel_sandbox_partly_confined: Landlock ABI %d, %d wanted; not confined: %s",
            abi,
            landlock.NEWEST_ABI_USED,
            _unconfined_at(abi),
        )
    return abi


def _unconfined_at(abi: int) -> str:
    """What a child confined at ``abi`` can still do that a newer ABI would stop."""
    if abi == 0:
        return "everything: this kernel has no Landlock"
    missing = [
        (3, "truncating any file"),
        (4, "TCP"),
        (5, "ioctl on the devices it may open"),
        (6, "signals to and abstract Unix sockets of processes outside"),
    ]
    return ", ".join(what for version, what in missing if version > abi)


def _bounded(kind: int, soft: int, hard: int | None = None) -> tuple[int, int]:
    """Soft and hard limits (hard defaults to soft), never above the hard limit we run under."""
    ceiling = resource.getrlimit(kind)[1]

    def capped(value: int) -> int:
        return value if ceiling == resource.RLIM_INFINITY else min(value, ceiling)

    return capped(soft), capped(soft if hard is None else hard)


_PR_SET_PDEATHSIG = 1
_PRCTL = getattr(ctypes.CDLL(None), "prctl", None)  # Linux's C library has it


def child_setup(limits: Limits, restriction: landlock.Restriction | None) -> Callable[[], None]:
    """The limits and the confinement as the few system calls a child makes before its program
    runs (computed here, in its parent, so the child runs no Python beyond the calls). The
    child dies with the process that called this, or exits at once if that is already gone."""
    memory_kind = resource.RLIMIT_AS if limits.memory_counts == "address_space" else resource.RLIMIT_DATA
    memory = _bounded(memory_kind, limits.memory_bytes)
    cpu_time = _bounded(
        resource.RLIMIT_CPU, limits.cpu_limit(), limits.cpu_limit() + 5
    )  # SIGXCPU, then SIGKILL
    file_size = _bounded(resource.RLIMIT_FSIZE, limits.file_bytes)
    caller = os.getpid()
    prctl = _PRCTL

    def apply() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # dies with the caller's thread
            if os.getppid() != caller:  # the caller died before that call
                os._exit(1)
        resource.setrlimit(memory_kind, memory)
        resource.setrlimit(resource.RLIMIT_CPU, cpu_time)
        resource.setrlimit(resource.RLIMIT_FSIZE, file_size)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if restriction is not None:
            restriction.apply()

    return apply


@dataclass(frozen=True)
class Spawn:
    """What a :data:`Launcher` needs to start one sandboxed child: its program, folder and whole
    environment, its limits and confinement (None: not confined), and the descriptors it gets
    as its stdout and stderr and as its report pipe, whose number the launcher puts in
    ``$REPORT_FD_VARIABLE``. The descriptors stay the caller's: a launcher does not close them."""

    argv: tuple[str, ...]
    directory: Path
    environment: Mapping[str, str]
    limits: Limits
    confinement: Confinement | None
    stdout: int
    stderr: int
    report: int


class Child(Protocol):
    """A started child as :class:`SandboxedProcess` drives it. The child leads its own process
    group (``pid``), which its caller signals; ``wait`` gives its exit status as
    :class:`subprocess.Popen` does (a negative signal number when a signal ended it) and raises
    :class:`subprocess.TimeoutExpired` after ``timeout``; ``signal_group`` signals its process
    group for as long as its id is its own; the caller calls ``release`` last, after which
    ``pid`` may name another process."""

    pid: int
    stdin: IO[bytes] | None

    def wait(self, timeout: float | None = None) -> int: ...

    def signal_group(self, number: signal.Signals) -> None: ...

    def release(self) -> None: ...


Launcher = Callable[[Spawn], Child]
"""How a sandboxed child comes to be: :func:`start_exec` here, which starts its program afresh,
or :func:`rea_kernel.forkserver.start_forked`, which forks it from a process that has already
imported the program's modules. Both give the child the same limits, confinement, environment,
folder, descriptors and process group; they differ in what the child's memory starts with."""


class ExecChild(subprocess.Popen[bytes]):
    """A child started afresh; :meth:`wait` reaps it, so :meth:`release` has nothing left to do."""

    def signal_group(self, number: signal.Signals) -> None:
        signal_group(self.pid, number)  # its id is its own until this process reaps it

    def release(self) -> None:
        pass


def start_exec(spawn: Spawn) -> ExecChild:
    """Fork and execute ``spawn.argv``, with the limits and confinement applied in between."""
    restriction = None if spawn.confinement is None else landlock.prepare(spawn.confinement)
    return ExecChild(
        list(spawn.argv),
        cwd=spawn.directory,
        env={**spawn.environment, REPORT_FD_VARIABLE: str(spawn.report)},
        stdin=subprocess.PIPE,
        stdout=spawn.stdout,
        stderr=spawn.stderr,
        pass_fds=(spawn.report,),
        start_new_session=True,
        preexec_fn=child_setup(spawn.limits, restriction),
    )


class LineReader:
    """Lines from a descriptor, each awaited until a deadline at most (``poll``, not ``select``:
    a long-lived caller may hold descriptors past 1024). Gives up on a line over a megabyte."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.ended = False
        """Whether the stream ended (or sent a line too long), rather than a deadline coming."""
        self._poller = select.poll()
        self._poller.register(fd, select.POLLIN)
        self._pending = b""

    def line(self, deadline: float | None) -> str | None:
        """The next line; None at the end of the stream, or when ``deadline`` (monotonic) came
        (what is already there is read even then)."""
        while b"\n" not in self._pending:
            if self.ended:
                return None
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._poller.poll(None if remaining is None else remaining * 1000):
                return None
            chunk = os.read(self.fd, 1 << 16)
            if not chunk or len(self._pending) > 1 << 20:
                self.ended = True
                return None
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return line.decode(errors="replace")


class SandboxedProcess:
    """A sandboxed child the caller can talk to while it runs.

    The child reads instructions, a line each, from its stdin, and reports, a line each, on a
    pipe of its own whose descriptor it finds in ``$REPORT_FD_VARIABLE``. Its stdout and stderr
    go to files beside ``directory`` (not pipes a grandchild could hold open). It leads a new
    process group, which is killed at the deadline, when the caller abandons it, and after it
    exits, so grandchildren it left behind go too. Unless ``limits.confine`` is off, it is
    confined by Landlock to :func:`confinement` plus ``access`` (a target's toolchain and
    devices); ``landlock_abi`` says at which ABI (0: not at all). ``launcher`` starts it
    (:data:`Launcher`: afresh by default). Use it as a context manager: leaving the block
    normally waits for the child to exit; leaving on an exception kills it.
    """

    def __init__(
        self,
        argv: Sequence[str],
        directory: Path,
        limits: Limits,
        environment: Mapping[str, str] = {},
        access: Confinement | None = None,
        launcher: Launcher = start_exec,
    ) -> None:
        self.limits = limits
        allowed = None
        if limits.confine:
            allowed = confinement(directory, environment) | (access or Confinement())
        self.landlock_abi = 0 if allowed is None else _confinement_abi()
        self.started = time.monotonic()
        self.deadline = self.started + limits.wall_seconds
        self._stdout_path = directory.parent / f"{directory.name}.stdout"
        self._stderr_path = directory.parent / f"{directory.name}.stderr"
        report_read, report_write = os.pipe()
        with (
            self._stdout_path.open("wb") as stdout,
            self._stderr_path.open("wb") as stderr,
            _closed_on_error(report_read),
            _closed_on_error(report_write, always=True),
        ):
            spawn = Spawn(
                argv=tuple(argv),
                directory=directory,
                environment=scrubbed_environment(directory, environment),
                limits=limits,
                confinement=allowed,
                stdout=stdout.fileno(),
                stderr=stderr.fileno(),
                report=report_write,
            )
            self.process = launcher(spawn)
        self._reports = LineReader(report_read)
        self._exit: Exit | None = None
        self._paused_at: float | None = None

    def __enter__(self) -> SandboxedProcess:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            self.finish()
        else:
            self.abandon()

    def receive(self) -> str | None:
        """The child's next report; None if it closed its pipe (it exited) or the deadline came."""
        if self._exit is not None:
            return None
        return self._reports.line(self.deadline)

    def send(self, line: str) -> None:
        """One instruction; lost silently if the child is gone (its exit tells the caller why)."""
        stdin = self.process.stdin
        with contextlib.suppress(OSError):
            if stdin is not None:
                stdin.write(line.encode() + b"\n")
                stdin.flush()

    def pause(self) -> None:
        """Stop the child's whole group (SIGSTOP, which it cannot catch), so that it uses no CPU
        while another process is timed; its wall-clock deadline waits while it is stopped."""
        if self._exit is None and self._paused_at is None:
            self.process.signal_group(signal.SIGSTOP)
            self._paused_at = time.monotonic()

    def resume(self) -> None:
        """Let a paused child go on, with its deadline moved by the time it was stopped."""
        if self._paused_at is not None:
            self.deadline += time.monotonic() - self._paused_at
            self._paused_at = None
            self.process.signal_group(signal.SIGCONT)

    @property
    def paused(self) -> bool:
        return self._paused_at is not None

    def count_from_now(self) -> None:
        """Start the wall-clock limit again, for a trusted child started ahead of its first job
        (the evaluator's baselines): the limit is on its work, not on its wait for it."""
        self.deadline = time.monotonic() + self.limits.wall_seconds

    def finish(self) -> Exit:
        """Close the child's stdin and wait for it to exit, at most until the deadline."""
        self.resume()
        if self._exit is None:
            killed = False
            self._close_stdin()
            try:
                self.process.wait(timeout=max(0.0, self.deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                killed = True
            self._exit = self._collect(killed)
        return self._exit

    def abandon(self) -> None:
        """Kill the child now: the caller has seen enough."""
        if self._exit is None:
            self._close_stdin()
            self._exit = self._collect(killed=False)

    def _close_stdin(self) -> None:
        with contextlib.suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()

    def _collect(self, killed: bool) -> Exit:
        self.process.signal_group(signal.SIGKILL)
        returncode = self.process.wait()
        self.process.release()
        os.close(self._reports.fd)
        return Exit(
            returncode=returncode,
            killed_at_deadline=killed,
            wall_seconds=time.monotonic() - self.started,
            stdout=_tail(self._stdout_path),
            stderr=_tail(self._stderr_path),
            landlock_abi=self.landlock_abi,
        )


def run_sandboxed(
    argv: Sequence[str],
    directory: Path,
    limits: Limits,
    environment: Mapping[str, str] = {},
    access: Confinement | None = None,
    launcher: Launcher = start_exec,
) -> Exit:
    """Run ``argv`` in ``directory`` under ``limits`` and wait for it, at most until the deadline."""
    with SandboxedProcess(argv, directory, limits, environment, access, launcher) as process:
        return process.finish()


@contextlib.contextmanager
def _closed_on_error(fd: int, always: bool = False) -> Iterator[None]:
    """Close ``fd`` if the block fails (or, with ``always``, when it ends)."""
    try:
        yield
    except BaseException:
        os.close(fd)
        raise
    if always:
        os.close(fd)


def signal_group(group: int, number: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, number)


def _tail(path: Path) -> str:
    with path.open("rb") as file:
        file.seek(max(0, path.stat().st_size - TAIL_CHARS))
        return file.read().decode(errors="replace")
