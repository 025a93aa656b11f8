"""A campaign from request to result, through real Tansu, SecantusDB, redis-server, real
service processes and real training subprocesses."""

from __future__ import annotations

import httpx
import pytest

from rea.client import Client
from rea.phases import kind
from rea.store import Store
from rea_tools.stack import EmbeddedStack

from .helpers import (
    MANUAL_GRANT,
    campaign_request,
    eventually,
    finished,
    recorded_results,
    result_of,
    submit,
    validation_ne,
)

pytestmark = pytest.mark.e2e


async def test_campaign_from_request_to_result(services: EmbeddedStack, client: Client, store: Store) -> None:
    """Every phase in order: validation (the baseline and three hypotheses), combination (when
    two or more beat the baseline), an exploitation round of two Optuna trials, the best three
    configs again on another seed (selection), then the winner confirmed against the baseline on
    two more seeds; every result recorded once; the answer with an interval."""
    services.start_services(workers=2)
    # Trust-region trials keep the winner's hypotheses, so the proposal can name its cross.
    request = campaign_request(
        confirm_seeds=3, max_exploitation_trials=2, contenders=3, exploitation_scope="local"
    )
    campaign_id = await submit(client, request)

    state = await finished(client, campaign_id)

    assert state.status == "completed", state.reasons
    validation = [r for r in state.records if r.phase == "validation"]
    assert len(validation) == 4  # the baseline and three hypotheses
    base_ne = next(validation_ne(r) for r in validation if r.hypothesis_id is None)
    winners = [r for r in validation if r.hypothesis_id and validation_ne(r) < base_ne]
    # With a planted cross, some interaction hypothesis beats the plain MLP on validation.
    assert winners
    phases = await client.phases(campaign_id)
    names = [phase.phase for phase in phases]
    # Stacking ("combination") runs when two winners can be stacked (two that set one knob
    # differently cannot); then rounds ("combination-N") add the other hypotheses to the best
    # config and take its own out.
    assert names[0] == "validation" and names[-3:] == ["exploitation-1", "selection", "confirmation"]
    assert all(kind(name) == "combination" for name in names[1:-3])
    assert len(winners) >= 2 or "combination" not in names
    combined = [r for r in state.records if kind(r.phase) == "combination"]
    assert all("+" in (r.hypothesis_id or "") for r in combined)
    assert all(phase.spent_cpu_seconds <= phase.budget_cpu_seconds for phase in phases)
    trials = [r for r in state.records if r.phase == "exploitation-1"]
    assert len(trials) == 2 and all("~t" in (r.hypothesis_id or "") for r in trials)

    result = result_of(state)
    assert result.best.validation_ne < result.baseline.validation_ne
    assert result.best_hypotheses  # the winner carries at least one validated hypothesis
    # The data has a planted cross: the winner carries a feature-interaction technique and the
    # launch proposal says so.
    crossing = {h.id for h in state.hypotheses if "interactions" in h.signals}
    assert crossing & set(result.best_hypotheses)

    async def proposal_rendered() -> bool:
        return await client.proposal(campaign_id) is not None

    await eventually(proposal_rendered, "the launch proposal", 60)
    proposal = await client.proposal(campaign_id)
    assert proposal is not None
    assert "includes feature-interaction (cross) technique(s): " in proposal["markdown"]
    selection = [r for r in state.records if r.phase == "selection"]
    assert len(selection) == 3 and {r.seed for r in selection} == {1}
    assert result.best.hypothesis_id in {r.hypothesis_id for r in selection}
    # The winner's selection run on seed 1 is part of its confirmation, not run again.
    assert state.confirmation is not None
    confirmation = {job.job_id for job in state.confirmation.jobs}
    assert len(confirmation) in (2, 3)  # 3 unless the baseline was among the contenders
    assert {job.seed for job in state.confirmation.jobs} <= {1, 2}
    every_job = {r.job_id for r in state.records}
    assert confirmation <= every_job
    assert result.jobs_completed == len(every_job) and result.jobs_failed == 0
    assert result.seeds == 3
    # (The view parses the stored seeds, string keys in MongoDB, back into ints.)
    assert set(result.baseline.ne_by_seed) == set(result.best.ne_by_seed) == {0, 1, 2}
    assert result.ne_delta_low is not None and result.ne_delta_high is not None
    assert result.ne_delta_low <= result.ne_delta <= result.ne_delta_high
    assert result.verdict in ("better", "worse", "not significant")

    # Every job's result is in the insights DB exactly once, with its measured cost.
    rows = await recorded_results(client, campaign_id, len(every_job))
    assert sorted(row["_id"] for row in rows) == sorted(every_job)
    assert all(row["status"] == "completed" and row["cost"]["cpu_seconds"] > 0 for row in rows)
    assert result.compute_seconds == pytest.approx(sum(row["cost"]["cpu_seconds"] for row in rows), abs=0.05)
    # Only the baseline's validation run is diagnosed; what it showed ranked the hypotheses.
    diagnosed = [row for row in rows if row["diagnostics"] is not None]
    assert [(row["hypothesis_id"], row["phase"]) for row in diagnosed] == [(None, "validation")]
    assert set(diagnosed[0]["diagnostics"]["feature_importance"]) == {f"f{i}" for i in range(8)}
    assert any(finding.startswith("underfitting: ") for finding in state.findings)  # 1 epoch
    baseline_nes = [row["test"]["ne"] for row in rows if row["hypothesis_id"] is None]
    assert result.baseline.ne == pytest.approx(sum(baseline_nes) / 3)

    # The logger saw the whole story, in order, each event once.
    async def logged_completion() -> bool:
        return (
            await store.events.count_documents({"campaign_id": campaign_id, "type": "campaign.completed"}) > 0
        )

    await eventually(logged_completion, "the logger to record campaign.completed")
    types = [
        doc["type"] async for doc in store.events.find({"campaign_id": campaign_id}).sort("occurred_at", 1)
    ]
    assert types[0] == "campaign.requested" and types[-1] == "campaign.completed"
    for once in ("hypotheses.requested", "hypotheses.generated", "plan.proposed"):
        assert types.count(once) == 1, (once, types)
    assert types.count("phase.started") == types.count("phase.concluded") == len(phases)
    assert types.count("job.submitted") == types.count("job.completed") == len(every_job)

    # Nothing is left unpublished in the outbox.
    assert await store.outbox.count_documents({"published": False}) == 0


async def test_plan_waits_for_approval(services: EmbeddedStack, client: Client) -> None:
    from rea.events import PlanApproved, PlanApprovedPayload

    for name in ("logger", "hypothesis", "planner", "executor"):
        services.start_service(name)
    services.start_service("worker", "worker-0")
    campaign_id = await submit(client, campaign_request(grant=MANUAL_GRANT, max_hypotheses=1))

    state = await client.wait_for(campaign_id, frozenset({"awaiting_approval"}), 60)
    assert state is not None and state.plan is not None and state.plan.estimated_cpu_seconds > 0
    assert await client.phase(campaign_id) is None, "no job may start before approval"

    await client.publish(
        PlanApproved(
            campaign_id=campaign_id,
            correlation_id=campaign_id,
            payload=PlanApprovedPayload(approved_by="alice"),
        )
    )
    state = await finished(client, campaign_id)
    assert state.status == "completed"
    assert state.approved_by == "alice"


async def test_every_service_exposes_prometheus_metrics(services: EmbeddedStack, client: Client) -> None:
    services.start_services(workers=1)
    campaign_id = await submit(client, campaign_request(max_hypotheses=1))
    assert (await finished(client, campaign_id)).status == "completed"

    async def scrape() -> dict[str, str]:
        async with httpx.AsyncClient() as http:
            return {
                p.name: (await http.get(f"http://127.0.0.1:{p.metrics_port}/metrics")).text
                for p in services.processes
                if p.metrics_port
            }

    # The logger (and the worker's counter, bumped after its result is sent) run on their own
    # schedule: the campaign can complete before they have counted its last result.
    counted = (
        ("worker-0", 'rea_jobs_total{outcome="job.completed",service="worker-0"} 2.0'),
        ("logger", 'rea_results_recorded_total{status="job.completed"} 2.0'),
    )

    async def all_counted() -> bool:
        try:
            pages = await scrape()
        except httpx.ConnectError:  # the logger joins two consumer groups before it listens
            return False
        return all(line in pages[name] for name, line in counted)

    await eventually(all_counted, "the worker and the logger to count both results", 60)
    pages = await scrape()
    assert set(pages) == {"logger", "hypothesis", "planner", "executor", "worker-0"}
    for name, page in pages.items():
        assert f'rea_up{{service="{name}"}} 1.0' in page
    assert 'rea_events_consumed_total{service="planner",type="campaign.requested"} 1.0' in pages["planner"]


async def test_screening_promotes_the_best_third_to_full_fidelity(
    services: EmbeddedStack, client: Client
) -> None:
    """Successive halving through the real stack: every hypothesis at a third of the epochs,
    the best third (one of three) and the baseline again at full fidelity, the winner from those
    and the extension rounds after them, never from a low-fidelity run."""
    services.start_services(workers=2)
    request = campaign_request(screening="on", baseline={"epochs": 3}, max_hypotheses=3)
    campaign_id = await submit(client, request)

    state = await finished(client, campaign_id)

    assert state.status == "completed", state.reasons
    names = [phase.phase for phase in await client.phases(campaign_id)]
    # Extension rounds may then try the screened-out hypotheses on top of the validated winner.
    assert names[:2] == ["screening", "validation"] and all(kind(name) == "combination" for name in names[2:])
    screened = [r for r in state.records if r.phase == "screening"]
    validated = [r for r in state.records if r.phase == "validation"]
    assert len(screened) == 4 and all(r.config["epochs"] == 1 for r in screened)
    assert len(validated) == 2 and all(r.config["epochs"] == 3 for r in validated)
    best_screened = min((r for r in screened if r.hypothesis_id), key=validation_ne)
    assert {r.hypothesis_id for r in validated} == {None, best_screened.hypothesis_id}
    full = {r.job_id for r in state.records if r.phase != "screening"}
    assert result_of(state).best.job_id in full
