"""The per-experiment report (``models/<exp>/report/``) and TensorBoard logging: generated OOF
files of every task type (binary with the positive class first and second, multiclass with
more classes than are drawn one by one, multi-label), a report failure during a real (tiny)
stage-02 run, and a real finished run when ``/work/runs`` holds one."""
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import make_toy_competition

from lib.components import load_experiment
from lib.core.paths import Outputs
from lib.data import tasks
from lib.data.prepare import prepare
from lib.evaluation import reports
from lib.evaluation.metrics import score_all
from lib.evaluation.reports import FILES, N_WORST, plot_confusion, report_from_outputs, write_report

PNG = b"\x89PNG\r\n\x1a\n"
REAL_RUN = Path("/work/runs/final_hv")


def _generated(task: str, classes: list[str], positive=None, metrics=None, rows=150, folds=3, seed=0):
    """``(comp, oof_df, history, scores)`` of a made-up experiment: informative but imperfect
    probabilities, a few epochs per fold (the last fold stopped early), a cosine learning rate."""
    rng = np.random.default_rng(seed)
    k = len(classes)
    comp = {"task": task, "classes": classes, "positive": positive, "metric": metrics[0], "metrics": metrics}
    if task == "multilabel":
        y = (rng.random((rows, k)) < 0.3).astype(int)
        probs = 1 / (1 + np.exp(-(rng.normal(0, 1.5, (rows, k)) + 2.5 * (y - 0.5))))
        target = [tasks.LABEL_SEP.join(c for c, on in zip(classes, r) if on) for r in y]
    else:
        y = rng.integers(0, k, rows)
        logits = rng.normal(0, 1.2, (rows, k)) + 1.5 * np.eye(k)[y]
        probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        target = [classes[i] for i in y]
    oof = pd.DataFrame({"id": [f"r{i:03d}" for i in range(rows)], "fold": np.arange(rows) % folds, "target": target})
    oof[tasks.prob_columns(comp)] = probs
    history, infos = [], []
    for f in range(folds):
        epochs = 6 if f < folds - 1 else 4
        for e in range(1, epochs + 1):
            history.append({"fold": f, "epoch": e, "lr": 1e-3 * (1 + np.cos(np.pi * (e - 1) / 6)) / 2,
                            "train_loss": 1 / e, "valid_loss": 1 / e + 0.1 * rng.random(),
                            **{m: rng.random() for m in metrics}, "bad_steps": 0, "seconds": 1.5})
        infos.append({"fold": f, "best_epoch": epochs - 1, "epochs_run": epochs, "valid_loss": 0.3, "seconds": 9.0})
    return comp, oof, pd.DataFrame(history), {"folds": infos, "partial": False, "missing_folds": []}


CASES = {
    "binary_positive_second": lambda: _generated("binary", ["E", "I"], "I", ["accuracy", "auroc"]),
    "binary_positive_first": lambda: _generated("binary", ["yes", "no"], "yes", ["auroc", "log_loss", "accuracy"]),
    "multiclass_many": lambda: _generated("multiclass", [f"class_{i}" for i in range(24)], None,
                                          ["macro_f1", "accuracy", "auroc"], rows=480),
    "multiclass": lambda: _generated("multiclass", ["MR", "MS", "MVP", "N"], None, ["macro_f1", "accuracy"]),
    "multilabel": lambda: _generated("multilabel", ["a", "b", "c", "d", "e", "f"], None,
                                     ["macro_f1", "average_precision"]),
}


def _check_report(folder: Path, paths: list[Path], comp: dict, oof: pd.DataFrame, decision=None):
    """Every file there and whole; the tables equal to numbers computed here from the OOF file."""
    assert paths[0] == folder / "report.md"
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in paths)  # no temporaries left
    for p in paths:
        assert p.stat().st_size > 0
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == PNG
    y = tasks.class_index(oof["target"], comp)
    probs = oof[tasks.prob_columns(comp)].to_numpy()
    # per-fold scores, then mean and sample std
    table = pd.read_csv(folder / "folds.csv", dtype={"fold": str})
    assert table["fold"].tolist() == [str(f) for f in sorted(oof["fold"].unique())] + ["mean", "std"]
    for f, row in table.iloc[:-2].iterrows():
        part = oof["fold"] == int(row["fold"])
        expected = score_all(comp["metrics"], y[part.to_numpy()], probs[part.to_numpy()], comp)
        assert row[comp["metrics"]].tolist() == pytest.approx(list(expected.values()), nan_ok=True)
        assert row["n"] == part.sum()
    per_fold = table.iloc[:-2][comp["metrics"]].astype(float)
    assert table.iloc[-2][comp["metrics"]].astype(float).tolist() == pytest.approx(per_fold.mean().tolist())
    assert table.iloc[-1][comp["metrics"]].astype(float).tolist() == pytest.approx(per_fold.std(ddof=1).tolist())
    # the worst rows: the lowest probability of the true class (multi-label: highest mean log loss)
    worst = pd.read_csv(folder / "worst.csv", dtype={"id": str, "target": str}, keep_default_na=False)
    p = np.clip(probs, 1e-15, 1 - 1e-15)
    if comp["task"] == "multilabel":
        badness = -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(1)
    else:
        badness = -probs[np.arange(len(y)), y]
    n = min(N_WORST, len(oof))
    assert len(worst) == n and np.all(np.diff(worst["log_loss"]) <= 0)
    chosen = oof["id"].isin(worst["id"]).to_numpy()
    assert chosen.sum() == n and (chosen.all() or badness[chosen].min() >= badness[~chosen].max())
    by_id = dict(zip(oof["id"], range(len(oof))))
    rows = [by_id[i] for i in worst["id"]]
    if comp["task"] != "multilabel":
        assert worst["p_true"].to_numpy() == pytest.approx(probs[rows, y[rows]])
    assert worst["target"].tolist() == oof["target"].iloc[rows].tolist()
    assert worst["predicted"].tolist() == tasks.probs_to_labels(probs[rows], comp).tolist()
    # the confusion counts, and shares of each true class that sum to 1
    cm = pd.read_csv(folder / "confusion.csv", dtype={"true": str, "predicted": str})
    pred = tasks.decide(probs, comp)
    if comp["task"] == "multilabel":
        for k, c in enumerate(comp["classes"]):
            part = cm[cm["class"] == c]
            for _, r in part.iterrows():
                assert r["count"] == np.sum((y[:, k] == int(r["true"])) & (pred[:, k] == int(r["predicted"])))
            assert part.groupby("true")["row_share"].sum().dropna().tolist() == pytest.approx([1.0] * part.groupby(
                "true")["row_share"].sum().dropna().size)
    else:
        counts = np.zeros((len(comp["classes"]),) * 2, int)
        np.add.at(counts, (y, pred), 1)
        pivot = cm.pivot(index="true", columns="predicted", values="count").loc[comp["classes"], comp["classes"]]
        assert np.array_equal(pivot.to_numpy(), counts)
        shares = cm.groupby("true")["row_share"].sum()
        assert shares[[c for k, c in enumerate(comp["classes"]) if counts[k].sum()]].tolist() == pytest.approx(
            [1.0] * int((counts.sum(1) > 0).sum()))
    per_class = pd.read_csv(folder / "per_class.csv", keep_default_na=False, na_values=[""])
    support = y.sum(0) if comp["task"] == "multilabel" else np.bincount(y, minlength=len(comp["classes"]))
    assert per_class["support"].iloc[:len(comp["classes"])].tolist() == support.tolist()
    # every link of report.md resolves
    text = (folder / "report.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert {"curves.png", "roc_pr.png", "calibration.png", "folds.csv", "worst.csv"} <= set(links)
    assert all((folder / link).is_file() for link in links)


def test_a_multilabel_report_with_slices(tmp_path):
    """A multi-label competition declaring slices got no report at all from 02 (the calibration
    plot pooled every label of a SlicedLabels, which kept one slice value per row)."""
    comp, oof, history, scores = CASES["multilabel"]()
    comp["slices"] = ["device"]
    oof["slice_device"] = np.where(np.arange(len(oof)) % 2, "d1", "d2")
    paths = write_report(tmp_path / "report", "ml", comp, oof, history, scores)
    assert {p.name for p in paths} == set(FILES) | {"slices.csv", "slices.png"}
    table = pd.read_csv(tmp_path / "report" / "slices.csv", keep_default_na=False)
    y = tasks.class_index(oof["target"], comp)
    probs = oof[tasks.prob_columns(comp)].to_numpy()
    d1 = (oof["slice_device"] == "d1").to_numpy()
    expected = score_all(["macro_f1"], y[d1], probs[d1], comp)["macro_f1"]
    assert float(table.set_index("value").loc["d1", "macro_f1"]) == pytest.approx(expected)
    assert table.set_index("value").loc["d1", "n"] == str(d1.sum())  # counts written as counts, not 20.0
    assert "<NA>" not in (tmp_path / "report" / "report.md").read_text()


@pytest.mark.parametrize("case", list(CASES))
def test_report_of_generated_oof(case, tmp_path):
    comp, oof, history, scores = CASES[case]()
    paths = write_report(tmp_path / "report", case, comp, oof, history, scores)
    _check_report(tmp_path / "report", paths, comp, oof)
    assert {p.name for p in paths} == set(FILES)
    md = (tmp_path / "report" / "report.md").read_text()
    assert f"competition metric **{comp['metric']}**" in md and "## Recordings predicted worst" in md
    scores["folds"][0].update(best_epoch=1, epochs_run=1)  # an epoch of 1 read 1.0000 beside 5 and 6 (probe)
    write_report(tmp_path / "report", case, comp, oof, history, scores)
    md = (tmp_path / "report" / "report.md").read_text()
    row = next(line for line in md.split("## Scores per fold")[1].splitlines() if line.startswith("| 0 |"))
    assert [c.strip() for c in row.split("|")[3:5]] == ["1", "1"], row
    assert "predicted again in float32" in md  # the curves' scores and the table's, explained


def test_binary_curves_score_the_positive_class_wherever_it_is(tmp_path):
    """The positive class first: per-class AUROC of the positive class is its own column's, and the
    calibration/ROC use p(positive) (the report's AUROC equals score_all's, which scores the positive column)."""
    comp, oof, history, scores = CASES["binary_positive_first"]()
    write_report(tmp_path, "b", comp, oof, history, scores)
    per_class = pd.read_csv(tmp_path / "per_class.csv").set_index("class")
    y = tasks.class_index(oof["target"], comp)
    overall = score_all(["auroc"], y, oof[tasks.prob_columns(comp)].to_numpy(), comp)["auroc"]
    assert per_class.loc["yes", "auroc"] == pytest.approx(overall)
    truth, p, what, _ = reports.calibration_inputs(y, oof[tasks.prob_columns(comp)].to_numpy(), comp)
    assert what == "p(yes)" and np.array_equal(p, oof["p_yes"].to_numpy()) and np.array_equal(truth, y == 0)


def test_many_labels_get_no_confusion_picture_and_say_so(tmp_path):
    comp, oof, history, scores = _generated("multilabel", [f"l{i}" for i in range(25)], None, ["macro_f1"], rows=60)
    y = tasks.class_index(oof["target"], comp)
    table = reports.confusion_table(y, tasks.decide(oof[tasks.prob_columns(comp)].to_numpy(), comp), comp)
    assert plot_confusion(table, comp, tmp_path / "c.png", "x") is None and not (tmp_path / "c.png").exists()


def test_a_failing_report_leaves_no_report_at_all(tmp_path, monkeypatch):
    comp, oof, history, scores = CASES["multiclass"]()
    write_report(tmp_path / "report", "x", comp, oof, history, scores)  # an older, whole report

    def broken(*a, **k):
        raise RuntimeError("no display")
    monkeypatch.setattr(reports, "plot_calibration", broken)
    with pytest.raises(RuntimeError, match="no display"):
        write_report(tmp_path / "report", "x", comp, oof, history, scores)
    assert not (tmp_path / "report").exists()  # neither half of the new one nor the old one


@pytest.fixture(scope="module")
def tiny_experiment(tmp_path_factory):
    """``(cfg, Outputs)``: a prepared 12-clip binary toy competition with its feature set, and a
    tiny CNN experiment of 2 epochs."""
    from lib.features.cache import build_feature_set

    root = tmp_path_factory.mktemp("tiny")
    out = Outputs(root / "out")
    prepare(make_toy_competition(root / "data"), out.root)
    exp = {"features": {"name": "log_mel", "set": "lm", "params": {"n_mels": 16, "n_fft": 256, "hop_length": 128}},
           "model": {"name": "cnn", "params": {"channels": [4, 8], "convs_per_block": 1, "head_hidden": 8}},
           "train": {"epochs": 2, "batch_size": 4, "patience": 10, "device": "cpu"}}
    (root / "tiny.yaml").write_text(yaml.safe_dump(exp))
    cfg = load_experiment(root / "tiny.yaml")
    build_feature_set(out, cfg["features"], workers=1)
    return cfg, out


def test_stage_02_writes_the_report_as_record_members_and_survives_its_failure(tiny_experiment, monkeypatch):
    from lib.runs import experiment

    cfg, out = tiny_experiment
    scores = experiment.train_experiment(cfg, out, force=True, log=lambda *_: None)
    folder = out.model_dir(cfg["name"]) / "report"
    assert scores["report"] == "report/report.md" and (folder / "report.md").is_file()
    members = out.trained(cfg["name"]).require()["members"]
    assert {f"models/{cfg['name']}/report/{name}" for name in FILES} <= set(members)
    assert not any("tensorboard" in m for m in members)  # a convenience log, not part of the result
    oof = pd.read_csv(out.oof(cfg["name"]), dtype={"id": str, "target": str})
    _check_report(folder, [folder / "report.md"] + sorted(p for p in folder.iterdir() if p.name != "report.md"),
                  out.load_competition(), oof)
    # the report fails: folds, OOF file and scores are kept and recorded, the report is gone, a warning says why
    def broken(*a, **k):  # after the tables and the curves were written
        raise RuntimeError("matplotlib failed")
    monkeypatch.setattr(reports, "plot_roc_pr", broken)
    lines = []
    scores = experiment.train_experiment(cfg, out, force=True, log=lines.append)
    assert scores["report"] is None and "matplotlib failed" in scores["report_error"] and not folder.exists()
    assert any(line.startswith(f"WARNING: {cfg['name']}: the report could not be written") for line in lines)
    rec = out.trained(cfg["name"]).require()
    assert not any("/report/" in m for m in rec["members"]) and rec["info"]["folds"] == [0, 1]
    assert json.loads((out.model_dir(cfg["name"]) / "scores.json").read_text())["report"] is None


def _scalars(folder: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


class _Stop(KeyboardInterrupt):
    pass


def test_tensorboard_logs_each_epoch_once_even_after_a_resume(tiny_experiment, tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (optional)")
    from lib.inputs import load_inputs
    from lib.training.loop import train_fold

    cfg, out = tiny_experiment
    cfg = dict(cfg, train={**cfg["train"], "epochs": 3})
    comp, table = out.load_competition(), out.load_split("train")
    data = load_inputs(out, cfg, "train", table, comp, torch.device("cpu"))
    tb, state = tmp_path / "tb" / "fold0", tmp_path / "fold0.state.pt"

    def interrupt(line):
        if " epoch  2/3 " in line:
            raise _Stop
    with pytest.raises(_Stop):
        train_fold(cfg, comp, data, table, 0, torch.device("cpu"), interrupt, state_path=state, state_key="k",
                   tensorboard_dir=tb)
    assert [s for s, _ in _scalars(tb)["loss/valid"]] == [1, 2]
    _, _, _, history = train_fold(cfg, comp, data, table, 0, torch.device("cpu"), lambda *_: None,
                                  state_path=state, state_key="k", tensorboard_dir=tb)
    logged = _scalars(tb)
    assert set(logged) == {"loss/train", "loss/valid", "lr", "metric/accuracy"}
    for tag, key in (("loss/train", "train_loss"), ("loss/valid", "valid_loss"), ("lr", "lr"),
                     ("metric/accuracy", "accuracy")):
        assert [s for s, _ in logged[tag]] == [1, 2, 3]  # epochs 1-2 of the killed run not repeated
        assert [v for _, v in logged[tag]] == pytest.approx([h[key] for h in history], rel=1e-6)
    # retrained from scratch (--force) into the same folder: still each epoch once
    train_fold(cfg, comp, data, table, 0, torch.device("cpu"), lambda *_: None, tensorboard_dir=tb)
    assert [s for s, _ in _scalars(tb)["loss/valid"]] == [1, 2, 3]


def test_training_without_tensorboard_installed(tiny_experiment, tmp_path, monkeypatch):
    from lib.inputs import load_inputs
    from lib.training.loop import train_fold

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as when not installed
    cfg, out = tiny_experiment
    cfg = dict(cfg, train={**cfg["train"], "epochs": 1})
    comp, table = out.load_competition(), out.load_split("train")
    data = load_inputs(out, cfg, "train", table, comp, torch.device("cpu"))
    _, info, _, _ = train_fold(cfg, comp, data, table, 0, torch.device("cpu"), lambda *_: None,
                               tensorboard_dir=tmp_path / "tb")
    assert info["best_epoch"] == 1 and not (tmp_path / "tb").exists()


def test_report_of_a_real_finished_run(tmp_path):
    """The heart-valve ResNet's finished run (read only), when this machine has it."""
    exp = "resnet"
    if not (REAL_RUN / "models" / exp / "scores.json").exists():
        pytest.skip(f"no finished run at {REAL_RUN} (only on the development machine; the generated cases cover CI)")
    paths = report_from_outputs(REAL_RUN, exp, tmp_path / "report")
    comp = yaml.safe_load((REAL_RUN / "competition.yaml").read_text())
    oof = pd.read_csv(REAL_RUN / "oof" / f"{exp}.csv", dtype={"id": str, "target": str})
    _check_report(tmp_path / "report", paths, comp, oof)
    scores = json.loads((REAL_RUN / "models" / exp / "scores.json").read_text())
    folds = pd.read_csv(tmp_path / "report" / "folds.csv", dtype={"fold": str})
    for info in scores["folds"]:  # the table scored again from the OOF file equals what training reported
        row = folds[folds["fold"] == str(info["fold"])].iloc[0]
        assert [row[m] for m in comp["metrics"]] == pytest.approx([info[m] for m in comp["metrics"]])
        assert row["best_epoch"] == info["best_epoch"]
