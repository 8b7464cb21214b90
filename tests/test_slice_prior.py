"""decision.slice_prior (lib/evaluation/decisions.py): each slice's class prior replaced by the
pooled one before blending and deciding. The arithmetic against the direct formula, the OOF
rows' priors taken from the other folds only, the failure it is for (a model that learnt the
recording device from sources with different class ratios) on generated scores, and the setting
through stages 00-05 and a bundle as a user runs them."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT, make_toy_competition, stage

from lib.core.errors import ConfigError
from lib.data.slices import SlicedLabels, match_slice_values
from lib.evaluation.decisions import shift_slice_priors, slice_prior_shift, slice_priors
from lib.evaluation.metrics import score_all

BIN = {"task": "binary", "classes": ["normal", "abnormal"], "positive": "abnormal", "normal_class": "normal",
       "metric": "macc", "metrics": ["macc"], "slices": ["db"], "decision": {"slice_prior": "db"}}


def _logit(p):
    return np.log(p / (1 - p))


def test_priors_and_shift_against_the_direct_formula():
    y, db = np.array([1, 1, 1, 0, 1, 0, 0, 0]), np.array(list("aaaabbbb"))
    priors = slice_priors(y, db, BIN)
    assert priors["pooled"] == pytest.approx([(4 + 1) / (8 + 2), (4 + 1) / (8 + 2)])  # add-one smoothing
    assert priors["slices"]["a"] == pytest.approx([2 / 6, 4 / 6]) and priors["rows"] == {"a": 4, "b": 4}
    p = np.array([[0.3, 0.7], [0.9, 0.1], [0.5, 0.5]])
    out = shift_slice_priors(p, np.array(["a", "b", "c"]), priors, BIN)
    for row, value in ((0, "a"), (1, "b")):  # binary: logit shifted by logit(pooled) - logit(slice)
        expected = _logit(p[row, 1]) + _logit(priors["pooled"][1]) - _logit(priors["slices"][value][1])
        assert _logit(out[row, 1]) == pytest.approx(expected) and out[row].sum() == pytest.approx(1)
    assert out[2].tolist() == [0.5, 0.5]  # a value the training rows lack: kept

    multi = dict(BIN, task="multiclass", classes=["x", "y", "z"])
    pm = slice_priors(np.array([0, 0, 1, 2, 2, 2, 0, 1]), np.array(list("aaabbbbb")), multi)
    q = np.array([[0.2, 0.3, 0.5]])
    expected = q[0] * np.array(pm["pooled"]) / np.array(pm["slices"]["b"])
    assert shift_slice_priors(q, np.array(["b"]), pm, multi)[0] == pytest.approx(expected / expected.sum())

    ml = dict(BIN, task="multilabel", classes=["x", "y"])
    pl = slice_priors(np.array([[1, 0], [1, 1], [0, 1], [0, 0], [0, 1], [1, 0]]), np.array(list("aaabbb")), ml)
    assert pl["slices"]["a"] == pytest.approx([3 / 5, 3 / 5]) and pl["unknown"] == {}
    r = shift_slice_priors(np.array([[0.6, 0.0], [0.6, 1.0]]), np.array(["a", "a"]), pl, ml)
    expected = _logit(0.6) + _logit(pl["pooled"][0]) - _logit(pl["slices"]["a"][0])
    assert _logit(r[0, 0]) == pytest.approx(expected)
    assert r[0, 1] == 0.0 and r[1, 1] == 1.0  # a masked class (0) and a certain one stay


def test_a_slice_lacking_a_class_is_left_unshifted_and_said():
    """A database whose training rows are all normal: its add-one prior (1 / 17 abnormal) against
    a pooled 0.3 multiplied every row's odds of abnormal by about 7, so all its rows were decided
    abnormal (probe). Its prior is unknown: its rows keep their probabilities, and 00/04 say so."""
    from lib.evaluation.decisions import unknown_prior_notes

    y, db = np.array([1] * 6 + [0] * 4 + [0] * 15), np.array(["a"] * 10 + ["dev"] * 15)
    priors = dict(slice_priors(y, db, BIN), column="db")
    assert priors["unknown"] == {"dev": ["abnormal"]}
    p = np.array([[0.6, 0.4], [0.6, 0.4]])
    out = shift_slice_priors(p, np.array(["a", "dev"]), priors, BIN)
    assert out[1].tolist() == [0.6, 0.4] and out[0, 1] < 0.4  # dev kept; a (60 % abnormal) shifted down
    assert unknown_prior_notes(priors, BIN) == [
        "decision.slice_prior 'db': 'dev' (15 training rows) has no row of 'abnormal': its prior there is unknown, "
        "so its rows are left unshifted"]
    # multiclass: a class the slice lacks keeps its probability, the others shift within the rest (review)
    mc = dict(BIN, task="multiclass", classes=["x", "y", "rare"])
    pm = dict(slice_priors(np.array([0] * 8 + [1] * 2 + [0, 1, 2, 2]), np.array(["a"] * 10 + ["b"] * 4), mc), column="db")
    assert pm["unknown"] == {"a": ["rare"]}
    q = np.array([[0.7, 0.1, 0.2]])
    r = shift_slice_priors(q, np.array(["a"]), pm, mc)[0]
    pooled, prior = np.array(pm["pooled"][:2]), np.array(pm["slices"]["a"][:2])
    expected = q[0, :2] * pooled / prior
    assert r[2] == 0.2 and r[:2] == pytest.approx(expected / expected.sum() * 0.8)
    assert "its rows keep that class's probability, and the other classes are shifted" in unknown_prior_notes(pm, mc)[0]
    # multi-label: only the class that every (or no) row of the slice has is kept, the others shift
    ml = dict(BIN, task="multilabel", classes=["x", "y"])
    pl = dict(slice_priors(np.array([[1, 0], [1, 1], [0, 0], [0, 1], [1, 1]]), np.array(list("aabbb")), ml), column="db")
    assert pl["unknown"] == {"a": ["x"]}
    r = shift_slice_priors(np.array([[0.6, 0.3]]), np.array(["a"]), pl, ml)
    assert r[0, 0] == 0.6 and r[0, 1] != 0.3
    assert "no row, or only rows, with 'x'" in unknown_prior_notes(pl, ml)[0]
    # OOF rows: the same rule per fold, on the other folds' rows
    table = pd.DataFrame({"id": [str(i) for i in range(25)], "target": np.where(y == 1, "abnormal", "normal"),
                          "fold": np.arange(25) % 5, "slice_db": db})
    probs = np.tile([0.6, 0.4], (25, 1))
    shifted = slice_prior_shift(probs, table, BIN)
    np.testing.assert_array_equal(shifted[db == "dev"], probs[db == "dev"])
    assert not np.allclose(shifted[db == "a"], probs[db == "a"])
    # one abnormal dev row, in fold 0: the other folds' dev rows lack it when fold 0 is shifted, unlike the
    # test rows (shifted with every training row's priors): 04 counts those OOF rows (review)
    from lib.evaluation.ensemble import _slice_priors

    one = table.assign(target=np.where(np.arange(25) == 10, "abnormal", table["target"]))  # row 10: dev, fold 0
    sp = _slice_priors(one, BIN)
    n = int(((one.fold == 0) & (db == "dev")).sum())
    assert sp["unknown"] == {} and sp["oof_lacking"] == {"dev": [f"fold 0: {n} rows, 'abnormal'"]}
    assert unknown_prior_notes(sp, BIN)[-1] == (f"OOF rows whose fold's other folds lack a class of their db that its training "
                                         f"rows have: dev (fold 0: {n} rows, 'abnormal'): those rows are left unshifted, "
                                         f"unlike on test rows")


def _device_learner(seed=0, n=600):
    """Two sources with class ratios of 70 % and 10 % and a model that learnt each source's ratio
    on top of a weak heart signal: its log-odds are the signal plus the source's prior log-odds
    (as a network that recognises the device scores). Returns (folds table, probs, y)."""
    rng = np.random.default_rng(seed)
    db = np.where(np.arange(n) < n // 2, "a", "b")
    y = (rng.random(n) < np.where(db == "a", 0.7, 0.1)).astype(int)
    logit = 1.5 * (2 * y - 1) + rng.normal(0, 1.2, n) + np.where(db == "a", _logit(0.7), _logit(0.1))
    p = 1 / (1 + np.exp(-logit))
    table = pd.DataFrame({"id": np.arange(n).astype(str), "target": np.where(y == 1, "abnormal", "normal"),
                          "fold": rng.permutation(np.arange(n) % 5), "slice_db": db})
    return table, np.stack([1 - p, p], 1), y


def test_a_device_learner_is_decided_on_the_heart_per_source():
    table, probs, y = _device_learner()
    labels = SlicedLabels(y, {"db": table["slice_db"].to_numpy()})
    names = ["macc", "worst_macc", "slice_mean_macc"]
    before = score_all(names, labels, probs, BIN)
    after = score_all(names, labels, slice_prior_shift(probs, table, BIN), BIN)
    # at p = 0.5 source b (10 % abnormal) calls almost nothing abnormal; shifted, each source is decided on the signal
    assert before["worst_macc"] < 0.7 and after["worst_macc"] > before["worst_macc"] + 0.15
    assert after["slice_mean_macc"] > before["slice_mean_macc"] + 0.1
    # the trade it makes: pooled, the source is evidence of the label, and the shift gives that up
    assert after["macc"] < before["macc"]


def test_oof_rows_use_the_other_folds_priors_only():
    table, probs, _ = _device_learner(seed=1)
    shifted = slice_prior_shift(probs, table, BIN)
    flipped = table.copy()  # the labels of fold 0 changed: fold 0's own rows must not move, the others must
    rows = flipped["fold"] == 0
    flipped.loc[rows, "target"] = "abnormal"
    again = slice_prior_shift(probs, flipped, BIN)
    np.testing.assert_array_equal(again[rows], shifted[rows])
    assert not np.allclose(again[~rows], shifted[~rows])
    other = table["fold"] != 0  # fold 0's shift is the one of the priors of folds 1-4
    y = (table["target"] == "abnormal").astype(int).to_numpy()
    expected = shift_slice_priors(probs[rows], table["slice_db"][rows].to_numpy(),
                                  slice_priors(y[other], table["slice_db"][other].to_numpy(), BIN), BIN)
    np.testing.assert_allclose(shifted[rows], expected)
    # an experiment with fold 0 alone finished: its rows shift as a finished one's (they were left
    # unshifted, no other OOF rows to take priors from: review); pseudo-labelled rows (fold -1) never
    # count: their labels came from a blend whose models learnt fold 0's labels
    np.testing.assert_allclose(slice_prior_shift(probs[rows], table[rows], BIN, population=table), shifted[rows])
    pseudo = pd.concat([table, table.head(5).assign(id=lambda t: t["id"] + "_pl", fold=-1, target="abnormal")])
    np.testing.assert_allclose(slice_prior_shift(probs[rows], table[rows], BIN, population=pseudo), shifted[rows])


def _toy_with_sites(tmp_path, test_sites=True, **decision):
    make_toy_competition(tmp_path / "data", n=24)
    train = pd.read_csv(tmp_path / "data/train.csv")
    train["site"] = ["x"] * 16 + ["y"] * 8
    train.loc[:15, "label"] = ["b"] * 12 + ["a"] * 4  # site x mostly b, site y mostly a
    train.loc[16:, "label"] = ["a"] * 6 + ["b"] * 2
    train.to_csv(tmp_path / "data/train.csv", index=False)
    if test_sites:
        pd.DataFrame({"id": ["t0", "t1"], "site": ["x", "y"]}).to_csv(tmp_path / "data/test.csv", index=False)
    cfg = yaml.safe_load((tmp_path / "data/toy.yaml").read_text())
    cfg.update(slices=["site"], decision=decision, metric="macc", metrics=["macc", "worst_macc"])
    (tmp_path / "data/toy.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path / "data/toy.yaml"


def test_slice_prior_through_the_stages_and_a_bundle(tmp_path):
    """A user's run: 00 keeps the test rows' sites, 04 shifts OOF and test probabilities with the
    right priors and says so in its report, and a bundle predicts the same blend."""
    data_cfg, out = _toy_with_sites(tmp_path, slice_prior="site"), tmp_path / "out"
    exp = tmp_path / "hgb.yaml"
    exp.write_text(yaml.safe_dump({"base": str(ROOT / "configs/zoo/hgb.yaml"), "model": {"params": {"max_iter": 20}},
                                   "features": {"name": "log_mel", "set": "lm16",
                                                "params": {"n_mels": 16, "n_fft": 512, "hop_length": 256}}}))
    stage("00_prepare.py", data_cfg, "--output-dir", out)
    assert pd.read_csv(out / "test.csv")["slice_site"].tolist() == ["x", "y"]
    for script in ("01_features.py", "02_train.py", "03_infer.py"):
        stage(script, exp, "--output-dir", out)
    from lib.components import load_experiment
    from lib.core.paths import Outputs
    from lib.runs.experiment import ExperimentRun

    said = []  # a network drawing each site's classes equally often on top of the shift: over-corrected, said
    net = load_experiment(ROOT / "configs/cnn_small.yaml", ["features.set=lm16", "features.params.n_mels=16",
                          "features.params.n_fft=512", "features.params.hop_length=256", "train.sampler=balanced_slices"])
    ExperimentRun(net, Outputs(out), "cpu", log=said.append)
    assert any("balanced_slices and decision.slice_prior" in line for line in said)
    log = stage("04_ensemble.py", "--output-dir", out).stdout  # best of one member: the member itself, both ways
    assert "slice prior shift on site" in log and "x (16 rows) a 0.278 b 0.722" in log
    assert "without the shift: single" in log and "members (OOF, after the slice prior shift):" in log
    summary = json.loads((out / "ensemble.json").read_text())
    prior = summary["slice_prior"]
    shifted, plain_score = (prior["compare"][k]["macc"] for k in ("with", "without"))
    assert ("WARNING: without the shift the blend scores better on macc" in log) == (plain_score > shifted + 1e-12)
    assert prior["column"] == "site" and prior["rows"] == {"x": 16, "y": 8}
    oof = pd.read_csv(out / "oof/hgb.csv")  # the comparison without the shift: the member's own OOF scores
    plain = (oof["p_b"] > 0.5).eq(oof["target"] == "b")
    assert prior["compare"]["without"]["method"] == "single"
    assert prior["compare"]["without"]["macc"] == pytest.approx(
        np.mean([plain[oof["target"] == c].mean() for c in ("a", "b")]))
    assert prior["slices"]["x"] == pytest.approx([5 / 18, 13 / 18]) and prior["pooled"] == pytest.approx([11 / 26, 15 / 26])
    member = pd.read_csv(out / "preds/hgb.csv")
    blend = pd.read_csv(out / "ensemble/test_blend.csv")
    comp = yaml.safe_load((out / "competition.yaml").read_text())
    expected = shift_slice_priors(member[["p_a", "p_b"]].to_numpy(), np.array(["x", "y"]), prior, comp)
    np.testing.assert_allclose(blend[["p_a", "p_b"]].to_numpy(), expected, atol=1e-9)
    assert "## Slice prior shift" in (out / "ensemble/report.md").read_text()
    stage("05_bundle.py", "--to", tmp_path / "bundle", "--output-dir", out)
    stage("predict_bundle.py", tmp_path / "bundle", "--data-dir", tmp_path / "data", "--work-dir", tmp_path / "work")
    again = pd.read_csv(tmp_path / "work/test_blend.csv")
    np.testing.assert_allclose(again[["p_a", "p_b"]].to_numpy(), expected, atol=1e-6)
    assert pd.read_csv(tmp_path / "work/submission.csv").equals(pd.read_csv(out / "submission.csv"))


def test_test_values_are_matched_by_number_and_unknown_ones_are_named(tmp_path):
    """A test CSV that pandas writes as floats ("1.0") names the training rows' slice "1"; a value
    no training row has is left unshifted, and 00, 04 and its report say which rows."""
    assert match_slice_values(np.array(["1.0", "1", "01", "3", "x", "(missing)"]), ["1", "2", "(missing)"]).tolist() == \
        ["1", "1", "1", "", "", "(missing)"]
    from lib.data.slices import slice_values

    assert slice_values(pd.DataFrame({"db": [" b", "b", "2.0", None, ""]}), ["db"])["slice_db"].tolist() == \
        ["b", "b", "2", "(missing)", "(missing)"]  # one slice per value, however it is written
    data_cfg, out = _toy_with_sites(tmp_path, slice_prior="site"), tmp_path / "out"
    train = pd.read_csv(tmp_path / "data/train.csv")
    train["site"] = train["site"].map({"x": 1, "y": 2})
    train.to_csv(tmp_path / "data/train.csv", index=False)
    pd.DataFrame({"id": ["t0", "t1"], "site": ["1.0", "3"]}).to_csv(tmp_path / "data/test.csv", index=False)
    exp = tmp_path / "hgb.yaml"
    exp.write_text(yaml.safe_dump({"base": str(ROOT / "configs/zoo/hgb.yaml"), "model": {"params": {"max_iter": 20}},
                                   "features": {"name": "log_mel", "set": "lm16",
                                                "params": {"n_mels": 16, "n_fft": 512, "hop_length": 256}}}))
    r = stage("00_prepare.py", data_cfg, "--output-dir", out)
    assert "decision.slice_prior column 'site': 1 test row(s) have values no training row has: '3' (1 rows)" in r.stdout + r.stderr
    for script in ("01_features.py", "02_train.py", "03_infer.py"):
        stage(script, exp, "--output-dir", out)
    log = stage("04_ensemble.py", "--method", "single", "--output-dir", out).stdout
    assert "test rows left unshifted (values no training row has): 3 (1 rows)" in log
    prior = json.loads((out / "ensemble.json").read_text())["slice_prior"]
    assert prior["test_unknown"] == {"3": 1}
    member = pd.read_csv(out / "preds/hgb.csv")[["p_a", "p_b"]].to_numpy()
    blend = pd.read_csv(out / "ensemble/test_blend.csv")[["p_a", "p_b"]].to_numpy()
    comp = yaml.safe_load((out / "competition.yaml").read_text())
    np.testing.assert_allclose(blend[0], shift_slice_priors(member[:1], np.array(["1"]), prior, comp)[0], atol=1e-9)
    assert not np.allclose(blend[0], member[0]) and np.allclose(blend[1], member[1])
    assert "Test rows left unshifted (values no training row has): 3 (1 rows)" in (out / "ensemble/report.md").read_text()


def test_slice_prior_errors_name_the_file_and_key(tmp_path):
    r = stage("00_prepare.py", _toy_with_sites(tmp_path / "a", test_sites=False, slice_prior="site"),
              "--output-dir", tmp_path / "out", check=False)
    assert r.returncode != 0 and "test.csv" in r.stderr and "site" in r.stderr and "Traceback" not in r.stderr
    from lib.components import load_competition

    with pytest.raises(ConfigError, match="slice_prior 'device' is not one of slices"):
        load_competition(_toy_with_sites(tmp_path / "b", slice_prior="device"))
    path = _toy_with_sites(tmp_path / "c", slice_prior="site")
    cfg = yaml.safe_load(path.read_text())
    cfg["test"] = {"files": "test/*.wav"}  # no CSV to read the test rows' sites from
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=r"toy.yaml \[decision\]: slice_prior 'site' needs the column in the test set's CSV"):
        load_competition(path)


def test_oof_rows_no_other_fold_can_shift_are_named():
    """Folds grouped by the slice column (leave one database out): no OOF row has its value in the
    other folds, so none is shifted and the OOF scores cannot judge the shift, which still moves
    the test rows; 04 and its report say so (they said every OOF row was shifted)."""
    from lib.evaluation.ensemble import _slice_priors
    from lib.evaluation.ensemble_report import _slice_prior_text

    comp = dict(BIN, decision={"slice_prior": "db"})
    train = pd.DataFrame({"id": [f"r{i}" for i in range(9)], "target": ["normal", "abnormal", "normal"] * 3,
                          "fold": [0, 0, 0, 1, 1, 1, 2, 2, -1], "slice_db": ["a", "a", "b", "b", "b", "c", "c", "c", "a"]})
    priors = _slice_priors(train, comp)
    assert priors["oof_unshifted"] == {"a": 2}  # b and c span two folds; the pseudo row (-1) is no OOF row
    probs = np.full((8, 2), 0.5)
    shifted = slice_prior_shift(probs, train[train.fold >= 0].reset_index(drop=True), comp)
    np.testing.assert_array_equal(shifted[:2], probs[:2])  # a's rows: unshifted indeed
    assert not np.allclose(shifted[2:], probs[2:])
    logo = _slice_priors(train.assign(fold=train["slice_db"].map({"a": 0, "b": 1, "c": 2})), comp)
    assert logo["oof_unshifted"] == {"a": 3, "b": 3, "c": 3}
    text = "\n".join(_slice_prior_text(dict(logo, compare={}), comp))
    assert "**OOF rows left unshifted** (a (3 rows), b (3 rows), c (3 rows))" in text
