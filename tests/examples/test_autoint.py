"""The AutoInt example workload: its schema is its own, its import is cheap, and its jobs keep
REA's job contract (results, exit codes, injected faults) through the real entrypoint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rea.knobs import Role
from rea.techniques import Technique
from rea.workloads import FAULT_ENV, JobInput, JobOutput, Workload, get_workload, techniques_of
from rea_autoint import SCHEMA, WORKLOAD
from rea_workload.schema import SCHEMA as RANKER_SCHEMA

SMALL = "synthetic:rows=2000"


def run_job(tmp_path: Path, job: JobInput, fault: str | None = None) -> tuple[int, JobOutput]:
    job_file, result_file = tmp_path / "job.json", tmp_path / "out" / "result.json"
    job_file.write_text(job.model_dump_json())
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    if fault:
        env[FAULT_ENV] = fault
    argv = [*WORKLOAD.command(), "--job", str(job_file), "--output", str(result_file)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    return done.returncode, JobOutput.model_validate_json(result_file.read_text())


def test_it_is_registered_as_a_workload_with_its_own_knob_names() -> None:
    assert get_workload("autoint") is WORKLOAD and isinstance(WORKLOAD, Workload)
    assert not set(SCHEMA.names()) & set(RANKER_SCHEMA.names())
    roles = SCHEMA.roles()
    for role in (Role.LEARNING_RATE, Role.BATCH_SIZE, Role.EPOCHS, Role.DATA_FRACTION, Role.GRAD_CLIP):
        assert role in roles
    assert len([k for k in SCHEMA.knobs if k.role is None]) >= 2
    assert all(k.technique for k in SCHEMA.knobs)
    assert WORKLOAD.dataset_error(WORKLOAD.example_dataset) is None


def test_its_techniques_bind_to_the_baseline() -> None:
    techniques: tuple[Technique, ...] = techniques_of(WORKLOAD)
    assert techniques and all(t.citation for t in techniques)
    baseline = SCHEMA.defaults()
    for technique in techniques:
        changes = technique.bind(SCHEMA, baseline)
        assert changes and not SCHEMA.errors(changes)


def test_importing_it_does_not_import_torch() -> None:
    code = "import sys, rea_autoint; rea_autoint.SCHEMA.defaults(); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_job_writes_metrics_history_cost_and_footprint(tmp_path: Path) -> None:
    code, out = run_job(tmp_path, JobInput(job_id="a1", dataset=SMALL, config={"passes": 1}))
    assert code == 0 and out.status == "ok" and out.error is None
    assert out.train and out.validation and out.test and 0 < out.test.ne < 1.2 and out.test.rows == 200
    assert [h.epoch for h in out.history] == [1] and out.history[0].val_ne == out.validation.ne
    assert out.samples_per_second and out.samples_per_second > 0 and out.parameters
    assert out.cost and out.cost.cpu_seconds > 0 and out.cost.peak_rss_mb > 0
    assert out.footprint and out.footprint.parameters == out.parameters
    assert out.footprint.inference_ms_per_1k_rows > 0


@pytest.mark.parametrize(("fault", "exit_code", "kind"), [("oom", 3, "oom"), ("nan", 0, "nan")])
def test_an_injected_fault_fails_through_the_real_path(
    tmp_path: Path, fault: str, exit_code: int, kind: str
) -> None:
    code, out = run_job(tmp_path, JobInput(job_id="a2", dataset=SMALL, config={"passes": 1}), fault)
    assert code == exit_code and out.status == "failed" and out.error and out.error.kind == kind
    assert out.cost is not None


def test_an_invalid_config_fails_fast_with_exit_2(tmp_path: Path) -> None:
    job = JobInput(job_id="a3", dataset=SMALL, config={"attn_heads": 99, "learning_rate": 0.1})
    code, out = run_job(tmp_path, job)
    assert code == 2 and out.status == "failed" and out.error and out.error.kind == "invalid_config"
    assert "attn_heads=99" in out.error.message and "unknown knob 'learning_rate'" in out.error.message
