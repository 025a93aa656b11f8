"""``rea``: the command line for people — run the stack, submit campaigns, approve, read results."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml
from pydantic import ValidationError
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.progress_bar import ProgressBar
from rich.table import Table

from rea.client import (
    FINAL_STATUSES,
    HIDDEN_STATUSES,
    CampaignSummary,
    Client,
    GrantError,
    SigningError,
    UnresolvedId,
    default_identity,
    elapsed_s,
    format_changes,
    format_gain,
    job_rows,
    jobs_in_flight,
    short_ids,
    summarize,
)
from rea.decisions import AuditEntry
from rea.documents import campaign_documents
from rea.endpoints import NoRunningStack
from rea.events import (
    FINISHED_JOB_STATUSES,
    BudgetExtended,
    BudgetExtendedPayload,
    CampaignCancelled,
    CampaignPaused,
    CampaignRequested,
    CampaignResumed,
    GrantTerms,
    PersonAction,
    PersonDecision,
    PlanApproved,
    PlanApprovedPayload,
    ProposalAccepted,
    describe_error,
    new_id,
)
from rea.grants import GLOB_CHARACTERS, Grant, own_terms
from rea.knobs import Role
from rea.ledger import LOG_LIMIT, JobRun
from rea.processes import is_running
from rea.runtime import SERVICES, run_service
from rea.security import auth_failure, kafka_options
from rea.settings import Settings
from rea.signing import Keyring
from rea.views import CampaignView, JobView, PhaseView
from rea.workloads import get_workload, workload_names
from rea_tools.stack import EmbeddedStack, StackError, StackState, stop_recorded_stack

app = typer.Typer(help="REA, the Ranking Engineer Agent.", no_args_is_help=True, add_completion=False)
console = Console(stderr=True)
T = TypeVar("T")

DEMO_CAMPAIGN: dict[str, Any] = {
    "name": "demo: improve the ranker on MovieLens-100k",
    "workload": "ranker",
    "dataset": "movielens-100k",
    "grant": "demo",
    "budget_cpu_seconds": 900,
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
    except UnresolvedId as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(1) from exc
    except (StackError, NoRunningStack, SigningError, GrantError) as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from exc
    except Exception as exc:
        refused = auth_failure(exc)
        if refused is None:
            raise
        console.print(f"[red]{escape(str(refused))}[/red]")
        raise typer.Exit(2) from None


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
                kafka_options(stack.settings),
            )
        )
    with console.status("Starting services and workers..."):
        stack.start_services(workers, kernels=True)
        stack.write_state()
        if not stack.attached:  # `rea up`: someone must start again whatever dies
            stack.start_supervisor()


@app.command()
def down() -> None:
    """Stop everything `rea up` started."""
    stopped = stop_recorded_stack(Settings().home)
    console.print(f"Stopped {stopped} processes." if stopped else "No running stack found.")


@app.command(hidden=True)
def supervise() -> None:
    """Start again whatever process of the running stack exits (`rea up` runs this)."""
    from rea.logs import configure_logging
    from rea_tools.supervisor import main

    settings = Settings()
    configure_logging(settings.log_level, service="supervisor")
    main(settings.home.resolve())


@app.command()
def service(name: Annotated[str, typer.Argument(help=f"One of: {', '.join(SERVICES)}.")]) -> None:
    """Run one service in the foreground (what `rea up`, Docker and Kubernetes start)."""
    if name not in SERVICES:
        console.print(f"[red]unknown service {name!r}; choose one of {', '.join(SERVICES)}[/red]")
        raise typer.Exit(2)
    run_service(name)


def _load_campaigns(path: Path) -> list[dict[str, Any]]:
    """Every campaign document in ``path`` (see :func:`rea.documents.campaign_documents`)."""
    try:
        return campaign_documents(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        console.print(f"[red]cannot read {path}: {exc}[/red]")
        raise typer.Exit(2) from exc


ANSWERED = frozenset({"rejected", "awaiting_approval", "running", "completed", "failed"})


@app.command()
def submit(
    path: Annotated[
        Path,
        typer.Argument(
            help="Campaign YAML (name, dataset, budget_cpu_seconds, ...); several as a YAML stream "
            "or a `campaigns:` list."
        ),
    ],
    wait: Annotated[bool, typer.Option(help="Wait until the planner accepts or rejects each.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the planner.")] = 60,
) -> None:
    """Publish campaign requests on the campaign topic (the same JSON any producer could send);
    prints each campaign's id, and its answer from the planner."""
    requests = _load_campaigns(path)
    events = []
    for request in requests:
        campaign_id = str(request.pop("campaign_id", None) or new_id())
        events.append(CampaignRequested(campaign_id=campaign_id, correlation_id=campaign_id, payload=request))

    async def work(client: Client) -> list[CampaignView | None]:
        for event in events:
            await client.publish(event)
        if not wait:
            return []
        return list(
            await asyncio.gather(*(client.wait_for(e.campaign_id, ANSWERED, timeout) for e in events))
        )

    states = _with_client(Settings(), work)
    failed = False
    for event, state in itertools.zip_longest(events, states):
        print(event.campaign_id)
        if wait:
            failed |= not _report_answer(event.campaign_id, state, timeout)
    if failed:
        raise typer.Exit(1)


def _report_answer(campaign_id: str, state: CampaignView | None, timeout: float) -> bool:
    """Say what the planner answered; False when it rejected the campaign or did not answer."""
    if state is None:
        console.print(f"No answer from the planner within {timeout:g}s; check `rea status {campaign_id}`.")
        return False
    if state.status == "rejected":
        console.print(f"[red]Campaign rejected:[/red] {campaign_id}")
        for reason in state.reasons:
            console.print(f"  - {reason}")
        return False
    console.print(f"Campaign {campaign_id}: {state.status}")
    if state.status == "awaiting_approval":
        for line in state.checklist.lines() if state.checklist else []:
            console.print(f"  {escape(line)}")
        console.print(f"Estimated {_by_phase(state)}; approve with `rea approve {campaign_id}`.")
    return True


ID_HELP = "A campaign id, or any unique prefix of one."
CampaignIdArg = Annotated[str, typer.Argument(metavar="ID", help=ID_HELP, show_default=False)]
CANCELLABLE = frozenset({"planning", "awaiting_approval", "running", "paused", "paused_budget"})


ByOption = Annotated[
    str | None,
    typer.Option(
        help="Who decides; the decision is signed in this name (default: REA_SIGNING_IDENTITY, else your "
        "user name). A personal signing key signs only in its owner's name."
    ),
]


def _by_person(
    kind: type[CampaignPaused | CampaignResumed | CampaignCancelled | ProposalAccepted],
) -> Callable[[str, str], PersonDecision]:
    """Makes ``kind`` for a campaign's full id, in a person's name."""
    return lambda full, who: kind(campaign_id=full, correlation_id=full, payload=PersonAction(by=who))


def _send_decision(
    prefix: str,
    by: str | None,
    make_event: Callable[[str, str], PersonDecision],
    allowed: frozenset[str],
    done: Callable[[str], str],
) -> None:
    """Publish a person's decision about a campaign (named by a unique id prefix), signed, if
    the campaign is in a state it applies to; the event is made for the resolved full id, in the
    name of ``by`` (default: REA_SIGNING_IDENTITY, else the OS user)."""
    settings = Settings()
    who = by or default_identity(settings)

    async def work(client: Client) -> str:
        campaign_id = await client.resolve_campaign(prefix)
        state = await client.campaign(campaign_id)
        if state is None:
            raise UnresolvedId("campaign", prefix, [])
        if state.status not in allowed:
            console.print(
                f"Campaign {campaign_id} is {state.status}; "
                f"this applies only when it is {' or '.join(sorted(allowed))}."
            )
            raise typer.Exit(1)
        await client.publish(make_event(campaign_id, who))
        return campaign_id

    console.print(done(_with_client(settings, work)))


@app.command()
def approve(
    campaign_id: CampaignIdArg,
    by: ByOption = None,
) -> None:
    """Approve a campaign's proposed plan and budget."""
    _send_decision(
        campaign_id,
        by,
        lambda full, who: PlanApproved(
            campaign_id=full, correlation_id=full, payload=PlanApprovedPayload(approved_by=who)
        ),
        frozenset({"awaiting_approval"}),
        lambda full: f"Approved {full}.",
    )


@app.command()
def pause(campaign_id: CampaignIdArg, by: ByOption = None) -> None:
    """Pause a running campaign: jobs in flight finish, no new job starts."""
    _send_decision(
        campaign_id,
        by,
        _by_person(CampaignPaused),
        frozenset({"running", "paused_budget"}),
        lambda full: f"Pausing {full}.",
    )


@app.command()
def resume(campaign_id: CampaignIdArg, by: ByOption = None) -> None:
    """Resume a campaign a person paused."""
    _send_decision(
        campaign_id,
        by,
        _by_person(CampaignResumed),
        frozenset({"paused"}),
        lambda full: f"Resuming {full}.",
    )


@app.command()
def cancel(campaign_id: CampaignIdArg, by: ByOption = None) -> None:
    """Cancel a campaign: no new job starts, jobs in flight are stopped, and it ends as cancelled
    with what it found so far."""
    _send_decision(
        campaign_id,
        by,
        _by_person(CampaignCancelled),
        CANCELLABLE,
        lambda full: f"Cancelling {full}.",
    )


budget_app = typer.Typer(help="Campaign budgets.", no_args_is_help=True)
app.add_typer(budget_app, name="budget")


@budget_app.command("extend")
def budget_extend(
    campaign_id: CampaignIdArg,
    cpu_seconds: Annotated[float, typer.Option("--cpu-seconds", help="CPU seconds to add.", min=0)] = 0.0,
    gpu_seconds: Annotated[
        float, typer.Option("--gpu-seconds", help="GPU seconds to add (a campaign with a GPU budget).", min=0)
    ] = 0.0,
    by: ByOption = None,
) -> None:
    """Raise a campaign's CPU and/or GPU budget; a campaign paused for budget resumes."""
    try:
        added = BudgetExtendedPayload(cpu_seconds=cpu_seconds, gpu_seconds=gpu_seconds)
    except ValidationError:
        raise typer.BadParameter("give --cpu-seconds, --gpu-seconds or both, above 0") from None
    _send_decision(
        campaign_id,
        by,
        lambda full, who: BudgetExtended(
            campaign_id=full, correlation_id=full, payload=added.model_copy(update={"by": who})
        ),
        frozenset({"running", "paused", "paused_budget"}),
        lambda full: f"Added {added.describe()} to {full}.",
    )


grant_app = typer.Typer(
    help="Preflight grants: what a team's campaigns may use, and what starts without approval.",
    no_args_is_help=True,
)
app.add_typer(grant_app, name="grant")


def _listed(values: list[str]) -> list[str]:
    """Repeated options and comma lists alike: ``--workloads a,b --workloads c``."""
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def _granted_dataset(entry: str) -> str:
    """A path entry resolved here (so a symlinked data directory is granted as what it is);
    names and patterns as given."""
    if entry.startswith("/") and not GLOB_CHARACTERS & set(entry):
        return str(Path(entry).resolve())
    return entry


@grant_app.command("create")
def grant_create(
    team: Annotated[str, typer.Option(help="The team whose campaigns it covers.")],
    workloads: Annotated[list[str], typer.Option(help="Workloads they may train (repeat, or a comma list).")],
    datasets: Annotated[
        list[str],
        typer.Option(
            help="Datasets they may use: names or shell patterns (movielens-100k, synthetic*), and absolute "
            "paths (a directory, or a pattern) every file a dataset reads must lie in."
        ),
    ],
    max_cpu_seconds: Annotated[
        float, typer.Option(help="The most CPU-s a campaign may have, extensions included.")
    ],
    backends: Annotated[
        list[str] | None, typer.Option(help="Where jobs may run: local (the default), ray, kubernetes.")
    ] = None,
    max_gpu_seconds: Annotated[
        float | None, typer.Option(help="The most GPU-s a campaign may have; unset: no GPU jobs.")
    ] = None,
    auto_approve_up_to: Annotated[
        float | None,
        typer.Option(help="Plans estimated at or below this many CPU-s start without a person's approval."),
    ] = None,
    allow_llm: Annotated[bool, typer.Option(help="Hypotheses may be asked of the configured LLM.")] = False,
    allow_kernel_codegen: Annotated[
        bool, typer.Option(help="Jobs may run generated kernels (the evolved-kernels knob).")
    ] = False,
    grant_id: Annotated[
        str | None, typer.Option("--id", help="The grant's id (default: TEAM-<random>).")
    ] = None,
    by: ByOption = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the planner to record it.")] = 30,
) -> None:
    """Grant a team's campaigns access (signed in your name); prints the grant's id, which
    campaigns name as `grant:`."""
    try:
        terms = GrantTerms.model_validate(
            {
                "team": team,
                "workloads": _listed(workloads),
                "datasets": [_granted_dataset(entry) for entry in _listed(datasets)],
                "max_cpu_seconds": max_cpu_seconds,
                "max_gpu_seconds": max_gpu_seconds,
                "backends": _listed(backends or ["local"]),
                "auto_approve_up_to": auto_approve_up_to,
                "allow_llm": allow_llm,
                "allow_kernel_codegen": allow_kernel_codegen,
            }
        )
    except ValidationError as exc:
        console.print(f"[red]invalid grant: {escape(describe_error(exc))}[/red]")
        raise typer.Exit(2) from exc
    settings = Settings()
    chosen = grant_id or f"{team}-{new_id()[:6]}"
    unknown = sorted(set(terms.workloads) - set(workload_names()))
    if unknown:
        console.print(f"[yellow]not registered here: {', '.join(unknown)} (granted anyway)[/yellow]")
    who = by or default_identity(settings)
    grant = _with_client(settings, lambda client: client.create_grant(chosen, terms, who, timeout))
    console.print(f"Granted {grant.grant_id} to team {terms.team}, by {grant.created_by}.")
    print(grant.grant_id)


@grant_app.command("list")
def grant_list(
    show_all: Annotated[bool, typer.Option("--all", help="Revoked grants too.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON grant per line.")] = False,
) -> None:
    """Grants, newest first: who made each and when, and what it allows."""
    grants = _with_client(Settings(), lambda client: client.grants(include_revoked=show_all))
    if as_json:
        for grant in grants:
            print(grant.model_dump_json())
        return
    if not grants:
        console.print("No grants" + ("" if show_all else " in force (--all shows revoked ones)") + ".")
        return
    Console().print(grant_table(grants))


def grant_table(grants: list[Grant]) -> Table:
    """One row per grant: what a person scans for (`rea grant show` has the whole terms)."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("grant", "team", "status", "by", "created", "max CPU-s", "auto-approve"):
        table.add_column(column, no_wrap=column in ("grant", "status", "created"), overflow="fold")
    for grant in grants:
        terms = grant.terms
        table.add_row(
            escape(grant.grant_id),
            escape(terms.team),
            grant.status,
            escape(grant.created_by),
            grant.created_at.strftime("%Y-%m-%d %H:%M"),
            f"{terms.max_cpu_seconds:,.0f}",
            "-" if terms.auto_approve_up_to is None else f"≤ {terms.auto_approve_up_to:,.0f}",
        )
    return table


GrantIdArg = Annotated[str, typer.Argument(metavar="GRANT", help="A grant id, or a unique prefix of one.")]


@grant_app.command("show")
def grant_show(
    grant_id: GrantIdArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print it as JSON.")] = False,
) -> None:
    """One grant: its terms, who made it and when, and whether it was revoked."""

    async def work(client: Client) -> Grant:
        grant = await client.grant(await client.resolve_grant(grant_id))
        if grant is None:
            raise UnresolvedId("grant", grant_id, [])
        return grant

    grant = _with_client(Settings(), work)
    if as_json:
        print(grant.model_dump_json(indent=2))
        return
    terms = grant.terms
    gpu = "no GPU jobs" if terms.max_gpu_seconds is None else f"{terms.max_gpu_seconds:g} GPU-s"
    auto = (
        "every plan needs a person"
        if terms.auto_approve_up_to is None
        else f"up to {terms.auto_approve_up_to:g} CPU-s"
    )
    lines = [
        f"[bold]{escape(grant.grant_id)}[/bold] team {escape(terms.team)}: {grant.status}",
        f"  granted by {escape(grant.created_by)} at {grant.created_at:%Y-%m-%d %H:%M:%S} UTC",
        f"  workloads: {escape(', '.join(terms.workloads))}",
        f"  datasets: {escape(', '.join(terms.datasets))}",
        f"  max per campaign: {terms.max_cpu_seconds:g} CPU-s, {gpu}",
        f"  backends: {', '.join(terms.backends)}",
        f"  auto-approve: {auto}",
        f"  LLM: {'allowed' if terms.allow_llm else 'no'}; generated kernels: "
        f"{'allowed' if terms.allow_kernel_codegen else 'no'}",
    ]
    if grant.status == "revoked":
        lines.append(f"  {escape(grant.describe_revocation())}")
    Console().print("\n".join(lines))


@grant_app.command("revoke")
def grant_revoke(
    grant_id: GrantIdArg,
    reason: Annotated[str, typer.Option(help="Why, for the audit trail.")] = "",
    by: ByOption = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the planner to record it.")] = 30,
) -> None:
    """Revoke a grant: no new campaign under it starts and no plan under it is approved.
    Campaigns already running go on (cancel them with `rea cancel`)."""
    settings = Settings()
    who = by or default_identity(settings)

    async def work(client: Client) -> Grant:
        full = await client.resolve_grant(grant_id)
        return await client.revoke_grant(full, who, reason, timeout)

    grant = _with_client(settings, work)
    console.print(f"Revoked {grant.grant_id}: {grant.describe_revocation()}.")


@app.command()
def status(
    campaign_id: Annotated[
        str | None,
        typer.Argument(metavar="ID", help=f"{ID_HELP} Leave out to list campaigns.", show_default=False),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    show_all: Annotated[
        bool, typer.Option("--all", help="Also list rejected and cancelled campaigns.")
    ] = False,
    wide: Annotated[bool, typer.Option("--wide", help="Show full campaign ids in the list.")] = False,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch", "-w", help="Follow the campaign live until it ends, or every campaign (Ctrl-C stops)."
        ),
    ] = False,
    stack: Annotated[
        bool, typer.Option("--stack", help="Show the running stack's processes, restarts and health.")
    ] = False,
) -> None:
    """List campaigns (id, name, status, phase, spend against budget, best gain so far), or show
    one campaign's plan, jobs and budget; --watch follows one live; --stack shows the stack."""
    if stack:
        _print_stack(Settings(), as_json)
        return
    if watch:
        if as_json:
            console.print("[red]--watch is a live view for people: leave out --json[/red]")
            raise typer.Exit(2)
        if campaign_id is None:
            _watch_portfolio(show_all, wide)
        else:
            _watch(campaign_id)
        return
    if campaign_id is None:
        _list_campaigns(show_all=show_all, wide=wide, as_json=as_json)
        return
    prefix = campaign_id

    async def work(client: Client) -> tuple[CampaignView, list[PhaseView]]:
        full = await client.resolve_campaign(prefix)
        state = await client.campaign(full)
        if state is None:
            raise UnresolvedId("campaign", prefix, [])
        return state, await client.phases(full)

    state, phases = _with_client(Settings(), work)
    if as_json:
        summary = summarize(state, phases)
        brief = {**asdict(summary), "best_gain": None if summary.best is None else summary.best.gain}
        phase_views = [phase.model_dump(mode="json") for phase in phases]
        shown = {"campaign": state.model_dump(mode="json"), "phases": phase_views, "summary": brief}
        print(json.dumps(shown, default=str))
        return
    _print_campaign(Console(), state, phases)


def _print_stack(settings: Settings, as_json: bool) -> None:
    """Each process of the stack `rea up` started: running or not, restarts, last exit, and the
    answer of its health probe (services only; the servers have none)."""
    import httpx

    state = StackState.read(settings.home)
    if state is None:
        console.print(f"No running stack under {settings.home}.")
        raise typer.Exit(1)
    rows = []
    for process in state.processes:
        health = "-"
        if process.metrics_port:
            try:
                answer = httpx.get(f"http://127.0.0.1:{process.metrics_port}/healthz", timeout=2)
                health = "ok" if answer.status_code == 200 else f"failing ({answer.status_code})"
            except httpx.HTTPError:
                health = "no answer"
        running = is_running(process.pid)
        rows.append({**asdict(process), "running": running, "health": health})
    if as_json:
        print(json.dumps(rows))
        return
    table = Table(title=f"Stack under {settings.home}")
    for column in ("process", "pid", "running", "restarts", "last exit", "health"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(
            row["name"],
            str(row["pid"]),
            "yes" if row["running"] else "[red]no[/red]",
            str(row["restarts"]),
            row["last_exit"] or "-",
            row["health"],
        )
    Console().print(table)


async def _portfolio(
    client: Client, show_all: bool
) -> tuple[list[CampaignView], dict[str, list[PhaseView]], list[str]]:
    states = await client.campaigns(hidden=() if show_all else HIDDEN_STATUSES)
    phases = await client.phases_of([state.campaign_id for state in states])
    return states, phases, await client.campaign_ids()


def portfolio_table(
    states: list[CampaignView],
    phases: dict[str, list[PhaseView]],
    every_id: list[str],
    show_all: bool,
    wide: bool,
) -> Table:
    """Every campaign at a glance: workload, status, phase, spend against budget, best gain so
    far, jobs in flight (one row each)."""
    summaries = [summarize(state, phases[state.campaign_id]) for state in states]
    listed = [summary.campaign_id for summary in summaries]
    shown = {full: full for full in listed} if wide else short_ids(listed, every_id)
    table = Table(caption=None if show_all else "rejected and cancelled campaigns hidden (--all shows them)")
    table.add_column("id", no_wrap=True, min_width=max((len(cut) for cut in shown.values()), default=2))
    table.add_column("name")
    table.add_column("workload", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("phase", no_wrap=True)
    table.add_column("CPU-s spent / budget", justify="right", no_wrap=True)
    table.add_column("best", justify="right", no_wrap=True)
    table.add_column("in flight", justify="right", no_wrap=True)
    for summary in summaries:
        table.add_row(
            shown[summary.campaign_id],
            escape(summary.name),
            escape(summary.workload),
            summary.status,
            summary.phase or "",
            _spend(summary),
            format_gain(summary.best),
            str(summary.in_flight) if summary.in_flight else "",
        )
    return table


def _list_campaigns(show_all: bool, wide: bool, as_json: bool) -> None:
    states, phases, every_id = _with_client(Settings(), lambda client: _portfolio(client, show_all))
    if as_json:
        print(json.dumps([state.model_dump(mode="json") for state in states]))
        return
    if not states:
        hidden = "" if show_all else " (rejected and cancelled ones are hidden; --all shows them)"
        console.print(f"No campaigns{hidden}.")
        return
    Console().print(portfolio_table(states, phases, every_id, show_all, wide))


def _watch_portfolio(show_all: bool, wide: bool) -> None:
    """Every campaign live, from MongoDB about twice a second, until Ctrl-C."""
    out = Console()

    async def work(client: Client) -> None:
        with Live(console=out, auto_refresh=False) as live:
            while True:
                states, phases, every_id = await _portfolio(client, show_all)
                live.update(portfolio_table(states, phases, every_id, show_all, wide), refresh=True)
                await asyncio.sleep(WATCH_POLL_S)

    with contextlib.suppress(KeyboardInterrupt):
        _with_client(Settings(), work)


def _cpu(seconds: float) -> str:
    """CPU seconds as a person reads them: whole seconds, a decimal only while it matters."""
    return f"{seconds:,.0f}" if seconds >= 100 else f"{seconds:.1f}"


def _spend(summary: CampaignSummary) -> str:
    spent = _cpu(summary.spent_cpu_seconds)
    return spent if summary.budget_cpu_seconds is None else f"{spent} / {_cpu(summary.budget_cpu_seconds)}"


def _best_line(summary: CampaignSummary) -> str:
    best = summary.best
    if best is None:
        return "not known yet (no completed baseline and candidate on validation)"
    return (
        f"{format_gain(best)} NE gain: {escape(best.hypothesis_id or 'baseline')} "
        f"(validation NE {best.validation_ne:.4f} vs baseline {best.baseline_ne:.4f})"
    )


def _duration(seconds: float) -> str:
    """ "42s", "3m 05s", "1h 02m": how long a job has run."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole % 3600 // 60:02d}m"


def watch_view(
    campaign: CampaignView, phases: list[PhaseView], runs: dict[str, JobRun], now: datetime
) -> RenderableType:
    """One frame of `rea status ID --watch`: where the campaign stands, the jobs in flight, the
    budget burnt and the best so far."""
    summary = summarize(campaign, phases)
    phase = f", phase {summary.phase}" if summary.phase else ""
    header = (
        f"[bold]{summary.campaign_id}[/bold] {escape(summary.name)}: [bold]{summary.status}[/bold]{phase}"
    )
    every_job = [job for state in phases for job in state.jobs]
    finished = sum(job.status in FINISHED_JOB_STATUSES for job in every_job)
    flying = jobs_in_flight(phases)
    waiting = len(every_job) - finished - len(flying)
    counts = f"jobs: {finished} finished, {len(flying)} in flight, {waiting} waiting"
    grid = Table.grid(padding=(0, 1))
    if summary.budget_cpu_seconds:
        burnt = summary.spent_cpu_seconds / summary.budget_cpu_seconds
        grid.add_row(
            "budget",
            ProgressBar(total=summary.budget_cpu_seconds, completed=summary.spent_cpu_seconds, width=40),
            f"{_spend(summary)} CPU-s ({burnt:.0%})",
        )
    else:
        grid.add_row("spent", f"{_cpu(summary.spent_cpu_seconds)} CPU-s", "")
    grid.add_row("best", _best_line(summary), "")
    parts: list[RenderableType] = [header, grid, counts]
    if flying:
        table = Table(
            "job", "hypothesis", "status", "worker", "running for", title="in flight", title_justify="left"
        )
        for job in flying:
            spec = job.spec
            run = runs.get(spec.job_id)
            table.add_row(
                spec.job_id.removeprefix(f"{summary.campaign_id}-"),
                escape(spec.hypothesis_id or "baseline"),
                run.status if run else job.status,
                escape((run.worker if run else None) or job.worker or ""),
                _running_for(job.status, run, now),
            )
        parts.append(table)
    return Group(*parts)


def _running_for(executor_status: str, run: JobRun | None, now: datetime) -> str:
    """How long a job in flight has run, from the ledger's start time (the executor's own
    status says only that it was handed out)."""
    seconds = elapsed_s(run.started_at if run else None, now)
    if seconds is not None:
        return _duration(seconds)
    if run is not None:
        return "starting"
    return "waiting for a worker" if executor_status == "submitted" else ""


WATCH_POLL_S = 0.5


def _watch(prefix: str) -> None:
    """Follow a campaign from MongoDB about twice a second until it reaches a final status."""
    out = Console()

    async def work(client: Client) -> CampaignView:
        campaign_id = await client.resolve_campaign(prefix)
        with Live(console=out, auto_refresh=False) as live:
            while True:
                state = await client.campaign(campaign_id)
                if state is None:
                    raise UnresolvedId("campaign", prefix, [])
                phases = await client.phases(campaign_id, without_diagnostics=True)
                flying = [job.spec.job_id for job in jobs_in_flight(phases)]
                runs = await client.job_runs(flying) if flying else {}
                live.update(watch_view(state, phases, runs, datetime.now(UTC)), refresh=True)
                if state.status in FINAL_STATUSES:
                    return state
                await asyncio.sleep(WATCH_POLL_S)

    try:
        state = _with_client(Settings(), work)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    console.print(f"Campaign {state.campaign_id} is {state.status}.")


@app.command()
def jobs(
    campaign_id: CampaignIdArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
    wide: Annotated[bool, typer.Option("--wide", help="Show full job ids.")] = False,
) -> None:
    """Every job of a campaign over all its phases: what its config changed against the baseline,
    its NE on validation and test, its CPU seconds and why it failed, if it did."""

    async def work(client: Client) -> tuple[str, list[PhaseView], list[str]]:
        full = await client.resolve_campaign(campaign_id)
        return full, await client.phases(full, without_diagnostics=True), await client.campaign_ids()

    full_id, phases, every_id = _with_client(Settings(), work)
    rows = job_rows(full_id, phases)
    if as_json:
        print(json.dumps([asdict(row) for row in rows], default=str))
        return
    if not rows:
        console.print(f"Campaign {full_id} has no jobs yet.")
        return
    shown = [row.job_id if wide else row.short_id for row in rows]
    table = Table(title=f"jobs of {full_id}", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("job", no_wrap=True, min_width=max(len(job) for job in shown))
    table.add_column("phase", no_wrap=True)
    table.add_column("hypothesis", overflow="fold", min_width=10)
    table.add_column("status", no_wrap=True)
    table.add_column("changes", overflow="fold", min_width=16)
    table.add_column("val NE", justify="right", no_wrap=True)
    table.add_column("test NE", justify="right", no_wrap=True)
    table.add_column("CPU-s", justify="right", no_wrap=True)
    for job, row in zip(shown, rows, strict=True):
        table.add_row(
            job,
            row.phase,
            escape(row.hypothesis_id or "baseline"),
            row.status if row.failure is None else f"{row.status}: {row.failure}",
            escape(format_changes(row.changes)),
            "" if row.validation_ne is None else f"{row.validation_ne:.4f}",
            "" if row.test_ne is None else f"{row.test_ne:.4f}",
            "" if row.cpu_seconds is None else f"{row.cpu_seconds:.1f}",
        )
    Console().print(table)
    if not wide:
        short = short_ids([full_id], every_id)[full_id]
        example = next((row for row in rows if row.failure), rows[0])
        console.print(f"A job's output and failure: rea logs {short}-JOB (e.g. {short}-{example.short_id})")


def _when(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _no_output(run: JobRun | None, executor_status: str | None) -> str:
    """Why a job has no output to show, in words."""
    if run is None:
        return f"No output kept: no worker has started this job (it is {executor_status or 'unknown'})."
    if run.status in ("claimed", "running"):
        return f"No output kept yet: the job is {run.status}, and its output is kept when it finishes."
    if run.status in ("lost", "cancelled"):
        return f"No output kept: the job was {run.status} before its worker could keep any."
    return f"No output kept: the job {run.status} without printing anything."


@app.command()
def logs(
    job_id: Annotated[
        str,
        typer.Argument(
            metavar="JOB",
            help="A job id or a unique prefix of one, or a campaign id prefix and the rest of a job id, "
            "as `rea jobs` shows them: 3f2a91c0-validation-baseline-s0.",
            show_default=False,
        ),
    ],
) -> None:
    """A job's own output (the last 64 KiB of its stdout and stderr) and why it failed, if it did."""

    async def work(client: Client) -> tuple[str, JobRun | None, JobView | None]:
        full = await client.resolve_job(job_id)
        return full, await client.job_run(full), await client.job(full)

    full_id, run, tracked = _with_client(Settings(), work)
    executor_status = None if tracked is None else tracked.status
    out = Console(highlight=False)
    out.print(f"[bold]job[/bold]       {full_id}")
    if tracked is not None:
        spec = tracked.spec
        hypothesis = escape(spec.hypothesis_id or "baseline")
        out.print(f"campaign  {spec.campaign_id}  phase {spec.phase}  hypothesis {hypothesis}")
    run_status = run.status if run else executor_status
    also = f" (executor: {executor_status})" if executor_status and executor_status != run_status else ""
    worker = (run.worker if run else None) or (tracked.worker if tracked else None) or "none yet"
    cpu = f"{run.cpu_seconds:.1f}" if run else "0.0"
    out.print(f"status    {run_status}{also}  worker {escape(worker)}  CPU-s {cpu}")
    if run and run.started_at:
        ended = run.finished_at or datetime.now(UTC)
        took = _duration((ended - run.started_at).total_seconds())
        finished = f"  finished {_when(run.finished_at)}" if run.finished_at else "  (still running)"
        out.print(f"started   {_when(run.started_at)}{finished}  ({took})")
    error = tracked.output.error if tracked and tracked.output else None
    if error:
        out.print(f"[red]failure   {error.kind}: {escape(error.message)}[/red]")
    if run is None or not run.log:
        out.print(_no_output(run, executor_status))
        return
    cut = " (its last 64 KiB)" if len(run.log) >= LOG_LIMIT else ""
    out.rule(f"output{cut}", style="dim")
    sys.stdout.write(run.log if run.log.endswith("\n") else f"{run.log}\n")


def _by_phase(campaign: CampaignView) -> str:
    """ "1,234 CPU-s (validation 300, combination 100, ...)": the estimate a person approves."""
    by_phase = campaign.budget_by_phase
    if not by_phase:
        estimate = campaign.plan.estimated_cpu_seconds if campaign.plan else 0.0
        return f"{estimate:g} CPU-s"
    parts = ", ".join(f"{phase} {seconds:.0f}" for phase, seconds in by_phase.items())
    return f"{sum(by_phase.values()):.0f} CPU-s ({parts})"


def _print_campaign(out: Console, campaign: CampaignView, phases: list[PhaseView]) -> None:
    summary = summarize(campaign, phases)
    running = f", phase {summary.phase}" if summary.phase else ""
    out.print(f"[bold]{summary.campaign_id}[/bold] {escape(summary.name)}: {summary.status}{running}")
    for reason in campaign.reasons:
        out.print(f"  reason: {escape(reason)}")
    out.print(f"  spent: {_spend(summary)} CPU-s")
    out.print(f"  best so far: {_best_line(summary)}")
    if campaign.plan:
        out.print(
            f"  plan: {len(campaign.plan.jobs)} validation jobs; estimated {_by_phase(campaign)}; "
            f"approved by {campaign.approved_by}"
        )
    if campaign.checklist and campaign.status == "awaiting_approval":
        out.print("  approving it lets REA use:")
        for line in campaign.checklist.lines():
            out.print(f"    {escape(line)}")
    for dropped in campaign.dropped_hypotheses:
        out.print(f"  dropped: {dropped}")
    for notice in campaign.notices:
        out.print(f"  {notice}")
    for phase in phases:
        table = Table(
            "job", "hypothesis", "status", "val NE", "test NE", "CPU-s", title=f"phase {phase.phase}"
        )
        for job in phase.jobs:
            output = job.output
            val, test, cost = (output.validation, output.test, output.cost) if output else (None, None, None)
            table.add_row(
                job.spec.job_id.removeprefix(f"{summary.campaign_id}-"),
                escape(job.spec.hypothesis_id or "baseline"),
                job.status,
                f"{val.ne:.4f}" if val else "",
                f"{test.ne:.4f}" if test else "",
                f"{cost.cpu_seconds:.1f}" if cost else "",
            )
        out.print(table)
        gpu = phase.budget_gpu_seconds
        gpu_line = "" if gpu is None else f", {phase.spent_gpu_seconds:.1f} of {gpu:g} GPU-s"
        out.print(
            f"  budget: {phase.spent_cpu_seconds:.1f} of {phase.budget_cpu_seconds:g} CPU-s{gpu_line} spent"
        )
        for entry in phase.runbook:
            job_id = entry.job_id.removeprefix(f"{summary.campaign_id}-")
            line = escape(f"{job_id} failed ({entry.failure}): {entry.action} - {entry.reason}")
            if entry.escalated:
                message = escape(entry.message[:200])
                out.print(
                    f"  [bold red]ESCALATED[/bold red] {line} Message: {message} (rea logs shows it all)"
                )
            else:
                out.print(f"  runbook: {line}")


def proposal_summary(campaign: CampaignView) -> dict[str, Any]:
    """The machine-readable result: baseline and best on the test split, with the cost."""
    result = campaign.result
    if result is None:
        raise ValueError(f"campaign {campaign.campaign_id} has no result")
    return {
        "campaign_id": campaign.campaign_id,
        "status": campaign.status,
        "baseline": {"ne": result.baseline.ne, "auc": result.baseline.auc, "job_id": result.baseline.job_id},
        "best": {
            "ne": result.best.ne,
            "auc": result.best.auc,
            "job_id": result.best.job_id,
            "hypothesis_id": result.best.hypothesis_id,
            "changes": result.best_changes,
        },
        "ne_delta": result.ne_delta,
        "ne_relative_gain": result.ne_relative_gain,
        "ne_delta_ci": None if result.ne_delta_low is None else [result.ne_delta_low, result.ne_delta_high],
        "confidence": result.confidence,
        "p_value": result.p_value,
        "seeds": result.seeds,
        "verdict": result.verdict,
        "notes": result.notes,
        "auc_delta": result.auc_delta,
        "jobs_completed": result.jobs_completed,
        "jobs_failed": result.jobs_failed,
        "compute_seconds": result.compute_seconds,
    }


def _print_proposal(out: Console, campaign: CampaignView) -> None:
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
    if campaign.accepted_by:
        out.print(f"Proposal accepted by {campaign.accepted_by} at {str(campaign.accepted_at)[:19]}.")
    out.print(
        f"Jobs completed: {summary['jobs_completed']}, failed: {summary['jobs_failed']}, "
        f"compute: {summary['compute_seconds']:.1f} CPU-s."
    )


@app.command()
def proposal(
    campaign_id: CampaignIdArg,
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

    async def work(client: Client) -> tuple[str, CampaignView | None, dict[str, Any] | None]:
        full = await client.resolve_campaign(campaign_id)
        campaign = await client.campaign(full)
        return full, campaign, (await client.proposal(full) if wanted else None)

    full_id, campaign, document = _with_client(Settings(), work)
    if campaign is None or campaign.result is None:
        state = "not found" if campaign is None else campaign.status
        console.print(f"[red]no result for {full_id} ({state})[/red]")
        raise typer.Exit(1)
    if wanted and document is None:
        console.print(f"[red]the proposal of {full_id} is not rendered yet; try again shortly[/red]")
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
def audit(
    campaign_id: CampaignIdArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the entries as JSON lines.")] = False,
) -> None:
    """A campaign's trail of people's decisions: who decided what and when, who signed it with
    which key, and what each service made of it (accepted, or refused and why). ID may also be
    a kernel search's id (what `rea kernels search` printed): the trail of its request."""

    async def work(client: Client) -> tuple[str, list[AuditEntry]]:
        try:
            full = await client.resolve_campaign(campaign_id)
        except UnresolvedId:
            searched = await client.search_audit(campaign_id)
            if not searched:
                raise
            return campaign_id, searched
        return full, await client.audit(full)

    full_id, entries = _with_client(Settings(), work)
    if as_json:
        for entry in entries:
            print(entry.model_dump_json())
        return
    if not entries:
        console.print(f"No decision about {full_id} has reached a service.")
        return
    of_search = entries[0].search_id == full_id
    title = (
        f"the request for kernel search {full_id}"
        if of_search
        else f"decisions about {full_id} and its grant"
    )
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("when", "decision", "in the name of", "signed by (key)", "service", "verdict"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        signed = "unsigned" if entry.signed_by is None else f"{entry.signed_by} ({entry.key_id})"
        verdict = entry.verdict if entry.reason is None else f"{entry.verdict}: {entry.reason}"
        table.add_row(
            entry.occurred_at.strftime("%Y-%m-%d %H:%M:%S"),
            escape(entry.summary),
            escape(entry.decided_by),
            escape(signed),
            entry.consumer,
            escape(verdict),
        )
    Console().print(table)


@app.command()
def accept(
    campaign_id: CampaignIdArg,
    by: ByOption = None,
) -> None:
    """Accept a completed campaign's launch proposal."""
    _send_decision(
        campaign_id,
        by,
        _by_person(ProposalAccepted),
        frozenset({"completed"}),
        lambda full: f"Accepted the proposal of {full}.",
    )


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
    from rea.processes import exit_on_interrupt

    with exit_on_interrupt("demo", console):
        with console.status(f"Preparing dataset {dataset}..."):
            get_workload(DEMO_CAMPAIGN["workload"]).prepare(dataset)
        stack = EmbeddedStack(settings, attached=True)
        try:
            _bring_up(stack, settings.workers if workers is None else workers)
            campaign_id = new_id()
            request = {**DEMO_CAMPAIGN, "dataset": dataset}
            event = CampaignRequested(campaign_id=campaign_id, correlation_id=campaign_id, payload=request)
            terms = own_terms(
                settings, DEMO_CAMPAIGN["budget_cpu_seconds"], team="demo", auto_approve_up_to=900
            )
            campaign = _with_client(settings, lambda client: _run_demo(client, event, terms, timeout))
        except StackError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from exc
        finally:
            with console.status("Shutting down..."):
                stack.stop()
    if campaign is None or campaign.status != "completed":
        state = "timed out" if campaign is None else f"{campaign.status}: {campaign.reasons}"
        console.print(f"[red]The demo campaign did not complete ({state}). Logs: {stack.home / 'logs'}[/red]")
        raise typer.Exit(1)
    _print_proposal(Console(stderr=as_json), campaign)
    if as_json:
        print(json.dumps(proposal_summary(campaign)))


async def _run_demo(
    client: Client, event: CampaignRequested, terms: GrantTerms, timeout_s: float
) -> CampaignView | None:
    await client.ensure_grant(str(event.payload["grant"]), terms)
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
            jobs = [job for phase in await client.phases(event.campaign_id) for job in phase.jobs]
            if jobs:
                done = sum(job.status in FINISHED_JOB_STATUSES for job in jobs)
                progress.update(task, description="training jobs", total=len(jobs), completed=done)
            if campaign and campaign.status in FINAL_STATUSES:
                return campaign
            await asyncio.sleep(0.5)
    return None


@app.command()
def bench(
    workload: Annotated[
        list[str] | None,
        typer.Option("--workload", help="Dataset spec to benchmark on (repeat for several)."),
    ] = None,
    model: Annotated[str, typer.Option(help="The registered workload (model) to improve.")] = "ranker",
    suite: Annotated[
        str | None,
        typer.Option(
            help="Run a suite instead of --workload: 'dev' (what planner rules were tuned on) or "
            "'eval' (public data no rule was tuned on, and the example model)."
        ),
    ] = None,
    methods: Annotated[
        str,
        typer.Option(
            help="Comma-separated: rea, optuna (TPE), optuna-gp (GPSampler), random; rea-transfer, "
            "optuna-transfer, optuna-gp-transfer start from their runs on --transfer-from."
        ),
    ] = "rea,optuna,random",
    budget_cpu_seconds: Annotated[
        float, typer.Option(help="CPU seconds each method may spend per run.")
    ] = 300,
    seeds: Annotated[int, typer.Option(help="Runs per method and workload (seeds 0..K-1).")] = 3,
    out: Annotated[Path, typer.Option(help="Folder for results.json and gains.png.")] = Path("bench-results"),
    confirm_seeds: Annotated[int, typer.Option(help="Seeds each chosen config is confirmed on.")] = 3,
    parallel: Annotated[int, typer.Option(help="Jobs at a time, for every method.")] = 2,
    epochs: Annotated[
        int | None, typer.Option(help="Training epochs of every job (the fidelity), by the epochs role.")
    ] = None,
    rea_set: Annotated[
        list[str] | None,
        typer.Option(
            "--rea-set",
            help="KEY=VALUE: a campaign field REA's runs set otherwise, for an ablation (repeatable), "
            "e.g. --rea-set validation_share=0.3",
        ),
    ] = None,
    reuse: Annotated[
        list[Path] | None,
        typer.Option(
            "--reuse",
            exists=True,
            dir_okay=False,
            help="An earlier results.json whose runs (method, case, seed) are taken instead of run again, "
            "if made with the same budget, confirmation, parallelism and epochs (repeatable).",
        ),
    ] = None,
    transfer_from: Annotated[
        str | None,
        typer.Option(
            help="The suite that teaches the -transfer methods: one run of each on every case of it per "
            "seed (REA's campaigns fill the insights DB its transfer run starts from; each Optuna "
            "variant's best configs are enqueued in its transfer study)."
        ),
    ] = None,
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

    from rea.processes import exit_on_interrupt
    from rea_bench.bench import BenchPlan, run_bench
    from rea_bench.suites import SUITES, BenchCase

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # this command prints its own progress
    if (suite is None) == (not workload):
        console.print("[red]name the data with --workload (repeat for several) or a --suite, not both[/red]")
        raise typer.Exit(2)
    if suite is not None and suite not in SUITES:
        console.print(f"[red]unknown suite {suite!r}; known: {', '.join(SUITES)}[/red]")
        raise typer.Exit(2)
    cases = list(SUITES[suite]) if suite is not None else [BenchCase(model, w) for w in workload or []]
    for case in cases:
        try:
            schema = get_workload(case.model).schema
        except KeyError as exc:
            console.print(
                f"[red]unknown model {case.model!r}; registered: {', '.join(workload_names())}[/red]"
            )
            raise typer.Exit(2) from exc
        if epochs is not None and schema.roles().get(Role.EPOCHS) is None:
            console.print(f"[red]{case.model} declares no epochs knob; leave --epochs out[/red]")
            raise typer.Exit(2)
    rea_options: dict[str, Any] = {}
    for item in rea_set or []:
        key, eq, value = item.partition("=")
        if not eq or not key:
            console.print(f"[red]--rea-set takes KEY=VALUE, got {item!r}[/red]")
            raise typer.Exit(2)
        rea_options[key.strip()] = yaml.safe_load(value)
    plan = BenchPlan(
        cases=cases,
        rea_options=rea_options,
        methods=[m.strip() for m in methods.split(",") if m.strip()],
        budget_cpu_seconds=budget_cpu_seconds,
        seeds=seeds,
        out=out,
        confirm_seeds=confirm_seeds,
        parallel=parallel,
        epochs=epochs,
        suite=suite,
        warm_start=warm_start,
        transfer_from=transfer_from,
        reuse=list(reuse or []),
    )
    try:
        with exit_on_interrupt("bench", console):
            run_bench(plan, console)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    console.print(f"Wrote {out / 'results.json'}, {out / 'gains.png'} and {out / 'anytime.png'}")


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

    from rea.processes import exit_on_interrupt
    from rea_tools.chaos import ChaosPlan, run_chaos

    plan = ChaosPlan(campaigns=campaigns, malformed=malformed, seed=seed, timeout_s=timeout)
    with (
        exit_on_interrupt("chaos", console),
        tempfile.TemporaryDirectory(prefix="rea-chaos-") as tmp,
        console.status("Running campaigns under fault injection..."),
    ):
        report = asyncio.run(run_chaos(plan, home or Path(tmp), console))
    Console().print(report.table())
    for line in [*report.unfinished, *report.crashes]:
        console.print(f"[red]{line}[/red]")
    if not report.passed:
        raise typer.Exit(1)


keys_app = typer.Typer(
    help="Keys people sign decisions with (HMAC; see rea/signing.py). Services verify with every key "
    "in the keyring (REA_DECISION_KEYS_FILE); a person holds only their own.",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")


@keys_app.command("add")
def keys_add(
    key_id: Annotated[str, typer.Argument(help="The new key's id (e.g. the person's name).")],
    identity: Annotated[
        str | None, typer.Option(help="The only person the key signs for; omit for a shared key.")
    ] = None,
    keyring: Annotated[
        Path | None, typer.Option("--file", help="The services' keyring (default: REA_DECISION_KEYS_FILE).")
    ] = None,
    export: Annotated[
        Path | None, typer.Option(help="Also write a keyring of this key alone, to hand to its owner.")
    ] = None,
) -> None:
    """Add a fresh key to the services' keyring (creating it, mode 0600)."""
    path = keyring or Settings().decision_keys_path()
    try:
        grown = Keyring.load(path).adding(key_id, identity)
    except ValueError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from exc
    grown.write(path)
    whose = f"signs only as {identity}" if identity else "shared: signs in any name"
    console.print(f"Added key {key_id!r} ({whose}) to {path}.")
    if export is not None:
        grown.only(key_id).write(export)
        console.print(f"Its owner's keyring: {export} (REA_DECISION_KEYS_FILE there).")


@keys_app.command("list")
def keys_list(
    keyring: Annotated[Path | None, typer.Option("--file", help="Default: REA_DECISION_KEYS_FILE.")] = None,
) -> None:
    """The keys in a keyring: ids and whom they sign for, never the secrets."""
    path = keyring or Settings().decision_keys_path()
    try:
        keys = Keyring.load(path).keys
    except ValueError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from exc
    if not keys:
        console.print(f"No keyring at {path}: `rea up` makes one, `rea keys add` too.")
        return
    for key in keys.values():
        print(f"{key.key_id}\t{key.identity or '(shared)'}")


workloads_app = typer.Typer(
    help="Registered workloads: list them, or check one against REA's workload contract.",
    invoke_without_command=True,
)
app.add_typer(workloads_app, name="workloads")
CHECK_MARKS = {"passed": "[green]✓[/green]", "warned": "[yellow]![/yellow]", "failed": "[red]✗[/red]"}


@workloads_app.callback()
def workloads(
    ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False
) -> None:
    """List the registered workloads: knobs, roles covered (and the key ones missing), techniques."""
    if ctx.invoked_subcommand is not None:
        return
    from rea_tools.workload_check import summarise_all

    summaries = summarise_all()
    if as_json:
        print(json.dumps([asdict(summary) for summary in summaries]))
        return
    if not summaries:
        console.print("No workloads registered under the rea.workloads entry point.")
        return
    table = Table()
    table.add_column("workload", no_wrap=True)
    table.add_column("description")
    table.add_column("knobs", justify="right")
    table.add_column("roles")
    table.add_column("techniques")
    for summary in summaries:
        if summary.error:
            table.add_row(summary.name, f"[red]cannot load: {escape(summary.error)}[/red]", "", "", "")
            continue
        roles = f"{len(summary.roles)} of {summary.roles_total}"
        if summary.missing_key_roles:
            roles += f", missing {', '.join(summary.missing_key_roles)}"
        shipped = ", ".join(summary.techniques) if summary.techniques else "none"
        description = (
            summary.description if len(summary.description) <= 60 else summary.description[:59] + "…"
        )
        table.add_row(summary.name, escape(description), str(summary.knobs), roles, escape(shipped))
    Console().print(table)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


@workloads_app.command(
    "check",
    epilog="Exit code 0 when nothing failed (warnings allowed), 1 when a check failed, 2 for an "
    "unknown workload.",
)
def workloads_check(
    name: Annotated[str, typer.Argument(help="A registered workload (see `rea workloads`).")],
    dataset: Annotated[
        str | None,
        typer.Option(help="Dataset spec for the short job (default: the workload's example_dataset)."),
    ] = None,
    faults: Annotated[
        bool, typer.Option("--faults", help="Also inject oom and nan faults and check their error kinds.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds each job may run.")] = 300,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Check a workload against REA's contract, one short job included.

    Entry point, schema, roles, techniques and dataset; then one job at the lowest fidelity.
    """
    from rea_tools.workload_check import UnknownWorkload, counts, run_checks

    try:
        checks = run_checks(name, dataset=dataset, faults=faults, timeout_s=timeout)
    except UnknownWorkload as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from exc
    out = Console(highlight=False)
    done = []
    for check in checks:
        done.append(check)
        if not as_json:
            out.print(f"{CHECK_MARKS[check.status]} {check.name}: {escape(check.message)}")
    tally = counts(done)
    if as_json:
        print(json.dumps({"workload": name, "counts": tally, "checks": [asdict(check) for check in done]}))
    else:
        warnings = f"{tally['warned']} warning{'' if tally['warned'] == 1 else 's'}"
        verdict = "[red]FAILED[/red]" if tally["failed"] else "[green]OK[/green]"
        out.print(f"{verdict} {name}: {tally['passed']} passed, {warnings}, {tally['failed']} failed")
    if tally["failed"]:
        raise typer.Exit(1)


kernels_app = typer.Typer(
    help="KernelEvolve: the kernels the registry keeps, and the kernel benchmark.", no_args_is_help=True
)
app.add_typer(kernels_app, name="kernels")


@kernels_app.command("list")
def kernels_list(
    operator: Annotated[str | None, typer.Option(help="Only this operator's kernels.")] = None,
    target: Annotated[str | None, typer.Option(help="Only this target's kernels (cpu, triton).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The fastest correct kernel kept per operator, shape bucket, dtype, target and device, with
    its speedup over eager and torch.compile and the search that found it."""
    from rea.kernels import KernelEntry
    from rea_kernel.registry import KernelRegistry

    async def work(client: Client) -> list[KernelEntry]:
        return await KernelRegistry(client.db).entries(operator=operator, target=target)

    entries = _with_client(Settings(), work)
    if as_json:
        print(json.dumps([entry.model_dump(mode="json", exclude={"candidate"}) for entry in entries]))
        return
    if not entries:
        console.print("The kernel registry is empty: `rea kernels bench` searches this machine's CPU.")
        return
    table = Table(
        "operator", "bucket", "dtype", "target", "device", "vs eager", "vs compile", "params", "found by"
    )
    for entry in entries:
        compiled = entry.speedup_vs_compiled
        found = entry.provenance
        table.add_row(
            entry.operator,
            entry.bucket,
            entry.dtype,
            entry.target,
            escape(entry.device),
            f"{entry.speedup_vs_eager:.2f}x",
            "-" if compiled is None else f"{compiled:.2f}x",
            escape(
                " ".join(f"{name}={value}" for name, value in entry.candidate.params.items())
                or f"written by {entry.candidate.author}"
            ),
            f"{found.method}, {found.evaluations} evaluations",
        )
    Console().print(table)


@kernels_app.command("show")
def kernels_show(
    operator: Annotated[str, typer.Argument(help="An operator, e.g. layer_norm.")],
    bucket: Annotated[
        str | None, typer.Option(help="Only this shape bucket (see `rea kernels list`).")
    ] = None,
    target: Annotated[str | None, typer.Option(help="Only this target's kernels (cpu, triton).")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Also write each kernel's files to OUT/<bucket>-<digest>/.")
    ] = None,
) -> None:
    """A registry kernel's source, who wrote it and the evidence it was kept on: what a person
    reads before granting campaigns generated kernels (`rea grant create --allow-kernel-codegen`)."""
    from rich.syntax import Syntax

    from rea.kernels import KernelEntry
    from rea_kernel.registry import KernelRegistry

    async def work(client: Client) -> list[KernelEntry]:
        return await KernelRegistry(client.db).entries(operator=operator, target=target)

    entries = [entry for entry in _with_client(Settings(), work) if bucket in (None, entry.bucket)]
    if not entries:
        wanted = operator if bucket is None else f"{operator} {bucket}"
        console.print(f"[red]no registry kernel for {escape(wanted)}[/red]")
        raise typer.Exit(1)
    shown = Console()
    languages = {".py": "python", ".cpp": "cpp", ".cu": "cuda", ".c": "c", ".h": "cpp"}
    for entry in entries:
        candidate, found = entry.candidate, entry.provenance
        compiled = (
            "" if entry.speedup_vs_compiled is None else f", {entry.speedup_vs_compiled:.2f}x torch.compile"
        )
        lines = [
            f"written by {candidate.author}" + (f": {candidate.note}" if candidate.note else ""),
            f"{entry.speedup_vs_eager:.2f}x eager{compiled} on {entry.device}, shape {entry.shape}",
            f"{entry.correct_trials} correctness trials passed; found by {found.method} "
            f"(seed {found.seed}, {found.evaluations} evaluations, search {found.search_id})",
        ]
        if candidate.params:
            lines.append(f"parameters: {json.dumps(candidate.params)}")
        shown.rule(escape(entry.key))
        shown.print(escape("\n".join(lines)))
        for name, source in sorted(candidate.sources.items()):
            shown.print(f"[bold]{escape(name)}[/bold]")
            shown.print(Syntax(source, languages.get(Path(name).suffix, "text"), line_numbers=True))
        if out is not None:
            folder = out / f"{entry.bucket}-{candidate.digest}"
            folder.mkdir(parents=True, exist_ok=True)
            for name, source in candidate.sources.items():
                (folder / name).write_text(source)  # names are plain file names (Candidate checks)
            shown.print(f"written to {escape(str(folder))}")


def _shape_fields(text: str) -> dict[str, int | float | str]:
    """``k=v,k=v`` as a shape's fields: numbers where they read as numbers."""
    fields: dict[str, int | float | str] = {}
    for pair in filter(None, text.split(",")):
        name, _, value = pair.partition("=")
        for kind in (int, float):
            try:
                fields[name.strip()] = kind(value)
                break
            except ValueError:
                continue
        else:
            fields[name.strip()] = value.strip()
    return fields


@kernels_app.command("search")
def kernels_search(
    operator: Annotated[str, typer.Argument(help="An operator, e.g. embedding_bag_pooled, layer_norm.")],
    target: Annotated[str, typer.Option(help="cpu (timed here) or triton (needs a GPU).")] = "cpu",
    budget: Annotated[int, typer.Option(help="Candidates to evaluate, at most.")] = 24,
    method: Annotated[str, typer.Option(help="mcts_evolution, or random (the peer).")] = "mcts_evolution",
    seed: Annotated[int, typer.Option(help="The search's seed.")] = 0,
    shape: Annotated[
        list[str] | None,
        typer.Option(
            help="A shape to time on, as k=v pairs (tables=8,rows=100,dim=16,batch=8192,max_bag=6,mode=mean: "
            "what a job's kernel use reports); repeat for several. Default: the operator's benchmark shapes."
        ),
    ] = None,
    llm: Annotated[
        int,
        typer.Option(
            help="Then ask the configured LLM (REA_LLM_BASE_URL) to write up to this many more "
            "candidates, judged like the rest."
        ),
    ] = 0,
    warm_start: Annotated[
        bool,
        typer.Option(
            help="Start from the registry's kernels for OPERATOR on the service's device (found for "
            "other shapes); --no-warm-start: a cold search, as when comparing methods."
        ),
    ] = True,
    wait: Annotated[bool, typer.Option(help="Follow the search until it ends.")] = True,
    by: ByOption = None,
) -> None:
    """Ask the kernel service to search kernels for OPERATOR; prints the search id, follows it,
    and shows what it published. The request is signed like a person's other decisions."""
    from rea.events import KernelSearchRequested, KernelSearchRequestedPayload, describe_error
    from rea_kernel.registry import KernelRegistry
    from rea_kernel.searches import COLLECTION, FINISHED, KernelSearch

    settings = Settings()
    try:
        request = KernelSearchRequestedPayload.model_validate(
            {
                "operator": operator,
                "target": target,
                "budget": budget,
                "method": method,
                "seed": seed,
                "shapes": [_shape_fields(text) for text in shape or []],
                "synthesized": llm,
                "warm_start": warm_start,
                "requested_by": by or default_identity(settings),
            }
        )
    except ValidationError as exc:
        console.print(f"[red]{escape(describe_error(exc))}[/red]")
        raise typer.Exit(2) from exc
    search_id = new_id()
    event = KernelSearchRequested(search_id=search_id, correlation_id=search_id, payload=request)

    async def work(client: Client) -> KernelSearch | None:
        await client.publish(event)
        print(search_id)
        if not wait:
            return None
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console
        ) as bar:
            task = bar.add_task(f"{operator} on {target}: waiting for the kernel service", total=budget + llm)
            while True:
                doc = await client.db[COLLECTION].find_one({"_id": search_id})
                search = None if doc is None else KernelSearch.model_validate(doc["state"])
                if search is not None:
                    bar.update(
                        task,
                        description=f"{operator} on {target}: {search.status}",
                        completed=search.evaluations,
                    )
                    if search.status in FINISHED:
                        return search
                await asyncio.sleep(0.5)

    search = _with_client(settings, work)
    if search is None:
        return
    if search.status == "failed":
        console.print(f"[red]search {search_id} failed: {escape(search.reason)}[/red]")
        raise typer.Exit(1)
    console.print(f"search {search_id}: {escape(search.reason)}")

    async def kept(client: Client) -> list[Any]:
        entries = await KernelRegistry(client.db).entries(operator=operator, target=target)
        return [entry for entry in entries if entry.key in search.published]

    for entry in _with_client(Settings(), kept):
        compiled = (
            "" if entry.speedup_vs_compiled is None else f", {entry.speedup_vs_compiled:.2f}x torch.compile"
        )
        console.print(
            f"  {entry.bucket}: {entry.speedup_vs_eager:.2f}x eager{compiled} on {escape(entry.device)}"
        )


@kernels_app.command(
    "bench",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def kernels_bench(ctx: typer.Context) -> None:
    """Search every operator on this machine's CPU: speedups over eager and torch.compile, MCTS +
    evolution against random search, and the ranker's inference end to end with registry kernels
    (`rea kernels bench --help` for the options)."""
    from rea_bench.kernels import main as bench_main

    bench_main(ctx.args)


def main() -> None:
    app(sys.argv[1:])
