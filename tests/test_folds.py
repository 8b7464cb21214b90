import numpy as np
import pandas as pd
import pytest
from conftest import require_breathing

from lib.core.config import ROOT
from lib.components import load_competition
from lib.data.folds import fold_table, groups_crossing_folds, make_folds
from lib.data.prepare import group_of


def _synthetic(n=300, seed=0):
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, 90, n).astype(str)
    labels = np.where(rng.random(n) < 0.3, "a", "b")
    return labels, groups


def test_stratified_balances_classes():
    labels, _ = _synthetic()
    fold = make_folds(labels, n_folds=5, scheme="stratified", seed=1)
    table = fold_table(fold, (labels == "b").astype(int), ["a", "b"])
    expected = pd.Series(labels).value_counts() / 5
    for cls in ("a", "b"):
        assert (abs(table[cls] - expected[cls]) <= 1).all()
    assert sorted(np.unique(fold)) == list(range(5))


def test_stratified_group_keeps_groups_together():
    labels, groups = _synthetic()
    fold = make_folds(labels, groups, n_folds=5, scheme="stratified_group", seed=1)
    df = pd.DataFrame({"fold": fold, "group": groups, "target": labels})
    assert groups_crossing_folds(df) == []
    # a deliberately split group is reported
    df.loc[df.index[0], "fold"] = (df.loc[df.index[0], "fold"] + 1) % 5
    assert groups_crossing_folds(df) == [df.loc[df.index[0], "group"]]


def test_errors():
    labels, _ = _synthetic()
    with pytest.raises(ValueError, match="needs groups"):
        make_folds(labels, None, scheme="stratified_group")
    with pytest.raises(ValueError, match="not one of"):
        make_folds(labels, scheme="random")
    with pytest.raises(ValueError, match="fewer rows than the 5 folds"):
        make_folds(["a"] * 10 + ["b"] * 2, n_folds=5)
    with pytest.raises(ValueError, match=r"class 'murmur' \(2\) has fewer rows than the 5 folds"):  # not np.int64(1)
        make_folds(np.array([0] * 10 + [1] * 2), n_folds=5, classes=["normal", "murmur"])
    with pytest.raises(ValueError, match=r"classes 'c' \(1\), 'b' \(3\) have fewer rows than the 5 folds"):  # all
        make_folds(["a"] * 10 + ["b"] * 3 + ["c"], n_folds=5)  # of them, not the first only (probe)


def test_real_breathing_sessions_stay_in_one_fold():
    root = require_breathing()
    comp = load_competition(ROOT / "configs/data/breathing.yaml", root)
    train = pd.read_csv(root / "train.csv")
    groups = [group_of(i, comp["groups"]["regex"]) for i in train.ID]
    assert group_of("steth_20180814_09_37_11_I_004", comp["groups"]["regex"]) == "steth_20180814_09_37_11"
    fold = make_folds(train.Target, groups, 5, "stratified_group", 42)
    df = pd.DataFrame({"fold": fold, "group": groups, "target": train.Target})
    assert groups_crossing_folds(df) == []
    table = fold_table(fold, (train.Target == "I").astype(int), ["E", "I"])
    assert (table["total"] - len(df) / 5).abs().max() <= 5
    assert ((table["I"] / table["total"]) - 0.5).abs().max() < 0.02


def test_multilabel_stratified_balances_every_label():
    rng = np.random.default_rng(3)
    y = (rng.random((400, 6)) < [0.5, 0.3, 0.2, 0.1, 0.05, 0.03]).astype(int)
    fold = make_folds(y, n_folds=5, scheme="multilabel_stratified", seed=0)
    table = fold_table(fold, y, list("abcdef"))
    expected = y.sum(0) / 5
    assert (np.abs(table[list("abcdef")].to_numpy() - expected) <= 1.5).all()
    with pytest.raises(ValueError, match="multilabel_stratified"):
        make_folds(y, n_folds=5, scheme="stratified")


def test_group_and_predefined_schemes():
    labels, groups = _synthetic()
    fold = make_folds(labels, groups, n_folds=4, scheme="group", seed=0)
    assert groups_crossing_folds(pd.DataFrame({"fold": fold, "group": groups})) == []
    shipped = np.array(["1", "10", "2"] * 4)
    assert make_folds(shipped[:, None].repeat(2, 1), scheme="predefined", predefined=shipped).tolist() == [0, 2, 1] * 4
    with pytest.raises(ValueError, match="fold column"):
        make_folds(labels, scheme="predefined")


def test_multilabel_stratified_group_keeps_groups_and_balances_every_label():
    rng = np.random.default_rng(5)
    n_groups = 150
    y_group = (rng.random((n_groups, 4)) < [0.5, 0.3, 0.15, 0.08]).astype(int)  # labels per patient
    sizes = rng.integers(1, 5, n_groups)  # 1-4 recordings per patient
    groups = np.repeat([f"p{g}" for g in range(n_groups)], sizes)
    y = np.repeat(y_group, sizes, axis=0)
    y[rng.random(y.shape) < 0.2] = 0  # a recording need not carry every label of its patient
    fold = make_folds(y, groups, n_folds=5, scheme="multilabel_stratified_group", seed=0)
    assert groups_crossing_folds(pd.DataFrame({"fold": fold, "group": groups})) == []
    assert sorted(np.unique(fold)) == list(range(5))
    # every label's groups spread evenly: per fold within 1.5 of a fifth of the groups carrying it
    first = pd.Series(groups).drop_duplicates().index
    seen = pd.DataFrame(y).groupby(groups, sort=False).max().loc[groups[first]].to_numpy()
    table = fold_table(fold[first], seen, list("abcd"))
    assert (np.abs(table[list("abcd")].to_numpy() - seen.sum(0) / 5) <= 1.5).all()
    with pytest.raises(ValueError, match="needs groups"):
        make_folds(y, None, scheme="multilabel_stratified_group")
    with pytest.raises(ValueError, match="fewer than 5 folds"):
        make_folds(y[:6], ["p0", "p1", "p2"] * 2, scheme="multilabel_stratified_group")
