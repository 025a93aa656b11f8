"""Hostile dataset paths and workload names: a campaign reads only regular files under the
deployment's data roots, and runs only registered workloads, whatever it names."""

from __future__ import annotations

import os
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

from rea.datapaths import confinement_problem
from rea.events import CampaignRejected, CampaignRequested, JobSpec
from rea.settings import Settings
from rea.workloads import BrokenWorkload, get_workload
from rea_executor.runner import run_job
from rea_planner import logic
from rea_planner.campaign import validate_campaign

FOLLOW = {"campaign_id": "camp-1", "correlation_id": "corr-1"}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    made = tmp_path / "data"
    made.mkdir()
    (made / "day_0.tsv").write_text("1\t" + "\t".join(["0"] * 13 + ["a"] * 26) + "\n")
    return made


def request(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "hostile",
        "grant": "team-a",
        "dataset": "movielens-100k",
        "budget_cpu_seconds": 600,
    } | overrides


def hostile_paths(root: Path, tmp_path: Path) -> dict[str, tuple[str, str]]:
    """Name: (path as a campaign would write it, what the refusal must say)."""
    (root / "escape").symlink_to("/etc/passwd")
    (root / "loop").symlink_to(root / "loop")
    (root / "folder").mkdir()
    os.mkfifo(root / "pipe")
    outside = tmp_path / "secret.tsv"
    outside.write_text("1\t2\n")
    return {
        "relative": ("../../etc/passwd", "is relative"),
        "dot-dot": (f"{root}" + "/.." * 40 + "/etc/passwd", "outside the data roots"),
        "dot-dot to a sibling": (f"{root}/../secret.tsv", "outside the data roots"),
        "absolute elsewhere": ("/etc/passwd", "outside the data roots"),
        "symlink out": (f"{root}/escape", "outside the data roots"),
        "symlink loop": (f"{root}/loop", "no such file"),
        "device": ("/dev/zero", "is not a regular file"),
        "fifo": (f"{root}/pipe", "is not a regular file"),
        "directory": (f"{root}/folder", "is not a regular file"),
        "missing": (f"{root}/nope.tsv", "no such file"),
        "nul byte": (f"{root}/day_0.tsv\0.png", "NUL byte"),
    }


def test_a_regular_file_under_a_root_is_allowed(root: Path) -> None:
    assert confinement_problem(root / "day_0.tsv", [root]) is None
    assert confinement_problem(root / "." / "day_0.tsv", [root.parent / "data"]) is None


def test_every_way_out_of_the_roots_is_refused(root: Path, tmp_path: Path) -> None:
    roots = [root, Path("/dev")]  # /dev as a root still yields no device files
    for name, (path, says) in hostile_paths(root, tmp_path).items():
        problem = confinement_problem(Path(path), roots)
        assert problem is not None and says in problem, (name, problem)


def test_no_roots_allow_nothing(root: Path) -> None:
    problem = confinement_problem(root / "day_0.tsv", [])
    assert problem is not None and "none configured" in problem and "REA_DATA_ROOTS" in problem


def test_a_campaign_names_no_file_outside_the_roots(root: Path, tmp_path: Path) -> None:
    spec, reasons = validate_campaign(request(dataset=f"criteo:{root}/day_0.tsv"), data_roots=[root])
    assert reasons == [] and spec is not None
    for name, (path, says) in hostile_paths(root, tmp_path).items():
        if "\0" in path:
            continue  # a NUL byte cannot even reach a file name: the next test
        spec, reasons = validate_campaign(request(dataset=f"criteo:{path}"), data_roots=[root, Path("/dev")])
        assert spec is None, name
        assert reasons[0].startswith("dataset: ") and says in reasons[0], (name, reasons)
    spec, reasons = validate_campaign(
        request(dataset=f"parquet:{root}/escape?label=click"), data_roots=[root]
    )
    assert spec is None and "outside the data roots" in reasons[0]


def test_the_planner_rejects_with_the_reason(root: Path) -> None:
    event = CampaignRequested(
        campaign_id="camp-1", correlation_id="corr-1", payload=request(dataset="criteo:/etc/passwd")
    )
    decision = logic.on_campaign_requested(None, event, data_roots=[root])
    assert decision.state is not None and decision.state.status == "rejected"
    [rejected] = decision.emit
    assert isinstance(rejected, CampaignRejected)
    assert "'/etc/passwd' is outside the data roots" in rejected.payload.reasons[0]


def test_named_and_generated_data_need_no_root() -> None:
    for dataset in ("movielens-100k", "synthetic:rows=500", "adult", "imagenet"):
        problems = get_workload("ranker").dataset_error(dataset)
        spec, reasons = validate_campaign(request(dataset=dataset), data_roots=[])
        assert (spec is None) == (problems is not None), (dataset, reasons)


def test_the_default_root_is_the_homes_data_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REA_DATA_ROOTS", raising=False)
    assert Settings(home=tmp_path).allowed_data_roots() == [tmp_path.resolve() / "data"]
    monkeypatch.setenv("REA_DATA_ROOTS", f'["{tmp_path}/a", "{tmp_path}/b"]')
    assert Settings(home=tmp_path).allowed_data_roots() == [tmp_path / "a", tmp_path / "b"]


def test_the_job_side_checks_again_before_reading(root: Path) -> None:
    spec = JobSpec(
        job_id="job-1",
        campaign_id="camp-1",
        phase="validation",
        workload="ranker",
        dataset="criteo:/etc/passwd",
        config={},
        timeout_s=30,
        memory_mb=512,
    )
    output = run_job(spec, prepare=True, data_roots=[root])
    assert output.status == "failed" and output.error is not None
    assert output.error.kind == "invalid_config"
    assert "outside the data roots" in output.error.message


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("os:system", "not a Workload"),
        ("no_such_module_anywhere:WORKLOAD", "failed to load (ModuleNotFoundError"),
        ("rea_workload.workload:no_such_attribute", "failed to load (AttributeError"),
    ],
)
def test_a_broken_workload_entry_point_is_a_rejection_not_a_crash(
    value: str, says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    registered = {"broken": EntryPoint(name="broken", value=value, group="rea.workloads")}
    monkeypatch.setattr("rea.workloads._registered", lambda: registered)
    with pytest.raises(BrokenWorkload):
        get_workload("broken")
    event = CampaignRequested(
        campaign_id="camp-1", correlation_id="corr-1", payload=request(workload="broken")
    )
    decision = logic.on_campaign_requested(None, event, data_roots=[])
    assert decision.state is not None and decision.state.status == "rejected"
    [reason] = decision.state.reasons
    assert reason.startswith("workload 'broken' is registered but cannot be used") and says in reason


@pytest.mark.parametrize(
    "name", ["os:system", "../ranker", "ranker ", "rea_workload.workload:WORKLOAD", "sh -c id"]
)
def test_a_campaign_can_only_name_a_registered_workload(name: str) -> None:
    spec, reasons = validate_campaign(request(workload=name), data_roots=[])
    assert spec is None and reasons == [f"unknown workload {name!r}"]
