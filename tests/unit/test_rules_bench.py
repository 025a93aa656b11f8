"""`python -m rea_bench.rules`: the points a template's rules choose between, timed on shapes the
rules were not fitted on, and the verdict on each shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rea_bench.rules import HELD_OUT, grid_shapes, judge, main, parse_grid, rule_points
from rea_kernel.targets import get_target

CPU = get_target("cpu")


def test_the_grid_is_every_combination_of_its_values_in_order() -> None:
    grid = {"batch": (1, 2), "out_features": (3, 4, 5)}

    shapes = grid_shapes(grid)

    assert len(shapes) == 6
    assert shapes[0] == {"batch": 1, "out_features": 3} and shapes[-1] == {"batch": 2, "out_features": 5}


def test_a_grid_given_on_the_command_line_replaces_only_the_fields_it_names() -> None:
    grid = parse_grid(["out_features=1,16", "activation=relu"], HELD_OUT["linear_bias_act"])

    assert grid["out_features"] == (1, 16) and grid["activation"] == ("relu",)
    assert grid["batch"] == HELD_OUT["linear_bias_act"]["batch"]
    with pytest.raises(SystemExit, match="field=value"):
        parse_grid(["out_features"], {})


def test_the_points_are_the_default_then_each_distinct_pick_of_the_rules() -> None:
    shapes = grid_shapes(HELD_OUT["linear_bias_act"])

    points = rule_points(CPU, "linear_bias_act", shapes)

    assert points[0] == CPU.default_params("linear_bias_act")
    assert points[1:] == [{**points[0], "loop_order": "dot"}]  # one rule, one other point
    assert rule_points(CPU, "layer_norm", [{"rows": 8, "features": 4}]) == [CPU.default_params("layer_norm")]


def test_a_pick_within_the_tolerance_of_the_fastest_is_right() -> None:
    assert judge([1.0, 2.0], picked=1, tolerance=0.1) == {"best": 1, "kept": 1.0, "right": True}
    assert judge([1.95, 2.0], picked=0, tolerance=0.1)["right"] is True
    wrong = judge([1.0, 2.0], picked=0, tolerance=0.1)
    assert wrong["right"] is False and wrong["kept"] == pytest.approx(0.5)


def test_held_out_shapes_are_none_the_thresholds_were_measured_on() -> None:
    measured = {(8192, 256), (2048, 256)}
    for grid in HELD_OUT.values():
        assert not any((shape["batch"], shape["in_features"]) in measured for shape in grid_shapes(grid))


@pytest.mark.skipif(CPU.unavailable() is not None, reason=str(CPU.unavailable()))
def test_each_point_is_evaluated_on_each_shape_and_the_rules_pick_is_judged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small = ["--operator", "linear_bias_act", "--grid", "batch=64", "--grid", "in_features=16"]
    small += ["--grid", "out_features=1,24", "--timed-runs", "2", "--json", str(tmp_path / "rules.json")]

    main(small)

    out = capsys.readouterr().out
    assert "linear_bias_act: speedup over eager of each point the rule chooses between" in out
    assert "the rule's pick within 10% of the fastest on" in out and "the default on every shape" in out
    assert "of its misses where the fastest beats eager" in out
    rows = json.loads((tmp_path / "rules.json").read_text())["rows"]
    assert [row["shape"]["out_features"] for row in rows] == [1, 24]
    assert all(row["points"] == ["default", "loop_order=dot"] for row in rows)
    assert [row["picked"] for row in rows] == [1, 0]  # a one-column head is ruled, 24 columns not
    for row in rows:
        assert all(speedup > 0 for speedup in row["speedups"]), row
        assert row["right"] == (row["kept"] >= 0.9)
