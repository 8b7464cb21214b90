"""Score a submission file in the competition's format against a labelled CSV (a private
holdout), with every competition metric the format allows and a per-class breakdown
(:func:`score_submission`; ``score_submission.py``).

Decisions (for accuracy, F1, ...) are the defaults of :func:`lib.data.tasks.decide`: the most
probable class (binary: p(positive) > 0.5), every class with p > 0.5 for multi-label tasks.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..core.config import check_classes
from ..core.errors import ConfigError, InputError
from ..core.schema import SUBMISSION_FORMATS
from ..core.utils import read_text_table
from ..data import tasks
from ..data.slices import SlicedLabels, category_text
from .metrics import base_metric, get_metric, metrics_with_worst_slice, per_class_report, slices_left_out


def _lines(index) -> str:
    """File line numbers (the header is line 1) of DataFrame rows ``index``."""
    return ", ".join(str(i + 2) for i in index)


def _read(path, what: str) -> pd.DataFrame:
    try:
        return read_text_table(path)  # InputError naming the file when not UTF-8, malformed or empty
    except FileNotFoundError:
        raise InputError([f"{path}: {what} file not found"]) from None


def _column(df: pd.DataFrame, path, candidates, what: str, option: str) -> str:
    """The first of ``candidates`` that ``df`` has; raises ``InputError`` naming the file."""
    for c in candidates:
        if c and c in df.columns:
            return c
    tried = list(dict.fromkeys(c for c in candidates if c))
    raise InputError([f"{path}: no {what} column (looked for {tried}; columns are {list(df.columns)}); {option}"])


def _encode_labels(values, comp: dict, separator: str, path, problems: list, submission: bool = False) -> np.ndarray:
    """Label cells -> encoded ``y`` (:func:`lib.data.tasks.class_index`); an unknown label adds a
    problem naming the file and line (and the row encodes as class 0 / no label); in a binary
    ``submission``, the first that is a number says it may be a probability (``--format``)."""
    lookup = {c: i for i, c in enumerate(comp["classes"])}
    multi, hinted = comp["task"] == "multilabel", not (submission and comp["task"] == "binary")
    y = np.zeros((len(values), len(lookup)) if multi else len(values), dtype=np.int64)
    for row, cell in enumerate(values):
        labels = [v for v in cell.split(separator) if v] if multi else [cell.strip()]
        for label in labels:
            if label not in lookup:
                hint = not hinted and pd.to_numeric(pd.Series([label]), errors="coerce").notna()[0]
                hinted = hinted or hint
                problems.append(f"{path} line {row + 2}: unknown label {label!r}; classes are {comp['classes']}"
                                + (" (a probability? give --format probability)" if hint else ""))
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


def _check_format(fmt: str | None, comp: dict, has_section: bool) -> None:
    """Raise ``ConfigError`` when submission format ``fmt`` is not one of
    :data:`SUBMISSION_FORMATS` (``has_section``: whether the config has a ``submission`` section,
    which the message mentions when not) or is ``probability`` for a task of ``comp`` that is not binary."""
    if fmt not in SUBMISSION_FORMATS:
        raise ConfigError(f"submission format {fmt!r} is not one of {SUBMISSION_FORMATS}"
                          + ("" if has_section else " (the config has no 'submission' section: give the format)"))
    if fmt == "probability" and comp["task"] != "binary":
        raise ConfigError(f"submission format 'probability' is for binary tasks, this one is {comp['task']}")


def _label_columns(lab: pd.DataFrame, labels, comp: dict, multi: bool, id_column: str | None,
                   target_column: str | None) -> tuple[str, str | None, list[str] | None]:
    """The columns of the labels table ``lab`` (read from file ``labels``), as
    :func:`score_submission` describes: ``(id column, label column, None)``, or for a multi-label
    task (``multi``) without a label column ``(id column, None, the 0/1 class columns)``: the
    config's classes, or, when it lists none, every other column when all hold 0 or 1. Raises
    ``InputError`` naming the file when the id or label column is missing."""
    sub_cfg, train = comp.get("submission") or {}, comp.get("train") or {}
    lab_id = _column(lab, labels, [id_column] if id_column else [sub_cfg.get("id_column"), train.get("id_column")],
                     "id", "give it with --id-column")
    lab_target = [target_column] if target_column else [train.get("target_column"), sub_cfg.get("target_column")]
    if not any(c and c in lab.columns for c in lab_target) and multi and not target_column:
        lab_cols = list(train.get("target_columns") or comp.get("classes") or [])
        rest = [c for c in lab.columns if c != lab_id]
        if not lab_cols and rest and all(pd.to_numeric(lab[c], errors="coerce").isin([0, 1]).all() for c in rest):
            lab_cols = rest  # no classes known: every other column holds 0/1, one per class
        if lab_cols and set(lab_cols) <= set(lab.columns):
            return lab_id, None, lab_cols
    return lab_id, _column(lab, labels, lab_target, "label", "give it with --target-column"), None


def _classes_from_labels(comp: dict, multi: bool, lab: pd.DataFrame, lab_target: str | None,
                         lab_cols: list[str] | None, sep: str, labels) -> str:
    """Set ``comp['classes']`` from the labels table ``lab`` (file ``labels``): its 0/1 class
    columns ``lab_cols``, else the sorted labels of column ``lab_target`` (cells split at ``sep``
    when ``multi``: a multi-label task). Returns the note saying so; raises ``ConfigError`` when
    they do not fit the config (:func:`lib.core.config.check_classes`)."""
    cells = [] if lab_cols else lab[lab_target]
    found = {v.strip() for cell in cells for v in (cell.split(sep) if multi else [cell])}
    comp["classes"] = lab_cols or sorted(found - {""})
    check_classes(comp, f"{labels} (classes found in it)")
    return f"classes taken from the labels file (the config lists none): {comp['classes']}"


def _id_problems(lab: pd.DataFrame, lab_id: str, labels, sub: pd.DataFrame, sub_id: str, submission,
                 problems: list) -> None:
    """Add to ``problems`` the duplicated ids of the labels (``lab[lab_id]``, file ``labels``) and
    of the submission (``sub[sub_id]``, file ``submission``), then the labels' ids missing from the
    submission and the submission's ids not in the labels."""
    _ids(lab, lab_id, labels, problems)
    _ids(sub, sub_id, submission, problems)
    missing = sorted(set(lab[lab_id]) - set(sub[sub_id]))
    extra = sorted(set(sub[sub_id]) - set(lab[lab_id]))
    if missing:
        problems.append(f"{submission}: {len(missing)} id(s) of {labels} missing: {_some(missing)}")
    if extra:
        problems.append(f"{submission}: {len(extra)} id(s) not in {labels}: {_some(extra)}")


def _submission_values(sub: pd.DataFrame, fmt: str, comp: dict, multi: bool, submission,
                       problems: list) -> np.ndarray | None:
    """The submission table ``sub`` (file ``submission``) in format ``fmt`` as ``x``: decisions
    (``label``/``indicators``: ``(rows,)`` class indices, multi-label ``(rows, n_classes)`` 0/1)
    or probabilities ``(rows, n_classes)``, in ``sub``'s row order. Missing columns, unknown
    labels and bad cells add to ``problems`` (``None`` when the columns are missing). ``multi``:
    whether the task is multi-label."""
    sub_cfg, train = comp.get("submission") or {}, comp.get("train") or {}
    sub_target = sub_cfg.get("target_column") or train.get("target_column") or "target"
    need = [sub_target] if fmt in ("label", "probability") else comp["classes"]
    absent = [c for c in need if c not in sub.columns]
    x = None
    if absent:
        problems.append(f"{submission}: no column(s) {absent} (format {fmt!r}"
                        + ("" if fmt in ("label", "probability") else ": one column per class, named as the class")
                        + f"); columns are {list(sub.columns)}")
    elif fmt == "label":
        x = _encode_labels(sub[need[0]].tolist(), comp, sub_cfg.get("label_separator", " "), submission, problems,
                           submission=True)
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
        if not multi:  # one class per row: its probabilities sum to 1 (0.01 allows rounded cells)
            off = np.nonzero(np.abs(x.sum(1) - 1) > 0.01)[0]
            if len(off):
                more = f" and {len(off) - 20} more" if len(off) > 20 else ""
                problems.append(f"{submission} line(s) {_lines(off[:20])}{more}: the class probabilities do not sum "
                                f"to 1 (line {off[0] + 2}: {x[off[0]].sum():.4g}; a {comp['task']} task has one class "
                                f"per row)")
    return x


def _score(y: np.ndarray, x: np.ndarray, fmt: str, comp: dict, multi: bool,
           no_slices: str | None = None) -> tuple[str, dict, dict, pd.DataFrame]:
    """Score the submission's values ``x`` (:func:`_submission_values`, in the labels' row order)
    against the encoded labels ``y`` (carrying slices for the per-slice metrics, else ``no_slices``
    says why those are not computable) with every metric of ``comp`` and, where it declares
    ``slices``, the worst slice's competition metric (``multi``: a multi-label
    task). Returns ``(holds, scores, not_computable, per_class)`` as :func:`score_submission`
    describes them."""
    holds = "labels" if fmt in ("label", "indicators") else "probabilities"
    probs, pred = (None, x) if holds == "labels" else (x, tasks.decide(x, comp))
    scores, not_computable = {}, {}
    for name in metrics_with_worst_slice(comp):  # worst_<metric> beside the metrics where slices are declared, as 04
        m = get_metric(name, comp)
        if m.uses == "probs" and holds == "labels":
            not_computable[name] = f"needs probabilities; a {fmt!r} submission holds decisions only"
        elif no_slices and base_metric(name) != name:
            not_computable[name] = no_slices
        else:
            value = m(y, probs if m.uses == "probs" else pred, comp)  # (undefined: said below)
            if value is not None and np.isfinite(value):
                scores[name] = value
            else:
                not_computable[name] = _undefined(name, y, multi)
    per_class = per_class_report(y, pred, comp).head(len(comp["classes"]))  # the class rows
    per_class["predicted"] = pred.sum(0) if multi else np.bincount(pred, minlength=len(comp["classes"]))
    return holds, scores, not_computable, per_class


def _undefined(name: str, y, multi: bool) -> str:
    """Why metric ``name`` scored NaN on the labels ``y``: a per-slice metric undefined in every
    slice value, else the rows and the classes present (multi-label: with both positive and
    negative rows)."""
    if base_metric(name) != name:
        return f"{base_metric(name)} undefined in every slice value of these labels"
    y = np.asarray(y)
    present = int((y.any(0) & ~y.all(0)).sum()) if multi else np.unique(y).size
    what = "class(es) with positive and negative rows" if multi else "class(es) present"
    return f"undefined on these labels: {len(y)} row(s), {present} {what}"


def score_submission(submission: str | Path, labels: str | Path, comp: dict, id_column: str | None = None,
                     target_column: str | None = None, fmt: str | None = None) -> dict:
    """Score a submission file against a labelled CSV with every competition metric it allows.

    ``comp``: a competition config (:func:`lib.components.load_competition`, or an output
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
    submission; for ``label``/``indicators`` they are listed in ``not_computable`` with why, as
    are the metrics undefined on these labels (AUROC of one class).
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
    _check_format(fmt, comp, bool(sub_cfg))
    multi = comp["task"] == "multilabel"
    lab, sub = _read(labels, "labels"), _read(submission, "submission")
    notes = []

    lab_id, lab_target, lab_cols = _label_columns(lab, labels, comp, multi, id_column, target_column)
    sep = train.get("label_separator", " ")
    if not comp.get("classes"):
        notes.append(_classes_from_labels(comp, multi, lab, lab_target, lab_cols, sep, labels))
    sub_id = _column(sub, submission, [sub_cfg.get("id_column"), lab_id], "id",
                     "name it as the config's submission.id_column")

    problems = []
    _id_problems(lab, lab_id, labels, sub, sub_id, submission, problems)
    y = (_numbers(lab, lab_cols, labels, problems, allowed=[0, 1]).astype(np.int64) if lab_cols
         else _encode_labels(lab[lab_target].tolist(), comp, sep, labels, problems))
    x = _submission_values(sub, fmt, comp, multi, submission, problems)
    if problems:
        raise InputError(problems)
    x = x[pd.Index(sub[sub_id]).get_indexer(lab[lab_id])]  # rows in the labels' order
    absent = [c for c in comp.get("slices") or [] if c not in lab.columns]
    if comp.get("slices") and not absent:  # worst_/slice_mean_ metrics score each slice value of the labels file
        y = SlicedLabels(y, {c: category_text(lab[c]) for c in comp["slices"]})
    no_slices = f"scores per slice: {labels} has no slice column(s) {absent}" if absent else None  # (no slices
    # declared: get_metric refuses the per-slice metrics when the config is read)

    holds, scores, not_computable, per_class = _score(y, x, fmt, comp, multi, no_slices)
    notes += slices_left_out(scores, comp, y, f"rows of {labels}", "so its score there is not in it")
    return {"rows": len(lab), "format": fmt, "holds": holds, "scores": scores, "not_computable": not_computable,
            "per_class": per_class, "notes": notes}
