"""Stage 02 for the scikit-learn members (:mod:`lib.models.classical`): one fit per fold, the
same inputs, outputs and files as a network's fold (:func:`lib.training.loop.train_fold`)."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from ..data import tasks
from ..inputs import SplitInputs
from ..evaluation.metrics import score_all
from ..inference.predict import predict_recordings
from .loop import fold_setup
from .losses import build_loss


def window_features(model, data: SplitInputs, items: np.ndarray, chunk: int = 512) -> np.ndarray:
    """``(len(items), n_features)`` float32: the model's pooled statistics and scalars of each window."""
    parts = [model.features(*data.batch(items[i:i + chunk], data.device)) for i in range(0, len(items), chunk)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def train_fold_classical(cfg: dict, comp: dict, data: SplitInputs, table: pd.DataFrame, fold: int, device, log=print,
                         state_path=None, state_key: str = ""):
    """Fit the scikit-learn member of ``cfg`` on every window of the training recordings of
    ``fold`` (each window labelled with its recording's target; grid-search folds grouped by
    recording) and predict the validation recordings as a network would (every window, the
    experiment's TTA, ``audio.aggregate``). Returns ``(checkpoint, info, oof_probs, history)``
    as :func:`lib.training.loop.train_fold`; the history is one row. ``train.class_weights:
    balanced`` goes to :meth:`lib.models.classical.ClassicalModel.fit` (the estimator's
    ``class_weight``, or a prior correction for gradient boosting); the optimiser, schedule,
    augmentation, EMA/SWA and epoch settings do not apply (a fit is not resumable: ``state_path``
    is unused, an interrupted fold is fitted again). A subdivided competition's member is fitted
    on the fine classes (:func:`lib.data.tasks.output_task`: multiclass) and its probabilities
    are merged back to the competition's classes as a network's are."""
    tc = cfg["train"]
    t0 = time.time()
    tr_rec, va_rec, encoder, model = fold_setup(cfg, comp, data, table, fold)
    model.to(data.device)
    items, owner = data.windows_of(tr_rec)
    X = window_features(model, data, items)
    target = data.targets(items).cpu().numpy()
    log(f"fold {fold}: fitting {cfg['model']['name']} on {X.shape[0]} windows x {X.shape[1]} features")
    # a subdivided competition's member learns the fine classes (multiclass) and its logits merge
    # back through lib.data.tasks.logits_to_probs like a network's
    model.fit(X, target, tr_rec[owner], tasks.output_task(comp), tc["seed"] + fold, tc["class_weights"], log)
    model.to(device)
    probs, logits, windows = predict_recordings(model, data, va_rec, comp, cfg["tta"])
    loss_fn = build_loss(cfg["loss"], comp)
    valid_loss = float(loss_fn(logits.mean(0), data.targets(windows).cpu()))
    train_loss = float(loss_fn(torch.as_tensor(model.logits(X)), torch.as_tensor(target)))
    scores = {k: float(v) for k, v in score_all(comp["metrics"], data.y[va_rec], probs, comp).items()}
    seconds = time.time() - t0
    log(f"fold {fold}: train_loss {train_loss:.4f}  valid_loss {valid_loss:.4f}  "
        + "  ".join(f"{k} {v:.4f}" for k, v in scores.items()) + f"  {seconds:.1f}s")
    history = [{"fold": fold, "epoch": 1, "lr": float("nan"), "train_loss": train_loss, "valid_loss": valid_loss,
                **scores, "bad_steps": 0, "seconds": seconds}]
    info = {"fold": fold, "best_epoch": 1, "epochs_run": 1, "valid_loss": valid_loss, **scores, "seconds": seconds,
            "n_valid": len(va_rec), "resumed_from_epoch": 0, "bad_steps": 0, "best_params": model.best_params}
    ckpt = {"state_dict": model.state_dict(), "n_scalars": data.n_scalars,
            "metadata_encoder": None if encoder is None else encoder.state(), "n_parameters": model.n_parameters(),
            "class_weight": None}
    return ckpt, info, probs, history
