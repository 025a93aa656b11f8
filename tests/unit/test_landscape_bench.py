"""`python -m rea_bench.landscape` on saved comparisons written here: the measurements are read
(other operators' and failed ones left out), the fit orders the grid as they did, its noise is
their spread, and every search is judged."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping
from pathlib import Path

import pytest

from rea_bench.landscape import SEARCHES, Landscape, main, measured
from rea_kernel.search import SearchSpace
from rea_kernel.targets import get_target

SPACE = SearchSpace(get_target("cpu").search_space("linear_bias_act"))


def true_cost(point: Mapping[str, object]) -> float:
    """Loop order decides most, threads a little, as on a CPU."""
    return {"dot": 8.0, "axpy": 4.0, "packed": 1.0}[str(point["loop_order"])] * (
        1.0 if point["threads"] in (0, 2) else 1.5
    )


def saved_comparison(path: Path, operator: str, seed: int, noise: float) -> None:
    rng = random.Random(seed)
    points = SPACE.draw(60, rng)

    def evaluation(point: Mapping[str, object], index: int) -> dict[str, object]:
        cost = None if index % 10 == 9 else true_cost(point) * math.exp(rng.gauss(0.0, noise))
        return {"point": point, "cost": cost, "proposer": "random"}

    trace = {
        "method": "random",
        "budget": 60,
        "evaluations": [evaluation(p, i) for i, p in enumerate(points)],
    }
    # the first 20 points measured a second time, by the other search
    again = {**trace, "method": "mcts_evolution", "evaluations": [evaluation(p, 0) for p in points[:20]]}
    seeds = [{"seed": seed, "mcts_evolution": again, "random": trace}]
    path.write_text(json.dumps({"comparison": {"operator": operator, "budget": 60, "seeds": seeds}}))


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    for seed in range(3):
        saved_comparison(tmp_path / f"linear-{seed}.json", "linear_bias_act", seed, noise=0.1)
    saved_comparison(tmp_path / "other.json", "layer_norm", 9, noise=0.1)
    return tmp_path


def test_the_fit_orders_the_grid_as_the_measurements_did_and_takes_their_noise(saved: Path) -> None:
    costs = measured(sorted(saved.glob("*.json")), "linear_bias_act", SPACE)
    assert 100 < len(costs) <= 180  # 3 x 60 drawn, failures (every tenth) left out
    assert all(value > 0 for values in costs.values() for value in values)
    landscape = Landscape(SPACE, costs)
    assert 0.05 < landscape.noise < 0.15
    fitted: dict[str, list[float]] = {order: [] for order in ("dot", "axpy", "packed")}
    for point in SPACE.draw(500, random.Random(0)):
        fitted[str(point["loop_order"])].append(landscape.cost(point))
    means = {order: sum(values) / len(values) for order, values in fitted.items()}
    assert means["packed"] < means["axpy"] < means["dot"], means
    assert landscape.optimum == pytest.approx(1.0, rel=0.25)


def test_every_search_is_judged_against_random_search(
    saved: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main([str(saved / "linear-*.json"), "--seeds", "2", "--budget", "12"])
    out = capsys.readouterr().out
    assert "measured points=" in out and "fit R²" in out
    for name in SEARCHES:
        assert name.split(",")[0] in out
    assert "within 6 evaluations" in out


def test_too_few_measurements_are_refused(tmp_path: Path) -> None:
    saved_comparison(tmp_path / "other.json", "layer_norm", 1, noise=0.1)
    with pytest.raises(SystemExit, match="too few to fit"):
        main([str(tmp_path / "*.json")])
