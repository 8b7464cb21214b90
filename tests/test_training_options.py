"""Training options of issue 11: losses against direct computations, schedules, parameter groups,
SWA, and the scikit-learn member against an independent scikit-learn reference."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import make_toy_competition

from lib.components import load_competition, load_experiment
from lib.core.errors import ConfigError, InputError, MissingArtifact
from lib.core.paths import Outputs
from lib.data.prepare import prepare
from lib.features.cache import build_feature_set
from lib.training.losses import SupConLoss, build_loss
from lib.training.optim import SCHEDULERS, build_optimizer


def _data(seed=0, n=6, k=3):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g) * 2
    onehot = torch.eye(k)[torch.randint(0, k, (n,), generator=g)]
    return logits, onehot


def test_smoothed_cross_entropy_and_bce_against_direct_formulas():
    logits, y = _data()
    eps = 0.1
    soft = y * (1 - eps) + eps / 3
    expected = -(soft * torch.log_softmax(logits, 1)).sum(1).mean()
    assert float(build_loss({"name": "ce", "params": {"label_smoothing": eps}}, "multiclass")(logits, y)) == pytest.approx(float(expected), rel=1e-6)
    z, t = logits[:, :1], y[:, :1]
    st = t * (1 - eps) + eps / 2
    p = torch.sigmoid(z)
    expected = -(st * torch.log(p) + (1 - st) * torch.log(1 - p)).mean()
    assert float(build_loss({"name": "bce", "params": {"label_smoothing": eps}}, "binary")(z, t)) == pytest.approx(float(expected), rel=1e-5)


def test_focal_loss_against_direct_formulas():
    logits, y = _data(1)
    # multiclass, per-class alpha: -sum_c alpha_c y_c (1 - p_c)^gamma log p_c
    alpha, gamma = [0.2, 0.3, 0.5], 2.0
    p = torch.softmax(logits, 1)
    expected = -(torch.tensor(alpha) * y * (1 - p) ** gamma * torch.log(p)).sum(1).mean()
    loss = build_loss({"name": "focal", "params": {"gamma": gamma, "alpha": alpha}}, "multiclass")
    assert float(loss(logits, y)) == pytest.approx(float(expected), rel=1e-5)
    # binary, alpha-balanced (Lin et al. 2017, eq. 5): -alpha_t (1 - p_t)^gamma log p_t
    z, t = logits[:, :1], y[:, :1]
    q = torch.sigmoid(z)
    p_t = torch.where(t == 1, q, 1 - q)
    a_t = torch.where(t == 1, torch.tensor(0.25), torch.tensor(0.75))
    expected = (-a_t * (1 - p_t) ** gamma * torch.log(p_t)).mean()
    loss = build_loss({"name": "focal", "params": {"gamma": gamma, "alpha": 0.25}}, "binary")
    assert float(loss(z, t)) == pytest.approx(float(expected), rel=1e-5)
    # gamma 0 and no alpha: plain (binary) cross-entropy
    bce = build_loss({"name": "bce"}, "binary")(z, t)
    assert float(build_loss({"name": "focal", "params": {"gamma": 0.0}}, "binary")(z, t)) == pytest.approx(float(bce), rel=1e-6)
    with pytest.raises(ConfigError, match="per-class list needs a multiclass task"):
        build_loss({"name": "focal", "params": {"alpha": [0.5, 0.5]}}, "binary")
    with pytest.raises(ConfigError, match=r"alpha=1.5 must be in \[0, 1\]"):
        build_loss({"name": "focal", "params": {"alpha": 1.5}}, "binary")


def test_supcon_against_khosla_equation_2():
    """L_out of Khosla et al. 2020: mean over anchors i of -1/|P(i)| sum_p log(exp(z_i.z_p/T) /
    sum_{a != i} exp(z_i.z_a/T)), z on the unit sphere, P(i) the other rows of i's class."""
    z = torch.randn(8, 5, generator=torch.Generator().manual_seed(0)) * 3
    labels = [0, 1, 0, 2, 1, 0, 2, 2]
    t, zn = 0.2, torch.nn.functional.normalize(z, dim=1).double()

    def direct(labels):
        terms = []
        for i in range(len(labels)):
            others = [a for a in range(len(labels)) if a != i]
            positives = [a for a in others if labels[a] == labels[i]]
            if positives:
                denom = sum(torch.exp(zn[i] @ zn[a] / t) for a in others)
                terms.append(-sum(torch.log(torch.exp(zn[i] @ zn[p] / t) / denom) for p in positives) / len(positives))
        return float(sum(terms) / len(terms))

    loss = SupConLoss(temperature=t)
    assert float(loss(z, torch.eye(3)[labels])) == pytest.approx(direct(labels), rel=1e-5)
    binary = [int(c == 0) for c in labels]  # a binary task's one sigmoid output: two classes
    assert float(loss(z, torch.tensor(binary, dtype=torch.float32)[:, None])) == pytest.approx(direct(binary), rel=1e-5)
    lone = labels[:7] + [3]  # a class of one row: that anchor has no positive and is left out
    assert float(loss(z, torch.eye(4)[lone])) == pytest.approx(direct(lone), rel=1e-5)
    assert float(loss(z[:3], torch.eye(3))) == 0.0  # no positive at all


def _opt(lr=0.1, name="sgd", scales=(1.0,)):
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr_scale": s} for s in scales]
    return build_optimizer({"name": name, "params": {"lr": lr}}, groups)


def test_parameter_groups_scale_the_learning_rate():
    opt = _opt(0.1, "adamw", (0.01, 0.5, 1.0))
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.001, 0.05, 0.1])
    sched = SCHEDULERS.build({"name": "warmup_cosine", "params": {"warmup_epochs": 0}}, optimizer=opt,
                             steps_per_epoch=10, epochs=2)
    for _ in range(10):
        opt.step()
        sched.step()
    lrs = [g["lr"] for g in opt.param_groups]
    assert lrs[0] / lrs[2] == pytest.approx(0.01) and lrs[2] < 0.1  # the schedule keeps the ratios


def _lr_trace(opt, sched, steps: int) -> list[float]:
    """The first group's learning rate before the first step and after each of ``steps`` steps."""
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(steps):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


def test_warmup_cosine_schedule():
    opt = _opt(0.1)
    sched = SCHEDULERS.build({"name": "warmup_cosine", "params": {"warmup_epochs": 1, "min_lr_ratio": 0.01}},
                             optimizer=opt, steps_per_epoch=10, epochs=5)
    lrs = _lr_trace(opt, sched, 49)
    np.testing.assert_allclose(lrs[:10], 0.1 * np.arange(1, 11) / 10)  # linear warm-up over the first epoch
    t = (np.arange(10, 50) - 10) / 40
    np.testing.assert_allclose(lrs[10:], 0.1 * (0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * t))), rtol=1e-6)


def test_one_cycle_schedule():
    opt = _opt(0.1, scales=(1.0, 0.1))
    sched = SCHEDULERS.build({"name": "one_cycle", "params": {"pct_start": 0.25, "div_factor": 10,
                                                              "final_div_factor": 100}},
                             optimizer=opt, steps_per_epoch=10, epochs=4)
    lrs = _lr_trace(opt, sched, 40)
    assert lrs[0] == pytest.approx(0.01)  # lr / div_factor
    assert max(lrs) == pytest.approx(0.1) and int(np.argmax(lrs)) == pytest.approx(10, abs=1)  # peak at 25 %
    assert lrs[39] == pytest.approx(0.1 / 1000, rel=1e-3)  # lr / (div * final_div) at the last step
    assert opt.param_groups[1]["lr"] / opt.param_groups[0]["lr"] == pytest.approx(0.1)


def test_plateau_schedule_steps_on_the_validation_figure():
    opt = _opt(0.1)
    sched = SCHEDULERS.build({"name": "plateau", "params": {"factor": 0.3, "patience": 2}}, optimizer=opt,
                             steps_per_epoch=5, epochs=10)
    assert sched.per_epoch and sched.on == "valid_loss"
    for loss in (1.0, 0.9, 0.95, 0.95):  # two epochs without a lower loss: not yet
        sched.step(loss)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    sched.step(0.95)  # the third
    assert opt.param_groups[0]["lr"] == pytest.approx(0.03)
    with pytest.raises(ConfigError, match="'valid_loss' or 'metric'"):
        SCHEDULERS.build({"name": "plateau", "params": {"on": "auroc"}}, optimizer=opt, steps_per_epoch=1, epochs=1)


# --- through the training loop and the scikit-learn member ----------------------------------------

@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A 24-clip generated binary competition (2 folds) with a 16-band log-mel feature set."""
    from lib.inputs import load_inputs

    root = tmp_path_factory.mktemp("toy")
    out = Outputs(root / "out")
    prepare(make_toy_competition(root / "data", n=24), out.root)
    exp = {"features": {"name": "log_mel", "set": "lm16", "params": {"n_mels": 16, "n_fft": 512, "hop_length": 256}},
           "model": {"name": "cnn", "params": {"channels": [4, 8], "convs_per_block": 1, "head_hidden": 8}},
           "train": {"epochs": 4, "batch_size": 4, "patience": 10, "device": "cpu"}}
    (root / "exp.yaml").write_text(yaml.safe_dump(exp))
    cfg = load_experiment(root / "exp.yaml")
    build_feature_set(out, cfg["features"], workers=1)
    comp, table = out.load_competition(), out.load_split("train")
    return cfg, comp, load_inputs(out, cfg, "train", table, comp, torch.device("cpu")), table, out


def test_plateau_and_swa_through_the_loop(toy):
    from lib.training.loop import train_fold

    cfg, comp, data, table, _ = toy
    cfg = dict(cfg, scheduler={"name": "plateau", "params": {"factor": 0.5, "patience": 0, "threshold": 10.0}},
               train={**cfg["train"], "swa": {"start": 0.5}})
    logs = []
    ckpt, info, probs, history = train_fold(cfg, comp, data, table, 0, torch.device("cpu"), logs.append)
    lrs = [h["lr"] for h in history]  # threshold 10: no epoch counts as better, so every epoch halves the rate
    assert lrs == pytest.approx([1e-3 * 0.5 ** k for k in range(1, 5)])
    assert info["swa"]["epochs_averaged"] == 3  # from epoch ceil(0.5 * 4) = 2 on: epochs 2, 3 and 4
    assert any("SWA of" in line for line in logs)
    assert probs.shape == (int((table.fold == 0).sum()), 2) and np.isfinite(probs).all()
    # the fold's valid_loss is that of the model kept: a kept average's own (it was the discarded
    # best epoch's, beside the average's scores, probe); one window per recording here
    pos = comp["classes"].index(comp["positive"])
    y, p = (table[table.fold == 0]["target"] == comp["positive"]).to_numpy(), probs[:, pos].astype(np.float64)
    own = float(-np.mean(np.where(y, np.log(p), np.log(1 - p))))
    epoch = history[info["best_epoch"] - 1]["valid_loss"]
    assert info["swa"]["kept"] and info["valid_loss"] == pytest.approx(own, abs=1e-4) and epoch != pytest.approx(own)
    again = [line for line in logs if "predicted again" in line]  # (validated in bfloat16: predicted in float32)
    assert all(line.startswith("fold 0: the SWA average predicted again") for line in again), again  # not "epoch 4"
    # early stopping before SWA's first epoch: said, not silently without SWA (probe)
    logs = []
    late = dict(cfg, train={**cfg["train"], "epochs": 20, "patience": 1, "min_epochs": 0, "swa": {"start": 0.9}})
    info = train_fold(late, comp, data, table, 0, torch.device("cpu"), logs.append)[1]
    assert info["swa"] == {"epochs_averaged": 0, "kept": False}
    assert any("WARNING: no SWA: training stopped at epoch" in line and "epoch 18" in line for line in logs), logs


def test_supcon_is_added_to_the_training_loss_of_a_network_only(toy):
    from lib.runs.experiment import train_experiment
    from lib.training.loop import train_fold

    cfg, comp, data, table, out = toy
    one_epoch = {**cfg["train"], "epochs": 1}
    plain = train_fold(dict(cfg, train=one_epoch), comp, data, table, 0, torch.device("cpu"), lambda *_: None)[3]
    with_supcon = train_fold(dict(cfg, train={**one_epoch, "supcon": {"weight": 1.0, "temperature": 0.1}}), comp, data,
                             table, 0, torch.device("cpu"), lambda *_: None)[3]
    # batches of 4 windows: a SupCon term of about log(3) ~ 1.1 on top of a cross-entropy of about log(2)
    assert with_supcon[0]["train_loss"] - plain[0]["train_loss"] > 0.5
    from lib.runs.experiment import ExperimentRun

    said = []  # 02 says the loss is on, and that train_loss holds it (valid_loss does not)
    ExperimentRun(dict(cfg, name="sc", train={**one_epoch, "supcon": {"weight": 1.0, "temperature": 0.1}}), out, "cpu",
                  log=said.append).announce([0])
    assert any("train.supcon: weight 1.0" in line and "train_loss includes it" in line and "few positives" in line
               for line in said), said
    said = []  # the classes balanced twice, by the sampler and by the loss's weights: said
    ExperimentRun(dict(cfg, name="twice", train={**one_epoch, "sampler": "balanced", "class_weights": "balanced"}), out,
                  "cpu", log=said.append)
    assert any("train.sampler balanced and train.class_weights balanced" in line and "over-correct" in line
               for line in said), said
    # a scikit-learn member that inherits them from a network's config (base:) does not apply them, as its epochs;
    # its own file and a --set cannot give them (tests/test_config.py); 02 refused them, 01 not (review)
    import pandas as pd

    weighted = {**one_epoch, "class_weights": "balanced"}
    plain = dict(cfg, name="hgb_plain", model={"name": "hgb", "params": {}}, train=weighted)
    train_experiment(plain, out, log=lambda *_: None)
    said = []
    train_experiment(dict(plain, name="hgb_inherited", train={**weighted, "sampler": "balanced", "supcon": {
        "weight": 0.1, "temperature": 0.1}}), out, log=said.append)
    assert not any("supcon" in line or "over-correct" in line for line in said), said
    assert pd.read_csv(out.oof("hgb_inherited")).equals(pd.read_csv(out.oof("hgb_plain")))


def test_hgb_member_matches_an_independent_sklearn_reference(toy, tmp_path):
    from sklearn.ensemble import HistGradientBoostingClassifier

    from lib.models import build_model
    from lib.training.classical import train_fold_classical

    cfg, comp, data, table, out = toy
    params = {"max_iter": 30, "learning_rate": 0.1, "max_leaf_nodes": 7, "min_samples_leaf": 3}
    cfg = dict(cfg, model={"name": "hgb", "params": {**params, "stats": ["mean", "std", "p10", "p90"]}})
    ckpt, info, probs, history = train_fold_classical(cfg, comp, data, table, 1, torch.device("cpu"), lambda *_: None)

    # the reference: the cached spectrograms read with numpy, statistics with numpy, sklearn directly
    spec = np.load(out.root / "features" / "lm16" / "train_spec.npy").astype(np.float64)  # (clips, 1, 16, T)
    x = spec.reshape(len(spec), -1, spec.shape[-1])
    feats = np.concatenate([x.mean(-1), x.std(-1), np.percentile(x, 10, axis=-1), np.percentile(x, 90, axis=-1)], 1)
    y = (table["target"] == comp["positive"]).to_numpy().astype(int)
    tr, va = (table.fold != 1).to_numpy(), (table.fold == 1).to_numpy()
    ref = HistGradientBoostingClassifier(**params, early_stopping=False, random_state=cfg["train"]["seed"] + 1)
    ref.fit(feats[tr].astype(np.float32), y[tr])
    expected = ref.predict_proba(feats[va].astype(np.float32))
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert history[0]["epoch"] == 1 and info["best_params"] is None

    # the fitted member travels in a weights-only checkpoint and predicts the same after loading
    path = tmp_path / "fold1.pt"
    torch.save(ckpt, path)
    loaded = torch.load(path, weights_only=True)
    model = build_model(cfg["model"], data.manifest, 1, loaded["n_scalars"])
    model.load_state_dict(loaded["state_dict"])
    from lib.inference.predict import predict_recordings
    again = predict_recordings(model, data, np.flatnonzero(va), comp)[0]
    np.testing.assert_allclose(again, probs, atol=1e-6)


def test_balanced_hgb_is_the_unweighted_fit_with_the_prior_taken_out(tmp_path):
    """``train.class_weights: balanced`` on gradient boosting: the independent unweighted
    scikit-learn fit, its logit minus the training rows' log(pi / (1 - pi)); kept by a
    weights-only checkpoint."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from lib.models.classical import HistGradientBoosting

    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 8)).astype(np.float32)
    y = (X[:, 0] + rng.standard_normal(300) > 1.0).astype(int)  # about 20 % positive
    pi = y[:200].mean()
    assert 0.1 < pi < 0.35
    params = {"max_iter": 30, "learning_rate": 0.1, "max_leaf_nodes": 7, "min_samples_leaf": 3}
    model = HistGradientBoosting(1, 0, 1, **params)
    model.fit(X[:200], y[:200, None], np.arange(200), "binary", seed=5, class_weight="balanced")
    ref = HistGradientBoostingClassifier(**params, early_stopping=False, random_state=5).fit(X[:200], y[:200])
    p = np.clip(ref.predict_proba(X[200:])[:, 1], 1e-7, 1 - 1e-7)
    np.testing.assert_allclose(model.logits(X[200:])[:, 0], np.log(p) - np.log1p(-p) - np.log(pi / (1 - pi)),
                               rtol=1e-5, atol=1e-5)
    assert model.fitted.class_weight is None  # no sample weights: the slow path of scikit-learn's boosting

    torch.save(model.state_dict(), tmp_path / "m.pt")
    again = HistGradientBoosting(1, 0, 1, **params)
    again.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    np.testing.assert_array_equal(again.logits(X[200:]), model.logits(X[200:]))


def test_recording_weights_make_every_recording_weigh_the_same(tmp_path):
    """``model.params.recording_weights``: the windows of a recording weigh 1 / its window count
    (mean 1), as scikit-learn's own weighted fit, for gradient boosting and the logistic
    regression (through its pipeline); the prior taken out is the weighted one; equal window
    counts give the unweighted fit; multi-label tasks are refused."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression as LR

    from lib.models.classical import HistGradientBoosting, LogisticRegression, log_prior, recording_weights

    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), np.where(np.arange(40) < 10, 12, 2))  # 10 long recordings, 30 short
    X = rng.standard_normal((len(groups), 6)).astype(np.float32)
    y = (X[:, 0] + rng.standard_normal(len(groups)) > 0.8).astype(int)
    w = recording_weights(groups)
    assert w.mean() == pytest.approx(1) and np.bincount(groups, weights=w) == pytest.approx(np.full(40, w.sum() / 40))
    assert recording_weights(np.repeat(np.arange(5), 3)) is None
    params = {"max_iter": 20, "max_leaf_nodes": 7, "min_samples_leaf": 3}
    model = HistGradientBoosting(1, 0, 1, **params, recording_weights=True)
    model.fit(X, y[:, None], groups, "binary", seed=5, class_weight="balanced")
    ref = HistGradientBoostingClassifier(**params, early_stopping=False, random_state=5).fit(X, y, sample_weight=w)
    p = np.clip(ref.predict_proba(X)[:, 1], 1e-7, 1 - 1e-7)
    assert model.log_prior == log_prior(y[:, None], "binary", w) != log_prior(y[:, None], "binary")
    np.testing.assert_allclose(model.logits(X)[:, 0], np.log(p) - np.log1p(-p) - model.log_prior[0], rtol=1e-5, atol=1e-5)
    lr = LogisticRegression(1, 0, 1, recording_weights=True)
    lr.fit(X, y[:, None], groups, "binary", seed=0)
    ref = LR(C=1.0, max_iter=2000).fit((X - X.mean(0)) / X.std(0), y, sample_weight=w)
    np.testing.assert_allclose(lr.fitted[-1].coef_, ref.coef_, rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="recording_weights: not for multi-label tasks"):
        lr.fit(X, np.stack([y, 1 - y], 1), groups, "multilabel", seed=0)


def test_log_prior_per_task():
    from lib.models.classical import log_prior

    onehot = np.eye(3)[[0, 0, 0, 1]]  # class 2 never seen
    np.testing.assert_allclose(log_prior(onehot, "multiclass"), [np.log(0.75), np.log(0.25), 0.0])
    labels = np.array([[1, 0, 1], [0, 0, 1], [0, 0, 1], [0, 0, 1]])  # label 1 never, label 2 always positive
    np.testing.assert_allclose(log_prior(labels, "multilabel"), [np.log(0.25 / 0.75), 0.0, 0.0])
    np.testing.assert_allclose(log_prior(labels[:, :1], "binary"), [np.log(1 / 3)])


def test_logreg_member_grid_search_inside_the_training_fold(toy):
    from lib.training.classical import train_fold_classical

    cfg, comp, data, table, _ = toy
    cfg = dict(cfg, model={"name": "logreg", "params": {"grid": {"C": [0.01, 1.0]}}})
    logs = []
    _, info, probs, _ = train_fold_classical(cfg, comp, data, table, 0, torch.device("cpu"), logs.append)
    assert info["best_params"]["C"] in (0.01, 1.0) and any("grid search" in line for line in logs)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)


def test_grid_search_inner_folds_keep_a_rare_class_in_every_training_split():
    """Two positive recordings in one GroupKFold fold: that inner split trained without positives,
    every C scored NaN and the grid's first value was taken, unsaid (probe); stratified by group
    now, and a class of one recording is said."""
    from lib.models.classical import LogisticRegression, _inner_folds

    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(30), 2)
    y = np.isin(groups, [0, 3]).astype(int)  # GroupKFold(3) puts recordings 0 and 3 in one fold
    X = (rng.standard_normal((60, 4)) + 2 * y[:, None]).astype(np.float32)
    words, cv = _inner_folds(y, groups, "binary")
    assert words.endswith("stratified: a class is rare") and all(y[tr].max() == 1 for tr, _ in cv.split(X, y, groups))
    assert _inner_folds(np.isin(groups, [0, 1]).astype(int), groups, "binary")[0] == "3 inner folds by recording"
    one = np.arange(30)  # one row per recording, positives 0 and 3: stratified too (a class of 28 rows; review)
    assert _inner_folds(np.isin(one, [0, 3]).astype(int), one, "binary")[0].endswith("stratified: a class is rare")
    logs = []
    member = LogisticRegression(1, 0, 4, grid={"C": [0.01, 1.0]})
    member.fit(X, np.eye(2)[y], groups, "binary", 0, log=logs.append)
    assert "stratified" in logs[0] and "WARNING" not in logs[0] and "not used" not in logs[0], logs  # C: its default
    logs = []
    LogisticRegression(1, 0, 4, C=0.5, grid={"C": [0.01, 1.0]}).fit(X, np.eye(2)[y], groups, "binary", 0,
                                                                   log=logs.append)
    assert "; model.params {'C': 0.5} not used: the grid chooses): best" in logs[0], logs  # a C given: said
    logs = []
    member.fit(X, np.eye(2)[(groups == 0).astype(int)], groups, "binary", 0, log=logs.append)  # one recording: said
    assert "WARNING: every value of the grid failed on an inner fold" in logs[0], logs
    # too few rows of every class to stratify (3 recordings, 3 classes): plain inner folds, fitted (review)
    member.fit(X[:6], np.eye(3)[[0, 0, 1, 1, 2, 2]], groups[:6], "multiclass", 0, log=logs.append)
    assert logs[-1].startswith("grid search (3 inner folds by recording)"), logs


def test_grid_search_scores_inner_splits_that_lack_a_rare_class():
    """A class of 2 rows is missing from some inner split's training or validation part:
    scikit-learn's neg_log_loss scored those NaN with a traceback each and the search took its
    first value; the log loss over every class of the fold scores them (and picks a finite best)."""
    import warnings

    from sklearn.linear_model import LogisticRegression as LR

    from lib.models.classical import LogisticRegression, _neg_log_loss

    rng = np.random.default_rng(0)
    y = np.r_[np.repeat([0, 1, 2], 20), [3, 3]]
    X = (rng.standard_normal((62, 4)) + y[:, None]).astype(np.float32)
    logs = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a failed inner score is a warning in GridSearchCV
        member = LogisticRegression(1, 0, 4, grid={"C": [0.01, 1.0, 100.0]})
        member.fit(X, np.eye(4)[y], np.arange(62), "multiclass", 0, log=logs.append)
    score = float(logs[0].rsplit("score ", 1)[1])
    assert np.isfinite(score) and member.best_params["C"] in (1.0, 100.0), logs  # not the first value by default
    three = LR().fit(X[:60], y[:60])  # fitted without class 3: that class gets 1e-15, renormalised
    p = np.full((2, 4), 1e-15)
    p[:, :3] = three.predict_proba(X[60:])
    expected = np.mean(np.log(p[[0, 1], [3, 3]] / p.sum(1)))  # minus the log loss
    assert _neg_log_loss(three, X[60:], y[60:]) == pytest.approx(expected)


def test_gradient_boosting_on_too_few_windows_to_split_says_so():
    """30 training windows and scikit-learn's default of 20 rows a leaf: no tree splits, every
    prediction is the prior (a tiny competition's folds); the fit warns, naming the setting."""
    from lib.models.classical import HistGradientBoosting

    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 3)).astype(np.float32)
    y = (X[:, :1] > 0).astype(float)
    for leaf, warned in ((20, True), (15, False)):
        logs = []
        member = HistGradientBoosting(1, 0, 1, min_samples_leaf=leaf)
        member.fit(X, y, np.arange(30), "binary", 0, log=logs.append)
        constant = np.ptp(member.logits(X)) == 0
        assert constant == warned and any("fewer than twice min_samples_leaf (20)" in m and "at most 15" in m
                                          for m in logs) == warned, logs


def test_a_lower_is_better_metric_chooses_the_best_epoch(toy):
    from lib.training.loop import train_fold

    cfg, comp, data, table, _ = toy
    comp = dict(comp, metric="log_loss", metrics=["log_loss", "accuracy"])
    raw = {**cfg["train"], "epochs": 6, "patience": 2, "smooth_epochs": 1, "min_epochs": 0}  # the raw metric
    ckpt, info, probs, history = train_fold(dict(cfg, train=raw), comp, data, table, 0, torch.device("cpu"),
                                            lambda *_: None)
    losses = [h["log_loss"] for h in history]
    best = int(np.argmin(losses))  # the lowest log loss is the best epoch (the first of equals)
    # the history's validation ran in the training precision (bfloat16 on a CPU that trains in it), the
    # kept epoch's OOF score in float32
    assert info["best_epoch"] == best + 1 and info["log_loss"] == pytest.approx(losses[best], abs=2e-3)
    assert len(history) == min(6, best + 1 + 2)  # early stopping counts epochs without a lower log loss
    # train.monitor: a competition scored by accuracy, its epochs chosen and stopped on log_loss
    _, by_loss, _, history2 = train_fold(dict(cfg, train={**raw, "monitor": "log_loss"}),
                                         dict(comp, metric="accuracy", metrics=["accuracy"]), data, table, 0,
                                         torch.device("cpu"), lambda *_: None)
    assert [h["log_loss"] for h in history2] == losses and "accuracy" in history2[0]
    assert by_loss["best_epoch"] == info["best_epoch"]


def _teacher_blend(shared, cfg: dict, tmp_path) -> Outputs:
    """A copy of the toy fixture's output folder (the fixture's is shared with other tests) with
    an experiment "teacher" trained, predicted and blended (04, ``equal``)."""
    import shutil

    from lib.evaluation.ensemble import run_ensemble
    from lib.inference.infer import infer_experiment
    from lib.runs.experiment import train_experiment

    out = Outputs(tmp_path / "out")
    shutil.copytree(shared.root, out.root)
    train_experiment(dict(cfg, name="teacher"), out, log=lambda *_: None)
    infer_experiment("teacher", out)
    run_ensemble(out, ["teacher"], method="equal")
    return out


def test_distillation_trains_on_the_blend_and_follows_it(toy, tmp_path):
    """train.distill: the student's training targets are (1 - w) labels + w the blend's OOF
    probabilities (by id), validation keeps the labels, and a new blend means a new student."""
    import shutil

    import pandas as pd

    from lib.core.errors import MissingArtifact
    from lib.evaluation.ensemble import run_ensemble
    from lib.inference.infer import infer_experiment
    from lib.runs.self_training import soft_targets
    from lib.runs.experiment import train_experiment
    from lib.training.loop import training_batch
    from lib.training.augment import Augmenter
    from lib.training.wave_augment import WaveAugmenter

    cfg, comp, data, table, shared = toy
    out = Outputs(tmp_path / "out")  # a copy: the fixture's folder is shared with other tests
    shutil.copytree(shared.root, out.root)
    with pytest.raises(MissingArtifact, match="04_ensemble.py"):
        soft_targets(out, comp, table)
    teacher = dict(cfg, name="teacher")
    train_experiment(teacher, out, log=lambda *_: None)
    infer_experiment("teacher", out)
    run_ensemble(out, ["teacher"], method="equal")
    blend = pd.read_csv(out.root / "ensemble/oof_blend.csv", dtype={"id": str}).set_index("id")
    soft, blend_id = soft_targets(out, comp, table.iloc[::-1])
    np.testing.assert_allclose(soft[:, 0], blend.loc[table["id"][::-1], "p_" + comp["positive"]], rtol=1e-6)
    other = dict(comp, task="multiclass", classes=[*comp["classes"], "X"])  # 00 ran since with another class
    with pytest.raises(MissingArtifact, match=r"'p_X'\]: the blend was made for other classes"):
        soft_targets(out, other, table)

    from lib.inputs import load_inputs
    from lib.runs.self_training import mixed_targets

    student_data = load_inputs(out, cfg, "train", table, comp, torch.device("cpu"))
    student_data.train_target = mixed_targets(student_data.target, soft_targets(out, comp, table)[0], 0.25)
    items = np.arange(len(table))
    no_frontend = type("NoFrontEnd", (), {"to_spec": staticmethod(lambda x: x)})()
    _, _, target = training_batch(student_data, items, torch.device("cpu"), no_frontend,
                                  WaveAugmenter(None, 0, 16000), Augmenter(cfg["augment"], 0))
    labels = student_data.target[torch.as_tensor(student_data.recordings(items))]
    p = torch.as_tensor(blend.loc[table["id"], "p_" + comp["positive"]].to_numpy(copy=True), dtype=torch.float32)[:, None]
    torch.testing.assert_close(target, 0.75 * labels + 0.25 * p[student_data.recordings(items)])
    assert torch.equal(student_data.targets(items), labels)  # validation: the labels

    student = dict(cfg, name="student", train={**cfg["train"], "distill": {"weight": 0.5}})
    said = []
    first = train_experiment(student, out, log=said.append)
    assert any(line.startswith("distils the blend of 04_ensemble.py (its record ") and "0.5 x its OOF" in line
               for line in said), said
    assert not first["skipped"] and train_experiment(student, out, log=lambda *_: None)["skipped"]
    from lib.runs.self_training import teacher_note

    assert teacher_note(out, "student") is None and teacher_note(out, "teacher") is None
    run_ensemble(out, ["teacher"], method="rank")  # another teacher: the student is trained again, and says why
    assert teacher_note(out, "student").startswith("NOTE: student was distilled from an earlier blend (04_ensemble.py "
                                                   "ran since)")  # what 03 says before it is (probe: 03 said nothing)
    said = []
    assert not train_experiment(student, out, log=said.append)["skipped"]
    assert "student: the teacher blend changed since its models were trained: they are trained again" in said, said
    infer_experiment("student", out)
    run_ensemble(out, ["teacher", "student"], method="equal")  # the student in its own teacher: refused
    with pytest.raises(ConfigError, match=r"'student' itself among its members.*04_ensemble.py teacher\)"):
        train_experiment(student, out, log=lambda *_: None)


def test_a_student_of_an_earlier_version_stays_when_04_runs_again_on_the_same_blend(toy, tmp_path, monkeypatch):
    """A student trained by a version that keyed it by the blend record's id was trained again, as
    "the teacher blend changed", once the upgraded 04 wrote a new record for OOF probabilities of the
    same bytes (probe U): 04 now names the records it replaces with the same oof_blend.csv."""
    import lib.runs.experiment as experiment
    from lib.evaluation.ensemble import run_ensemble
    from lib.runs.experiment import train_experiment
    from lib.runs.self_training import soft_targets, teacher_note

    cfg, comp, data, table, shared = toy
    out = _teacher_blend(shared, cfg, tmp_path)
    old = out.ensembled.read()
    with monkeypatch.context() as m:  # the earlier version's key: the record's id
        m.setattr(experiment, "soft_targets", lambda *a: (soft_targets(*a)[0], out.ensembled.read()["id"]))
        student = dict(cfg, name="student", train={**cfg["train"], "distill": {"weight": 0.5}})
        trained = train_experiment(student, out, log=lambda *_: None)
    assert not trained["skipped"] and out.trained("student").read()["inputs"]["teacher"] == old["id"]
    oof = (out.root / "ensemble/oof_blend.csv").read_bytes()
    run_ensemble(out, ["teacher"], method="equal", temperature=0.5)  # another record, the same OOF blend
    new = out.ensembled.read()
    assert new["id"] != old["id"] and (out.root / "ensemble/oof_blend.csv").read_bytes() == oof
    assert new["info"]["same_oof_as"] == [old["id"]]
    said = []
    assert train_experiment(student, out, log=said.append)["skipped"], said
    assert teacher_note(out, "student") is None
    run_ensemble(out, ["teacher"], method="rank")  # other OOF probabilities: a new student
    assert "same_oof_as" not in out.ensembled.read()["info"] and teacher_note(out, "student")
    assert not train_experiment(student, out, log=lambda *_: None)["skipped"]


def test_pseudo_labelled_rows_train_every_fold_and_never_score(toy, tmp_path):
    import shutil

    import pandas as pd

    from lib.evaluation.ensemble import run_ensemble
    from lib.inference.infer import infer_experiment
    from lib.runs.experiment import train_experiment
    from lib.training.loop import fold_setup
    from lib.runs.self_training import pseudo_labelled_folder

    cfg, comp, _, table, shared = toy
    out = _teacher_blend(shared, cfg, tmp_path)
    # 04's members table scores each member at a fixed decision.threshold, as it scores the blends (at 0.5: probe)
    fixed = Outputs(tmp_path / "fixed")
    shutil.copytree(out.root, fixed.root)
    oof, pos = pd.read_csv(out.oof("teacher")), "p_" + comp["positive"]
    right = lambda t: float(((oof[pos] > t) == (oof.target == comp["positive"])).mean())  # noqa: E731
    cut = next(t for t in np.quantile(oof[pos], [0.2, 0.3, 0.4, 0.6, 0.7, 0.8]) if right(t) != right(0.5))
    resolved = yaml.safe_load(fixed.competition.read_text())
    fixed.competition.write_text(yaml.safe_dump(dict(resolved, decision=dict(resolved["decision"], threshold=float(cut)))))
    fixed.prepared().commit([fixed.competition, fixed.folds], "a fixed threshold")
    run_ensemble(fixed, ["teacher"], method="equal")
    members = pd.read_csv(fixed.root / "ensemble/members.csv").set_index("experiment")
    assert members.loc["teacher", "accuracy"] == pytest.approx(right(cut))
    from lib.evaluation.decisions import postprocessed_scores
    from lib.evaluation.leaderboard import leaderboard  # and so do the leaderboard and 02's "as 04 scores it" line

    assert leaderboard(fixed).set_index("experiment").loc["teacher", "accuracy"] == pytest.approx(right(cut))
    post = postprocessed_scores(oof, fixed.load_split("train"), fixed.load_competition())
    assert post["by"] == ["threshold"] and post["oof"]["accuracy"] == pytest.approx(right(cut))
    from lib.evaluation.decisions import scored_after  # a threshold of 0.5 is the default: no other figure (review)

    assert scored_after(dict(resolved, decision=dict(resolved["decision"], threshold=0.5))) == []
    blend = pd.read_csv(out.root / "ensemble/test_blend.csv", dtype={"id": str})
    cols = [f"p_{c}" for c in comp["classes"]]
    threshold = float(np.sort(blend[cols].max(axis=1))[0])  # the least confident row just passes
    r = pseudo_labelled_folder(out, tmp_path / "pl", min_confidence=max(threshold, 0.5000001))
    new = Outputs(tmp_path / "pl")
    folds = new.load_split("train")
    pseudo = folds[folds.fold == -1]
    assert r["pseudo"] == len(pseudo) == (blend[cols].max(axis=1) >= max(threshold, 0.5000001)).sum() >= 1
    assert folds.head(len(table)).equals(table)  # the labelled rows unchanged
    expected = np.asarray(comp["classes"])[blend.set_index("id").loc[pseudo.id, cols].to_numpy().argmax(1)]
    assert (pseudo.target.to_numpy() == expected).all()
    build_feature_set(new, cfg["features"], workers=1)
    from lib.inputs import load_inputs

    data = load_inputs(new, cfg, "train", folds, comp, torch.device("cpu"))
    for k in (0, 1):  # every fold trains on the pseudo rows, none validates on them
        tr, va, _, _ = fold_setup(cfg, comp, data, folds, k)
        assert set(pseudo.index) <= set(tr) and not set(pseudo.index) & set(va)
    said = []
    s = train_experiment(dict(cfg, name="student"), new, log=said.append)
    assert f"{len(pseudo)} pseudo-labelled recordings (fold -1) train in every fold, never validated" in said, said
    oof = pd.read_csv(new.oof("student"), dtype={"id": str})
    assert oof.id.tolist() == table.id.tolist() and len(s["folds"]) == 2  # fold -1 is no fold
    # distillation here: the pseudo-labelled rows, which no OOF blend holds, keep their labels
    from lib.runs.self_training import mixed_targets, soft_targets

    infer_experiment("student", new)
    run_ensemble(new, ["student"], method="equal")
    soft, _ = soft_targets(new, comp, folds)
    pseudo_rows = (folds.fold == -1).to_numpy(copy=True)
    assert np.isnan(soft[pseudo_rows]).all() and not np.isnan(soft[~pseudo_rows]).any()
    mixed, rows = mixed_targets(data.target, soft, 0.5), torch.from_numpy(pseudo_rows)
    assert torch.equal(mixed[rows], data.target[rows]) and not torch.isnan(mixed).any()
    distilled = dict(cfg, name="distilled", train={**cfg["train"], "distill": {"weight": 0.5}})
    assert len(train_experiment(distilled, new, log=lambda *_: None)["folds"]) == 2
    # a second round from the pseudo-labelled folder's own blend (refused as "training ids" before):
    # the recordings sure enough now get new labels, round one's others keep theirs
    sure = pd.read_csv(new.root / "ensemble/test_blend.csv", dtype={"id": str}).set_index("id")[cols].max(axis=1)
    again = pseudo_labelled_folder(new, tmp_path / "pl2", min_confidence=max(float(sure.max()), 0.5000001))
    second = Outputs(tmp_path / "pl2").load_split("train")
    relabelled = set(sure.index[sure >= max(float(sure.max()), 0.5000001)])
    assert again["replaced"] == again["pseudo"] == len(relabelled & set(pseudo.id)) >= 1
    assert sorted(second.loc[second.fold == -1, "id"]) == sorted(pseudo.id)  # kept + relabelled, none twice
    assert second["id"].is_unique and second.head(len(table)).equals(table)
    assert again["kept"] == len(pseudo) - again["replaced"]
    # stage 00 again in a pseudo-labelled folder: the labelled rows alone, and it says what it dropped
    assert (tmp_path / "pl2" / "pseudo_label.txt").is_file()
    redone = prepare(load_competition(shared.root.parent / "data" / "toy.yaml"), tmp_path / "pl2")
    assert any(f"held {len(pseudo)} pseudo-labelled rows (fold -1, pseudo_label.py)" in w for w in redone["warnings"])
    assert not (tmp_path / "pl2" / "pseudo_label.txt").exists()  # its tables are 00's now: 00 is named again
    assert (Outputs(tmp_path / "pl2").load_split("train")["fold"] >= 0).all()
    # an existing output folder as --to: refused without force; with it, its blend of the old folds goes
    with pytest.raises(ConfigError, match="pl2 is an existing output folder: its folds.csv and competition.yaml "
                                          "would be replaced"):
        pseudo_labelled_folder(new, tmp_path / "pl2", min_confidence=0.9)
    shutil.copytree(new.root, tmp_path / "plc")
    forced = pseudo_labelled_folder(out, tmp_path / "plc", min_confidence=1.0, force=True)  # other rows than new's
    assert "submission.csv" in forced["removed_blend"] or "ensemble.json" in forced["removed_blend"], forced
    assert not (tmp_path / "plc" / "ensemble.json").exists()
    assert forced["pseudo"] == 0 and forced["most_confident"] == pytest.approx(blend[cols].max(axis=1).max())
    # killed before its record: the folder names the command that makes it again, not 00 (which drops pseudo rows)
    Outputs(tmp_path / "plc").prepared().path.unlink()
    with pytest.raises(MissingArtifact, match=rf"run pseudo_label.py --output-dir {out.root} --to {tmp_path / 'plc'} "
                                              rf"--min-confidence 1.0 --force \(the command that makes this pseudo-labelled"):
        Outputs(tmp_path / "plc").prepared().require()
    # 00 run again with other folds after 04: the blend's test probabilities come from models of
    # the old folds and labels, which pseudo_label.py took unsaid
    stale = Outputs(tmp_path / "stale")
    shutil.copytree(out.root, stale.root)
    labelled = stale.load_split("train")
    stale.folds.write_text(labelled.assign(fold=1 - labelled["fold"].astype(int)).to_csv(index=False))
    stale.prepared().commit([stale.competition, stale.folds], "refolded")
    with pytest.raises(MissingArtifact, match="the teacher of pseudo_label.py. was made on other folds or labels"):
        pseudo_labelled_folder(stale, tmp_path / "pl_stale", min_confidence=0.9)
    # a member trained again after 04: its blend's probabilities are no longer those of the models there, which
    # pseudo_label.py and train.distill took unsaid where 05 and the leaderboard refuse (probe)
    shutil.rmtree(stale.root)
    shutil.copytree(out.root, stale.root)
    train_experiment(dict(cfg, name="teacher", train={**cfg["train"], "seed": 7}), stale, log=lambda *_: None)
    with pytest.raises(MissingArtifact, match="used other training runs or test predictions of teacher than the current ones"):
        pseudo_labelled_folder(stale, tmp_path / "pl_stale", min_confidence=0.9)
    with pytest.raises(MissingArtifact, match=r"the teacher of train.distill\) used other training runs or test predictions of teacher"):
        soft_targets(stale, comp, stale.load_split("train"))
    # a row the submission's decision (a fixed or fitted threshold) gives another class is not sure (probe)
    from lib.runs.self_training import _sure_labels

    two = {"task": "binary", "classes": ["a", "b"], "positive": "b"}
    keep, _, labels = _sure_labels(np.array([[0.58, 0.42], [0.95, 0.05], [0.3, 0.7]]), two, 0.55, {"threshold": 0.4})
    assert keep.tolist() == [False, True, True] and labels.tolist() == ["a", "a", "b"]


def test_pseudo_labels_from_unlabelled_audio_through_a_bundle(toy, tmp_path):
    """An unlabelled folder predicted by predict_bundle (--test-files, no submission) is a source too."""
    import shutil

    import pandas as pd

    from lib.shipping.bundle import make_bundle, predict_bundle
    from lib.runs.self_training import pseudo_labelled_folder

    cfg, comp, _, table, shared = toy
    out = _teacher_blend(shared, cfg, tmp_path)
    make_bundle(out, tmp_path / "bundle", log=lambda *_: None)
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    import soundfile as sf

    for path in table["path"].head(6):  # six new clips (training clips at 0.9 of their level), without labels
        y, sr = sf.read(path, dtype="float32")
        sf.write(unlabelled / ("u_" + os.path.basename(path)), 0.9 * y, sr)
    (unlabelled / "sample.csv").write_text("id,label\nt1,a\nt0,a\n")  # the competition's sample: other ids
    with pytest.raises(InputError, match=r"--test-files '\*\.wav' predicts other files than the sample submission "
                                         r"lists: add --no-submission"):  # (probe: the ids said, not the option)
        predict_bundle(tmp_path / "bundle", unlabelled, tmp_path / "work", test_files="*.wav", log=lambda *_: None)
    r = predict_bundle(tmp_path / "bundle", unlabelled, tmp_path / "work", test_files="*.wav", submission=False,
                       log=lambda *_: None)
    assert r["rows"] == 6 and r["submission"] is None
    s = pseudo_labelled_folder(out, tmp_path / "pl", min_confidence=0.5000001, source=tmp_path / "work")
    folds = Outputs(tmp_path / "pl").load_split("train")
    blend = pd.read_csv(tmp_path / "work/test_blend.csv")
    assert s["pseudo"] == (folds.fold == -1).sum() == (blend.filter(like="p_").max(axis=1) >= 0.5000001).sum()
    assert set(folds.id[folds.fold == -1]) <= set(blend.id) and folds.id.head(len(table)).tolist() == table.id.tolist()
    # the bundle's decision comes with its probabilities, and pseudo labels follow it as from 04's blend (review)
    assert json.loads((tmp_path / "work/decision.json").read_text()) == json.loads(
        (out.root / "ensemble.json").read_text())["decision"]["decision"]
    decided = tmp_path / "decided"
    shutil.copytree(tmp_path / "work", decided)
    p = blend.set_index("id")[f"p_{comp['positive']}"]
    (decided / "decision.json").write_text(json.dumps({"threshold": float(p.median())}))  # half the rows cut the other way
    flipped = (p > p.median()) != (p > 0.5)
    assert pseudo_labelled_folder(out, tmp_path / "pl_d", min_confidence=0.5000001, source=decided)["pseudo"] == \
        s["pseudo"] - int(flipped.sum()) and flipped.any()
    other = tmp_path / "other_classes"  # a work folder of a bundle of other classes: one line, not a KeyError
    shutil.copytree(tmp_path / "work", other)
    first = f"p_{comp['classes'][0]}"
    pd.read_csv(other / "test_blend.csv").rename(columns={first: "p_zzz"}).to_csv(other / "test_blend.csv", index=False)
    with pytest.raises(MissingArtifact, match="test_blend.csv has the columns .* made for other classes"):
        pseudo_labelled_folder(out, tmp_path / "pl_other", min_confidence=0.5000001, source=other)
    again = tmp_path / "again"  # a folder that holds a training clip again, under its id
    again.mkdir()
    shutil.copy(table["path"][0], again / table["id"][0])
    predict_bundle(tmp_path / "bundle", again, tmp_path / "work2", test_files="*", submission=False, log=lambda *_: None)
    with pytest.raises(InputError, match=r"1 recording\(s\) to pseudo-label have training ids"):
        pseudo_labelled_folder(out, tmp_path / "pl2", 0.5000001, source=tmp_path / "work2")
    # the training audio itself, named by file name (not the competition's ids): the same files, refused
    first = Path(table["path"][0])
    predict_bundle(tmp_path / "bundle", first.parent, tmp_path / "work3", test_files=first.name, submission=False,
                   log=lambda *_: None)
    with pytest.raises(InputError, match=rf"are training audio \(the same bytes\), e.g. '{first.name}' is training row '{table['id'][0]}'"):
        pseudo_labelled_folder(out, tmp_path / "pl3", 0.5000001, source=tmp_path / "work3")
    # folders and settings that would damage or mislead: refused before anything is written
    for dest, source, conf, words in ((out.root, None, 0.9, "--to .* is the output folder"),
                                      (tmp_path / "work", tmp_path / "work", 0.9, "--to .* is the --source folder"),
                                      (tmp_path / "pl4", tmp_path / "nothing", 0.9, "not a predict_bundle.py work folder"),
                                      (tmp_path / "pl4", None, 90, "--min-confidence 90: must be in")):
        with pytest.raises(ConfigError, match=words):
            pseudo_labelled_folder(out, dest, conf, source=source)
    assert out.prepared().require() and not (tmp_path / "pl4").exists()


def test_a_model_compiled_on_the_cpu_trains_with_finite_gradients():
    """``train.compile: true`` on the CPU: the step :func:`lib.core.device.training_amp` chooses
    (float32; inductor's bfloat16 autocast gave every convolution of this network non-finite
    gradients on CPUs with native bfloat16, torch 2.11) is finite and moves every weight."""
    from lib.core.device import place_model, training_amp
    from lib.models.cnn import CNN
    from lib.training.loop import train_step

    torch.manual_seed(0)
    device = torch.device("cpu")
    # 128 bands: the failing case; one block of it is enough (compiled with bfloat16 autocast its gradients
    # are non-finite too, torch 2.11), and inductor compiles it in 19 s instead of 26 s on one core
    model = CNN(1, 0, 1, channels=(8,), convs_per_block=1, head_hidden=8)
    forward = place_model(model, device, compile=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    spec, target = torch.randn(8, 1, 128, 63), torch.randint(0, 2, (8, 1)).float()
    loss, finite = train_step(forward, model, opt, torch.nn.BCEWithLogitsLoss(), torch.amp.GradScaler("cuda", enabled=False),
                              spec, torch.zeros(8, 0), target, device, training_amp(device, True, compiled=True))
    assert finite and torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters() if n.startswith("trunk"))
    assert training_amp(device, True, compiled=False) and training_amp(torch.device("cuda"), True, compiled=True)


def test_keys_added_later_at_their_neutral_value_keep_earlier_experiment_keys(tmp_path):
    """train.epoch_repeats, train.monitor and inputs.group_norm came later: at 1, null and false the
    key is the one a config without them had (groups.test: false, the competition's id), so finished models stay valid; any other value is another experiment."""
    import pandas as pd

    from lib.runs.experiment import experiment_key

    (tmp_path / "e.yaml").write_text("model: {name: cnn}\n")
    folds = pd.DataFrame({"id": ["a", "b"], "target": [0, 1], "fold": [0, 1], "path": ["a.wav", "b.wav"]})
    comp = {"task": "binary", "classes": ["n", "y"], "audio": {"aggregate": "mean"}}

    def key(*overrides):
        return experiment_key(load_experiment(tmp_path / "e.yaml", list(overrides)), folds, {"record": "r"}, comp)
    one = load_experiment(tmp_path / "e.yaml")
    assert one["train"]["epoch_repeats"] == 1 and one["train"]["monitor"] is None and not one["inputs"]["group_norm"]
    del one["train"]["epoch_repeats"], one["train"]["monitor"], one["inputs"]["group_norm"]  # the config as
    # validated before the keys existed (inputs.group_norm: a review found every experiment retrained without it)
    assert key() == key("train.epoch_repeats=1") == key("inputs.group_norm=false") == experiment_key(
        one, folds, {"record": "r"}, comp)
    assert len({key("train.epoch_repeats=2"), key(), key("train.monitor=auroc"), key("inputs.group_norm=true")}) == 4
    from lib.core.artifacts import competition_id  # groups.test came later too: false keeps the blends of before

    grouped = dict(comp, groups={"regex": "^(s\\d+)_", "on": "id"})
    assert competition_id(dict(grouped, groups=dict(grouped["groups"], test=False))) == competition_id(grouped)
    assert competition_id(dict(grouped, groups=dict(grouped["groups"], test=True))) != competition_id(grouped)


def test_pooled_statistics_in_any_order_on_the_input_device_and_dtype():
    """The percentiles are computed in one sort: each statistic still lands in its place for any
    order of ``stats`` (numpy's linear percentiles as the reference), and the result stays on the
    input's device and dtype (a CPU tensor of quantiles failed every GPU run of ``zoo/hgb``; the
    ``meta`` device stands in for CUDA here)."""
    from lib.models.classical import pooled_statistics

    spec = torch.randn(4, 2, 3, 50)
    stats = ["p90", "mean", "min", "p10", "std", "max", "p50"]
    x = spec.flatten(1, 2).numpy().astype(np.float64)
    ref = {"mean": x.mean(-1), "std": x.std(-1), "min": x.min(-1), "max": x.max(-1),
           "p10": np.percentile(x, 10, axis=-1), "p50": np.percentile(x, 50, axis=-1), "p90": np.percentile(x, 90, axis=-1)}
    np.testing.assert_allclose(pooled_statistics(spec, stats).numpy(), np.concatenate([ref[s] for s in stats], 1), atol=1e-5)
    meta = pooled_statistics(spec.to("meta"), stats)
    assert meta.device.type == "meta" and meta.shape == (4, 6 * len(stats))
    default = torch.get_default_dtype()
    try:  # a notebook's float64 default must not make the quantiles' dtype differ from the input's
        torch.set_default_dtype(torch.float64)
        assert pooled_statistics(spec, ["p10", "p90"]).dtype == torch.float32
    finally:
        torch.set_default_dtype(default)


def test_the_best_epoch_line_shows_the_monitored_metric(toy):
    """With ``train.monitor`` outside the competition's metrics, the fold's best-epoch line named
    only the competition's metrics, not the one the epoch was chosen by (probe)."""
    from lib.runs.experiment import train_experiment

    cfg, comp, _, _, out = toy
    assert "log_loss" not in comp["metrics"]
    said = []
    train_experiment(dict(cfg, name="by_log_loss", train={**cfg["train"], "epochs": 1, "folds": [0],
                                                          "monitor": "log_loss"}), out, log=said.append)
    line = next(s for s in said if str(s).startswith("fold 0: best epoch"))
    assert all(f"  {m} " in line for m in comp["metrics"]) and "  log_loss " in line
