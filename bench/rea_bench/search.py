"""The peers: Optuna's TPE and random search over a workload's knob schema, under a CPU budget.

They get what REA gets: the same knob schema (every non-fidelity knob, its range and scale),
the same baseline (enqueued as the first trial), the same fidelity (the baseline's epochs and
data fraction), the same job runner (a subprocess whose CPU seconds the OS measures) and the
same budget rule as REA's executor — a job is started only if the CPU seconds spent, plus the
estimates of the jobs in flight, plus its own estimate stay within the budget. Estimates come
from the same cost model REA's planner uses, learned from the jobs run so far.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Literal

import optuna

from rea.events import JobSpec
from rea.knobs import KnobSchema
from rea.processes import new_children_killed_on_error
from rea.workloads import JobOutput
from rea_planner.costs import CostModel, Fidelity
from rea_planner.exploitation import search_space

RunJob = Callable[[JobSpec], JobOutput]
Sampler = Literal["optuna", "random"]


@dataclass(frozen=True)
class SearchOutcome:
    best_config: dict[str, Any]
    best_validation_ne: float
    spent_cpu_seconds: float
    trials: int
    failed: int


def budgeted_search(
    sampler: Sampler,
    schema: KnobSchema,
    baseline: dict[str, Any],
    budget_cpu_seconds: float,
    make_job: Callable[[dict[str, Any], int], JobSpec],
    run_job: RunJob,
    seed: int,
    parallel: int = 2,
) -> SearchOutcome:
    """Minimise validation NE with ``sampler`` until the budget allows no further job."""
    chosen = (
        optuna.samplers.TPESampler(seed=seed) if sampler == "optuna" else optuna.samplers.RandomSampler(seed)
    )
    study = optuna.create_study(direction="minimize", sampler=chosen)
    space = search_space(schema)
    study.enqueue_trial({name: baseline[name] for name in space})
    history: list[dict[str, Any]] = []
    spent = 0.0
    failed = 0
    running: dict[Future[JobOutput], tuple[optuna.Trial, float]] = {}

    def settled() -> bool:
        return all(future.done() for future in running)

    # On an interrupt the pool would wait for its jobs to finish (minutes): kill them first.
    with ThreadPoolExecutor(parallel) as pool, new_children_killed_on_error(settled):
        while True:
            costs = CostModel.from_history(Fidelity.of(schema), history)
            while len(running) < parallel:
                estimate = costs.estimate(baseline)
                reserved = sum(estimate_of for _, estimate_of in running.values())
                if spent + reserved + estimate > budget_cpu_seconds:
                    break
                trial = study.ask(space)
                config = {**baseline, **trial.params}
                running[pool.submit(run_job, make_job(config, trial.number))] = (trial, estimate)
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                trial, _ = running.pop(future)
                output = future.result()
                cost = output.cost.cpu_seconds if output.cost else 0.0
                spent += cost
                history.append({"config": {**baseline, **trial.params}, "cost": {"cpu_seconds": cost}})
                if output.status == "ok" and output.validation is not None:
                    study.tell(trial, output.validation.ne)
                else:
                    failed += 1
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        raise RuntimeError(f"{sampler}: no trial completed within {budget_cpu_seconds:g} CPU-s")
    best = min(completed, key=lambda t: t.value if t.value is not None else float("inf"))
    assert best.value is not None
    return SearchOutcome({**baseline, **best.params}, best.value, round(spent, 2), len(history), failed)
