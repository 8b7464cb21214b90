"""Stage 03 core: predict the test set with every fold model and average the probabilities."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..core.paths import MissingArtifact, Outputs
from ..core.utils import fingerprint, get_device, read_json, write_csv, write_json
from ..data import tasks
from ..data.windows import WindowData
from ..models import build_model
from ..training.precision import place_model
from .predict import predict_recordings


def load_fold_models(out: Outputs, exp: str, device) -> tuple[dict, list[tuple[dict, torch.nn.Module]]]:
    """Load the fold models of the last training run of ``exp`` (the folds its ``scores.json`` lists).

    Returns ``(scores, [(checkpoint, model in eval mode), ...])``; a checkpoint holds the fold,
    the metadata encoder fitted on its training rows and the input settings. Raises
    ``MissingArtifact`` naming ``02_train.py`` when the experiment has not been trained.
    """
    scores = read_json(out.model_dir(exp) / "scores.json")
    if scores is None:
        raise MissingArtifact(f"{out.model_dir(exp)}: no trained models: run 02_train.py for {exp} first")
    models = []
    for fold in (f["fold"] for f in scores["folds"]):
        ckpt = torch.load(out.require(out.model_dir(exp) / f"fold{fold}.pt", f"02_train.py for {exp}"),
                          map_location="cpu", weights_only=False)
        model = build_model(ckpt["model"], ckpt["manifest"], tasks.n_outputs(ckpt["comp"]), ckpt["n_scalars"])
        model.load_state_dict(ckpt.pop("state_dict"))
        place_model(model, device)
        models.append((ckpt, model.eval()))
    return scores, models


def infer_experiment(cfg: dict, out: Outputs, force: bool = False) -> dict:
    """Predict the test set with every fold model of ``cfg`` and average the probabilities.

    Each model predicts every window of each test recording; windows are aggregated per
    recording (``audio.aggregate``), then the folds' recording probabilities are averaged.
    Writes ``preds/<exp>.csv`` (id, fold = -1, ``p_<class>`` ...) in ``test.csv`` order, and
    ``preds/<exp>.json`` (the folds used, mean probabilities, a fingerprint of models and features).
    Returns a summary dict (``skipped`` when the predictions are up to date; ``no_test`` when the
    competition has no test set, in which case nothing is written).
    """
    comp = out.load_competition()
    if not out.test.exists():
        return {"experiment": cfg["name"], "no_test": True, "skipped": True}
    test_df = out.load_split("test")
    device = get_device(cfg["train"]["device"])
    trained, models = load_fold_models(out, cfg["name"], device)
    # the feature set and inputs the models were trained on (a --set at training time included)
    inputs = trained["config"].get("inputs", {"audio_scalars": True})
    data = WindowData.load(out, trained["config"]["features"]["set"], "test", test_df, comp, device,
                           inputs["audio_scalars"])
    key = fingerprint(trained["fingerprint"], data.manifest["fingerprint"], fingerprint(test_df.values.tolist()))
    marker = out.preds(cfg["name"]).with_suffix(".json")
    if not force and out.preds(cfg["name"]).exists() and (read_json(marker) or {}).get("fingerprint") == key:
        return dict(read_json(marker), skipped=True)
    probs = np.zeros((len(test_df), len(comp["classes"])))
    recs = np.arange(len(test_df))
    for ckpt, model in tqdm(models, desc=f"{cfg['name']} test", unit="fold", leave=False):
        data.set_metadata(ckpt.get("metadata_encoder"), test_df)
        probs += predict_recordings(model, data, recs, comp)[0] / len(models)
    preds = pd.DataFrame({"id": test_df["id"], "fold": -1})
    preds[tasks.prob_columns(comp)] = probs
    summary = {"experiment": cfg["name"], "rows": len(preds), "windows": len(data.rec), "folds": [m[0]["fold"] for m in models],
               "mean_probs": {c: round(float(p), 4) for c, p in zip(tasks.prob_columns(comp), probs.mean(0))}, "fingerprint": key}
    write_csv(out.preds(cfg["name"]), preds)
    write_json(marker, summary)
    return dict(summary, skipped=False)
