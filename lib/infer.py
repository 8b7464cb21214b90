"""Stage 03 core: predict the test set with every fold model and average the probabilities."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import tasks
from .models import build_model
from .paths import MissingArtifact, Outputs
from .train import FeatureData, predict_logits
from .utils import fingerprint, get_device, read_json, write_csv, write_json


def load_fold_models(out: Outputs, exp: str, device) -> list[tuple[int, torch.nn.Module, dict]]:
    """Load every ``fold<k>.pt`` of an experiment: list of ``(fold, model in eval mode, checkpoint)``.

    Raises ``MissingArtifact`` naming ``02_train.py`` when there is none.
    """
    paths = sorted(out.model_dir(exp).glob("fold*.pt"), key=lambda p: int(p.stem[4:]))
    if not paths:
        raise MissingArtifact(f"{out.model_dir(exp)}: no fold models: run 02_train.py for {exp} first")
    models = []
    for p in paths:
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
        model = build_model(ckpt["model"], ckpt["manifest"], tasks.n_outputs(ckpt["comp"]))
        model.load_state_dict(ckpt["state_dict"])
        models.append((ckpt["fold"], model.to(device).eval(), ckpt))
    return models


def infer_experiment(cfg: dict, out: Outputs, force: bool = False, log=print) -> dict:
    """Predict the test set with every fold model of ``cfg`` and average the probabilities.

    Writes ``preds/<exp>.csv`` (id, fold = -1, ``p_<class>`` ...) in ``test.csv`` order.
    Returns a summary dict (``skipped`` when the predictions are up to date).
    """
    comp = out.load_competition()
    test_df = out.load_split("test")
    device = get_device(cfg["train"]["device"])
    models = load_fold_models(out, cfg["name"], device)
    data = FeatureData.load(out, cfg["features"]["set"], "test", test_df, comp, device)
    trained = read_json(out.model_dir(cfg["name"]) / "scores.json") or {}
    key = fingerprint(trained.get("fingerprint"), [m[0] for m in models], data.manifest["fingerprint"])
    marker = out.preds(cfg["name"]).with_suffix(".json")
    if not force and out.preds(cfg["name"]).exists() and (read_json(marker) or {}).get("fingerprint") == key:
        return dict(read_json(marker), skipped=True)
    probs = np.zeros((len(test_df), len(comp["classes"])))
    for fold, model, _ in tqdm(models, desc=f"{cfg['name']} test", unit="fold", leave=False):
        probs += tasks.logits_to_probs(predict_logits(model, data.spec, data.scalars), comp) / len(models)
    preds = pd.DataFrame({"id": test_df["id"], "fold": -1})
    preds[tasks.prob_columns(comp)] = probs
    summary = {"experiment": cfg["name"], "rows": len(preds), "folds": [m[0] for m in models],
               "mean_probs": dict(zip(tasks.prob_columns(comp), probs.mean(0).round(4))), "fingerprint": key}
    write_csv(out.preds(cfg["name"]), preds)
    write_json(marker, summary)
    return dict(summary, skipped=False)
