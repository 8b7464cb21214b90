"""The fold trainer's callbacks alone (lib/training/callbacks.py): early stopping on a recorded
history, the resume state's key, TensorBoard's writer. Through the whole fold loop they are
exercised by tests/test_training.py (interrupted and resumed folds), test_training_options.py
(SWA) and test_reports.py (TensorBoard after a resume)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from conftest import make_toy_competition

from lib.components import load_experiment
from lib.core.paths import Outputs
from lib.data.prepare import prepare
from lib.features.cache import build_feature_set
from lib.inputs import load_inputs
from lib.training.callbacks import EarlyStopping, ResumeState, epochs_of, improves, smoothed
from lib.training.loop import train_fold

COMP = {"metric": "accuracy", "task": "binary"}


def _replay(history: list[dict], patience, monitor: str = "accuracy", min_epochs=0, window: int = 1,
            epochs: int | None = None):
    """Feed a recorded history (rows with the monitored metric and valid_loss) to EarlyStopping
    as the trainer does; returns (epochs it lets run, best epoch)."""
    stopper, best = EarlyStopping(patience, monitor, min_epochs, epochs), None
    trainer = SimpleNamespace(state=SimpleNamespace(epoch=0))
    for i, row in enumerate(history):
        value = smoothed(history[:i], row[monitor], monitor, window)
        scores = {monitor: value}
        improved = improves(best, scores, row["valid_loss"], monitor, COMP)
        if improved:
            best = {"epoch": row["epoch"], "scores": {monitor: row[monitor]}, "valid_loss": row["valid_loss"],
                    "monitor": value}
        stopper.on_validation_end(trainer, scores, row["valid_loss"], improved)
        trainer.state.epoch = row["epoch"]
        if stopper.stop_reason(trainer):
            break
    return trainer.state.epoch, best["epoch"]


def test_early_stopping_counts_epochs_without_a_new_best():
    accuracy = [0.50, 0.60, 0.60, 0.55, 0.58, 0.70]
    loss = [0.70, 0.65, 0.60, 0.62, 0.61, 0.50]  # epoch 3 ties on accuracy with a lower loss: a new best
    history = [{"epoch": e + 1, "accuracy": a, "valid_loss": v} for e, (a, v) in enumerate(zip(accuracy, loss))]
    assert _replay(history, patience=2) == (5, 3)  # epochs 4 and 5 bring nothing: stop after 5
    assert _replay(history, patience=3) == (6, 6)  # epoch 6 comes in time
    stopper = EarlyStopping(2, "accuracy")
    stopper.load_state_dict({"wait": 2})  # as restored from a resume state
    assert stopper.stop_reason(SimpleNamespace(state=SimpleNamespace(epoch=7))) == \
        "early stop after epoch 7 (no accuracy gain for 2 epochs)"
    assert stopper.state_dict() == {"wait": 2} and "early_stopping" in stopper.state_parts()


def test_min_epochs_and_relative_patience_keep_a_noisy_fold_going():
    """A small fold's noisy curve: an early lucky epoch, a dip, then the real rise to epoch 24.
    The old rule (patience 4, from epoch 1, raw metric) stops at epoch 7; min_epochs 0.5 of 30
    alone holds it until epoch 15; with the defaults (min_epochs 0.5, patience 0.25 of 30 = 8
    epochs, a 3-epoch trailing mean) the fold reaches its real best."""
    rng = np.random.default_rng(0)
    acc = np.r_[0.55, 0.60, 0.72, 0.58, 0.60, 0.62, 0.61, np.linspace(0.62, 0.80, 17), np.full(6, 0.75)]
    acc = acc + rng.uniform(-0.005, 0.005, acc.size)
    history = [{"epoch": e + 1, "accuracy": a, "valid_loss": 1 - a} for e, a in enumerate(acc)]
    assert _replay(history, 4) == (7, 3)
    assert _replay(history, 0.25, min_epochs=0.5, epochs=30) == (15, 3)
    assert _replay(history, 0.25, min_epochs=0.5, window=3, epochs=30) == (30, 24)
    assert epochs_of(0.25, 30) == 8 and epochs_of(0.5, 25) == 13 and epochs_of(4, None) == 4
    with pytest.raises(ValueError, match="needs the number of epochs"):
        epochs_of(0.5, None)


def test_smoothing_does_not_crown_a_single_spike():
    """One lucky epoch (0.90 between 0.70s) wins on the raw metric; the 3-epoch trailing mean
    chooses an epoch of the later plateau; ties of the smoothed value go to the lower loss."""
    acc = [0.60, 0.70, 0.90, 0.70, 0.72, 0.80, 0.81, 0.81, 0.81]
    loss = [0.7, 0.6, 0.5, 0.6, 0.55, 0.5, 0.45, 0.44, 0.40]
    history = [{"epoch": e + 1, "accuracy": a, "valid_loss": v} for e, (a, v) in enumerate(zip(acc, loss))]
    assert _replay(history, 20)[1] == 3
    assert _replay(history, 20, window=3)[1] == 9  # 8 and 9 tie on the mean (0.81): the lower loss wins
    assert smoothed(history[:2], 0.9, "accuracy", 3) == pytest.approx((0.6 + 0.7 + 0.9) / 3)
    assert smoothed([], 0.9, "accuracy", 3) == 0.9 and smoothed(history, 0.5, "accuracy", 1) == 0.5


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("callbacks")
    out = Outputs(root / "out")
    prepare(make_toy_competition(root / "data", n=24), out.root)
    exp = {"features": {"name": "log_mel", "set": "lm16", "params": {"n_mels": 16, "n_fft": 512, "hop_length": 256}},
           "model": {"name": "cnn", "params": {"channels": [4, 8], "convs_per_block": 1, "head_hidden": 8}},
           "optimizer": {"name": "adamw", "params": {"lr": 0.3}},  # noisy on purpose: early stops happen
           "train": {"epochs": 12, "batch_size": 4, "patience": 2, "device": "cpu"}}
    (root / "exp.yaml").write_text(yaml.safe_dump(exp))
    cfg = load_experiment(root / "exp.yaml")
    build_feature_set(out, cfg["features"], workers=1)
    comp, table = out.load_competition(), out.load_split("train")
    return cfg, comp, load_inputs(out, cfg, "train", table, comp, torch.device("cpu")), table, root


def test_early_stopping_decides_as_the_recorded_run(tiny):
    """A real fold's history, replayed through the callback alone, stops where the fold stopped
    and keeps the same best epoch."""
    cfg, comp, data, table, _ = tiny
    runs = []
    for fold in (0, 1):
        _, info, _, history = train_fold(cfg, comp, data, table, fold, torch.device("cpu"), log=lambda *_: None)
        tc = cfg["train"]
        assert _replay(history, tc["patience"], comp["metric"], tc["min_epochs"], tc["smooth_epochs"], tc["epochs"]) \
            == (info["epochs_run"], info["best_epoch"])
        runs.append(info["epochs_run"])
    assert min(runs) < cfg["train"]["epochs"], runs  # at least one fold stopped early


def test_resume_state_starts_from_its_own_key_only(tiny, tmp_path):
    cfg, comp, data, table, _ = tiny
    state, lines = tmp_path / "fold0.state.pt", []
    cfg = dict(cfg, train=dict(cfg["train"], epochs=2, patience=5))
    first = train_fold(cfg, comp, data, table, 0, torch.device("cpu"), log=lines.append, state_path=state, state_key="a")
    assert state.exists() and torch.load(state, weights_only=True)["epoch"] == 2
    trainer = SimpleNamespace(fold=0, log=lines.append, resume_from=None)
    ResumeState(state, "b").on_setup(trainer)  # another run's state: ignored, said so
    assert trainer.resume_from is None and "ignoring" in lines[-1]
    ResumeState(state, "a").on_setup(trainer)
    assert trainer.resume_from["epoch"] == 2 and "resuming after epoch 2" in lines[-1]
    again = train_fold(cfg, comp, data, table, 0, torch.device("cpu"), log=lines.append, state_path=state, state_key="a")
    assert again[1]["resumed_from_epoch"] == 2 and again[3] == first[3]  # nothing left to train: the same history
    np.testing.assert_array_equal(again[2], first[2])
