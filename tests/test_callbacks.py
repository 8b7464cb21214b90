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
from lib.core.device import training_dtype
from lib.core.paths import Outputs
from lib.data.prepare import prepare
from lib.features.cache import build_feature_set
from lib.inputs import load_inputs
from lib.training.callbacks import EarlyStopping, ResumeState, epochs_of, improves, smoothed
from lib.training.loop import train_fold

COMP = {"metric": "accuracy", "task": "binary"}


def _replay(history: list[dict], patience, monitor: str = "accuracy", min_epochs=0, window: int = 1,
            epochs: int | None = None, partial_windows_compete: bool = False):
    """Feed a recorded history (rows with the monitored metric and valid_loss) to EarlyStopping
    as the trainer does (``partial_windows_compete``: as it did before the first full smoothing
    window displaced the best epoch); returns (epochs it lets run, best epoch)."""
    stopper, best = EarlyStopping(patience, monitor, min_epochs, epochs), None
    trainer = SimpleNamespace(state=SimpleNamespace(epoch=0))
    for i, row in enumerate(history):
        value, full = smoothed(history[:i], row[monitor], monitor, window), i + 1 >= window or partial_windows_compete
        scores = {monitor: value}
        improved = improves(best, scores, row["valid_loss"], monitor, COMP, full)
        if improved:
            best = {"epoch": row["epoch"], "scores": {monitor: row[monitor]}, "valid_loss": row["valid_loss"],
                    "monitor": value, "full": full}
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


def test_a_lucky_first_epoch_is_not_kept_before_the_smoothing_window_is_full():
    """A real fold (heart-sound, `wave_long` at seed 43, fold 1: MAcc at p = 0.5 per epoch): the
    untrained network's first epoch scores 0.759 by luck, then the real rise starts. When a mean
    of one epoch could compete with means of three, epoch 1 stayed best and the fold stopped at
    min_epochs (10) with it; now the first full window (epoch 3) displaces it and the fold goes on."""
    macc = [0.759, 0.710, 0.689, 0.700, 0.717, 0.684, 0.687, 0.730, 0.773, 0.725, 0.74, 0.76, 0.77, 0.78, 0.78]
    history = [{"epoch": e + 1, "macc": m, "valid_loss": 0.65} for e, m in enumerate(macc)]
    assert _replay(history, 8, "macc", min_epochs=10, window=3, epochs=20) == (15, 15)  # no stop; best the last
    assert _replay(history, 8, "macc", min_epochs=10, window=3, epochs=20, partial_windows_compete=True) == (10, 1)
    best = {"epoch": 1, "scores": {"macc": 0.9}, "valid_loss": 0.1, "monitor": 0.9, "full": False}
    assert improves(best, {"macc": 0.5}, 0.9, "macc", COMP)  # a full window beats a partial one
    assert not improves(best, {"macc": 0.5}, 0.9, "macc", COMP, full=False)
    assert not improves({**best, "full": True}, {"macc": 0.5}, 0.9, "macc", COMP)


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
    trainer = SimpleNamespace(fold=0, log=lines.append, resume_from=None, device=torch.device("cpu"),
                              parts=SimpleNamespace(amp=True))  # as train_fold's own (train.amp, not compiled)
    ResumeState(state, "b").on_setup(trainer)  # another run's state: ignored, said so
    assert trainer.resume_from is None and "ignoring" in lines[-1]
    ResumeState(state, "a").on_setup(trainer)
    assert trainer.resume_from["epoch"] == 2 and "resuming after epoch 2" in lines[-1]
    again = train_fold(cfg, comp, data, table, 0, torch.device("cpu"), log=lines.append, state_path=state, state_key="a")
    assert again[1]["resumed_from_epoch"] == 2 and again[3] == first[3]  # nothing left to train: the same history
    np.testing.assert_array_equal(again[2], first[2])
    # saved with other threads (OMP_NUM_THREADS changed between the runs): the mix would equal no
    # uninterrupted run, so the fold starts over (probe: resumed, and matched neither run)
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)
    try:
        other = train_fold(cfg, comp, data, table, 0, torch.device("cpu"), log=lines.append, state_path=state,
                           state_key="a")
    finally:
        torch.set_num_threads(threads)
    assert other[1]["resumed_from_epoch"] == 0 and any(
        f"starting over: its 2 saved epoch(s) were trained with cpu, {training_dtype('cpu', True)}, "
        f"{threads} thread(s), this run trains with" in line for line in lines)


def test_ties_within_tolerance_go_to_the_lower_loss_and_undefined_values_never_win():
    """Smoothed means of the same values in another order differ in the last bit: still a tie,
    decided by the validation loss. A NaN metric (undefined on a fold) never beats a defined one,
    is beaten by any, and is left out of the trailing mean."""
    a = float(np.mean([0.1, 0.7, 0.2]))
    b = float(np.mean([0.7, 0.2, 0.1]))
    best = {"scores": {"accuracy": 0.5}, "monitor": a, "valid_loss": 0.5}
    assert improves(best, {"accuracy": b}, 0.4, "accuracy", COMP)
    assert not improves(best, {"accuracy": b}, 0.6, "accuracy", COMP)
    assert not improves(best, {"accuracy": float("nan")}, 0.1, "accuracy", COMP)
    nan_best = {"scores": {"accuracy": float("nan")}, "valid_loss": 0.5}
    assert improves(nan_best, {"accuracy": 0.1}, 0.9, "accuracy", COMP)
    assert improves(nan_best, {"accuracy": float("nan")}, 0.4, "accuracy", COMP)
    assert not improves(nan_best, {"accuracy": float("nan")}, 0.6, "accuracy", COMP)
    history = [{"accuracy": 0.5}, {"accuracy": float("nan")}]
    assert smoothed(history, 0.7, "accuracy", 3) == pytest.approx(0.6)
    assert np.isnan(smoothed(history[1:], float("nan"), "accuracy", 2))


class _Stop(KeyboardInterrupt):
    pass


def test_an_early_stopped_fold_resumed_mid_patience_stops_where_the_uninterrupted_one_did(tiny, tmp_path, monkeypatch):
    """A real fold that stops early, interrupted after an epoch without gain (its early-stopping
    counter ``wait`` > 0, saved in the resume state) and resumed: the same stopping epoch, best
    epoch, history and kept weights as without the interruption. Without restoring ``wait`` the
    resumed fold would run longer: the test sees the counter."""
    cfg, comp, data, table, _ = tiny
    runs = {f: train_fold(cfg, comp, data, table, f, torch.device("cpu"), log=lambda *_: None) for f in (0, 1)}
    fold = min(runs, key=lambda f: runs[f][1]["epochs_run"])
    ref_ckpt, ref_info, ref_probs, ref_hist = runs[fold]
    stop = ref_info["epochs_run"]
    assert stop < cfg["train"]["epochs"] and stop >= epochs_of(cfg["train"]["min_epochs"], cfg["train"]["epochs"])
    state, at = tmp_path / "fold.state.pt", stop - 1  # after the epoch before the stop: wait is patience - 1

    def interrupted(fresh: bool):
        def log(line):
            if f" epoch {at:>2}/" in line:
                raise _Stop
        if fresh:
            state.unlink(missing_ok=True)
        with pytest.raises(_Stop):
            train_fold(cfg, comp, data, table, fold, torch.device("cpu"), log, state_path=state, state_key="k")
        return torch.load(state, weights_only=True)

    saved = interrupted(fresh=True)
    assert saved["epoch"] == at and saved["parts"]["early_stopping"]["wait"] >= 1
    assert saved["best"]["epoch"] == ref_info["best_epoch"] and "monitor" in saved["best"]
    ckpt, info, probs, hist = train_fold(cfg, comp, data, table, fold, torch.device("cpu"), log=lambda *_: None,
                                         state_path=state, state_key="k")
    assert info["resumed_from_epoch"] == at
    assert (info["epochs_run"], info["best_epoch"]) == (stop, ref_info["best_epoch"])
    assert _strip(hist) == _strip(ref_hist) and np.array_equal(probs, ref_probs)
    assert all(torch.equal(ckpt["state_dict"][k], v) for k, v in ref_ckpt["state_dict"].items())
    # the counter is what makes it stop there: a resume that forgets it trains on
    interrupted(fresh=True)
    monkeypatch.setattr(EarlyStopping, "load_state_dict", lambda self, s: None)
    _, forgetful, _, _ = train_fold(cfg, comp, data, table, fold, torch.device("cpu"), log=lambda *_: None,
                                    state_path=state, state_key="k")
    assert forgetful["epochs_run"] > stop


def _strip(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]
