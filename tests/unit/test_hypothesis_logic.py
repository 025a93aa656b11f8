"""Hypothesis generation from the catalogue against the ranker's knob schema."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest

from rea.events import HypothesesGenerated, HypothesesRequested, HypothesesRequestedPayload
from rea.knobs import Knob, KnobSchema, Role
from rea.techniques import Technique
from rea.workloads import get_workload
from rea_hypothesis.catalogue import CATALOGUE, SIGNALS
from rea_hypothesis.derived import DERIVED_PRIOR
from rea_hypothesis.logic import HypothesisSet, from_catalogue, on_hypotheses_requested

SCHEMA = get_workload("ranker").schema
DEFAULTS = SCHEMA.defaults()


def supported(technique: Technique, baseline: dict[str, Any]) -> bool:
    try:
        changes = technique.bind(SCHEMA, baseline)
    except (KeyError, ValueError):
        return False
    return not SCHEMA.errors(changes)


def test_catalogue_ids_are_unique_and_entries_complete() -> None:
    ids = [t.id for t in CATALOGUE]
    assert len(ids) == len(set(ids))
    assert len(CATALOGUE) >= 15
    for t in CATALOGUE:
        assert t.title and t.technique and t.helps_when and t.citation
        assert re.search(r"\((19|20)\d\d\)", t.citation), f"{t.id}: cite the paper's title and year"
        assert 0 < t.prior_gain < 0.1
        assert t.signals and t.signals <= SIGNALS.keys(), t.id


def test_every_supported_technique_yields_a_schema_valid_hypothesis() -> None:
    hypotheses, skipped = from_catalogue(SCHEMA, DEFAULTS, limit=len(CATALOGUE))
    by_id = {h.id: h for h in hypotheses}
    expected = [t for t in CATALOGUE if supported(t, DEFAULTS)]
    assert len(expected) >= len(CATALOGUE) - 2  # the ranker is the catalogue's reference workload
    assert set(by_id) == {t.id for t in expected}
    assert {line.split(":")[0] for line in skipped} == {t.id for t in CATALOGUE} - set(by_id)
    for technique in expected:
        h = by_id[technique.id]
        assert SCHEMA.errors(h.changes) == []
        config = SCHEMA.resolve(h.changes, base=DEFAULTS)
        assert config != DEFAULTS, f"{h.id} changes nothing"
        assert h.source == "catalogue"
        assert h.technique == technique.technique
        assert h.expected_gain == technique.prior_gain
        assert h.rationale.startswith("Helps when ")


def test_changes_are_relative_to_the_baseline_and_coerced() -> None:
    baseline = {**DEFAULTS, "embedding_dim": 12, "learning_rate": 0.002, "mlp_width": 40}
    hypotheses, _ = from_catalogue(SCHEMA, baseline, limit=100)
    by_id = {h.id: h for h in hypotheses}
    assert by_id["embedding_dim_2x"].changes == {"embedding_dim": 24}
    assert type(by_id["embedding_dim_2x"].changes["embedding_dim"]) is int
    assert by_id["learning_rate_3x"].changes["learning_rate"] == pytest.approx(0.006)
    assert by_id["wider_mlp"].changes == {"mlp_width": 80}
    assert by_id["adagrad"].changes == {"optimizer": "adagrad", "learning_rate": pytest.approx(0.02)}


def test_techniques_already_in_the_baseline_are_skipped() -> None:
    baseline = {
        **DEFAULTS,
        "fm": True,
        "dropout": 0.2,
        "layer_norm": True,
        "lr_schedule": "warmup_cosine",
        "cross_layers": 2,
        "cross_rank": 16,
    }
    hypotheses, skipped = from_catalogue(SCHEMA, baseline, limit=100)
    ids = {h.id for h in hypotheses}
    for already in ("fm", "dropout", "layer_norm", "cosine_schedule", "dcn_v2_low_rank"):
        assert already not in ids
        assert f"{already}: the baseline already has it" in skipped
    # dcn_v2 (full rank) differs from a low-rank baseline, so it stays
    assert "dcn_v2" in ids


def test_a_change_beyond_a_knobs_range_is_clamped_to_it() -> None:
    baseline = {**DEFAULTS, "embedding_dim": 64, "learning_rate": 0.03}
    hypotheses, skipped = from_catalogue(SCHEMA, baseline, limit=100)
    by_id = {h.id: h for h in hypotheses}
    assert "embedding_dim_2x" not in by_id  # already at the ceiling: nothing to change
    assert "embedding_dim_2x: the baseline already has it" in skipped
    assert by_id["learning_rate_3x"].changes == {"learning_rate": 0.05}  # as high as the knob allows
    assert by_id["adagrad"].changes == {"optimizer": "adagrad", "learning_rate": 0.05}


def test_values_the_schema_refuses_are_skipped_with_the_reason() -> None:
    bad = Technique("bad", "bad", "x", lambda b: {Role.OPTIMIZER: "lion"}, "never", 0.01, "Nobody (2020)")
    _, skipped = from_catalogue(SCHEMA, DEFAULTS, limit=100, catalogue=(bad,))
    assert skipped == ["bad: optimizer must be one of ['adam', 'adamw', 'adagrad', 'sgd'], got 'lion'"]


def test_techniques_bind_to_roles_whatever_the_knobs_are_called() -> None:
    tiny = KnobSchema(
        knobs=[
            Knob(name="pairwise", role=Role.FM_TERM, type="bool", default=False),
            Knob(name="drop_p", role=Role.DROPOUT, type="float", low=0, high=0.5, default=0.0),
            Knob(name="pool", type="categorical", choices=["sum", "mean", "max"], default="sum"),
        ]
    )
    hypotheses, skipped = from_catalogue(tiny, tiny.defaults(), limit=100)
    by_id = {h.id: h for h in hypotheses}
    assert by_id["fm"].changes == {"pairwise": True} and by_id["fm"].source == "catalogue"
    assert by_id["dropout"].changes == {"drop_p": 0.2}
    assert "embedding_dim_2x: the workload declares no knob for embedding_dim" in skipped
    assert "dcn_v2: the workload declares no knob for cross_layers" in skipped
    assert len(skipped) == len(CATALOGUE) - 2
    # The knob no technique covers gets plain moves, ranked after every cited technique.
    derived = [h for h in hypotheses if h.source == "schema"]
    assert [h.changes for h in derived] == [{"pool": "mean"}, {"pool": "max"}]
    assert hypotheses[-2:] == derived
    assert all(h.expected_gain <= DERIVED_PRIOR < min(t.prior_gain for t in CATALOGUE) for h in derived)


def test_a_workload_ships_its_own_techniques() -> None:
    tiny = KnobSchema(
        knobs=[
            Knob(name="residual", type="bool", default=False),
            Knob(
                name="step", role=Role.LEARNING_RATE, type="float", low=1e-4, high=0.1, log=True, default=1e-3
            ),
        ]
    )
    own = Technique(
        "residual",
        "Residual attention",
        "autoint",
        lambda b: {"residual": True},
        "deep stacks",
        0.004,
        "X (2019)",
    )
    hypotheses, _ = from_catalogue(tiny, tiny.defaults(), limit=100, own=(own,))
    by_id = {h.id: h for h in hypotheses}
    assert by_id["residual"].source == "workload" and by_id["residual"].changes == {"residual": True}
    assert by_id["learning_rate_3x"].changes == {"step": pytest.approx(0.003)}
    assert not any(h.source == "schema" for h in hypotheses)  # every knob is covered


@pytest.mark.parametrize("limit", [1, 3, 5])
def test_limit_keeps_the_best_priors(limit: int) -> None:
    everything, _ = from_catalogue(SCHEMA, DEFAULTS, limit=100)
    limited, _ = from_catalogue(SCHEMA, DEFAULTS, limit=limit)
    assert len(limited) == limit
    assert limited == everything[:limit]


def test_hypotheses_are_ordered_by_prior_gain_ties_in_catalogue_order() -> None:
    hypotheses, _ = from_catalogue(SCHEMA, DEFAULTS, limit=100)
    gains = [h.expected_gain for h in hypotheses]
    assert gains == sorted(gains, reverse=True)
    assert hypotheses[0].id == max(CATALOGUE, key=lambda t: t.prior_gain).id
    order = [t.id for t in CATALOGUE]
    for a, b in itertools.pairwise(hypotheses):
        if a.expected_gain == b.expected_gain:
            assert order.index(a.id) < order.index(b.id)


def test_custom_catalogue_order_follows_priors_not_declaration() -> None:
    low = Technique("low", "low", "fm", lambda b: {Role.FM_TERM: True}, "x", 0.001, "cite-low")
    high = Technique("high", "high", "dropout", lambda b: {"dropout": 0.1}, "y", 0.02, "cite-high")
    hypotheses, _ = from_catalogue(SCHEMA, DEFAULTS, limit=10, catalogue=(low, high))
    cited = [(h.id, h.citation) for h in hypotheses if h.source == "catalogue"]
    assert cited == [("high", "cite-high"), ("low", "cite-low")]
    assert hypotheses[:2] == [h for h in hypotheses if h.source == "catalogue"]


def test_every_hypothesis_cites_its_source() -> None:
    hypotheses, _ = from_catalogue(SCHEMA, DEFAULTS, limit=100)
    citations = {t.id: t.citation for t in CATALOGUE}
    assert hypotheses
    for h in hypotheses:
        assert h.citation == citations[h.id]
        assert len(h.citation) > 10


def requested(max_hypotheses: int = 3) -> HypothesesRequested:
    return HypothesesRequested(
        campaign_id="camp-1",
        correlation_id="corr-1",
        payload=HypothesesRequestedPayload(
            workload="ranker", dataset="movielens-100k", baseline=DEFAULTS, max_hypotheses=max_hypotheses
        ),
    )


def test_request_generates_and_remembers_the_answer() -> None:
    decision = on_hypotheses_requested(None, requested(3))
    assert decision.state is not None
    [answer] = decision.emit
    assert isinstance(answer, HypothesesGenerated)
    assert (answer.campaign_id, answer.correlation_id) == ("camp-1", "corr-1")
    assert answer.payload.hypotheses == decision.state.hypotheses
    assert len(answer.payload.hypotheses) == 3


def test_repeated_request_gets_the_same_answer_from_state() -> None:
    remembered = HypothesisSet(
        campaign_id="camp-1", hypotheses=from_catalogue(SCHEMA, DEFAULTS, 1)[0], skipped=[]
    )
    decision = on_hypotheses_requested(remembered, requested(5))
    [answer] = decision.emit
    assert isinstance(answer, HypothesesGenerated)
    assert answer.payload.hypotheses == remembered.hypotheses  # not regenerated with the new limit
