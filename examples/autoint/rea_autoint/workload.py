"""The ``autoint`` workload object that REA discovers through the ``rea.workloads`` entry point.

Importing this module must stay cheap (no torch, no data): the planner imports it only to
read the schema and validate dataset specs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rea.knobs import KnobSchema
from rea.techniques import Technique
from rea_autoint.schema import SCHEMA, AutoIntConfig
from rea_autoint.techniques import TECHNIQUES
from rea_workload.datasets.spec import FeatureSizes, dataset_files, feature_sizes, spec_error, training_rows


class AutoIntWorkload:
    name = "autoint"
    description = (
        "AutoInt CTR model: per-field embeddings, multi-head self-attention interacting layers "
        "over them, then a one-layer dense tower; BCE on the ranker's data sets (MovieLens-100k, "
        "synthetic, Criteo, parquet)."
    )
    schema: KnobSchema = SCHEMA
    techniques: tuple[Technique, ...] = TECHNIQUES
    example_dataset = "synthetic:rows=4000"

    def dataset_error(self, dataset: str) -> str | None:
        return spec_error(dataset)

    def dataset_paths(self, dataset: str) -> list[Path]:
        return dataset_files(dataset)

    def training_rows(self, dataset: str) -> int | None:
        return training_rows(dataset)

    def parameters(self, config: dict[str, Any], dataset: str) -> int | None:
        sizes = feature_sizes(dataset)
        return None if sizes is None else autoint_parameters(sizes, AutoIntConfig.from_overrides(config))

    def command(self) -> list[str]:
        return [sys.executable, "-m", "rea_autoint"]

    def preload(self) -> list[str]:
        """Imported once per worker, so each job is forked warm instead of importing torch."""
        return ["rea_autoint.train", "sklearn.metrics"]

    def prepare(self, dataset: str) -> None:
        """Fetch what the dataset needs once, before parallel jobs would race to do it."""
        from rea_workload.datasets.archive import prefetch

        prefetch(dataset)


def autoint_parameters(sizes: FeatureSizes, config: AutoIntConfig) -> int:
    """The parameter count of :class:`~rea_autoint.model.AutoIntModel`, by arithmetic over its
    layers, so that the planner need not import torch to ask (tests hold it to the built model)."""
    dim, heads = config.field_dim, config.attn_heads
    fields = len(sizes.categorical) + len(sizes.multi) + sizes.dense
    count = (sum(sizes.categorical) + sum(sizes.multi) + sizes.dense) * dim
    width = dim
    projections = 4 if config.residual else 3  # query, key, value (and residual), without biases
    for _ in range(config.attn_blocks):
        count += projections * width * heads * dim
        width = heads * dim
    return count + (fields * width + 1) * config.tower_units + config.tower_units + 1


WORKLOAD = AutoIntWorkload()
