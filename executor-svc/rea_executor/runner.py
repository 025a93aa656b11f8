"""Runs one training job in a process of its own with time and memory limits, and measures it.

The job's CPU seconds (user + system) come from the operating system (``wait4``'s resource
usage for the job process and the children it waited for), not from the job's own report,
so every method in a comparison is charged the same way. Peak memory is the job process's
own high-water mark (``VmHWM``), sampled while it runs.

A job is a fresh process, started cold (``command()``) or, for a workload that names modules
to preload, forked from a zygote that imported them (:mod:`rea_executor.warm`), which saves
the seconds of importing a framework on every job. Either way the job dies with the worker
that started it: a worker killed with SIGKILL leaves no training process behind to burn CPU
nobody charges. While it runs, a :class:`JobWatch` shares its pid and the CPU it used so far
with the worker (which records them in the job ledger), and lets the worker stop it (a
cancelled campaign, a worker shutting down). The job's stdout and stderr are kept, the last
``LOG_LIMIT`` bytes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal, Protocol

import structlog
from pydantic import ValidationError

from rea.events import JobSpec
from rea.kernels import KernelEntry
from rea.ledger import LOG_LIMIT
from rea.workloads import (
    FAULT_ENV,
    PROGRESS_ENV,
    EpochRecord,
    JobCost,
    JobError,
    JobInput,
    JobOutput,
    dataset_problems,
    get_workload,
)
from rea_executor.confine import JobLimits, job_environment, limit_files
from rea_executor.warm import Ended, Launch, WarmStarts, Zygote, ZygoteError, die_with_parent, reaped

log = structlog.get_logger()

OOM_EXIT_CODE = 3
FILE_BYTES = 2 << 30
"""The largest file a job may write unless its caller says otherwise (``REA_JOB_FILE_MB``)."""


@dataclass(frozen=True)
class Exit:
    code: int
    cpu_seconds: float
    wall_seconds: float
    timed_out: bool
    peak_rss_mb: float
    stopped: bool = False


Fault = Literal["oom", "nan", "kill"]
KILL_AFTER_S = 0.25
"""When a ``kill`` drill SIGKILLs its job: early enough that no real job has finished (the
reference ranker's smallest takes about a second), so the drill always lands."""
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")
"""One entry per GPU while the NVIDIA driver is loaded."""
StopReason = Literal["cancelled", "killed", "pruned"]


@dataclass
class JobWatch:
    """What the runner thread and the worker's event loop share about the job in progress."""

    pid: int | None = None
    cpu_seconds: float = 0.0
    log: str = ""
    stop_reason: StopReason = "killed"
    stop_message: str = ""
    stopping: threading.Event = field(default_factory=threading.Event)
    progress: list[EpochRecord] = field(default_factory=list)
    """The epochs the job reported so far (``REA_PROGRESS_FILE``), for a pruner to read."""

    def stop(self, reason: StopReason, message: str) -> None:
        """Ask the runner to kill the job now; it then reports ``reason`` with the CPU it used."""
        if not self.stopping.is_set():
            self.stop_reason, self.stop_message = reason, message
            self.stopping.set()


def run_job(
    spec: JobSpec,
    fault: Fault | None = None,
    *,
    prepare: bool = True,
    watch: JobWatch | None = None,
    warm: WarmStarts | None = None,
    kernels: Sequence[KernelEntry] = (),
    environment: Mapping[str, str] | None = None,
    file_bytes: int = FILE_BYTES,
    data_roots: Sequence[Path] | None = None,
) -> JobOutput:
    """Blocking: run the job to completion (or its limits) and return what it reported.

    ``fault`` is for resilience drills: ``oom`` and ``nan`` ask the job itself to fail that
    way (through its real failure paths), ``kill`` SIGKILLs it a quarter second in. ``prepare=False``
    skips preparing the dataset (the caller knows it is ready). ``watch`` receives the job's
    pid, CPU so far and output, and can stop it. ``warm``: the zygotes to fork the job from
    when its workload preloads modules (else, or should no zygote start, it starts cold).
    ``kernels``: the kernel registry's entries, handed to a job that asked for evolved kernels.
    ``environment``: all the job's process sees of its caller's (default: this process's,
    scrubbed by :func:`~rea_executor.confine.job_environment`; a zygote's is its own, set by
    ``warm``); ``file_bytes``: the largest file it may write. ``data_roots``: where the files
    its dataset names must be (checked again here, where the data is read; None: not checked).
    """
    watch = watch or JobWatch()
    environment = job_environment(os.environ) if environment is None else environment
    try:
        workload = get_workload(spec.workload)
    except KeyError:
        return _failed("invalid_config", f"unknown workload {spec.workload!r}")
    if data_roots is not None and (outside := dataset_problems(workload, spec.dataset, data_roots)):
        return _failed("invalid_config", f"dataset: {'; '.join(outside)}")
    if prepare and (problem := prepare_dataset(spec.workload, spec.dataset, environment, file_bytes)):
        if watch.stopping.is_set():  # stopped while it prepared: that is why, not the data
            return _failed(watch.stop_reason, f"{watch.stop_message} while it prepared its data")
        # A signal is something done to the job (a cluster stopping it), not a fault in the data.
        cause: Literal["killed", "error"] = "killed" if problem.startswith(SIGNALLED) else "error"
        return _failed(cause, f"could not prepare dataset {spec.dataset!r}: {problem}")
    with tempfile.TemporaryDirectory(prefix=f"rea-{spec.job_id[:40]}-") as tmp:
        job_path, out_path, log_path = Path(tmp) / "job.json", Path(tmp) / "result.json", Path(tmp) / "log"
        progress_path = Path(tmp) / "progress"
        job = JobInput(
            job_id=spec.job_id,
            dataset=spec.dataset,
            config=spec.config,
            seed=spec.seed,
            diagnose=spec.diagnose,
            kernels=list(kernels),
        )
        job_path.write_text(job.model_dump_json())
        args = ["--job", str(job_path), "--output", str(out_path)]
        env = {PROGRESS_ENV: str(progress_path)}
        if fault in ("oom", "nan"):
            env[FAULT_ENV] = fault
        # The time limit is wall-clock; a job given several cores may use that many CPU-s a second.
        limits = JobLimits(
            spec.memory_mb * 1024 * 1024, int(spec.timeout_s * max(spec.cpus, 1.0)) + 1, file_bytes
        )
        kill_after = KILL_AFTER_S if fault == "kill" else None
        start = partial(_start_cold, [*workload.command(), *args], {**environment, **env}, log_path, limits)
        warmable = warm_module(workload)
        if warm is not None and warmable is not None:
            module, modules = warmable
            launch = Launch(
                module=module,
                args=args,
                env=env,
                log_path=str(log_path),
                memory_bytes=limits.memory_bytes,
                cpu_limit_s=limits.cpu_seconds,
                file_bytes=limits.file_bytes,
            )
            start = partial(_start_warm, warm, modules, environment, launch, start)
        ended = _run(start, spec.timeout_s, watch, kill_after, progress_path, spec.stop_above)
        watch.log = _tail(log_path, LOG_LIMIT)
        stderr = watch.log[-2000:]
        output = _read_output(out_path)
    cost = JobCost(
        cpu_seconds=round(ended.cpu_seconds, 3),
        wall_seconds=round(ended.wall_seconds, 3),
        peak_rss_mb=round(ended.peak_rss_mb, 1),
        gpu_seconds=round(ended.wall_seconds * gpus_held(spec.gpus), 3),
    )
    watch.cpu_seconds = cost.cpu_seconds
    if ended.stopped:
        stopped = _failed(watch.stop_reason, watch.stop_message or "stopped by its worker", cost)
        return stopped.model_copy(update={"history": watch.progress})
    if ended.timed_out:
        return _failed("timeout", f"killed after {spec.timeout_s:g}s", cost)
    if output is not None:
        return output.model_copy(update={"cost": cost})
    if ended.code == -signal.SIGXCPU:
        return _failed("timeout", f"used its {limits.cpu_seconds} CPU-s limit", cost)
    # Python ignores SIGXFSZ, so its write fails with EFBIG instead; other programs die of it.
    if ended.code == -signal.SIGXFSZ or os.strerror(errno.EFBIG) in stderr:
        return _failed("error", f"wrote past its file size limit ({file_bytes >> 20} MiB)", cost)
    kind: Literal["oom", "killed", "error"] = "error"
    if ended.code == OOM_EXIT_CODE or "MemoryError" in stderr:
        kind = "oom"
    elif ended.code < 0:
        kind = "killed"
    return _failed(kind, f"exit code {ended.code}: {stderr.strip()[-500:] or 'no output'}", cost)


def gpus_held(asked: int, environ: Mapping[str, str] = os.environ, driver: Path = NVIDIA_GPUS) -> int:
    """How many GPUs a job that asked for ``asked`` holds here: at most the GPUs this process
    sees, which are those ``CUDA_VISIBLE_DEVICES`` names (a Ray or Kubernetes GPU job is given
    it), else every GPU the NVIDIA driver lists. A job on a machine without GPUs holds none and
    is charged no GPU-s, whatever it asked for."""
    if asked <= 0:
        return 0
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        devices = [d for d in visible.split(",") if d.strip() and d.strip() not in ("-1", "NoDevFiles")]
        return min(asked, len(devices))
    try:
        return min(asked, sum(1 for _ in driver.iterdir()))
    except OSError:
        return 0


SIGNALLED = "stopped by signal"
"""How :func:`prepare_dataset` begins its answer when a signal ended the preparation."""


def prepare_dataset(
    workload: str, dataset: str, environment: Mapping[str, str] | None = None, file_bytes: int = FILE_BYTES
) -> str | None:
    """Blocking: the workload's ``prepare`` in a child process, because it may be slow and hold
    the GIL (loading torch, generating data) while the worker's lease heartbeat must keep
    beating; it sees ``environment`` only (default: this process's, scrubbed) and may write
    files up to ``file_bytes``. Returns
    what went wrong, or None when the dataset is ready."""

    def confined() -> None:
        limit_files(file_bytes)
        die_with_parent()

    done = subprocess.run(
        [sys.executable, "-m", "rea_executor.runner", workload, dataset],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=job_environment(os.environ) if environment is None else dict(environment),
        check=False,
        # In a session of its own, like the job: a signal to the worker's process group (a
        # cluster stopping the job side) is the worker's to handle, and it reports why.
        start_new_session=True,
        preexec_fn=confined,
    )
    if done.returncode == 0:
        return None
    if done.returncode < 0:
        return f"{SIGNALLED} {signal.Signals(-done.returncode).name}"
    lines = done.stderr.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else f"exit code {done.returncode}"


def warm_module(workload: object) -> tuple[str, tuple[str, ...]] | None:
    """(module, modules to preload) when the workload's jobs can be forked warm: it names the
    modules to preload, and its command is ``python -m module`` with this interpreter."""
    preload = getattr(workload, "preload", None)
    command = getattr(workload, "command", None)
    if not callable(preload) or not callable(command):
        return None
    argv = command()
    if len(argv) != 3 or argv[:2] != [sys.executable, "-m"]:
        return None
    modules = tuple(str(m) for m in preload())
    return (argv[2], modules) if modules else None


class _Process(Protocol):
    """A started job, cold or warm, as the runner's loop watches it."""

    @property
    def pid(self) -> int: ...

    def ended(self, wait: bool = False) -> Ended | None: ...

    def kill(self) -> None: ...


@dataclass
class _Cold:
    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def ended(self, wait: bool = False) -> Ended | None:
        ended = reaped(self.proc.pid, wait)
        if ended is not None:
            self.proc.returncode = ended.code
        return ended

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


@dataclass
class _Warm:
    zygote: Zygote
    pid: int

    def ended(self, wait: bool = False) -> Ended | None:
        while True:
            ended = self.zygote.ended(1.0 if wait else 0.0)
            if ended is not None and ended.orphaned:
                self.kill()  # the job's own children outlive its parent-death signal
            if ended is not None or not wait:
                return ended

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)


@contextlib.contextmanager
def _start_cold(
    argv: list[str], environment: dict[str, str], log_path: Path, limits: JobLimits
) -> Iterator[_Process]:
    def confined() -> None:  # in the child, before exec: limited from its first instruction,
        limits.apply()
        die_with_parent()  # and it dies with its worker's thread

    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
            preexec_fn=confined,
        )
    yield _Cold(proc)


@contextlib.contextmanager
def _start_warm(
    warm: WarmStarts,
    modules: tuple[str, ...],
    environment: Mapping[str, str],
    launch: Launch,
    cold: Callable[[], contextlib.AbstractContextManager[_Process]],
) -> Iterator[_Process]:
    """Fork the job from a zygote started with ``environment``; start it cold when no zygote can."""
    with contextlib.ExitStack() as stack:
        try:
            zygote = stack.enter_context(warm.zygote(modules, environment))
            process: _Process = _Warm(zygote, zygote.launch(launch))
        except ZygoteError as exc:
            log.warning("warm_start_failed", modules=list(modules), error=str(exc))
            process = stack.enter_context(cold())
        yield process


def _run(
    start: Callable[[], contextlib.AbstractContextManager[_Process]],
    timeout_s: float,
    watch: JobWatch,
    kill_after_s: float | None = None,
    progress_path: Path | None = None,
    stop_above: dict[int, float] | None = None,
) -> Exit:
    """Start the job and watch it to its end, its limits or a stop request."""
    with start() as process:
        started = time.monotonic()  # a zygote's own start-up is not the job's
        watch.pid = process.pid
        timed_out = stopped = False
        peak_kb = 0
        while True:
            ended = process.ended()
            if ended is not None:
                break
            peak_kb = max(peak_kb, _high_water_kb(process.pid))
            watch.cpu_seconds = max(watch.cpu_seconds, _cpu_so_far(process.pid))
            if progress_path is not None:
                watch.progress = _progress(progress_path, watch.progress)
                if (reason := behind(watch.progress, stop_above or {})) is not None:
                    watch.stop("pruned", reason)
            if watch.stopping.is_set() or time.monotonic() - started > timeout_s:
                stopped = watch.stopping.is_set()
                timed_out = not stopped
                process.kill()
                ended = process.ended(wait=True)
                break
            if kill_after_s is not None and time.monotonic() - started > kill_after_s:
                process.kill()
                kill_after_s = None
            time.sleep(0.05)
        process.kill()  # leave no stray grandchildren behind
    assert ended is not None
    cpu = max(ended.cpu_seconds, watch.cpu_seconds)
    return Exit(ended.code, cpu, time.monotonic() - started, timed_out, peak_kb / 1024, stopped)


def _progress(path: Path, known: list[EpochRecord]) -> list[EpochRecord]:
    """The epochs the job reported so far; ``known`` when nothing new (or nothing readable) came."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return known
    if len(lines) <= len(known):
        return known
    try:
        return [*known, *(EpochRecord.model_validate_json(line) for line in lines[len(known) :])]
    except ValueError:  # a line half written: read it next time
        return known


def _cpu_so_far(pid: int) -> float:
    """The running job's user + system CPU seconds (``/proc/PID/stat``), for its ledger samples."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        ticks = sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    except (OSError, ValueError, IndexError):
        return 0.0
    return ticks / os.sysconf("SC_CLK_TCK")


def _high_water_kb(pid: int) -> int:
    """The job's own peak RSS so far (VmHWM). ``wait4``'s ru_maxrss cannot be used for this: on
    Linux a child inherits its parent's high-water mark across fork and exec, so it would report
    the worker's size, not the job's."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _tail(path: Path, size: int = 2000) -> str:
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - size))
        return handle.read().decode(errors="replace")


def behind(progress: list[EpochRecord], stop_above: dict[int, float]) -> str | None:
    """Why the job should stop early: its latest epoch's validation NE is above the bar the
    planner set for that epoch (None: it goes on)."""
    if not progress:
        return None
    latest = progress[-1]
    bar = stop_above.get(latest.epoch)
    if bar is None or not latest.val_ne > bar:
        return None
    return f"pruned after epoch {latest.epoch}: validation NE {latest.val_ne:.4f} above the median {bar:.4f}"


def _failed(
    kind: Literal["oom", "invalid_config", "timeout", "killed", "cancelled", "pruned", "error"],
    message: str,
    cost: JobCost | None = None,
) -> JobOutput:
    return JobOutput(status="failed", cost=cost, error=JobError(kind=kind, message=message))


def _read_output(path: Path) -> JobOutput | None:
    try:
        return JobOutput.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError, ValidationError):
        return None


if __name__ == "__main__":
    get_workload(sys.argv[1]).prepare(sys.argv[2])
