"""Stage 02 core: k-fold training with early stopping, out-of-fold predictions, prediction.

One model per fold: AdamW, linear warm-up then cosine decay (per step), the loss on logits,
Mixup/CutMix/SpecAugment from the config, gradient clipping, an exponential moving average (EMA)
of the weights (``train.ema``, the decay per step; ``null`` turns it off) that is what gets
validated and kept, early stopping on the validation fold's competition metric (ties broken by
the lower validation loss), the best epoch's weights kept; a fixed seed per fold; automatic
mixed precision on CUDA.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import confusion_matrix
from tqdm.auto import tqdm

from . import tasks
from .augment import Augmenter
from .config import Registry
from .features import load_features
from .losses import LOSSES
from .metrics import score_all
from .models import build_model, count_parameters
from .paths import Outputs
from .utils import atomic_path, fingerprint, format_seconds, get_device, read_json, seed_everything, write_csv, write_json

OPTIMIZERS = Registry("optimizer")
OPTIMIZERS.register("adamw")(torch.optim.AdamW)
OPTIMIZERS.register("adam")(torch.optim.Adam)
OPTIMIZERS.register("sgd")(torch.optim.SGD)
SCHEDULERS = Registry("scheduler")
FORMAT_VERSION = 2


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


@dataclass
class FeatureData:
    """One split's features in memory (on the training device): ``spec (rows, C, F, T)``,
    ``scalars (rows, S)`` and, for the training split, ``target (rows, n_outputs)`` and class
    indices ``y (rows,)``."""

    spec: torch.Tensor
    scalars: torch.Tensor
    manifest: dict
    y: np.ndarray | None = None
    target: torch.Tensor | None = None

    @classmethod
    def load(cls, out: Outputs, feature_set: str, split: str, table: pd.DataFrame, comp: dict, device) -> "FeatureData":
        """Read a cached split (checked against ``table``'s ids) onto ``device``."""
        spec, scalars, manifest = load_features(out, feature_set, split, ids=table["id"])
        data = cls(torch.from_numpy(np.array(spec)).to(device), torch.from_numpy(np.array(scalars)).to(device), manifest)
        if "target" in table:
            data.y = tasks.class_index(table["target"], comp)
            data.target = torch.from_numpy(tasks.encode_targets(data.y, comp)).to(device)
        return data


def channel_stats(spec: torch.Tensor, scalars: torch.Tensor, idx: np.ndarray, chunk: int = 512):
    """Per-channel mean/std ``(C,)`` of ``spec[idx]`` and per-column mean/std ``(S,)`` of
    ``scalars[idx]``, accumulated in chunks (float64) so memory stays small."""
    s = s2 = 0.0
    n = 0
    for i in range(0, len(idx), chunk):
        x = spec[torch.as_tensor(idx[i:i + chunk], device=spec.device)].double()
        s = s + x.sum((0, 2, 3))
        s2 = s2 + (x * x).sum((0, 2, 3))
        n += x.numel() // x.shape[1]
    mean = s / n
    std = (s2 / n - mean ** 2).clamp_min(0).sqrt()
    sc = scalars[torch.as_tensor(idx, device=scalars.device)].double()
    if sc.shape[1] == 0:
        return mean.float(), std.float(), None, None
    return mean.float(), std.float(), sc.mean(0).float(), sc.std(0).float()


def ema_avg_fn(decay: float):
    """EMA update for ``torch.optim.swa_utils.AveragedModel`` with a warm-up of the decay:
    ``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates (as timm's ``ModelEma`` and
    TensorFlow's ``ExponentialMovingAverage(num_updates=...)``), so that short runs on small data
    are not dominated by the initial weights."""
    def avg(averaged: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        d = ((1 + n) / (10 + n)).clamp(max=decay).to(averaged.dtype)
        return d * averaged + (1 - d) * current
    return avg


def autocast(device, enabled: bool = True):
    """Mixed-precision context: bfloat16 autocast on CUDA (float16 where bf16 is unsupported), none on CPU."""
    if device.type != "cuda" or not enabled:
        return torch.autocast(device.type, enabled=False)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


@torch.no_grad()
def predict_logits(model, spec: torch.Tensor, scalars: torch.Tensor, idx=None, batch_size: int = 256) -> torch.Tensor:
    """Logits ``(rows, n_outputs)`` (float32, CPU) for rows ``idx`` (default all), every row kept."""
    model.eval()
    device = next(model.parameters()).device
    idx = np.arange(len(spec)) if idx is None else np.asarray(idx)
    out = []
    for i in range(0, len(idx), batch_size):
        b = torch.as_tensor(idx[i:i + batch_size], device=spec.device)
        with autocast(device):
            out.append(model(spec[b].to(device, non_blocking=True), scalars[b].to(device, non_blocking=True)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 1)


def train_fold(cfg: dict, comp: dict, data: FeatureData, folds: np.ndarray, fold: int, device, log=print):
    """Train one fold; returns ``(best_state, best_epoch_info, oof_probs (valid_rows, n_classes), history)``.

    ``folds`` ``(rows,)`` holds each training row's fold; rows of ``fold`` are the validation set.
    ``history`` is a list of per-epoch dicts (fold, epoch, lr, train_loss, valid_loss, metrics, seconds).
    """
    tc = cfg["train"]
    seed_everything(tc["seed"] + fold)
    tr_idx, va_idx = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
    model = build_model(cfg["model"], data.manifest, tasks.n_outputs(comp))
    model.set_normalisation(*channel_stats(data.spec, data.scalars, tr_idx))
    model.to(device)
    loss_fn = LOSSES.build(cfg["loss"])
    opt = OPTIMIZERS.build(cfg["optimizer"], params=model.parameters())
    steps = math.ceil(len(tr_idx) / tc["batch_size"])
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
    y_va, t_va = data.y[va_idx], data.target[torch.as_tensor(va_idx, device=data.target.device)].to(device)
    for epoch in range(1, tc["epochs"] + 1):
        t0 = time.time()
        model.train()
        order = rng.permutation(tr_idx)
        total, seen = 0.0, 0
        for i in tqdm(range(0, len(order), tc["batch_size"]), desc=f"fold {fold} epoch {epoch}", leave=False, unit="batch"):
            b = torch.as_tensor(order[i:i + tc["batch_size"]], device=data.spec.device)
            spec, scalars, target = (t[b].to(device, non_blocking=True) for t in (data.spec, data.scalars, data.target))
            spec, scalars, target = augment(spec, scalars, target)
            with autocast(device, tc["amp"]):
                loss = loss_fn(model(spec, scalars), target)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc["grad_clip"])
            scaler.step(opt)
            scaler.update()
            sched.step()
            if ema is not None:
                ema.update_parameters(model)
            total += loss.detach() * len(b)
            seen += len(b)
        logits = predict_logits(kept, data.spec, data.scalars, va_idx)
        valid_loss = float(loss_fn(logits.to(device), t_va))
        probs = tasks.logits_to_probs(logits, comp)
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
            **best["scores"], "seconds": sum(h["seconds"] for h in history), "n_valid": len(va_idx)}
    return best["state"], info, best["probs"], history


def experiment_fingerprint(cfg: dict, folds_df: pd.DataFrame, manifest: dict) -> str:
    """Fingerprint of what a trained experiment depends on: config, folds and feature cache."""
    return fingerprint(FORMAT_VERSION, cfg, folds_df[["id", "target", "fold"]].values.tolist(), manifest["fingerprint"])


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
    data = FeatureData.load(out, cfg["features"]["set"], "train", folds_df, comp, device)
    key = experiment_fingerprint(cfg, folds_df, data.manifest)
    old = read_json(model_dir / "scores.json")
    if old and old.get("fingerprint") == key and not force and out.oof(cfg["name"]).exists():
        return dict(old, skipped=True)
    fold_ids = [int(k) for k in (cfg["train"]["folds"] if cfg["train"]["folds"] is not None
                                 else sorted(folds_df["fold"].unique()))]
    folds = folds_df["fold"].to_numpy()
    n_params = count_parameters(build_model(cfg["model"], data.manifest, tasks.n_outputs(comp)))
    log(f"experiment {cfg['name']}: model {cfg['model']['name']} ({n_params / 1e6:.2f} M parameters), "
        f"features {cfg['features']['set']} {data.manifest['spec_shape']} + {data.manifest['n_scalars']} scalars, "
        f"{len(fold_ids)} folds, device {device}")
    t0 = time.time()
    oof = np.full((len(folds_df), len(comp["classes"])), np.nan)
    infos, history = [], []
    for fold in fold_ids:
        state, info, probs, hist = train_fold(cfg, comp, data, folds, fold, device, log)
        ckpt = {"state_dict": state, "model": cfg["model"], "features": cfg["features"], "manifest": data.manifest,
                "comp": {k: comp[k] for k in ("task", "classes", "positive") if k in comp}, **info}
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
    confusion = confusion_matrix(y, oof_probs.argmax(1), labels=range(len(comp["classes"])))
    per_fold = pd.DataFrame(infos)
    scores = {
        "experiment": cfg["name"], "metric": comp["metric"], "oof": overall,
        "fold_mean": per_fold[comp["metrics"]].mean().to_dict(), "fold_std": per_fold[comp["metrics"]].std().to_dict(),
        "folds": infos, "confusion": {"classes": comp["classes"], "rows_true_cols_pred": confusion.tolist()},
        "n_parameters": n_params, "device": str(device), "seconds": time.time() - t0,
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
