"""The training loop of one fold: early stopping on the competition metric, best epoch kept.

One model per fold: AdamW, linear warm-up then cosine decay (per step), the loss on logits,
Mixup/CutMix/SpecAugment from the config, gradient clipping, an exponential moving average (EMA)
of the weights (``train.ema``, the decay per step; ``null`` turns it off) that is what gets
validated and kept, early stopping on the validation fold's competition metric (ties broken by
the lower validation loss), the best epoch's weights kept; a fixed seed per fold; automatic
mixed precision on CUDA. Each epoch sees one fresh random window of every training recording;
validation predicts every window and scores recordings (:mod:`lib.data.windows`). Optional class
weights in the loss or a class-balanced sampler (``train.class_weights``, ``train.sampler``).
"""
from __future__ import annotations

import copy
import math
import time

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..core.config import ConfigError
from ..core.utils import seed_everything
from ..data import tasks
from ..data.metadata import metadata_encoder
from ..data.windows import WindowData
from ..evaluation.metrics import score_all
from ..inference.predict import predict_recordings
from ..models import build_model, count_parameters
from .augment import Augmenter
from .ema import ema_avg_fn
from .losses import balanced_class_weight, build_loss
from .optim import OPTIMIZERS, SCHEDULERS
from .precision import autocast, place_model


def input_stats(data: WindowData, windows: np.ndarray, chunk: int = 512):
    """Per-channel mean/std ``(C,)`` of the spectrograms of ``windows`` and per-column mean/std
    ``(S,)`` of their scalar inputs (``None`` when there are none), accumulated in chunks
    (float64) so memory stays small."""
    s = s2 = 0.0
    n = 0
    scalars = []
    for i in range(0, len(windows), chunk):
        x, sc = data.batch(windows[i:i + chunk], data.spec.device)
        x = x.double()
        s = s + x.sum((0, 2, 3))
        s2 = s2 + (x * x).sum((0, 2, 3))
        n += x.numel() // x.shape[1]
        scalars.append(sc.double())
    mean = s / n
    std = (s2 / n - mean ** 2).clamp_min(0).sqrt()
    sc = torch.cat(scalars)
    if sc.shape[1] == 0:
        return mean.float(), std.float(), None, None
    return mean.float(), std.float(), sc.mean(0).float(), sc.std(0).nan_to_num(1.0).float()


def epoch_recordings(recs: np.ndarray, y: np.ndarray, sampler: str | None, rng: np.random.Generator) -> np.ndarray:
    """The training recordings of one epoch, in order: a permutation of ``recs`` (``sampler:
    null``), or for ``balanced`` as many draws with replacement, each recording drawn with
    probability proportional to 1 / the size of its class (multi-label: of its rarest label;
    rows without labels form a class of their own). Raises ``ConfigError`` for another sampler."""
    if sampler is None:
        return rng.permutation(recs)
    if sampler != "balanced":
        raise ConfigError(f"train.sampler {sampler!r} is not null or balanced")
    onehot = y[recs] if y.ndim == 2 else np.eye(y.max() + 1)[y[recs]]
    onehot = np.column_stack([onehot, onehot.sum(1) == 0]).astype(float)
    w = (onehot / np.maximum(onehot.sum(0), 1)).max(1)
    return rng.choice(recs, size=len(recs), replace=True, p=w / w.sum())


def train_step(forward, model, opt, loss_fn, scaler, spec, scalars, target, device, amp: bool = True,
               grad_clip: float = 5.0) -> torch.Tensor:
    """One optimisation step on a batch (``spec (B, C, F, T)``, ``scalars (B, S)``, ``target
    (B, n_outputs)``): autocast forward through ``forward`` (``model`` or its compiled form),
    backward through the (possibly no-op) ``GradScaler``, gradient clipping of ``model``'s
    parameters to norm ``grad_clip``, optimiser step. Returns the detached loss on the device
    (reading it is the only host synchronisation, left to the caller)."""
    with autocast(device, amp):
        loss = loss_fn(forward(spec, scalars)["logits"], target)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(opt)
    scaler.update()
    return loss.detach()


def train_fold(cfg: dict, comp: dict, data: WindowData, table: pd.DataFrame, fold: int, device, log=print,
               state_path=None, state_key: str = ""):
    """Train one fold; returns ``(checkpoint, best_epoch_info, oof_probs (valid_recordings, n_classes), history)``.

    ``table`` is ``folds.csv``; its recordings of ``fold`` are the validation set. Each epoch
    draws one window per training recording (:func:`epoch_recordings` chooses the recordings);
    validation predicts every window and scores the aggregated recording probabilities.
    ``checkpoint`` holds the best weights, the metadata encoder fitted on the training rows and
    the input width. ``history`` is a list of per-epoch dicts (fold, epoch, lr, train_loss,
    valid_loss (per window), metrics (per recording), seconds).
    """
    tc = cfg["train"]
    seed_everything(tc["seed"] + fold)
    folds = table["fold"].to_numpy()
    tr_rec, va_rec = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
    encoder = metadata_encoder(comp, table, tr_rec) if cfg["inputs"]["metadata"] else None
    data.set_metadata(encoder, table)
    model = build_model(cfg["model"], data.manifest, tasks.n_outputs(comp), data.n_scalars)
    model.set_normalisation(*input_stats(data, data.windows_of(tr_rec)[0]))
    forward = place_model(model, device, tc.get("compile", False))
    class_weight = None
    if tc.get("class_weights") not in (None, "balanced"):
        raise ConfigError(f"train.class_weights {tc['class_weights']!r} is not null or balanced")
    if tc.get("class_weights"):
        class_weight = balanced_class_weight(data.target[torch.as_tensor(tr_rec)].cpu().numpy(), comp["task"])
    loss_fn = build_loss(cfg["loss"], comp["task"], class_weight).to(device)
    opt = OPTIMIZERS.build(cfg["optimizer"], params=model.parameters())
    steps = math.ceil(len(tr_rec) / tc["batch_size"])
    sched = SCHEDULERS.build(cfg["scheduler"], optimizer=opt, steps_per_epoch=steps, epochs=tc["epochs"])
    use_scaler = device.type == "cuda" and tc["amp"] and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    augment = Augmenter(cfg["augment"], seed=tc["seed"] + fold)
    ema = None
    if tc.get("ema"):  # validated and saved instead of the raw weights: smoother, usually better
        ema = torch.optim.swa_utils.AveragedModel(model, avg_fn=ema_avg_fn(tc["ema"]), use_buffers=True)
    kept = ema.module if ema is not None else model
    rng = np.random.default_rng(tc["seed"] + fold)
    monitor = comp["metric"]
    best, history, wait = None, [], 0
    y_va = data.y[va_rec]
    for epoch in range(1, tc["epochs"] + 1):
        t0 = time.time()
        model.train()
        order = data.sample_windows(epoch_recordings(tr_rec, data.y, tc.get("sampler"), rng), rng)
        total, seen = 0.0, 0
        for i in tqdm(range(0, len(order), tc["batch_size"]), desc=f"fold {fold} epoch {epoch}", leave=False, unit="batch"):
            w = order[i:i + tc["batch_size"]]
            spec, scalars = data.batch(w, device)
            spec, scalars, target = augment(spec, scalars, data.targets(w).to(device, non_blocking=True))
            loss = train_step(forward, model, opt, loss_fn, scaler, spec, scalars, target, device, tc["amp"], tc["grad_clip"])
            sched.step()
            if ema is not None:
                ema.update_parameters(model)
            total += loss * len(w)  # stays on the device: no host synchronisation until the epoch ends
            seen += len(w)
        probs, logits, windows = predict_recordings(kept, data, va_rec, comp)
        valid_loss = float(loss_fn(logits.to(device), data.targets(windows).to(device)))
        scores = score_all(comp["metrics"], y_va, probs, comp)
        row = {"fold": fold, "epoch": epoch, "lr": opt.param_groups[0]["lr"], "train_loss": float(total) / seen,
               "valid_loss": valid_loss, **scores, "seconds": time.time() - t0}
        history.append(row)
        improved = best is None or scores[monitor] > best["scores"][monitor] + 1e-12 or (
            scores[monitor] == best["scores"][monitor] and valid_loss < best["valid_loss"])
        if improved:
            best = {"epoch": epoch, "scores": scores, "valid_loss": valid_loss, "probs": probs,
                    "state": copy.deepcopy({k: v.detach().cpu() for k, v in kept.state_dict().items()})}
            wait = 0
        else:
            wait += 1
        log(f"fold {fold} epoch {epoch:>2}/{tc['epochs']}  train_loss {row['train_loss']:.4f}  "
            f"valid_loss {valid_loss:.4f}  " + "  ".join(f"{k} {v:.4f}" for k, v in scores.items())
            + f"  lr {row['lr']:.2e}  {row['seconds']:.1f}s" + ("  *" if improved else ""))
        if wait >= tc["patience"]:
            log(f"fold {fold}: early stop after epoch {epoch} (no {monitor} gain for {wait} epochs)")
            break
    info = {"fold": fold, "best_epoch": best["epoch"], "epochs_run": len(history), "valid_loss": best["valid_loss"],
            **best["scores"], "seconds": sum(h["seconds"] for h in history), "n_valid": len(va_rec)}
    ckpt = {"state_dict": best["state"], "n_scalars": data.n_scalars, "metadata_encoder": encoder,
            "n_parameters": count_parameters(model),
            "class_weight": None if class_weight is None else class_weight.tolist()}
    return ckpt, info, best["probs"], history

