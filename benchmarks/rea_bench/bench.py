"""``rea bench``: REA against Optuna's TPE and random search at equal CPU budget.

Each method searches for a better config of the same workload with the same CPU-second
budget (see :mod:`rea_bench.search` for what the peers get). REA runs as itself: a campaign
on an embedded stack (real broker, database, services and workers) with every catalogue
hypothesis on offer and ``confirm_seeds=1``, so its whole budget goes to the search, as the
peers' does. Then the bench confirms every method's chosen config the same way, outside the
budgets: it and the baseline on ``confirm_seeds`` fresh seeds, on the test split; ``gain``
is (baseline - best) / baseline of the mean test NE. A bench runs *cases* (a model on a data
set): those named on the command line, or a suite (:mod:`rea_bench.suites`). With a teaching
suite, the ``-transfer`` methods start from what each method learned there
(:mod:`rea_bench.transfer`).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from statistics import fmean, pstdev
from typing import Any

from pydantic import ValidationError
from pymongo import MongoClient
from rich.console import Console
from rich.table import Table

from rea import plots
from rea.client import Client
from rea.events import CampaignRequested, CampaignResult, JobSpec, describe_error, new_id
from rea.grants import own_terms
from rea.insights import COLLECTIONS as INSIGHT_COLLECTIONS
from rea.knobs import Role
from rea.processes import new_children_killed_on_error
from rea.runtime import ensure_topics
from rea.settings import Settings
from rea.topics import Topics
from rea.views import CampaignView
from rea.workloads import get_workload, parameters_of, training_rows_of
from rea_bench.anytime import Trial, best_within, curve
from rea_bench.search import PEERS, SearchOutcome, budgeted_search, peer_setup, search_space
from rea_bench.suites import SUITES, BenchCase
from rea_bench.transfer import TRANSFER_METHODS, Lessons, is_transfer, taught, translated
from rea_executor.runner import prepare_dataset, run_job
from rea_executor.warm import WarmStarts
from rea_tools.stack import EmbeddedStack

METHODS = ("rea", *PEERS, *TRANSFER_METHODS)
OPTUNA = ("optuna", "optuna-gp")
"""The Optuna variants: REA is compared with the stronger of those that ran."""
CHECKPOINT = 0.5
"""The share of the budget at which each method's best-so-far config is also confirmed."""
CONFIRMATION_SEED = 10_000
FINAL = frozenset({"completed", "failed", "rejected"})
GRANT = "bench"
"""The grant REA's campaigns run under here: the bench's budget, auto-approved."""


@dataclass(frozen=True)
class BenchPlan:
    cases: list[BenchCase]
    methods: list[str]
    budget_cpu_seconds: float
    seeds: int
    out: Path
    confirm_seeds: int = 3
    parallel: int = 2
    epochs: int | None = None
    """Every job's epochs (the fidelity), through each model's epochs role; None: its default."""
    suite: str | None = None
    job_timeout_s: float = 1800
    job_memory_mb: int = 4096
    campaign_timeout_s: float = 7200
    warm_start: bool = False
    rea_options: dict[str, Any] = field(default_factory=dict)
    """Campaign fields REA's runs set differently from the bench's defaults: an ablation."""
    transfer_from: str | None = None
    """The suite whose runs teach the ``-transfer`` methods (one run per case and seed)."""
    reuse: list[Path] = field(default_factory=list)
    """Earlier ``results.json`` files whose runs (method, case, seed) are taken instead of run
    again, when they were made with the same budget, confirmation, parallelism and epochs (and,
    for REA, the same options): a long bench resumed, or peers kept across REA ablations."""

    def baseline(self, model: str) -> dict[str, Any]:
        """The overrides of ``model``'s baseline: its epochs knob, when ``epochs`` is set."""
        knob = get_workload(model).schema.roles().get(Role.EPOCHS)
        return {} if self.epochs is None or knob is None else {knob: self.epochs}


@dataclass
class WarmStart:
    workload: str  # the dataset spec
    seed: int
    first_best_test_ne: float
    first_spent_cpu_s: float
    reached: bool  # False: no job of the second campaign got to the first's best test NE
    second_reached_cpu_s: float | None  # None when not reached
    budget_fraction: float | None  # None when not reached: no share of the budget sufficed
    second_hypotheses: list[str]  # the first few it tried, history's picks first
    model: str = "ranker"


@dataclass
class BenchRun:
    method: str
    workload: str  # the dataset spec
    seed: int
    baseline_test_ne: float
    best_test_ne: float
    gain: float
    budget_used_cpu_s: float
    best_changes: dict[str, Any]
    trials: int
    best_ne_by_seed: list[float]
    baseline_ne_by_seed: list[float]
    model: str = "ranker"  # the registered workload trained
    curve: list[tuple[float, float]] = field(default_factory=list)
    """(CPU-s spent, best validation NE so far) after each trial that improved it."""
    checkpoint_gain: float | None = None
    """The test-NE gain of the best config found within :data:`CHECKPOINT` of the budget."""

    @property
    def label(self) -> str:
        return BenchCase(self.model, self.workload).label


def run_bench(plan: BenchPlan, console: Console) -> dict[str, Any]:
    """Run every method on every workload and seed; write ``results.json`` and ``gains.png``."""
    unknown = [m for m in plan.methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; known: {', '.join(METHODS)}")
    check_rea_options(plan.rea_options)
    teachers = check_transfer(plan)
    plan.out.mkdir(parents=True, exist_ok=True)
    for case in (*plan.cases, *teachers):
        workload = get_workload(case.model)
        problem = workload.dataset_error(case.dataset) or prepare_dataset(case.model, case.dataset)
        if problem:
            raise ValueError(f"dataset {case.dataset!r}: {problem}")
    reused = reusable_runs(plan)
    runs: list[BenchRun] = []
    warm: list[WarmStart] = []
    zygotes = WarmStarts()  # peers' jobs start warm, as REA's workers start theirs
    confirm = Confirmer(plan, zygotes)
    uses_rea = {"rea", "rea-transfer"} & set(plan.methods)
    stack = ReaStack(plan) if uses_rea or plan.warm_start else None
    lessons: dict[int, Lessons] = {}

    def taught_on(seed: int) -> Lessons:
        """This seed's teaching runs, made the first time a transfer run needs them."""
        if seed not in lessons:
            lessons[seed] = teach(plan, teachers, seed, stack, zygotes, console)
        return lessons[seed]

    try:
        for case in plan.cases:
            workload = get_workload(case.model)
            baseline = workload.schema.resolve(plan.baseline(case.model))
            for seed in range(plan.seeds):
                for method in plan.methods:
                    earlier = reused.get((method, case.label, seed))
                    if earlier is not None:
                        runs.append(earlier)
                        console.print(
                            f"{method} on {case.label}, seed {seed}: gain {earlier.gain:+.2%} (reused)"
                        )
                        continue
                    console.print(f"[bold]{method}[/bold] on {case.label}, seed {seed}...")
                    if method in ("rea", "rea-transfer"):
                        assert stack is not None
                        insights = taught_on(seed).insights_db if is_transfer(method) else None
                        config, spent, history = stack.campaign(case, seed, baseline, insights)
                    else:
                        warm_configs = (
                            carried(taught_on(seed), taught(method), case, baseline)
                            if is_transfer(method)
                            else []
                        )
                        outcome = peer_search(plan, method, case, seed, baseline, zygotes, warm_configs)
                        config, spent, history = (
                            outcome.best_config,
                            outcome.spent_cpu_seconds,
                            outcome.history,
                        )
                    runs.append(confirm.run(method, case, seed, baseline, config, spent, history))
                    # After every run, so that an interrupted bench keeps what it made.
                    _write_results(plan, runs, warm, summary=None, lessons=lessons)
                    last = runs[-1]
                    console.print(
                        f"  gain {last.gain:+.2%} (test NE {last.baseline_test_ne:.4f} -> "
                        f"{last.best_test_ne:.4f}), {spent:.0f} CPU-s in {last.trials} jobs; "
                        f"at {CHECKPOINT:.0%} of the budget {last.checkpoint_gain:+.2%}"
                    )
                if plan.warm_start:
                    assert stack is not None
                    console.print(f"[bold]warm start[/bold] on {case.label}, seed {seed}: two campaigns...")
                    warm.append(stack.warm_start(case, seed))
                    fraction = warm[-1].budget_fraction
                    console.print(
                        "  the second never reached the first's best"
                        if fraction is None
                        else f"  the second reached the first's best with {fraction:.0%} of its budget"
                    )
    finally:
        if stack is not None:
            stack.close()
        zygotes.close()
    summary = summarize(runs)
    if warm:
        summary.update(summarize_warm_start(warm))
    results = _write_results(plan, runs, warm, summary, lessons)
    print_table(console, runs, plan)
    print_goals(console, summary)
    for method in plan.methods:
        if method != "rea":
            console.print(f"{method}: {method_setup(method, plan)}")
    if warm:
        print_warm_start_table(console, warm, plan)
    (plan.out / "gains.png").write_bytes(plot_gains(runs))
    (plan.out / "anytime.png").write_bytes(plot_curves(runs, plan.budget_cpu_seconds))
    return results


def peer_search(
    plan: BenchPlan,
    method: str,
    case: BenchCase,
    seed: int,
    baseline: dict[str, Any],
    zygotes: WarmStarts,
    warm_configs: Sequence[dict[str, Any]] = (),
) -> SearchOutcome:
    """One peer's budgeted search on ``case`` (a transfer method runs the peer it names)."""
    workload = get_workload(case.model)
    return budgeted_search(
        taught(method),  # type: ignore[arg-type]
        workload.schema,
        baseline,
        plan.budget_cpu_seconds,
        partial(_job, plan, case, f"{method}-s{seed}", seed),
        partial(run_job, prepare=False, warm=zygotes),
        seed,
        plan.parallel,
        training_rows_of(workload, case.dataset),
        partial(parameters_of, workload, dataset=case.dataset),
        warm_configs,
    )


def check_transfer(plan: BenchPlan) -> tuple[BenchCase, ...]:
    """The teaching cases the plan's ``-transfer`` methods need (none without such a method);
    ValueError when the teaching suite is missing, unknown, or shares a data set with the cases."""
    wanted = [m for m in plan.methods if is_transfer(m)]
    if not wanted:
        return ()
    if plan.transfer_from is None:
        raise ValueError(f"{', '.join(wanted)} need a teaching suite: --transfer-from SUITE")
    if plan.transfer_from not in SUITES:
        raise ValueError(f"unknown teaching suite {plan.transfer_from!r}; known: {', '.join(SUITES)}")
    teachers = SUITES[plan.transfer_from]
    shared = sorted({c.dataset for c in teachers} & {c.dataset for c in plan.cases})
    if shared:
        raise ValueError(
            f"the teaching suite shares data with the cases ({', '.join(shared)}); not a transfer"
        )
    return teachers


def teach(
    plan: BenchPlan,
    teachers: tuple[BenchCase, ...],
    seed: int,
    stack: ReaStack | None,
    zygotes: WarmStarts,
    console: Console,
) -> Lessons:
    """One run per teaching case and method with a transfer variant in the plan, on ``seed``:
    REA's campaigns share one insights DB; each Optuna variant keeps its best config per case."""
    lessons = Lessons(seed)
    if "rea-transfer" in plan.methods:
        assert stack is not None
        console.print(f"[bold]teaching[/bold] REA on the {plan.transfer_from} suite, seed {seed}...")
        lessons.insights_db, lessons.runs = stack.teach(teachers, seed)
    for peer in OPTUNA:
        if f"{peer}-transfer" not in plan.methods:
            continue
        for case in teachers:
            console.print(f"[bold]teaching[/bold] {peer} on {case.label}, seed {seed}...")
            baseline = get_workload(case.model).schema.resolve(plan.baseline(case.model))
            outcome = peer_search(plan, peer, case, seed, baseline, zygotes)
            changes = {k: v for k, v in outcome.best_config.items() if baseline.get(k) != v}
            lessons.best_changes.setdefault(peer, []).append((case.model, changes))
            lessons.runs.append(
                {
                    "method": peer,
                    "case": case.label,
                    "seed": seed,
                    "spent_cpu_s": outcome.spent_cpu_seconds,
                    "best_validation_ne": outcome.best_validation_ne,
                    "best_changes": changes,
                }
            )
    return lessons


def carried(lessons: Lessons, peer: str, case: BenchCase, baseline: dict[str, Any]) -> list[dict[str, Any]]:
    """The peer's best teaching configs as configs of ``case``'s model, to enqueue."""
    target = get_workload(case.model).schema
    space = set(search_space(target))
    return [
        translated(changes, get_workload(model).schema, target, baseline, space)
        for model, changes in lessons.best_changes.get(peer, [])
    ]


def method_setup(method: str, plan: BenchPlan) -> str:
    """What a non-REA-cold method ran, in words."""
    if method == "rea-transfer":
        return (
            f"REA's campaign on the insights DB its campaigns on the {plan.transfer_from} suite left "
            "(one per case, same seed and budget)"
        )
    setup = peer_setup(taught(method))  # type: ignore[arg-type]
    if is_transfer(method):
        setup += f"; warm-started with its best config on each {plan.transfer_from} case (same seed, budget)"
    return setup


def _write_results(
    plan: BenchPlan,
    runs: list[BenchRun],
    warm: list[WarmStart],
    summary: dict[str, Any] | None,
    lessons: dict[int, Lessons] | None = None,
) -> dict[str, Any]:
    """``results.json``: after every run with ``summary`` None (a partial file, which
    ``--reuse`` can resume from), and once more with the summary at the end."""
    taught_runs = lessons or {}
    results = {
        "settings": _settings(plan),
        "runs": [asdict(run) for run in runs],
        "warm_start": [asdict(w) for w in warm],
        "teaching_runs": [run for seed in sorted(taught_runs) for run in taught_runs[seed].runs],
        "summary": summary,
    }
    (plan.out / "results.json").write_text(json.dumps(results, indent=2))
    return results


REUSE_MUST_MATCH = ("budget_cpu_seconds", "confirm_seeds", "parallel", "epochs")


def reusable_runs(plan: BenchPlan) -> dict[tuple[str, str, int], BenchRun]:
    """The runs of ``plan.reuse`` files this plan would make, by (method, case, seed); a file
    made with other settings is refused (ValueError), REA's runs only with the same options."""
    found: dict[tuple[str, str, int], BenchRun] = {}
    ours = _settings(plan)
    for path in plan.reuse:
        earlier = json.loads(path.read_text())
        settings = earlier["settings"]
        differ = [key for key in REUSE_MUST_MATCH if settings.get(key) != ours[key]]
        if differ:
            raise ValueError(f"{path} was made with other {', '.join(differ)}; its runs cannot be compared")
        for raw in earlier["runs"]:
            run = BenchRun(**raw)
            if taught(run.method) == "rea" and settings.get("rea_options", {}) != plan.rea_options:
                continue
            if is_transfer(run.method) and settings.get("transfer_from") != plan.transfer_from:
                continue
            if run.method in plan.methods and BenchCase(run.model, run.workload) in plan.cases:
                found.setdefault((run.method, run.label, run.seed), run)
    return found


def summarize(runs: list[BenchRun]) -> dict[str, Any]:
    """Mean gain per method per case (``model/dataset``), and whether REA beat Optuna on each."""
    mean_gain = _mean_per_case((run, run.gain) for run in runs)
    summary: dict[str, Any] = {"mean_gain": mean_gain}
    checkpoint = _mean_per_case((run, run.checkpoint_gain) for run in runs if run.checkpoint_gain is not None)
    if checkpoint:
        summary[f"mean_gain_at_{CHECKPOINT:g}_budget"] = checkpoint
    labels = {label for by_case in mean_gain.values() for label in by_case}
    peer = {label: gain for label in labels if (gain := strongest_optuna(mean_gain, label)[1]) is not None}
    if "rea" in mean_gain:
        summary["rea_wins"] = {
            label: gain > peer[label] for label, gain in mean_gain["rea"].items() if label in peer
        }
    for method in ("rea", "rea-transfer"):  # the anytime goals: half the budget against the peer's all
        if method in checkpoint:
            summary[f"{method}_at_{CHECKPOINT:g}_reaches_optuna"] = {
                label: gain >= peer[label] for label, gain in checkpoint[method].items() if label in peer
            }
    return summary


def _mean_per_case(values: Iterable[tuple[BenchRun, float]]) -> dict[str, dict[str, float]]:
    """The mean of a value over seeds, per method and case, in the order the runs came."""
    grouped: dict[str, dict[str, list[float]]] = {}
    for run, value in values:
        grouped.setdefault(run.method, {}).setdefault(run.label, []).append(value)
    return {method: {label: fmean(v) for label, v in by_case.items()} for method, by_case in grouped.items()}


def strongest_optuna(mean_gain: dict[str, dict[str, float]], label: str) -> tuple[str | None, float | None]:
    """The Optuna variant with the higher mean gain on a case, and that gain (None if none ran)."""
    ran = [(method, mean_gain[method][label]) for method in OPTUNA if label in mean_gain.get(method, {})]
    return max(ran, key=lambda item: item[1]) if ran else (None, None)


def summarize_warm_start(warm: list[WarmStart]) -> dict[str, Any]:
    """The warm-start pairs in ``summary``. The mean budget fraction is None unless every pair
    reached the first campaign's best: counting a miss as 1.0 made "never reached" look like
    "reached with the last CPU-second", so a broken warm start still produced a number."""
    fractions = [w.budget_fraction for w in warm if w.reached and w.budget_fraction is not None]
    return {
        "warm_start_budget_fraction": fmean(fractions) if len(fractions) == len(warm) else None,
        "warm_start_reached": len(fractions),
        "warm_start_pairs": len(warm),
    }


class Confirmer:
    """Each chosen config and the baseline on the same fresh seeds, on the test split."""

    def __init__(self, plan: BenchPlan, warm: WarmStarts | None = None) -> None:
        self.plan = plan
        self.warm = warm
        self.baselines: dict[BenchCase, list[float]] = {}

    def test_nes(self, case: BenchCase, config: dict[str, Any], name: str) -> list[float]:
        seeds = range(CONFIRMATION_SEED, CONFIRMATION_SEED + self.plan.confirm_seeds)
        with new_children_killed_on_error():  # an interrupted job would finish its training
            outputs = [
                run_job(job, prepare=False, warm=self.warm)
                for job in (_job(self.plan, case, f"confirm-{name}", seed, config, seed) for seed in seeds)
            ]
        failed = [o.error.message if o.error else o.status for o in outputs if o.test is None]
        if failed:
            raise RuntimeError(f"confirmation of {name} on {case.label} failed: {failed[0]}")
        return [o.test.ne for o in outputs if o.test is not None]

    def run(
        self,
        method: str,
        case: BenchCase,
        seed: int,
        baseline: dict[str, Any],
        config: dict[str, Any],
        spent: float,
        history: list[Trial],
    ) -> BenchRun:
        """Confirm the chosen config, and the best one found within :data:`CHECKPOINT` of the
        budget (the baseline when nothing had finished by then)."""
        if case not in self.baselines:
            self.baselines[case] = self.test_nes(case, baseline, "baseline")
        base = self.baselines[case]
        best = base if config == baseline else self.test_nes(case, config, f"{method}-s{seed}")
        early = best_within(history, CHECKPOINT * self.plan.budget_cpu_seconds) or baseline
        if early == config:
            at_checkpoint = best
        elif early == baseline:
            at_checkpoint = base
        else:
            at_checkpoint = self.test_nes(case, early, f"{method}-s{seed}-at-{CHECKPOINT:g}")
        base_ne, best_ne = fmean(base), fmean(best)
        return BenchRun(
            method=method,
            workload=case.dataset,
            seed=seed,
            baseline_test_ne=base_ne,
            best_test_ne=best_ne,
            gain=(base_ne - best_ne) / base_ne,
            budget_used_cpu_s=spent,
            best_changes={k: v for k, v in config.items() if baseline.get(k) != v},
            trials=len(history),
            best_ne_by_seed=best,
            baseline_ne_by_seed=base,
            model=case.model,
            curve=curve(history),
            checkpoint_gain=(base_ne - fmean(at_checkpoint)) / base_ne,
        )


class ReaStack:
    """The embedded servers, started once per bench. Every REA run gets its own namespace (topic
    prefix and database) and its own services, so no run learns from another's history, except
    the second campaign of a warm-start pair, which is the point of that experiment."""

    def __init__(self, plan: BenchPlan) -> None:
        self.plan = plan
        self.home = plan.out / "rea-stack"
        # Without credentials: every namespace's services and the insights copy reach them plainly.
        self.servers = EmbeddedStack(Settings(home=self.home, embedded_auth=False), attached=True)
        try:
            self.endpoints = self.servers.start_infra()
        except BaseException:  # an interrupt, above all: what did start must stop
            self.servers.stop()
            raise

    @contextmanager
    def namespace(self, insights_from: str | None = None) -> Iterator[Settings]:
        """A fresh topic prefix and database with its own services; ``insights_from`` names a
        database whose insights (effects per hypothesis, past winners) it starts with."""
        name = f"b{new_id()[:10]}"
        settings = Settings(
            home=self.home / name,
            kafka_bootstrap=self.endpoints.kafka_bootstrap,
            mongo_uri=self.endpoints.mongo_uri,
            redis_url=self.endpoints.redis_url,
            topic_prefix=name,
            mongo_db=name,
            topic_partitions=3,
        )
        asyncio.run(ensure_topics(self.endpoints.kafka_bootstrap, Topics(name), 3))
        if insights_from is not None:
            copy_insights(self.endpoints.mongo_uri, insights_from, name)
        services = EmbeddedStack(settings, attached=True)
        try:
            services.start_infra()
            services.start_services(workers=self.plan.parallel)
            yield settings
        finally:
            services.stop()

    def campaign(
        self, case: BenchCase, seed: int, baseline: dict[str, Any], insights_from: str | None = None
    ) -> tuple[dict[str, Any], float, list[Trial]]:
        """A campaign, cold or on the insights of database ``insights_from``: the best config,
        CPU seconds spent, and every job it ran in the order its phases concluded."""
        with self.namespace(insights_from) as settings:
            state = self._campaign(settings, case, seed)
        result = _result(state)
        history = [
            Trial(
                record.cost.cpu_seconds if record.cost else 0.0,
                record.validation.ne if record.status == "completed" and record.validation else None,
                {**baseline, **record.config},
            )
            for record in state.records
        ]
        return {**baseline, **result.best_changes}, result.compute_seconds, history

    def teach(self, cases: Iterable[BenchCase], seed: int) -> tuple[str, list[dict[str, Any]]]:
        """One campaign per case in one fresh namespace: the database their insights are in,
        and a summary of each campaign."""
        runs = []
        with self.namespace() as settings:
            for case in cases:
                result = _result(self._campaign(settings, case, seed))
                runs.append(
                    {
                        "method": "rea",
                        "case": case.label,
                        "seed": seed,
                        "spent_cpu_s": result.compute_seconds,
                        "best_changes": result.best_changes,
                    }
                )
        return settings.mongo_db, runs

    def warm_start(self, case: BenchCase, seed: int) -> WarmStart:
        """The same campaign twice on one fresh insights DB: how much of the second's budget it
        takes to reach the first's best test NE — that of the job the first chose, so one job
        is compared with one job (the result's mean over confirmation seeds would make the
        same config, run again on the same seed, miss it about half the time)."""
        with self.namespace() as settings:
            first = self._campaign(settings, case, seed)
            second = self._campaign(settings, case, seed)
        first_result = _result(first)
        best = first_result.best
        chosen = next((r for r in first.records if r.job_id == best.job_id and r.test), None)
        target = chosen.test.ne if chosen is not None and chosen.test is not None else best.ne
        spent = 0.0
        reached: float | None = None
        for record in second.records:
            spent += record.cost.cpu_seconds if record.cost else 0.0
            test = record.test
            if record.status == "completed" and test and test.ne <= target:
                reached = spent
                break
        budget = self.plan.budget_cpu_seconds
        return WarmStart(
            workload=case.dataset,
            model=case.model,
            seed=seed,
            first_best_test_ne=target,
            first_spent_cpu_s=first_result.compute_seconds,
            reached=reached is not None,
            second_reached_cpu_s=reached,
            budget_fraction=(reached / budget) if reached is not None else None,
            second_hypotheses=[h.id for h in second.hypotheses][:5],
        )

    def _campaign(self, settings: Settings, case: BenchCase, seed: int) -> CampaignView:
        plan = self.plan
        request = {
            "name": f"bench {case.label} seed {seed}",
            "workload": case.model,
            "dataset": case.dataset,
            "grant": GRANT,
            "budget_cpu_seconds": plan.budget_cpu_seconds,
            "max_parallel_jobs": plan.parallel,
            "max_hypotheses": 100,
            "max_exploitation_trials": None,
            "exploitation_patience": 0,  # the budget is the limit, as for the peers
            "confirm_seeds": 1,
            "baseline": plan.baseline(case.model),
            "seed": seed,
            "job_timeout_s": plan.job_timeout_s,
            "job_memory_mb": plan.job_memory_mb,
            **plan.rea_options,
        }
        state = asyncio.run(self._run(settings, request))
        if state is not None:  # the whole campaign, for reading why REA spent where it did
            campaigns = plan.out / "campaigns"
            campaigns.mkdir(exist_ok=True)
            slug = re.sub(r"[^A-Za-z0-9]+", "-", f"{case.label}-s{seed}-{state.campaign_id[:12]}")
            (campaigns / f"{slug}.json").write_text(state.model_dump_json(indent=1))
        if state is None or state.status != "completed":
            status = "timed out" if state is None else f"{state.status}: {state.reasons}"
            raise RuntimeError(f"REA's campaign on {case.label} (seed {seed}) did not complete: {status}")
        return state

    async def _run(self, settings: Settings, request: dict[str, Any]) -> CampaignView | None:
        client = Client(settings, self.endpoints)
        try:
            campaign_id = new_id()
            budget = self.plan.budget_cpu_seconds
            await client.ensure_grant(
                GRANT, own_terms(settings, budget, team="bench", auto_approve_up_to=budget)
            )
            await client.publish(
                CampaignRequested(campaign_id=campaign_id, correlation_id=campaign_id, payload=request)
            )
            state = await client.wait_for(campaign_id, FINAL, self.plan.campaign_timeout_s)
            # The next campaign in this namespace should see what this one taught: wait for the
            # logger to record it (it writes the insights before the event).
            logged = {"campaign_id": campaign_id, "type": "campaign.completed"}
            for _ in range(240):
                if state is None or state.status != "completed":
                    break
                if await client.db["events"].find_one(logged) is not None:
                    break
                await asyncio.sleep(0.25)
            return state
        finally:
            await client.close()

    def close(self) -> None:
        self.servers.stop()


def _result(state: CampaignView) -> CampaignResult:
    """The result of a completed campaign (one without is a planner bug, not a bench outcome)."""
    if state.result is None:
        raise RuntimeError(f"campaign {state.campaign_id} is {state.status} but has no result")
    return state.result


def copy_insights(mongo_uri: str, source: str, target: str) -> None:
    """Copy the insights collections of database ``source`` into ``target``."""
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
    try:
        for name in INSIGHT_COLLECTIONS:
            docs = list(client[source][name].find())
            if docs:
                client[target][name].insert_many(docs)
    finally:
        client.close()


FIXED_BY_THE_BENCH = frozenset(
    {"name", "grant", "workload", "dataset", "budget_cpu_seconds", "seed", "baseline"}
)


def check_rea_options(options: dict[str, Any]) -> None:
    """Raise ValueError unless ``options`` are campaign fields the bench leaves open, with values
    a campaign accepts."""
    from rea_planner.campaign import CampaignSpec

    fixed = sorted(FIXED_BY_THE_BENCH & set(options))
    if fixed:
        raise ValueError(f"REA options {fixed} are set by the bench for every method alike")
    try:
        CampaignSpec.model_validate(
            {"name": "check", "grant": GRANT, "dataset": "adult", "budget_cpu_seconds": 1, **options}
        )
    except ValidationError as exc:
        raise ValueError(f"REA options: {describe_error(exc)}") from None


def _job(
    plan: BenchPlan, case: BenchCase, name: str, seed: int, config: dict[str, Any], number: int
) -> JobSpec:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", case.label)[:40]
    return JobSpec(
        job_id=f"bench-{slug}-{name}-{number}",
        campaign_id="bench",
        phase="bench",
        workload=case.model,
        dataset=case.dataset,
        config=config,
        seed=seed,
        timeout_s=plan.job_timeout_s,
        memory_mb=plan.job_memory_mb,
    )


def _settings(plan: BenchPlan) -> dict[str, Any]:
    return {
        "suite": plan.suite,
        "cases": [asdict(case) for case in plan.cases],
        "peers": {m: method_setup(m, plan) for m in plan.methods if m != "rea"},
        "methods": plan.methods,
        "budget_cpu_seconds": plan.budget_cpu_seconds,
        "seeds": plan.seeds,
        "confirm_seeds": plan.confirm_seeds,
        "parallel": plan.parallel,
        "epochs": plan.epochs,
        "warm_start": plan.warm_start,
        "transfer_from": plan.transfer_from,
        "rea_options": plan.rea_options,
        "reused": [str(path) for path in plan.reuse],
    }


def print_table(console: Console, runs: list[BenchRun], plan: BenchPlan) -> None:
    table = Table(
        "model", "data set", "method", "mean gain", "sd", "vs best optuna", f"gain at {CHECKPOINT:.0%}",
        "CPU-s used", "jobs",
        title=f"Test-NE gain over the baseline at {plan.budget_cpu_seconds:g} CPU-s each "
        f"({plan.seeds} seeds, confirmed on {plan.confirm_seeds})",
    )  # fmt: skip
    mean_gain = summarize(runs)["mean_gain"]
    for case in plan.cases:
        peer, peer_gain = strongest_optuna(mean_gain, case.label)
        for method in plan.methods:
            mine = [r for r in runs if r.method == method and r.label == case.label]
            if not mine:
                continue
            gain = mean_gain[method][case.label]
            early = [r.checkpoint_gain for r in mine if r.checkpoint_gain is not None]
            ratio = "" if peer_gain is None or method == peer else _ratio(gain, peer_gain)
            table.add_row(
                case.model,
                case.dataset,
                method,
                f"{gain:+.2%}",
                f"{pstdev([r.gain for r in mine]):.2%}",
                ratio,
                f"{fmean(early):+.2%}" if early else "",
                f"{fmean(r.budget_used_cpu_s for r in mine):.0f}",
                f"{fmean(r.trials for r in mine):.1f}",
            )
    console.print(table, width=max(console.width, 150))


GAIN_RATIO_GOAL = 2.0


def print_goals(console: Console, summary: dict[str, Any]) -> None:
    """Each case against the goals REA is held to, with the stronger Optuna variant at 100% of
    the budget as the bar: twice its gain, and its gain already at half the budget (cold, and
    with a transfer run's insights)."""
    mean_gain = summary["mean_gain"]
    if "rea" not in mean_gain:
        return
    half = summary.get(f"mean_gain_at_{CHECKPOINT:g}_budget", {})
    table = Table(
        "case", "REA", "stronger Optuna", f"REA / Optuna (goal >= {GAIN_RATIO_GOAL:g}x)",
        f"REA at {CHECKPOINT:.0%} >= Optuna", f"REA transfer at {CHECKPOINT:.0%} >= Optuna",
        title="REA against its goals (mean test-NE gain over seeds)",
    )  # fmt: skip
    for label, gain in mean_gain["rea"].items():
        peer, peer_gain = strongest_optuna(mean_gain, label)
        if peer is None or peer_gain is None:
            continue
        table.add_row(
            label,
            f"{gain:+.2%}",
            f"{peer} {peer_gain:+.2%}",
            _ratio(gain, peer_gain),
            _reaches(half, "rea", label, peer_gain),
            _reaches(half, "rea-transfer", label, peer_gain),
        )
    console.print(table, width=max(console.width, 150))


def _ratio(gain: float, peer_gain: float) -> str:
    """REA's gain as a multiple of the peer's; a ratio to a loss or to nothing says nothing."""
    return f"{gain / peer_gain:.2f}x" if peer_gain > 0 else "peer gained nothing"


def _reaches(half: dict[str, dict[str, float]], method: str, label: str, bar: float) -> str:
    early = half.get(method, {}).get(label)
    if early is None:
        return "not run"
    return f"{'yes' if early >= bar else 'no'} ({early:+.2%})"


def print_warm_start_table(console: Console, warm: list[WarmStart], plan: BenchPlan) -> None:
    """One row per pair; a pair whose second campaign never got there says so, with no fraction."""
    table = Table(
        "model", "data set", "seed", "first's best test NE", "reached", "CPU-s to reach", "budget fraction",
        title=f"Warm start: CPU-s the second campaign needed to reach the first's best "
        f"(of {plan.budget_cpu_seconds:g})",
    )  # fmt: skip
    for w in warm:
        table.add_row(
            w.model,
            w.workload,
            str(w.seed),
            f"{w.first_best_test_ne:.4f}",
            "yes" if w.reached else "no",
            "" if w.second_reached_cpu_s is None else f"{w.second_reached_cpu_s:.1f}",
            "never reached" if w.budget_fraction is None else f"{w.budget_fraction:.2f}",
        )
    console.print(table)


def plot_gains(runs: list[BenchRun]) -> bytes:
    """Mean test-NE gain per case and method, with each seed's gain as a dot."""
    workloads = list(dict.fromkeys(r.label for r in runs))
    methods = list(dict.fromkeys(r.method for r in runs))
    figure, axes = plots.figure(max(6.0, 2.5 * len(workloads)), 4)
    width = 0.8 / max(1, len(methods))
    for index, method in enumerate(methods):
        xs, means = [], []
        for position, dataset in enumerate(workloads):
            gains = [r.gain * 100 for r in runs if r.method == method and r.label == dataset]
            if not gains:
                continue
            x = position + (index - (len(methods) - 1) / 2) * width
            xs.append(x)
            means.append(fmean(gains))
            axes.scatter([x] * len(gains), gains, color="black", s=8, zorder=3)
        axes.bar(xs, means, width=width, label=method)
    axes.axhline(0, color="black", linewidth=0.8)
    axes.set_xticks(range(len(workloads)), [w[:30] for w in workloads], fontsize=8)
    axes.set_ylabel("test NE gain over the baseline (%)")
    axes.legend()
    return plots.png(figure)


def plot_curves(runs: list[BenchRun], budget_cpu_seconds: float) -> bytes:
    """Best validation NE so far over CPU seconds: one panel per case, a line per method and seed."""
    from matplotlib.figure import Figure

    labels = list(dict.fromkeys(r.label for r in runs))
    methods = list(dict.fromkeys(r.method for r in runs))
    figure = Figure(figsize=(4.5 * len(labels), 3.6))
    colours = {method: f"C{index}" for index, method in enumerate(methods)}
    for index, label in enumerate(labels):
        axes = figure.add_subplot(1, len(labels), index + 1)
        for run in (r for r in runs if r.label == label and r.curve):
            xs = [x for x, _ in run.curve] + [budget_cpu_seconds]
            ys = [y for _, y in run.curve] + [run.curve[-1][1]]
            axes.step(xs, ys, where="post", color=colours[run.method], alpha=0.8, linewidth=1.2)
        axes.axvline(CHECKPOINT * budget_cpu_seconds, color="grey", linestyle=":", linewidth=0.8)
        axes.set_title(label[:40], fontsize=9)
        axes.set_xlabel("CPU seconds spent")
        if index == 0:
            axes.set_ylabel("best validation NE so far")
    for method in methods:
        figure.axes[0].plot([], [], color=colours[method], label=method)
    figure.axes[0].legend(fontsize=8)
    figure.tight_layout()
    return plots.png(figure)
