"""The launch proposal renders from a campaign's state: its text and every plot it shows."""

from __future__ import annotations

import base64
import io
import re

import pytest
from matplotlib import image as mpimg

from rea_planner import logic
from rea_planner.proposal import render_proposal

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
