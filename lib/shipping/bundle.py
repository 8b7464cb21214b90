"""Model bundles: what a submission needs, packed into one folder, and prediction from it alone.

A code competition predicts inside a notebook without internet, with the test audio in a
read-only input folder; the models are trained elsewhere and uploaded as a dataset. A bundle
holds exactly what stage 03 + 04 need besides the test audio::

    bundle.json        format, when and from which commit it was made, experiments, folds, the fold
                       assignment they were trained on, every other file's SHA-256
    bundle.sha256      the SHA-256 of bundle.json (``sha256sum -c bundle.sha256`` checks it): an
                       edited bundle.json (a fold dropped by hand) is refused
    competition.yaml   the resolved competition config (task, classes, audio, test layout, metrics,
                       decision with its label masks, submission format; no data folder)
    ensemble.json      stage 04's result: the blending method fitted on every OOF row (weights or
                       stacker coefficients), the decision (threshold / class biases), OOF scores
    models/<exp>/      each experiment's resolved config.yaml and fold checkpoints (weights, input
                       settings, the metadata encoders fitted per fold)
    hf/<digest>/       the Hugging Face model folder that an ``hf_embeddings`` member's features
                       need (its config, feature extractor and weights; once per folder)

Nothing in it refers to the training audio or to the ``output/`` folder it came from.
:func:`predict_bundle` reads only the bundle (its hashes checked first) and the test audio, and
writes only into a work folder of the caller's choice, apart from both (refused when it is, lies
inside or contains the data folder or the bundle): stage 00 for the test set alone
(:func:`lib.data.prepare.prepare_test`), stage 01 for the test split of each feature set the
experiments need, every fold model, the blend and the decision, ``submission.csv``. The
predictions are those of ``03_infer.py`` + ``04_ensemble.py`` on the same models.
"""
from __future__ import annotations

import re
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from ..core.artifacts import FOLDS, check_apart, check_competition, check_folds, check_trained, file_hash, folds_id
from ..core.config import row_noun, segment_unit
from ..core.errors import ConfigError, InputError, MissingArtifact
from ..core.paths import Outputs
from ..core.utils import fingerprint, load_tensors_only, read_json, replace_folder, write_csv, write_json
from ..core.device import get_device
from ..data import tasks
from ..data.metadata import metadata_columns
from ..data.prepare import META_PREFIX, prepare_test, unknown_values_line
from ..data.slices import PREFIX as SLICE_PREFIX
from ..data.slices import counts_text, unmatched_slice_values
from ..inputs import load_inputs
from ..evaluation.blending import Blender
from ..evaluation.ensemble import blend_test, check_features
from ..features.cache import build_feature_set
from ..inference.infer import load_checkpoints, predict_folds
from ..models import is_classical

FORMAT = 2  # 2: bundle.json sealed by bundle.sha256
SEAL = "bundle.sha256"
INPUT_SETTINGS = ("settings", "sample_rate", "hop_length", "clip_seconds", "hop_seconds", "pad", "spec_shape")
"""Feature-manifest keys that must be equal at training and at prediction."""


def make_bundle(out: Outputs, dest: str | Path, force: bool = False, onnx: bool = False, log=print) -> dict:
    """Pack the current blend of output folder ``out`` (stage 04's record, verified) into the
    folder ``dest``: every blended experiment's fold checkpoints and config, the competition
    config, ``ensemble.json``; ``bundle.json`` lists every file with its SHA-256. A member of
    weight 0 in the blend (``single`` keeps one) travels as its config alone, with no fold models
    (``folds: []`` in ``bundle.json``): :func:`predict_bundle` does not run it.

    A partial member (folds missing, blended with 04's ``--allow-partial``) travels with the
    folds it has, with a warning through ``log``.

    ``onnx``: also export every network fold model to ``fold<k>.onnx`` (:mod:`lib.shipping.onnx_export`,
    each checked against PyTorch; the differences are in ``bundle.json``), which
    :func:`predict_bundle` then runs with ONNX Runtime.

    Written into a temporary folder beside ``dest`` and renamed when complete (an interrupted
    bundle never looks finished); an existing ``dest`` is replaced only with ``force``. Returns
    ``bundle.json``'s content. Raises ``MissingArtifact`` naming the stage to run when the blend
    is missing, was made by an older version, or blended another training run than the current
    one, models trained on other folds than those of the current ``folds.csv``, under another
    ``competition.yaml`` than the current one or on a feature cache 01 has rebuilt since, and
    ``ConfigError`` when ``dest`` exists without ``force``, exists with ``force`` but is neither a
    bundle nor an empty folder, or is or contains the output folder or is, contains or lies inside
    the competition's data folder (``force`` would delete them).
    """
    dest = Path(dest).resolve()
    ens_record = out.ensembled.require()
    comp = out.load_competition()
    _check_destination(dest, out, comp, force)
    fid = folds_id(out.load_split("train"))
    check_folds(ens_record, fid, "the blend (ensemble.json)", "04_ensemble.py again")
    check_competition(ens_record, comp, "the blend (ensemble.json)", "04_ensemble.py again")
    summary = read_json(out.root / "ensemble.json")
    if "blender" not in summary:
        raise MissingArtifact(f"{out.root / 'ensemble.json'} was written by an older version: run 04_ensemble.py again")
    experiments = [e["experiment"] for e in summary["experiments"]]
    for exp in experiments:
        trained = out.trained(exp).require()
        check_folds(trained, fid, f"trained experiment {exp!r}", f"02_train.py for {exp}, 03_infer.py and 04_ensemble.py")
        check_trained(trained, comp, f"trained experiment {exp!r}",
                    f"{{stages}} for {exp}, 03_infer.py and 04_ensemble.py")
        if ens_record["inputs"].get(exp) != trained["id"]:
            raise MissingArtifact(f"the blend used another training run of {exp!r} than the current one: "
                                  f"run 04_ensemble.py again")
        check_features(out, exp, trained, f"02_train.py for {exp}, 03_infer.py and 04_ensemble.py")
    tmp = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        manifest = _write_bundle(tmp, out, comp, summary, ens_record, fid, onnx, log)
    except BaseException:  # an error or Ctrl-C leaves nothing behind (a killed run: the next 05 removes it)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        _check_replaceable(dest, force)  # again: something may have appeared there while the bundle was written
    except ConfigError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_folder(tmp, dest)  # a kill leaves the old folder or the new one whole
    return manifest


def _write_bundle(tmp: Path, out: Outputs, comp: dict, summary: dict, ens_record: dict, fid: str, onnx: bool,
                  log) -> dict:
    """Write the bundle of :func:`make_bundle` into the empty folder ``tmp``; returns ``bundle.json``'s content."""
    experiments = [e["experiment"] for e in summary["experiments"]]
    (tmp / "models").mkdir(parents=True)
    comp.pop("data_dir", None)
    (tmp / "competition.yaml").write_text(yaml.safe_dump(comp, sort_keys=False))
    shutil.copy2(out.root / "ensemble.json", tmp / "ensemble.json")
    folds = {}
    for exp, unused in zip(experiments, _weight_zero(summary)):  # predict_bundle does not run those: no fold models
        info = out.trained(exp).require()["info"]
        folds[exp] = [] if unused else info["folds"]
        if unused:
            log(f"{exp}: weight 0 in the blend ({summary['method']}): its config only, no fold models")
        elif info["partial"]:
            log(f"WARNING: {exp} is partial (folds {info['missing_folds']} were never trained; blended with "
                f"04's --allow-partial): the bundle predicts with its folds {info['folds']} only")
        (tmp / "models" / exp).mkdir()
        for name in ["config.yaml"] + [f"fold{k}.pt" for k in folds[exp]]:
            shutil.copy2(out.model_dir(exp) / name, tmp / "models" / exp / name)
    model_dirs = {exp: _pack_model_folder(tmp, exp, folds[exp], log) for exp in experiments if folds[exp]}
    model_dirs = {exp: rel for exp, rel in model_dirs.items() if rel}
    exported = _export_onnx(tmp, experiments, folds, log) if onnx else {}
    files = {str(p.relative_to(tmp)): file_hash(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
    manifest = {"format": FORMAT, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "source": str(out.root), "ensemble_record": ens_record["id"], "experiments": experiments,
                "folds": folds, "inputs": {FOLDS: fid}, "method": summary["method"], "model_dirs": model_dirs,
                "onnx_max_difference": exported, "metadata_categories": _training_categories(out, comp),
                "files": files}
    write_json(tmp / "bundle.json", manifest)
    (tmp / SEAL).write_text(f"{file_hash(tmp / 'bundle.json')}  bundle.json\n")  # sha256sum's format
    return manifest


def _training_categories(out: Outputs, comp: dict) -> dict[str, list[str]]:
    """Each categorical metadata column's values among the training rows (``folds.csv``), as text:
    what :func:`predict_bundle` compares a new test set's values with, as stage 00 does (a value no
    training row has is encoded as all zeros)."""
    table = out.load_split("train")
    return {c: sorted(set(np.asarray(table[META_PREFIX + c]).astype(str))) for c in metadata_columns(comp)[1]}


def _pack_model_folder(tmp: Path, exp: str, folds: list[int], log) -> str | None:
    """Copy the Hugging Face model folder that member ``exp``'s ``hf_embeddings`` features need
    (``features.params.model_dir``; its :func:`lib.features.hf_embeddings.model_files`) into
    ``tmp/hf/<digest>/`` (once for members sharing it) and return that path relative to the
    bundle; None for other feature sets. Raises ``ConfigError`` naming the experiment and the
    folder when its files are missing or are not those its fold models were trained on."""
    features = yaml.safe_load((tmp / "models" / exp / "config.yaml").read_text())["features"]
    if features["name"] != "hf_embeddings":
        return None
    from ..features.hf_embeddings import folder_fingerprint

    src = Path(features["params"]["model_dir"]).expanduser()
    ckpt = load_tensors_only(tmp / "models" / exp / f"fold{folds[0]}.pt", MissingArtifact)
    trained = ckpt["manifest"]["settings"].get("files")  # the folder's files as the features were built
    if not src.is_dir() or not trained or folder_fingerprint(src) != trained:
        what = ("is not there" if not src.is_dir() else "is not known to its models (trained by an older version)"
                if not trained else "has other files than those its models were trained on")
        raise ConfigError(f"{exp}: its features need the model folder features.params.model_dir {str(src)!r}, which "
                          f"{what}: put the folder back as it was at training (a bundle carries it), or run 01-04 again")
    rel = f"hf/{fingerprint(trained)}"
    if not (tmp / rel).is_dir():
        (tmp / rel).mkdir(parents=True)
        for name in trained:
            shutil.copy2(src / name, tmp / rel / name)
        log(f"{exp}: its Hugging Face model folder packed as {rel} ({len(trained)} files)")
    return rel


def _weight_zero(summary: dict) -> list[bool]:
    """For each member of stage 04's blend (``ensemble.json``), whether its weight is 0 (a weighted
    mean leaves it out; a stacker's members all count)."""
    weights = summary["blender"]["weights"]
    return [w == 0 for w in weights] if weights is not None else [False] * len(summary["experiments"])


def member_config(bundle: Path, manifest: dict, exp: str) -> dict:
    """Bundled experiment ``exp``'s config (``models/<exp>/config.yaml``), its features reading the
    Hugging Face folder the bundle carries (``bundle.json``'s ``model_dirs``) where it has one."""
    cfg = yaml.safe_load((bundle / "models" / exp / "config.yaml").read_text())
    if exp in manifest.get("model_dirs", {}):
        cfg["features"]["params"]["model_dir"] = str(bundle / manifest["model_dirs"][exp])
    return cfg


def _predict_member(bundle: Path, manifest: dict, exp: str, work: Outputs, table: pd.DataFrame, comp: dict, device,
                    workers: int | None, engine: str, log) -> tuple[pd.DataFrame, str]:
    """One bundled experiment's test predictions: its features built into ``work``, its fold
    models (ONNX Runtime for networks when ``engine`` says so) averaged over the rows of
    ``table``. Returns ``(frame of id, fold -1, p_<class> ..., what ran, for the log)``."""
    cfg = member_config(bundle, manifest, exp)
    models = load_checkpoints(bundle / "models" / exp, manifest["folds"][exp], device)
    _check_classes(bundle / "models" / exp, models, comp)  # (before any test feature is computed)
    build_feature_set(work, cfg["features"], workers=workers, splits=("test",))
    data = load_inputs(work, cfg, "test", table, comp, device)
    _check_inputs(exp, models[0][0]["manifest"], data.manifest)
    if not is_classical(cfg["model"]):
        models = _onnx_models(bundle / "models" / exp, manifest["folds"][exp], models, engine, exp, log)
    frame = pd.DataFrame({"id": table["id"], "fold": -1})
    frame[tasks.prob_columns(comp)] = predict_folds(models, data, table, comp, cfg.get("tta"), f"{exp} test")
    return frame, f"{len(models)} fold models ({type(models[0][1]).__name__}), {len(data.rec)} windows"


def _check_destination(dest: Path, out: Outputs, comp: dict, force: bool) -> None:
    """Refuse a bundle folder ``dest`` that exists (without ``force``; with it, unless it is a
    bundle or an empty folder: ``force`` replaces an earlier bundle, never a project, a code
    folder or anything else), that is or contains the output folder ``out`` (replacing it would
    delete the results) or that is, contains or lies inside the competition's data folder.
    Raises ``ConfigError`` naming the folders."""
    if out.root.resolve().is_relative_to(dest):
        raise ConfigError(f"--to {dest} is or contains the output folder {out.root.resolve()}: choose a bundle "
                          f"folder apart from it")
    if comp.get("data_dir"):
        check_apart(dest, comp["data_dir"], "--to", "the competition's data folder")
    _check_replaceable(dest, force)


def _check_replaceable(dest: Path, force: bool) -> None:
    """Refuse a ``dest`` that exists, unless ``force`` is given and it is an earlier bundle (a
    folder holding ``bundle.json``) or an empty folder. Raises ``ConfigError`` naming it."""
    if dest.exists() and not force:
        raise ConfigError(f"{dest} exists; choose another folder or pass --force to replace it")
    if dest.exists() and not dest.is_dir():
        raise ConfigError(f"--to {dest} is an existing file, not a bundle folder; choose another folder")
    if dest.is_dir() and any(dest.iterdir()) and not (dest / "bundle.json").is_file():
        raise ConfigError(f"--to {dest} exists and is not a bundle (no bundle.json): --force replaces only a bundle "
                          f"made by 05_bundle.py or an empty folder; choose another folder")


def _export_onnx(folder: Path, experiments: list[str], folds: dict, log) -> dict:
    """Export every network fold model under ``folder/models`` to ONNX; returns ``{exp: {fold:
    max |logit difference|}}`` (scikit-learn members are left out)."""
    from .onnx_export import export_onnx

    out = {}
    for exp in (e for e in experiments if folds[e]):  # members of weight 0 have no fold models
        cfg = yaml.safe_load((folder / "models" / exp / "config.yaml").read_text())
        if is_classical(cfg["model"]):
            log(f"{exp}: a scikit-learn member, kept as it is (no ONNX)")
            continue
        out[exp] = {}
        for fold, (ckpt, model) in zip(folds[exp], load_checkpoints(folder / "models" / exp, folds[exp], torch.device("cpu"))):
            try:
                out[exp][fold] = export_onnx(model, ckpt["manifest"], ckpt["n_scalars"],
                                             folder / "models" / exp / f"fold{fold}.onnx")
            except RuntimeError as exc:  # the graph does not compute what the model does (tolerance ATOL)
                raise ConfigError(f"--onnx: {exp} fold {fold}: {exc}; make the bundle without --onnx (PyTorch then "
                                  f"predicts this member)") from exc
        log(f"{exp}: {len(folds[exp])} fold models exported to ONNX, largest logit difference "
            f"{max(out[exp].values()):.1e}")
    return out


def _onnx_models(folder: Path, folds: list[int], models: list, engine: str, exp: str, log) -> list:
    """``models`` with each fold's ONNX graph run by ONNX Runtime instead, when ``engine`` is
    ``onnx``, or ``auto`` and the bundle has the graphs and ``onnxruntime`` imports."""
    have = all((folder / f"fold{k}.onnx").is_file() for k in folds)
    if engine == "torch" or (engine == "auto" and not have):
        return models
    if not have:
        raise InputError([f"{folder}: no ONNX models (make the bundle with --onnx)"])
    try:
        from .onnx_export import OnnxModel
    except ImportError:  # onnxruntime not installed
        if engine == "onnx":
            raise InputError(["--engine onnx: the onnxruntime package is not installed"]) from None
        log(f"{exp}: onnxruntime is not installed: predicting with PyTorch")
        return models
    return [(ckpt, OnnxModel(folder / f"fold{k}.onnx", model.n_outputs)) for k, (ckpt, model) in zip(folds, models)]


def load_bundle(path: str | Path) -> tuple[dict, dict, dict]:
    """Read a bundle: ``(bundle.json, competition config, ensemble.json)``, after checking that
    ``bundle.json`` has the SHA-256 that ``bundle.sha256`` holds and that every file it lists is
    there with its SHA-256. Raises ``MissingArtifact`` (one line, naming the file and saying to
    make the bundle again) when ``bundle.json`` was edited, its seal is missing or it was made by
    another version, and ``InputError`` naming every missing or changed file (a bundle is used
    whole or not at all), and ``MissingArtifact`` when ``bundle.json`` disagrees with the blend
    it carries (:func:`_check_consistent`)."""
    path = Path(path)
    if not (path / "bundle.json").is_file():
        raise InputError([f"{path}: no bundle.json (not a bundle, or an interrupted one: make it again with 05_bundle.py)"])
    _check_seal(path)
    manifest = read_json(path / "bundle.json")
    if manifest.get("format") != FORMAT:
        raise MissingArtifact(f"{path}: bundle format {manifest.get('format')!r}; this version reads {FORMAT}: make "
                              f"the bundle again with 05_bundle.py")
    problems = [f"{path / f}: " + ("missing" if not (path / f).is_file() else "changed since the bundle was made")
                for f, h in manifest["files"].items() if not (path / f).is_file() or file_hash(path / f) != h]
    if problems:
        raise InputError(problems)
    comp = yaml.safe_load((path / "competition.yaml").read_text())
    summary = read_json(path / "ensemble.json")
    _check_consistent(path, manifest, summary)
    return manifest, comp, summary


def _check_consistent(path: Path, manifest: dict, summary: dict) -> None:
    """``bundle.json`` against the blend it carries: the same experiments in the same order and
    method, each experiment's fold models exactly those listed among its files (each once; none
    only for a member of weight 0). ``bundle.sha256`` is a
    checksum, not a signature: this catches an edit whose seal was recomputed before it
    reaches the blend. Raises ``MissingArtifact`` naming what disagrees."""
    blended = [e.get("experiment") for e in summary.get("experiments", [])]
    folds = manifest.get("folds", {})
    problems = []
    if manifest.get("experiments") != blended:
        problems.append(f"experiments {manifest.get('experiments')} where ensemble.json blends {blended}")
    if manifest.get("method") != summary.get("method"):
        problems.append(f"method {manifest.get('method')!r} where ensemble.json has {summary.get('method')!r}")
    if set(folds) != set(blended):
        problems.append(f"fold lists for {sorted(folds)} where ensemble.json blends {sorted(blended)}")
    files = manifest.get("files", {})
    weight_zero = _weight_zero(summary) if "blender" in summary else [False] * len(blended)
    for exp, unused in zip(blended, weight_zero):
        ks = folds.get(exp) or []
        if len(set(ks)) != len(ks) or (not ks and not unused):
            problems.append(f"{exp}: folds {ks} (a member the blend weighs needs its fold models, each once)")
        named = {f"models/{exp}/fold{k}.pt" for k in ks} | {f"models/{exp}/config.yaml"}
        held = {f for f in files if re.fullmatch(rf"models/{re.escape(exp)}/(fold\d+\.pt|config\.yaml)", f)}
        if named != held:
            problems.append(f"{exp}: folds {ks} where its files are {sorted(held)}")
    if problems:
        raise MissingArtifact(f"{path / 'bundle.json'} disagrees with the blend it carries ({'; '.join(problems)}): an "
                              f"edited bundle is not used; make the bundle again with 05_bundle.py")


def _check_seal(path: Path) -> None:
    """Check ``path/bundle.json`` against the SHA-256 in ``path/bundle.sha256`` (written by
    :func:`make_bundle`). Raises ``MissingArtifact`` naming the file when the seal is missing
    (a bundle of an older version) or the digest differs (``bundle.json`` edited by hand)."""
    seal = path / SEAL
    if not seal.is_file():
        raise MissingArtifact(f"{seal} not found (a bundle made by an older version, or damaged): make the bundle "
                              f"again with 05_bundle.py")
    if seal.read_text().split()[:1] != [file_hash(path / "bundle.json")]:
        raise MissingArtifact(f"{path / 'bundle.json'} has changed since the bundle was made (its SHA-256 is not the "
                              f"one in {SEAL}; an edited bundle, e.g. a fold removed by hand, is not used): make the "
                              f"bundle again with 05_bundle.py")


def _check_classes(folder: Path, models: list, comp: dict) -> None:
    """The task, classes in order and positive class that every fold model of ``folder`` was trained on (its
    checkpoint's ``comp``) against the bundle's ``competition.yaml``: a re-sealed edit of the
    class list would relabel every probability column. Raises ``MissingArtifact``."""
    for ckpt, _ in models:
        trained = ckpt.get("comp") or {}
        if ((trained.get("task"), trained.get("classes"), trained.get("positive"))
                != (comp["task"], list(comp["classes"]), comp.get("positive"))):
            raise MissingArtifact(f"{folder}/fold{ckpt['fold']}.pt was trained on {trained.get('task')} classes "
                                  f"{trained.get('classes')} (positive {trained.get('positive')}) where the bundle's "
                                  f"competition.yaml has {comp['task']} classes {comp['classes']} (positive "
                                  f"{comp.get('positive')}) (an edited bundle is not used: its probability columns "
                                  f"would be relabelled): make the bundle again with 05_bundle.py")


def _check_inputs(exp: str, trained: dict, now: dict) -> None:
    """The feature settings the fold models were trained on against those computed now."""
    differ = [k for k in INPUT_SETTINGS if trained.get(k) != now.get(k)]
    if differ:
        raise InputError([f"{exp}: the test features differ from the training ones in {differ}: "
                          f"{ {k: trained.get(k) for k in differ} } at training, { {k: now.get(k) for k in differ} } now"])


def _log_unknown_values(table: pd.DataFrame, priors: dict | None, categories: dict, log) -> None:
    """Say, as 00 and 04 do, which test rows' ``decision.slice_prior`` values no training row had
    (their probabilities stay unshifted) and which rows' categorical metadata values
    (``categories``: ``{column: training values}``, from ``bundle.json``) no training row had
    (encoded as all zeros)."""
    unknown = unmatched_slice_values(table[SLICE_PREFIX + priors["column"]], priors["slices"]) if priors else {}
    if unknown:
        log(f"decision.slice_prior {priors['column']!r}: test rows left unshifted (values no training row has): "
            + counts_text(unknown))
    for column, known in categories.items():
        line = unknown_values_line(table[META_PREFIX + column], known, f"metadata {column!r}",
                                   "they are encoded as no category (all zeros)")
        if line:
            log(f"WARNING: {line}")


WORK_FILES = ("competition.yaml", "test.csv", "prepare.record.json", "submission.csv", "test_blend.csv", "decision.json",
              "features", "preds", "silence")
"""What :func:`predict_bundle` writes (and replaces) in its work folder."""


def check_work_dir(work_dir, data_dir, bundle, test_csv: str | None = None) -> None:
    """Refuse, before any work, a ``predict_bundle`` work folder that is, lies inside or contains
    the data folder or the bundle (:func:`lib.core.artifacts.check_apart`), that holds code (a
    Python package, or the pipeline's own folder with ``lib/``), that is a pipeline output folder
    (``folds.csv`` or ``models/``: its test features, predictions and competition.yaml would be
    replaced), or where the test table ``test_csv`` (relative to ``data_dir``) is one of the
    :data:`WORK_FILES` it writes. Raises ``ConfigError`` naming the folder."""
    check_apart(work_dir, data_dir, "--work-dir", "the competition's data folder (--data-dir)")
    check_apart(work_dir, bundle, "--work-dir", "the bundle folder")
    w = Path(work_dir).resolve()
    code = ("a Python package" if (w / "__init__.py").is_file() else
            "the pipeline: lib/" if (w / "lib" / "__init__.py").is_file() else None)
    if code:
        raise ConfigError(f"--work-dir {w} holds code ({code}): predicting there would write test features and "
                          f"predictions beside it; choose a folder of its own")
    table = (Path(data_dir) / test_csv).resolve() if test_csv else None
    if table is not None and any(table == w / name or w / name in table.parents for name in WORK_FILES):
        raise ConfigError(f"--test-csv {table} lies in --work-dir {w}, where predict_bundle writes its own "
                          f"{table.relative_to(w).parts[0]}: move the table or choose another work folder")
    held = [name for name, there in (("folds.csv", (w / "folds.csv").is_file()), ("models/", (w / "models").is_dir()))
            if there]
    if held:
        raise ConfigError(f"--work-dir {w} is a pipeline output folder (it holds {' and '.join(held)}): predicting "
                          f"there would replace its test features, predictions and competition.yaml; choose a "
                          f"folder of its own")


def _test_config(comp: dict, bundle: Path, data_dir, test_csv: str | None, test_files: str | None,
                 submission: bool, bad_test_files: str | None) -> dict:
    """The bundle's competition config ``comp`` set up for :func:`predict_bundle`'s test set (its
    arguments of the same names). Raises ``InputError`` without a way to find the test set,
    ``ConfigError`` for ``bad_test_files: silence`` on matrices or segments."""
    comp["data_dir"] = str(Path(data_dir).resolve())
    if test_files:
        comp["test"] = {"files": test_files, "id_from": "name"}
    elif not comp.get("test"):
        raise InputError([f"{bundle / 'competition.yaml'}: the competition has no test section to read the test set "
                          f"by; give the files (test_files, --test-files)"])
    if test_csv:
        comp["test"] = dict(comp["test"], csv=test_csv)
    if not submission:
        comp.pop("submission", None)
    if bad_test_files == "silence" and (comp.get("matrix") or comp.get("segments")):
        raise ConfigError(f"--bad-test-files silence is for competitions of whole audio files; this bundle's has "
                          f"{'matrices' if comp.get('matrix') else 'segments'}")
    if bad_test_files:
        comp["audio"] = dict(comp["audio"], bad_test_files=bad_test_files)
    return comp


def _prepare_test_set(comp: dict, work: Outputs, test_files: str | None, submission: bool, log) -> None:
    """Stage 00 of a bundle's test set into ``work`` (:func:`lib.data.prepare.prepare_test`), saying
    its rows, audio notes and warnings as stage 00 would. Raises its ``InputError``, with the
    option to add when ``test_files`` predicts other files than the sample submission lists."""
    hint = (f"--test-files {test_files!r} predicts other files than the sample submission lists: add --no-submission "
            f"(in a notebook submission=False) to write test_blend.csv alone") if test_files and submission else None
    prep = prepare_test(comp, work.root, hint)  # (probe: the sample's ids were named, not the option)
    rows = (f"{prep['test_rows']} segments of {prep['recordings']} recordings" if segment_unit(comp) == "segment"
            else f"{prep['test_rows']} recordings")
    log(f"test set: {rows} under {comp['data_dir']}")
    for note in prep["notes"]:  # files resampled, channels mixed, longer than the window: as stage 00 says them
        log(f"audio: {note}")
    for warning in prep["warnings"]:
        log(f"WARNING: {warning}")


def predict_bundle(bundle: str | Path, data_dir: str | Path, work_dir: str | Path, test_csv: str | None = None,
                   device: str = "auto", workers: int | None = None, engine: str = "auto", log=print,
                   test_files: str | None = None, submission: bool = True, bad_test_files: str | None = None) -> dict:
    """Predict a test set with a bundle and write ``work_dir/submission.csv``.

    ``data_dir``: the competition's input folder (read only): the test audio laid out as the
    competition config's ``test`` section says (``test_csv`` overrides its ``csv``), and the
    sample submission. ``work_dir`` (created; must be writable) receives ``test.csv``, the test
    features (``features/<set>/``), each experiment's test predictions (``preds/<exp>.csv``),
    ``test_blend.csv`` (blended probabilities before the decision), ``decision.json`` and ``submission.csv``.
    ``test_files``: instead of a table, every audio file matching this glob under ``data_dir``
    (ids: the file names), e.g. a folder of unlabelled audio to pseudo-label
    (:mod:`lib.runs.self_training`); ``submission=False`` writes no ``submission.csv`` (only the
    probabilities). ``bad_test_files`` (``error`` or ``silence``) overrides the bundle's
    ``audio.bad_test_files``: ``silence`` predicts a test file that cannot be used from silence.
    ``engine``: ``torch``, ``onnx`` (the bundle's ONNX graphs with ONNX Runtime) or ``auto`` (ONNX
    when the bundle has it and ``onnxruntime`` imports).
    Members of weight 0 in the blend (``single`` keeps one) are not run (``not_run``): the
    weighted mean leaves them out, so the result is the same and the time theirs is saved.
    Returns ``{"rows", "row_noun" (what a row is: recording or segment), "seconds", "experiments",
    "not_run", "method", "decision", "format" (the submission's), "mean_probs", "submission": path or
    None}``. Raises
    ``ConfigError`` before any work for a ``work_dir`` that :func:`check_work_dir` refuses,
    ``MissingArtifact`` or ``InputError`` for a damaged bundle (:func:`load_bundle`) and
    ``InputError`` for bad test input, naming the file and row.
    """
    t0 = time.time()
    check_work_dir(work_dir, data_dir, bundle, test_csv)
    bundle = Path(bundle).resolve()
    manifest, comp, summary = load_bundle(bundle)
    if engine == "onnx":  # before any feature is built
        for exp in manifest["experiments"]:
            if not is_classical(member_config(bundle, manifest, exp)["model"]):
                _onnx_models(bundle / "models" / exp, manifest["folds"][exp], [], "onnx", exp, log)
    comp = _test_config(comp, bundle, data_dir, test_csv, test_files, submission, bad_test_files)
    work = Outputs(Path(work_dir).resolve())
    work.root.mkdir(parents=True, exist_ok=True)
    for old in ("submission.csv", "test_blend.csv", "decision.json"):  # never left beside other predictions
        (work.root / old).unlink(missing_ok=True)
    shutil.rmtree(work.root / "preds", ignore_errors=True)
    _prepare_test_set(comp, work, test_files, submission, log)
    table = work.load_split("test")
    _log_unknown_values(table, summary.get("slice_prior"), manifest.get("metadata_categories") or {}, log)
    device = get_device(device)
    preds, unused, skipped = [], _weight_zero(summary), []
    for i, exp in enumerate(manifest["experiments"]):
        if unused[i]:  # a weighted mean leaves it out: not run, a placeholder
            frame = pd.DataFrame({"id": table["id"], "fold": -1})
            frame[tasks.prob_columns(comp)] = 1 / len(tasks.prob_columns(comp))
            preds.append(frame)
            skipped.append(exp)
            log(f"{exp}: weight 0 in the blend ({summary['method']}): not run")
            continue
        frame, what = _predict_member(bundle, manifest, exp, work, table, comp, device, workers, engine, log)
        write_csv(work.preds(exp), frame)
        preds.append(frame)
        done, spent = len(preds) - len(skipped), time.time() - t0  # members run so far
        left = len(manifest["experiments"]) - len(preds) - sum(unused[len(preds):])
        log(f"{exp}: {what}; {spent:.0f}s so far, about {spent / done * left:.0f}s to go "
            f"({spent / done / len(table):.3f} s per recording and experiment)")
    blender = Blender.from_state(summary["blender"], comp)
    blend, sub = blend_test(comp, blender, summary["decision"]["decision"], preds, table, summary.get("slice_prior"))
    blend_df = pd.DataFrame({"id": table["id"]})
    blend_df[tasks.prob_columns(comp)] = blend
    write_json(work.root / "decision.json", summary["decision"]["decision"])  # (pseudo_label.py --source reads it)
    write_csv(work.root / "test_blend.csv", blend_df)
    path = None
    if sub is not None:
        path = work.root / "submission.csv"
        write_csv(path, sub)
    return {"rows": len(table), "row_noun": row_noun(comp), "seconds": time.time() - t0,
            "experiments": manifest["experiments"], "not_run": skipped,
            "method": summary["method"], "decision": summary["decision"]["decision"], "submission": path,
            "format": (comp.get("submission") or {}).get("format"),
            "mean_probs": dict(zip(tasks.prob_columns(comp), np.round(blend.mean(0), 4).tolist()))}
