from __future__ import annotations

import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from rea.workloads import JobInput, JobOutput
from rea_workload import WORKLOAD


def run_job(
    tmp_path: Path, job: JobInput, preexec: Callable[[], None] | None = None
) -> tuple[int, JobOutput]:
    job_file, result_file = tmp_path / "job.json", tmp_path / "out" / "result.json"
    job_file.write_text(job.model_dump_json())
    argv = [*WORKLOAD.command(), "--job", str(job_file), "--output", str(result_file)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, preexec_fn=preexec)
    return done.returncode, JobOutput.model_validate_json(result_file.read_text())


def test_a_job_subprocess_writes_metrics_and_its_own_cost(tmp_path: Path) -> None:
    code, out = run_job(tmp_path, JobInput(job_id="j1", dataset="synthetic:rows=2000", config={"epochs": 1}))
    assert code == 0 and out.status == "ok"
    assert out.test and 0 < out.test.ne < 1.1
    assert out.cost and out.cost.cpu_seconds > 0 and out.cost.wall_seconds > 0 and out.cost.peak_rss_mb > 50


def test_an_invalid_config_fails_fast_with_invalid_config(tmp_path: Path) -> None:
    job = JobInput(job_id="j2", dataset="synthetic", config={"cross_layers": 9, "colour": "red"})
    code, out = run_job(tmp_path, job)
    assert code == 2 and out.status == "failed" and out.error and out.error.kind == "invalid_config"
    assert "cross_layers=9" in out.error.message and "unknown knob 'colour'" in out.error.message
    assert out.cost is not None


def test_an_unknown_dataset_is_an_invalid_job(tmp_path: Path) -> None:
    code, out = run_job(tmp_path, JobInput(job_id="j3", dataset="imagenet", config={}))
    assert code == 2 and out.error and out.error.kind == "invalid_config" and "imagenet" in out.error.message


def test_an_unreadable_job_file_is_an_error(tmp_path: Path) -> None:
    job_file, result_file = tmp_path / "job.json", tmp_path / "result.json"
    job_file.write_text("{not json")
    argv = [*WORKLOAD.command(), "--job", str(job_file), "--output", str(result_file)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    out = JobOutput.model_validate_json(result_file.read_text())
    assert done.returncode == 1 and out.error and out.error.kind == "error"


@pytest.mark.skipif(sys.platform != "linux", reason="needs RLIMIT_AS")
def test_running_out_of_memory_is_reported_as_oom(tmp_path: Path) -> None:
    """Eight hashed tables of 1M x 64 floats need 2 GB; the job may use 2 GB of address space,
    about 1 GB of which the imports already take."""
    limit = 2000 * 2**20

    def cap_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    dataset = "synthetic:rows=1000,cardinality=2000000"
    job = JobInput(job_id="j5", dataset=dataset, config={"hash_buckets": 1_000_000, "embedding_dim": 64})
    code, out = run_job(tmp_path, job, preexec=cap_memory)
    assert code == 3 and out.status == "failed" and out.error and out.error.kind == "oom"
    assert out.cost is not None
