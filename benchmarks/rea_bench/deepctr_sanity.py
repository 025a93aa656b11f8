"""Sanity check of REA's reference trainer against DeepCTR-Torch's DCN on MovieLens-100k.

REA's ranker (``rea_workload``) is a hand-written DCN-v2 trainer. If its quality or speed were
far off an independent, widely used implementation of the same idea, every campaign REA
runs would start from a bad baseline. This compares, in one process and one run:

* **REA**: ``rea_workload.train.fit`` with a DCN config (embedding_dim 8, 2 full-rank
  cross layers, MLP 64x2, adam lr 1e-3, batch 256, 3 epochs, no dropout, no L2);
* **DeepCTR-Torch 0.3.0**: ``deepctr_torch.models.DCN`` with ``cross_parameterization="matrix"``
  (DCN-M, i.e. DCN-v2's full-rank cross layer), ``cross_num=2``, ``dnn_hidden_units=(64, 64)``,
  the same embedding dim, adam lr 1e-3, batch 256, 3 epochs, every L2 penalty at 0, no linear
  (wide) part, since REA's ranker has none.

Both see the same data: REA's own MovieLens-100k split (``load_splits("movielens-100k")``),
seven single-valued fields as ``SparseFeat`` and the genres as a ``VarLenSparseFeat`` with
mean pooling, like REA's ``EmbeddingBag(mode="mean")``. Both are scored on the test split
with REA's metric functions (``rea_workload.metrics.split_metrics``: AUC by sklearn's
``roc_auc_score``, NE = log loss / entropy of the evaluated split's base rate). Training
samples/s is training rows x epochs over the wall seconds of the epochs only (REA's own
measurement in ``fit``; a DeepCTR callback around each epoch), on one torch thread each (REA's
``fit`` pins one thread, so DeepCTR gets one too).

What cannot be aligned: DeepCTR's DCN runs the cross network and the MLP side by side and
concatenates their outputs, REA stacks the MLP on the cross network; initialisation (DeepCTR:
N(0, 1e-4) embeddings and MLP weights, REA: N(0, 0.05) embeddings, torch-default MLP, head
bias at the base rate) and loss reduction (DeepCTR sums the BCE over the batch, REA
averages it) differ, and so do batch orders (separate RNGs).

    pip install deepctr-torch==0.3.0              # not a dependency of REA
    python -m rea_bench.deepctr_sanity           # one seed, ~10 s on 2 CPUs
    python -m rea_bench.deepctr_sanity --seeds 3 --json deepctr.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import time
import types
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rea_bench.output import console, print_header, print_table
from rea_workload.datasets.data import CtrData, MultiValued
from rea_workload.datasets.loader import load_splits
from rea_workload.datasets.splits import Splits
from rea_workload.metrics import split_metrics
from rea_workload.schema import RankerConfig
from rea_workload.train import fit

DEEPCTR_VERSION = "0.3.0"
DATASET = "movielens-100k"
INSTALL_HINT = f"pip install deepctr-torch=={DEEPCTR_VERSION}"

# deepctr_torch/__init__.py imports deepctr_torch.utils only to check PyPI for a newer release
# in a background thread; that module imports ``requests``, which the package does not declare.
# A no-op stand-in keeps the benchmark offline and free of that undeclared dependency.
_version_check = types.ModuleType("deepctr_torch.utils")
_version_check.check_version = lambda version: None  # type: ignore[attr-defined]
sys.modules.setdefault("deepctr_torch.utils", _version_check)
try:
    import deepctr_torch
    from deepctr_torch.callbacks import Callback
    from deepctr_torch.inputs import DenseFeat, SparseFeat, VarLenSparseFeat
    from deepctr_torch.models import DCN
except ImportError as exc:
    raise SystemExit(f"deepctr_torch is not importable ({exc}); install it with: {INSTALL_HINT}") from None

REA = "REA"
DEEPCTR = f"DeepCTR-Torch {deepctr_torch.__version__}"
COLUMNS = [
    "implementation",
    "test AUC",
    "test NE",
    "test log loss",
    "train samples/s",
    "train s",
    "parameters",
]


@dataclass(frozen=True)
class Settings:
    embedding_dim: int = 8
    cross_layers: int = 2
    mlp_width: int = 64
    mlp_depth: int = 2
    learning_rate: float = 1e-3
    batch_size: int = 256
    epochs: int = 3
    threads: int = 1  # what REA's fit pins; DeepCTR is given the same


@dataclass(frozen=True)
class Result:
    implementation: str
    seed: int
    test_auc: float
    test_ne: float
    test_logloss: float
    train_samples_per_s: float
    train_seconds: float
    parameters: int


# ---- REA ------------------------------------------------------------------------------


def run_rea(splits: Splits, settings: Settings, seed: int) -> Result:
    config = RankerConfig.from_overrides(
        {
            "embedding_dim": settings.embedding_dim,
            "cross_layers": settings.cross_layers,
            "cross_rank": 0,
            "mlp_width": settings.mlp_width,
            "mlp_depth": settings.mlp_depth,
            "dropout": 0.0,
            "weight_decay": 0.0,
            "embedding_l2": 0.0,
            "optimizer": "adam",
            "learning_rate": settings.learning_rate,
            "lr_schedule": "constant",
            "batch_size": settings.batch_size,
            "epochs": settings.epochs,
        }
    )
    output = fit(splits, config, seed)
    if output.status != "ok" or output.test is None or not output.samples_per_second:
        raise RuntimeError(f"REA's training failed: {output.error}")
    rows = settings.epochs * len(splits.train)
    return Result(
        implementation=REA,
        seed=seed,
        test_auc=output.test.auc,
        test_ne=output.test.ne,
        test_logloss=output.test.logloss,
        train_samples_per_s=output.samples_per_second,
        train_seconds=rows / output.samples_per_second,
        parameters=output.parameters or 0,
    )


# ---- DeepCTR-Torch --------------------------------------------------------------------


def feature_columns(data: CtrData, settings: Settings, maxlens: list[int]) -> list[Any]:
    """REA's fields as DeepCTR columns: ids as SparseFeat, multi-valued as mean-pooled VarLenSparseFeat."""
    dim = settings.embedding_dim
    columns: list[Any] = [
        SparseFeat(name, vocabulary_size=size, embedding_dim=dim)
        for name, size in zip(data.categorical_names, data.categorical_cardinalities, strict=True)
    ]
    for name, size, field, maxlen in zip(
        data.multi_names, data.multi_cardinalities, data.multi, maxlens, strict=True
    ):
        # Padding id 0 is masked out of the mean; REA never uses id 0 inside a multi-valued field.
        if (field.values == 0).any():
            raise ValueError(f"multi-valued field {name!r} uses id 0, which DeepCTR treats as padding")
        sparse = SparseFeat(name, vocabulary_size=size, embedding_dim=dim)
        columns.append(VarLenSparseFeat(sparse, maxlen=maxlen, combiner="mean"))
    columns += [DenseFeat(name, 1) for name in data.dense_names]
    return columns


def max_length(field: MultiValued) -> int:
    return max(1, int(np.diff(field.offsets).max(initial=0)))


def padded(field: MultiValued, maxlen: int) -> np.ndarray:
    """CSR rows as a [rows, maxlen] id matrix, padded with 0."""
    lengths = np.diff(field.offsets)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    positions = np.arange(len(field.values)) - np.repeat(field.offsets[:-1], lengths)
    out = np.zeros((len(lengths), maxlen), dtype=np.int64)
    out[rows, positions] = field.values
    return out


def model_input(data: CtrData, maxlens: list[int]) -> dict[str, np.ndarray]:
    inputs = {name: data.categorical[:, i] for i, name in enumerate(data.categorical_names)}
    for name, field, maxlen in zip(data.multi_names, data.multi, maxlens, strict=True):
        inputs[name] = padded(field, maxlen)
    for i, name in enumerate(data.dense_names):
        inputs[name] = data.dense[:, i]
    return inputs


class EpochTimer(Callback):
    """Wall seconds inside DeepCTR's epochs (excludes its one-off tensor and loader set-up)."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds = 0.0
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.seconds += time.perf_counter() - self._start


def run_deepctr(splits: Splits, settings: Settings, seed: int) -> Result:
    _make_deterministic(seed, settings.threads)
    train = splits.train
    # Pad each multi-valued field to its longest row in any split, so no row is cut short.
    parts = (train.multi, splits.validation.multi, splits.test.multi)
    maxlens = [max(max_length(field) for field in fields) for fields in zip(*parts, strict=True)]
    columns = feature_columns(train, settings, maxlens)
    model = DCN(
        linear_feature_columns=[],
        dnn_feature_columns=columns,
        cross_num=settings.cross_layers,
        cross_parameterization="matrix",
        dnn_hidden_units=(settings.mlp_width,) * settings.mlp_depth,
        l2_reg_linear=0.0,
        l2_reg_embedding=0.0,
        l2_reg_cross=0.0,
        l2_reg_dnn=0.0,
        dnn_dropout=0.0,
        dnn_use_bn=False,
        seed=seed,
        task="binary",
        device="cpu",
    )
    model.compile(torch.optim.Adam(model.parameters(), lr=settings.learning_rate), "binary_crossentropy")
    timer = EpochTimer()
    with contextlib.redirect_stdout(io.StringIO()):  # fit prints the device and the sample count
        model.fit(
            model_input(train, maxlens),
            train.labels.astype(np.float32),
            batch_size=settings.batch_size,
            epochs=settings.epochs,
            verbose=0,  # >0 also computes metrics on every batch, which would slow it unfairly
            shuffle=True,
            callbacks=[timer],
        )
    test = splits.test
    probabilities = model.predict(model_input(test, maxlens), batch_size=8192).reshape(-1)
    metrics = split_metrics(test.labels, probabilities)
    rows = settings.epochs * len(train)
    return Result(
        implementation=DEEPCTR,
        seed=seed,
        test_auc=metrics.auc,
        test_ne=metrics.ne,
        test_logloss=metrics.logloss,
        train_samples_per_s=rows / timer.seconds,
        train_seconds=timer.seconds,
        parameters=sum(p.numel() for p in model.parameters()),
    )


def _make_deterministic(seed: int, threads: int) -> None:
    """What REA's fit does before training, so both run under the same torch settings."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


# ---- report ---------------------------------------------------------------------------


def mean_text(values: list[float], digits: int) -> str:
    text = f"{statistics.fmean(values):,.{digits}f}"
    if len(values) > 1:
        text += f" ± {statistics.stdev(values):,.{digits}f}"
    return text


def report(results: list[Result]) -> dict[str, Any]:
    by_name = {name: [r for r in results if r.implementation == name] for name in (REA, DEEPCTR)}
    means = {
        name: {
            key: statistics.fmean(getattr(r, key) for r in group)
            for key in ("test_auc", "test_ne", "test_logloss", "train_samples_per_s", "train_seconds")
        }
        for name, group in by_name.items()
    }
    # Each seed's two runs are adjacent in time and share the machine's load, so the ratio is
    # taken per seed and the median reported: steadier than a ratio of noisy means.
    ratios = [
        rea.train_samples_per_s / ref.train_samples_per_s
        for rea, ref in zip(by_name[REA], by_name[DEEPCTR], strict=True)
    ]
    comparison = {
        "samples_per_s_ratio_rea_over_deepctr": statistics.median(ratios),
        "samples_per_s_ratio_per_seed": ratios,
        "auc_abs_diff": abs(means[REA]["test_auc"] - means[DEEPCTR]["test_auc"]),
        "ne_diff_rea_minus_deepctr": means[REA]["test_ne"] - means[DEEPCTR]["test_ne"],
    }
    rows = [
        [
            name,
            mean_text([r.test_auc for r in group], 4),
            mean_text([r.test_ne for r in group], 4),
            mean_text([r.test_logloss for r in group], 4),
            mean_text([r.train_samples_per_s for r in group], 0),
            mean_text([r.train_seconds for r in group], 1),
            f"{group[0].parameters:,}",
        ]
        for name, group in by_name.items()
    ]
    rows.append(
        [
            "REA vs DeepCTR",
            f"|Δ| {comparison['auc_abs_diff']:.4f}",
            f"Δ {comparison['ne_diff_rea_minus_deepctr']:+.4f}",
            "",
            f"{comparison['samples_per_s_ratio_rea_over_deepctr']:.2f}x",
            "",
            "",
        ]
    )
    print_table(
        f"MovieLens-100k test split, DCN, {len(ratios)} seed(s) (mean ± sd over seeds)",
        COLUMNS,
        rows,
        caption=(
            "REA = rea_workload.train.fit; DeepCTR = deepctr_torch.models.DCN (matrix cross).\n"
            "train samples/s: training rows x epochs / wall seconds of the epochs, 1 torch thread each;\n"
            "REA vs DeepCTR samples/s: median over seeds of each seed's REA/DeepCTR ratio."
        ),
    )
    return {"means": means, "comparison": comparison}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1, each trains both (default 1)")
    parser.add_argument("--epochs", type=int, default=Settings.epochs, help="passes over the training split")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args()
    if args.seeds < 1 or args.epochs < 1:
        parser.error("--seeds and --epochs must be at least 1")
    if deepctr_torch.__version__ != DEEPCTR_VERSION:
        console.print(
            f"[yellow]deepctr-torch {deepctr_torch.__version__}, expected {DEEPCTR_VERSION}[/yellow]"
        )
    settings = Settings(epochs=args.epochs)
    print_header("deepctr_sanity", {"dataset": DATASET, "seeds": args.seeds, **asdict(settings)})

    started = time.perf_counter()
    splits = load_splits(DATASET)
    console.print(
        f"[dim]{DATASET}: train {len(splits.train):,}, validation {len(splits.validation):,}, "
        f"test {len(splits.test):,} rows; positive rate (train) {splits.train.positive_rate:.3f}[/dim]"
    )
    results: list[Result] = []
    for seed in range(args.seeds):
        # Alternate which goes first, so warm-up and drift of a shared machine do not favour one.
        runners = [run_rea, run_deepctr] if seed % 2 == 0 else [run_deepctr, run_rea]
        for runner in runners:
            result = runner(splits, settings, seed)
            console.print(
                f"seed {seed} {result.implementation}: test AUC {result.test_auc:.4f}, "
                f"NE {result.test_ne:.4f}, {result.train_samples_per_s:,.0f} samples/s"
            )
            results.append(result)
    summary = report(results)
    console.print(f"[dim]total wall time {time.perf_counter() - started:.0f} s[/dim]")
    if args.json is not None:
        document = {
            "dataset": DATASET,
            "deepctr_torch": deepctr_torch.__version__,
            "torch": torch.__version__,
            "settings": asdict(settings),
            "results": [asdict(r) for r in results],
            **summary,
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        console.print(f"[dim]wrote {args.json}[/dim]")


if __name__ == "__main__":
    main()
