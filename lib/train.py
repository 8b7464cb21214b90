"""Stage 02 core: k-fold training with early stopping, out-of-fold predictions, prediction.

One model per fold: AdamW, linear warm-up then cosine decay (per step), the loss on logits,
Mixup/CutMix/SpecAugment from the config, gradient clipping, an exponential moving average (EMA)
of the weights (``train.ema``, the decay per step; ``null`` turns it off) that is what gets
validated and kept, early stopping on the validation fold's competition metric (ties broken by
the lower validation loss), the best epoch's weights kept; a fixed seed per fold; automatic
mixed precision on CUDA. Each epoch sees one fresh random window of every training recording;
validation predicts every window and scores recordings (:mod:`lib.data`). Optional class
weights in the loss or a class-balanced sampler (``train.class_weights``, ``train.sampler``).
"""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import confusion_matrix
from tqdm.auto import tqdm

from . import tasks
from .augment import Augmenter
from .config import ConfigError, Registry
from .data import WindowData, aggregate, metadata_columns, metadata_encoder
from .losses import balanced_class_weight, build_loss
from .metrics import score_all
from .models import build_model, count_parameters
from .paths import Outputs
from .utils import (
    atomic_path,
    fingerprint,
    format_seconds,
    get_device,
    read_json,
    seed_everything,
    write_csv,
    write_json,
)

OPTIMIZERS = Registry("optimizer")
OPTIMIZERS.register("adamw")(torch.optim.AdamW)
OPTIMIZERS.register("adam")(torch.optim.Adam)
OPTIMIZERS.register("sgd")(torch.optim.SGD)
SCHEDULERS = Registry("scheduler")
FORMAT_VERSION = 3


@SCHEDULERS.register("warmup_cosine")
def warmup_cosine(optimizer, steps_per_epoch: int, epochs: int, warmup_epochs: float = 1.0, min_lr_ratio: float = 0.01):
    """Per-step LR: linear warm-up from 0 over ``warmup_epochs``, then cosine decay to
    ``min_lr_ratio`` x the base LR at the last step. Returns a ``LambdaLR``."""
    total, warm = max(1, steps_per_epoch * epochs), int(steps_per_epoch * warmup_epochs)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, total - warm)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


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


def ema_avg_fn(decay: float):
    """EMA update for ``torch.optim.swa_utils.AveragedModel`` with a warm-up of the decay:
    ``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates (as timm's ``ModelEma`` and
    TensorFlow's ``ExponentialMovingAverage(num_updates=...)``), so that short runs on small data
    are not dominated by the initial weights."""
    def avg(averaged: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        d = ((1 + n) / (10 + n)).clamp(max=decay).to(averaged.dtype)
        return d * averaged + (1 - d) * current
    return avg


def cpu_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX instructions, e.g. Intel
    Xeon from Cooper/Sapphire Rapids on). Elsewhere bfloat16 is emulated and slower than float32."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # private helpers of torch >= 2.3
        return False


def autocast(device, enabled: bool = True, training: bool = True):
    """Mixed-precision context: bfloat16 autocast on CUDA (float16 where bf16 is unsupported);
    on a CPU that computes bfloat16 natively (:func:`cpu_bf16`) for ``training`` only (1.8-3.2x
    faster training steps on a 2-core Xeon with AMX, ``bench/train.py``; CPU predictions stay
    float32, since bfloat16 logits would tie close predictions); float32 otherwise or when not
    ``enabled``."""
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled and training and device.type == "cpu" and cpu_bf16())


def place_model(model: torch.nn.Module, device, compile: bool = False):
    """Move ``model`` to ``device`` in the channels-last memory format (in place: cuDNN's NHWC
    tensor-core kernels on CUDA, oneDNN's faster NHWC convolutions on the CPU) and return the
    callable to train with: the model, or ``torch.compile(model)`` when ``compile`` (the weights
    stay shared with ``model``)."""
    model.to(device, memory_format=torch.channels_last)
    return torch.compile(model) if compile else model


def train_step(forward, model, opt, loss_fn, scaler, spec, scalars, target, device, amp: bool = True,
               grad_clip: float = 5.0) -> torch.Tensor:
    """One optimisation step on a batch (``spec (B, C, F, T)``, ``scalars (B, S)``, ``target
    (B, n_outputs)``): autocast forward through ``forward`` (``model`` or its compiled form),
    backward through the (possibly no-op) ``GradScaler``, gradient clipping of ``model``'s
    parameters to norm ``grad_clip``, optimiser step. Returns the detached loss on the device
    (reading it is the only host synchronisation, left to the caller)."""
    with autocast(device, amp):
        loss = loss_fn(forward(spec, scalars), target)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(opt)
    scaler.update()
    return loss.detach()


@torch.no_grad()
def predict_logits(model, data: WindowData, windows: np.ndarray, batch_size: int = 256) -> torch.Tensor:
    """Logits ``(windows, n_outputs)`` (float32, CPU) of the given windows, every one kept
    (:func:`autocast` for inference: float32 on the CPU)."""
    model.eval()
    device = next(model.parameters()).device
    out = [torch.zeros(0, model.head[-1].out_features)]
    for i in range(0, len(windows), batch_size):
        with autocast(device, training=False):
            out.append(model(*data.batch(windows[i:i + batch_size], device)).float().cpu())
    return torch.cat(out)


def predict_recordings(model, data: WindowData, recs: np.ndarray, comp: dict) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
    """Predict every window of the recordings ``recs`` ``(n,)`` and aggregate them per recording
    (``audio.aggregate``). Returns ``(probs (n, n_classes), window logits (w, n_outputs),
    window indices (w,))``."""
    windows, owner = data.windows_of(recs)
    logits = predict_logits(model, data, windows)
    probs = aggregate(tasks.logits_to_probs(logits, comp), owner, len(recs), comp["audio"]["aggregate"], comp["task"])
    return probs, logits, windows


def train_fold(cfg: dict, comp: dict, data: WindowData, table: pd.DataFrame, fold: int, device, log=print):
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
        scores = score_all(comp["metrics"], y_va, probs)
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


def experiment_fingerprint(cfg: dict, folds_df: pd.DataFrame, manifest: dict, comp: dict) -> str:
    """Fingerprint of what a trained experiment depends on: config, folds (with metadata), feature
    cache, and the competition's task, classes, metrics, aggregation and metadata columns."""
    keys = ("task", "classes", "positive", "metric", "metrics", "metadata")
    return fingerprint(FORMAT_VERSION, cfg, folds_df.drop(columns=["path"]).values.tolist(), manifest["fingerprint"],
                       {k: comp.get(k) for k in keys}, comp["audio"]["aggregate"])


def train_experiment(cfg: dict, out: Outputs, force: bool = False, log=print) -> dict:
    """Train every fold of experiment ``cfg``; write checkpoints, OOF predictions, scores, log and plot.

    Writes ``models/<exp>/fold<k>.pt``, ``models/<exp>/scores.json``, ``models/<exp>/log.csv``,
    ``models/<exp>/curves.png`` and ``oof/<exp>.csv`` (id, fold, target, ``p_<class>`` ...).
    Returns the scores dict (with ``"skipped": True`` when an up-to-date result was reused).
    Raises ``MissingArtifact`` naming the stage to run when stage 00 or 01 outputs are missing.
    """
    comp = out.load_competition()
    folds_df = out.load_split("train")
    model_dir = out.model_dir(cfg["name"])
    device = get_device(cfg["train"]["device"])
    data = WindowData.load(out, cfg["features"]["set"], "train", folds_df, comp, device, cfg["inputs"]["audio_scalars"])
    key = experiment_fingerprint(cfg, folds_df, data.manifest, comp)
    old = read_json(model_dir / "scores.json")
    if old and old.get("fingerprint") == key and not force and out.oof(cfg["name"]).exists():
        return dict(old, skipped=True)
    fold_ids = [int(k) for k in (cfg["train"]["folds"] if cfg["train"]["folds"] is not None
                                 else sorted(folds_df["fold"].unique()))]
    folds = folds_df["fold"].to_numpy()
    meta_cols = sum(metadata_columns(comp), []) if cfg["inputs"]["metadata"] else []
    log(f"experiment {cfg['name']}: model {cfg['model']['name']}, features {cfg['features']['set']} "
        f"{data.manifest['spec_shape']} + {data.n_scalars} audio scalars"
        f"{' + metadata ' + str(meta_cols) if meta_cols else ''}; {len(folds_df)} recordings in {len(data.rec)} windows; "
        f"{len(fold_ids)} folds, device {device}")
    t0 = time.time()
    oof = np.full((len(folds_df), len(comp["classes"])), np.nan)
    infos, history = [], []
    for fold in fold_ids:
        ckpt, info, probs, hist = train_fold(cfg, comp, data, folds_df, fold, device, log)
        ckpt.update(model=cfg["model"], features=cfg["features"], inputs=cfg["inputs"], manifest=data.manifest,
                    comp={k: comp[k] for k in ("task", "classes", "positive") if k in comp}, **info)
        with atomic_path(model_dir / f"fold{fold}.pt") as tmp:
            torch.save(ckpt, tmp)
        oof[folds == fold] = probs
        infos.append(info)
        history += hist
        log(f"fold {fold}: best epoch {info['best_epoch']}  " +
            "  ".join(f"{m} {info[m]:.4f}" for m in comp["metrics"]) + f"  ({format_seconds(info['seconds'])})")
    done = np.isin(folds, fold_ids)
    oof_df = pd.DataFrame({"id": folds_df["id"], "fold": folds, "target": folds_df["target"]})
    oof_df[tasks.prob_columns(comp)] = oof
    oof_df = oof_df[done].reset_index(drop=True)
    y = tasks.class_index(oof_df["target"], comp)
    oof_probs = oof_df[tasks.prob_columns(comp)].to_numpy()
    overall = score_all(comp["metrics"], y, oof_probs)
    confusion = None if comp["task"] == "multilabel" else {"classes": comp["classes"], "rows_true_cols_pred":
                                                           confusion_matrix(y, oof_probs.argmax(1), labels=range(len(comp["classes"]))).tolist()}
    per_fold = pd.DataFrame(infos)
    scores = {
        "experiment": cfg["name"], "metric": comp["metric"], "oof": overall,
        "fold_mean": per_fold[comp["metrics"]].mean().to_dict(), "fold_std": per_fold[comp["metrics"]].std().to_dict(),
        "folds": infos, "confusion": confusion,
        "n_parameters": ckpt["n_parameters"], "device": str(device), "seconds": time.time() - t0,
        "fingerprint": key, "config": cfg,
    }
    write_csv(model_dir / "log.csv", pd.DataFrame(history))
    write_csv(out.oof(cfg["name"]), oof_df)
    plot_history(pd.DataFrame(history), comp["metric"], model_dir / "curves.png", cfg["name"])
    write_json(model_dir / "scores.json", scores)
    return dict(scores, skipped=False)


def plot_history(history: pd.DataFrame, metric: str, path: Path, title: str) -> None:
    """Save loss and metric curves per fold (one line per fold) to a PNG; no-op without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plots are a convenience, not a requirement
        return
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for fold, h in history.groupby("fold"):
        axes[0].plot(h["epoch"], h["train_loss"], label=f"fold {fold}")
        axes[1].plot(h["epoch"], h["valid_loss"], label=f"fold {fold}")
        axes[2].plot(h["epoch"], h[metric], label=f"fold {fold}")
    for ax, name in zip(axes, ["train loss", "validation loss", f"validation {metric}"]):
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[2].legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
