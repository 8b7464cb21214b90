"""Cross-validation folds with scikit-learn's splitters.

Schemes (``folds.scheme`` in a competition config):

* ``stratified``: ``StratifiedKFold`` over rows (class balance per fold);
* ``stratified_group``: ``StratifiedGroupKFold``: every row of a group (e.g. one recording
  session) lands in the same fold, with classes as balanced as the groups allow.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

SCHEMES = ("stratified", "stratified_group")


def make_folds(labels, groups=None, n_folds: int = 5, scheme: str = "stratified", seed: int = 42) -> np.ndarray:
    """Assign each row to a fold.

    Input: ``labels`` of shape ``(rows,)`` (any hashable class labels), optional ``groups`` of
    shape ``(rows,)``, the number of folds, the scheme and a shuffling seed.
    Output: int array ``(rows,)`` with values ``0 .. n_folds-1``.
    Raises ``ValueError`` for an unknown scheme, a group scheme without groups, or a class with
    fewer rows than folds.
    """
    labels = np.asarray(labels)
    if scheme not in SCHEMES:
        raise ValueError(f"fold scheme {scheme!r} is not one of {SCHEMES}")
    counts = pd.Series(labels).value_counts()
    if counts.min() < n_folds:
        raise ValueError(f"class {counts.idxmin()!r} has {counts.min()} rows, fewer than {n_folds} folds")
    x = np.zeros(len(labels))
    if scheme == "stratified":
        splits = StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(x, labels)
    else:
        if groups is None:
            raise ValueError("scheme 'stratified_group' needs groups (set 'groups' in the competition config)")
        splits = StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed).split(x, labels, groups)
    fold = np.full(len(labels), -1, dtype=int)
    for k, (_, valid) in enumerate(splits):
        fold[valid] = k
    return fold


def fold_table(folds: pd.DataFrame, target: str = "target") -> pd.DataFrame:
    """Class counts per fold: a table with one row per fold, one column per class, and ``total``."""
    table = pd.crosstab(folds["fold"], folds[target])
    table["total"] = table.sum(axis=1)
    return table


def groups_crossing_folds(folds: pd.DataFrame) -> list[str]:
    """Return the groups whose rows fall in more than one fold (empty when folds are clean)."""
    n = folds.groupby("group")["fold"].nunique()
    return n[n > 1].index.astype(str).tolist()
