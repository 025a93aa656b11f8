"""``rea workloads check``: the reference ``ranker`` passes (one real short job), a deliberately
broken workload is told what is wrong and how to fix it, and the CLI lists and exits as documented."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import rea_executor.runner as runner
from rea.knobs import Knob, KnobSchema, Role
from rea.techniques import Technique
from rea.workloads import Workload, get_workload
from rea_tools import cli
from rea_tools.workload_check import (
    Check,
    check_dataset_files,
    check_roles,
    check_techniques,
    check_workload,
    run_checks,
    short_config,
)


def lr_tweak(_: Any) -> dict[Role | str, Any]:
    return {Role.LEARNING_RATE: 0.01}


def uses_missing_knob(_: Any) -> dict[Role | str, Any]:
    return {"warmup_steps": 100}


SCHEMA = KnobSchema(
    knobs=[
        Knob(name="lr", role=Role.LEARNING_RATE, type="float", low=1e-4, high=0.1, log=True, default=1e-3),
        Knob(name="passes", role=Role.EPOCHS, type="int", low=1, high=10, default=4),
        Knob(name="towers", type="int", low=1, high=4, default=2),
    ]
)
TECHNIQUES = (
    Technique("hotter_lr", "Hotter learning rate", "learning_rate", lr_tweak, "", 0.01, "folklore"),
    Technique("warmup", "Warm up", "lr_schedule", uses_missing_knob, "", 0.01, "folklore"),
)


class BrokenWorkload:
    """No batch-size role, a technique naming a knob it lacks, and a trainer that crashes."""

    name = "broken"
    description = "a deliberately broken test double"
    schema = SCHEMA
    techniques = TECHNIQUES
    example_dataset = "tiny"

    def dataset_error(self, dataset: str) -> str | None:
        return None if dataset == "tiny" else f"unknown dataset {dataset!r}"

    def command(self) -> list[str]:
        crash = "import sys; sys.stderr.write('CUDA exploded (marker-5c1e)\\n'); sys.exit(4)"
        return [sys.executable, "-c", crash]

    def prepare(self, dataset: str) -> None:
        return None


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


def test_the_ranker_passes_with_one_real_short_job() -> None:
    checks = by_name(list(run_checks("ranker", dataset="synthetic:rows=2000")))
    failed = {name: check.message for name, check in checks.items() if check.status == "failed"}
    assert not failed
    assert checks["entry point"].status == "passed"
    assert "20 of 23 roles" in checks["roles"].message
    assert checks["job"].status == "passed"
    assert "epochs=1, data_fraction=0.1" in checks["job"].message
    assert checks["footprint"].status == "passed"
    assert checks["warm start"].status == "passed", checks["warm start"].message
    assert checks["warm start"].message.startswith("same metrics forked warm")


def test_a_missing_batch_size_role_warns_that_oom_recovery_degrades() -> None:
    checks = by_name(check_roles(SCHEMA))
    assert checks["roles"].status == "passed"
    warning = checks["role batch_size"]
    assert warning.status == "warned"
    assert "OOM recovery" in warning.message and "Role.BATCH_SIZE" in warning.message
    assert "role learning_rate" not in checks and "role epochs" not in checks
    assert checks["knobs without a role"].status == "warned"
    assert "towers" in checks["knobs without a role"].message


def test_a_role_whose_range_breaks_its_contract_fails() -> None:
    schema = KnobSchema(
        knobs=[Knob(name="lr", role=Role.LEARNING_RATE, type="float", low=0, high=1, default=0.1)]
    )
    contract = by_name(check_roles(schema))["role contracts"]
    assert contract.status == "failed"
    assert "lr plays learning_rate (float > 0)" in contract.message


def test_a_technique_naming_a_missing_knob_fails_naming_it() -> None:
    check = check_techniques(BrokenWorkload())
    assert check.status == "failed"
    assert "warmup needs knob 'warmup_steps'" in check.message
    assert "1 of 2" in check.message and "hotter_lr" not in check.message


def test_a_crashing_trainer_fails_the_job_check_with_its_stderr_tail(monkeypatch: pytest.MonkeyPatch) -> None:
    workload = BrokenWorkload()
    assert isinstance(workload, Workload)
    monkeypatch.setattr(runner, "get_workload", lambda name: workload)
    checks = by_name(list(check_workload(workload, "broken")))
    job = checks["job"]
    assert job.status == "failed"
    assert "exit code 4" in job.message and "marker-5c1e" in job.message
    assert "passes=1" in job.message
    assert "footprint" not in checks
    assert checks["dataset"].status == "passed" and "example dataset" not in checks
    assert (
        checks["dataset files"].status == "warned"
        and "declares no dataset_paths" in checks["dataset files"].message
    )


def test_files_outside_the_data_roots_are_named(tmp_path: Path) -> None:
    ranker = get_workload("ranker")
    data = tmp_path / "data"
    data.mkdir()
    inside = data / "day_0.tsv"
    inside.write_text("")
    assert check_dataset_files(ranker, f"criteo:{inside}", [data]).status == "passed"
    assert check_dataset_files(ranker, "synthetic:rows=100", []).status == "passed"
    outside = check_dataset_files(ranker, "criteo:/etc/passwd", [data])
    assert outside.status == "warned"
    assert (
        "'/etc/passwd' is outside the data roots" in outside.message and "REA_DATA_ROOTS" in outside.message
    )


def test_the_short_job_runs_the_fidelity_knobs_at_their_cheapest() -> None:
    fraction = Knob(name="share", role=Role.DATA_FRACTION, type="float", low=0.01, high=1.0, default=1.0)
    config = short_config(KnobSchema(knobs=[*SCHEMA.knobs, fraction]))
    assert config == {"lr": 1e-3, "passes": 1, "towers": 2, "share": 0.1}


def test_rea_workloads_lists_the_ranker() -> None:
    result = CliRunner().invoke(cli.app, ["workloads"])
    assert result.exit_code == 0, result.output
    assert "ranker" in result.output and "20 of 23" in result.output


def test_rea_workloads_check_of_an_unknown_workload_exits_2_naming_the_registered_ones() -> None:
    result = CliRunner().invoke(cli.app, ["workloads", "check", "nonesuch"])
    assert result.exit_code == 2
    assert "nonesuch" in result.output and "ranker" in result.output
