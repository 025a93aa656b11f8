"""The transfer runs: what a method learned on a teaching suite, carried to other cases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from rea.knobs import Role
from rea.workloads import get_workload
from rea_bench.bench import BenchPlan, BenchRun, carried, check_transfer, summarize, teach
from rea_bench.search import SearchOutcome, search_space
from rea_bench.suites import SUITES, BenchCase
from rea_bench.transfer import Lessons, taught, translated
from rea_tools import cli

RANKER = get_workload("ranker").schema
AUTOINT = get_workload("autoint").schema
ADULT = BenchCase("ranker", "adult")


def plan(tmp_path: Path, methods: list[str], **changes: Any) -> BenchPlan:
    return BenchPlan(cases=[ADULT], methods=methods, budget_cpu_seconds=300, seeds=1, out=tmp_path, **changes)


def test_a_config_carries_to_the_same_model_knob_by_knob() -> None:
    baseline = RANKER.resolve({})
    changes = {"learning_rate": 0.004, "fm": True, "optimizer": "adamw", "epochs": 9}
    space = set(search_space(RANKER))
    out = translated(changes, RANKER, RANKER, baseline, space)
    assert set(out) == space  # fidelity knobs stay the target's
    assert (out["learning_rate"], out["fm"], out["optimizer"]) == (0.004, True, "adamw")
    assert {k: v for k, v in out.items() if baseline[k] != v} == {
        "learning_rate": 0.004,
        "fm": True,
        "optimizer": "adamw",
    }


def test_a_config_carries_to_another_model_by_role_clamped_into_its_range() -> None:
    autoint = AUTOINT.resolve({})
    lr, batch = AUTOINT.roles()[Role.LEARNING_RATE], AUTOINT.roles()[Role.BATCH_SIZE]
    knob = AUTOINT[batch]
    assert knob.low is not None
    changes = {"learning_rate": 0.002, "batch_size": int(knob.low) - 1 if knob.low > 1 else 1}
    out = translated(changes, RANKER, AUTOINT, autoint, set(search_space(AUTOINT)))
    assert out[lr] == pytest.approx(0.002)
    assert out[batch] == int(knob.low)  # clamped into the target's range
    assert all(AUTOINT[name].check(value) is None for name, value in out.items())


def test_a_choice_the_target_does_not_offer_stays_at_its_baseline() -> None:
    autoint = AUTOINT.resolve({})
    optimizer = AUTOINT[AUTOINT.roles()[Role.OPTIMIZER]]
    assert optimizer.choices is not None and "adagrad" not in optimizer.choices
    out = translated({"optimizer": "adagrad"}, RANKER, AUTOINT, autoint, set(search_space(AUTOINT)))
    assert out[optimizer.name] == autoint[optimizer.name]


def test_transfer_methods_need_a_teaching_suite_that_shares_no_data_with_the_cases(tmp_path: Path) -> None:
    assert check_transfer(plan(tmp_path, ["rea", "optuna"])) == ()
    with pytest.raises(ValueError, match="--transfer-from"):
        check_transfer(plan(tmp_path, ["rea-transfer"]))
    with pytest.raises(ValueError, match="unknown teaching suite"):
        check_transfer(plan(tmp_path, ["rea-transfer"], transfer_from="prod"))
    with pytest.raises(ValueError, match="not a transfer"):
        check_transfer(plan(tmp_path, ["optuna-transfer"], transfer_from="eval"))
    assert check_transfer(plan(tmp_path, ["optuna-transfer"], transfer_from="dev")) == SUITES["dev"]


def test_an_optuna_transfer_run_enqueues_its_best_teaching_configs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Teaching runs one search per teaching case (the peer the method names); the transfer
    study then gets each best config, as configs of its own model."""
    import rea_bench.bench

    searched: list[tuple[str, str]] = []

    def fake_search(
        plan: BenchPlan, method: str, case: BenchCase, seed: int, baseline: dict[str, Any], *_: Any
    ):
        searched.append((method, case.label))
        return SearchOutcome({**baseline, "learning_rate": 0.005}, 0.5, 10.0, 3, 0, [])

    monkeypatch.setattr(rea_bench.bench, "peer_search", fake_search)
    bench = plan(tmp_path, ["optuna-gp-transfer"], transfer_from="dev")
    lessons = teach(bench, SUITES["dev"], 0, None, None, Console(quiet=True))  # type: ignore[arg-type]
    assert searched == [("optuna-gp", case.label) for case in SUITES["dev"]]
    assert [run["best_changes"] for run in lessons.runs] == [{"learning_rate": 0.005}] * 3
    baseline = RANKER.resolve({})
    configs = carried(lessons, "optuna-gp", ADULT, baseline)
    assert len(configs) == 3 and all(c["learning_rate"] == 0.005 for c in configs)
    assert carried(Lessons(0), "optuna", ADULT, baseline) == []
    assert taught("optuna-gp-transfer") == "optuna-gp"


def run(method: str, gain: float, at_half: float) -> BenchRun:
    return BenchRun(
        method=method, workload="adult", seed=0, baseline_test_ne=0.6, best_test_ne=0.6 * (1 - gain),
        gain=gain, budget_used_cpu_s=300, best_changes={}, trials=10, best_ne_by_seed=[0.59],
        baseline_ne_by_seed=[0.6], checkpoint_gain=at_half,
    )  # fmt: skip


def test_the_summary_says_whether_rea_at_half_the_budget_reaches_optuna_at_all_of_it() -> None:
    runs = [
        run("rea", 0.05, 0.02),
        run("rea-transfer", 0.05, 0.035),
        run("optuna", 0.03, 0.01),
        run("optuna-gp", 0.02, 0.02),
    ]
    summary = summarize(runs)
    assert summary["rea_at_0.5_reaches_optuna"] == {"ranker/adult": False}
    assert summary["rea-transfer_at_0.5_reaches_optuna"] == {"ranker/adult": True}


def test_bench_refuses_a_transfer_method_without_its_teaching_suite() -> None:
    args = [
        "bench",
        "--workload",
        "adult",
        "--methods",
        "rea-transfer",
        "--out",
        "/nonexistent/never-written",
    ]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 2 and "--transfer-from" in " ".join(result.output.split()), result.output
