"""Slices: groups of rows (a database, a device, a site, the sex of a patient) that every score is
also given for, so that a pooled score cannot hide a group the model fails on.

A competition declares them as columns of its training CSV (``slices: [database]``); stage 00
copies each into ``folds.csv`` as ``slice_<column>`` (:func:`slice_columns`). Labels travel with
their rows' slices as :class:`SlicedLabels`, a numpy array that indexes its slices with its rows,
so the metric ``worst_<metric>`` / ``slice_mean_<metric>``
(:func:`lib.evaluation.metrics.score_all`) can be used anywhere a metric is: early stopping,
blend weights, decisions.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..core.utils import plain_number

PREFIX = "slice_"
MISSING = "(missing)"


def slice_columns(table: pd.DataFrame) -> list[str]:
    """The ``slice_<column>`` columns of a ``folds.csv`` table, in order."""
    return [c for c in table.columns if c.startswith(PREFIX)]


def slice_values(train: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``folds.csv``'s slice columns from the training rows ``train``: ``slice_<c>`` for each of
    ``columns``, as :func:`category_text` writes them (stripped, ``1.0`` as ``1``), empty or
    missing cells as ``"(missing)"`` (kept, never dropped)."""
    text = {c: category_text(train[c]) for c in columns}
    return pd.DataFrame({PREFIX + c: np.where(t == "", MISSING, t) for c, t in text.items()}, index=train.index)


def slice_warnings(folds: pd.DataFrame) -> list[str]:
    """What 00 says of the slices of a ``folds.csv`` table: a slice column that holds one value
    (its worst and mean equal the pooled score) and one with empty cells (scored as the slice
    value ``"(missing)"``, which can be the worst), one message each."""
    out = []
    for col in slice_columns(folds):
        name, values = col[len(PREFIX):], folds[col].astype(str)
        n = int((values == MISSING).sum())
        if values.nunique() == 1:
            out.append(f"slices: column {name!r} {'is empty' if n else f'holds one value ({values.iloc[0]!r})'} in "
                       f"every training row: its worst and mean over slices are the pooled score")
        elif n:
            out.append(f"slices: column {name!r} is empty in {n} of {len(values)} training rows: they are scored "
                       f"as the slice value {MISSING!r} (fill them in the training table to score them with their "
                       f"own value)")
    return out


def category_text(values) -> np.ndarray:
    """Categorical cells as comparable text ``(rows,)`` str: stripped, missing as ``""``, a number
    in its shortest form (``"1.0"`` and ``"1"`` are ``"1"``), so that a column that pandas reads
    back as floats in one table (a test CSV with an empty cell) names the same categories as the
    integers of another."""
    series = pd.Series(values, dtype=object)
    text = series.where(series.notna(), "").astype(str).str.strip()

    def shortest(v: str) -> str:
        x = plain_number(v)  # (as floats, '1_12' and '11_2' were one category, and long ids rounded together)
        return v if x is None else str(int(x)) if x == x.to_integral_value() else format(x.normalize(), "f")

    return text.map({v: shortest(v) for v in text.unique()}).to_numpy(str)


def match_slice_values(values, known) -> np.ndarray:
    """Each of ``values`` (``(rows,)``, as written in a CSV) as the value of ``known`` (the training
    rows' values) that it names, compared as :func:`category_text` (``"1.0"`` in a test CSV
    that pandas read as floats names a training ``"1"``), else ``""`` (a value the training rows
    lack). Returns ``(rows,)`` str."""
    known = np.asarray(list(known), dtype=str)
    spelling = dict(zip(category_text(known), known))
    return np.array([spelling.get(v, "") for v in category_text(values)], dtype=str)


def counts_text(counts: dict) -> str:
    """``{value: rows}`` as ``"value (n rows), ..."`` for messages and reports."""
    return ", ".join(f"{v} ({n} rows)" for v, n in counts.items())


def unmatched_slice_values(values, known) -> dict[str, int]:
    """The values of ``values`` that :func:`match_slice_values` finds nowhere in ``known``, with
    their row counts (``{}`` when every row's value is known)."""
    values = np.asarray(values).astype(str)
    missing = values[match_slice_values(values, known) == ""]
    return {str(v): int(n) for v, n in zip(*np.unique(missing, return_counts=True))}


class SlicedLabels(np.ndarray):
    """Encoded labels ``(rows,)`` or ``(rows, n_classes)`` that carry each row's slice values
    ``slices``: ``{column: (rows,) array of str}``. Indexing the rows (``y[mask]``, ``y[idx]``,
    ``y[a:b]``) indexes the slices alike; ``y[:, k]`` keeps them. Anything that makes a plain
    array (``np.asarray``, scikit-learn) drops them. Raises ``ValueError`` when a slice has not
    one value per row."""

    slices: dict | None

    def __new__(cls, y, slices: dict):
        obj = np.asarray(y).view(cls)
        obj.slices = {k: np.asarray(v) for k, v in slices.items()}
        for k, v in obj.slices.items():
            if len(v) != len(obj):
                raise ValueError(f"slice {k!r} has {len(v)} values for {len(obj)} rows")
        return obj

    def __array_finalize__(self, obj) -> None:
        self.slices = getattr(obj, "slices", None)

    def __getitem__(self, index):
        out = super().__getitem__(index)
        if isinstance(out, SlicedLabels) and self.slices is not None:
            rows = index[0] if isinstance(index, tuple) else index
            if isinstance(rows, (int, np.integer)):
                out.slices = None  # one row of a multi-label matrix: its classes, not rows
            else:
                rows = np.asarray(rows) if isinstance(rows, np.ndarray) else rows
                out.slices = {k: v[rows] for k, v in self.slices.items()}
        return out


def with_slices(y, table: pd.DataFrame, ids=None):
    """``y`` as :class:`SlicedLabels` with the slices of its rows in ``table`` (a ``folds.csv``
    table) when the table has slice columns, else unchanged. The rows of ``y`` are ``table``'s
    rows, or with ``ids`` (one per row of ``y``) the table's rows of those ids. Raises
    ``KeyError`` for an id the table lacks."""
    cols = slice_columns(table)
    if not cols:
        return y
    rows = table if ids is None else table.set_index("id").loc[list(ids)]
    return SlicedLabels(y, {c[len(PREFIX):]: rows[c].astype(str).to_numpy() for c in cols})


def with_slice_columns(df: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """``df`` (rows with an ``id`` column, e.g. an OOF file) with the ``slice_<column>`` columns of
    their rows in ``table`` (``folds.csv``) added; unchanged when the table has none."""
    cols = slice_columns(table)
    if not cols:
        return df
    return df.drop(columns=[c for c in cols if c in df]).assign(
        **{c: table.set_index("id")[c].reindex(df["id"]).to_numpy() for c in cols})


def slices_of(y) -> dict | None:
    """The slices ``y`` carries (``{column: (rows,) values}``), or ``None``."""
    return getattr(y, "slices", None)
