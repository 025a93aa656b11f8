"""Contract checks for a workload (``rea workloads check NAME``): what REA needs from it, and
what degrades when something is missing.

A workload author should learn here, before a campaign spends budget, that the entry point
does not load, that a technique names a knob the schema lacks, or that the trainer writes an
unusable :class:`~rea.workloads.JobOutput`. Each check yields a :class:`Check` whose message
says what is wrong and how to fix it. Missing roles only *warn*: REA still runs, with less.

The short job goes through the executor's own runner (:func:`rea_executor.runner.run_job`),
so it is launched, limited, measured and classified exactly as a worker would.
"""

from __future__ import annotations

import math
import shlex
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from rea.knobs import Knob, KnobSchema, KnobType, Role
from rea.settings import Settings
from rea.workloads import (
    ENTRY_POINT_GROUP,
    FAULT_ENV,
    JobOutput,
    Workload,
    dataset_problems,
    techniques_of,
    workload_names,
)

if TYPE_CHECKING:
    from rea_executor.warm import WarmStarts

Status = Literal["passed", "warned", "failed"]
FALLBACK_DATASET = "synthetic:rows=4000"
"""Trained on by workloads that declare no ``example_dataset`` (it suits the ``ranker``)."""
SHORT_DATA_FRACTION = 0.1
"""The smallest data share a check job trains on: less leaves too few rows to score."""
JOB_TIMEOUT_S = 300.0

ATTRIBUTES = ("name", "description", "schema")
METHODS = ("command", "dataset_error", "prepare")

RELIED_ON: dict[Role, str] = {
    Role.LEARNING_RATE: "NaN recovery cannot lower the learning rate and exploitation cannot tune it",
    Role.BATCH_SIZE: "OOM recovery cannot halve the batch size",
    Role.EPOCHS: "no screening, and the cost model treats every job as one unit of work",
    Role.GRAD_CLIP: "NaN recovery lowers the learning rate only (it cannot clip gradients)",
}
"""The roles REA's runbook, search, cost model and fidelity act on, and what each one's absence costs."""


@dataclass(frozen=True)
class _Contract:
    type: KnobType
    legal: Callable[[float, float], bool] | None = None
    says: str = ""


_CONTRACTS: dict[Role, _Contract] = {
    Role.LEARNING_RATE: _Contract("float", lambda lo, hi: lo > 0, "float > 0"),
    Role.BATCH_SIZE: _Contract("int", lambda lo, hi: lo >= 1, "int > 0"),
    Role.EPOCHS: _Contract("int", lambda lo, hi: lo >= 1, "int >= 1"),
    Role.DATA_FRACTION: _Contract("float", lambda lo, hi: lo > 0 and hi <= 1, "float in (0, 1]"),
    Role.EMBEDDING_DIM: _Contract("int", lambda lo, hi: lo >= 1, "int > 0"),
    Role.HASH_BUCKETS: _Contract("int", lambda lo, hi: lo >= 0, "int >= 0"),
    Role.WEIGHT_DECAY: _Contract("float", lambda lo, hi: lo >= 0, "float >= 0"),
    Role.EMBEDDING_L2: _Contract("float", lambda lo, hi: lo >= 0, "float >= 0"),
    Role.DROPOUT: _Contract("float", lambda lo, hi: lo >= 0 and hi < 1, "float in [0, 1)"),
    Role.GRAD_CLIP: _Contract("float", lambda lo, hi: lo >= 0, "float >= 0"),
    Role.OPTIMIZER: _Contract("categorical"),
    Role.EMBEDDING_OPTIMIZER: _Contract("categorical"),
    Role.LR_SCHEDULE: _Contract("categorical"),
    Role.CROSS_LAYERS: _Contract("int", lambda lo, hi: lo >= 0, "int >= 0"),
    Role.CROSS_RANK: _Contract("int", lambda lo, hi: lo >= 0, "int >= 0"),
    Role.FM_TERM: _Contract("bool"),
    Role.MLP_WIDTH: _Contract("int", lambda lo, hi: lo >= 1, "int > 0"),
    Role.MLP_DEPTH: _Contract("int", lambda lo, hi: lo >= 1, "int >= 1"),
    Role.NORMALISATION: _Contract("bool"),
    Role.ATTENTION_LAYERS: _Contract("int", lambda lo, hi: lo >= 0, "int >= 0"),
    Role.ATTENTION_HEADS: _Contract("int", lambda lo, hi: lo >= 1, "int > 0"),
    Role.TEMPERATURE: _Contract("float", lambda lo, hi: lo > 0, "float > 0"),
}
"""What each role's knob must take (see :class:`~rea.knobs.Role`): a technique written against a
role assumes it, so a knob that breaks it would be handed values it cannot mean."""


@dataclass(frozen=True)
class Check:
    """One check's outcome; ``message`` says what is missing and how to fix it."""

    name: str
    status: Status
    message: str


class UnknownWorkload(LookupError):
    """No workload of that name is registered under the ``rea.workloads`` entry point."""

    def __init__(self, name: str, registered: list[str]) -> None:
        super().__init__(name)
        self.name, self.registered = name, registered

    def __str__(self) -> str:
        known = ", ".join(self.registered) or "none"
        return f"unknown workload {self.name!r}; registered under {ENTRY_POINT_GROUP!r}: {known}"


@dataclass(frozen=True)
class WorkloadSummary:
    """One row of ``rea workloads``."""

    name: str
    description: str = ""
    knobs: int = 0
    roles: list[str] = field(default_factory=list)
    roles_total: int = len(Role)
    missing_key_roles: list[str] = field(default_factory=list)
    techniques: list[str] = field(default_factory=list)
    example_dataset: str | None = None
    error: str | None = None


def summarise(name: str) -> WorkloadSummary:
    """What ``rea workloads`` shows for one registered workload (its load error, if it fails)."""
    check, workload = load(name)
    if workload is None:
        return WorkloadSummary(name=name, error=check.message)
    schema = workload.schema
    if not isinstance(schema, KnobSchema):
        return WorkloadSummary(
            name=name, description=workload.description, error="schema is not a KnobSchema"
        )
    roles = schema.roles()
    return WorkloadSummary(
        name=name,
        description=workload.description,
        knobs=len(schema.knobs),
        roles=sorted(str(role) for role in roles),
        missing_key_roles=[str(role) for role in RELIED_ON if role not in roles],
        techniques=[technique.id for technique in techniques_of(workload)],
        example_dataset=getattr(workload, "example_dataset", None),
    )


def summarise_all() -> list[WorkloadSummary]:
    return [summarise(name) for name in workload_names()]


def run_checks(
    name: str, dataset: str | None = None, faults: bool = False, timeout_s: float = JOB_TIMEOUT_S
) -> Iterator[Check]:
    """Every check on the registered workload ``name``, in order, as each finishes; raises
    :class:`UnknownWorkload` at once (not on first iteration) for a name nobody registered."""
    registered = workload_names()
    if name not in registered:
        raise UnknownWorkload(name, registered)
    return _run_checks(name, dataset, faults, timeout_s)


def _run_checks(name: str, dataset: str | None, faults: bool, timeout_s: float) -> Iterator[Check]:
    loaded, workload = load(name)
    yield loaded
    if workload is not None:
        yield from check_workload(workload, name, dataset, faults, timeout_s)


def load(name: str) -> tuple[Check, Workload | None]:
    """Load ``name`` through its entry point, as every REA service does; the workload is None
    when it cannot be used at all."""
    entry = next((ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name), None)
    if entry is None:
        raise UnknownWorkload(name, workload_names())
    where = f"{name} = {entry.value!r}"
    try:
        loaded = entry.load()
    except ValidationError as exc:
        return _fail(
            "entry point", f"{where}: importing it built an invalid knob schema: {_errors(exc)}"
        ), None
    except Exception as exc:
        module = entry.value.partition(":")[0]
        message = (
            f"{where}: importing it raised {type(exc).__name__}: {exc}; try `python -c 'import {module}'`"
        )
        return _fail("entry point", message), None
    missing = [attr for attr in ATTRIBUTES if not hasattr(loaded, attr)]
    missing += [method for method in METHODS if not callable(getattr(loaded, method, None))]
    if missing or not isinstance(loaded, Workload):
        message = (
            f"{where} gives a {type(loaded).__name__}, not a Workload: it lacks {', '.join(missing)} "
            "(see the Workload protocol in rea.workloads)"
        )
        return _fail("entry point", message), None
    if loaded.name != name:
        message = (
            f"{where} loads, but its name is {loaded.name!r}: campaigns and jobs refer to it as "
            f"{name!r}; make the two the same"
        )
        return Check("entry point", "warned", message), loaded
    return Check("entry point", "passed", f"{where} loads and is a Workload"), loaded


def check_workload(
    workload: Workload,
    name: str | None = None,
    dataset: str | None = None,
    faults: bool = False,
    timeout_s: float = JOB_TIMEOUT_S,
) -> Iterator[Check]:
    """The checks on a loaded workload, ``name`` being what it is registered as (the executor's
    runner loads it by that name to run the short job)."""
    name = name or workload.name
    schema_check = check_schema(workload)
    yield schema_check
    if schema_check.status == "failed":
        return
    yield from check_roles(workload.schema)
    yield check_techniques(workload)
    chosen, dataset_checks = check_dataset(workload, dataset)
    yield from dataset_checks
    if any(check.status == "failed" for check in dataset_checks):
        return
    yield check_dataset_files(workload, chosen, Settings().allowed_data_roots())
    prepared = check_prepare(workload, chosen)
    yield prepared
    if prepared.status == "failed":
        return
    config = short_config(workload.schema)
    output = run_short_job(workload, name, chosen, config, timeout_s=timeout_s)
    yield check_output(workload, config, output)
    if output.status == "ok":
        yield check_footprint(output)
        yield check_warm_start(workload, name, chosen, config, output, timeout_s)
    if faults:
        for fault in ("oom", "nan"):
            faulted = run_short_job(workload, name, chosen, config, fault=fault, timeout_s=timeout_s)
            yield check_fault(fault, faulted)


def check_schema(workload: Workload) -> Check:
    """The schema is a :class:`KnobSchema` whose declarations and defaults are legal. Pydantic
    enforces this when the schema is built, but not on a schema changed after that."""
    schema = workload.schema
    if not isinstance(schema, KnobSchema):
        return _fail("schema", f"schema is a {type(schema).__name__}, not a rea.knobs.KnobSchema")
    try:
        KnobSchema.model_validate(schema.model_dump())
    except ValidationError as exc:
        return _fail("schema", f"the knob schema is invalid: {_errors(exc)}")
    problems = schema.errors(schema.defaults())
    if problems:
        return _fail("schema", f"illegal defaults: {'; '.join(problems)}")
    return Check("schema", "passed", f"{len(schema.knobs)} knobs; every declaration and default is legal")


def check_roles(schema: KnobSchema) -> list[Check]:
    """Which roles the schema declares, each declared role's value contract, and a warning for
    each role REA relies on that it lacks, saying what degrades."""
    roles = schema.roles()
    absent = [str(role) for role in Role if role not in roles]
    listed = ", ".join(role if knob == role else f"{role} ({knob})" for role, knob in roles.items()) or "none"
    summary = f"{len(roles)} of {len(Role)} roles declared: {listed}"
    if absent:
        summary += f"; not declared: {', '.join(absent)}"
    checks = [Check("roles", "passed", summary)]
    broken = [error for knob in schema.knobs if (error := _contract_error(knob))]
    if broken:
        checks.append(
            _fail(
                "role contracts",
                f"{'; '.join(broken)}: techniques written against these roles assume the contract "
                "(see rea.knobs.Role); fix the knob's type or range, or drop its role",
            )
        )
    for role, degrades in RELIED_ON.items():
        if role not in roles:
            message = (
                f"no knob declares Role.{role.name}: {degrades}; set role=Role.{role.name} on the knob "
                "that plays it, if there is one"
            )
            checks.append(Check(f"role {role}", "warned", message))
    unroled = [knob.name for knob in schema.knobs if knob.role is None]
    if unroled:
        message = (
            f"{', '.join(unroled)}: covered by schema-derived hypotheses only (REA's catalogue finds "
            "knobs by role); declare a Role where one fits, or extend rea.knobs.Role"
        )
        checks.append(Check("knobs without a role", "warned", message))
    return checks


def _contract_error(knob: Knob) -> str | None:
    contract = _CONTRACTS.get(knob.role) if knob.role is not None else None
    if contract is None:
        return None
    if knob.type != contract.type:
        return f"{knob.name} plays {knob.role} ({contract.says or contract.type}) but is a {knob.type} knob"
    low, high = knob.low, knob.high
    if contract.legal and low is not None and high is not None and not contract.legal(low, high):
        return f"{knob.name} plays {knob.role} ({contract.says}) but its range is [{low:g}, {high:g}]"
    return None


def check_techniques(workload: Workload) -> Check:
    """Every technique the workload ships binds to its schema and gives legal values at the
    defaults; one that does not would be skipped in every campaign."""
    techniques = techniques_of(workload)
    if not techniques:
        return Check("techniques", "passed", "ships none; REA's catalogue applies through the declared roles")
    schema = workload.schema
    defaults = schema.defaults()
    broken: list[str] = []
    idle: list[str] = []
    for technique in techniques:
        try:
            bound = technique.bind(schema, defaults)
        except KeyError as exc:
            missing = exc.args[0] if exc.args else exc
            what = f"role {missing}" if isinstance(missing, Role) else f"knob {missing!r}"
            broken.append(f"{technique.id} needs {what}, which the schema lacks")
            continue
        except ValueError:
            idle.append(technique.id)
            continue
        except Exception as exc:
            broken.append(f"{technique.id}: its changes raised {type(exc).__name__}: {exc}")
            continue
        problems = schema.errors(bound)
        if problems:
            broken.append(f"{technique.id} sets illegal values at the defaults: {'; '.join(problems)}")
    if broken:
        return _fail(
            "techniques",
            f"{len(broken)} of {len(techniques)} do not bind to the schema: {'; '.join(broken)}; "
            "fix the technique's changes or declare the knob/role it needs",
        )
    message = f"all {len(techniques)} bind to the schema: {', '.join(t.id for t in techniques)}"
    if idle:
        message += f" (condition false at the defaults, so not checked: {', '.join(idle)})"
    return Check("techniques", "passed", message)


def check_dataset(workload: Workload, dataset: str | None) -> tuple[str, list[Check]]:
    """The dataset the job will train on (``dataset``, else the workload's ``example_dataset``,
    else :data:`FALLBACK_DATASET`) and whether the workload accepts it."""
    example = getattr(workload, "example_dataset", None)
    checks: list[Check] = []
    if dataset:
        chosen, source = dataset, "from --dataset"
    elif example:
        chosen, source = str(example), "its example_dataset"
    else:
        chosen, source = FALLBACK_DATASET, "the fallback"
        message = (
            f"the workload declares no example_dataset, so the check trains on {FALLBACK_DATASET}; "
            "declare example_dataset = '<a small dataset spec>' on the workload object"
        )
        checks.append(Check("example dataset", "warned", message))
    try:
        problem = workload.dataset_error(chosen)
    except Exception as exc:
        problem = f"dataset_error raised {type(exc).__name__}: {exc} (it must return a string, not raise)"
    if problem:
        hint = "pass --dataset SPEC or fix example_dataset"
        checks.append(_fail("dataset", f"{chosen!r} ({source}) is rejected: {problem}; {hint}"))
    else:
        checks.append(Check("dataset", "passed", f"{chosen!r} ({source}) is accepted"))
    return chosen, checks


def check_dataset_files(workload: Workload, dataset: str, roots: list[Path]) -> Check:
    """Whether REA can confine the files ``dataset`` reads to the data roots: the workload must
    name them (``dataset_paths``), and the planner refuses any outside ``roots``."""
    if not callable(getattr(workload, "dataset_paths", None)):
        message = (
            "the workload declares no dataset_paths, so REA cannot confine files a campaign names to "
            "the data roots; if it reads any, declare dataset_paths(dataset) -> list[Path]"
        )
        return Check("dataset files", "warned", message)
    try:
        problems = dataset_problems(workload, dataset, roots)
    except Exception as exc:
        message = f"dataset_paths raised {type(exc).__name__}: {exc} (it must return a list of paths)"
        return _fail("dataset files", message)
    if problems:
        hint = "a campaign on it would be rejected; put the data under a root or set REA_DATA_ROOTS"
        return Check("dataset files", "warned", f"{'; '.join(problems)}: {hint}")
    return Check("dataset files", "passed", f"{dataset!r} reads no file outside the data roots")


def check_prepare(workload: Workload, dataset: str) -> Check:
    started = time.monotonic()
    try:
        workload.prepare(dataset)
    except Exception as exc:
        return _fail("prepare", f"prepare({dataset!r}) raised {type(exc).__name__}: {exc}")
    return Check("prepare", "passed", f"prepare({dataset!r}) took {time.monotonic() - started:.1f}s")


def short_config(schema: KnobSchema) -> dict[str, Any]:
    """The defaults with the fidelity knobs at their cheapest: epochs at the epochs knob's low,
    the data share at its low or :data:`SHORT_DATA_FRACTION`, whichever is higher."""
    config = schema.defaults()
    epochs = schema.knob(Role.EPOCHS)
    if epochs is not None and epochs.low is not None:
        config[epochs.name] = epochs.coerce(epochs.low)
    fraction = schema.knob(Role.DATA_FRACTION)
    if fraction is not None and fraction.low is not None and fraction.high is not None:
        config[fraction.name] = fraction.coerce(min(fraction.high, max(fraction.low, SHORT_DATA_FRACTION)))
    return config


def run_short_job(
    workload: Workload,
    name: str,
    dataset: str,
    config: dict[str, Any],
    fault: Literal["oom", "nan"] | None = None,
    timeout_s: float = JOB_TIMEOUT_S,
    warm: WarmStarts | None = None,
) -> JobOutput:
    """One job through the executor's runner (subprocess, memory limit, OS-measured cost), with
    the dataset already prepared; forked from ``warm``'s zygotes when given."""
    # Imported here: listing workloads needs none of the executor.
    from rea.events import JobSpec
    from rea_executor.runner import run_job

    spec = JobSpec(
        job_id=f"check-{name}-{fault or 'ok'}",
        campaign_id=f"check-{name}",
        phase="check",
        workload=name,
        dataset=dataset,
        config=config,
        timeout_s=timeout_s,
        memory_mb=Settings().job_memory_mb,
    )
    return run_job(spec, fault, prepare=False, warm=warm)


def check_warm_start(
    workload: Workload, name: str, dataset: str, config: dict[str, Any], cold: JobOutput, timeout_s: float
) -> Check:
    """The short job again, forked from a zygote that preloaded the workload's modules: it must
    give the same metrics as the cold job, for less CPU."""
    from rea_executor.runner import warm_module
    from rea_executor.warm import WarmStarts

    if not callable(getattr(workload, "preload", None)):
        message = "declares no preload(): every job imports its framework itself, which a short job pays for"
        return Check("warm start", "warned", message)
    if warm_module(workload) is None:
        message = (
            "preload() is declared, but jobs start cold: it names no module, or command() is not "
            f"[sys.executable, '-m', MODULE] ({shlex.join(workload.command())})"
        )
        return Check("warm start", "warned", message)
    zygotes = WarmStarts()
    try:
        warm = run_short_job(workload, name, dataset, config, timeout_s=timeout_s, warm=zygotes)
    finally:
        zygotes.close()
    if zygotes.failed:
        return _fail("warm start", "the zygote importing preload() did not start: see the errors above")
    if warm.status != "ok" or (warm.validation, warm.test) != (cold.validation, cold.test):
        message = (
            f"forked warm, the short job gave {warm.validation} ({warm.error}), cold {cold.validation}: "
            "a preloaded module must not keep state a job changes, nor start threads that fork loses"
        )
        return _fail("warm start", message)
    cold_cpu = cold.cost.cpu_seconds if cold.cost else float("nan")
    warm_cpu = warm.cost.cpu_seconds if warm.cost else float("nan")
    return Check(
        "warm start", "passed", f"same metrics forked warm: {warm_cpu:.1f} CPU-s against {cold_cpu:.1f} cold"
    )


def check_output(workload: Workload, config: dict[str, Any], output: JobOutput) -> Check:
    """The short job's :class:`JobOutput` is what the planner, the logger and the report read."""
    schema = workload.schema
    short = {
        knob.name: config[knob.name]
        for role in (Role.EPOCHS, Role.DATA_FRACTION)
        if (knob := schema.knob(role)) is not None
    }
    ran = ", ".join(f"{key}={value}" for key, value in short.items()) or "the defaults"
    argv = shlex.join([*workload.command(), "--job", "JOB.json", "--output", "RESULT.json"])
    if output.status != "ok":
        error = output.error
        what = f"{error.kind}: {error.message}" if error else "no error reported"
        return _fail("job", f"the job ({ran}) failed ({what}); run it by hand: {argv}")
    problems = [
        problem for split in ("train", "validation", "test") for problem in _split_problems(output, split)
    ]
    epochs_knob = schema.knob(Role.EPOCHS)
    epochs = int(config[epochs_knob.name]) if epochs_knob is not None else None
    if epochs is not None and len(output.history) != epochs:
        problems.append(
            f"history has {len(output.history)} records for {epochs} epochs (one EpochRecord each)"
        )
    elif not output.history:
        problems.append("history is empty (one EpochRecord per epoch)")
    if output.cost is None:
        problems.append("no cost")
    if problems:
        message = (
            f"the job ({ran}) reported status ok, but: {'; '.join(problems)}; fix the JobOutput {argv} writes"
        )
        return _fail("job", message)
    validation, cost = output.validation, output.cost
    assert validation is not None and cost is not None
    return Check(
        "job",
        "passed",
        f"ok ({ran}) in {cost.wall_seconds:.1f}s wall, {cost.cpu_seconds:.1f} CPU-s, "
        f"peak {cost.peak_rss_mb:.0f} MB; "
        f"validation NE {validation.ne:.4f}, AUC {validation.auc:.3f}; {len(output.history)} epoch record(s)",
    )


def _split_problems(output: JobOutput, split: str) -> list[str]:
    metrics = getattr(output, split)
    if metrics is None:
        return [f"no {split} metrics"]
    problems = [
        f"{split} {key} is {value}"
        for key, value in (("ne", metrics.ne), ("auc", metrics.auc), ("logloss", metrics.logloss))
        if not math.isfinite(value)
    ]
    if math.isfinite(metrics.ne) and metrics.ne <= 0:
        problems.append(f"{split} NE is {metrics.ne:g} (must be > 0)")
    if math.isfinite(metrics.auc) and not 0 <= metrics.auc <= 1:
        problems.append(f"{split} AUC is {metrics.auc:g} (must be in [0, 1])")
    return problems


def check_footprint(output: JobOutput) -> Check:
    if output.footprint is None:
        message = (
            "the job reports no footprint: proposals cannot weigh a gain against serving size and "
            "latency; set JobOutput.footprint (rea.workloads.ModelFootprint)"
        )
        return Check("footprint", "warned", message)
    footprint = output.footprint
    return Check(
        "footprint",
        "passed",
        f"{footprint.parameters:,} parameters, {footprint.size_mb:.2f} MiB, "
        f"{footprint.inference_ms_per_1k_rows:.2f} ms per 1k rows",
    )


_FAULT_HINTS = {
    "oom": "OOM recovery (halve the batch size) runs only on kind 'oom': let MemoryError propagate "
    "or exit with code 3, or write JobOutput(status='failed', error=JobError(kind='oom'))",
    "nan": "NaN recovery (lower the learning rate, clip gradients) runs only on kind 'nan': write "
    "JobOutput(status='failed', error=JobError(kind='nan')) when the loss stops being finite",
}


def check_fault(fault: Literal["oom", "nan"], output: JobOutput) -> Check:
    """A drill fault surfaces with the error kind the runbook keys its recovery on."""
    name = f"fault {fault}"
    kind = output.error.kind if output.error else None
    if output.status == "failed" and kind == fault:
        return Check(name, "passed", f"{FAULT_ENV}={fault} fails the job with error kind {fault!r}")
    got = f"status {output.status}" + (
        f", kind {kind!r}: {output.error.message[-300:]}" if output.error else ""
    )
    return _fail(
        name, f"{FAULT_ENV}={fault}: expected error kind {fault!r}, got {got}; {_FAULT_HINTS[fault]}"
    )


def counts(checks: list[Check]) -> dict[Status, int]:
    statuses: tuple[Status, ...] = ("passed", "warned", "failed")
    return {status: sum(check.status == status for check in checks) for status in statuses}


def _fail(name: str, message: str) -> Check:
    return Check(name, "failed", message)


def _errors(exc: ValidationError) -> str:
    return "; ".join(str(error["msg"]).removeprefix("Value error, ") for error in exc.errors())
