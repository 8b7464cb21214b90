"""Stage 03 core: predict the test set with every fold model and average the probabilities.

What is predicted with comes from the experiment's training record alone
(``models/<exp>/record.json``, :mod:`lib.core.artifacts`): its fold models and the fully
resolved config it was trained with (``models/<exp>/config.yaml``), never the experiment file as
it is on disk now. Checkpoints load with ``torch.load(weights_only=True)``: they hold tensors
and plain values only, so loading a model folder someone shared runs no code of theirs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from ..core.artifacts import FOLDS, check_folds, check_trained, folds_id
from ..core.config import setting_changes
from ..core.errors import ConfigError, MissingArtifact, PipelineError
from ..core.paths import Outputs, as_outputs
from ..core.utils import fingerprint, load_tensors_only, read_json, write_csv, write_json
from ..core.device import get_device
from ..data import tasks
from ..inputs import load_inputs
from ..models import build_model
from ..core.device import place_model
from ..core.progress import progress
from .predict import predict_recordings
from .segments import segment_file, segment_predictions


def trained_experiment(out: Outputs, exp: str) -> tuple[dict, dict]:
    """The verified training record of ``exp`` and the config it was trained with.

    Returns ``(record, config)``. Raises ``MissingArtifact`` naming ``02_train.py`` when the
    experiment was never trained, its last run did not finish, or a file of it changed.
    """
    rec = out.trained(exp).require()
    return rec, yaml.safe_load((out.model_dir(exp) / "config.yaml").read_text())


def load_fold_models(out: Outputs, exp: str, device, record: dict | None = None
                     ) -> list[tuple[dict, torch.nn.Module]]:
    """Load the fold models of the training record of ``exp`` (``record``: already verified).

    Returns ``[(checkpoint, model in eval mode on device), ...]`` per fold; a checkpoint holds
    the fold, the metadata encoder's state fitted on its training rows and the input settings.
    Raises ``MissingArtifact`` naming ``02_train.py`` when the experiment is not (fully) trained.
    """
    out = as_outputs(out)
    record = record or out.trained(exp).require()
    return load_checkpoints(out.model_dir(exp), record["info"]["folds"], device)


def load_checkpoints(folder: Path, folds: list[int], device) -> list[tuple[dict, torch.nn.Module]]:
    """``[(checkpoint, model in eval mode on device), ...]`` of ``folder/fold<k>.pt`` for each
    fold ``k`` (:func:`lib.core.utils.load_tensors_only`: tensors and plain values only; raises
    ``MissingArtifact`` naming a file that holds anything else, cannot be read, or is no fold
    checkpoint of this pipeline: keys or weights that do not fit, a scikit-learn member holding
    foreign types)."""
    models = []
    for fold in folds:
        path = Path(folder) / f"fold{fold}.pt"
        ckpt = load_tensors_only(path, MissingArtifact)
        try:
            model = build_model(ckpt["model"], ckpt["manifest"], tasks.n_outputs(ckpt["comp"]), ckpt["n_scalars"],
                                ckpt.get("frontend"), pretrained=False)  # the weights are the checkpoint's
            model.load_state_dict(ckpt.pop("state_dict"))
        except PipelineError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise MissingArtifact(f"{path}: not a fold checkpoint this version can load ({type(exc).__name__}: "
                                  f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''})") from None
        place_model(model, device)
        models.append((ckpt, model.eval()))
    return models


def predict_folds(models, data, test_df: pd.DataFrame, comp: dict, tta: dict | None, desc: str) -> np.ndarray:
    """The mean over fold ``models`` (:func:`load_checkpoints`) of their recording probabilities
    ``(recordings, n_classes)`` for every row of ``test_df`` (the rows of ``data``), each fold
    with its own metadata encoder and the experiment's test-time augmentation ``tta``."""
    probs = np.zeros((len(test_df), len(comp["classes"])))
    recs = np.arange(len(test_df))
    for ckpt, model in progress(models, desc=desc, unit="fold", leave=False):
        data.set_metadata(ckpt.get("metadata_encoder"), test_df)  # the encoder's state, as the checkpoint holds it
        probs += predict_recordings(model, data, recs, comp, tta)[0] / len(models)
    return probs


def infer_experiment(exp: str, out: Outputs, force: bool = False, device: str = "auto", given: dict | None = None) -> dict:
    """Predict the test set with every fold model of experiment ``exp`` and average the probabilities.

    Each model predicts every window of each test recording, with the test-time augmentation of
    the experiment's ``tta`` section as its OOF predictions were made; windows are aggregated per
    recording (``audio.aggregate``), then the folds' recording probabilities are averaged.
    Writes ``preds/<exp>.csv`` (id, fold = -1, ``p_<class>`` ...) in ``test.csv`` order,
    ``preds/<exp>.json`` (the folds used, mean probabilities) and for recordings made of segments
    ``preds/<exp>.segments.csv`` (:func:`lib.inference.segments.segment_predictions`) under the record
    ``preds/<exp>.record.json``, which names the training run they came from. Returns a summary
    dict (``skipped`` when the predictions are up to date; ``no_test`` when the competition has no
    test set, in which case nothing is written; ``partial`` when the experiment lacks folds).
    Raises ``MissingArtifact`` when the training is missing or incomplete, or when the feature
    set changed or ``00_prepare.py`` assigned other folds since training (naming the stage to run
    again); ``ConfigError`` when ``given`` (the experiment config the command was given, ``--set``
    applied) describes other models than the trained ones (:func:`lib.core.config.setting_changes`:
    ``--name`` with other ``--set`` values, or the file edited since training).
    """
    out = as_outputs(out)
    if not isinstance(exp, str):
        raise ConfigError(f"infer_experiment: exp is the experiment's name (cfg['name'], e.g. 'wave_cnn'), not {exp!r}"[:300])
    if not out.has_test():
        return {"experiment": exp, "no_test": True, "skipped": True}
    comp = out.load_competition()
    trained, cfg = trained_experiment(out, exp)
    changes = setting_changes(cfg, given) if given else []
    if changes:
        raise ConfigError(f"{exp} was trained with other settings than the config given here ({'; '.join(changes[:6])}"
                          f"{' ...' if len(changes) > 6 else ''}): run 02_train.py with them first, or give the "
                          f"config and --set options it was trained with")
    fid = folds_id(out.load_split("train"))
    check_folds(trained, fid, f"trained experiment {exp!r}", f"02_train.py for {exp}")
    test_df = out.load_split("test")
    device = get_device(device)
    data = load_inputs(out, cfg, "test", test_df, comp, device)
    if trained["inputs"]["features"] != data.manifest["train_record"]:  # (a test split rebuilt alone keeps it)
        raise MissingArtifact(f"feature set {cfg['features']['set']!r} was rebuilt after {exp!r} was trained "
                              f"(stale models): run 02_train.py for {exp}")
    check_trained(trained, comp, f"trained experiment {exp!r}", f"{{stages}} for {exp}")
    key = fingerprint(trained["id"], data.manifest["record"], test_df.values.tolist())
    record = out.predicted(exp)
    if not force and record.check(key)[0] is not None:
        return dict(read_json(out.preds(exp).with_suffix(".json")), skipped=True)
    record.begin(out.preds(exp).parent)
    models = load_fold_models(out, exp, device, trained)
    seg_path = segment_file(out.preds(exp), comp)  # recordings made of segments: each segment's too, one pass
    if seg_path:
        segments, probs = segment_predictions(models, data, test_df, comp, cfg.get("tta"))
    else:
        probs = predict_folds(models, data, test_df, comp, cfg.get("tta"), f"{exp} test")
    preds = pd.DataFrame({"id": test_df["id"], "fold": -1})
    preds[tasks.prob_columns(comp)] = probs
    hop = (cfg.get("tta") or {}).get("hop_seconds")  # windows every hop_seconds: those predicted, not the cache's
    windows = len(data.windows_of(np.arange(len(test_df)), hop)[0]) if hop else len(data.rec)
    summary = {"experiment": exp, "rows": len(preds), "windows": windows, "folds": trained["info"]["folds"],
               "partial": trained["info"]["partial"],
               "mean_probs": {c: round(float(p), 4) for c, p in zip(tasks.prob_columns(comp), probs.mean(0))}}
    files = [out.preds(exp), out.preds(exp).with_suffix(".json")]
    write_csv(out.preds(exp), preds)
    write_json(files[1], summary)
    if seg_path:
        files.append(seg_path)
        write_csv(seg_path, segments)
    record.commit(files, key,
                  inputs={"train": trained["id"], "features": data.manifest["record"], FOLDS: fid,
                          "recordings": data.manifest["splits"]["test"].get("audio")}, info=summary)
    return dict(summary, skipped=False)
