"""Cross-validation folds with scikit-learn's splitters (and ``iterative-stratification``).

Schemes (``folds.scheme`` in a competition config):

* ``stratified``: ``StratifiedKFold`` over rows (class balance per fold; groups are ignored);
* ``stratified_group``: ``StratifiedGroupKFold``: every row of a group (e.g. one patient or one
  recording session) lands in the same fold, with classes as balanced as the groups allow;
* ``group``: ``GroupKFold``: groups kept together, no stratification (e.g. multi-label + groups);
* ``multilabel_stratified``: ``MultilabelStratifiedKFold`` from ``iterative-stratification``
  (Sechidis et al. 2011, "On the stratification of multi-label data"): every label's share
  balanced across folds; it splits rows, so groups are NOT kept together;
* ``multilabel_stratified_group``: the same over groups (e.g. patients with several recordings
  and labels per patient): each group's rows are aggregated into one label-indicator row (the
  group has label k if any of its rows has it), ``MultilabelStratifiedKFold`` splits the groups,
  and every row gets its group's fold. The default for multi-label tasks with groups;
* ``leave_one_group_out``: ``LeaveOneGroupOut``: one fold per group (``n_folds`` is the number
  of groups), e.g. ``groups: {column: database}``: every fold is a database the model was not
  trained on, which measures transfer to an unseen device or site;
* ``predefined``: the folds the competition ships (a CSV column, e.g. ESC-50's ``fold``).

``stratify_by`` (``folds.stratify_by: [database]``): the stratified schemes balance the label
*and* these columns' values across folds (single-label: the key is the label joined with the
values; multi-label: each value is one more indicator column that ``MultilabelStratifiedKFold``
balances beside the labels, and a group carries every value of its rows), e.g. every database's
share of each class in every fold, when the test set comes from the same databases.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch  # noqa: F401  before scikit-learn, for the reason below
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold, StratifiedKFold

from ..core.utils import plain_number

# torch before scikit-learn, in every module of lib that imports scikit-learn when it loads: torch
# loads its OpenMP runtime (libgomp) into the process's global symbol scope. When scikit-learn's
# helpers were loaded before it (on their own vendored libgomp) and its gradient-boosting extension
# after it (lazily, at the first fit), a stage-02 fit of zoo/hgb took 5.6 s a breathing fold
# instead of 2.5 s on two cores (the same trees; `02_train.py configs/zoo/hgb.yaml`, 2-core AMD
# EPYC). Stage scripts' --help and `sweep.py`'s TQDM_DISABLE need `lib.cli` free of torch, so
# the import is here and not in lib/__init__.py.

SCHEMES = ("stratified", "stratified_group", "group", "multilabel_stratified", "multilabel_stratified_group",
           "leave_one_group_out", "predefined")
KEEPS_GROUPS = {"stratified": "stratified_group", "multilabel_stratified": "multilabel_stratified_group"}
"""Schemes that split rows (ignoring groups) -> the scheme that keeps groups together instead."""


def make_folds(y, groups=None, n_folds: int = 5, scheme: str = "stratified", seed: int = 42,
               predefined=None, strata=None, classes: list[str] | None = None) -> np.ndarray:
    """Assign each row to a fold.

    Input: encoded labels ``y`` (class indices ``(rows,)`` or a multi-label 0/1 matrix
    ``(rows, n_classes)``), optional ``groups`` ``(rows,)``, the number of folds, the scheme, a
    shuffling seed, for ``predefined`` the shipped fold of each row ``(rows,)`` (any values;
    they are numbered 0.. in sorted order, numbers numerically), and ``strata`` ``(rows,)`` (str), values stratified
    together with the label (every scheme that stratifies); ``classes``: the class
    names, for messages only.
    Output: int array ``(rows,)`` with values ``0 .. n_folds-1``.
    Raises ``ValueError`` for an unknown scheme, a scheme that lacks its groups or fold column,
    predefined fold values that spell one fold in several ways (``3`` and ``3.0`` or `` 3``),
    a multi-label matrix given to a single-label scheme (or class indices to a multi-label one),
    a class with fewer rows than folds, ``strata`` whose every class x value cell is smaller than
    the folds, or (``multilabel_stratified_group``) fewer groups than folds.
    """
    y = np.asarray(y)
    name = lambda k: str(classes[int(k)]) if classes else getattr(k, "item", lambda: k)()  # noqa: E731
    if scheme not in SCHEMES:
        raise ValueError(f"fold scheme {scheme!r} is not one of {SCHEMES}")
    if strata is not None and scheme in ("group", "leave_one_group_out", "predefined"):
        raise ValueError(f"stratify_by works with the stratified schemes (stratified, stratified_group, "
                         f"multilabel_stratified, multilabel_stratified_group), not {scheme!r}")
    if scheme == "predefined":
        if predefined is None:
            raise ValueError("scheme 'predefined' needs the fold column (folds.column in the config)")
        return _predefined_folds(predefined)
    if scheme in ("stratified_group", "group", "multilabel_stratified_group", "leave_one_group_out") and groups is None:
        raise ValueError(f"scheme {scheme!r} needs groups (set 'groups' in the competition config)")
    if y.ndim == 2 and scheme in ("stratified", "stratified_group"):
        raise ValueError(f"scheme {scheme!r} stratifies one label per row; multi-label data needs "
                         f"multilabel_stratified (or multilabel_stratified_group, to keep groups together)")
    if y.ndim == 1 and scheme.startswith("multilabel"):
        raise ValueError(f"scheme {scheme!r} needs a multi-label 0/1 matrix; use stratified or stratified_group")
    if scheme == "leave_one_group_out":
        codes, names = pd.factorize(pd.Series(np.asarray(groups)).astype(str), sort=True)
        if len(names) < 2:
            raise ValueError(f"scheme 'leave_one_group_out' needs at least 2 groups, got {len(names)}")
        return codes.astype(int)  # LeaveOneGroupOut's folds: group k (sorted) is fold k
    if strata is not None and y.ndim == 2:  # one indicator column per value, balanced like a label
        y = np.hstack([y, pd.get_dummies(pd.Series(np.asarray(strata)).astype(str)).to_numpy(dtype=y.dtype)])
    if y.ndim == 1 and scheme != "group":
        counts = pd.Series(y).value_counts(ascending=True)
        if counts.min() < n_folds:  # every such class named (the first only: probe)
            few = [f"{name(c)!r} ({n})" for c, n in counts[counts < n_folds].items()]
            raise ValueError(f"class{'es' if len(few) > 1 else ''} {', '.join(few[:10])}{' ...' if len(few) > 10 else ''}"
                             f" {'have' if len(few) > 1 else 'has'} fewer rows than the {n_folds} folds")
    if strata is not None and y.ndim == 1:  # a class x value cell smaller than the folds: spread over its rows' folds
        key = pd.Series(y).astype(str) + "|" + pd.Series(np.asarray(strata)).astype(str)
        largest = key.value_counts()
        if largest.iloc[0] < n_folds:  # scikit-learn's own message would speak of classes
            label, value = largest.index[0].split("|", 1)
            raise ValueError(f"stratify_by: every class x value cell has fewer rows than the {n_folds} folds (the "
                             f"largest, class {name(label)!r} with value {value!r}, has {largest.iloc[0]}): make "
                             f"fewer folds or stratify by fewer columns")
        y = pd.factorize(key)[0]
    if scheme == "multilabel_stratified_group":
        codes, names = pd.factorize(pd.Series(np.asarray(groups)).astype(str))
        if len(names) < n_folds:
            raise ValueError(f"{len(names)} groups, fewer than {n_folds} folds")
        y_group = pd.DataFrame(y).groupby(codes).max().to_numpy()  # label k if any of the group's rows has it
        return make_folds(y_group, None, n_folds, "multilabel_stratified", seed)[codes]
    x = np.zeros(len(y))
    if scheme == "stratified":
        splits = StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(x, y)
    elif scheme == "stratified_group":
        splits = StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed).split(x, y, groups)
    elif scheme == "group":
        splits = GroupKFold(n_folds, shuffle=True, random_state=seed).split(x, y, groups)
    else:
        from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

        splits = MultilabelStratifiedKFold(n_folds, shuffle=True, random_state=seed).split(x, y)
    fold = np.full(len(y), -1, dtype=int)
    with warnings.catch_warnings():  # a stratum smaller than the folds: 00 says so (small_strata)
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        for k, (_, valid) in enumerate(splits):
            fold[valid] = k
    return fold


def small_strata(y, strata, n_folds: int, classes: list[str]) -> list[str]:
    """The class x ``stratify_by`` value cells of single-label ``y`` (``(rows,)`` class indices)
    and ``strata`` (``(rows,)`` str) with fewer rows than ``n_folds``, as ``"class 'c' with value
    'v' (n rows)"``: :func:`make_folds` spreads each over as many folds as it has rows, so some
    folds validate none of it. ``[]`` for a multi-label ``y`` or without ``strata``."""
    if strata is None or np.ndim(y) != 1:
        return []
    cells = pd.DataFrame({"c": np.asarray(y), "v": np.asarray(strata).astype(str)}).value_counts(sort=False)
    return [f"class {classes[int(c)]!r} with value {v!r} ({n} row{'s' if n > 1 else ''})"
            for (c, v), n in cells.items() if n < n_folds]


def _predefined_folds(predefined) -> np.ndarray:
    """The shipped fold values ``(rows,)`` numbered 0.. in sorted order (numbers numerically);
    ``ValueError`` for one fold spelt in several ways (``3`` beside ``3.0`` or `` 3``: they made
    folds of their own, unsaid: probe)."""
    values = pd.Series(predefined).astype(str)
    spellings = values.value_counts().groupby(lambda v: _natural(v.strip())).filter(lambda c: len(c) > 1)
    if len(spellings):
        raise ValueError("fold values " + ", ".join(f"{v!r} ({n} row{'s' * (n != 1)})" for v, n in spellings.items()) +
                         " are one fold spelt in several ways: write each row's fold alike")
    return values.map({v: k for k, v in enumerate(sorted(values.unique(), key=_natural))}).to_numpy()


def _natural(value: str):
    """Sort key: numbers numerically ("2" before "10"), then text."""
    number = plain_number(value)  # ('1_0', '1e1' and 'nan' are text: lib.core.utils.plain_number)
    return (1, 0, value) if number is None else (0, number, "")


def fold_table(fold: np.ndarray, y: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """Rows per class and fold: one row per fold, one column per class (for a multi-label ``y``
    the rows carrying that label), and ``total`` (rows in the fold)."""
    y = np.asarray(y)
    onehot = y if y.ndim == 2 else np.eye(len(classes), dtype=int)[y]
    table = pd.DataFrame(onehot, columns=classes).groupby(np.asarray(fold)).sum()
    table.index.name = "fold"
    table["total"] = pd.Series(fold).value_counts().sort_index().to_numpy()
    return table


def groups_crossing_folds(folds: pd.DataFrame) -> list[str]:
    """Return the groups whose rows fall in more than one fold (empty when folds are clean)."""
    n = folds.groupby("group")["fold"].nunique()
    return n[n > 1].index.astype(str).tolist()
