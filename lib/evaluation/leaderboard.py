"""Compare experiments and score submissions.

* :func:`leaderboard`: one row per experiment of an output folder, every metric recomputed from
  its OOF file (``oof/<exp>.csv``) and the competition config, so a metric added to the
  competition later, or any registered one, can be shown and sorted by; with the training status
  from the records (:mod:`lib.core.artifacts`). :func:`format_leaderboard` prints it,
  :func:`blend_summary` the blend of ``ensemble.json``.
* :func:`score_submission`: a submission file in the competition's format scored against a
  labelled CSV (a private holdout), with a per-class breakdown.

Decisions (for accuracy, F1, ...) are the defaults of :func:`lib.data.tasks.decide`: the most
probable class (binary: p(positive) > 0.5), every class with p > 0.5 for multi-label tasks.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import ConfigError, InputError
from ..core.paths import Outputs
from ..core.utils import format_seconds, read_json
from ..data import tasks
from .metrics import get_metric, per_class_report, score_all


def training_status(out: Outputs, exp: str, config: dict | None) -> tuple[str, str]:
    """``(status, why)`` of an experiment's training, from its record (sizes checked, not hashes):
    ``complete``; ``partial`` (folds missing); ``stale`` (its feature set was rebuilt or removed
    since); ``incomplete`` (no record: never finished, or a file of it changed)."""
    rec, why = out.trained(exp).check(hashes=False)
    if rec is None:
        return "incomplete", why
    if rec["info"].get("partial"):
        return "partial", f"folds {rec['info'].get('missing_folds')} missing"
    fset = ((config or {}).get("features") or {}).get("set")
    if fset and "features" in rec.get("inputs", {}):
        feats, _ = out.features_record(fset).check(hashes=False)
        if feats is None or feats["id"] != rec["inputs"]["features"]:
            return "stale", f"feature set {fset!r} rebuilt or removed since training"
    return "complete", ""


def leaderboard(out: Outputs | str | Path, sort: str | None = None, include_all: bool = False) -> pd.DataFrame:
    """One row per experiment in ``models/``, best first by ``sort`` in its own direction.

    ``sort``: any registered metric or competition custom metric (default: the competition's
    ``metric``); scores are recomputed from ``oof/<exp>.csv`` for the competition's ``metrics``
    and ``sort`` (a partial experiment: over its finished folds' rows). Experiments without a
    complete training record are left out (``df.attrs["skipped"]``: ``{exp: why}``) unless
    ``include_all``. Columns: ``rank`` (NA when the sort score is NaN), ``experiment``,
    ``model``, ``input`` (feature set), one per metric, ``fold_mean``/``fold_std`` (the
    competition metric over each fold's OOF rows), ``folds`` ("done/total"), ``status``
    (:func:`training_status`, plus ``stale`` when the OOF rows no longer match ``folds.csv``),
    ``parameters``, ``seconds`` (training time, all folds), ``note``. ``df.attrs`` also holds
    ``sort``, ``higher_is_better``, ``metrics`` and ``fold_metric``.
    Raises ``MissingArtifact`` without stage 00's output, ``ConfigError`` for an unknown metric.
    """
    out = out if isinstance(out, Outputs) else Outputs(Path(out).resolve())
    comp = out.load_competition()
    sort = sort or comp["metric"]
    higher = get_metric(sort, comp, "sort").higher_is_better
    names = list(dict.fromkeys([*comp["metrics"], sort]))
    folds_df = out.load_split("train").set_index("id")
    n_folds = folds_df.loc[folds_df["fold"] >= 0, "fold"].nunique()  # -1: pseudo-labelled rows, no fold
    cols = tasks.prob_columns(comp)
    rows, skipped = [], {}
    for folder in sorted(p for p in (out.root / "models").glob("*") if p.is_dir()):
        exp = folder.name
        scores = read_json(folder / "scores.json") or {}
        config = scores.get("config") or {}
        status, note = training_status(out, exp, config)
        if status == "incomplete" and not include_all:
            skipped[exp] = note
            continue
        row = {"experiment": exp, "model": (config.get("model") or {}).get("name"),
               "input": (config.get("features") or {}).get("set"), **dict.fromkeys(names, np.nan),
               "fold_mean": np.nan, "fold_std": np.nan, "folds": f"0/{n_folds}", "status": status,
               "parameters": scores.get("n_parameters"), "seconds": scores.get("seconds"), "note": note}
        try:
            oof = pd.read_csv(out.oof(exp), dtype={"id": str, "target": str})
            oof["target"] = oof["target"].fillna("")
            y, probs = tasks.class_index(oof["target"], comp), oof[cols].to_numpy(dtype=float)
        except FileNotFoundError:
            oof = None
        except (OSError, KeyError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            oof = None  # only an incomplete experiment (--all) can get here
            row["note"] = f"{note}; OOF file unreadable: {exc}".strip("; ")
        if oof is not None:
            row.update(score_all(names, y, probs, comp))
            per_fold = [score_all([comp["metric"]], y[oof.fold == f], probs[oof.fold == f], comp)[comp["metric"]]
                        for f in sorted(oof["fold"].unique())]
            row.update(fold_mean=np.mean(per_fold), fold_std=np.std(per_fold, ddof=1) if len(per_fold) > 1 else np.nan,
                       folds=f"{len(per_fold)}/{n_folds}")
            now = folds_df.reindex(oof["id"])
            if now["fold"].isna().any() or not (now["fold"].to_numpy() == oof["fold"].to_numpy()).all() \
                    or not (now["target"].to_numpy() == oof["target"].to_numpy()).all():
                row.update(status="stale", note="its OOF rows no longer match folds.csv (00_prepare.py ran since)")
        rows.append(row)
    df = pd.DataFrame(rows, columns=["experiment", "model", "input", *names, "fold_mean", "fold_std", "folds",
                                     "status", "parameters", "seconds", "note"])
    df = df.sort_values(sort, ascending=not higher, na_position="last", kind="stable").reset_index(drop=True)
    df.insert(0, "rank", pd.array([i + 1 if pd.notna(v) else pd.NA for i, v in enumerate(df[sort])], dtype="Int64"))
    df.attrs.update(sort=sort, higher_is_better=higher, metrics=names, fold_metric=comp["metric"], skipped=skipped)
    return df


def format_leaderboard(df: pd.DataFrame) -> str:
    """:func:`leaderboard`'s table as text: scores to 4 decimals, the fold scores as mean ± std,
    parameters in millions (``M``) or thousands (``k``), training time as ``11m24s``."""
    def num(v, fmt):
        return "-" if v is None or pd.isna(v) else fmt(v)

    shown = pd.DataFrame({"rank": df["rank"].astype(object).where(df["rank"].notna(), "-"),
                          "experiment": df["experiment"], "model": df["model"].fillna("-"),
                          "input": df["input"].fillna("-")})
    for m in df.attrs.get("metrics", []):
        arrow = "" if m != df.attrs.get("sort") else (" ↓" if df.attrs.get("higher_is_better") else " ↑")
        shown[m + arrow] = [num(v, lambda v: f"{v:.4f}") for v in df[m]]
    shown[f"{df.attrs.get('fold_metric', '')} by fold"] = [
        num(a, "{:.4f}".format) + (f" ± {b:.4f}" if pd.notna(a) and pd.notna(b) else "")
        for a, b in zip(df["fold_mean"], df["fold_std"])]
    shown["folds"], shown["status"] = df["folds"], df["status"]
    shown["params"] = [num(v, lambda v: f"{v / 1e6:.2f} M" if v >= 1e5 else f"{v / 1e3:.1f} k" if v >= 1e3
                           else f"{int(v)}") for v in df["parameters"]]
    shown["train time"] = [num(v, format_seconds) for v in df["seconds"]]
    shown["note"] = df["note"].fillna("")
    if not shown["note"].str.len().any():
        shown = shown.drop(columns="note")
    return shown.to_string(index=False)


def blend_summary(out: Outputs) -> str | None:
    """One line for the blend in ``ensemble.json``: its method, OOF scores and the members'
    weights of 0.005 and more (methods without weights, e.g. stacking: the members), marked when
    its record is not complete; ``None`` without ``ensemble.json``."""
    ens = read_json(out.root / "ensemble.json")
    if not ens:
        return None
    method = str(ens.get("method", "?")) + (f", T={ens['temperature']}" if ens.get("method") == "softmax" else "")
    members = ens.get("experiments") or []
    weighted = sorted((e for e in members if isinstance(e.get("weight"), (int, float))), key=lambda e: -e["weight"])
    big = [e for e in weighted if e["weight"] >= 0.005]
    if weighted:
        weights = "weights: " + ", ".join(f"{e['experiment']} {e['weight']:.2f}" for e in big)
        weights += f", {len(weighted) - len(big)} more below 0.005" if len(big) < len(weighted) else ""
    else:
        weights = "members: " + ", ".join(str(e.get("experiment")) for e in members)
    scores = "  ".join(f"{k} {v:.4f}" for k, v in (ens.get("blend") or {}).items() if isinstance(v, (int, float)))
    rec, why = out.ensembled.check(hashes=False)
    return (f"blend ({method}) of {len(members)}: OOF {scores}  ({weights})"
            + ("" if rec else f"  [ensemble.json is not current: {why}]"))


# --- scoring a submission against labels ---------------------------------------------------------

SUBMISSION_FORMATS = ("label", "probability", "probabilities", "indicators")


def _lines(index) -> str:
    """File line numbers (the header is line 1) of DataFrame rows ``index``."""
    return ", ".join(str(i + 2) for i in index)


def _read(path, what: str) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise InputError([f"{path}: {what} file not found"]) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError([f"{path}: cannot read the {what} CSV: {exc}"]) from None


def _column(df: pd.DataFrame, path, candidates, what: str, option: str) -> str:
    """The first of ``candidates`` that ``df`` has; raises ``InputError`` naming the file."""
    for c in candidates:
        if c and c in df.columns:
            return c
    tried = [c for c in candidates if c]
    raise InputError([f"{path}: no {what} column (looked for {tried}; columns are {list(df.columns)}); {option}"])


def _encode_labels(values, comp: dict, separator: str, path, problems: list) -> np.ndarray:
    """Label cells -> encoded ``y`` (:func:`lib.data.tasks.class_index`); an unknown label adds a
    problem naming the file and line (and the row encodes as class 0 / no label)."""
    lookup = {c: i for i, c in enumerate(comp["classes"])}
    multi = comp["task"] == "multilabel"
    y = np.zeros((len(values), len(lookup)) if multi else len(values), dtype=np.int64)
    for row, cell in enumerate(values):
        labels = [v for v in cell.split(separator) if v] if multi else [cell.strip()]
        for label in labels:
            if label not in lookup:
                problems.append(f"{path} line {row + 2}: unknown label {label!r}; classes are {comp['classes']}")
            elif multi:
                y[row, lookup[label]] = 1
            else:
                y[row] = lookup[label]
    return y


def _numbers(df: pd.DataFrame, columns, path, problems: list, allowed=None) -> np.ndarray:
    """Numeric cells ``(rows, len(columns))`` in [0, 1] (or in ``allowed``); a bad cell adds a
    problem naming file, line and column."""
    values = df[columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values) | (values < 0) | (values > 1)
    if allowed is not None:
        bad |= ~np.isin(values, allowed)
    for r, c in zip(*np.nonzero(bad)):
        problems.append(f"{path} line {r + 2}, column {columns[c]!r}: {df[columns[c]].iloc[r]!r} is not "
                        + ("0 or 1" if allowed is not None else "a probability in [0, 1]"))
    return np.nan_to_num(values)


def _ids(df: pd.DataFrame, column: str, path, problems: list) -> None:
    """Add a problem per duplicated id of ``df[column]`` naming its lines."""
    dup = df[column][df[column].duplicated(keep=False)]
    for value, rows in dup.groupby(dup).groups.items():
        problems.append(f"{path}: id {value!r} appears {len(rows)} times (lines {_lines(rows)})")


def _some(ids) -> str:
    ids = list(ids)
    return ", ".join(map(repr, ids[:20])) + (f" ... and {len(ids) - 20} more" if len(ids) > 20 else "")


def score_submission(submission: str | Path, labels: str | Path, comp: dict, id_column: str | None = None,
                     target_column: str | None = None, fmt: str | None = None) -> dict:
    """Score a submission file against a labelled CSV with every competition metric it allows.

    ``comp``: a competition config (:func:`lib.core.config.load_competition`, or an output
    folder's ``competition.yaml``); ``fmt`` overrides ``comp['submission']['format']``
    (``label``, ``probability``, ``probabilities``, ``indicators``; needed when the config has no
    ``submission`` section). The submission's id column is ``submission.id_column`` (or the
    labels' id column), its target column ``submission.target_column`` (or ``train.target_column``), its class columns named
    as the classes. The labels' id column: ``id_column``, else the first present of
    ``submission.id_column``, ``train.id_column``; the labels: ``target_column``, else
    ``train.target_column`` or ``submission.target_column`` (multi-label: labels joined by
    ``train.label_separator``), else for multi-label one 0/1 column per class (``train.target_columns``
    or columns named as the classes). Without ``classes`` in ``comp``, the sorted labels of
    the labels file are taken.

    Metrics that score probabilities (AUROC, ...) need a ``probability``/``probabilities``
    submission; for ``label``/``indicators`` they are listed in ``not_computable`` with why.
    Returns ``{"rows", "format", "holds": "labels"|"probabilities", "scores": {metric: value},
    "not_computable": {metric: why}, "per_class": DataFrame(class, precision, recall, f1,
    support, predicted), "notes": [...]}``.
    Raises ``InputError`` listing every problem (missing columns, duplicated ids, ids missing
    from or extra in the submission, unknown labels, cells that are not probabilities or 0/1),
    each with its file and line; ``ConfigError`` for an unknown format or one that does not fit the task.
    """
    comp = dict(comp)
    sub_cfg, train = comp.get("submission") or {}, comp.get("train") or {}
    fmt = fmt or sub_cfg.get("format")
    if fmt not in SUBMISSION_FORMATS:
        raise ConfigError(f"submission format {fmt!r} is not one of {SUBMISSION_FORMATS}"
                          + ("" if sub_cfg else " (the config has no 'submission' section: give the format)"))
    if fmt == "probability" and comp["task"] != "binary":
        raise ConfigError(f"submission format 'probability' is for binary tasks, this one is {comp['task']}")
    multi = comp["task"] == "multilabel"
    lab, sub = _read(labels, "labels"), _read(submission, "submission")
    notes = []

    lab_id = _column(lab, labels, [id_column] if id_column else [sub_cfg.get("id_column"), train.get("id_column")],
                     "id", "give it with --id-column")
    lab_target = [target_column] if target_column else [train.get("target_column"), sub_cfg.get("target_column")]
    lab_cols = None
    if not any(c and c in lab.columns for c in lab_target) and multi and not target_column:
        lab_cols = list(train.get("target_columns") or comp.get("classes") or [])
        if not lab_cols or not set(lab_cols) <= set(lab.columns):
            lab_cols = None
    if lab_cols is None:
        lab_target = _column(lab, labels, lab_target, "label", "give it with --target-column")
    sep = train.get("label_separator", " ")
    if not comp.get("classes"):
        cells = [] if lab_cols else lab[lab_target]
        found = {v.strip() for cell in cells for v in (cell.split(sep) if multi else [cell])}
        comp["classes"] = lab_cols or sorted(found - {""})
        from ..core.config import check_classes

        check_classes(comp, f"{labels} (classes found in it)")
        notes.append(f"classes taken from the labels file (the config lists none): {comp['classes']}")
    sub_id = _column(sub, submission, [sub_cfg.get("id_column"), lab_id], "id",
                     "name it as the config's submission.id_column")

    problems = []
    _ids(lab, lab_id, labels, problems)
    _ids(sub, sub_id, submission, problems)
    missing = sorted(set(lab[lab_id]) - set(sub[sub_id]))
    extra = sorted(set(sub[sub_id]) - set(lab[lab_id]))
    if missing:
        problems.append(f"{submission}: {len(missing)} id(s) of {labels} missing: {_some(missing)}")
    if extra:
        problems.append(f"{submission}: {len(extra)} id(s) not in {labels}: {_some(extra)}")
    y = (_numbers(lab, lab_cols, labels, problems, allowed=[0, 1]).astype(np.int64) if lab_cols
         else _encode_labels(lab[lab_target].tolist(), comp, sep, labels, problems))

    sub_target = sub_cfg.get("target_column") or train.get("target_column") or "target"
    need = [sub_target] if fmt in ("label", "probability") else comp["classes"]
    absent = [c for c in need if c not in sub.columns]
    x = None
    if absent:
        problems.append(f"{submission}: no column(s) {absent} (format {fmt!r}"
                        + ("" if fmt in ("label", "probability") else ": one column per class, named as the class")
                        + f"); columns are {list(sub.columns)}")
    elif fmt == "label":
        x = _encode_labels(sub[need[0]].tolist(), comp, sub_cfg.get("label_separator", " "), submission, problems)
    elif fmt == "indicators":
        x = _numbers(sub, need, submission, problems, allowed=[0, 1]).astype(np.int64)
        if not multi:
            for r in np.nonzero(x.sum(1) != 1)[0]:
                problems.append(f"{submission} line {r + 2}: {x[r].sum()} classes marked; "
                                f"a {comp['task']} task needs exactly one")
            x = x.argmax(1)
    elif fmt == "probability":
        p = _numbers(sub, need, submission, problems)[:, 0]
        pos = comp["classes"].index(comp["positive"])
        x = np.empty((len(p), 2))
        x[:, pos], x[:, 1 - pos] = p, 1 - p
    else:
        x = _numbers(sub, need, submission, problems)
    if problems:
        raise InputError(problems)
    x = x[pd.Index(sub[sub_id]).get_indexer(lab[lab_id])]  # rows in the labels' order

    holds = "labels" if fmt in ("label", "indicators") else "probabilities"
    probs, pred = (None, x) if holds == "labels" else (x, tasks.decide(x, comp))
    scores, not_computable = {}, {}
    for name in comp["metrics"]:
        m = get_metric(name, comp)
        if m.uses == "probs" and holds == "labels":
            not_computable[name] = f"needs probabilities; a {fmt!r} submission holds decisions only"
        else:
            scores[name] = m(y, probs if m.uses == "probs" else pred, comp)
    per_class = per_class_report(y, pred, comp).head(len(comp["classes"]))  # the class rows
    per_class["predicted"] = pred.sum(0) if multi else np.bincount(pred, minlength=len(comp["classes"]))
    return {"rows": len(lab), "format": fmt, "holds": holds, "scores": scores, "not_computable": not_computable,
            "per_class": per_class, "notes": notes}
