"""The ``ranker`` workload object that REA discovers through the ``rea.workloads`` entry point.

Importing this module must stay cheap (no torch, no data): the planner imports it only to
read the schema and validate dataset specs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rea.knobs import KnobSchema
from rea_workload.datasets.spec import FeatureSizes, dataset_files, feature_sizes, spec_error, training_rows
from rea_workload.schema import SCHEMA, RankerConfig


class RankerWorkload:
    name = "ranker"
    description = (
        "CTR ranker: sparse embeddings, optional DCN-v2 cross layers and FM term, then an MLP; "
        "trained with BCE on MovieLens-100k, synthetic planted-cross data, Criteo or parquet."
    )
    schema: KnobSchema = SCHEMA

    def dataset_error(self, dataset: str) -> str | None:
        return spec_error(dataset)

    def dataset_paths(self, dataset: str) -> list[Path]:
        return dataset_files(dataset)

    def training_rows(self, dataset: str) -> int | None:
        return training_rows(dataset)

    def parameters(self, config: dict[str, Any], dataset: str) -> int | None:
        sizes = feature_sizes(dataset)
        return None if sizes is None else ranker_parameters(sizes, RankerConfig.from_overrides(config))

    def command(self) -> list[str]:
        return [sys.executable, "-m", "rea_workload"]

    def preload(self) -> list[str]:
        """Imported once per worker, so each job is forked warm instead of paying ~5 CPU-s for
        torch and scikit-learn."""
        return ["rea_workload.train"]

    def prepare(self, dataset: str) -> None:
        """Fetch what the dataset needs once, before parallel jobs would race to do it."""
        from rea_workload.datasets.archive import prefetch

        prefetch(dataset)


def ranker_parameters(sizes: FeatureSizes, config: RankerConfig) -> int:
    """The parameter count of :class:`~rea_workload.model.RankerModel`, by arithmetic over its
    layers: the planner counts without importing torch (tests hold it to the built model)."""
    dim = config.embedding_dim
    buckets = config.hash_buckets
    tables = [buckets if 0 < buckets < ids else ids for ids in (*sizes.categorical, *sizes.multi)]
    width = len(tables) * dim + sizes.dense
    count = sum(tables) * dim
    if 0 < config.cross_rank < width:
        count += config.cross_layers * (2 * width * config.cross_rank + width)
    else:
        count += config.cross_layers * (width * width + width)
    for _ in range(config.mlp_depth):
        count += (width + 1) * config.mlp_width + (2 * config.mlp_width if config.layer_norm else 0)
        width = config.mlp_width
    return count + width + 1


WORKLOAD = RankerWorkload()
