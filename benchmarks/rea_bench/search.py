"""The peers: Optuna's TPE and random search over a workload's knob schema, under a CPU budget.

They get what REA gets: the same knob schema (every non-fidelity knob, its range and scale),
the same baseline (enqueued as the first trial), the same fidelity (the baseline's epochs and
data fraction), the same job runner (a subprocess whose CPU seconds the OS measures) and the
same budget rule as REA's executor — a job is started only if the CPU seconds spent, plus the
estimates of the jobs in flight, plus its own config's estimate stay within the budget. Estimates come
from the same cost model REA's planner uses: its prior from the data's size, then learned from
the jobs run so far.

Optuna gets the set-up a careful user would pick for a few dozen trials, in two variants the
bench measures against each other: TPE (``optuna``) and Gaussian-process Bayesian optimisation
(``optuna-gp``), each with its random start-up trials sized to the budget (a quarter of the
trials the budget affords at the baseline's estimated cost, within 3..10; Optuna's default of
10 random trials would be most of a 300 CPU-s run) and a successive-halving pruner (ASHA: Li et
al., 2020) fed each job's validation NE at the end of every epoch, read from the job's progress
file while it trains; a pruned job is stopped at once and only the CPU it used is charged.
Random search runs every job to the end. The budget is a
hard cap: an estimate can be wrong (a sampled config may be many times the baseline's size), so
when the CPU spent plus what the running jobs have used so far passes the budget, they are
stopped, and a stopped job's config does not count as a result. What each ran is
in :func:`peer_setup`, which the bench prints and records.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Literal

import optuna

from rea.events import JobSpec
from rea.knobs import KnobSchema
from rea.processes import new_children_killed_on_error
from rea.workloads import JobOutput
from rea_bench.anytime import Trial
from rea_executor.runner import JobWatch
from rea_planner.costs import CostModel, Fidelity, ParameterCount
from rea_planner.exploitation import search_space

RunJob = Callable[..., JobOutput]
"""Runs a job to its end: ``run_job(spec, watch=JobWatch())`` (see :mod:`rea_executor.runner`)."""
Sampler = Literal["optuna", "optuna-gp", "random"]
PEERS: tuple[Sampler, ...] = ("optuna", "optuna-gp", "random")


@dataclass(frozen=True)
class SearchOutcome:
    best_config: dict[str, Any]
    best_validation_ne: float
    spent_cpu_seconds: float
    trials: int
    failed: int
    history: list[Trial]
    """Every trial in the order it finished (:mod:`rea_bench.anytime`)."""
    startup_trials: int = 0


PRUNER_MIN_EPOCHS = 1
PRUNER_REDUCTION = 3
POLL_S = 0.2


STARTUP_SHARE = 4
STARTUP_RANGE = (3, 10)


def startup_trials(affordable: float) -> int:
    """Random start-up trials for a model-based sampler: a quarter of the trials the budget
    affords, within :data:`STARTUP_RANGE`."""
    low, high = STARTUP_RANGE
    return max(low, min(high, int(affordable) // STARTUP_SHARE))


def _sampler(sampler: Sampler, seed: int, startup: int = STARTUP_RANGE[1]) -> optuna.samplers.BaseSampler:
    if sampler == "optuna":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    if sampler == "optuna-gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    return optuna.samplers.RandomSampler(seed)


def _pruner(sampler: Sampler) -> optuna.pruners.BasePruner:
    if sampler != "random":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=PRUNER_MIN_EPOCHS, reduction_factor=PRUNER_REDUCTION
        )
    return optuna.pruners.NopPruner()


def peer_setup(sampler: Sampler) -> str:
    """What a peer ran, in words: sampler, pruner and Optuna's version."""
    pruner = (
        f"SuccessiveHalvingPruner(min_resource={PRUNER_MIN_EPOCHS}, reduction_factor={PRUNER_REDUCTION}) "
        "on per-epoch validation NE"
        if sampler != "random"
        else "no pruner"
    )
    low, high = STARTUP_RANGE
    startup = (
        ""
        if sampler == "random"
        else f" (n_startup_trials: affordable trials / {STARTUP_SHARE}, {low}..{high})"
    )
    return f"{type(_sampler(sampler, 0)).__name__}{startup}, {pruner}; optuna {optuna.__version__}"


@dataclass
class InFlight:
    """A peer's job in flight: its trial, reserved estimate, and what the runner shares of it."""

    trial: optuna.Trial
    estimate: float
    watch: JobWatch
    reported: int = 0

    def report(self) -> None:
        """Tell the study the epochs the job finished since the last look; stop it if pruned."""
        if self.watch.stopping.is_set():
            return
        epochs = list(self.watch.progress)
        for record in epochs[self.reported :]:
            self.trial.report(record.val_ne, record.epoch)
        if len(epochs) > self.reported:
            self.reported = len(epochs)
            if self.trial.should_prune():
                self.watch.stop("pruned", f"pruned after {len(epochs)} epoch(s)")


def budgeted_search(
    sampler: Sampler,
    schema: KnobSchema,
    baseline: dict[str, Any],
    budget_cpu_seconds: float,
    make_job: Callable[[dict[str, Any], int], JobSpec],
    run_job: RunJob,
    seed: int,
    parallel: int = 2,
    training_rows: int | None = None,
    parameters: ParameterCount | None = None,
    warm_configs: Sequence[dict[str, Any]] = (),
) -> SearchOutcome:
    """Minimise validation NE with ``sampler`` until the budget allows no further job; before any
    job has finished, each is priced by the planner's prior from ``training_rows`` and the
    ``parameters`` of its config's model. ``warm_configs`` (values for the search space's knobs)
    are tried right after the baseline: a study warm-started by hand."""
    fidelity = Fidelity.of(schema)
    prior = CostModel.from_history(fidelity, [], training_rows, parameters)
    startup = startup_trials(budget_cpu_seconds / max(prior.estimate(baseline), 1e-9))
    study = optuna.create_study(
        direction="minimize", sampler=_sampler(sampler, seed, startup), pruner=_pruner(sampler)
    )
    space = search_space(schema)
    for config in ({name: baseline[name] for name in space}, *warm_configs):
        study.enqueue_trial(config, skip_if_exists=True)
    ended: list[Trial] = []
    spent = 0.0
    failed = 0
    running: dict[Future[JobOutput], InFlight] = {}
    waiting: optuna.Trial | None = None

    def settled() -> bool:
        return all(future.done() for future in running)

    # On an interrupt the pool would wait for its jobs to finish (minutes): kill them first.
    with ThreadPoolExecutor(parallel) as pool, new_children_killed_on_error(settled):
        while True:
            history = [{"config": t.config, "cost": {"cpu_seconds": t.cpu_seconds}} for t in ended]
            costs = CostModel.from_history(fidelity, history, training_rows, parameters)
            while len(running) < parallel:
                # The next trial's own config is estimated (a small batch costs more), as REA's
                # executor does; one that does not fit waits for running jobs to free budget.
                if waiting is None:
                    waiting = study.ask(space)
                config = {**baseline, **waiting.params}
                estimate = costs.estimate(config)
                reserved = sum(job.estimate for job in running.values())
                if spent + reserved + estimate > budget_cpu_seconds:
                    break
                watch = JobWatch()
                spec = make_job(config, waiting.number)
                running[pool.submit(run_job, spec, watch=watch)] = InFlight(waiting, estimate, watch)
                waiting = None
            if not running:
                if waiting is not None:  # asked but never affordable: not a trial that ran
                    study.tell(waiting, state=optuna.trial.TrialState.FAIL)
                break
            done, _ = wait(running, timeout=POLL_S, return_when=FIRST_COMPLETED)
            for job in running.values():
                job.report()
            if spent + sum(job.watch.cpu_seconds for job in running.values()) > budget_cpu_seconds:
                for job in running.values():  # the budget is a hard cap: what runs past it stops
                    job.watch.stop("killed", "the budget is spent")
            for future in done:
                finished = running.pop(future)
                trial, watch = finished.trial, finished.watch
                output = future.result()
                cost = output.cost.cpu_seconds if output.cost else 0.0
                spent += cost
                ne = output.validation.ne if output.status == "ok" and output.validation is not None else None
                ended.append(Trial(cost, ne, {**baseline, **trial.params}))
                if ne is not None:
                    study.tell(trial, ne)
                elif watch.stopping.is_set():
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                else:
                    failed += 1
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        raise RuntimeError(f"{sampler}: no trial completed within {budget_cpu_seconds:g} CPU-s")
    best = min(completed, key=lambda t: t.value if t.value is not None else float("inf"))
    assert best.value is not None
    return SearchOutcome(
        {**baseline, **best.params},
        best.value,
        round(spent, 2),
        len(ended),
        failed,
        ended,
        startup,
    )
