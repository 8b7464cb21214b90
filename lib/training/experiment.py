"""Stage 02 core: train the folds of an experiment, merge them, and record what was trained how.

Every finished fold is a result of its own (``models/<exp>/fold<k>.pt``, ``fold<k>_oof.npy``,
``fold<k>_log.csv`` under ``fold<k>.record.json``, :mod:`lib.core.artifacts`), so:

* a finished fold is never trained again while its key (the experiment's config without its
  run-only keys, the folds table, the feature set's record, the competition's task and metrics)
  is unchanged, and it survives a failure in a later fold;
* an interrupted fold resumes from its last finished epoch (``fold<k>.state.pt``, written after
  every epoch by :func:`lib.training.loop.train_fold`);
* folds trained in separate runs (``--set train.folds=[k]``, on other days or machines) merge
  into one OOF file and one score table; until every fold is there, the experiment's record
  says ``partial`` and ``04_ensemble.py`` refuses it unless told otherwise.

The experiment's own record (``models/<exp>/record.json``) is removed when a run starts and
written when its folds are merged; it lists every fold file, ``oof/<exp>.csv``,
``scores.json``, ``log.csv``, ``report/`` (:func:`lib.evaluation.reports.write_report`: curves,
confusion matrix, ROC/PR, calibration, tables), ``config.yaml`` (the fully resolved experiment
config, which ``03_infer.py`` reads) and ``run.json`` (per fold: library versions, the
project's git commit, device, precision, host, command).
"""
from __future__ import annotations

import copy
import platform
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import torch
import yaml
from sklearn.metrics import confusion_matrix

from ..core.config import ROOT, RUN_ONLY_KEYS
from ..core.errors import ConfigError, MissingArtifact
from ..core.paths import Outputs
from ..core.utils import atomic_path, fingerprint, format_seconds, get_device, read_json, write_csv, write_json
from ..data import tasks
from ..data.metadata import metadata_columns
from ..data.windows import load_inputs
from ..evaluation.metrics import score_all
from ..evaluation.reports import write_report
from ..models import is_classical
from .classical import train_fold_classical
from .distill import mixed_targets, soft_targets
from .loop import train_fold
from .precision import cpu_bf16

FORMAT_VERSION = 4


def experiment_key(cfg: dict, folds_df: pd.DataFrame, manifest: dict, comp: dict, teacher: str | None = None) -> str:
    """Fingerprint of what an experiment's models depend on: the config (without its name and
    :data:`lib.core.config.RUN_ONLY_KEYS`), the folds table (ids, targets, groups, folds, metadata), the feature
    set's record id, the competition's task, classes, metrics, aggregation and metadata, and
    (``train.distill``) the teacher blend's record id."""
    what = copy.deepcopy(cfg)
    what.pop("name", None)
    for k in RUN_ONLY_KEYS:
        section, key = k.split(".")
        what[section].pop(key, None)
    keys = ("task", "classes", "positive", "metric", "metrics", "metadata")
    return fingerprint(FORMAT_VERSION, what, folds_df.drop(columns=["path"]).values.tolist(), manifest["record"],
                       {k: comp.get(k) for k in keys}, comp["audio"]["aggregate"], *([teacher] if teacher else []))


def environment(device: torch.device, amp: bool) -> dict:
    """Where and how a fold was trained: library versions, the project's git commit (with
    ``+dirty`` when files differ from it; ``None`` outside a git checkout), device, precision,
    host and command line."""
    import librosa
    import sklearn

    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        commit = commit and commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        commit = None
    if device.type == "cuda":
        name, bf16 = torch.cuda.get_device_name(device), amp
    else:
        name, bf16 = platform.processor() or platform.machine(), amp and cpu_bf16()
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "sklearn": sklearn.__version__, "librosa": librosa.__version__, "pandas": pd.__version__,
            "git_commit": commit, "device": f"{device.type}: {name}",
            "precision": "bfloat16 autocast (training)" if bf16 else "float32", "host": platform.node(),
            "command": " ".join(sys.argv)}


def _fold_files(out: Outputs, exp: str, fold: int) -> dict:
    d = out.model_dir(exp)
    return {"model": d / f"fold{fold}.pt", "oof": d / f"fold{fold}_oof.npy", "log": d / f"fold{fold}_log.csv",
            "state": d / f"fold{fold}.state.pt"}


def train_experiment(cfg: dict, out: Outputs, force: bool = False, log=print) -> dict:
    """Train the folds of experiment ``cfg`` that are not finished yet, then merge every finished
    fold into the OOF predictions, scores, log and plot.

    ``cfg['train']['folds']`` (``None``: all) chooses the folds of this run; ``force`` retrains
    them even when finished. Writes ``models/<exp>/...`` and ``oof/<exp>.csv`` (id, fold, target,
    ``p_<class>`` ...; the rows of the finished folds). Returns the scores dict with
    ``"skipped"`` (nothing to do), ``"partial"`` (some folds missing), ``"missing_folds"`` and
    per fold ``"status"`` (``trained``, ``resumed from epoch k``, ``finished earlier``).
    Raises ``MissingArtifact`` naming the stage to run when stage 00 or 01 outputs are missing or
    stale, ``TrainingError`` when a fold cannot be trained (finished folds are kept).
    """
    comp = out.load_competition()
    folds_df = out.load_split("train")
    name = cfg["name"]
    model_dir = out.model_dir(name)
    device = get_device(cfg["train"]["device"])
    data = load_inputs(out, cfg, "train", folds_df, comp, device)
    teacher = None
    if cfg["train"].get("distill"):  # train on labels mixed with the current blend's OOF probabilities
        if is_classical(cfg["model"]):
            raise ConfigError(f"{cfg['name']}: train.distill needs a network; scikit-learn members learn hard labels")
        soft, teacher = soft_targets(out, comp, folds_df["id"])
        data.train_target = mixed_targets(data.target, soft, cfg["train"]["distill"]["weight"])
    key = experiment_key(cfg, folds_df, data.manifest, comp, teacher)
    all_folds = sorted(int(k) for k in folds_df["fold"].unique() if int(k) >= 0)  # -1: pseudo-labelled, train only
    wanted = all_folds if cfg["train"]["folds"] is None else [int(k) for k in cfg["train"]["folds"]]
    record = out.trained(name)
    old, _ = record.check(key)
    if old is not None and not force and set(wanted) <= set(old["info"]["folds"]):
        return dict(read_json(model_dir / "scores.json"), skipped=True)
    meta_cols = sum(metadata_columns(comp), []) if cfg["inputs"]["metadata"] else []
    fe = cfg.get("frontend")
    inputs = (f"waveform {data.manifest['sample_rate']} Hz through front end {fe['name']} {fe['params']}" if fe else
              f"features {cfg['features']['set']} {data.manifest['spec_shape']} + {data.n_scalars} audio scalars")
    log(f"experiment {name}: model {cfg['model']['name']}, {inputs}"
        f"{' + metadata ' + str(meta_cols) if meta_cols else ''}; {len(folds_df)} recordings in {len(data.rec)} windows; "
        f"folds {wanted} of {len(all_folds)}, device {device}")
    record.begin(model_dir, out.oof(name).parent)
    t0 = time.time()
    status = {}
    for fold in wanted:
        fkey, files, frec = fingerprint(key, fold), _fold_files(out, name, fold), out.fold_record(name, fold)
        if not force and frec.check(fkey)[0] is not None:
            status[fold] = "finished earlier"
            log(f"fold {fold}: finished earlier with the same settings, kept ({frec.path.name})")
            files["state"].unlink(missing_ok=True)  # left by a --force run killed while retraining it
            continue
        if force:
            files["state"].unlink(missing_ok=True)
        fit, extra = ((train_fold_classical, {}) if is_classical(cfg["model"]) else
                      (train_fold, {"tensorboard_dir": model_dir / "tensorboard" / f"fold{fold}"}))
        ckpt, info, probs, hist = fit(cfg, comp, data, folds_df, fold, device, log, state_path=files["state"],
                                      state_key=fkey, **extra)
        frec.begin()  # only now: a fold interrupted while training leaves the previous one whole
        ckpt.update(model=cfg["model"], frontend=cfg.get("frontend"), features=cfg["features"], inputs=cfg["inputs"],
                    manifest=data.manifest,
                    comp={k: comp[k] for k in ("task", "classes", "positive") if k in comp}, **info)
        with atomic_path(files["model"]) as tmp:
            torch.save(ckpt, tmp)
        with atomic_path(files["oof"]) as tmp:
            np.save(tmp, probs)
        write_csv(files["log"], pd.DataFrame(hist))
        info = dict(info, n_parameters=ckpt["n_parameters"], environment=environment(device, cfg["train"]["amp"]))
        frec.commit([files["model"], files["oof"], files["log"]], fkey, inputs={"features": data.manifest["record"]},
                    info=info)
        files["state"].unlink(missing_ok=True)
        resumed = info.get("resumed_from_epoch", 0)
        status[fold] = f"resumed from epoch {resumed}" if resumed else "trained"
        log(f"fold {fold}: best epoch {info['best_epoch']}  " +
            "  ".join(f"{m} {info[m]:.4f}" for m in comp["metrics"]) + f"  ({format_seconds(info['seconds'])})"
            + (f", resumed from epoch {resumed}" if resumed else ""))
    scores = merge_folds(cfg, out, comp, folds_df, key, data.manifest["record"], all_folds, device, log)
    scores["status"] = {int(k): v for k, v in status.items()}
    scores["run_seconds"] = time.time() - t0
    return dict(scores, skipped=False)


def merge_folds(cfg: dict, out: Outputs, comp: dict, folds_df: pd.DataFrame, key: str, features_id: str,
                all_folds: list[int], device, log=print) -> dict:
    """Merge every finished fold of ``cfg``'s experiment (those whose record holds ``key``) into
    ``oof/<exp>.csv``, ``scores.json``, ``log.csv``, ``report/`` (:func:`write_report`),
    ``config.yaml`` and ``run.json``, then write the experiment's record (``partial`` while folds
    are missing). Returns the scores dict (``report``: the report's ``report.md`` relative to
    ``models/<exp>/``, ``None`` when it failed; then ``report_error`` says why, and ``log``
    warns: a failing report never costs the merged folds). Raises ``MissingArtifact`` when no
    fold is finished."""
    name = cfg["name"]
    model_dir = out.model_dir(name)
    done = {f: r for f in all_folds if (r := out.fold_record(name, f).check(fingerprint(key, f))[0]) is not None}
    if not done:
        raise MissingArtifact(f"{model_dir}: no fold of {name!r} is finished: run 02_train.py for {name}")
    folds = folds_df["fold"].to_numpy()
    oof = np.full((len(folds_df), len(comp["classes"])), np.nan)
    history = []
    for f in done:
        oof[folds == f] = np.load(_fold_files(out, name, f)["oof"])
        history.append(pd.read_csv(_fold_files(out, name, f)["log"]))
    rows = np.isin(folds, list(done))
    oof_df = pd.DataFrame({"id": folds_df["id"], "fold": folds, "target": folds_df["target"]})
    oof_df[tasks.prob_columns(comp)] = oof
    oof_df = oof_df[rows].reset_index(drop=True)
    y = tasks.class_index(oof_df["target"], comp)
    probs = oof_df[tasks.prob_columns(comp)].to_numpy()
    infos = [{k: v for k, v in r["info"].items() if k != "environment"} for r in done.values()]
    per_fold = pd.DataFrame(infos)
    missing = [f for f in all_folds if f not in done]
    confusion = None if comp["task"] == "multilabel" else {
        "classes": comp["classes"],
        "rows_true_cols_pred": confusion_matrix(y, probs.argmax(1), labels=range(len(comp["classes"]))).tolist()}
    scores = {
        "experiment": name, "metric": comp["metric"], "oof": score_all(comp["metrics"], y, probs, comp),
        "fold_mean": per_fold[comp["metrics"]].mean().to_dict(), "fold_std": per_fold[comp["metrics"]].std().to_dict(),
        "folds": infos, "partial": bool(missing), "missing_folds": missing, "confusion": confusion,
        "n_parameters": infos[0]["n_parameters"], "device": str(device),
        "seconds": float(per_fold["seconds"].sum()), "key": key, "config": cfg,
    }
    history = pd.concat(history, ignore_index=True)
    paths = {"oof": out.oof(name), "scores": model_dir / "scores.json", "log": model_dir / "log.csv",
             "config": model_dir / "config.yaml", "run": model_dir / "run.json"}
    write_csv(paths["log"], history)
    write_csv(paths["oof"], oof_df)
    (model_dir / "curves.png").unlink(missing_ok=True)  # older versions' plot; now report/curves.png
    try:  # written whole or removed (write_report); a plotting failure must not cost the merged folds
        report = write_report(model_dir / "report", name, comp, oof_df, history, scores)
        scores["report"] = str(report[0].relative_to(model_dir))
    except Exception as exc:
        report, scores["report"], scores["report_error"] = [], None, repr(exc)
        log(f"WARNING: {name}: the report could not be written ({exc!r}); folds, OOF file and scores are kept")
    with atomic_path(paths["config"]) as tmp:
        tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
    write_json(paths["run"], {f"fold{f}": r["info"].get("environment") for f, r in done.items()})
    write_json(paths["scores"], scores)
    members = [p for p in paths.values() if p.exists()] + report
    for f in done:
        fold_files = _fold_files(out, name, f)
        members += [fold_files["model"], fold_files["oof"], fold_files["log"], out.fold_record(name, f).path]
    out.trained(name).commit(members, key, inputs={"features": features_id},
                             info={"folds": sorted(done), "partial": bool(missing), "missing_folds": missing})
    return scores
