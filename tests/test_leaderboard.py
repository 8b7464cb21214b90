"""leaderboard.py and score_submission.py: scores recomputed from OOF files (checked against
scikit-learn), sorting in each metric's direction, training status from the records, and
submissions scored against a labelled CSV."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import make_toy_competition, stage
from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

from lib.core.errors import ConfigError, InputError
from lib.core.paths import Outputs
from lib.core.utils import write_json
from lib.core.artifacts import COMPETITION, FOLDS, competition_id, folds_id
from lib.evaluation.leaderboard import blend_summary, format_leaderboard, leaderboard
from lib.evaluation.scoring import score_submission

N = 40  # rows: 2 folds of 20


def _experiment(out: Outputs, comp: dict, exp: str, probs: np.ndarray, folds_df: pd.DataFrame, features_id: str,
                done=(0, 1), record=True) -> None:
    """Fake a trained experiment as stage 02 leaves it: the OOF file of the ``done`` folds,
    scores.json (model name, feature set, parameters, seconds) and the training record."""
    rows = folds_df["fold"].isin(done).to_numpy()
    oof = folds_df.loc[rows, ["id", "fold", "target"]].reset_index(drop=True)
    oof[["p_a", "p_b"]] = probs[rows]
    out.oof(exp).parent.mkdir(parents=True, exist_ok=True)
    out.oof(exp).write_text(oof.to_csv(index=False))
    scores = out.model_dir(exp) / "scores.json"
    write_json(scores, {"experiment": exp, "n_parameters": 1234, "seconds": 61.0,
                        "config": {"model": {"name": "cnn"}, "features": {"set": "mel"}}})
    missing = [f for f in (0, 1) if f not in done]
    if record:
        out.trained(exp).commit([out.oof(exp), scores], "key", inputs={"features": features_id},
                                info={"folds": list(done), "partial": bool(missing), "missing_folds": missing})


@pytest.fixture
def board(tmp_path):
    """An output folder with a binary competition (classes a, b; metrics accuracy, auroc; a
    custom lower-is-better ``brier``) and five experiments: ``good``, ``mid``, ``noisy``
    (complete), ``part`` (fold 1 missing), ``old`` (trained on an older feature set) and
    ``broken`` (no record). Returns ``(out, y, {exp: probs (N, 2)})``."""
    (tmp_path / "brier.py").write_text("def brier(y, probs, comp):\n    return float(((probs[:, 1] - y) ** 2).mean())\n")
    out = Outputs(tmp_path / "output")
    out.root.mkdir()
    comp = {"name": "toy", "task": "binary", "classes": ["a", "b"], "positive": "b", "metric": "accuracy",
            "metrics": ["accuracy", "auroc"],
            "custom_metrics": {"brier": {"function": f"{tmp_path / 'brier.py'}:brier", "higher_is_better": False,
                                         "uses": "probs"}}}
    out.competition.write_text(yaml.safe_dump(comp))
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, N)
    folds_df = pd.DataFrame({"id": [f"r{i}" for i in range(N)], "fold": np.arange(N) % 2,
                             "target": np.array(["a", "b"])[y]})
    out.folds.write_text(folds_df.to_csv(index=False))
    out.prepared().commit([out.competition, out.folds], "prep")
    manifest = out.features("mel") / "manifest.json"
    write_json(manifest, {"v": 1})
    features_id = out.features_record("mel").commit([manifest], "feat")["id"]
    probs = {}
    for exp, noise in (("good", 0.6), ("mid", 1.5), ("noisy", 3.0), ("part", 1.0), ("old", 1.0), ("broken", 1.0)):
        p_b = 1 / (1 + np.exp(-((2 * y - 1) + noise * rng.standard_normal(N))))
        probs[exp] = np.stack([1 - p_b, p_b], 1)
        _experiment(out, comp, exp, probs[exp], folds_df, "older" if exp == "old" else features_id,
                    done=(0,) if exp == "part" else (0, 1), record=exp != "broken")
    write_json(out.root / "ensemble.json", {"method": "softmax", "temperature": 0.01, "metric": "accuracy",
                                            "experiments": [{"experiment": "good", "weight": 0.7},
                                                            {"experiment": "mid", "weight": 0.3}],
                                            "blend": {"accuracy": 0.9, "auroc": 0.95}})
    return out, y, probs


def test_scores_are_recomputed_from_the_oof_files(board):
    out, y, probs = board
    df = leaderboard(out).set_index("experiment")
    assert set(df.index) == {"good", "mid", "noisy", "part", "old"}  # broken: no record
    for exp in ("good", "mid", "noisy", "old"):
        p = probs[exp]
        assert df.loc[exp, "accuracy"] == pytest.approx(accuracy_score(y, p.argmax(1)))
        assert df.loc[exp, "auroc"] == pytest.approx(roc_auc_score(y, p[:, 1]))
        per_fold = [accuracy_score(y[f::2], p[f::2].argmax(1)) for f in (0, 1)]
        assert df.loc[exp, "fold_mean"] == pytest.approx(np.mean(per_fold))
        assert df.loc[exp, "fold_std"] == pytest.approx(np.std(per_fold, ddof=1))
    part = probs["part"][::2]  # fold 0's rows only
    assert df.loc["part", "accuracy"] == pytest.approx(accuracy_score(y[::2], part.argmax(1)))
    assert df.loc["good", "parameters"] == 1234 and df.loc["good", "model"] == "cnn"


def test_sorting_follows_each_metrics_direction(board):
    out, y, probs = board
    by_acc = leaderboard(out)
    assert by_acc.attrs["sort"] == "accuracy" and by_acc.attrs["higher_is_better"]
    ranked = by_acc[by_acc["status"] != "partial"]  # part (fold 0 only) is scored on half the rows: not ranked, last
    assert ranked["accuracy"].is_monotonic_decreasing and by_acc["rank"].tolist()[:4] == [1, 2, 3, 4]
    assert by_acc["experiment"].iloc[-1] == "part" and pd.isna(by_acc["rank"].iloc[-1])
    by_brier = leaderboard(out, sort="brier")  # the competition's custom metric, lower is better
    assert not by_brier.attrs["higher_is_better"]
    assert by_brier["brier"].iloc[:4].is_monotonic_increasing
    brier = {e: ((p[:, 1] - y) ** 2).mean() for e, p in probs.items() if e not in ("broken", "part")}
    assert by_brier["experiment"].tolist() == sorted(brier, key=brier.get) + ["part"]
    part = probs["part"][::2]  # fold 0 only
    assert by_brier["brier"].iloc[-1] == pytest.approx(((part[:, 1] - y[::2]) ** 2).mean())
    by_loss = leaderboard(out, sort="log_loss").set_index("experiment")  # a built-in metric outside the list
    assert by_loss["log_loss"].drop("part").is_monotonic_increasing
    assert by_loss.loc["good", "log_loss"] == pytest.approx(log_loss(y, probs["good"]), rel=1e-6)
    text = format_leaderboard(by_acc)
    assert "accuracy ↓" in text and "± " in text and "1.2 k" in text and "1m01s" in text


def test_status_partial_stale_and_all(board):
    out, _, _ = board
    df = leaderboard(out).set_index("experiment")
    assert df.loc["good", "status"] == "complete" and df.loc["good", "folds"] == "2/2"
    assert df.loc["part", "status"] == "partial" and df.loc["part", "folds"] == "1/2"
    assert "[1] missing" in df.loc["part", "note"]
    assert df.loc["old", "status"] == "stale" and "feature set 'mel'" in df.loc["old", "note"]
    assert df.loc["old", "folds"] == "2/2"  # stale for its features, on the folds of folds.csv
    assert "not built yet" in leaderboard(out).attrs["skipped"]["broken"]
    everything = leaderboard(out, include_all=True).set_index("experiment")
    assert everything.loc["broken", "status"] == "incomplete"
    killed = out.model_dir("killed")  # a run killed after its fold 0: no OOF file yet, one fold record
    killed.mkdir()
    (killed / "fold0.pt").write_bytes(b"weights")
    out.fold_record("killed", 0).commit([killed / "fold0.pt"], "k")
    row = leaderboard(out, include_all=True).set_index("experiment").loc["killed"]
    assert row["status"] == "incomplete" and row["folds"] == "1/2"  # "0/2" before (probe)
    shutil.rmtree(killed)
    # trained on these folds, then pseudo_label.py rewrote folds.csv with other fold -1 rows
    rec = out.trained("good").require()
    scores = out.model_dir("good") / "scores.json"
    out.trained("good").commit([out.oof("good"), scores], rec["key"], info=rec["info"],
                               inputs=dict(rec["inputs"], **{FOLDS: folds_id(out.load_split("train"))}))
    assert leaderboard(out).set_index("experiment").loc["good", "status"] == "complete"
    labelled = pd.read_csv(out.folds)
    pseudo = pd.DataFrame({"id": ["u0"], "fold": [-1], "target": ["a"]})
    out.folds.write_text(pd.concat([labelled, pseudo]).to_csv(index=False))
    out.prepared().commit([out.competition, out.folds], "prep-pl")
    df = leaderboard(out).set_index("experiment")
    assert df.loc["good", "status"] == "stale" and "pseudo_label.py ran since" in df.loc["good", "note"]
    out.folds.write_text(labelled.to_csv(index=False))
    out.prepared().commit([out.competition, out.folds], "prep")
    folds_df = pd.read_csv(out.folds)
    folds_df["fold"] = 1 - folds_df["fold"]  # 00_prepare.py ran again with other folds
    out.folds.write_text(folds_df.to_csv(index=False))
    out.prepared().commit([out.competition, out.folds], "prep2")
    again = leaderboard(out).set_index("experiment")
    assert again.loc["good", "status"] == "stale" and "folds.csv" in again.loc["good", "note"]
    assert again.loc["part", "status"] == "stale" and pd.isna(again.loc["part", "rank"])  # partial still: unranked
    assert pd.notna(again.loc["good", "rank"])  # (review: a stale status hid that part trained one fold of two)
    assert again.loc["good", "folds"] == f"{pd.read_csv(out.oof('good')).fold.nunique()} (other folds)"
    # an OOF file edited after training, its size kept: not scored as the trained one
    text = out.oof("mid").read_text()
    out.oof("mid").write_text(text.replace("0.", "1.", 1))
    assert "oof/mid.csv has changed since it was written" in leaderboard(out).attrs["skipped"]["mid"]
    lines = out.oof("mid").read_text().splitlines()  # a NaN in it: --all says so (a scikit-learn traceback before)
    cells = lines[1].split(",")
    cells[-1] = "nan"
    out.oof("mid").write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")
    row = leaderboard(out, include_all=True).set_index("experiment").loc["mid"]
    assert "OOF file unreadable: 1 row(s) hold NaN or infinite probabilities" in row["note"]
    # an experiment's models folder removed by hand: said, not silently gone from the table
    shutil.rmtree(out.model_dir("part"))
    out.oof("good").with_suffix(".segments.csv").write_text("id,segment\n")  # per-segment predictions: no experiment
    gone = leaderboard(out, include_all=True)
    assert "part" not in gone["experiment"].tolist()
    assert "models/part/ is gone, only oof/part.csv is left" in gone.attrs["skipped"]["part"]
    assert "good.segments" not in gone.attrs["skipped"]


def test_blend_line(board):
    out, _, _ = board
    line = blend_summary(out)
    assert "blend (softmax, T=0.01) of 2: OOF accuracy 0.9000  auroc 0.9500" in line
    assert "weights: good 0.70, mid 0.30" in line and "not current" in line  # no ensemble record
    members = {e: out.trained(e).read()["id"] for e in ("good", "mid")}
    members[COMPETITION] = competition_id(out.load_competition())
    out.ensembled.commit([out.root / "ensemble.json"], "k", inputs={FOLDS: folds_id(out.load_split("train")), **members})
    assert "not current" not in blend_summary(out)
    trained = out.trained("mid")  # a member trained again after the blend: its record has another id
    rec = trained.read()
    trained.commit([out.root / m for m in rec["members"]], "other key", inputs=rec.get("inputs"), info=rec.get("info"))
    assert blend_summary(out).endswith("[ensemble.json is not current: member(s) mid trained or predicted again, "
                                       "changed or removed since, or a new test set: run 03_infer.py and "
                                       "04_ensemble.py]")
    trained.commit([out.root / m for m in rec["members"]], rec["key"], inputs=rec.get("inputs"), info=rec.get("info"))
    out.ensembled.commit([out.root / "ensemble.json"], "k", inputs={FOLDS: folds_id(out.load_split("train")),
                                                                     **members, "mid": trained.read()["id"]})
    assert "not current" not in blend_summary(out)
    manifest = out.features("mel") / "manifest.json"  # 01 rebuilt the members' feature set since they trained
    write_json(manifest, {"v": 2})
    out.features_record("mel").commit([manifest], "feat2")
    assert blend_summary(out).endswith("[ensemble.json is not current: member(s) good, mid stale (feature set 'mel' "
                                       "rebuilt since training): run 02_train.py, 03_infer.py and 04_ensemble.py]")
    folds = out.load_split("train")
    out.folds.write_text(folds.assign(fold=1 - folds["fold"].astype(int)).to_csv(index=False))  # 00 refolded
    out.prepared().commit([out.competition, out.folds], "prep2")
    assert blend_summary(out).endswith("[ensemble.json is not current: was made on other folds or labels than the current "
                                       "folds.csv's (00_prepare.py ran since): run 04_ensemble.py]")
    write_json(out.root / "ensemble.json", {"method": "stacking", "blend": {"accuracy": 0.9},
                                            "experiments": [{"experiment": "good", "weight": None}]})
    assert blend_summary(out).startswith("blend (stacking) of 1: OOF accuracy 0.9000  (members: good)")


def test_unknown_metric_says_the_closest(board):
    out, _, _ = board
    with pytest.raises(ConfigError, match="unknown metric 'acuracy'.*did you mean 'accuracy'"):
        leaderboard(out, sort="acuracy")


# --- score_submission -------------------------------------------------------------------------------

def _csv(path, **cols) -> str:
    pd.DataFrame(cols).to_csv(path, index=False)
    return str(path)


def test_label_submission_equals_sklearn(tmp_path):
    comp = {"task": "multiclass", "classes": ["x", "y", "z"], "metric": "macro_f1",
            "metrics": ["macro_f1", "accuracy", "auroc"], "train": {"id_column": "rec", "target_column": "truth"},
            "submission": {"id_column": "id", "target_column": "label", "format": "label"}}
    rng = np.random.default_rng(1)
    truth, guess = rng.choice(["x", "y", "z"], 30), rng.choice(["x", "y", "z"], 30)
    ids = [f"i{k}" for k in range(30)]
    labels = _csv(tmp_path / "labels.csv", rec=ids, truth=truth)
    sub = _csv(tmp_path / "sub.csv", id=ids[::-1], label=guess[::-1])  # any row order
    r = score_submission(sub, labels, comp)
    assert r["scores"]["accuracy"] == pytest.approx(accuracy_score(truth, guess))
    assert r["scores"]["macro_f1"] == pytest.approx(f1_score(truth, guess, average="macro"))
    assert "auroc" not in r["scores"] and "needs probabilities" in r["not_computable"]["auroc"]
    per_class = r["per_class"].set_index("class")
    assert per_class.loc["y", "f1"] == pytest.approx(f1_score(truth == "y", guess == "y"))
    assert per_class["support"].sum() == 30


def test_probabilities_give_auroc_and_errors_name_the_ids(tmp_path):
    comp = {"task": "binary", "classes": ["a", "b"], "positive": "b", "metric": "accuracy",
            "metrics": ["accuracy", "auroc"], "train": {"id_column": "id", "target_column": "label"},
            "submission": {"id_column": "id", "target_column": "label", "format": "probability"}}
    rng = np.random.default_rng(2)
    y, p = rng.integers(0, 2, 25), rng.random(25)
    ids = [f"i{k}" for k in range(25)]
    labels = _csv(tmp_path / "labels.csv", id=ids, label=np.array(["a", "b"])[y])
    r = score_submission(_csv(tmp_path / "sub.csv", id=ids, label=p), labels, comp)
    assert r["holds"] == "probabilities"
    with pytest.raises(InputError) as err:  # probabilities scored as labels: one hint, on the first line (probe)
        score_submission(_csv(tmp_path / "sub.csv", id=ids, label=p), labels, comp, fmt="label")
    assert err.value.problems[0].endswith("(a probability? give --format probability)")
    assert not err.value.problems[1].endswith("--format probability)")
    with pytest.raises(InputError, match=r"no id column \(looked for \['id'\]; columns are \['ID', 'label'\]\)"):
        score_submission(_csv(tmp_path / "ID.csv", ID=ids, label=p), labels, comp)  # (named once, not twice: probe)
    assert r["scores"]["auroc"] == pytest.approx(roc_auc_score(y, p))
    assert r["scores"]["accuracy"] == pytest.approx(accuracy_score(y, p > 0.5))
    comp["submission"]["format"] = "probabilities"
    both = _csv(tmp_path / "sub2.csv", id=ids, a=1 - p, b=p)
    assert score_submission(both, labels, comp)["scores"]["auroc"] == pytest.approx(roc_auc_score(y, p))
    one = _csv(tmp_path / "one.csv", id=ids, label=["a"] * 25)  # a holdout of one class: AUROC said undefined (a bare nan)
    r = score_submission(both, one, comp)
    assert "auroc" not in r["scores"] and r["not_computable"]["auroc"] == ("undefined on these labels: 25 row(s), "
                                                                           "1 class(es) present")
    assert r["scores"]["accuracy"] == pytest.approx(np.mean(p <= 0.5))
    bad = _csv(tmp_path / "bad.csv", id=ids[2:] + ["zz", "i5"], a=np.r_[1 - p[2:], 0.5, 0.5], b=np.r_[p[2:], 0.5, 1.7])
    with pytest.raises(InputError) as err:
        score_submission(bad, labels, comp)
    msg = str(err.value)
    assert "2 id(s) of" in msg and "'i0', 'i1'" in msg  # missing
    assert "not in" in msg and "'zz'" in msg  # extra
    assert "id 'i5' appears 2 times (lines 5, 26)" in msg
    assert "line 26, column 'b': '1.7' is not a probability" in msg
    with pytest.raises(InputError, match="line 3: unknown label 'c'"):
        score_submission(both, _csv(tmp_path / "l2.csv", id=ids, label=["a", "c"] + ["a"] * 23), comp)
    # 0.9 for both classes would score as a perfect submission's log loss: refused, rounding allowed
    rounded = _csv(tmp_path / "rounded.csv", id=ids, a=np.round(1 - p, 2), b=np.round(p, 2) + 0.004)
    assert score_submission(rounded, labels, comp)["scores"]["auroc"] == pytest.approx(roc_auc_score(y, np.round(p, 2)))
    scaled = _csv(tmp_path / "scaled.csv", id=ids, a=0.9 * np.ones(25), b=np.r_[0.9 * np.ones(24), 0.1])
    with pytest.raises(InputError, match=r"scaled.csv line\(s\) 2, 3, .*, 21 and 4 more: the class probabilities do not sum to 1 "
                                         r"\(line 2: 1.8; a binary task"):
        score_submission(scaled, labels, comp)


def test_per_slice_metrics_read_the_labels_slice_column(tmp_path):
    comp = {"task": "binary", "classes": ["n", "a"], "positive": "a", "metric": "worst_macc",
            "metrics": ["worst_macc", "macc"], "slices": ["database"], "train": {"id_column": "id", "target_column": "label"},
            "submission": {"id_column": "id", "target_column": "label", "format": "label"}}
    ids, truth = [f"r{k}" for k in range(8)], list("nana" + "nana")
    pred = list("nana" + "nnaa")  # database b: half right
    db = ["b"] * 4 + ["f"] * 4
    sub = _csv(tmp_path / "sub.csv", id=ids, label=pred)
    r = score_submission(sub, _csv(tmp_path / "labels.csv", id=ids, label=truth, database=db), comp)
    assert r["scores"]["worst_macc"] == pytest.approx(0.5) and r["scores"]["macc"] == pytest.approx(0.75)
    r = score_submission(sub, _csv(tmp_path / "plain.csv", id=ids, label=truth), comp)
    assert "worst_macc" not in r["scores"] and r["scores"]["macc"] == pytest.approx(0.75)
    assert r["not_computable"]["worst_macc"] == f"scores per slice: {tmp_path / 'plain.csv'} has no slice column(s) ['database']"
    # metric macc with slices declared: worst_macc is scored beside it, as 04 and the leaderboard do
    r = score_submission(sub, tmp_path / "labels.csv", dict(comp, metric="macc", metrics=["macc"]))
    assert r["scores"]["worst_macc"] == pytest.approx(0.5) and r["notes"] == []
    # a database of one class: macc is undefined there, so the worst is that of the others, and a note says so
    one_class = _csv(tmp_path / "one.csv", id=ids, label=truth, database=["f", "g", "f", "g"] + ["b"] * 4)
    r = score_submission(sub, one_class, comp)
    assert r["scores"]["worst_macc"] == pytest.approx(0.5)  # database b; f holds n only, g a only
    assert [n.split(" (")[0] for n in r["notes"]] == ["worst_macc leaves out slice database='f'",
                                                       "worst_macc leaves out slice database='g'"]
    assert r["notes"][0].endswith("(2 rows of " + str(one_class) + ": n 2): macc is undefined there, so its score "
                                  "there is not in it")


def test_multilabel_indicators_against_zero_one_columns(tmp_path):
    comp = {"task": "multilabel", "classes": ["cat", "dog"], "metric": "macro_f1", "metrics": ["macro_f1", "auroc"],
            "train": {"id_column": "id", "target_columns": ["cat", "dog"]},
            "submission": {"id_column": "id", "format": "indicators"}}
    truth = np.array([[1, 0], [1, 1], [0, 0], [0, 1]])
    guess = np.array([[1, 0], [0, 1], [0, 0], [1, 1]])
    labels = _csv(tmp_path / "l.csv", id=list("abcd"), cat=truth[:, 0], dog=truth[:, 1])
    r = score_submission(_csv(tmp_path / "s.csv", id=list("abcd"), cat=guess[:, 0], dog=guess[:, 1]), labels, comp)
    assert r["scores"]["macro_f1"] == pytest.approx(f1_score(truth, guess, average="macro"))
    assert "auroc" in r["not_computable"]
    # a config that lists no classes (allowed): the 0/1 columns are the classes (they were refused,
    # with advice to give a label column that the file does not have)
    bare = dict(comp, classes=None, train={"id_column": "id", "target_column": "labels"})
    again = score_submission(_csv(tmp_path / "s.csv", id=list("abcd"), cat=guess[:, 0], dog=guess[:, 1]), labels, bare)
    assert again["scores"]["macro_f1"] == r["scores"]["macro_f1"]


def test_commands(board, tmp_path):
    out, _, _ = board
    (tmp_path / ".lb.999999999.abc.tmp.csv").write_text("half")  # a killed --csv writer's: removed (probe)
    ok = stage("leaderboard.py", "--output-dir", str(out.root), "--sort", "auroc", "--csv", str(tmp_path / "lb.csv"), check=False)
    assert ok.returncode == 0, ok.stderr
    assert not (tmp_path / ".lb.999999999.abc.tmp.csv").exists()
    assert "by OOF auroc (higher is better)" in ok.stdout and "partial" in ok.stdout
    assert "not shown: broken" in ok.stdout and "blend (softmax, T=0.01) of 2" in ok.stdout
    assert len(pd.read_csv(tmp_path / "lb.csv")) == 5
    bad = stage("leaderboard.py", "--output-dir", str(out.root), "--sort", "acuracy", check=False)
    assert bad.returncode == 1 and "did you mean 'accuracy'" in bad.stderr

    comp = make_toy_competition(tmp_path / "toy")
    labels = _csv(tmp_path / "labels.csv", id=["s0", "s1", "s2", "s3"], label=["a", "b", "b", "a"])
    sub = _csv(tmp_path / "sub.csv", id=["s3", "s2", "s1", "s0"], label=["a", "a", "b", "a"])
    config = str(tmp_path / "toy" / "toy.yaml")
    ok = stage("score_submission.py", sub, labels, "--config", config, "--json", str(tmp_path / "s.json"), check=False)
    assert ok.returncode == 0, ok.stderr
    assert json.loads((tmp_path / "s.json").read_text())["scores"] == {"accuracy": 0.75}
    assert comp["submission"]["format"] == "label"
    wrong = _csv(tmp_path / "wrong.csv", id=["s3", "s2", "s1", "s9"], label="a")
    bad = stage("score_submission.py", wrong, labels, "--config", config, check=False)
    assert bad.returncode == 1 and "'s0'" in bad.stderr and "'s9'" in bad.stderr


@pytest.mark.parametrize("script, option", [("leaderboard.py", "--csv"), ("score_submission.py", "--json")])
def test_an_output_option_naming_a_folder_is_refused_before_any_work(tmp_path, script, option):
    """--csv or --json naming an existing folder ended, after all the work, in an
    IsADirectoryError traceback naming a temporary file."""
    extra = [tmp_path / "sub.csv", tmp_path / "truth.csv"] if script == "score_submission.py" else []
    r = stage(script, *extra, option, tmp_path, "--output-dir", tmp_path / "none", check=False)
    assert r.returncode == 2 and f"{option} {tmp_path} is a folder" in r.stderr, r.stderr


def test_rows_are_scored_after_group_aggregation_as_04_scores_them(board):
    """With ``decision.group_aggregate: mean`` 04 scores each member on its recordings' group
    means; the leaderboard scored the recordings alone, so a blend of one member at weight 1
    showed another score than the member's row (probe)."""
    out, y, probs = board
    comp = yaml.safe_load(out.competition.read_text())
    comp.update(groups={"column": "patient"}, decision={"group_aggregate": "mean"})
    out.competition.write_text(yaml.safe_dump(comp))
    folds_df = pd.read_csv(out.folds)
    folds_df["group"] = [f"P{i // 4}" for i in range(N)]  # 4 recordings a patient, in one fold (i % 2: no)
    folds_df["fold"] = (np.arange(N) // 4) % 2
    out.folds.write_text(folds_df.to_csv(index=False))
    out.prepared().commit([out.competition, out.folds], "prep2")
    _experiment(out, comp, "good", probs["good"], folds_df, out.trained("good").read()["inputs"]["features"])
    df = leaderboard(out).set_index("experiment")
    p = pd.Series(probs["good"][:, 1]).groupby(folds_df["group"]).transform("mean").to_numpy()
    assert df.loc["good", "auroc"] == pytest.approx(roc_auc_score(y, p))
    assert df.loc["good", "auroc"] != pytest.approx(roc_auc_score(y, probs["good"][:, 1]))
    assert df.loc["good", "accuracy"] == pytest.approx(accuracy_score(y, p > 0.5))


def test_slice_table_keeps_one_column_per_value_with_a_partial_experiment():
    """A partial experiment's slice values have fewer rows: they got columns of their own
    ('site=s1 (n=9)' beside 'site=s1 (n=27)'), and the picture two more groups (probe)."""
    from lib.evaluation.leaderboard import slice_leaderboard

    def table(n):
        return pd.DataFrame({"slice": ["site"] * 3, "value": ["s1", "s2", "worst"], "n": [n, n, 2 * n],
                             "accuracy": [0.9, 0.8, 0.8]})

    df = pd.DataFrame({"experiment": ["full", "part"]})
    df.attrs["slices"] = {"full": table(27), "part": table(9)}
    out = slice_leaderboard(df, "accuracy")
    assert list(out.columns) == ["experiment", "site=s1 (n=27)", "site=s2 (n=27)", "worst site"]
    assert out.notna().all().all()
