"""The launch proposal renders from a campaign's state: its text and every plot it shows."""

from __future__ import annotations

import base64
import io
import re

import pytest
from matplotlib import image as mpimg

from rea.events import JobRecord
from rea.kernels import KernelUse
from rea.phases import kind
from rea.workloads import ModelFootprint
from rea_planner import logic
from rea_planner.jobs import still_dropped
from rea_planner.proposal import budget_spent, config_diff, kernel_note, render_proposal

from .test_planner_logic import (
    BASE_CONFIG,
    COSTS,
    concluded,
    confirmed,
    hypothesis,
    phase_records,
    planning,
    record,
    running,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def completed_campaign() -> logic.Campaign:
    tried = [
        hypothesis("fm", {"fm": True}).model_copy(update={"citation": "Rendle (2010)"}),
        hypothesis("dropout", {"dropout": 0.2}).model_copy(update={"citation": "Srivastava et al. (2014)"}),
        hypothesis("layer_norm", {"layer_norm": True}),
    ]
    start = running().model_copy(update={"hypotheses": tried})
    second = logic.on_phase_concluded(start, concluded(phase_records()), COSTS).state
    assert second is not None and second.phase == "validation-2"
    round_two = record(
        "j-ln", "layer_norm", {**BASE_CONFIG, "layer_norm": True}, 0.95, 0.95, phase="validation-2"
    )
    done_two = concluded([round_two], "validation-2")
    combining = logic.on_phase_concluded(second, done_two, COSTS).state
    assert combining is not None and combining.phase == "combination"
    assert [j.hypothesis_id for j in combining.rounds[-1].jobs] == ["fm+dropout"]
    pair = record(
        "j-pair", "fm+dropout", {**BASE_CONFIG, "fm": True, "dropout": 0.2}, 0.83, 0.86, phase="combination"
    )
    done_pair = concluded([pair], "combination")
    confirming = logic.on_phase_concluded(combining, done_pair, COSTS).state
    assert confirming is not None and confirming.phase == "confirmation"
    jobs = confirmed(base_nes=[0.91, 0.89], fm_nes=[0.84, 0.86])
    done = logic.on_phase_concluded(confirming, concluded(jobs, "confirmation"), COSTS).state
    assert done is not None and done.status == "completed"
    return done


def assert_png(data: bytes) -> None:
    assert data.startswith(PNG_SIGNATURE)
    pixels = mpimg.imread(io.BytesIO(data), format="png")
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100


def test_every_image_the_html_shows_is_inlined_as_a_valid_png() -> None:
    proposal = render_proposal(completed_campaign())
    sources = re.findall(r'<img [^>]*src="([^"]+)"', proposal.html)
    assert len(sources) == 3
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        assert_png(base64.b64decode(source.removeprefix("data:image/png;base64,")))


def test_every_image_the_markdown_references_comes_with_it() -> None:
    proposal = render_proposal(completed_campaign())
    referenced = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", proposal.markdown)
    assert sorted(referenced) == sorted(proposal.images)
    for data in proposal.images.values():
        assert_png(data)


def test_the_proposal_states_the_winner_its_interval_the_change_and_the_evidence() -> None:
    campaign = completed_campaign()
    proposal = render_proposal(campaign)
    text = proposal.markdown
    assert "fm: test NE 0.9000 -> 0.8500 (+5.56%) over 3 seed(s); 95% CI [" in text
    assert "verdict: better" in text
    assert "| fm | False | True |" in text  # the winning config as a diff against the baseline
    for job in campaign.records:
        assert job.job_id in text  # the evidence trail lists every job
    assert "97.0 CPU-s of the 1000 CPU-s budget (9 jobs completed, 2 failed)" in text
    assert "| fm | catalogue | fm | 1.0% | -0.1000 | Rendle (2010) |" in text
    assert "| dropout | catalogue | dropout | 1.0% | -0.0200 | Srivastava et al. (2014) |" in text
    assert "| layer_norm | catalogue | layer_norm | 1.0% | +0.0500 |  |" in text
    assert "fm: test NE" in proposal.html
    # fm alone -0.10 and dropout -0.02 would sum to -0.12; together they gave -0.07. The seed
    # noise of the baseline (0.90, 0.91, 0.89: sd 0.01) sets the tolerance at 4 sd = 0.04.
    assert "| fm + dropout | -0.1000 | -0.0200 | -0.1200 | -0.0700 | ±0.0400 | conflicting |" in text
    assert "- fm: fm (fm; source: catalogue). test" in text


def test_the_proposal_says_where_the_budget_went_and_why() -> None:
    campaign = completed_campaign()
    rows = {row[0]: row for row in budget_spent(campaign)}
    spent = sum(j.cost.cpu_seconds for j in campaign.records if j.cost)
    assert sum(float(row[2]) for row in rows.values()) == pytest.approx(spent, abs=0.1)
    validation = [j for j in campaign.records if kind(j.phase) == "validation"]
    assert rows["validation"][1] == str(len(validation))
    assert "within 50% of it" in rows["validation"][5]
    assert (
        "| stage | jobs | CPU-s | share | best validation NE | why it got this |"
        in render_proposal(campaign).markdown
    )


def test_the_proposal_calls_out_a_winning_cross_technique() -> None:
    campaign = completed_campaign()
    crossing = [
        h.model_copy(update={"signals": ["interactions", "sparse_features"]}) if h.id == "fm" else h
        for h in campaign.hypotheses
    ]
    proposal = render_proposal(campaign.model_copy(update={"hypotheses": crossing}))
    assert "includes feature-interaction (cross) technique(s): fm." in proposal.markdown
    assert "includes feature-interaction (cross) technique(s): fm." in proposal.html
    assert "cross) technique" not in render_proposal(campaign).markdown


def test_a_campaign_without_a_result_has_no_proposal() -> None:
    with pytest.raises(ValueError, match="no result"):
        render_proposal(planning())


def test_the_proposal_says_what_the_baseline_run_showed() -> None:
    campaign = completed_campaign()
    assert "pointed to nothing in particular" in render_proposal(campaign).markdown
    finding = "overfitting: validation NE 4.9% above training NE"
    proposal = render_proposal(campaign.model_copy(update={"findings": [finding]}))
    assert f"## What the baseline run showed\n\n- {finding}" in proposal.markdown
    assert f"<li>{finding}</li>" in proposal.html


def test_the_proposal_shows_what_each_hypothesis_did_on_top_of_the_config_it_extended() -> None:
    campaign = completed_campaign()
    assert "No extension round ran." in render_proposal(campaign).markdown
    # layer_norm hurt the baseline (+0.05) but helped fm+dropout (0.83 -> 0.81).
    config = {**BASE_CONFIG, "fm": True, "dropout": 0.2, "layer_norm": True}
    added = record("j-ext", "fm+dropout+layer_norm", config, 0.81, 0.84, phase="combination-2")
    proposal = render_proposal(campaign.model_copy(update={"records": [*campaign.records, added]}))
    row = "| layer_norm | fm+dropout | -0.0200 | +0.0500 | helps here, hurt the baseline |"
    assert row in proposal.markdown
    assert "<td>helps here, hurt the baseline</td>" in proposal.html


def test_the_proposal_shows_what_taking_a_hypothesis_out_of_the_best_config_did() -> None:
    campaign = completed_campaign()
    assert "No pruning round ran." in render_proposal(campaign).markdown
    stack = {**BASE_CONFIG, "fm": True, "dropout": 0.2, "layer_norm": True}
    added = record("j-ext", "fm+dropout+layer_norm", stack, 0.81, 0.84, phase="combination-2")
    # dropout helped the baseline (-0.02), but fm+layer_norm is better without it (0.81 -> 0.79).
    without = {**stack, "dropout": BASE_CONFIG["dropout"]}
    pruned = record("j-prune", "fm+dropout+layer_norm~-dropout", without, 0.79, 0.82, phase="combination-3")
    proposal = render_proposal(campaign.model_copy(update={"records": [*campaign.records, added, pruned]}))
    note = "better without it, though it helped the baseline"
    row = f"| dropout | fm+dropout+layer_norm | -0.0200 | -0.0200 | {note} |"
    assert row in proposal.markdown
    assert "<td>better without it, though it helped the baseline</td>" in proposal.html
    assert "| layer_norm | fm+dropout | -0.0200 |" in proposal.markdown  # still an extension, not a removal
    assert "| dropout | fm+layer_norm" not in proposal.markdown


def test_only_hypotheses_that_never_ran_in_any_phase_stay_dropped() -> None:
    dropped = [
        "fm: over budget (estimated 38 CPU-s)",
        "dropout: over budget (estimated 40 CPU-s)",
        "layer_norm: over budget (estimated 41 CPU-s)",
        "cross: over budget (estimated 99 CPU-s)",
        "bad_knob: invalid config (unknown knob 'warp_drive')",
    ]
    ran = [
        JobRecord(job_id="t", hypothesis_id="fm+dropout~t3", config={}, status="completed"),  # stacked, tuned
        JobRecord(job_id="ln", hypothesis_id="layer_norm", config={}, status="failed"),  # ran, then failed
        JobRecord(job_id="b", hypothesis_id=None, config={}, status="completed"),
    ]
    assert still_dropped(dropped, [job.hypothesis_id for job in ran]) == dropped[3:]
    assert still_dropped(dropped, []) == dropped


def test_the_proposal_does_not_list_a_hypothesis_a_later_round_ran_as_dropped() -> None:
    stale = ["fm: over budget (estimated 38 CPU-s)", "cross: over budget (estimated 99 CPU-s)"]
    proposal = render_proposal(completed_campaign().model_copy(update={"dropped_hypotheses": stale}))
    assert "- dropped: cross: over budget (estimated 99 CPU-s)" in proposal.markdown
    assert "<li>dropped: cross: over budget (estimated 99 CPU-s)</li>" in proposal.html
    assert "dropped: fm" not in proposal.markdown and "dropped: fm" not in proposal.html


def test_the_config_diff_names_every_knob_that_differs_from_the_baseline() -> None:
    baseline = {"epochs": 3, "learning_rate": 0.001, "fm": True}
    config = {"epochs": 3, "learning_rate": 0.003, "cross_layers": 2}
    assert config_diff(config, baseline) == "cross_layers=2, fm=(default), learning_rate=0.003"
    assert config_diff(dict(baseline), baseline) == "(baseline config)"
    assert config_diff({}, baseline) == "(no config recorded)"


def test_the_evidence_table_shows_each_jobs_config_diff() -> None:
    proposal = render_proposal(completed_campaign())
    assert "| j-base | validation | baseline | (baseline config) | 0 | completed |" in proposal.markdown
    assert "| j-lucky | validation | dropout | dropout=0.2 | 0 | completed |" in proposal.markdown
    assert "| j-pair | combination | fm+dropout | dropout=0.2, fm=True | 0 | completed |" in proposal.markdown
    assert "| c-fm-s2 | confirmation | fm | fm=True | 2 | completed |" in proposal.markdown
    assert "<td>dropout=0.2, fm=True</td>" in proposal.html


def test_the_proposal_shows_the_per_seed_values_behind_the_interval() -> None:
    campaign = completed_campaign()
    proposal = render_proposal(campaign)
    table = "\n".join(
        [
            "| seed | baseline NE | best NE | delta |",
            "|---|---|---|---|",
            "| 0 | 0.9000 | 0.8500 | -0.0500 |",
            "| 1 | 0.9100 | 0.8400 | -0.0700 |",
            "| 2 | 0.8900 | 0.8600 | -0.0300 |",
        ]
    )
    assert table in proposal.markdown
    assert "<tr><td>1</td><td>0.9100</td><td>0.8400</td><td>-0.0700</td></tr>" in proposal.html
    assert campaign.result is not None
    best = campaign.result.best.model_copy(update={"ne_by_seed": {0: 0.85, 1: 0.84}})
    partial = campaign.model_copy(update={"result": campaign.result.model_copy(update={"best": best})})
    assert "| 2 | 0.8900 | not run |  |" in render_proposal(partial).markdown


def footprint(parameters: int, ms: float) -> ModelFootprint:
    return ModelFootprint(parameters=parameters, size_mb=parameters * 4 / 2**20, inference_ms_per_1k_rows=ms)


def test_the_proposal_weighs_the_winners_size_and_inference_cost_against_the_baselines() -> None:
    campaign = completed_campaign()
    assert "## Model size and inference cost\n\nNot measured" in render_proposal(campaign).markdown
    # Baseline runs (any seed) 2.0, 2.2, 9.0 ms (a noisy one): median 2.2; the winner's 3.0, 3.3: 3.15.
    measured = {
        "j-base": footprint(262_144, 2.0),
        "c-base-s1": footprint(262_144, 2.2),
        "c-base-s2": footprint(262_144, 9.0),
        "j-fm": footprint(393_216, 3.0),
        "c-fm-s1": footprint(393_216, 3.3),
        "j-lucky": footprint(1, 0.1),  # another config: not the winner's
    }
    records = [j.model_copy(update={"footprint": measured.get(j.job_id)}) for j in campaign.records]
    proposal = render_proposal(campaign.model_copy(update={"records": records}))
    text = proposal.markdown
    assert "## Model size and inference cost\n\n| measure | baseline | winner | relative change |" in text
    assert "| parameters | 262,144 | 393,216 | +50.0% |" in text
    assert "| size (MiB, parameters and buffers) | 1.000 | 1.500 | +50.0% |" in text
    assert "| inference (ms per 1,000 test rows) | 2.200 | 3.150 | +43.2% |" in text
    assert "median over 3 baseline and 2 winner run(s)" in text
    assert "<td>393,216</td>" in proposal.html and "<h2>Model size and inference cost</h2>" in proposal.html
    only_baseline = [j.model_copy(update={"footprint": None}) if j.hypothesis_id else j for j in records]
    text = render_proposal(campaign.model_copy(update={"records": only_baseline})).markdown
    assert "| parameters | 262,144 | not measured |  |" in text


def test_a_cancelled_campaigns_proposal_says_so_and_shows_the_budget_history() -> None:
    from datetime import UTC, datetime

    from rea_planner.campaign import BudgetChange

    change = BudgetChange(cpu_seconds=200, by="dana", at=datetime(2026, 3, 4, 5, 6, tzinfo=UTC), reason="x")
    campaign = completed_campaign().model_copy(
        update={"status": "cancelled", "cancelled_by": "erin", "budget_changes": [change]}
    )
    proposal = render_proposal(campaign)
    assert "CANCELLED by erin: what it found before it was stopped." in proposal.markdown
    assert "of the 1200 CPU-s budget" in proposal.markdown
    assert "Budget history: 1000 CPU-s requested; +200 CPU-s by dana at 2026-03-04 05:06 UTC" in proposal.html


def test_a_gpu_campaigns_proposal_shows_its_gpu_seconds_and_gpu_budget_history() -> None:
    from datetime import UTC, datetime

    from rea_planner.campaign import BudgetChange

    campaign = completed_campaign()
    assert campaign.spec is not None
    spec = campaign.spec.model_copy(update={"job_gpus": 1, "budget_gpu_seconds": 3000.0})
    records = [
        r.model_copy(update={"cost": r.cost.model_copy(update={"gpu_seconds": 100.0})}) if r.cost else r
        for r in campaign.records
    ]
    change = BudgetChange(
        cpu_seconds=0, gpu_seconds=600, by="dana", at=datetime(2026, 3, 4, 5, 6, tzinfo=UTC)
    )
    gpu = campaign.model_copy(update={"spec": spec, "records": records, "budget_changes": [change]})
    proposal = render_proposal(gpu)
    spent = 100.0 * sum(1 for r in records if r.cost)
    assert f"{spent:.1f} GPU-s of the 3600 GPU-s budget" in proposal.markdown
    assert "1000 CPU-s and 3000 GPU-s requested; +600 GPU-s by dana" in proposal.markdown
    assert "GPU-s" not in render_proposal(campaign).markdown  # a CPU-only campaign's stays as it was


def test_the_proposal_says_which_evolved_kernels_the_winner_ran() -> None:
    uses = [
        KernelUse(
            operator="layer_norm", bucket="d64-r256", shape={}, kernel="layer_norm|d64-r256|...", calls=2
        ),
        KernelUse(operator="layer_norm", bucket="d64-r2048", shape={}, reason="no registry kernel", calls=1),
        KernelUse(
            operator="dcn_cross", bucket="d40-full-b256", shape={}, reason="no registry kernel", calls=3
        ),
    ]
    note = kernel_note(uses)
    assert "Evolved kernels ran for layer_norm (d64-r256)." in note
    assert "PyTorch ran the calls of dcn_cross, layer_norm that had no faster registry kernel." in note
    assert kernel_note(uses[1:]).startswith("No evolved kernel ran.")
