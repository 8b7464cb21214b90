"""Every stage, run as a user runs it, on a small real subset of the breathing data."""
import json
import subprocess
import sys

import numpy as np
import pytest
import pandas as pd
import yaml
from conftest import ROOT, stage

from lib.data.tasks import prob_columns




def test_all_stages_on_real_subset(breathing_subset, tmp_path):
    out = tmp_path / "output"
    # a 3-fold copy of the breathing competition config, pointed at the subset
    comp = yaml.safe_load((ROOT / "configs/data/breathing.yaml").read_text())
    comp["folds"]["n_folds"] = 3
    data_cfg = tmp_path / "breathing3.yaml"
    data_cfg.write_text(yaml.safe_dump(comp))
    small = ["--set", "train.epochs=2", "--set", "train.batch_size=16"]
    exps = [ROOT / "configs/cnn_small.yaml", ROOT / "configs/cnn8.yaml"]  # log_mel, and seed9 with scalars

    log = stage("00_prepare.py", data_cfg, "--data-dir", breathing_subset, "--output-dir", out).stdout
    assert "train: 48 recordings" in log and "test: 12 recordings (1.00-1.00 s, median 1.00)" in log
    folds = pd.read_csv(out / "folds.csv", dtype=str)
    assert folds.groupby("group").fold.nunique().max() == 1 and set(folds.fold) == {"0", "1", "2"}

    log = stage("01_features.py", *exps, "--output-dir", out).stdout
    for name, shape, n_scalars in (("log_mel64", [1, 64, 63], 0), ("seed9", [9, 128, 63], 36)):
        manifest = json.loads((out / "features" / name / "manifest.json").read_text())
        assert manifest["spec_shape"] == shape and manifest["n_scalars"] == n_scalars
        spec = np.load(out / "features" / name / "train_spec.npy", mmap_mode="r")
        scalars = np.load(out / "features" / name / "test_scalars.npy")
        assert spec.shape == (48, *shape) and scalars.shape == (12, n_scalars)
        assert np.isfinite(spec).all() and np.isfinite(scalars).all()
    assert "skipped" in stage("01_features.py", *exps, "--output-dir", out).stdout

    cols = prob_columns({"classes": ["E", "I"]})
    for exp in exps:
        name = exp.stem
        log = stage("02_train.py", exp, *small, "--name", name, "--output-dir", out).stdout  # --set alone: name+hash
        assert f"{name}: OOF accuracy" in log
        for k in range(3):
            assert (out / "models" / name / f"fold{k}.pt").exists()
        oof = pd.read_csv(out / "oof" / f"{name}.csv", dtype={"id": str})
        assert list(oof.columns) == ["id", "fold", "target", *cols]
        assert oof.id.tolist() == folds.id.tolist()
        np.testing.assert_allclose(oof[cols].sum(axis=1), 1.0)
        scores = json.loads((out / "models" / name / "scores.json").read_text())
        assert set(scores["oof"]) == {"accuracy", "auroc"} and len(scores["folds"]) == 3
        assert 0 <= scores["oof"]["accuracy"] <= 1
        epochs = pd.read_csv(out / "models" / name / "log.csv")
        assert len(epochs) == 6 and {"train_loss", "valid_loss", "accuracy", "auroc", "lr"} <= set(epochs.columns)

        stage("03_infer.py", exp, *small, "--name", name, "--output-dir", out)
        preds = pd.read_csv(out / "preds" / f"{name}.csv")
        assert list(preds.columns) == ["id", "fold", *cols] and len(preds) == 12
        np.testing.assert_allclose(preds[cols].sum(axis=1), 1.0)
    assert "skipped" in stage("02_train.py", exps[0], *small, "--name", exps[0].stem, "--output-dir", out).stdout

    log = stage("04_ensemble.py", "--output-dir", out).stdout
    assert "cnn_small" in log and "cnn8" in log and "blend" in log
    sub = pd.read_csv(out / "submission.csv")
    sample = pd.read_csv(breathing_subset / "sample_submission.csv")
    assert list(sub.columns) == list(sample.columns) and sub.ID.tolist() == sample.ID.tolist()
    assert set(sub.Target) <= {"I", "E"}
    ens = json.loads((out / "ensemble.json").read_text())
    assert set(ens["methods"]) == {"single", "softmax", "normalised", "equal", "rank", "geometric", "fitted",
                                   "hill_climb", "stacking"} and ens["method"] in ens["methods"]
    if ens["methods"][ens["method"]]["weights"] is not None:
        assert abs(sum(e["weight"] for e in ens["experiments"]) - 1) < 1e-9
    # the chosen blend's scores and the decision reproduced from the report's files alone
    from lib.evaluation.metrics import score_all

    comp = {"task": "binary", "classes": ["E", "I"], "positive": "I"}
    blend = pd.read_csv(out / "ensemble/oof_blend.csv")
    y, probs = (blend.target == "I").astype(int).to_numpy(), blend[["p_E", "p_I"]].to_numpy()
    assert score_all(["accuracy", "auroc"], y, probs, comp) == pytest.approx(ens["methods"][ens["method"]]["scores"])
    assert score_all(["accuracy"], y, probs, comp, ens["decision"]["decision"])["accuracy"] == pytest.approx(
        ens["blend"]["accuracy"])
    test_blend = pd.read_csv(out / "ensemble/test_blend.csv").set_index("id").loc[sub.ID]
    threshold = (ens["decision"]["decision"] or {}).get("threshold", 0.5)
    assert (np.where(test_blend.p_I > threshold, "I", "E") == sub.Target).all()
    assert (out / "ensemble/report.md").exists() and (out / "models/cnn_small/report/report.md").exists()

    # 00 again: with the same folds the blend stays; with other folds it is removed, never left to look current
    log = stage("00_prepare.py", data_cfg, "--data-dir", breathing_subset, "--output-dir", out).stdout
    assert "removed the earlier blend" not in log and (out / "submission.csv").is_file()
    data = yaml.safe_load(data_cfg.read_text())
    data["folds"]["n_folds"] = 2
    data_cfg.write_text(yaml.safe_dump(data))
    log = stage("00_prepare.py", data_cfg, "--data-dir", breathing_subset, "--output-dir", out).stdout
    assert ("removed the earlier blend, made from other folds, config or test set: ensemble.record.json, "
            "submission.csv, ensemble.json, ensemble (04_ensemble.py makes it again)") in log
    assert not any((out / f).exists() for f in ("ensemble.record.json", "submission.csv", "ensemble.json", "ensemble"))
    r = stage("05_bundle.py", "--output-dir", out, "--to", tmp_path / "bundle", check=False)  # says why (probe V: "not
    assert r.returncode == 1 and "ensemble: removed by 00_prepare.py: made from other folds, competition config or " \
        "test set than the current ones" in r.stderr and "run 04_ensemble.py again" in r.stderr, r.stderr  # built yet")


def test_stage_without_its_input_says_what_to_run(tmp_path):
    r = stage("02_train.py", "configs/cnn_small.yaml", "--output-dir", tmp_path, check=False)
    assert r.returncode == 1 and "run 00_prepare.py first" in r.stderr
    r = stage("00_prepare.py", "--data-dir", tmp_path / "nothing", "--output-dir", tmp_path, check=False)
    assert r.returncode == 1 and "data folder not found" in r.stderr


def test_import_lib_from_anywhere(tmp_path):
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); import lib, lib.runs.experiment, lib.features; print(lib.__version__)"
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert list(tmp_path.iterdir()) == []  # no side effects at import


def test_run_all_demo_on_two_processes(tmp_path):
    """run_all.sh end to end on the generated (synthetic) demo competition, its folds trained by two
    torchrun processes at once (gloo on the CPU), then 03 and 04 as usual. (run_all.sh on one
    process: tests/test_competitions.py.)"""
    import os

    # started from another directory with a relative --output-dir: the folder is the caller's, as for the stages
    r = subprocess.run(["bash", str(ROOT / "run_all.sh"), "--demo", "--nproc", "2", "--output-dir", "demo"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=900, env=dict(os.environ, PYTHON=sys.executable))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.rstrip().splitlines()[-2] == f"submission: {tmp_path / 'demo' / 'submission.csv'}", r.stdout[-2000:]
    assert r.stdout.rstrip().splitlines()[-1].startswith("next: ") and not (ROOT / "demo").exists()
    for step in ("00_prepare", "01_features", "02_train (2 processes)", "03_infer demo", "04_ensemble", "total"):
        assert step in r.stdout
    assert "trained by rank 1" in r.stdout and "SYNTHETIC" in r.stdout
    sub = pd.read_csv(tmp_path / "demo" / "submission.csv")
    assert len(sub) == 60 and set(sub.label) <= {"rise", "fall"}
    scores = json.loads((tmp_path / "demo" / "models" / "demo" / "scores.json").read_text())
    assert scores["oof"]["accuracy"] > 0.6  # the chirp direction is easy to learn, even in 4 epochs


def test_model_families_through_every_stage(breathing_subset, tmp_path):
    """A network of each new kind, the scikit-learn member and PANNs CNN14 from a checkpoint in the
    PANNs format (saved here) go through 02, 03 and 04 on real clips; 04 blends them all."""
    import torch
    from test_zoo import panns_state_dict

    out = tmp_path / "output"
    comp = yaml.safe_load((ROOT / "configs/data/breathing.yaml").read_text())
    comp["folds"]["n_folds"] = 2
    data_cfg = tmp_path / "breathing2.yaml"
    data_cfg.write_text(yaml.safe_dump(comp))
    ckpt = tmp_path / "Cnn14_16k_mAP=0.438.pth"
    sd = panns_state_dict(sample_rate=16000)
    torch.save({"iteration": 0, "model": sd}, ckpt)
    small = {"train": {"epochs": 1, "batch_size": 16}}
    runs = {  # one config per family, small; every stage then runs once for all of them (03: once each)
        "resnet": ("configs/zoo/resnet.yaml", {"model": {"params": {"widths": [8, 16, 16, 16]}}}),
        "wavenet": ("configs/zoo/wavenet.yaml", {"model": {"params": {"blocks": 1}}}),
        "efficientnet_b0": ("configs/zoo/efficientnet_b0.yaml", {}),
        "hgb": ("configs/zoo/hgb.yaml", {"model": {"params": {"max_iter": 20}}}),
        "cnn14": ("configs/zoo/cnn14.yaml", {"model": {"params": {"pretrained": str(ckpt)}},
                                            "features": {"params": {"sample_rate": 16000}, "set": "wave16k"}}),
    }
    cfgs = []
    for name, (base, extra) in runs.items():
        cfgs.append(tmp_path / f"{name}.yaml")
        cfgs[-1].write_text(yaml.safe_dump({"base": str(ROOT / base), **({} if name == "hgb" else small), **extra}))
    stage("00_prepare.py", data_cfg, "--data-dir", breathing_subset, "--output-dir", out)
    stage("01_features.py", *cfgs, "--output-dir", out)
    log = stage("02_train.py", *cfgs, "--output-dir", out).stdout
    for name, cfg in zip(runs, cfgs):
        assert f"{name}: OOF accuracy" in log
        stage("03_infer.py", cfg, "--output-dir", out)
        assert len(pd.read_csv(out / "preds" / f"{name}.csv")) == 12
    fold = torch.load(out / "models" / "cnn14" / "fold0.pt", weights_only=True)
    for k in ("bn0.weight", "conv_block1.conv1.weight", "conv_block1.bn2.running_var"):  # freeze_blocks: 1
        torch.testing.assert_close(fold["state_dict"][f"trunk.{k}"], sd[k])
    assert not torch.equal(fold["state_dict"]["trunk.conv_block2.conv1.weight"], sd["conv_block2.conv1.weight"])
    log = stage("04_ensemble.py", "--output-dir", out).stdout
    assert all(name in log for name in runs) and "blend" in log
    assert len(pd.read_csv(out / "submission.csv")) == 12
