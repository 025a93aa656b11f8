"""`rea kernels bench` on this CPU at a size that fits CI: a search per operator, its table, and
with `--llm` the kernels a (local, OpenAI-compatible) model writes set beside the templates'."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from rea_bench import kernels
from rea_bench.inference import main as inference
from rea_bench.kernels import main
from rea_bench.sandbox_start import main as sandbox_start
from rea_kernel.evaluator import EvaluationError
from rea_kernel.targets import get_target
from rea_kernel.tuning import TuningOutcome

from ..llm_server import llm_server

CPU = get_target("cpu")
TEMPLATE = CPU.render("layer_norm", CPU.default_params("layer_norm")).sources
WRITTEN = {
    "kernels": [
        {
            "idea": "the template, reworded",
            "files": TEMPLATE | {"kernel.cpp": "// reworded\n" + TEMPLATE["kernel.cpp"]},
        },
        {"idea": "not C++", "files": TEMPLATE | {"kernel.cpp": "this is not C++"}},
    ]
}
SMALL = ["--ops", "layer_norm", "--budget", "1", "--compare-seeds", "0", "--no-inference"]
SMALL += ["--repeats", "2", "--rounds", "1", "--flush-mb", "8", "--memory-gb", "4"]


def test_llm_without_an_endpoint_is_refused_with_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REA_LLM_BASE_URL", raising=False)
    with pytest.raises(SystemExit, match="REA_LLM_BASE_URL"):
        main([*SMALL, "--llm", "2"])


@pytest.mark.skipif(CPU.unavailable() is not None, reason=str(CPU.unavailable()))
def test_the_bench_sets_written_kernels_beside_the_templates(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with llm_server(json.dumps(WRITTEN)) as server:
        monkeypatch.setenv("REA_LLM_BASE_URL", server.url)
        monkeypatch.setenv("REA_KERNEL_LLM_MODEL", "local")
        main([*SMALL, "--llm", "2", "--json", str(tmp_path / "bench.json")])
    shown = capsys.readouterr().out
    assert "kernels written by llm:local (2 per operator)" in shown
    assert "1 of 2" in shown  # the reworded template passed, the broken one did not
    [operator] = json.loads((tmp_path / "bench.json").read_text())["operators"]
    assert operator["operator"] == "layer_norm" and operator["final"]["verdict"] == "passed"
    assert operator["best"]["author"] in ("template", "llm:local")
    assert operator["synthesis_dropped"] == []  # both parsed; the broken one failed in evaluation


def test_an_unknown_operator_to_compare_on_is_refused_with_the_known_ones() -> None:
    with pytest.raises(SystemExit, match=r"no 'softmax' .*layer_norm"):
        main([*SMALL[:4], "--compare-op", "softmax", "--compare-seeds", "1"])


@pytest.mark.skipif(CPU.unavailable() is not None, reason=str(CPU.unavailable()))
def test_the_search_comparison_runs_on_the_operator_asked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    compare = ["--compare-op", "bce_with_logits", "--compare-budget", "2", "--compare-seeds", "1"]
    compare += ["--compare-from", "random"]
    main([*SMALL[:4], *SMALL[6:], *compare, "--settle", "0", "0", "--json", str(tmp_path / "bench.json")])
    shown = (
        "bce_with_logits: MCTS + evolution vs random search, 2 evaluations each, from a point drawn per seed"
    )
    assert shown in capsys.readouterr().out.replace("\n", " ")
    comparison = json.loads((tmp_path / "bench.json").read_text())["comparison"]
    assert comparison["operator"] == "bce_with_logits" and comparison["from"] == "random"
    [seed] = comparison["seeds"]
    [start] = seed["start"]
    for method in ("mcts_evolution", "random"):
        evaluations = seed[method]["evaluations"]
        assert len(evaluations) == 2 and any(e["cost"] is not None for e in evaluations), evaluations
        assert evaluations[0]["point"] == start and evaluations[0]["proposer"] == "initial"


@pytest.mark.skipif(CPU.unavailable() is not None, reason=str(CPU.unavailable()))
def test_the_gather_floor_is_measured_beside_the_lookups_peers(capsys: pytest.CaptureFixture[str]) -> None:
    from rea_bench.gather_ceiling import DISTANCES
    from rea_bench.gather_ceiling import main as gather_ceiling

    tiny = ["--tables", "3", "--rows", "500", "--dim", "8", "--batch", "64", "--max-bag", "6"]
    gather_ceiling([*tiny, "--repeats", "3", "--flush-mb", "4"])
    out = capsys.readouterr().out
    assert all(f"gather floor, prefetch {distance or 'off'}" in out for distance in DISTANCES)
    assert "torch.compile" in out and "default cpu kernel" in out
    assert "1.00x" in out  # the fastest gather is the floor itself


@pytest.mark.skipif(CPU.unavailable() is not None, reason=str(CPU.unavailable()))
def test_an_operator_the_harness_fails_on_is_named_and_the_others_are_measured(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real_tune = kernels.tune

    def tune(operator: str, *args: object, **kwargs: object) -> TuningOutcome:
        if operator == "layer_norm":
            raise EvaluationError("timing the reference of layer_norm failed: index is on cuda:0")
        return real_tune(operator, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(kernels, "tune", tune)
    report = tmp_path / "bench.json"
    main([*SMALL[2:], "--ops", "layer_norm", "bce_with_logits", "--json", str(report)])
    result = json.loads(report.read_text())
    assert [o["operator"] for o in result["operators"]] == ["bce_with_logits"]
    [failed] = result["not_measured"]
    assert failed["operator"] == "layer_norm" and "index is on cuda:0" in failed["reason"]
    shown = capsys.readouterr().out
    assert "layer_norm: failed: timing the reference" in shown.replace("\n", " ")


def test_no_search_starts_after_the_time_limit(tmp_path: Path) -> None:
    report = tmp_path / "bench.json"
    main([*SMALL[2:], "--ops", "layer_norm", "bce_with_logits", "--time-limit", "0", "--json", str(report)])
    result = json.loads(report.read_text())
    assert result["operators"] == []
    assert [(o["operator"], o["reason"]) for o in result["not_measured"]] == [
        (name, "not searched: the 0 s time limit was spent") for name in ("layer_norm", "bce_with_logits")
    ]


def test_the_ranker_is_timed_end_to_end_when_no_search_had_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "inference.json"
    small = ["--rows", "512", "--batch", "256", "--cardinality", "300", "--rounds", "1", "--no-compile"]
    small += ["--train-batch", "128", "--train-steps", "2", "--search-time-limit", "0"]
    inference([*small, "--json", str(report)])
    result = json.loads(report.read_text())
    assert result["rows"] == 512 and result["max_abs_difference"]["registry kernels"] == 0.0
    assert {row["operator"] for row in result["searched"]} >= {"embedding_bag_pooled", "dcn_cross"}
    assert all(row["error"].startswith("not searched") for row in result["searched"])
    assert all(use["kernel"] is None for use in result["kernels"])  # PyTorch ran every call
    trained = {"eager", "kernels", "eager, sparse tables", "kernels, sparse tables"}
    assert set(result["training_seconds"]) == trained
    assert "no kernel for dcn_cross" in capsys.readouterr().out


def test_the_gpu_script_refuses_an_unknown_step_and_a_folder_without_wheels(tmp_path: Path) -> None:
    """`benchmarks/gpu.sh` runs where no package index is: without its wheels it says how to get
    them instead of failing half-way (its steps run end to end only with a GPU, or by hand with
    TARGET=cpu)."""
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.sh"
    unknown = subprocess.run(["bash", str(script), "nonsense"], capture_output=True, text=True, check=False)
    assert unknown.returncode == 2 and "unknown step nonsense" in unknown.stderr
    (tmp_path / "empty").mkdir()
    command = ["bash", str(script), "kernels", str(tmp_path / "out"), str(tmp_path / "empty")]
    missing = subprocess.run(command, capture_output=True, text=True, check=False)
    assert missing.returncode == 2 and "run 'benchmarks/gpu.sh wheels'" in missing.stdout.replace(
        str(script), "benchmarks/gpu.sh"
    )


def test_the_sandbox_start_benchmark_times_both_ways_of_starting(capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m rea_bench.sandbox_start`, at its smallest: every row has both ways' times."""
    sandbox_start(["--starts", "1", "--repeats", "1", "--ops"])
    printed = capsys.readouterr().out
    for work in ("a harness process, start to exit", "a small evaluation, build cached"):
        assert re.search(rf"{work}\W+[\d.]+ m?s\W+[\d.]+ m?s\W+[\d.]+x", printed), printed
