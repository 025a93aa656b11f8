"""Train one ranker config on one data set and report its metrics: the body of a job.

Jobs run in parallel, one CPU thread each, and must be reproducible: the same job (config,
data set, seed) gives identical metrics every time, so methods can be compared fairly.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.optim.lr_scheduler import LRScheduler

from rea.kernels import KernelEntry
from rea.workloads import FAULT_ENV, Diagnostics, EpochRecord, JobError, JobInput, JobOutput, report_epoch
from rea_workload.batches import batches
from rea_workload.datasets.data import CtrData
from rea_workload.datasets.loader import load_splits
from rea_workload.datasets.splits import Splits, subsample
from rea_workload.diagnostics import permutation_importance
from rea_workload.footprint import measure_footprint
from rea_workload.metrics import base_rate_entropy, normalized_entropy, split_metrics
from rea_workload.model import RankerModel
from rea_workload.ops import Ops
from rea_workload.optim import Optimizers, build_optimizers, build_schedule, clip_gradients
from rea_workload.schema import RankerConfig

if TYPE_CHECKING:
    from rea_kernel.loader import RegistryKernels

KERNEL_CACHE_ENV = "REA_KERNEL_CACHE"
EVAL_BATCH = 8192
TRAIN_EVAL_ROWS = 100_000  # training metrics on a prefix: enough to spot over-fitting, cheap on big data
EXPLOSION_FACTOR = 10.0  # an epoch loss this many times the base-rate entropy means divergence


class Diverged(Exception):
    """Training produced a non-finite or exploding loss."""


def train(job: JobInput) -> JobOutput:
    """Validate the config, load the data and fit; raises ValueError for a bad config or spec."""
    config = RankerConfig.from_overrides(job.config)
    splits = load_splits(job.dataset)
    if not config.use_evolved_kernels:
        return fit(splits, config, job.seed, job.diagnose)
    with tempfile.TemporaryDirectory(prefix="rea-kernels-") as directory:
        kernels = registry_kernels(job.kernels, Path(directory))
        output = fit(splits, config, job.seed, job.diagnose, Ops(kernels))
        return output.model_copy(update={"kernels": kernels.usage()})


def registry_kernels(entries: list[KernelEntry], directory: Path) -> RegistryKernels:
    """The registry's kernels for this job's device, built into ``directory`` (cached across jobs
    in ``$REA_KERNEL_CACHE``, else ``~/.cache/rea/kernels``), run at the job's thread count."""
    from rea_kernel.loader import RegistryKernels  # only a job that asks for kernels pays for it

    cache = Path(os.environ.get(KERNEL_CACHE_ENV) or Path.home() / ".cache" / "rea" / "kernels")
    return RegistryKernels(entries, directory, cache, threads=torch.get_num_threads())


def fit(
    splits: Splits, config: RankerConfig, seed: int, diagnose: bool = False, ops: Ops | None = None
) -> JobOutput:
    _make_deterministic(seed)
    data = subsample(splits.train, config.data_fraction)
    model = RankerModel(data, config, ops)
    optimizers = build_optimizers(model, config)
    steps = config.epochs * math.ceil(len(data) / config.batch_size)
    schedules = [build_schedule(optimizer, config.lr_schedule, steps) for optimizer in optimizers.each]
    limit = EXPLOSION_FACTOR * max(base_rate_entropy(data.labels), 1e-3)
    rng = np.random.default_rng(seed)
    history: list[EpochRecord] = []
    seconds = 0.0
    grad_norms: list[float] | None = [] if diagnose else None
    fault = os.environ.get(FAULT_ENV)  # resilience drills: fail through the real detection paths
    if fault == "oom":
        torch.empty(1 << 40, dtype=torch.uint8)
    try:
        for epoch in range(1, config.epochs + 1):
            start = time.perf_counter()
            poison = fault == "nan" and epoch == 1
            train_loss = _train_epoch(model, data, optimizers, schedules, config, rng, poison, grad_norms)
            seconds += time.perf_counter() - start
            if train_loss > limit:
                raise Diverged(f"training loss exploded to {train_loss:.3g} in epoch {epoch}")
            validation = splits.validation
            val_ne = normalized_entropy(validation.labels, predict(model, validation))
            history.append(EpochRecord(epoch=epoch, train_loss=train_loss, val_ne=val_ne))
            report_epoch(history[-1])
            print(f"epoch {epoch}: train_loss={train_loss:.4f} val_ne={val_ne:.4f}", file=sys.stderr)
        train_rows = data.take(np.arange(min(len(data), TRAIN_EVAL_ROWS)))
        evaluated = {"train": train_rows, "validation": splits.validation, "test": splits.test}
        results = {name: split_metrics(rows.labels, predict(model, rows)) for name, rows in evaluated.items()}
        diagnostics = None
        if grad_norms is not None:
            importance = permutation_importance(partial(predict, model), splits.validation, seed)
            diagnostics = Diagnostics(
                train_ne=results["train"].ne,
                validation_ne=results["validation"].ne,
                val_ne_by_epoch=[h.val_ne for h in history],
                train_loss_by_epoch=[h.train_loss for h in history],
                grad_norm_median=float(np.median(grad_norms)) if grad_norms else 0.0,
                grad_norm_max=max(grad_norms, default=0.0),
                feature_importance=importance,
            )
        # After every metric, so timing it can change nothing the job reports about quality.
        footprint = measure_footprint(model, splits.test, EVAL_BATCH)
    except Diverged as exc:
        return JobOutput(status="failed", history=history, error=JobError(kind="nan", message=str(exc)))
    return JobOutput(
        status="ok",
        train=results["train"],
        validation=results["validation"],
        test=results["test"],
        history=history,
        samples_per_second=config.epochs * len(data) / seconds if seconds > 0 else None,
        parameters=sum(p.numel() for p in model.parameters()),
        diagnostics=diagnostics,
        footprint=footprint,
    )


def _train_epoch(
    model: RankerModel,
    data: CtrData,
    optimizers: Optimizers,
    schedules: Sequence[LRScheduler],
    config: RankerConfig,
    rng: np.random.Generator,
    poison: bool = False,
    grad_norms: list[float] | None = None,
) -> float:
    """One shuffled pass over ``data``; returns the mean BCE loss (without the L2 penalty) and
    appends each step's global gradient norm (before clipping) to ``grad_norms`` if given."""
    model.train()
    total = 0.0
    for batch in batches(data, config.batch_size, rng):
        logits, embeddings = model(batch)
        loss = model.ops.bce_with_logits(logits, batch.labels)
        if poison:
            loss = loss * float("nan")
        if not torch.isfinite(loss):
            raise Diverged("non-finite training loss")
        objective = loss
        if config.embedding_l2 > 0:
            objective = loss + config.embedding_l2 * embeddings.pow(2).sum(dim=(1, 2)).mean()
        optimizers.zero_grad()
        objective.backward()
        if config.grad_clip > 0 or grad_norms is not None:
            norm = clip_gradients(model.parameters(), config.grad_clip)
            if grad_norms is not None:
                grad_norms.append(norm)
        optimizers.step()
        for schedule in schedules:
            schedule.step()
        total += loss.item() * len(batch)
    return total / len(data)


def predict(model: RankerModel, data: CtrData) -> np.ndarray:
    """Click probabilities for every row; raises :class:`Diverged` if any is not finite."""
    model.eval()
    with torch.no_grad():
        chunks = [torch.sigmoid(model(batch)[0]).numpy() for batch in batches(data, EVAL_BATCH)]
    probabilities = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    if not np.isfinite(probabilities).all():
        raise Diverged("non-finite predictions")
    return probabilities


def _make_deterministic(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)  # our own sampling uses explicit generators; this covers library code
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
