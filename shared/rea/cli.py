"""``rea``: the command line for people — run the stack, submit campaigns, approve, read results."""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from rea.client import FINAL_STATUSES, Client
from rea.events import (
    FINISHED_JOB_STATUSES,
    BudgetExtended,
    BudgetExtendedPayload,
    CampaignPaused,
    CampaignRequested,
    CampaignResumed,
    Envelope,
    PersonAction,
    PlanApproved,
    PlanApprovedPayload,
    ProposalAccepted,
    new_id,
)
from rea.settings import Settings
from rea.stack import EmbeddedStack, StackError, StackState, stop_recorded_stack
from rea.workloads import get_workload

app = typer.Typer(help="REA, the Ranking Engineer Agent.", no_args_is_help=True, add_completion=False)
console = Console(stderr=True)
T = TypeVar("T")

SERVICE_WIRING = {
    "planner": "rea_planner.service",
    "hypothesis": "rea_hypothesis.service",
    "executor": "rea_executor.service",
    "logger": "rea_logger.service",
    "worker": "rea_executor.worker",
}

DEMO_CAMPAIGN: dict[str, Any] = {
    "name": "demo: improve the ranker on MovieLens-100k",
    "workload": "ranker",
    "dataset": "movielens-100k",
    "budget_cpu_seconds": 900,
    "auto_approve_cpu_seconds": 900,
    "max_parallel_jobs": 2,
    "max_hypotheses": 6,
    "max_exploitation_trials": 6,
}


def _with_client(settings: Settings, work: Callable[[Client], Awaitable[T]]) -> T:
    async def run() -> T:
        client = Client(settings)
        try:
            return await work(client)
        finally:
            await client.close()

    try:
        return asyncio.run(run())
    except StackError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc


@app.command()
def up(
    workers: Annotated[
        int | None, typer.Option(help="Local job workers (default: REA_WORKERS or 2).")
    ] = None,
) -> None:
    """Start the embedded stack (Tansu, SecantusDB, redis-server), every service and the workers."""
    settings = Settings()
    if StackState.read(settings.home) is not None:
        console.print(f"A stack is already running from {settings.home}; run `rea down` first.")
        raise typer.Exit(1)
    stack = EmbeddedStack(settings, attached=False)
    try:
        _bring_up(stack, settings.workers if workers is None else workers)
    except StackError as exc:
        stack.stop()
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    console.print(f"REA is up: {len(stack.processes)} processes, logs in {stack.home / 'logs'}")


def _bring_up(stack: EmbeddedStack, workers: int) -> None:
    from rea.runtime import ensure_topics
    from rea.topics import Topics

    with console.status("Starting Kafka (Tansu), MongoDB (SecantusDB) and Redis..."):
        endpoints = stack.start_infra()
        asyncio.run(
            ensure_topics(
                endpoints.kafka_bootstrap,
                Topics(stack.settings.topic_prefix),
                stack.settings.topic_partitions,
            )
        )
    with console.status("Starting services and workers..."):
        stack.start_services(workers)
        stack.write_state()


@app.command()
def down() -> None:
    """Stop everything `rea up` started."""
    stopped = stop_recorded_stack(Settings().home)
    console.print(f"Stopped {stopped} processes." if stopped else "No running stack found.")


@app.command()
def service(name: Annotated[str, typer.Argument(help=f"One of: {', '.join(SERVICE_WIRING)}.")]) -> None:
    """Run one service in the foreground (what `rea up`, Docker and Kubernetes start)."""
    from rea.runtime import serve

    if name not in SERVICE_WIRING:
        console.print(f"[red]unknown service {name!r}; choose one of {', '.join(SERVICE_WIRING)}[/red]")
        raise typer.Exit(2)
    wire = importlib.import_module(SERVICE_WIRING[name]).wire
    asyncio.run(serve(name, wire))


def _load_campaign(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        console.print(f"[red]cannot read {path}: {exc}[/red]")
        raise typer.Exit(2) from exc
    if not isinstance(data, dict):
        console.print(f"[red]{path} must hold a mapping of campaign fields[/red]")
        raise typer.Exit(2)
    return data


@app.command()
def submit(
    path: Annotated[Path, typer.Argument(help="Campaign YAML (name, dataset, budget_cpu_seconds, ...).")],
    wait: Annotated[bool, typer.Option(help="Wait until the planner accepts or rejects it.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the planner.")] = 60,
) -> None:
    """Publish a campaign request on the campaign topic (the same JSON any producer could send)."""
    request = _load_campaign(path)
    campaign_id = str(request.pop("campaign_id", None) or new_id())
    event = CampaignRequested(campaign_id=campaign_id, correlation_id=campaign_id, payload=request)
    settings = Settings()

    async def work(client: Client) -> dict[str, Any] | None:
        await client.publish(event)
        if not wait:
            return None
        return await client.wait_for(
            campaign_id,
            frozenset({"rejected", "awaiting_approval", "running", "completed", "failed"}),
            timeout,
        )

    state = _with_client(settings, work)
    print(campaign_id)
    if not wait:
        return
    if state is None:
        console.print(f"No answer from the planner within {timeout:g}s; check `rea status {campaign_id}`.")
        raise typer.Exit(1)
    if state["status"] == "rejected":
        console.print("[red]Campaign rejected:[/red]")
        for reason in state["reasons"]:
            console.print(f"  - {reason}")
        raise typer.Exit(1)
    console.print(f"Campaign {campaign_id}: {state['status']}")
    if state["status"] == "awaiting_approval":
        console.print(f"Estimated {_by_phase(state)}; approve with `rea approve {campaign_id}`.")


def _send_decision(campaign_id: str, event: Envelope, allowed: frozenset[str], done: str) -> None:
    """Publish a person's decision about a campaign, if the campaign is in a state it applies to."""

    async def work(client: Client) -> None:
        state = await client.campaign(campaign_id)
        if state is None:
            console.print(f"[red]no campaign {campaign_id}[/red]")
            raise typer.Exit(1)
        if state["status"] not in allowed:
            console.print(
                f"Campaign is {state['status']}; this applies only when it is {' or '.join(sorted(allowed))}."
            )
            raise typer.Exit(1)
        await client.publish(event)

    _with_client(Settings(), work)
    console.print(done)


@app.command()
def approve(
    campaign_id: str,
    by: Annotated[str, typer.Option(help="Who approves (recorded with the plan).")] = "cli",
) -> None:
    """Approve a campaign's proposed plan and budget."""
    event = PlanApproved(
        campaign_id=campaign_id, correlation_id=campaign_id, payload=PlanApprovedPayload(approved_by=by)
    )
    _send_decision(campaign_id, event, frozenset({"awaiting_approval"}), f"Approved {campaign_id}.")


@app.command()
def pause(campaign_id: str, by: Annotated[str, typer.Option(help="Who pauses.")] = "cli") -> None:
    """Pause a running campaign: jobs in flight finish, no new job starts."""
    event = CampaignPaused(campaign_id=campaign_id, correlation_id=campaign_id, payload=PersonAction(by=by))
    _send_decision(campaign_id, event, frozenset({"running", "paused_budget"}), f"Pausing {campaign_id}.")


@app.command()
def resume(campaign_id: str, by: Annotated[str, typer.Option(help="Who resumes.")] = "cli") -> None:
    """Resume a campaign a person paused."""
    event = CampaignResumed(campaign_id=campaign_id, correlation_id=campaign_id, payload=PersonAction(by=by))
    _send_decision(campaign_id, event, frozenset({"paused"}), f"Resuming {campaign_id}.")


budget_app = typer.Typer(help="Campaign budgets.", no_args_is_help=True)
app.add_typer(budget_app, name="budget")


@budget_app.command("extend")
def budget_extend(
    campaign_id: str,
    cpu_seconds: Annotated[float, typer.Option("--cpu-seconds", help="CPU seconds to add.", min=0.001)],
    by: Annotated[str, typer.Option(help="Who extends it.")] = "cli",
) -> None:
    """Raise a campaign's CPU budget; a campaign paused for budget resumes."""
    event = BudgetExtended(
        campaign_id=campaign_id,
        correlation_id=campaign_id,
        payload=BudgetExtendedPayload(cpu_seconds=cpu_seconds, by=by),
    )
    _send_decision(
        campaign_id,
        event,
        frozenset({"running", "paused", "paused_budget"}),
        f"Added {cpu_seconds:g} CPU-s to {campaign_id}.",
    )


@app.command()
def status(
    campaign_id: Annotated[str | None, typer.Argument()] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List campaigns, or show one campaign's plan and jobs."""

    async def work(client: Client) -> Any:
        if campaign_id is None:
            return await client.campaigns()
        state = await client.campaign(campaign_id)
        if state is None:
            return None
        return {"campaign": state, "phases": await client.phases(campaign_id)}

    data = _with_client(Settings(), work)
    if campaign_id is not None and data is None:
        console.print(f"[red]no campaign {campaign_id}[/red]")
        raise typer.Exit(1)
    if as_json:
        print(json.dumps(data, default=str))
        return
    out = Console()
    if campaign_id is None:
        table = Table("campaign", "name", "status", "dataset", "updated")
        for row in data:
            table.add_row(
                row["campaign_id"],
                (row.get("spec") or row["request"]).get("name", ""),
                row["status"],
                (row.get("spec") or row["request"]).get("dataset", ""),
                str(row["updated_at"])[:19],
            )
        out.print(table)
        return
    _print_campaign(out, data["campaign"], data["phases"])


def _by_phase(campaign: dict[str, Any]) -> str:
    """ "1,234 CPU-s (validation 300, combination 100, ...)": the estimate a person approves."""
    by_phase: dict[str, float] = campaign.get("budget_by_phase") or {}
    if not by_phase:
        return f"{campaign['plan']['estimated_cpu_seconds']:g} CPU-s"
    parts = ", ".join(f"{phase} {seconds:.0f}" for phase, seconds in by_phase.items())
    return f"{sum(by_phase.values()):.0f} CPU-s ({parts})"


def _print_campaign(out: Console, campaign: dict[str, Any], phases: list[dict[str, Any]]) -> None:
    out.print(f"[bold]{campaign['campaign_id']}[/bold]: {campaign['status']}")
    for reason in campaign.get("reasons", []):
        out.print(f"  reason: {reason}")
    if campaign.get("plan"):
        out.print(
            f"  plan: {len(campaign['plan']['jobs'])} validation jobs; estimated {_by_phase(campaign)}; "
            f"approved by {campaign.get('approved_by')}"
        )
    for dropped in campaign.get("dropped_hypotheses", []):
        out.print(f"  dropped: {dropped}")
    for notice in campaign.get("notices", []):
        out.print(f"  {notice}")
    for phase in phases:
        table = Table(
            "job", "hypothesis", "status", "val NE", "test NE", "CPU-s", title=f"phase {phase['phase']}"
        )
        for job in phase["jobs"]:
            output = job.get("output") or {}
            val, test, cost = output.get("validation"), output.get("test"), output.get("cost")
            table.add_row(
                job["spec"]["job_id"][-32:],
                job["spec"]["hypothesis_id"] or "baseline",
                job["status"],
                f"{val['ne']:.4f}" if val else "",
                f"{test['ne']:.4f}" if test else "",
                f"{cost['cpu_seconds']:.1f}" if cost else "",
            )
        out.print(table)
        out.print(
            f"  budget: {phase['spent_cpu_seconds']:.1f} of {phase['budget_cpu_seconds']:g} CPU-s spent"
        )
        for entry in phase.get("runbook", []):
            line = (
                f"{entry['job_id'][-32:]} failed ({entry['failure']}): {entry['action']} - {entry['reason']}"
            )
            if entry["escalated"]:
                out.print(f"  [bold red]ESCALATED[/bold red] {line} Message: {entry['message'][:200]}")
            else:
                out.print(f"  runbook: {line}")


def proposal_summary(campaign: dict[str, Any]) -> dict[str, Any]:
    """The machine-readable result: baseline and best on the test split, with the cost."""
    result = campaign["result"]
    return {
        "campaign_id": campaign["campaign_id"],
        "status": campaign["status"],
        "baseline": {
            "ne": result["baseline"]["ne"],
            "auc": result["baseline"]["auc"],
            "job_id": result["baseline"]["job_id"],
        },
        "best": {
            "ne": result["best"]["ne"],
            "auc": result["best"]["auc"],
            "job_id": result["best"]["job_id"],
            "hypothesis_id": result["best"]["hypothesis_id"],
            "changes": result["best_changes"],
        },
        "ne_delta": result["ne_delta"],
        "ne_relative_gain": result["ne_relative_gain"],
        "ne_delta_ci": (
            None if result.get("ne_delta_low") is None else [result["ne_delta_low"], result["ne_delta_high"]]
        ),
        "confidence": result.get("confidence", 0.95),
        "p_value": result.get("p_value"),
        "seeds": result.get("seeds", 1),
        "verdict": result.get("verdict", "too few seeds"),
        "notes": result.get("notes", []),
        "auc_delta": result["auc_delta"],
        "jobs_completed": result["jobs_completed"],
        "jobs_failed": result["jobs_failed"],
        "compute_seconds": result["compute_seconds"],
    }


def _print_proposal(out: Console, campaign: dict[str, Any]) -> None:
    summary = proposal_summary(campaign)
    base, best = summary["baseline"], summary["best"]
    table = Table(
        "metric (test split)", "baseline", "best", "delta", title=f"Campaign {summary['campaign_id']}"
    )
    table.add_row(
        "NE (lower is better)",
        f"{base['ne']:.4f}",
        f"{best['ne']:.4f}",
        f"{best['ne'] - base['ne']:+.4f} ({summary['ne_relative_gain']:+.2%} gain)",
    )
    table.add_row("AUC", f"{base['auc']:.4f}", f"{best['auc']:.4f}", f"{summary['auc_delta']:+.4f}")
    out.print(table)
    out.print(f"Best: {best['hypothesis_id'] or 'baseline'} with {best['changes'] or 'no changes'}")
    interval = summary["ne_delta_ci"]
    if interval is None:
        out.print(
            f"NE delta {summary['ne_delta']:+.4f} over {summary['seeds']} seed(s): {summary['verdict']}."
        )
    else:
        out.print(
            f"NE delta {summary['ne_delta']:+.4f}, {summary['confidence']:.0%} CI "
            f"[{interval[0]:+.4f}, {interval[1]:+.4f}] over {summary['seeds']} seeds "
            f"(Welch's t, p = {summary['p_value']:.3g}): {summary['verdict']}."
        )
    for note in summary["notes"]:
        out.print(f"Note: {note}")
    if campaign.get("accepted_by"):
        out.print(f"Proposal accepted by {campaign['accepted_by']} at {str(campaign['accepted_at'])[:19]}.")
    out.print(
        f"Jobs completed: {summary['jobs_completed']}, failed: {summary['jobs_failed']}, "
        f"compute: {summary['compute_seconds']:.1f} CPU-s."
    )


@app.command()
def proposal(
    campaign_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    html_path: Annotated[
        Path | None, typer.Option("--html", help="Write the launch proposal as one self-contained HTML page.")
    ] = None,
    markdown_dir: Annotated[
        Path | None, typer.Option("--markdown", help="Write proposal.md and its PNG plots into this folder.")
    ] = None,
) -> None:
    """Show a completed campaign's result: baseline vs best on the test split, with deltas and
    their interval; optionally write the full launch proposal (plots, evidence) as HTML or Markdown."""

    wanted = html_path is not None or markdown_dir is not None

    async def work(client: Client) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        campaign = await client.campaign(campaign_id)
        return campaign, (await client.proposal(campaign_id) if wanted else None)

    campaign, document = _with_client(Settings(), work)
    if campaign is None or campaign.get("result") is None:
        state = "not found" if campaign is None else campaign["status"]
        console.print(f"[red]no result for {campaign_id} ({state})[/red]")
        raise typer.Exit(1)
    if wanted and document is None:
        console.print(f"[red]the proposal of {campaign_id} is not rendered yet; try again shortly[/red]")
        raise typer.Exit(1)
    if document is not None:
        if html_path is not None:
            html_path.write_text(document["html"])
            console.print(f"Wrote {html_path}")
        if markdown_dir is not None:
            markdown_dir.mkdir(parents=True, exist_ok=True)
            (markdown_dir / "proposal.md").write_text(document["markdown"])
            for name, data in document["images"].items():
                (markdown_dir / name).write_bytes(bytes(data))
            console.print(f"Wrote {markdown_dir / 'proposal.md'} and {len(document['images'])} plots")
    if as_json:
        print(json.dumps(proposal_summary(campaign)))
    else:
        _print_proposal(Console(), campaign)


@app.command()
def accept(
    campaign_id: str,
    by: Annotated[str, typer.Option(help="Who accepts (recorded with the campaign).")] = "cli",
) -> None:
    """Accept a completed campaign's launch proposal."""
    event = ProposalAccepted(campaign_id=campaign_id, correlation_id=campaign_id, payload=PersonAction(by=by))
    _send_decision(campaign_id, event, frozenset({"completed"}), f"Accepted the proposal of {campaign_id}.")


@app.command()
def demo(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result as JSON on the last line.")
    ] = False,
    workers: Annotated[
        int | None, typer.Option(help="Local job workers (default: REA_WORKERS or 2).")
    ] = None,
    dataset: Annotated[str, typer.Option(help="Dataset spec.")] = "movielens-100k",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the campaign.")] = 900,
) -> None:
    """Start the embedded stack, run a small auto-approved campaign, print the result, shut down."""
    settings = Settings()
    if StackState.read(settings.home) is not None:
        console.print(f"A stack is already running from {settings.home}; run `rea down` first.")
        raise typer.Exit(1)
    with console.status(f"Preparing dataset {dataset}..."):
        get_workload(DEMO_CAMPAIGN["workload"]).prepare(dataset)
    stack = EmbeddedStack(settings, attached=True)
    try:
        _bring_up(stack, settings.workers if workers is None else workers)
        campaign_id = new_id()
        request = {**DEMO_CAMPAIGN, "dataset": dataset}
        event = CampaignRequested(campaign_id=campaign_id, correlation_id=campaign_id, payload=request)
        campaign = _with_client(settings, lambda client: _run_demo(client, event, timeout))
    except StackError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    finally:
        with console.status("Shutting down..."):
            stack.stop()
    if campaign is None or campaign["status"] != "completed":
        state = "timed out" if campaign is None else f"{campaign['status']}: {campaign.get('reasons')}"
        console.print(f"[red]The demo campaign did not complete ({state}). Logs: {stack.home / 'logs'}[/red]")
        raise typer.Exit(1)
    _print_proposal(Console(stderr=as_json), campaign)
    if as_json:
        print(json.dumps(proposal_summary(campaign)))


async def _run_demo(client: Client, event: CampaignRequested, timeout_s: float) -> dict[str, Any] | None:
    await client.publish(event)
    deadline = time.monotonic() + timeout_s
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("planning", total=None)
        while time.monotonic() < deadline:
            campaign = await client.campaign(event.campaign_id)
            jobs = [job for phase in await client.phases(event.campaign_id) for job in phase["jobs"]]
            if jobs:
                done = sum(job["status"] in FINISHED_JOB_STATUSES for job in jobs)
                progress.update(task, description="training jobs", total=len(jobs), completed=done)
            if campaign and campaign["status"] in FINAL_STATUSES:
                return campaign
            await asyncio.sleep(0.5)
    return None


@app.command()
def bench(
    workload: Annotated[
        list[str], typer.Option("--workload", help="Dataset spec to benchmark on (repeat for several).")
    ],
    methods: Annotated[str, typer.Option(help="Comma-separated: rea, optuna, random.")] = "rea,optuna,random",
    budget_cpu_seconds: Annotated[
        float, typer.Option(help="CPU seconds each method may spend per run.")
    ] = 300,
    seeds: Annotated[int, typer.Option(help="Runs per method and workload (seeds 0..K-1).")] = 3,
    out: Annotated[Path, typer.Option(help="Folder for results.json and gains.png.")] = Path("bench-results"),
    confirm_seeds: Annotated[int, typer.Option(help="Seeds each chosen config is confirmed on.")] = 3,
    parallel: Annotated[int, typer.Option(help="Jobs at a time, for every method.")] = 2,
    epochs: Annotated[int | None, typer.Option(help="Training epochs of every job (the fidelity).")] = None,
    warm_start: Annotated[
        bool,
        typer.Option(
            "--warm-start",
            help="Also run REA's campaign twice on one fresh insights DB per workload and seed, and "
            "report the share of the second's budget needed to reach the first's best test NE.",
        ),
    ] = False,
) -> None:
    """Compare REA with Optuna's TPE and random search at equal CPU budget on the same workload."""
    import optuna
    from rea_bench import BenchPlan, run_bench

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # this command prints its own progress
    plan = BenchPlan(
        workloads=workload,
        methods=[m.strip() for m in methods.split(",") if m.strip()],
        budget_cpu_seconds=budget_cpu_seconds,
        seeds=seeds,
        out=out,
        confirm_seeds=confirm_seeds,
        parallel=parallel,
        baseline={} if epochs is None else {"epochs": epochs},
        warm_start=warm_start,
    )
    try:
        run_bench(plan, console)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    console.print(f"Wrote {out / 'results.json'} and {out / 'gains.png'}")


@app.command()
def chaos(
    campaigns: Annotated[int, typer.Option(help="Campaigns to run.")] = 3,
    malformed: Annotated[int, typer.Option(help="Malformed or hostile messages to publish.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed for every random choice.")] = 0,
    timeout: Annotated[float, typer.Option(help="Seconds before giving up on the campaigns.")] = 600,
    home: Annotated[
        Path | None, typer.Option(help="Where the private stack lives (default: a temp dir).")
    ] = None,
) -> None:
    """Fault-injection suite: campaigns under kill -9, broker restarts, replays and garbage; then checks."""
    import tempfile

    from rea.chaos import ChaosPlan, run_chaos

    plan = ChaosPlan(campaigns=campaigns, malformed=malformed, seed=seed, timeout_s=timeout)
    with (
        tempfile.TemporaryDirectory(prefix="rea-chaos-") as tmp,
        console.status("Running campaigns under fault injection..."),
    ):
        report = asyncio.run(run_chaos(plan, home or Path(tmp), console))
    Console().print(report.table())
    for line in [*report.unfinished, *report.crashes]:
        console.print(f"[red]{line}[/red]")
    if not report.passed:
        raise typer.Exit(1)


def main() -> None:
    app(sys.argv[1:])
