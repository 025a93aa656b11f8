"""The job runner: a real process per job, limits enforced and cost measured by the OS.

A tiny fake workload (a Python module written to tmp_path) stands in for the trainer, so
these tests need no torch and no data. Every test of the job contract runs twice: with the
job started cold (``python -m``) and forked warm from a zygote (:mod:`rea_executor.warm`).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import pytest

import rea_executor.runner as runner
from rea.events import JobSpec
from rea.workloads import PROGRESS_ENV, EpochRecord
from rea_executor.confine import job_environment
from rea_executor.warm import WarmStarts


class UseMode(Protocol):
    def __call__(self, mode: str, preload: tuple[str, ...] = ("json",), imports: str = "json") -> None: ...


Run = Callable[..., runner.JobOutput]

SCRIPT = textwrap.dedent(
    """
    import json, os, subprocess, sys, time

    mode = os.environ["FAKE_TRAINER_MODE"]
    if os.environ.get("FAKE_TRAINER_IMPORT"):
        __import__(os.environ["FAKE_TRAINER_IMPORT"])
    job = json.load(open(sys.argv[sys.argv.index("--job") + 1]))
    out = sys.argv[sys.argv.index("--output") + 1]

    def metrics(ne):
        return {"ne": ne, "auc": 0.7, "logloss": 0.5, "rows": 100}

    if mode == "ok":
        end = time.process_time() + 0.3
        while time.process_time() < end:
            pass
        json.dump(
            {
                "status": "ok",
                "validation": metrics(0.81),
                "test": metrics(0.82),
                # echo the job file back so the test can see what the worker handed over
                "parameters": job["config"]["width"],
                "samples_per_second": float(job["seed"]),
                "history": [{"epoch": 1, "train_loss": 0.5, "val_ne": 0.81}],
                # a bogus self-reported cost: the runner must replace it with the OS's numbers
                "cost": {"cpu_seconds": 999.0, "wall_seconds": 999.0, "peak_rss_mb": 999.0},
            },
            open(out, "w"),
        )
    elif mode == "oom":
        blob = bytearray(8 * 1024 ** 3)
        json.dump({"status": "ok"}, open(out, "w"))
    elif mode == "sleep":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open(os.environ["FAKE_TRAINER_PIDFILE"], "w").write(str(child.pid))
        time.sleep(60)
    elif mode == "spin":
        print("spinning (marker-out-91)", flush=True)
        while True:
            pass
    elif mode == "fail":
        sys.stderr.write("Traceback: the trainer fell over (marker-7f3a)\\n")
        sys.exit(1)
    elif mode == "nan":
        failure = {"kind": "nan", "message": "loss became NaN"}
        json.dump({"status": "failed", "error": failure}, open(out, "w"))
        sys.exit(1)
    elif mode == "curve":  # three epochs, each reported as it ends, then a result
        from rea.workloads import EpochRecord, report_epoch
        history = []
        for epoch, ne in enumerate((0.9, 0.85, 0.8), start=1):
            end = time.process_time() + 0.3
            while time.process_time() < end:
                pass
            history.append({"epoch": epoch, "train_loss": 0.5, "val_ne": ne})
            report_epoch(EpochRecord(**history[-1]))
        json.dump({"status": "ok", "validation": metrics(0.8), "test": metrics(0.8), "history": history},
                  open(out, "w"))
    elif mode == "garbage":
        open(out, "w").write("{not json")
    elif mode == "confined":  # what the job sees: its environment and its limits
        import resource
        limits = {name: resource.getrlimit(getattr(resource, name)) for name in
                  ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_CORE")}
        json.dump({"environment": dict(os.environ), "limits": limits},
                  open(os.environ["FAKE_TRAINER_DUMP"], "w"))
        json.dump({"status": "ok"}, open(out, "w"))
    elif mode == "bigfile":  # 4 MiB into a file
        with open(os.environ["FAKE_TRAINER_DUMP"], "wb") as big:
            for _ in range(64):
                big.write(b"x" * 65536)
        json.dump({"status": "ok"}, open(out, "w"))
    elif mode == "noisy":
        sys.stderr.write("w" * 200_000)
        sys.stderr.flush()
        json.dump({"status": "ok"}, open(out, "w"))
    """
)


class FakeWorkload:
    name = "fake"
    description = "test double"

    def __init__(self, preload: list[str]) -> None:
        self.modules = preload

    def dataset_error(self, dataset: str) -> str | None:
        return None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "fake_trainer"]

    def preload(self) -> list[str]:
        return self.modules

    def prepare(self, dataset: str) -> None:
        return None


@pytest.fixture
def use_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> UseMode:
    (tmp_path / "fake_trainer.py").write_text(SCRIPT)
    (tmp_path / "slow_import.py").write_text(SLOW_IMPORT)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    )
    monkeypatch.setattr(runner, "prepare_dataset", lambda *args: None)

    def choose(mode: str, preload: tuple[str, ...] = ("json",), imports: str = "json") -> None:
        """The fake trainer runs ``mode`` after importing ``imports``; its zygote preloads ``preload``."""
        monkeypatch.setenv("FAKE_TRAINER_MODE", mode)
        monkeypatch.setenv("FAKE_TRAINER_IMPORT", imports)
        monkeypatch.setattr(runner, "get_workload", lambda name: FakeWorkload(list(preload)))

    return choose


SLOW_IMPORT = """
import time
end = time.process_time() + 1.0
while time.process_time() < end:  # a framework that takes a second of CPU to import
    pass
"""


@pytest.fixture
def zygotes() -> Iterator[WarmStarts]:
    warm = WarmStarts()
    yield warm
    warm.close()


@pytest.fixture(params=["cold", "warm"])
def run(request: pytest.FixtureRequest, zygotes: WarmStarts) -> Run:
    """``run_job`` with the job started cold, or forked warm from a zygote."""
    return partial(run_job, warm=zygotes if request.param == "warm" else None)


FAKE_TRAINER_VARIABLES = tuple(f"FAKE_TRAINER_{name}" for name in ("MODE", "IMPORT", "PIDFILE", "DUMP"))


def run_job(spec: JobSpec, **kwargs: Any) -> runner.JobOutput:
    """``run_job`` with the fake trainer's variables passed through the job's scrubbed environment."""
    return runner.run_job(spec, environment=job_environment(os.environ, FAKE_TRAINER_VARIABLES), **kwargs)


def job(timeout_s: float = 30, memory_mb: int = 512, **kw: object) -> JobSpec:
    fields: dict[str, object] = {
        "job_id": "camp-1-validation-baseline-s0",
        "campaign_id": "camp-1",
        "phase": "validation",
        "workload": "fake",
        "dataset": "synthetic:rows=10",
        "config": {"width": 77},
        "seed": 5,
        "timeout_s": timeout_s,
        "memory_mb": memory_mb,
    }
    return JobSpec.model_validate({**fields, **kw})


def test_successful_job_reports_its_metrics_and_the_os_measured_cost(use_mode: UseMode, run: Run) -> None:
    use_mode("ok")
    output = run(job())
    assert output.status == "ok", output.error
    assert output.error is None
    assert output.validation is not None and output.validation.ne == 0.81
    assert output.test is not None and output.test.ne == 0.82
    assert output.parameters == 77 and output.samples_per_second == 5.0  # the job file reached it
    assert len(output.history) == 1
    assert output.cost is not None
    assert 0.2 <= output.cost.cpu_seconds < 10, output.cost  # measured, not the claimed 999
    assert 0.2 <= output.cost.wall_seconds < 10
    assert 0 < output.cost.peak_rss_mb < 999


def test_allocation_beyond_the_memory_limit_is_an_oom_failure(use_mode: UseMode, run: Run) -> None:
    use_mode("oom")
    output = run(job(memory_mb=256))
    assert output.status == "failed"
    assert output.error is not None and output.error.kind == "oom", output.error
    assert "MemoryError" in output.error.message
    assert output.cost is not None and output.cost.peak_rss_mb < 256


def _gone_or_zombie(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return fields[0] in ("Z", "X")


def test_job_past_its_timeout_is_killed_with_its_children(
    use_mode: UseMode,
    run: Run,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pidfile = tmp_path / "child.pid"
    monkeypatch.setenv("FAKE_TRAINER_PIDFILE", str(pidfile))
    use_mode("sleep")
    started = time.monotonic()
    output = run(job(timeout_s=0.7))
    elapsed = time.monotonic() - started
    assert elapsed < 5
    assert output.status == "failed"
    assert output.error is not None and output.error.kind == "timeout"
    assert output.error.message == "killed after 0.7s"
    assert output.cost is not None and 0.7 <= output.cost.wall_seconds < 5
    # the grandchild in the job's process group was killed too
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 2
    while not _gone_or_zombie(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone_or_zombie(child)


def test_nonzero_exit_without_output_is_an_error_with_the_stderr_tail(use_mode: UseMode, run: Run) -> None:
    use_mode("fail")
    output = run(job())
    assert output.status == "failed"
    assert output.error is not None and output.error.kind == "error"
    assert output.error.message.startswith("exit code 1: ")
    assert "marker-7f3a" in output.error.message
    assert output.cost is not None


def test_failure_the_job_reported_itself_is_kept_with_the_measured_cost(use_mode: UseMode, run: Run) -> None:
    use_mode("nan")
    output = run(job())
    assert output.status == "failed"
    assert output.error is not None
    assert (output.error.kind, output.error.message) == ("nan", "loss became NaN")
    assert output.cost is not None and output.cost.cpu_seconds < 10


def test_unparseable_output_counts_as_no_output(use_mode: UseMode, run: Run) -> None:
    use_mode("garbage")
    output = run(job())
    assert output.status == "failed"
    assert output.error is not None and output.error.kind == "error"
    assert output.error.message == "exit code 0: no output"


def test_unknown_workload_is_an_invalid_config_without_running_anything(
    monkeypatch: pytest.MonkeyPatch,
    run: Run,
) -> None:
    def missing(name: str) -> None:
        raise KeyError(name)

    monkeypatch.setattr(runner, "get_workload", missing)
    output = run(job(workload="nope"))
    assert output.status == "failed" and output.cost is None
    assert output.error is not None
    assert (output.error.kind, output.error.message) == ("invalid_config", "unknown workload 'nope'")


def test_job_writing_a_lot_to_stderr_still_completes(use_mode: UseMode, run: Run) -> None:
    use_mode("noisy")
    output = run(job(timeout_s=2))
    assert output.status == "ok", output.error


def test_a_dataset_is_prepared_in_a_child_process_and_its_failure_is_reported() -> None:
    assert runner.prepare_dataset("ranker", "synthetic:rows=500,seed=4") is None
    problem = runner.prepare_dataset("ranker", "nosuch:rows=5")
    assert problem is not None and "unknown dataset 'nosuch'" in problem


def test_a_job_the_worker_stops_reports_why_with_the_cpu_it_used_and_its_output(
    use_mode: UseMode, run: Run
) -> None:
    use_mode("spin")
    watch = runner.JobWatch()

    def stop_once_it_has_worked() -> None:  # by CPU used, not wall time: the machine may be busy
        deadline = time.monotonic() + 20
        while watch.cpu_seconds < 0.6 and time.monotonic() < deadline:
            time.sleep(0.05)
        watch.stop("cancelled", "the campaign was cancelled")

    threading.Thread(target=stop_once_it_has_worked).start()
    output = run(job(), watch=watch)
    assert output.status == "failed"
    assert output.error is not None
    assert (output.error.kind, output.error.message) == ("cancelled", "the campaign was cancelled")
    assert output.cost is not None and 0.5 < output.cost.cpu_seconds < 10
    assert watch.cpu_seconds == output.cost.cpu_seconds
    assert "marker-out-91" in watch.log  # stdout is kept, not only stderr
    assert watch.pid is not None and _gone_or_zombie(watch.pid)


def test_the_cpu_a_running_job_used_is_sampled_while_it_runs(use_mode: UseMode, run: Run) -> None:
    use_mode("spin")
    watch = runner.JobWatch()
    done = threading.Thread(target=run, args=(job(),), kwargs={"watch": watch})
    done.start()
    try:
        deadline = time.monotonic() + 10
        while watch.cpu_seconds < 0.5 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert watch.cpu_seconds >= 0.5
    finally:
        watch.stop("killed", "test over")
        done.join(10)


def test_a_job_dies_with_the_worker_that_started_it(use_mode: UseMode, run: Run, tmp_path: Path) -> None:
    """A worker killed with SIGKILL leaves no training process behind: shown with a child process
    that runs a job and is then killed, as a worker would be (a warm job's zygote sees its
    worker's pipe close and kills the job)."""
    use_mode("spin")
    pidfile = tmp_path / "job.pid"
    worker = os.fork()
    if worker == 0:  # the "worker": run the job, report its pid, wait to be killed
        try:
            watch = runner.JobWatch()
            kwargs = {"watch": watch}
            threading.Thread(target=run, args=(job(),), kwargs=kwargs, daemon=True).start()
            while watch.pid is None:
                time.sleep(0.01)
            pidfile.write_text(str(watch.pid))
            time.sleep(60)
        finally:
            os._exit(0)
    deadline = time.monotonic() + 10
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)
    job_pid = int(pidfile.read_text())
    assert not _gone_or_zombie(job_pid)
    os.kill(worker, signal.SIGKILL)
    os.waitpid(worker, 0)
    deadline = time.monotonic() + 5
    while not _gone_or_zombie(job_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone_or_zombie(job_pid)


def test_a_warm_job_does_not_pay_for_the_imports_its_zygote_made(
    use_mode: UseMode, zygotes: WarmStarts
) -> None:
    use_mode("ok", preload=("slow_import",), imports="slow_import")
    cold = run_job(job())
    warm = [run_job(job(), warm=zygotes) for _ in range(2)]
    assert all(w.status == "ok" for w in [cold, *warm]), [w.error for w in [cold, *warm]]
    assert [w.validation for w in warm] == [cold.validation] * 2
    assert len(zygotes.idle) == 1  # one zygote served both jobs
    assert cold.cost is not None and cold.cost.cpu_seconds >= 1.2  # the import's second, and the work
    assert all(w.cost is not None and 0.2 <= w.cost.cpu_seconds < 1.0 for w in warm), [w.cost for w in warm]


def test_a_job_whose_zygote_dies_is_reported_killed(use_mode: UseMode, zygotes: WarmStarts) -> None:
    use_mode("spin")
    watch = runner.JobWatch()
    outputs: list[runner.JobOutput] = []
    done = threading.Thread(target=lambda: outputs.append(run_job(job(), watch=watch, warm=zygotes)))
    done.start()
    deadline = time.monotonic() + 10
    while watch.cpu_seconds < 0.3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert watch.pid is not None
    zygote = int(Path(f"/proc/{watch.pid}/stat").read_text().rpartition(")")[2].split()[1])
    os.kill(zygote, signal.SIGKILL)
    done.join(10)
    assert outputs and outputs[0].error is not None and outputs[0].error.kind == "killed", outputs
    assert outputs[0].cost is not None and outputs[0].cost.cpu_seconds >= 0.3  # as sampled
    deadline = time.monotonic() + 5  # a signal is delivered, not waited for
    while not _gone_or_zombie(watch.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone_or_zombie(watch.pid) and not zygotes.idle


def test_a_zygote_that_cannot_start_leaves_its_jobs_to_start_cold(
    use_mode: UseMode, zygotes: WarmStarts
) -> None:
    use_mode("ok", preload=("no_such_module_anywhere",))
    outputs = [run_job(job(), warm=zygotes) for _ in range(2)]
    assert [o.status for o in outputs] == ["ok", "ok"], [o.error for o in outputs]
    assert zygotes.failed == {("no_such_module_anywhere",)} and not zygotes.idle


def test_a_job_behind_its_early_stopping_bar_is_pruned_with_its_curve_and_cpu(
    use_mode: UseMode, run: Run
) -> None:
    use_mode("curve")
    ahead = run(job(stop_above={1: 0.95, 2: 0.9}))
    assert ahead.status == "ok" and [e.val_ne for e in ahead.history] == [0.9, 0.85, 0.8]
    pruned = run(job(stop_above={1: 0.95, 2: 0.84}))  # 0.85 after epoch 2 is above 0.84
    assert pruned.status == "failed" and pruned.error is not None and pruned.error.kind == "pruned"
    assert "epoch 2" in pruned.error.message
    assert [e.val_ne for e in pruned.history] == [0.9, 0.85]
    assert pruned.cost is not None and 0.5 <= pruned.cost.cpu_seconds < ahead.cost.cpu_seconds  # type: ignore[union-attr]


def test_behind_reads_only_the_latest_epoch_against_its_bar() -> None:
    curve = [
        EpochRecord(epoch=1, train_loss=0.5, val_ne=0.9),
        EpochRecord(epoch=2, train_loss=0.5, val_ne=0.8),
    ]
    assert runner.behind(curve, {}) is None
    assert runner.behind(curve, {1: 0.5}) is None  # epoch 1 is past; only the latest counts
    assert runner.behind(curve, {2: 0.81}) is None
    assert runner.behind(curve, {2: 0.79}) is not None
    assert runner.behind([], {1: 0.1}) is None


def test_a_preparation_ended_by_a_signal_is_a_killed_job_not_a_data_error(
    use_mode: UseMode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cluster stopping a job signals every process under it, the data preparation included."""
    use_mode("ok")
    monkeypatch.setattr(runner, "prepare_dataset", lambda *args: f"{runner.SIGNALLED} SIGTERM")
    output = run_job(job(timeout_s=5))
    assert output.status == "failed" and output.error is not None
    assert output.error.kind == "killed", output.error


SECRETS = {
    "REA_MONGO_URI": "mongodb://rea:hunter2@db:27017/",
    "REA_KAFKA_BOOTSTRAP": "kafka:9092",
    "REA_LLM_API_KEY": "sk-not-for-jobs",
    "AWS_SECRET_ACCESS_KEY": "aws-not-for-jobs",
}


def test_a_job_sees_no_service_credentials_and_runs_under_its_limits_from_the_start(
    use_mode: UseMode, run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cold or forked warm, the job's environment holds nothing of the worker's settings or
    other secrets, but what it needs to run (PATH, HOME, its progress file); its memory, CPU
    and file sizes are capped and it dumps no core."""
    use_mode("confined")
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    dump = tmp_path / "seen.json"
    monkeypatch.setenv("FAKE_TRAINER_DUMP", str(dump))
    output = run(job(timeout_s=20, memory_mb=700), file_bytes=3 << 20)
    assert output.status == "ok", output.error
    seen = json.loads(dump.read_text())
    environment = seen["environment"]
    assert not set(SECRETS) & set(environment), sorted(environment)
    assert not any(value in json.dumps(environment) for value in SECRETS.values())
    assert {"PATH", "HOME", PROGRESS_ENV} <= set(environment)
    limits = seen["limits"]
    assert limits["RLIMIT_AS"] == [700 << 20, 700 << 20]
    assert limits["RLIMIT_CPU"] == [21, 26]
    assert limits["RLIMIT_FSIZE"] == [3 << 20, 3 << 20]
    assert limits["RLIMIT_CORE"] == [0, 0]


def test_a_job_writing_past_its_file_size_limit_fails_as_an_error_not_a_kill(
    use_mode: UseMode, run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write past the limit (EFBIG in Python, SIGXFSZ for other programs) is the job's own
    doing: an error the runbook escalates rather than resubmits, with the limit in its message;
    the file stops at the limit."""
    use_mode("bigfile")
    big = tmp_path / "big.bin"
    monkeypatch.setenv("FAKE_TRAINER_DUMP", str(big))
    output = run(job(), file_bytes=1 << 20)
    assert output.status == "failed" and output.error is not None
    assert output.error.kind == "error", output.error
    assert "file size limit (1 MiB)" in output.error.message
    assert big.stat().st_size <= 1 << 20


def test_the_job_environment_keeps_what_jobs_need_and_no_service_setting() -> None:
    needed = {
        "PATH": "/usr/bin",
        "HOME": "/home/rea",
        "LC_ALL": "C.UTF-8",
        "OMP_NUM_THREADS": "2",
        "CUDA_VISIBLE_DEVICES": "0",
        PROGRESS_ENV: "/tmp/progress",
        "REA_KERNEL_CACHE": "/cache",
    }
    environ = {**SECRETS, **needed, "WANDB_API_KEY": "w", "HF_HOME": "/hf"}
    kept = job_environment(environ, passthrough=["HF_HOME", "REA_MONGO_URI"])
    assert kept == {**needed, "HF_HOME": "/hf"}, "a REA_ setting is never passed through, even when named"
