"""The training loop of one fold: non-finite steps and predictions, resuming inside a fold,
checkpoints that load with ``torch.load(weights_only=True)`` (a tiny generated competition)."""
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import make_toy_competition, stage

from lib.components import load_experiment
from lib.core.errors import TrainingError
from lib.core.paths import Outputs
from lib.data.metadata import MetadataEncoder
from lib.data.prepare import prepare
from lib.inputs import WindowData
from lib.features.cache import build_feature_set
from lib.training import loop
from lib.training.loop import train_fold


WAVEFORM = {  # the waveform path: crops at any offset, a front end, waveform augmentation, TTA
    "features": {"name": "waveform", "set": "wave"},
    "frontend": {"name": "log_mel", "params": {"n_mels": 16, "n_fft": 512, "hop_length": 256}},
    "augment": {"waveform": [{"name": "gain", "params": {"p": 0.5}},
                             {"name": "noise", "params": {"p": 0.5, "color": "pink"}},
                             {"name": "time_shift", "params": {"p": 0.5, "max_seconds": 0.1}},
                             {"name": "mixup", "params": {"p": 0.5}}]},
    "tta": {"shifts": [0.0, 0.1]},
}


@pytest.fixture(scope="module", params=["cached", "waveform"])
def toy(tmp_path_factory, request):
    """``(cfg, comp, data, table)`` of a 24-clip generated binary competition, 2 folds, with a tiny
    CNN, EMA, dropout, Mixup, SpecAugment and a balanced sampler: every RNG of the loop is used;
    once on cached log-mel features, once on the waveform path (:data:`WAVEFORM`)."""
    from lib.core.config import deep_merge
    from lib.inputs import load_inputs

    root = tmp_path_factory.mktemp("toy")
    out = Outputs(root / "out")
    prepare(make_toy_competition(root / "data", n=24), out.root)
    exp = {
        "features": {"name": "log_mel", "set": "lm16", "params": {"n_mels": 16, "n_fft": 512, "hop_length": 256}},
        "model": {"name": "cnn", "params": {"channels": [4, 8], "convs_per_block": 1, "head_hidden": 8, "dropout": 0.3}},
        "augment": {"mixup": {"p": 0.5}, "spec_augment": {"p": 0.5, "freq_mask": 4, "time_mask": 4}},
        "train": {"epochs": 4, "batch_size": 4, "patience": 10, "ema": 0.9, "sampler": "balanced",
                  "class_weights": "balanced", "device": "cpu"}}
    if request.param == "waveform":
        exp = deep_merge(exp, WAVEFORM)
        exp["features"].pop("params")
    (root / "exp.yaml").write_text(yaml.safe_dump(exp))
    cfg = load_experiment(root / "exp.yaml")
    build_feature_set(out, cfg["features"], workers=1)
    comp, table = out.load_competition(), out.load_split("train")
    data = load_inputs(out, cfg, "train", table, comp, torch.device("cpu"))
    return cfg, comp, data, table


def _train(toy, log=lambda *_: None, fold=0, train=None, **kw):
    cfg, comp, data, table = toy
    cfg = dict(cfg, train={**cfg["train"], **(train or {})})
    return train_fold(cfg, comp, data, table, fold, torch.device("cpu"), log, **kw)


class _NanLoss(torch.nn.Module):
    """A loss made NaN (its gradients too) at the training steps ``bad(n)`` picks (n counts from 1)."""

    def __init__(self, inner, bad):
        super().__init__()
        self.inner, self.bad, self.n = inner, bad, 0

    def forward(self, logits, target):
        out = self.inner(logits, target)
        if logits.requires_grad:  # a training step, not the validation loss
            self.n += 1
            if self.bad(self.n):
                return out * float("nan")
        return out


def _nan_loss_at(monkeypatch, bad):
    build = loop.build_loss
    monkeypatch.setattr(loop, "build_loss", lambda *a, **k: _NanLoss(build(*a, **k), bad))


def test_a_non_finite_step_is_skipped_and_reported(toy, monkeypatch):
    _nan_loss_at(monkeypatch, lambda n: n == 7)  # 12 training clips / 4 = 3 steps per epoch: epoch 3, step 1
    lines = []
    ckpt, info, probs, history = _train(toy, lines.append)
    assert any("fold 0 epoch 3 step 1/3: non-finite" in line for line in lines)
    assert info["bad_steps"] == 1 and [h["bad_steps"] for h in history] == [0, 0, 1, 0]
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert np.isfinite(probs).all() and len(history) == 4


def test_epoch_repeats_draws_more_windows_an_epoch(toy, monkeypatch):
    _nan_loss_at(monkeypatch, lambda n: n == 7)  # 12 training clips x 2 repeats / 4 = 6 steps an epoch: epoch 2, step 1
    lines = []
    _, info, _, history = _train(toy, lines.append, train={"epoch_repeats": 2})
    assert any("fold 0 epoch 2 step 1/6: non-finite" in line for line in lines)
    assert info["bad_steps"] == 1 and len(history) == 4


def test_repeated_non_finite_steps_restore_then_stop(toy, monkeypatch):
    _nan_loss_at(monkeypatch, lambda n: n >= 4)  # every step from epoch 2 on
    lines = []
    with pytest.raises(TrainingError, match="fold 0 epoch 2 step 2: 2 consecutive non-finite steps, again"):
        _train(toy, lines.append, train={"max_bad_steps": 2})
    assert any("restoring the state after epoch 1" in line for line in lines)


def test_non_finite_validation_predictions_are_not_scored(toy, monkeypatch):
    predict, calls = loop.predict_recordings, {"n": 0}

    def predict_nan(*a, **k):
        probs, logits, windows = predict(*a, **k)
        calls["n"] += 1
        if calls["n"] == 2:  # the validation of epoch 2
            probs, logits = probs * np.nan, logits * np.nan
        return probs, logits, windows
    monkeypatch.setattr(loop, "predict_recordings", predict_nan)
    lines = []
    _, info, probs, history = _train(toy, lines.append)  # a metric fed NaN would raise here
    assert any(line.startswith("fold 0 epoch 2: non-finite validation predictions") for line in lines)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4] and np.isfinite(probs).all()
    assert np.isfinite([h["accuracy"] for h in history]).all()
    # every validation NaN: restore once, then stop
    monkeypatch.setattr(loop, "predict_recordings", lambda *a, **k: (lambda p, lg, w: (p * np.nan, lg * np.nan, w))(*predict(*a, **k)))
    with pytest.raises(TrainingError, match="fold 1 epoch 1: non-finite validation predictions"):
        _train(toy, fold=1)


class _Stop(KeyboardInterrupt):
    pass


def _strip(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def test_resume_inside_a_fold_is_bit_identical(toy, tmp_path):
    ref_ckpt, ref_info, ref_probs, ref_hist = _train(toy)
    state = tmp_path / "fold0.state.pt"

    def interrupt(line):
        if " epoch  2/4 " in line:
            raise _Stop
    with pytest.raises(_Stop):
        _train(toy, interrupt, state_path=state, state_key="run-a")
    saved = torch.load(state, weights_only=True)  # plain types and tensors only
    assert saved["key"] == "run-a" and saved["epoch"] == 2
    lines = []
    ckpt, info, probs, hist = _train(toy, lines.append, state_path=state, state_key="run-a")
    assert lines[0].startswith("fold 0: resuming after epoch 2") and info["resumed_from_epoch"] == 2
    assert np.array_equal(probs, ref_probs) and _strip(hist) == _strip(ref_hist)
    assert info["best_epoch"] == ref_info["best_epoch"] and info["bad_steps"] == 0
    assert all(torch.equal(ckpt["state_dict"][k], v) for k, v in ref_ckpt["state_dict"].items())
    # a state of another run is ignored: a fresh start, the same result
    _, info, probs, hist = _train(toy, state_path=state, state_key="run-b")
    assert info["resumed_from_epoch"] == 0 and np.array_equal(probs, ref_probs) and _strip(hist) == _strip(ref_hist)


def test_checkpoint_loads_with_weights_only(toy, tmp_path):
    ckpt, info, _, _ = _train(toy)
    torch.save(dict(ckpt, **info), tmp_path / "fold0.pt")
    loaded = torch.load(tmp_path / "fold0.pt", weights_only=True)
    assert loaded["metadata_encoder"] is None and loaded["best_epoch"] == info["best_epoch"]


def test_metadata_encoder_state_transforms_as_the_fitted_sklearn_one(tmp_path):
    train = pd.DataFrame({"meta_age": [30, np.nan, 50, "x", 41], "meta_sex": ["F", "M", None, "F", "M"],
                          "meta_site": ["a", "b", "a", "a", "c"]})
    fitted = MetadataEncoder(["age"], ["sex", "site"]).fit(train)
    torch.save(fitted.state(), tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)  # plain values only
    enc = MetadataEncoder.from_state(state)
    new = pd.DataFrame({"meta_age": [np.nan, 10.0], "meta_sex": ["X", "F"], "meta_site": ["b", "z"]})
    for table in (train, new):
        ref = fitted.transformer.transform(fitted._frame(table)).astype(np.float32)
        assert np.array_equal(enc.transform(table), ref) and np.array_equal(fitted.transform(table), ref)
    out = enc.transform(new)
    assert enc.names == ["meta_age", "meta_sex_", "meta_sex_F", "meta_sex_M", "meta_site_a", "meta_site_b", "meta_site_c"]
    assert out[0, 0] == pytest.approx((state["median"][0] - state["mean"][0]) / state["scale"][0])  # missing -> median
    assert out[0, 1:4].tolist() == [0, 0, 0] and out[1, 4:].tolist() == [0, 0, 0]  # unseen categories -> zeros
    data = WindowData(torch.zeros(2, 1, 1, 1), torch.zeros(2, 0), np.arange(2), np.arange(2), np.ones(2, int), {})
    data.set_metadata(state, new)  # a checkpoint's state dict, as the encoder object
    assert np.array_equal(data.meta.numpy(), out)


def test_a_categorical_code_read_back_as_a_float_is_the_same_category(tmp_path):
    """Sex coded 0/1: folds.csv reads back as integers, a test CSV with an empty cell as floats
    ("1.0"); both must name the category "1" (the test rows were all zeros, silently), and 00
    names the test value no training row has."""
    make_toy_competition(tmp_path / "data", n=24)
    train = pd.read_csv(tmp_path / "data/train.csv")
    train.assign(sex=[0, 1] * 12).to_csv(tmp_path / "data/train.csv", index=False)
    pd.DataFrame({"id": ["t0", "t1"], "sex": [1, None]}).to_csv(tmp_path / "data/test.csv", index=False)  # 1.0, ""
    cfg = yaml.safe_load((tmp_path / "data/toy.yaml").read_text())
    (tmp_path / "data/toy.yaml").write_text(yaml.safe_dump(dict(cfg, metadata={"categorical": ["sex"]})))
    r = stage("00_prepare.py", tmp_path / "data/toy.yaml", "--output-dir", tmp_path / "out")
    assert "metadata 'sex': 1 test row(s) have values no training row has: '' (1 rows)" in r.stdout + r.stderr
    out = Outputs(tmp_path / "out")
    enc = MetadataEncoder([], ["sex"]).fit(out.load_split("train"))
    assert enc.categories == [["0", "1"]]
    assert enc.transform(out.load_split("test")).tolist() == [[0, 1], [0, 0]]
    old = MetadataEncoder.from_state(dict(enc.state(), categories=[["0.0", "1.0"]]))  # a fit on float-read codes
    assert old.transform(out.load_split("test")).tolist() == [[0, 1], [0, 0]]


def test_resume_with_swa_and_a_plateau_schedule_is_bit_identical(toy, tmp_path):
    """The stochastic weight average and ReduceLROnPlateau are part of the resumable state."""
    cfg, comp, data, table = toy
    cfg = dict(cfg, scheduler={"name": "plateau", "params": {"patience": 0, "factor": 0.5}},
               train={**cfg["train"], "swa": {"start": 0.25}})

    def run(log=lambda *_: None, **kw):
        return train_fold(cfg, comp, data, table, 0, torch.device("cpu"), log, **kw)

    ref_ckpt, ref_info, ref_probs, ref_hist = run()
    state = tmp_path / "fold0.state.pt"

    def interrupt(line):
        if " epoch  3/4 " in line:
            raise _Stop
    with pytest.raises(_Stop):
        run(interrupt, state_path=state, state_key="k")
    ckpt, info, probs, hist = run(state_path=state, state_key="k")
    assert info["resumed_from_epoch"] == 3 and info["swa"] == ref_info["swa"] and info["swa"]["epochs_averaged"] == 4
    assert np.array_equal(probs, ref_probs) and _strip(hist) == _strip(ref_hist)
    assert all(torch.equal(ckpt["state_dict"][k], v) for k, v in ref_ckpt["state_dict"].items())


def test_epochs_are_validated_in_the_training_precision_and_the_oof_predicted_as_the_test_set(toy, monkeypatch):
    """On a CPU that trains in bfloat16 (made to here, so that the test runs on any CPU) every
    epoch is validated in bfloat16, a third of float32's cost; the kept epoch's OOF predictions
    are made again in float32 with the experiment's TTA, as 03 predicts the test set: they equal
    a float32 prediction of the fold's checkpoint, and differ from a bfloat16 one."""
    from lib.core import device as device_module
    from lib.data import tasks
    from lib.inference.predict import predict_recordings, tta_active
    from lib.models import build_model

    monkeypatch.setattr(device_module, "cpu_bf16", lambda: True)
    calls, predict = [], loop.predict_recordings

    def spy(*a, **k):
        calls.append(k.get("amp"))
        return predict(*a, **k)
    monkeypatch.setattr(loop, "predict_recordings", spy)
    cfg, comp, data, table = toy
    lines = []
    ckpt, info, probs, history = _train(toy, lines.append)
    tta = [None] if tta_active(cfg["tta"]) else []  # the waveform toy predicts with test-time augmentation
    assert calls == [True] * len(history) + [None] + tta  # every epoch in the training dtype, the OOF again
    again = [line for line in lines if line.startswith(f"fold 0: epoch {info['best_epoch']} predicted again in float32")]
    assert len(again) == 1 and "validated in bfloat16" in again[0]

    model = build_model(cfg["model"], data.manifest, tasks.n_outputs(comp), ckpt["n_scalars"], cfg.get("frontend"))
    model.load_state_dict(ckpt["state_dict"])
    valid = np.flatnonzero(table["fold"].to_numpy() == 0)
    np.testing.assert_allclose(probs, predict_recordings(model, data, valid, comp, cfg["tta"])[0], rtol=0, atol=1e-6)
    low = predict_recordings(model, data, valid, comp, cfg["tta"], amp=True)[0]
    assert np.abs(low - probs).max() > 1e-4  # the two precisions differ on this model


def test_ema_is_the_warm_up_average_and_keeps_unchanged_tensors_exactly():
    """:func:`ema_multi_avg_fn` against the formula written out: ``averaged + (1 - d) (current -
    averaged)``, ``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates; a constant buffer
    (a front end's filterbank) stays bit-identical, BatchNorm's integer counter is copied."""
    from torch.optim.swa_utils import AveragedModel

    from lib.training.ema import ema_multi_avg_fn

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    model.register_buffer("constant", torch.randn(5))
    ema = AveragedModel(model, multi_avg_fn=ema_multi_avg_fn(0.9), use_buffers=True)
    ema.update_parameters(model)  # the first update copies
    ref = {k: v.clone() for k, v in model.state_dict().items()}
    for n in range(1, 8):
        with torch.no_grad():
            model[0].weight.add_(torch.randn(2, 3))
            model(torch.randn(4, 3))  # training mode: BatchNorm's running statistics and counter move
        ema.update_parameters(model)
        d = min(0.9, (1 + n) / (10 + n))
        ref = {k: v.clone() if not v.is_floating_point() else ref[k] + (1 - d) * (v - ref[k])
               for k, v in model.state_dict().items()}
    got = ema.module.state_dict()
    for k, v in ref.items():
        assert torch.allclose(got[k], v, rtol=0, atol=1e-6) if v.is_floating_point() else torch.equal(got[k], v), k
    assert torch.equal(got["constant"], model.constant) and int(got["1.num_batches_tracked"]) == 7
    assert not torch.allclose(got["0.weight"], model[0].weight)  # an average, not a copy


def test_non_finite_oof_predictions_made_again_stop_the_fold(toy, monkeypatch):
    """The kept epoch's OOF predictions made again in float32 are checked as every validation
    is: non-finite ones raise, naming the fold and epoch, and reach no metric or file."""
    from lib.core import device as device_module

    monkeypatch.setattr(device_module, "cpu_bf16", lambda: True)
    predict = loop.predict_recordings

    def nan_in_float32(*a, **k):
        probs, logits, windows = predict(*a, **k)
        return (probs * np.nan, logits * np.nan, windows) if k.get("amp") is None else (probs, logits, windows)
    monkeypatch.setattr(loop, "predict_recordings", nan_in_float32)
    with pytest.raises(TrainingError, match=r"fold 0: epoch \d+ predicted again in float32: non-finite OOF predictions"):
        _train(toy)
