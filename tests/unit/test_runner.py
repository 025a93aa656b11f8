"""The job runner: a real subprocess per job, limits enforced and cost measured by the OS.

A tiny fake workload (a Python script written to tmp_path) stands in for the trainer, so
these tests need no torch and no data.
"""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import rea_executor.runner as runner
from rea.events import JobSpec

UseMode = Callable[[str], None]

SCRIPT = textwrap.dedent(
    """
    import json, os, subprocess, sys, time

    mode = sys.argv[1]
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
        open(os.environ["REA_TEST_PIDFILE"], "w").write(str(child.pid))
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
    elif mode == "garbage":
        open(out, "w").write("{not json")
    elif mode == "noisy":
        sys.stderr.write("w" * 200_000)
        sys.stderr.flush()
        json.dump({"status": "ok"}, open(out, "w"))
    """
)


class FakeWorkload:
    name = "fake"
    description = "test double"

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv

    def dataset_error(self, dataset: str) -> str | None:
        return None

    def command(self) -> list[str]:
        return self.argv

    def prepare(self, dataset: str) -> None:
        return None


@pytest.fixture
def use_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> UseMode:
    script = tmp_path / "fake_trainer.py"
    script.write_text(SCRIPT)

    def choose(mode: str) -> None:
        argv = [sys.executable, str(script), mode]
        monkeypatch.setattr(runner, "get_workload", lambda name: FakeWorkload(argv))
        monkeypatch.setattr(runner, "prepare_dataset", lambda workload, dataset: None)

    return choose


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


def test_successful_job_reports_its_metrics_and_the_os_measured_cost(use_mode: UseMode) -> None:
    use_mode("ok")
    output = runner.run_job(job())
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


def test_allocation_beyond_the_memory_limit_is_an_oom_failure(use_mode: UseMode) -> None:
    use_mode("oom")
    output = runner.run_job(job(memory_mb=256))
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
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pidfile = tmp_path / "child.pid"
    monkeypatch.setenv("REA_TEST_PIDFILE", str(pidfile))
    use_mode("sleep")
    started = time.monotonic()
    output = runner.run_job(job(timeout_s=0.7))
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


def test_nonzero_exit_without_output_is_an_error_with_the_stderr_tail(use_mode: UseMode) -> None:
    use_mode("fail")
    output = runner.run_job(job())
    assert output.status == "failed"
    assert output.error is not None and output.error.kind == "error"
    assert output.error.message.startswith("exit code 1: ")
    assert "marker-7f3a" in output.error.message
    assert output.cost is not None


def test_failure_the_job_reported_itself_is_kept_with_the_measured_cost(use_mode: UseMode) -> None:
    use_mode("nan")
    output = runner.run_job(job())
    assert output.status == "failed"
    assert output.error is not None
    assert (output.error.kind, output.error.message) == ("nan", "loss became NaN")
    assert output.cost is not None and output.cost.cpu_seconds < 10


def test_unparseable_output_counts_as_no_output(use_mode: UseMode) -> None:
    use_mode("garbage")
    output = runner.run_job(job())
    assert output.status == "failed"
    assert output.error is not None and output.error.kind == "error"
    assert output.error.message == "exit code 0: no output"


def test_unknown_workload_is_an_invalid_config_without_running_anything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def missing(name: str) -> None:
        raise KeyError(name)

    monkeypatch.setattr(runner, "get_workload", missing)
    output = runner.run_job(job(workload="nope"))
    assert output.status == "failed" and output.cost is None
    assert output.error is not None
    assert (output.error.kind, output.error.message) == ("invalid_config", "unknown workload 'nope'")


def test_job_writing_a_lot_to_stderr_still_completes(use_mode: UseMode) -> None:
    use_mode("noisy")
    output = runner.run_job(job(timeout_s=2))
    assert output.status == "ok", output.error


def test_a_dataset_is_prepared_in_a_child_process_and_its_failure_is_reported() -> None:
    assert runner.prepare_dataset("ranker", "synthetic:rows=500,seed=4") is None
    problem = runner.prepare_dataset("ranker", "nosuch:rows=5")
    assert problem is not None and "unknown dataset 'nosuch'" in problem


def test_a_job_the_worker_stops_reports_why_with_the_cpu_it_used_and_its_output(use_mode: UseMode) -> None:
    use_mode("spin")
    watch = runner.JobWatch()
    threading.Timer(1.5, watch.stop, ("cancelled", "the campaign was cancelled")).start()
    output = runner.run_job(job(), watch=watch)
    assert output.status == "failed"
    assert output.error is not None
    assert (output.error.kind, output.error.message) == ("cancelled", "the campaign was cancelled")
    assert output.cost is not None and 0.5 < output.cost.cpu_seconds < 10
    assert watch.cpu_seconds == output.cost.cpu_seconds
    assert "marker-out-91" in watch.log  # stdout is kept, not only stderr
    assert watch.pid is not None and _gone_or_zombie(watch.pid)


def test_the_cpu_a_running_job_used_is_sampled_while_it_runs(use_mode: UseMode) -> None:
    use_mode("spin")
    watch = runner.JobWatch()
    done = threading.Thread(target=runner.run_job, args=(job(),), kwargs={"watch": watch})
    done.start()
    try:
        deadline = time.monotonic() + 10
        while watch.cpu_seconds < 0.5 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert watch.cpu_seconds >= 0.5
    finally:
        watch.stop("killed", "test over")
        done.join(10)


def test_a_job_dies_with_the_thread_that_started_it(use_mode: UseMode, tmp_path: Path) -> None:
    """A worker killed with SIGKILL leaves no training process behind: shown with a child process
    that runs a job and is then killed, as a worker would be."""
    use_mode("spin")
    pidfile = tmp_path / "job.pid"
    worker = os.fork()
    if worker == 0:  # the "worker": run the job, report its pid, wait to be killed
        try:
            watch = runner.JobWatch()
            kwargs = {"watch": watch}
            threading.Thread(target=runner.run_job, args=(job(),), kwargs=kwargs, daemon=True).start()
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
