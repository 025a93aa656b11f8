"""Reading a baseline run's diagnostics, and re-ranking hypotheses by what it shows."""

from __future__ import annotations

from typing import Any

from rea.diagnostics import findings, rerank
from rea.events import Hypothesis
from rea.workloads import Diagnostics


def baseline_run(**overrides: Any) -> Diagnostics:
    made: dict[str, Any] = {
        "train_ne": 0.80,
        "validation_ne": 0.82,  # 2.4% above training: neither over- nor under-fitting
        "val_ne_by_epoch": [0.85, 0.821, 0.82],
        "train_loss_by_epoch": [0.6, 0.55, 0.54],
        "grad_norm_median": 0.2,
        "grad_norm_max": 0.5,
        "feature_importance": {"user": 0.1, "item": 0.002},
    }
    made.update(overrides)
    return Diagnostics(**made)


def signals(d: Diagnostics) -> list[str]:
    return [f.signal for f in findings(d)]


def test_a_healthy_run_shows_nothing() -> None:
    assert findings(baseline_run()) == []


def test_each_signal_is_found_with_its_evidence() -> None:
    assert signals(baseline_run(train_ne=0.70)) == ["overfitting"]
    assert signals(baseline_run(val_ne_by_epoch=[0.85, 0.80, 0.82])) == ["overfitting"]
    assert signals(baseline_run(train_ne=0.93, validation_ne=0.95)) == ["underfitting"]
    assert signals(baseline_run(val_ne_by_epoch=[0.9, 0.86, 0.82])) == ["slow_convergence"]
    assert signals(baseline_run(grad_norm_max=5.0)) == ["instability"]
    assert signals(baseline_run(train_loss_by_epoch=[0.6, 0.7, 0.5])) == ["instability"]
    assert signals(baseline_run(feature_importance={"a": 0.1, "b": 0.05, "c": 0.02, "d": 0.001})) == [
        "interactions"
    ]
    [found] = findings(baseline_run(train_ne=0.70))
    assert "validation NE 14.6% above training NE" in found.evidence


def test_two_pieces_of_evidence_for_one_signal_make_one_finding() -> None:
    [found] = findings(baseline_run(train_ne=0.70, val_ne_by_epoch=[0.85, 0.80, 0.82]))
    assert found.signal == "overfitting" and "; " in found.evidence


def hypothesis(hid: str, gain: float, *signals: str) -> Hypothesis:
    return Hypothesis(
        id=hid,
        title=hid,
        technique=hid,
        changes={},
        source="catalogue",
        rationale="r.",
        expected_gain=gain,
        signals=list(signals),
    )


def test_rerank_favours_what_addresses_a_finding_and_demotes_its_opposite() -> None:
    wider = hypothesis("wider", 0.010, "underfitting")
    dropout = hypothesis("dropout", 0.006, "overfitting")
    clip = hypothesis("clip", 0.008, "instability")
    ranked = rerank([wider, clip, dropout], findings(baseline_run(train_ne=0.70)))
    assert [h.id for h in ranked] == ["dropout", "clip", "wider"]
    by_id = {h.id: h for h in ranked}
    assert by_id["dropout"].expected_gain == 0.006 * 1.5 and by_id["dropout"].source == "diagnostics"
    assert "Baseline diagnostics: overfitting: validation NE" in by_id["dropout"].rationale
    assert by_id["wider"].expected_gain == 0.005 and "overfitting found" in by_id["wider"].rationale
    assert by_id["clip"] == clip  # untouched
    assert rerank([wider, clip], []) == [wider, clip]


def test_importances_too_small_to_mean_anything_point_nowhere() -> None:
    assert findings(baseline_run(feature_importance={"a": 0.001, "b": 0.0009, "c": 0.0008})) == []
