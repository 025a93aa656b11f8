"""Historical insights: the logger's per-family lessons, read back and used to rank hypotheses."""

from __future__ import annotations

import pytest

from rea.events import (
    CampaignCompleted,
    CampaignCompletedPayload,
    CampaignResult,
    HypothesesGenerated,
    HypothesesRequested,
    HypothesesRequestedPayload,
    JobCompleted,
    JobFinishedPayload,
    JobSpec,
    MetricSummary,
)
from rea.insights import EffectStats, History, PastWinner, family
from rea.store import Store
from rea.workloads import JobOutput, get_workload
from rea_hypothesis.logic import PAST_BEST_ID, from_catalogue, on_hypotheses_requested, with_history
from rea_hypothesis.service import load_history, past_diagnostics
from rea_logger.records import insight_updates, result_document

from .test_diagnostics import baseline_run

SCHEMA = get_workload("ranker").schema
BASELINE = SCHEMA.defaults()


def test_family_ignores_a_dataset_s_parameters() -> None:
    assert (
        family("ranker", "synthetic:rows=20000,crosses=2")
        == family("ranker", "synthetic:rows=500")
        == ("ranker/synthetic")
    )
    assert family("ranker", "movielens-100k") == "ranker/movielens-100k"


def test_effect_stats_and_shrinkage_toward_the_prior() -> None:
    single = EffectStats.of([0.03])
    assert (single.n, single.low, single.high) == (1, None, None)
    # One campaign's +3% against a +1% prior counting for two: (3 + 2) / 3 = +1.67%.
    assert single.shrunk(0.01) == pytest.approx(0.05 / 3)
    many = EffectStats.of([0.01, 0.02, 0.03])
    assert many.mean == pytest.approx(0.02)
    assert many.low is not None and many.high is not None
    # t(0.975, 2) = 4.303; sd 0.01 / sqrt(3): half-width 0.02484
    assert many.high - many.mean == pytest.approx(4.3027 * 0.01 / 3**0.5, rel=1e-3)
    assert "3 past campaign(s), mean gain +2.00%" in many.describe()


def test_history_reranks_drops_what_hurt_and_offers_the_past_best_first() -> None:
    hypotheses, _ = from_catalogue(SCHEMA, BASELINE, None)
    history = History(
        "ranker/synthetic",
        {
            "wider_mlp": EffectStats.of([0.08, 0.06]),  # prior 0.4%: now expected (14 + 0.8) / 4 = 3.7%
            "dcn_v2": EffectStats.of([-0.10]),  # prior 1.2%: (-10 + 2.4) / 3 < 0: left out
        },
        PastWinner("c-1", {"cross_layers": 3, "learning_rate": 0.004, "epochs": 9}, 0.05, "better"),
    )
    ranked, skipped = with_history(hypotheses, history, SCHEMA, BASELINE)
    assert [h.id for h in ranked[:2]] == [PAST_BEST_ID, "wider_mlp"]
    past = ranked[0]
    assert past.changes == {"cross_layers": 3, "learning_rate": 0.004}  # never a fidelity knob
    assert past.source == "history" and "c-1" in past.rationale
    wider = ranked[1]
    assert wider.source == "history" and wider.expected_gain == pytest.approx((0.14 + 2 * 0.004) / 4)
    assert "2 past campaign(s)" in wider.rationale
    assert "dcn_v2" not in {h.id for h in ranked}
    [hurt] = skipped
    assert hurt.startswith("dcn_v2: expected to hurt (History on ranker/synthetic: 1 past campaign(s)")
    assert "mean gain -10.00%" in hurt
    untouched = next(h for h in ranked if h.id == "fm")
    assert untouched.source == "catalogue"


def test_a_new_model_starts_from_what_other_models_taught() -> None:
    """No history on this family yet: the prior is pulled toward the other families' effects;
    with history of its own, that is shrunk toward the cross-family estimate in turn."""
    hypotheses, _ = from_catalogue(SCHEMA, BASELINE, None)
    elsewhere = {"dropout": EffectStats.of([0.03, 0.05])}  # prior 0.3%: (8 + 0.6) / 4 = 2.15%
    fresh = History("autoint/synthetic", {}, None, elsewhere)
    ranked, _ = with_history(hypotheses, fresh, SCHEMA, BASELINE)
    dropout = next(h for h in ranked if h.id == "dropout")
    assert dropout.expected_gain == pytest.approx((0.08 + 2 * 0.003) / 4)
    assert "on other models and data: 2 past campaign(s)" in dropout.rationale
    assert ranked[0].id == "dropout"  # it now outranks the catalogue's best prior (1.2%)

    own = History("autoint/synthetic", {"dropout": EffectStats.of([-0.01])}, None, elsewhere)
    ranked, _ = with_history(hypotheses, own, SCHEMA, BASELINE)
    dropout = next(h for h in ranked if h.id == "dropout")
    assert dropout.expected_gain == pytest.approx((-0.01 + 2 * (0.08 + 2 * 0.003) / 4) / 3)
    assert "on autoint/synthetic: 1 past campaign(s)" in dropout.rationale


def test_without_history_the_catalogue_order_stands() -> None:
    hypotheses, _ = from_catalogue(SCHEMA, BASELINE, None)
    assert with_history(hypotheses, History.empty(), SCHEMA, BASELINE) == (hypotheses, [])


def completed(campaign_id: str, effects: dict[str, float], changes: dict[str, object]) -> CampaignCompleted:
    summary = MetricSummary(job_id="j", ne=0.8, auc=0.7, validation_ne=0.8)
    result = CampaignResult(
        baseline=summary,
        best=summary,
        best_changes=changes,
        ne_delta=-0.01,
        ne_relative_gain=0.0125,
        auc_delta=0.0,
        jobs_completed=3,
        jobs_failed=0,
        compute_seconds=10.0,
        verdict="better",
        effects=effects,
    )
    return CampaignCompleted(
        campaign_id=campaign_id,
        correlation_id=campaign_id,
        payload=CampaignCompletedPayload(result=result, workload="ranker", dataset="synthetic:rows=3000"),
    )


async def test_what_the_logger_keeps_is_what_the_hypothesis_service_reads(store: Store) -> None:
    events = [
        completed("c-1", {"fm": 0.02, "dcn_v2": -0.01}, {"fm": True}),
        completed("c-2", {"fm": 0.04}, {"fm": True, "dropout": 0.1}),
    ]
    for event in [*events, events[0]]:  # a redelivery changes nothing
        for collection, key, update in insight_updates(event):
            await store.db[collection].update_one(key, update, upsert=True)

    history = await load_history(store.db, "ranker", "synthetic:rows=50000")

    assert history.family == "ranker/synthetic"
    assert history.effects["fm"].n == 2 and history.effects["fm"].mean == pytest.approx(0.03)
    assert history.effects["dcn_v2"].n == 1
    assert history.best is not None and history.best.changes in ({"fm": True}, {"fm": True, "dropout": 0.1})
    assert (await load_history(store.db, "ranker", "movielens-100k")).effects == {}

    request = HypothesesRequested(
        campaign_id="c-3",
        correlation_id="c-3",
        payload=HypothesesRequestedPayload(
            workload="ranker", dataset="synthetic:rows=50000", baseline=BASELINE, max_hypotheses=3
        ),
    )
    decision = on_hypotheses_requested(None, request, history)
    assert decision.state is not None
    assert [h.id for h in decision.state.hypotheses][:2] == [PAST_BEST_ID, "fm"]
    assert len(decision.state.hypotheses) == 3


async def test_a_past_run_of_the_same_baseline_ranks_the_hypotheses(store: Store) -> None:
    """The logger keeps a diagnosed baseline's diagnostics; the next campaign on the same
    baseline and data is ranked by them before any job runs (a different baseline is not)."""
    over = baseline_run(train_ne=0.6, validation_ne=0.8, val_ne_by_epoch=[0.801, 0.8])
    spec = JobSpec(
        job_id="old-baseline",
        campaign_id="c-0",
        phase="validation",
        workload="ranker",
        dataset="movielens-100k",
        config=BASELINE,
        diagnose=True,
        timeout_s=60,
        memory_mb=1000,
    )
    output = JobOutput(status="ok", diagnostics=over)
    done = JobCompleted(
        campaign_id="c-0",
        correlation_id="c-0",
        payload=JobFinishedPayload(spec=spec, output=output, worker="w-1"),
    )
    await store.results.insert_one(result_document(done))

    found = await past_diagnostics(store.db, "ranker", "movielens-100k", BASELINE)
    assert found == over
    assert await past_diagnostics(store.db, "ranker", "movielens-100k", {**BASELINE, "fm": True}) is None

    request = HypothesesRequested(
        campaign_id="c-1",
        correlation_id="c-1",
        payload=HypothesesRequestedPayload(
            workload="ranker", dataset="movielens-100k", baseline=BASELINE, max_hypotheses=19
        ),
    )
    plain = on_hypotheses_requested(None, request).emit[0]
    ranked = on_hypotheses_requested(None, request, diagnostics=found).emit[0]
    assert isinstance(plain, HypothesesGenerated) and isinstance(ranked, HypothesesGenerated)
    assert plain.payload.findings == [] and ranked.payload.findings[0].startswith("overfitting: ")
    first = ranked.payload.hypotheses[0]
    assert "overfitting" in first.signals and first.source == "diagnostics"
    assert [h.id for h in ranked.payload.hypotheses] != [h.id for h in plain.payload.hypotheses]
