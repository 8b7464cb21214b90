"""Stage 02 core: train every fold of an experiment; write checkpoints, OOF predictions, scores."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import confusion_matrix

from ..core.paths import Outputs
from ..core.utils import (
    atomic_path,
    fingerprint,
    format_seconds,
    get_device,
    read_json,
    write_csv,
    write_json,
)
from ..data import tasks
from ..data.metadata import metadata_columns
from ..data.windows import WindowData
from ..evaluation.metrics import score_all
from ..evaluation.reports import plot_history
from .loop import train_fold

FORMAT_VERSION = 3


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
    overall = score_all(comp["metrics"], y, oof_probs, comp)
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

