"""Per-segment predictions of a competition whose rows are recordings made of segments
(``segments.unit: recording``, docs/segments.md): the fold models' probabilities of every
segment (its windows aggregated by ``audio.aggregate``), before ``segments.aggregate`` makes them
the recording's. Stage 02 writes the out-of-fold ones (``oof/<exp>.segments.csv``: each fold's
model on its own fold's recordings), stage 03 the test ones (``preds/<exp>.segments.csv``: the
mean over the fold models, and from the same pass the recordings' own); each file belongs to its
stage's record, as the recording-level file beside it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..core.config import segment_unit
from ..core.progress import progress
from ..data import tasks
from ..data.segments import regions
from ..inputs import aggregate
from .predict import predict_segments


def segment_file(recording_file: Path, comp: dict) -> Path | None:
    """Where the per-segment predictions go beside a recording-level file (``oof/<exp>.csv`` ->
    ``oof/<exp>.segments.csv``); ``None`` unless the competition's rows are recordings made of
    segments (``segments.unit: recording``)."""
    if segment_unit(comp) != "recording":
        return None
    return recording_file.with_name(f"{recording_file.stem}.segments.csv")


def segment_predictions(models, data, table: pd.DataFrame, comp: dict, tta: dict | None,
                        folds: np.ndarray | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """The segments' probabilities of the rows of ``table`` (``folds.csv``/``test.csv``, the rows
    of ``data``) and the rows' own, from one pass of each fold model over the windows.

    ``models``: ``[(checkpoint, model), ...]`` (:func:`lib.inference.infer.load_checkpoints`),
    each with its fold's metadata encoder; ``tta``: the experiment's test-time augmentation.
    ``folds`` ``(rows,)`` given: out-of-fold, each model predicting the rows of its checkpoint's
    fold (rows of other folds are left out); ``None``: every model predicts every row, the
    probabilities averaged, ``fold`` -1.

    Returns ``(segments, probs)``: a table with one row per segment, ``id`` (the recording's),
    ``segment`` (0, 1, ... within it), ``start_s``/``end_s`` (seconds), ``fold``, ``target``
    (when ``table`` has one) and ``p_<class>``, in the order of ``table`` and its segments; and
    the rows' probabilities ``(rows, n_classes)``, each model's segments aggregated by
    ``segments.aggregate`` (as :func:`lib.inference.predict.predict_recordings` does), then
    averaged over the models (zero for rows no model predicted)."""
    reg = regions(table)
    rows = reg[:, 0].astype(np.int64)
    n_classes = len(comp["classes"])
    probs, fold_of, rec_probs = np.zeros((len(reg), n_classes)), np.full(len(reg), -1), np.zeros((len(table), n_classes))
    for ckpt, model in progress(models, desc="segments", unit="fold", leave=False):
        recs = np.arange(len(table)) if folds is None else np.flatnonzero(folds == ckpt["fold"])
        data.set_metadata(ckpt.get("metadata_encoder"), table)
        idx, p = predict_segments(model, data, recs, comp, tta)
        share = 1 / len(models) if folds is None else 1.0
        probs[idx] += p * share
        fold_of[idx] = -1 if folds is None else ckpt["fold"]
        owner = np.searchsorted(recs, rows[idx])  # each segment's place in recs
        rec_probs[recs] += share * aggregate(p, owner, len(recs), comp["segments"]["aggregate"], comp)
    df = pd.DataFrame({"id": table["id"].to_numpy()[rows], "segment": np.arange(len(reg)) - np.searchsorted(rows, rows),
                       "start_s": reg[:, 1], "end_s": reg[:, 2], "fold": fold_of})
    if "target" in table:
        df["target"] = table["target"].to_numpy()[rows]
    df[tasks.prob_columns(comp)] = probs
    done = np.isin(fold_of, [ckpt["fold"] for ckpt, _ in models]) if folds is not None else np.ones(len(df), bool)
    return df[done].reset_index(drop=True), rec_probs
