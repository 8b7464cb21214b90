"""Scores per slice (lib/data/slices.py, the worst_/slice_mean_ metrics, the reports of 02 and 04,
leaderboard.py) and folds that measure transfer to an unseen group (leave_one_group_out,
stratify_by): generated labels for the arithmetic, a real two-database heart-sound subset run
through the stages as a user would for the rest."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT, stage

from lib.core.errors import ConfigError
from lib.data.folds import make_folds, small_strata
from lib.data.slices import SlicedLabels
from lib.evaluation.metrics import get_metric, score_all, score_slices, undefined_in_folds, undefined_in_slices

BIN = {"task": "binary", "classes": ["normal", "abnormal"], "positive": "abnormal", "normal_class": "normal",
       "metric": "macc", "metrics": ["macc"], "slices": ["db"]}


def _two_databases(seed=0):
    """200 rows: database a perfectly separated, database b pure noise."""
    rng = np.random.default_rng(seed)
    db = np.array(["a"] * 120 + ["b"] * 80)
    y = rng.integers(0, 2, 200)
    p = np.where(db == "a", 0.2 + 0.6 * y, rng.random(200))
    return SlicedLabels(y, {"db": db}), np.stack([1 - p, p], 1), db


def test_sliced_labels_index_their_slices_with_their_rows():
    y = SlicedLabels(np.array([0, 1, 1, 0]), {"db": np.array(list("abab"))})
    assert y[y == 1].slices["db"].tolist() == ["b", "a"]
    assert y[[3, 0]].slices["db"].tolist() == ["b", "a"] and y[1:].slices["db"].tolist() == ["b", "a", "b"]
    m = SlicedLabels(np.eye(4)[:, :2], {"db": np.array(list("abab"))})
    assert m[:, 1].slices["db"].tolist() == list("abab") and m[np.array([1, 0, 1, 0], bool)].slices["db"].tolist() == ["a", "a"]
    with pytest.raises(ValueError, match="3 values for 4 rows"):
        SlicedLabels(np.zeros(4), {"db": np.array(list("abc"))})


def test_worst_and_mean_over_slices():
    y, probs, db = _two_databases()
    s = score_all(["macc", "worst_macc", "slice_mean_macc"], y, probs, BIN)
    per = [score_all(["macc"], np.asarray(y)[db == d], probs[db == d], BIN)["macc"] for d in "ab"]
    assert per[0] == 1.0 and per[1] < 0.7
    assert s["worst_macc"] == pytest.approx(per[1]) and s["slice_mean_macc"] == pytest.approx(np.mean(per))
    assert s["macc"] > s["worst_macc"]  # the pooled score hides database b
    lower = score_all(["worst_log_loss"], y, probs, BIN)["worst_log_loss"]  # lower is better: the worst is the largest
    assert lower == pytest.approx(max(score_all(["log_loss"], np.asarray(y)[db == d], probs[db == d], BIN)["log_loss"]
                                      for d in "ab"))
    table = score_slices(["macc"], y, probs, BIN)
    assert table["value"].tolist() == ["a", "b", "worst"] and table["n"].tolist()[:2] == [120, 80]
    assert table.loc[0, "n_abnormal"] == int(np.asarray(y)[db == "a"].sum())
    with pytest.raises(ConfigError, match="needs `slices"):
        score_all(["worst_macc"], np.asarray(y), probs, BIN)
    with pytest.raises(ConfigError, match="add `slices"):
        get_metric("worst_macc", dict(BIN, slices=[]))
    assert get_metric("worst_log_loss", BIN).higher_is_better is False


def test_a_slice_the_per_slice_metric_leaves_out_is_named():
    # database c has only normal rows: macc is undefined there, worst_macc skips it
    folds = pd.DataFrame({"id": [f"r{i}" for i in range(8)], "target": ["normal", "abnormal"] * 3 + ["normal"] * 2,
                          "slice_db": ["a", "a", "b", "b", "a", "b", "c", "c"]})
    y = SlicedLabels(np.array([0, 1] * 3 + [0, 0]), {"db": folds["slice_db"].to_numpy()})
    assert np.isnan(score_slices(["macc"], y, np.eye(2)[np.asarray(y)], BIN).set_index("value").loc["c", "macc"])
    comp = dict(BIN, metric="worst_macc", metrics=["worst_macc", "accuracy", "slice_mean_accuracy"])
    assert undefined_in_slices(comp, folds) == [
        "worst_macc leaves out slice db='c' (2 training rows: normal 2): macc is undefined there, so no model choice "
        "sees how it does on it"]
    assert undefined_in_slices(dict(comp, metric="worst_accuracy", metrics=["worst_accuracy"]), folds) == []  # defined
    assert undefined_in_slices(dict(comp, metric="macc", metrics=["macc"]), folds) == []  # pooled: nothing left out


def test_a_slice_of_some_classes_is_scored_on_them():
    """A slice holding one class, every row right: macro_f1 scores it 1 (it was capped at
    1/n_classes, the absent classes counted 0, so worst_macro_f1 optimised a constant); binary f1
    of a slice of negatives only, nothing to score, is undefined and named, as macc's is."""
    multi = {"task": "multiclass", "classes": ["a", "b", "c"], "metric": "worst_macro_f1",
             "metrics": ["worst_macro_f1"], "slices": ["device"]}
    y = SlicedLabels(np.array([0, 0, 0, 0, 1, 2, 1, 2]), {"device": np.array(list("xxxyyyyy"))})
    right = np.eye(3)[np.asarray(y)]
    assert score_all(["worst_macro_f1"], y, right, multi)["worst_macro_f1"] == 1.0
    assert score_slices(["macro_f1"], y, right, multi).set_index("value").loc["x", "macro_f1"] == 1.0
    binary = dict(BIN, metric="worst_f1", metrics=["worst_f1"])
    folds = pd.DataFrame({"id": [f"r{i}" for i in range(6)], "target": ["normal", "abnormal"] * 2 + ["normal"] * 2,
                          "slice_db": ["a", "a", "a", "a", "c", "c"]})
    yb = SlicedLabels(np.array([0, 1, 0, 1, 0, 0]), {"db": folds["slice_db"].to_numpy()})
    assert np.isnan(score_slices(["f1"], yb, np.eye(2)[np.asarray(yb)], binary).set_index("value").loc["c", "f1"])
    assert [m.split(" (")[0] for m in undefined_in_slices(binary, folds)] == ["worst_f1 leaves out slice db='c'"]
    wrong = np.eye(2)[[0, 1, 0, 1, 1, 0]]  # a false alarm in c: still undefined there (no positive), as warned
    assert score_all(["worst_f1"], yb, wrong, binary)["worst_f1"] == 1.0


def test_a_fold_the_metric_is_undefined_on_is_named():
    """Leave one database out with a database of one class: macc is undefined on that fold, for
    any model; 00 says so (it was silent)."""
    folds = pd.DataFrame({"id": [f"r{i}" for i in range(7)], "fold": [0, 0, 0, 1, 1, 2, -1],
                          "target": ["normal", "abnormal", "normal", "normal", "normal", "abnormal", "abnormal"]})
    assert undefined_in_folds(BIN, folds) == [
        "fold 1: macc is undefined on its 2 validation rows (normal 2): that fold's best epoch is chosen by its "
        "validation loss, and its score is left out of the fold means",
        "fold 2: macc is undefined on its 1 validation rows (abnormal 1): that fold's best epoch is chosen by its "
        "validation loss, and its score is left out of the fold means"]
    assert undefined_in_folds(dict(BIN, metric="accuracy"), folds) == []  # accuracy is defined on one class
    # worst_macc, what the folds monitor: every database of a fold holds one class, so it is undefined
    # on both folds though macc of each fold is defined
    crossed = pd.DataFrame({"id": list("abcd"), "fold": [0, 0, 1, 1], "target": ["normal", "abnormal"] * 2,
                            "slice_db": ["A", "B", "B", "A"]})
    worst = dict(BIN, metric="worst_macc", metrics=["worst_macc"])
    assert [m.split(":")[0] for m in undefined_in_folds(worst, crossed)] == ["fold 0", "fold 1"]
    assert undefined_in_folds(BIN, crossed) == []


def test_leave_one_group_out_and_stratify_by():
    rng = np.random.default_rng(1)
    db = np.array(["b"] * 60 + ["f"] * 30 + ["e"] * 30)
    y = rng.integers(0, 2, 120)
    fold = make_folds(y, db, scheme="leave_one_group_out")
    assert sorted(set(fold)) == [0, 1, 2] and all(len(set(fold[db == d])) == 1 for d in "bef")
    fold = make_folds(y, None, 5, "stratified", 0, strata=db)
    for d in "bef":  # every database's rows spread over the folds, class by class
        for c in (0, 1):
            counts = np.bincount(fold[(db == d) & (y == c)], minlength=5)
            assert counts.max() - counts.min() <= 1
    with pytest.raises(ValueError, match="at least 2 groups"):
        make_folds(y, np.zeros(120), scheme="leave_one_group_out")
    # a class x database cell with fewer rows than folds (a small database's 2 abnormal rows) was refused:
    # it is spread over as many folds as it has rows, the other cells still balanced, and 00 says so
    small = np.append(db[:-2], ["x", "x"])
    y2 = np.append(y[:-2], [1, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scikit-learn's "least populated class" warning is 00's to say
        fold = make_folds(y2, None, 5, "stratified", 0, strata=small)
    assert len(set(fold[small == "x"])) == 2
    for d in "bef":
        for c in (0, 1):
            counts = np.bincount(fold[(small == d) & (y2 == c)], minlength=5)
            assert counts.max() - counts.min() <= 1
    assert small_strata(y2, small, 5, ["normal", "abnormal"]) == ["class 'abnormal' with value 'x' (2 rows)"]
    assert small_strata(y2, db, 5, ["normal", "abnormal"]) == []
    with pytest.raises(ValueError, match=r"stratify_by: every class x value cell has fewer rows than the 5 folds \(the "
                                         r"largest, class '\d' with value '\d+', has 4\)"):  # scikit-learn's message before
        make_folds(y[:40], None, 5, "stratified", 0, strata=np.arange(40) % 10)
    with pytest.raises(ValueError, match=r"class 1 \(2\) has fewer rows than the 5 folds"):  # a class itself still is refused
        make_folds(np.append(np.zeros(118, int), [1, 1]), None, 5, "stratified", 0, strata=db)


def test_stratify_by_with_multilabel_schemes():
    """Multi-label: every database's share in every fold, rows or whole patients, with the labels
    still balanced; without stratify_by the small database lands unevenly on this seed."""
    rng = np.random.default_rng(0)
    patient = np.repeat(np.arange(60), 3)  # 3 recordings a patient, one database a patient
    db = np.where(patient < 45, "b", "f")
    y = (rng.random((180, 3)) < [0.5, 0.3, 0.2]).astype(int)
    for scheme, groups in (("multilabel_stratified", None), ("multilabel_stratified_group", patient)):
        fold = make_folds(y, groups, 5, scheme, 0, strata=db)
        per_fold = np.bincount(fold[db == "f"], minlength=5)
        assert per_fold.max() - per_fold.min() <= (1 if groups is None else 3), (scheme, per_fold)  # 45 rows, 15 patients
        for k in range(3):  # the labels stay balanced
            counts = np.bincount(fold[y[:, k] == 1], minlength=5)
            assert counts.max() - counts.min() <= 6, (scheme, k, counts)
        if groups is not None:
            assert all(len(set(fold[patient == g])) == 1 for g in range(60))
    plain = make_folds(y, patient, 5, "multilabel_stratified_group", 0)
    assert np.ptp(np.bincount(plain[db == "f"], minlength=5)) > 3  # what stratify_by mends
    for scheme in ("group", "leave_one_group_out", "predefined"):  # no strata to balance: refused, not ignored
        with pytest.raises(ValueError, match=f"not '{scheme}'"):
            make_folds(y, patient, 5, scheme, 0, predefined=patient % 5, strata=db)




def test_slices_through_the_stages_on_real_heart_sounds(heart_sound_subset, tmp_path):
    """A user's run: metric worst_macc over the databases, gradient boosting (seconds), then 04
    and the leaderboard; every stage shows the per-database scores and the worst database."""
    cfg = yaml.safe_load((heart_sound_subset / "heart_sound.yaml").read_text())
    cfg.update(metric="worst_macc", metrics=["macc", "worst_macc", "auroc"])
    data_cfg = tmp_path / "hs.yaml"
    data_cfg.write_text(yaml.safe_dump(cfg))
    out, exp = tmp_path / "out", ROOT / "configs/heart_sound/hgb.yaml"
    stage("00_prepare.py", data_cfg, "--output-dir", out)
    folds = pd.read_csv(out / "folds.csv")
    assert sorted(folds["slice_database"].unique()) == ["training-b", "training-f"]
    stage("01_features.py", exp, "--output-dir", out)
    trained = stage("02_train.py", exp, "--output-dir", out).stdout
    oof = pd.read_csv(out / "oof/hgb.csv").merge(folds[["id", "slice_database"]], on="id")
    per = {d: score_all(["macc"], (g.target == "abnormal").astype(int).to_numpy(),
                        g[["p_normal", "p_abnormal"]].to_numpy(), dict(BIN, slices=["database"]))["macc"]
           for d, g in oof.groupby("slice_database")}
    scores = json.loads((out / "models/hgb/scores.json").read_text())
    assert scores["oof"]["worst_macc"] == pytest.approx(min(per.values()))
    report = (out / "models/hgb/report/report.md").read_text()
    table = pd.read_csv(out / "models/hgb/report/slices.csv")
    assert "## Scores per slice" in report and (out / "models/hgb/report/slices.png").stat().st_size > 0
    assert dict(zip(table["value"][:2], table["macc"][:2])) == pytest.approx(per)
    assert table["n"][:2].tolist() == [16, 16]
    printed = trained[trained.index("OOF macc per slice"):].splitlines()  # 02's summary shows them too (probe)
    for value, macc in per.items():
        assert any(line.split()[1:] == [value, "16", f"{macc:.4f}"] for line in printed[2:5]), printed[:6]
    assert printed[4].split()[1:] == ["worst", f"{min(per.values()):.4f}"], printed[:6]
    log = stage("04_ensemble.py", "--output-dir", out).stdout
    assert "## Scores per slice" in (out / "ensemble/report.md").read_text() and (out / "ensemble/slices.png").exists()
    board = stage("leaderboard.py", "--output-dir", out).stdout
    assert "per slice" in board and "database=training-f (n=16)" in board and (out / "leaderboard_slices.png").exists()
    assert "worst_macc" in log or "worst_macc" in board


def test_unknown_slice_column_is_named(heart_sound_subset, tmp_path):
    cfg = yaml.safe_load((heart_sound_subset / "heart_sound.yaml").read_text())
    cfg["slices"] = ["device"]
    (tmp_path / "hs.yaml").write_text(yaml.safe_dump(cfg))
    r = stage("00_prepare.py", tmp_path / "hs.yaml", "--output-dir", tmp_path / "out", check=False)
    assert r.returncode != 0 and "device" in r.stdout + r.stderr and "Traceback" not in r.stderr


def test_a_slice_of_one_value_or_with_empty_cells_is_said(heart_sound_subset, tmp_path):
    """A slice column of one value made worst_macc the pooled macc, and empty cells became a slice
    value "(missing)" that could be the worst, both unsaid (probe): 00 warns of each."""
    train = pd.read_csv(heart_sound_subset / "train.csv")
    train.loc[:2, "database"] = ""
    train.assign(site="clinic").to_csv(heart_sound_subset / "train.csv", index=False)
    cfg = yaml.safe_load((heart_sound_subset / "heart_sound.yaml").read_text())
    cfg.update(slices=["database", "site"], metric="worst_macc", metrics=["macc", "worst_macc"])
    (tmp_path / "hs.yaml").write_text(yaml.safe_dump(cfg))
    log = stage("00_prepare.py", tmp_path / "hs.yaml", "--output-dir", tmp_path / "out").stdout
    assert ("slices: column 'database' is empty in 3 of 32 training rows: they are scored as the slice value "
            "'(missing)'") in log, log
    assert "slices: column 'site' holds one value ('clinic') in every training row" in log, log
    assert "column 'database' holds one value" not in log and "column 'site' is empty" not in log
    assert (pd.read_csv(tmp_path / "out/folds.csv")["slice_database"] == "(missing)").sum() == 3


def test_leave_one_database_out_on_real_heart_sounds(heart_sound_subset, tmp_path):
    cfg = yaml.safe_load((heart_sound_subset / "heart_sound.yaml").read_text())
    cfg.update(groups={"column": "database"}, folds={"scheme": "leave_one_group_out"})
    (tmp_path / "hs.yaml").write_text(yaml.safe_dump(cfg))
    stage("00_prepare.py", tmp_path / "hs.yaml", "--output-dir", tmp_path / "out")
    folds = pd.read_csv(tmp_path / "out/folds.csv")
    assert folds.groupby("slice_database")["fold"].nunique().tolist() == [1, 1] and folds["fold"].nunique() == 2
    assert yaml.safe_load((tmp_path / "out/competition.yaml").read_text())["folds"]["n_folds"] == 2


def test_a_network_early_stops_on_the_worst_slice(tmp_path):
    """metric: worst_accuracy drives a network's epochs: every validation score of the history is
    the worst site's accuracy, recomputed here from the fold's predictions."""
    import torch
    from conftest import make_toy_competition

    from lib.components import load_competition, load_experiment
    from lib.core.paths import Outputs
    from lib.data.prepare import prepare
    from lib.features.cache import build_feature_set
    from lib.inputs import load_inputs
    from lib.training.loop import train_fold

    make_toy_competition(tmp_path / "data", n=24)
    train = pd.read_csv(tmp_path / "data/train.csv")
    train["site"] = ["x", "x", "y"] * 8
    train.to_csv(tmp_path / "data/train.csv", index=False)
    cfg = yaml.safe_load((tmp_path / "data/toy.yaml").read_text())
    cfg.update(slices=["site"], metric="worst_accuracy", metrics=["accuracy", "worst_accuracy"])
    (tmp_path / "data/toy.yaml").write_text(yaml.safe_dump(cfg))
    out = Outputs(tmp_path / "out")
    prepare(load_competition(tmp_path / "data/toy.yaml"), out.root)
    exp = {"features": {"name": "log_mel", "set": "lm16", "params": {"n_mels": 16, "n_fft": 512, "hop_length": 256}},
           "model": {"name": "cnn", "params": {"channels": [4, 8], "convs_per_block": 1, "head_hidden": 8}},
           "train": {"epochs": 3, "batch_size": 4, "device": "cpu"}}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(exp))
    ecfg = load_experiment(tmp_path / "exp.yaml")
    build_feature_set(out, ecfg["features"], workers=1)
    comp, table = out.load_competition(), out.load_split("train")
    data = load_inputs(out, ecfg, "train", table, comp, torch.device("cpu"))
    _, info, probs, history = train_fold(ecfg, comp, data, table, 0, torch.device("cpu"), log=lambda *_: None)
    valid = table["fold"].to_numpy() == 0
    y, site = (table["target"][valid] == "b").to_numpy(), table["slice_site"][valid].to_numpy()
    worst = min(((probs[:, 1] > 0.5) == y)[site == s].mean() for s in ("x", "y"))
    assert info["worst_accuracy"] == pytest.approx(worst) and len(history) == 3
    assert all(h["worst_accuracy"] <= h["accuracy"] + 1e-12 for h in history)


def test_a_multilabel_slice_without_any_label_is_named_as_such():
    """A site where no recording has a label: worst_auroc leaves it out, and the message says
    that no row has a label (it printed an empty list of counts)."""
    comp = {"task": "multilabel", "classes": ["AS", "MR"], "metric": "worst_auroc", "metrics": ["worst_auroc"],
            "slices": ["site"]}
    folds = pd.DataFrame({"id": [f"r{i}" for i in range(6)], "target": ["AS", "MR", "AS;MR", "", "", ""],
                          "slice_site": ["AV", "AV", "AV", "AV", "Erb", "Erb"]})
    assert undefined_in_slices(comp, folds) == [
        "worst_auroc leaves out slice site='Erb' (2 training rows: no label on any): auroc is undefined there, so no "
        "model choice sees how it does on it"]


def test_the_slice_tables_of_02_say_they_are_before_the_decision_post_processing(tmp_path, capsys):
    """With ``decision.group_aggregate`` (or a mask, a slice prior) 02's slice table scores the
    models' own probabilities and 04's the post-processed ones: 02's printed table and report say
    so (a probe read the two as conflicting)."""
    import importlib.util

    from lib.evaluation.reports import slice_section

    spec = importlib.util.spec_from_file_location("train_stage", ROOT / "02_train.py")
    train_stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_stage)
    y, probs, _ = _two_databases()
    comp = dict(BIN, metrics=["macc"], metric="macc", slices=["db"])
    lines = slice_section(y, probs, comp, None, tmp_path, "exp", {}, before=["group_aggregate"])
    assert "Scored on the models' own probabilities, before decision.group_aggregate: 04_ensemble.py's slice " \
           "table scores the rows after it" in "\n".join(lines)
    assert "own probabilities" not in "\n".join(slice_section(y, probs, comp, None, tmp_path, "exp", {}))
    for decision, said in (({"group_aggregate": "mean"}, True), ({}, False)):
        train_stage._slices_table("macc", tmp_path / "slices.csv", dict(comp, decision=decision))
        header = capsys.readouterr().out.strip().splitlines()[0]
        assert ("OOF macc per slice of the models' own probabilities, before decision.group_aggregate (04_ensemble.py "
                "scores the slices after it)" in header) == said, header
