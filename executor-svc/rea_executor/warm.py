"""Warm starts: jobs forked from a process that has already imported the framework.

A cold job (``python -m package``) spends most of a short run importing: about 5 of the
reference ranker's 7 CPU-s on a small data set go to torch and scikit-learn. That is budget
spent on nothing, and it makes every job a coarse unit of sharing. A workload that names the
modules worth importing once (``preload()``, see :mod:`rea.workloads`) has its jobs forked
from a *zygote* instead: a single-threaded process that imported them and then does nothing
but fork. Each job is still a process of its own, in its own session, under its own limits,
writing its own log, its CPU measured by the operating system (the zygote reaps it with
``wait4``); and each starts from the zygote's untouched state, never from another job's, so
jobs stay as independent as cold ones and a crash takes only itself.

Protocol, one JSON object per line: the zygote prints ``{"ready": true}`` once its imports are
done; for each :class:`Launch` on its stdin it forks, prints ``{"pid": N}``, and when the job
ends ``{"code": C, "cpu_seconds": S}`` (``C`` as :func:`os.waitstatus_to_exitcode` gives it).
One job at a time. The zygote exits at the end of its stdin: when its worker exits or dies,
the pipe closes, and a job it was running is killed first, so a worker killed with SIGKILL
leaves no training behind. A job dies with its zygote too (``PR_SET_PDEATHSIG``).

The zygote's own start-up (one import per worker and workload) is charged to no campaign, as
the worker's own start-up is not.

Forking is safe here because the zygote runs no code of its own in threads: a workload's
preloaded modules must either start no threads when imported (torch, numpy and scikit-learn
start none) or be fork-safe (pyarrow starts a thread pool and jemalloc's background thread,
both re-created in a forked child by their at-fork handlers). A job's metrics are the same
warm or cold (tested on both example workloads).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import os
import runpy
import select
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from pydantic import BaseModel

from rea_executor.confine import JobLimits

log = structlog.get_logger()

POLL_S = 0.05
STARTUP_TIMEOUT_S = 120.0
MAX_IDLE = 4
"""Zygotes a runner keeps between jobs; each holds its framework in memory (~0.4 GB for torch)."""


class Launch(BaseModel):
    """One job for a zygote: ``python -m module *args`` as a fork, under these limits."""

    module: str
    args: list[str]
    env: dict[str, str]
    log_path: str
    memory_bytes: int
    cpu_limit_s: int
    file_bytes: int


@dataclass(frozen=True)
class Ended:
    code: int
    cpu_seconds: float
    orphaned: bool = False  # its zygote died first: nobody reaped it


def reaped(pid: int, wait: bool = False) -> Ended | None:
    """The child's end, with the CPU the OS measured for it and the children it waited for;
    None while it runs (without ``wait``)."""
    done, status, usage = os.wait4(pid, 0 if wait else os.WNOHANG)
    if not done:
        return None
    return Ended(os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime)


def die_with_parent() -> None:
    """In a child: SIGKILL me when the thread that started me dies (``PR_SET_PDEATHSIG``)."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


class ZygoteError(RuntimeError):
    """The zygote could not start, or went away: the caller runs the job cold instead."""


# --- the zygote's side -----------------------------------------------------------------------


def serve(modules: list[str]) -> None:
    """Import ``modules``, then fork one job per request until stdin ends."""
    import rea.jobmain  # noqa: F401  (pins one thread per job before torch is imported)

    # A terminal's Ctrl-C or a stop signal to the worker's process group is the worker's to
    # handle (it stops and reports its job); the zygote ends when the worker's pipe closes.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)

    for module in modules:
        importlib.import_module(module)
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever an import or a job prints must not reach the protocol pipe
    _reply(replies, {"ready": True})
    while line := sys.stdin.buffer.readline():
        launch = Launch.model_validate_json(line)
        pid = os.fork()
        if pid == 0:
            replies.close()
            _become_job(launch)
        _reply(replies, {"pid": pid})
        ended = _reap(pid)
        if ended is None:  # stdin ended while the job ran: the worker is gone
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return
        _reply(replies, {"code": ended.code, "cpu_seconds": ended.cpu_seconds})


def _reply(replies: object, message: dict[str, object]) -> None:
    print(json.dumps(message), file=replies, flush=True)  # type: ignore[call-overload]


def _reap(pid: int) -> Ended | None:
    """Wait for the job, watching stdin: the worker sends nothing while a job runs, so a
    readable stdin means it closed. None then."""
    while True:
        if (ended := reaped(pid)) is not None:
            return ended
        readable, _, _ = select.select([sys.stdin.buffer], [], [], POLL_S)
        if readable and not os.read(sys.stdin.buffer.fileno(), 1):
            return None


def _become_job(launch: Launch) -> None:
    """In the forked child: detach, limit, redirect, run the module as ``__main__``, exit."""
    code = 1
    try:
        os.setsid()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        die_with_parent()
        JobLimits(launch.memory_bytes, launch.cpu_limit_s, launch.file_bytes).apply()
        output = os.open(launch.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(output, 1)
        os.dup2(output, 2)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.environ.update(launch.env)
        sys.argv = [launch.module, *launch.args]
        runpy.run_module(launch.module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


# --- the worker's side -----------------------------------------------------------------------


class Zygote:
    """A started zygote, for one job at a time. ``environment`` is all it, and so every job
    forked from it, sees of its starter's (:func:`~rea_executor.confine.job_environment`)."""

    def __init__(self, modules: tuple[str, ...], environment: Mapping[str, str]) -> None:
        self.modules = modules
        self.environment = dict(environment)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rea_executor.warm", *modules],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=self.environment,
            bufsize=0,  # unbuffered: select() must see every reply the pipe holds
        )
        if self._read(STARTUP_TIMEOUT_S) != {"ready": True}:
            self.close()
            raise ZygoteError(f"a zygote importing {', '.join(modules)} did not start")

    def launch(self, launch: Launch) -> int:
        """Fork the job; its pid."""
        assert self.proc.stdin is not None
        message = memoryview(launch.model_dump_json().encode() + b"\n")
        try:
            while message:
                message = message[self.proc.stdin.write(message) or 0 :]
        except OSError as exc:
            raise ZygoteError(f"the zygote is gone: {exc}") from exc
        reply = self._read(STARTUP_TIMEOUT_S)
        if not isinstance(reply.get("pid"), int):
            raise ZygoteError(f"the zygote did not fork the job: {reply}")
        return int(reply["pid"])

    def ended(self, wait_s: float = 0.0) -> Ended | None:
        """The job's end once the zygote reaped it; None while it runs. A zygote gone mid-job
        took its job with it (``PR_SET_PDEATHSIG``): that reads as killed, with no CPU known."""
        reply = self._read(wait_s)
        if not reply:
            return None
        if "code" not in reply:
            return Ended(-signal.SIGKILL, 0.0, orphaned=True)
        return Ended(int(reply["code"]), float(reply["cpu_seconds"]))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def _read(self, wait_s: float) -> dict[str, Any]:
        """The next reply, waiting up to ``wait_s``; {} when none came; ``{"gone": True}`` at
        the end of the zygote's output."""
        assert self.proc.stdout is not None
        readable, _, _ = select.select([self.proc.stdout], [], [], wait_s)
        if not readable:
            return {}
        line = self.proc.stdout.readline()
        if not line:
            return {"gone": True}
        reply = json.loads(line)
        return reply if isinstance(reply, dict) else {"gone": True}


@dataclass
class WarmStarts:
    """The zygotes of one worker (or one benchmark run), shared by its runner threads: each job
    takes an idle zygote for the workload's modules, or starts one. Close it when done."""

    idle: list[Zygote] = field(default_factory=list)
    failed: set[tuple[str, ...]] = field(default_factory=set)
    """Modules whose zygote would not start: their jobs start cold from then on."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False

    @contextlib.contextmanager
    def zygote(self, modules: tuple[str, ...], environment: Mapping[str, str]) -> Iterator[Zygote]:
        """A zygote for ``modules`` started with ``environment``, exclusively, for one job;
        raises :class:`ZygoteError` when none can start."""
        with self.lock:
            if self.closed or modules in self.failed:
                raise ZygoteError("warm starts are closed" if self.closed else "its zygote failed before")
            found = next(
                (z for z in self.idle if z.modules == modules and z.environment == environment and z.alive()),
                None,
            )
            if found is not None:
                self.idle.remove(found)
        if found is None:
            try:
                found = Zygote(modules, environment)
            except ZygoteError:
                with self.lock:
                    self.failed.add(modules)
                raise
            log.info("zygote_started", modules=list(modules), pid=found.proc.pid)
        zygote = found
        healthy = False
        try:
            yield zygote
            healthy = zygote.alive()
        finally:
            self._put_back(zygote, healthy)

    def _put_back(self, zygote: Zygote, healthy: bool) -> None:
        retired = [zygote]
        with self.lock:
            if healthy and not self.closed:
                self.idle.append(zygote)
                retired = self.idle[:-MAX_IDLE] if len(self.idle) > MAX_IDLE else []
                self.idle = self.idle[len(retired) :]
        for old in retired:
            old.close()

    def close(self) -> None:
        with self.lock:
            self.closed = True
            idle, self.idle = self.idle, []
        for zygote in idle:
            zygote.close()


if __name__ == "__main__":
    serve(sys.argv[1:])
