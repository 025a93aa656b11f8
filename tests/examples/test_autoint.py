"""The AutoInt example workload: its schema is its own, its import is cheap, and its jobs keep
REA's job contract (results, exit codes, injected faults) through the real entrypoint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rea.knobs import Role
from rea.techniques import Technique
from rea.workloads import FAULT_ENV, JobInput, JobOutput, Workload, get_workload, parameters_of, techniques_of
from rea_autoint import SCHEMA, WORKLOAD, AutoIntConfig
from rea_autoint.model import AutoIntModel
from rea_autoint.workload import autoint_parameters
from rea_workload.datasets.data import CtrData, MultiValued
from rea_workload.datasets.loader import load_splits
from rea_workload.datasets.spec import FeatureSizes
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
    code = (
        "import sys, rea_autoint; rea_autoint.SCHEMA.defaults(); "
        "assert rea_autoint.WORKLOAD.parameters({}, 'synthetic') > 0; assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


ARCHITECTURES: list[dict[str, Any]] = [
    {},
    {"attn_blocks": 0},
    {"attn_blocks": 3, "attn_heads": 2, "residual": True, "field_dim": 32, "tower_units": 256},
    {"attn_blocks": 2, "attn_heads": 4, "field_dim": 4, "tower_units": 16},
]


def built(data: CtrData, config: dict[str, Any]) -> int:
    return sum(p.numel() for p in AutoIntModel(data, AutoIntConfig.from_overrides(config)).parameters())


@pytest.mark.parametrize("config", ARCHITECTURES)
def test_it_counts_the_parameters_of_the_model_a_config_builds(config: dict[str, Any]) -> None:
    dataset = "synthetic:rows=500,fields=6,cardinality=40"
    assert WORKLOAD.parameters(config, dataset) == built(load_splits(dataset).train, config)
    rows = 3
    mixed = CtrData(
        labels=np.array([0, 1, 0], dtype=np.float32),
        categorical=np.zeros((rows, 2), dtype=np.int64),
        categorical_names=["user", "item"],
        categorical_cardinalities=[30, 70],
        dense=np.zeros((rows, 3), dtype=np.float32),
        dense_names=["a", "b", "c"],
        multi=[MultiValued.from_lists([[1], [2, 3], []])],
        multi_names=["genres"],
        multi_cardinalities=[20],
    )
    sizes = FeatureSizes(categorical=(30, 70), multi=(20,), dense=3)
    assert autoint_parameters(sizes, AutoIntConfig.from_overrides(config)) == built(mixed, config)


def test_its_count_is_unknown_without_the_vocabularies_or_for_an_invalid_config() -> None:
    assert WORKLOAD.parameters({}, "movielens-100k") is None
    assert parameters_of(WORKLOAD, {"attn_heads": 99}, "synthetic") is None


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
