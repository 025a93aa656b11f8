"""Landlock confinement of sandboxed children: a candidate's Python and, above all, its native
code cannot read the user's files, write outside its directory, open TCP connections or signal
processes outside, and can still do its work: write in its directory, import torch, build and
run an OpenMP kernel with the compiler."""

from __future__ import annotations

import errno
import functools
import logging
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from rea_kernel import landlock, sandbox
from rea_kernel.forkserver import start_forked
from rea_kernel.landlock import (
    AccessFs,
    AccessNet,
    Confinement,
    Scope,
    handled_fs,
    handled_net,
    handled_scopes,
    landlock_abi,
    prepare,
)
from rea_kernel.sandbox import Exit, Launcher, Limits, confinement, run_sandboxed, start_exec
from rea_kernel.targets.cpu import FLAGS

ABI = landlock_abi()
pytestmark = pytest.mark.skipif(
    ABI == 0, reason="this kernel has no Landlock (too old, disabled at boot, or hidden by seccomp)"
)
needs_tcp_rules = pytest.mark.skipif(ABI < 4, reason=f"Landlock ABI {ABI} cannot deny TCP (ABI 4 can)")
needs_scopes = pytest.mark.skipif(ABI < 6, reason=f"Landlock ABI {ABI} cannot scope signals (ABI 6 can)")
needs_compiler = pytest.mark.skipif(shutil.which("g++") is None, reason="no g++ on PATH")

LIMITS = Limits(wall_seconds=120, memory_bytes=4 << 30)
SECRET = "the user's secret"

PYTHON_PROBE = """
import os, signal, socket, sys

secret, outside, port, bystander = sys.argv[1:]


def attempt(name, action):
    try:
        action()
        print(name, 0)
    except OSError as error:
        print(name, error.errno)


attempt("read", lambda: print(open(secret).read(), file=sys.stderr))
attempt("write", lambda: open(outside, "w").close())
attempt("write_inside", lambda: open("inside.txt", "w").close())
attempt("connect", lambda: socket.create_connection(("127.0.0.1", int(port)), timeout=5).close())
attempt("kill", lambda: os.kill(int(bystander), signal.SIGTERM))
attempt("parent_environ", lambda: open(f"/proc/{os.getppid()}/environ", "rb").read())
attempt("own_status", lambda: open("/proc/self/status").read())
"""

NATIVE_PROBE = r"""
#include <arpa/inet.h>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

static void report(const char* name, int result) { std::printf("%s %d\n", name, result < 0 ? errno : 0); }

int main(int, char** argv) {
  char buffer[64];
  int fd = open(argv[1], O_RDONLY);
  report("read", fd < 0 ? fd : static_cast<int>(read(fd, buffer, sizeof buffer)));
  report("write", open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0600));
  report("write_inside", open("inside.txt", O_WRONLY | O_CREAT | O_TRUNC, 0600));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(std::atoi(argv[3]));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int tcp = socket(AF_INET, SOCK_STREAM, 0);
  report("connect", connect(tcp, reinterpret_cast<sockaddr*>(&address), sizeof address));
  report("kill", kill(std::atoi(argv[4]), SIGTERM));
  char parent[64];
  std::snprintf(parent, sizeof parent, "/proc/%d/environ", static_cast<int>(getppid()));
  report("parent_environ", open(parent, O_RDONLY));
  report("own_status", open("/proc/self/status", O_RDONLY));
}
"""

OPENMP_KERNEL = r"""
#include <cmath>
extern "C" void add_roots(float* out, const float* in, long n) {
  #pragma omp parallel for
  for (long i = 0; i < n; ++i) out[i] += std::sqrt(in[i]);
}
"""


@dataclass(frozen=True)
class Layout:
    """A candidate's directory and, beside it (not inside), a folder it must not touch."""

    candidate: Path
    secret: Path
    outside: Path


def layout(root: Path) -> Layout:
    candidate, elsewhere = root / "candidate", root / "elsewhere"
    candidate.mkdir()
    elsewhere.mkdir()
    secret = elsewhere / "secret.txt"
    secret.write_text(SECRET)
    return Layout(candidate, secret, elsewhere / "written.txt")


def outcomes(finished: Exit) -> dict[str, int]:
    """What each attempt of a probe ended with: 0 if it was allowed, else its errno."""
    assert finished.returncode == 0, finished.stderr
    return {name: int(number) for name, number in (line.split() for line in finished.stdout.splitlines())}


@dataclass(frozen=True)
class Probed:
    layout: Layout
    python: dict[str, int]
    forked: dict[str, int]
    native: dict[str, int]
    bystander_survived: bool
    landlock_abi: int


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory) -> Probed:
    """Both probes, run confined once while the test listens on a TCP port and a bystander
    process (not the child's) sleeps."""
    if shutil.which("g++") is None:
        pytest.skip("no g++ on PATH")
    where = layout(tmp_path_factory.mktemp("landlock"))
    (where.candidate / "probe.cpp").write_text(NATIVE_PROBE)
    with (
        socket.create_server(("127.0.0.1", 0)) as listener,
        subprocess.Popen(["sleep", "60"]) as bystander,
    ):
        arguments = [
            str(where.secret),
            str(where.outside),
            str(listener.getsockname()[1]),
            str(bystander.pid),
        ]
        probe = [sys.executable, "-I", "-c", PYTHON_PROBE, *arguments]
        python = run_sandboxed(probe, where.candidate, LIMITS)
        forked = run_sandboxed(probe, where.candidate, LIMITS, launcher=start_forked)
        built = run_sandboxed(["g++", "-O2", "-o", "probe", "probe.cpp"], where.candidate, LIMITS)
        assert built.returncode == 0, built.stderr
        native = run_sandboxed(["./probe", *arguments], where.candidate, LIMITS)
        survived = bystander.poll() is None
        bystander.kill()
    assert forked.landlock_abi == python.landlock_abi
    return Probed(where, outcomes(python), outcomes(forked), outcomes(native), survived, python.landlock_abi)


@pytest.mark.parametrize("probe", ["python", "forked", "native"])
def test_a_confined_child_cannot_read_outside_the_allowed_folders(probed: Probed, probe: str) -> None:
    assert getattr(probed, probe)["read"] == errno.EACCES
    assert probed.landlock_abi == ABI


@pytest.mark.parametrize("probe", ["python", "forked", "native"])
def test_a_confined_child_cannot_read_another_process_environment(probed: Probed, probe: str) -> None:
    """The evaluator's environment holds REA's settings; the child's own /proc entries stay readable."""
    assert getattr(probed, probe)["parent_environ"] == errno.EACCES
    assert getattr(probed, probe)["own_status"] == 0


@pytest.mark.parametrize("probe", ["python", "forked", "native"])
def test_a_confined_child_writes_in_its_directory_and_nowhere_else(probed: Probed, probe: str) -> None:
    assert getattr(probed, probe)["write"] == errno.EACCES
    assert getattr(probed, probe)["write_inside"] == 0
    assert not probed.layout.outside.exists()
    assert (probed.layout.candidate / "inside.txt").exists()


@needs_tcp_rules
@pytest.mark.parametrize("probe", ["python", "forked", "native"])
def test_a_confined_child_cannot_connect_over_tcp(probed: Probed, probe: str) -> None:
    assert getattr(probed, probe)["connect"] == errno.EACCES


@needs_scopes
@pytest.mark.parametrize("probe", ["python", "forked", "native"])
def test_a_confined_child_cannot_signal_a_process_outside(probed: Probed, probe: str) -> None:
    assert getattr(probed, probe)["kill"] == errno.EPERM
    assert probed.bystander_survived


def test_confinement_can_be_turned_off(tmp_path: Path) -> None:
    where = layout(tmp_path)
    code = "import sys; print(open(sys.argv[1]).read())"
    finished = run_sandboxed(
        [sys.executable, "-I", "-c", code, str(where.secret)],
        where.candidate,
        LIMITS.model_copy(update={"confine": False}),
    )
    assert finished.stdout.strip() == SECRET and finished.landlock_abi == 0


def test_without_landlock_a_child_runs_unconfined_and_a_warning_says_so_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Never an evaluation lost to an old kernel: the child runs, unconfined, and it shows."""
    monkeypatch.setattr(landlock, "landlock_abi", lambda: 0)
    monkeypatch.setattr(sandbox, "_confinement_abi", functools.cache(sandbox._confinement_abi.__wrapped__))
    caplog.set_level(logging.WARNING, logger=sandbox.__name__)
    where = layout(tmp_path)
    code = "import sys; print(open(sys.argv[1]).read())"
    runs = [
        run_sandboxed([sys.executable, "-I", "-c", code, str(where.secret)], where.candidate, LIMITS)
        for _ in range(2)
    ]
    assert [(run.stdout.strip(), run.landlock_abi) for run in runs] == [(SECRET, 0)] * 2
    [record] = [r for r in caplog.records if r.name == sandbox.__name__]
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith("kernel_sandbox_partly_confined: Landlock ABI 0")


@needs_compiler
def test_a_confined_child_builds_and_runs_an_openmp_kernel_with_torch(tmp_path: Path) -> None:
    """What a cpu candidate does: g++ with the target's flags, then torch and the kernel."""
    where = layout(tmp_path)
    (where.candidate / "kernel.cpp").write_text(OPENMP_KERNEL)
    built = run_sandboxed(["g++", *FLAGS, "-o", "kernel.so", "kernel.cpp"], where.candidate, LIMITS)
    assert built.returncode == 0, built.stderr
    code = (
        "import ctypes, torch\n"
        "kernel = ctypes.CDLL('./kernel.so')\n"
        "out, values = torch.zeros(1000), torch.full((1000,), 4.0)\n"
        "kernel.add_roots(ctypes.c_void_p(out.data_ptr()), ctypes.c_void_p(values.data_ptr()), "
        "ctypes.c_long(1000))\n"
        "print(out.sum().item(), torch.get_num_threads())"
    )
    finished = run_sandboxed([sys.executable, "-I", "-c", code], where.candidate, LIMITS)
    assert finished.returncode == 0, finished.stderr
    assert float(finished.stdout.split()[0]) == 2000.0
    assert finished.landlock_abi == ABI


@pytest.mark.parametrize("launcher", [start_exec, start_forked], ids=["exec", "forked"])
def test_a_directory_named_relative_to_the_caller_is_the_childs_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, launcher: Launcher
) -> None:
    layout(tmp_path)
    monkeypatch.chdir(tmp_path)
    finished = run_sandboxed(
        [sys.executable, "-I", "-c", "open('made', 'w').close()"],
        Path("candidate"),
        LIMITS,
        launcher=launcher,
    )
    assert finished.returncode == 0, finished.stderr
    assert (tmp_path / "candidate" / "made").exists()


@pytest.mark.parametrize("launcher", [start_exec, start_forked], ids=["exec", "forked"])
def test_a_python_path_given_to_the_child_is_readable(tmp_path: Path, launcher: Launcher) -> None:
    """The harness imports REA's kernel package from the PYTHONPATH its evaluator gives it."""
    where = layout(tmp_path)
    (where.secret.parent / "beside.py").write_text("VALUE = 7\n")
    code = "import beside; print(beside.VALUE)"
    environment = {"PYTHONPATH": str(where.secret.parent)}
    finished = run_sandboxed(
        [sys.executable, "-s", "-c", code], where.candidate, LIMITS, environment, launcher=launcher
    )
    assert finished.stdout.strip() == "7", finished.stderr
    assert Path(where.secret.parent) in confinement(where.candidate, environment).read


@pytest.mark.parametrize(
    ("abi", "fs", "net", "scopes"),
    [
        (1, AccessFs((1 << 13) - 1), AccessNet(0), Scope(0)),
        (3, AccessFs((1 << 15) - 1), AccessNet(0), Scope(0)),
        (4, AccessFs((1 << 15) - 1), AccessNet.BIND_TCP | AccessNet.CONNECT_TCP, Scope(0)),
        (6, AccessFs((1 << 16) - 1), AccessNet(3), Scope.ABSTRACT_UNIX_SOCKET | Scope.SIGNAL),
        (7, AccessFs((1 << 16) - 1), AccessNet(3), Scope(3)),
    ],
)
def test_each_abi_handles_the_rights_it_knows(abi: int, fs: AccessFs, net: AccessNet, scopes: Scope) -> None:
    assert (handled_fs(abi), handled_net(abi), handled_scopes(abi)) == (fs, net, scopes)


@pytest.mark.parametrize("abi", [abi for abi in (0, 1, 3) if abi <= ABI])
def test_an_older_abi_confines_what_it_can(tmp_path: Path, abi: int) -> None:
    """Best effort: at an ABI before network rules, files are still confined and TCP is not;
    at ABI 0 nothing is."""
    where = layout(tmp_path)
    restriction = prepare(confinement(where.candidate), abi=abi)
    code = (
        "import socket, sys\n"
        "try:\n    open(sys.argv[1]).read(); print('read')\nexcept PermissionError: print('denied')\n"
        "socket.create_connection(('127.0.0.1', int(sys.argv[2])), timeout=5).close(); print('connected')"
    )
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = str(listener.getsockname()[1])
        finished = subprocess.run(
            [sys.executable, "-I", "-c", code, str(where.secret), port],
            cwd=where.candidate,
            preexec_fn=restriction.apply,
            capture_output=True,
            text=True,
            check=False,
        )
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.split() == ["read" if abi == 0 else "denied", "connected"]


def test_a_process_can_confine_itself(tmp_path: Path) -> None:
    where = layout(tmp_path)
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from rea_kernel.landlock import Confinement, confine\n"
        "print(confine(Confinement(execute=tuple(map(Path, sys.path[1:])))))\n"
        "try:\n    open(sys.argv[1]).read()\nexcept PermissionError:\n    print('denied')"
    )
    finished = subprocess.run(
        [sys.executable, "-I", "-c", code, str(where.secret)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert finished.stdout.split() == [str(ABI), "denied"], finished.stderr


def test_a_confinement_grants_only_existing_paths_and_adds_up(tmp_path: Path) -> None:
    extra = Confinement(read_write=(tmp_path,), devices=(tmp_path / "missing",), allow_tcp=True)
    merged = confinement(tmp_path / "child") | extra
    assert tmp_path in merged.read_write and merged.allow_tcp
    assert prepare(Confinement(devices=(tmp_path / "missing",)), abi=ABI).rules == ()


def test_the_kernel_service_confines_unless_told_not_to() -> None:
    from rea.settings import Settings as ServiceSettings
    from rea_kernel.service import evaluator_settings

    on = evaluator_settings(ServiceSettings())
    off = evaluator_settings(ServiceSettings(kernel_confine=False))
    assert on.limits.confine and on.compile_limits.confine
    assert not off.limits.confine and not off.compile_limits.confine
    assert off.compile_limits.wall_seconds == on.compile_limits.wall_seconds  # the rest is kept
    assert not on.huge_pages and evaluator_settings(ServiceSettings(kernel_huge_pages=True)).huge_pages
    assert on.fork_server and not evaluator_settings(ServiceSettings(kernel_fork_server=False)).fork_server
