"""Train one AutoInt config on one data set and report its metrics: the body of a job.

Jobs run side by side, one CPU thread each, and must be reproducible: the same job (config,
data set, seed) gives the same metrics every time, so REA compares configs fairly.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from rea.workloads import (
    FAULT_ENV,
    Diagnostics,
    EpochRecord,
    JobError,
    JobInput,
    JobOutput,
    ModelFootprint,
    report_epoch,
)
from rea_autoint.metrics import base_rate_entropy, normalized_entropy, split_metrics
from rea_autoint.model import AutoIntModel
from rea_autoint.schema import AutoIntConfig
from rea_workload.batches import Batch, batches
from rea_workload.datasets.data import CtrData
from rea_workload.datasets.loader import load_splits
from rea_workload.datasets.splits import Splits, subsample

EVAL_BATCH = 8192
TRAIN_EVAL_ROWS = 100_000  # training metrics on a prefix: enough to spot over-fitting, cheap on big data
IMPORTANCE_ROWS = 20_000  # validation rows shuffled per feature for diagnostics
EXPLOSION_FACTOR = 10.0  # an epoch loss this many times the base-rate entropy means divergence
TIMED_ROWS = 50_000
MIN_TIMED_SECONDS = 0.2
MAX_PASSES = 20


class Diverged(Exception):
    """Training produced a non-finite or exploding loss, or non-finite predictions."""


def train(job: JobInput) -> JobOutput:
    """Validate the config, load the data and fit; raises ValueError for a bad config or spec."""
    config = AutoIntConfig.from_overrides(job.config)
    return fit(load_splits(job.dataset), config, job.seed, job.diagnose)


def fit(splits: Splits, config: AutoIntConfig, seed: int, diagnose: bool = False) -> JobOutput:
    _make_deterministic(seed)
    data = subsample(splits.train, config.sample_share)
    fault = os.environ.get(FAULT_ENV)  # resilience drills fail through the real detection paths
    if fault == "oom":
        # Where a model too big for the machine fails: allocating its embedding tables.
        raise MemoryError(f"{FAULT_ENV}=oom: injected out-of-memory while building the model")
    model = AutoIntModel(data, config)
    optimizer = _optimizer(model, config)
    limit = EXPLOSION_FACTOR * max(base_rate_entropy(data.labels), 1e-3)
    rng = np.random.default_rng(seed)
    history: list[EpochRecord] = []
    grad_norms: list[float] = []
    seconds = 0.0
    try:
        for epoch in range(1, config.passes + 1):
            start = time.perf_counter()
            poison = fault == "nan" and epoch == 1
            train_loss = _train_epoch(model, data, optimizer, config, rng, poison, grad_norms)
            seconds += time.perf_counter() - start
            if train_loss > limit:
                raise Diverged(f"training loss exploded to {train_loss:.3g} in pass {epoch}")
            val_ne = normalized_entropy(splits.validation.labels, predict(model, splits.validation))
            history.append(EpochRecord(epoch=epoch, train_loss=train_loss, val_ne=val_ne))
            report_epoch(history[-1])
            print(f"pass {epoch}: train_loss={train_loss:.4f} val_ne={val_ne:.4f}", file=sys.stderr)
        train_rows = data.take(np.arange(min(len(data), TRAIN_EVAL_ROWS)))
        evaluated = {"train": train_rows, "validation": splits.validation, "test": splits.test}
        results = {name: split_metrics(rows.labels, predict(model, rows)) for name, rows in evaluated.items()}
        diagnostics = None
        if diagnose:
            diagnostics = Diagnostics(
                train_ne=results["train"].ne,
                validation_ne=results["validation"].ne,
                val_ne_by_epoch=[h.val_ne for h in history],
                train_loss_by_epoch=[h.train_loss for h in history],
                grad_norm_median=float(np.median(grad_norms)) if grad_norms else 0.0,
                grad_norm_max=max(grad_norms, default=0.0),
                feature_importance=_importance(model, splits.validation, seed),
            )
        # Timed last, so measuring it can change nothing the job reports about quality.
        footprint = _footprint(model, splits.test)
    except Diverged as exc:
        return JobOutput(status="failed", history=history, error=JobError(kind="nan", message=str(exc)))
    return JobOutput(
        status="ok",
        train=results["train"],
        validation=results["validation"],
        test=results["test"],
        history=history,
        samples_per_second=config.passes * len(data) / seconds if seconds > 0 else None,
        parameters=sum(p.numel() for p in model.parameters()),
        diagnostics=diagnostics,
        footprint=footprint,
    )


def _optimizer(model: AutoIntModel, config: AutoIntConfig) -> torch.optim.Optimizer:
    """Weight decay on the attention and tower weights only: decaying every id's vector would
    shrink rare ids' embeddings more than their few updates can restore."""
    embeddings = model.embedding_parameters()
    skip = {id(p) for p in embeddings}
    groups = [
        {"params": embeddings, "weight_decay": 0.0},
        {"params": [p for p in model.parameters() if id(p) not in skip], "weight_decay": config.l2_dense},
    ]
    if config.solver == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    if config.solver == "rmsprop":
        return torch.optim.RMSprop(groups, lr=config.lr)
    return torch.optim.Adam(groups, lr=config.lr)


def _train_epoch(
    model: AutoIntModel,
    data: CtrData,
    optimizer: torch.optim.Optimizer,
    config: AutoIntConfig,
    rng: np.random.Generator,
    poison: bool,
    grad_norms: list[float],
) -> float:
    """One shuffled pass; returns the mean BCE loss and records each step's gradient norm
    (before clipping)."""
    model.train()
    total = 0.0
    for batch in batches(data, config.minibatch, rng):
        loss = F.binary_cross_entropy_with_logits(model(batch), batch.labels)
        if poison:
            loss = loss * float("nan")
        if not torch.isfinite(loss):
            raise Diverged("non-finite training loss")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        max_norm = config.clip_norm if config.clip_norm > 0 else float("inf")
        grad_norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)))
        optimizer.step()
        total += loss.item() * len(batch)
    return total / len(data)


def predict(model: AutoIntModel, data: CtrData) -> np.ndarray:
    """Click probabilities for every row; raises :class:`Diverged` if any is not finite."""
    model.eval()
    with torch.no_grad():
        chunks = [torch.sigmoid(model(batch)).numpy() for batch in batches(data, EVAL_BATCH)]
    probabilities = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    if not np.isfinite(probabilities).all():
        raise Diverged("non-finite predictions")
    return probabilities


def _importance(model: AutoIntModel, validation: CtrData, seed: int) -> dict[str, float]:
    """Validation NE increase when one feature's values are shuffled across rows."""
    rows = validation.take(np.arange(min(len(validation), IMPORTANCE_ROWS)))
    base = normalized_entropy(rows.labels, predict(model, rows))
    rng = np.random.default_rng(seed)
    importance: dict[str, float] = {}

    def shuffled_column(matrix: np.ndarray, column: int) -> np.ndarray:
        copy = matrix.copy()
        copy[:, column] = copy[rng.permutation(len(copy)), column]
        return copy

    for j, name in enumerate(rows.categorical_names):
        changed = dataclasses.replace(rows, categorical=shuffled_column(rows.categorical, j))
        importance[name] = normalized_entropy(rows.labels, predict(model, changed)) - base
    for j, name in enumerate(rows.dense_names):
        changed = dataclasses.replace(rows, dense=shuffled_column(rows.dense, j))
        importance[name] = normalized_entropy(rows.labels, predict(model, changed)) - base
    for j, name in enumerate(rows.multi_names):
        multi = list(rows.multi)
        multi[j] = multi[j].take(rng.permutation(len(rows)))
        changed = dataclasses.replace(rows, multi=multi)
        importance[name] = normalized_entropy(rows.labels, predict(model, changed)) - base
    return importance


def _footprint(model: AutoIntModel, test: CtrData) -> ModelFootprint | None:
    """Parameters, size (parameters plus buffers, MiB) and single-threaded inference time per
    1,000 test rows at batch size ``EVAL_BATCH``: batches are built before the clock starts and
    the fastest of several passes is kept, the one least disturbed by other jobs."""
    rows = test.take(np.arange(min(len(test), TIMED_ROWS)))
    if len(rows) == 0:
        return None
    prepared: list[Batch] = list(batches(rows, EVAL_BATCH))
    size = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    model.eval()
    passes: list[float] = []
    with torch.no_grad():
        torch.sigmoid(model(prepared[0]))  # warm-up
        while len(passes) < MAX_PASSES and sum(passes) < MIN_TIMED_SECONDS:
            start = time.perf_counter()
            for batch in prepared:
                torch.sigmoid(model(batch))
            passes.append(time.perf_counter() - start)
    return ModelFootprint(
        parameters=sum(p.numel() for p in model.parameters()),
        size_mb=size / 2**20,
        inference_ms_per_1k_rows=min(passes) * 1e6 / len(rows),
    )


def _make_deterministic(seed: int) -> None:
    """Seeded, on one CPU thread, every op this model uses is deterministic; we skip
    ``torch.use_deterministic_algorithms``, whose imports cost every job seconds for nothing."""
    torch.manual_seed(seed)
    torch.set_num_threads(1)
