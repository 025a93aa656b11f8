"""The workload contract: how REA finds, validates and runs a model trainer.

A workload is anything that declares a knob schema and an entrypoint command. REA's
reference trainer is the built-in ``ranker``; users plug in their own by exposing an
object with the same attributes under the ``rea.workloads`` entry-point group.

The job contract, for every workload: the worker runs ``command() + ["--job", JOB_JSON,
"--output", RESULT_JSON]`` in a subprocess. ``JOB_JSON`` holds a :class:`JobInput`;
the process writes a :class:`JobOutput` to ``RESULT_JSON`` and exits 0 — or exits non-zero
(the worker then reports the failure, with the output's ``error`` when it wrote one).

For resilience drills a worker may set ``REA_INJECT_FAULT`` to ``oom`` or ``nan`` in the job's
environment; a workload that honours it fails that way through its real detection paths.

Progress: the runner names a file in ``REA_PROGRESS_FILE``; a workload that appends one
:class:`EpochRecord` as a JSON line to it at the end of each epoch (:func:`report_epoch`) lets
a search stop an unpromising job early (a pruner fed per-epoch validation NE). A workload that
does not is simply never stopped early.

Knobs should declare their :class:`~rea.knobs.Role` where one fits: REA's techniques, runbook,
cost model, fidelity and search find knobs by role, never by name. Optional attributes:

- ``techniques``: a sequence of :class:`~rea.techniques.Technique`, the workload's own ideas,
  ranked beside REA's catalogue;
- ``example_dataset``: a small dataset spec on which ``rea workloads check`` trains one job;
- ``training_rows(dataset) -> int | None``: about how many training rows a data set holds,
  cheaply; the planner's first cost estimates (before any job has run) scale with it;
- ``parameters(config, dataset) -> int | None``: the parameter count of the model ``config``
  builds on ``dataset``, cheaply (no training, no reading the data: by arithmetic over the
  architecture, as the planner should not need the framework; a model built on torch's
  ``meta`` device works too) and deterministically, since the planner's decisions ask it for
  every config they price; None when unknown. The first cost estimates grow with it;
- ``dataset_paths(dataset) -> list[Path]``: the files ``dataset`` reads, as named (not yet
  resolved). A workload that reads files a campaign names must declare them here: REA refuses
  any that is not a regular file under the deployment's data roots (:mod:`rea.datapaths`),
  and cannot confine what it is not told about;
- ``preload() -> list[str]``: modules worth importing once rather than in every job (the
  trainer and its framework). A workload whose command is ``python -m MODULE`` and that names
  them has its jobs forked from a process that imported them (:mod:`rea_executor.warm`):
  each job is still a fresh process, but does not pay the import. The modules must be safe to
  fork after importing: no threads started at import, or libraries that handle fork (pyarrow).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from rea.datapaths import confinement_problem
from rea.kernels import KernelEntry, KernelUse
from rea.knobs import KnobSchema
from rea.techniques import Technique

ENTRY_POINT_GROUP = "rea.workloads"
FAULT_ENV = "REA_INJECT_FAULT"
PROGRESS_ENV = "REA_PROGRESS_FILE"


@runtime_checkable
class Workload(Protocol):
    name: str
    description: str
    schema: KnobSchema

    def dataset_error(self, dataset: str) -> str | None:
        """Why ``dataset`` cannot be used (unknown name, missing file), or None. Must be cheap."""

    def command(self) -> list[str]:
        """The argv prefix that runs one job."""

    def prepare(self, dataset: str) -> None:
        """Download or cache what ``dataset`` needs (may be slow); jobs assume it was called."""


class JobInput(BaseModel):
    job_id: str
    dataset: str
    config: dict[str, Any]
    seed: int = 0
    diagnose: bool = Field(default=False, description="Also measure :class:`Diagnostics` (costs a little).")
    kernels: list[KernelEntry] = Field(
        default_factory=list,
        description="The kernel registry's entries, for a job whose config asks for evolved kernels "
        "(its knob of the evolved-kernels role); the trainer runs those made for its device.",
    )


class SplitMetrics(BaseModel):
    ne: float = Field(description="Normalized entropy: log loss divided by the entropy of the base rate.")
    auc: float
    logloss: float
    rows: int


class EpochRecord(BaseModel):
    epoch: int
    train_loss: float
    val_ne: float


def report_epoch(record: EpochRecord) -> None:
    """Append one epoch's record to the progress file the runner named, if it named one."""
    path = os.environ.get(PROGRESS_ENV)
    if path:
        with open(path, "a") as progress:
            progress.write(record.model_dump_json() + "\n")


class JobError(BaseModel):
    kind: Literal[
        "oom", "nan", "invalid_config", "timeout", "lost_worker", "killed", "cancelled", "pruned", "error"
    ]
    message: str


class Diagnostics(BaseModel):
    """How a run trained, beyond its final metrics: what a ranking engineer looks at before
    choosing what to try (see :mod:`rea.diagnostics` for what it points to)."""

    train_ne: float = Field(description="NE on (a prefix of) the training rows, after training.")
    validation_ne: float
    val_ne_by_epoch: list[float]
    train_loss_by_epoch: list[float]
    grad_norm_median: float = Field(description="Median global gradient norm over training steps.")
    grad_norm_max: float
    feature_importance: dict[str, float] = Field(
        default_factory=dict,
        description="Validation NE increase when one feature's values are shuffled across rows.",
    )


class JobCost(BaseModel):
    cpu_seconds: float = Field(description="User + system CPU seconds of the job process tree.")
    wall_seconds: float
    peak_rss_mb: float
    gpu_seconds: float = Field(
        default=0.0,
        description="Device seconds: the job's wall time times the GPUs it held (those it asked for "
        "that the job side could see); 0 where no GPU exists.",
    )
    measured: bool = Field(
        default=True,
        description="False when no one could measure it (the job's worker was lost): the job's "
        "reserved estimate is charged instead, so a lost job still counts against the budget.",
    )


class ModelFootprint(BaseModel):
    """What the trained model costs to serve: a ranking engineer ships what serves, so a quality
    gain is weighed against the size and latency it adds."""

    parameters: int = Field(description="Parameter elements over every weight tensor.")
    size_mb: float = Field(description="Parameters plus buffers, in MiB (2**20 bytes), at their dtypes.")
    inference_ms_per_1k_rows: float = Field(
        description="Forward-pass time per 1,000 rows on the test split, eval mode, no autograd; the "
        "workload states how many threads and which batch size."
    )


class JobOutput(BaseModel):
    status: Literal["ok", "failed"]
    train: SplitMetrics | None = None
    validation: SplitMetrics | None = None
    test: SplitMetrics | None = None
    history: list[EpochRecord] = []
    samples_per_second: float | None = None
    parameters: int | None = None
    cost: JobCost | None = None
    error: JobError | None = None
    diagnostics: Diagnostics | None = None
    footprint: ModelFootprint | None = None
    kernels: list[KernelUse] = Field(
        default_factory=list,
        description="With evolved kernels: per operator and shape bucket, the registry kernel that ran "
        "or why PyTorch did.",
    )


@cache
def _registered() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def techniques_of(workload: Workload) -> tuple[Technique, ...]:
    """The techniques a workload ships (none when it declares no ``techniques``)."""
    return tuple(getattr(workload, "techniques", ()))


def training_rows_of(workload: Workload, dataset: str) -> int | None:
    """The workload's cheap estimate of ``dataset``'s training rows, if it gives one."""
    estimate = getattr(workload, "training_rows", None)
    return estimate(dataset) if callable(estimate) else None


def parameters_of(workload: Workload, config: dict[str, Any], dataset: str) -> int | None:
    """The workload's cheap count of the parameters ``config`` builds on ``dataset``, if it gives
    one. None too when its count fails (an invalid config, say): a cost estimate is no reason to
    stop a campaign."""
    count = getattr(workload, "parameters", None)
    if not callable(count):
        return None
    try:
        value = count(config, dataset)
    except Exception:
        return None
    return value if isinstance(value, int) and value >= 0 else None


def dataset_problems(workload: Workload, dataset: str, roots: Sequence[Path]) -> list[str]:
    """Why ``dataset`` must not be read under ``roots``: each file it names that is not a
    regular file inside them (none when the workload reads no files)."""
    paths = getattr(workload, "dataset_paths", None)
    named: list[Path] = list(paths(dataset)) if callable(paths) else []
    return [problem for path in named if (problem := confinement_problem(Path(path), roots))]


def workload_names() -> list[str]:
    return sorted(_registered())


class BrokenWorkload(KeyError):
    """A registered workload that cannot be used: its entry point fails to import, or gives
    something that is not a :class:`Workload`. A ``KeyError``, so that every caller treats it as
    it treats an unknown name; ``reason`` says what is wrong."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(name)
        self.reason = reason


def get_workload(name: str) -> Workload:
    """Load a registered workload by name; raises KeyError for an unknown one and
    :class:`BrokenWorkload` (a KeyError) for one that cannot be loaded. Names come only from
    the ``rea.workloads`` entry points: no module path or command from the caller is used."""
    entry = _registered().get(name)
    if entry is None:
        raise KeyError(name)
    try:
        workload = entry.load()
    except Exception as error:  # the entry point's module is not ours: any failure is its own
        raise BrokenWorkload(
            name, f"its entry point failed to load ({type(error).__name__}: {error})"
        ) from error
    if not isinstance(workload, Workload):
        raise BrokenWorkload(name, f"its entry point gives a {type(workload).__name__}, not a Workload")
    return workload
