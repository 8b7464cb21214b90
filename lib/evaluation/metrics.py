"""Competition metrics over class probabilities, from scikit-learn wherever it has the metric.

A metric is a :class:`Metric`: a function ``fn(y, x, comp) -> float``, its direction
(``higher_is_better``) and what ``x`` is (``uses``): the class probabilities ``(rows,
n_classes)`` (ranking and probability metrics: AUROC, average precision, log loss) or the
decisions made from them (``labels``: class indices ``(rows,)``, or for a multi-label task a 0/1
matrix ``(rows, n_classes)``; accuracy, F1, ...). ``y`` is encoded as in
:func:`lib.data.tasks.class_index` and ``comp`` is the competition config (``task``,
``classes``, ``positive``, ...; :func:`score_all` fills in a default one when none is given).

Decisions come from :func:`lib.data.tasks.decide`: the most probable class (binary: p(positive)
> 0.5), every class with p > 0.5 for multi-label tasks, or the thresholds / class biases fitted
on OOF predictions (:mod:`lib.evaluation.decisions`) when :func:`score_all` is given a
``decision``. For a binary task the ranking metrics score the ``positive`` class's column.

Every place a metric drives a choice (best epoch, early stopping, plateau schedule, ensemble
weights, thresholds) compares scores through :func:`is_better` / :func:`sign`, so metrics where
lower is better (``log_loss``, ``outcome_cost``) work everywhere.

Per slice (:mod:`lib.data.slices`: a database, a device, a site): ``worst_<metric>`` is the
worst value of ``<metric>`` over the slice values of every declared slice column (NaN values,
e.g. AUROC of a slice with one class, left out: 00 and 04 name them, :func:`undefined_in_slices`),
``slice_mean_<metric>`` their mean; both need
labels that carry their rows' slices (:class:`lib.data.slices.SlicedLabels`, which every stage
gives when the competition declares ``slices``) and work wherever a metric does.

A competition's own metric: ``custom_metrics: {NAME: {function: FILE.py:FUNCTION,
higher_is_better: true, uses: labels|probs}}`` in its YAML (FILE relative to the YAML file);
``FUNCTION(y, x, comp) -> float`` as above. :func:`get_metric` loads it.
"""
from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch  # noqa: F401  before scikit-learn (lib/data/folds.py says why)
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)
from sklearn.metrics import log_loss as sklearn_log_loss

from ..core.errors import ConfigError
from ..core.registry import Registry, did_you_mean
from ..data import tasks
from ..data.slices import SlicedLabels, slices_of, with_slices

METRICS = Registry("metric")
USES = ("labels", "probs")


@dataclass(frozen=True)
class Metric:
    """A metric ``fn(y, x, comp) -> float``; ``x`` is the decisions (``uses="labels"``) or the
    class probabilities (``uses="probs"``); ``tasks``: the task types it is defined for;
    ``check(comp)``: raises ``ConfigError`` when the competition cannot use it (class names,
    ``normal_class``)."""
    fn: Callable
    higher_is_better: bool = True
    uses: str = "labels"
    tasks: tuple = ("binary", "multiclass", "multilabel")
    check: Callable | None = None

    def __call__(self, y, x, comp: dict) -> float:
        return float(self.fn(y, x, comp))


def metric(name: str, higher_is_better: bool = True, uses: str = "labels", task_types=None, check=None):
    """Decorator registering ``fn(y, x, comp)`` as the :class:`Metric` ``name`` in :data:`METRICS`."""
    def deco(fn):
        METRICS.register(name)(Metric(fn, higher_is_better, uses, tuple(task_types or Metric.tasks), check))
        return fn
    return deco


_CUSTOM: dict[tuple, Metric] = {}


def load_custom(name: str, spec: dict, where: str = "custom_metrics") -> Metric:
    """The :class:`Metric` of a ``custom_metrics`` entry ``{function: "FILE.py:FUNCTION",
    higher_is_better, uses}`` (FILE an absolute path here: :func:`lib.components.load_competition`
    resolves it). Raises ``ConfigError`` naming ``where`` and the entry for a missing file or
    function, a bad ``uses`` or a name that a built-in metric has."""
    key = (name, str(spec.get("function")), bool(spec.get("higher_is_better", True)), spec.get("uses", "probs"))
    if key in _CUSTOM:
        return _CUSTOM[key]
    if name in METRICS.names():
        raise ConfigError(f"{where}: custom metric {name!r} has the name of a built-in metric; choose another name")
    file, _, func = key[1].rpartition(":")
    if not file or not func or not Path(file).is_file():
        raise ConfigError(f"{where}: custom metric {name!r}: function {key[1]!r} must be 'FILE.py:FUNCTION' "
                          f"with an existing file")
    if key[3] not in USES:
        raise ConfigError(f"{where}: custom metric {name!r}: uses {key[3]!r} is not one of {USES}")
    module_spec = importlib.util.spec_from_file_location(f"custom_metric_{name}", file)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # the user's file: say which one failed and why
        raise ConfigError(f"{where}: custom metric {name!r}: importing {file} failed: {exc!r}") from exc
    fn = getattr(module, func, None)
    if not callable(fn):
        raise ConfigError(f"{where}: custom metric {name!r}: {file} has no function {func!r}")
    _CUSTOM[key] = Metric(fn, key[2], key[3])
    return _CUSTOM[key]


SLICE_AGGREGATES = {"worst_": "worst", "slice_mean_": "mean"}
"""Prefixes of the per-slice versions of any metric -> how the slices' values are combined."""


def base_metric(name: str) -> str:
    """The metric a per-slice name scores in each slice (``worst_macc`` -> ``macc``); other names
    unchanged."""
    for start in SLICE_AGGREGATES:
        if name.startswith(start) and len(name) > len(start):
            return name[len(start):]
    return name


def metrics_with_worst_slice(comp: dict) -> list[str]:
    """The competition's ``metrics``, plus ``worst_<metric>`` of its ``metric`` when it declares
    ``slices`` and the metric is not already a per-slice one: what the members' table of 04 and
    the leaderboard show."""
    extra = f"worst_{comp['metric']}"
    per_slice = comp.get("slices") and base_metric(comp["metric"]) == comp["metric"]
    return list(dict.fromkeys(comp["metrics"] + ([extra] if per_slice else [])))


def slice_groups(y) -> list[tuple[str, str, np.ndarray]]:
    """``(column, value, row mask)`` for every value of every slice column ``y`` carries (sorted)."""
    return [(col, v, values == v) for col, values in (slices_of(y) or {}).items() for v in sorted(set(values))]


def _slice_metric(name: str, base: Metric, how: str) -> Metric:
    """The ``worst`` or ``mean`` over slices of metric ``base`` (see the module's docstring)."""
    def fn(y, x, comp):
        groups = slice_groups(y)
        if not groups:
            raise ConfigError(f"metric {name!r} scores per slice: the competition config needs `slices: [COLUMN, ...]`")
        plain = np.asarray(y)
        values = np.array([base(plain[m], x[m], comp) for _, _, m in groups], dtype=float)
        values = values[np.isfinite(values)]
        if not values.size:
            return float("nan")
        if how == "mean":
            return float(values.mean())
        return float(values.min() if base.higher_is_better else values.max())
    return Metric(fn, base.higher_is_better, base.uses, base.tasks, base.check)


def get_metric(name: str, comp: dict | None = None, where: str | None = None) -> Metric:
    """The :class:`Metric` called ``name``: the competition's own (``comp['custom_metrics']``) or
    a built-in one. Raises ``ConfigError`` for an unknown name (with the closest known one), a
    metric not defined for the competition's task (naming its ``macro_``/``micro_`` variants), or
    a competition the metric's ``check`` rejects."""
    prefix = f"{where}: " if where else ""
    custom = (comp or {}).get("custom_metrics") or {}
    known = METRICS.names() + sorted(custom)
    for start, how in SLICE_AGGREGATES.items():
        if name.startswith(start) and len(name) > len(start):
            if name[len(start):] not in known:  # the suggestion among the slice versions ('worst_acc': worst_accuracy)
                raise ConfigError(f"{prefix}unknown metric {name!r}: {start}<metric>, the metric one of "
                                  f"{', '.join(known)}{did_you_mean(name, [start + k for k in known])}")
            if comp and "slices" in comp and not comp["slices"]:
                raise ConfigError(f"{prefix}metric {name!r} scores per slice: add `slices: [COLUMN, ...]` (e.g. the "
                                  f"database or device column) to the competition config")
            return _slice_metric(name, get_metric(name[len(start):], comp, where), how)
    if name in custom:
        m = load_custom(name, custom[name], where or "custom_metrics")
    elif name in METRICS.names():
        m = METRICS.get(name)
    else:
        stem = name.split("_", 1)[-1] if name.startswith(("macro_", "micro_", "mean_")) else None
        hint = f"; did you mean {stem!r}?" if stem in known else did_you_mean(name, known)  # 'macro_auroc': auroc
        raise ConfigError(f"{prefix}unknown metric {name!r}; known: {', '.join(known)}{hint}")
    if comp and comp.get("task") and comp["task"] not in m.tasks:
        variants = [v for v in (f"macro_{name}", f"micro_{name}") if v in METRICS.names()]
        raise ConfigError(f"{prefix}metric {name!r} is for {'/'.join(m.tasks)} tasks, not {comp['task']}"
                          + (f"; use {' or '.join(variants)}" if variants else ""))
    if comp and comp.get("task") and m.check:
        try:
            m.check(comp)
        except ConfigError as exc:
            raise ConfigError(f"{prefix}metric {name!r}: {exc}") from None
    return m


def sign(name: str, comp: dict | None = None) -> float:
    """+1 for a metric where higher is better, -1 where lower is better (``sign * score`` is then
    always to maximise)."""
    return 1.0 if get_metric(name, comp).higher_is_better else -1.0


def is_better(name: str, a: float, b: float | None, comp: dict | None = None, tol: float = 1e-12) -> bool:
    """Whether score ``a`` beats score ``b`` (``None``: nothing yet) on metric ``name`` by more than ``tol``."""
    return b is None or sign(name, comp) * (a - b) > tol


def default_comp(y, probs) -> dict:
    """The competition config assumed without one: multi-label for a 2-D ``y``, else binary for
    two columns (the second positive), else multiclass; classes ``"0"``, ``"1"``, ..."""
    n = np.shape(probs)[1]
    task = "multilabel" if np.ndim(y) == 2 else "binary" if n == 2 else "multiclass"
    classes = [str(k) for k in range(n)]
    return {"task": task, "classes": classes, "positive": classes[-1]}


def score_all(names, y, probs, comp: dict | None = None, decision: dict | None = None) -> dict[str, float]:
    """``{name: score}`` for each metric name over encoded ``y`` and ``probs`` ``(rows, n_classes)``.

    ``decision``: thresholds or class biases (:func:`lib.data.tasks.decide`) for the metrics
    that score decisions. ``y`` may carry its rows' slices (:class:`lib.data.slices.SlicedLabels`)
    for the ``worst_``/``slice_mean_`` metrics. ``comp``: the competition config; without it :func:`default_comp`.
    Raises ``ConfigError`` for unknown names.
    """
    comp = comp or default_comp(y, probs)
    slices = slices_of(y)
    y, probs = np.asarray(y), np.asarray(probs, dtype=float)
    if slices:
        y = SlicedLabels(y, slices)
    pred = tasks.decide(probs, comp, decision)
    out = {}
    for name in names:
        m = get_metric(name, comp)
        out[name] = m(y, pred if m.uses == "labels" else probs, comp)
    return out


def score_slices(names, y, probs, comp: dict, decision: dict | None = None) -> pd.DataFrame:
    """Every metric of ``names`` per slice value of the slices ``y`` carries
    (:class:`lib.data.slices.SlicedLabels`): one row per ``(slice, value)`` with ``n`` rows and
    ``n_<class>`` per class, then ``worst`` rows (one per slice column: each metric's worst value
    over its values, in the metric's direction, NaN left out). Empty when ``y`` carries none.
    A per-slice name (``worst_macc``) is scored as its base metric (``macc``: :func:`base_metric`).
    ``probs (rows, n_classes)``; ``decision`` as :func:`score_all`."""
    names = list(dict.fromkeys(base_metric(n) for n in names))
    y_plain, probs = np.asarray(y), np.asarray(probs, dtype=float)
    counts = y_plain if y_plain.ndim == 2 else np.eye(len(comp["classes"]), dtype=int)[y_plain]
    rows = []
    for col, value, m in slice_groups(y):
        scores = score_all(names, y_plain[m], probs[m], comp, decision)
        rows.append({"slice": col, "value": value, "n": int(m.sum()),
                     **{f"n_{c}": int(k) for c, k in zip(comp["classes"], counts[m].sum(0))}, **scores})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    for col, part in table.groupby("slice", sort=False):
        worst = {n: (part[n].min() if sign(n, comp) > 0 else part[n].max()) for n in names}
        table.loc[len(table)] = {"slice": col, "value": "worst", **worst}
    return table


def undefined_in_slices(comp: dict, folds: pd.DataFrame) -> list[str]:
    """Where a per-slice metric of the competition's ``metric``/``metrics`` (``worst_``,
    ``slice_mean_``) leaves a slice value of the training rows ``folds`` (``folds.csv``) out: its
    base metric is undefined (NaN) there even for perfect predictions (``macc`` or ``auroc`` of a
    slice whose rows hold one class), so the worst or mean silently skips it. Returns one message
    per metric and slice value, naming the rows per class; ``[]`` when none (00 and 04 print them)."""
    if not comp.get("slices"):
        return []
    y = with_slices(tasks.class_index(folds["target"], comp), folds)
    return slices_left_out([comp["metric"], *comp["metrics"]], comp, y, "training rows",
                           "so no model choice sees how it does on it")


def slices_left_out(names, comp: dict, y, rows: str, effect: str) -> list[str]:
    """:func:`undefined_in_slices` for the metrics ``names`` (those that are not per-slice are
    ignored) and encoded labels ``y`` that carry their slices
    (:class:`lib.data.slices.SlicedLabels`; ``(rows,)`` class indices or ``(rows, n_classes)``
    0/1): one message per per-slice metric and slice value it leaves out, naming the ``rows``
    (e.g. "training rows") per class and ending with ``effect``."""
    names = [n for n in dict.fromkeys(names) if base_metric(n) != n]
    if not names or not isinstance(y, SlicedLabels):
        return []
    table = score_slices(names, y, _perfect(y, comp), comp)
    table = table[table["value"] != "worst"]
    out = []
    for name in names:
        for row in table[table[base_metric(name)].isna()].to_dict("records"):
            counts = ", ".join(f"{c} {int(row[f'n_{c}'])}" for c in comp["classes"] if row[f"n_{c}"]) or "no label on any"
            out.append(f"{name} leaves out slice {row['slice']}={str(row['value'])!r} ({int(row['n'])} {rows}: {counts}): "
                       f"{base_metric(name)} is undefined there, {effect}")
    return out


def undefined_in_folds(comp: dict, folds: pd.DataFrame) -> list[str]:
    """Where the competition's ``metric`` is undefined (NaN) on a fold's validation rows even for
    perfect predictions (``macc`` or ``auroc`` of a fold of one class: a leave-one-group-out fold
    of a group with one class), so that fold's model cannot be chosen by it (the training loop
    then compares epochs on the validation loss). ``folds``:
    ``folds.csv``'s table (fold -1 rows, pseudo-labelled, left out). Returns one message per such
    fold, naming its rows per class; ``[]`` when none (00 prints them)."""
    metric, out = comp["metric"], []  # what early stopping monitors, per slice for worst_<metric>
    rows = folds[folds["fold"] >= 0].reset_index(drop=True)
    y = with_slices(tasks.class_index(rows["target"], comp), rows)
    perfect = _perfect(y, comp)
    for k in sorted(rows["fold"].unique()):
        m = (rows["fold"] == k).to_numpy()
        if np.isnan(score_all([metric], y[m], perfect[m], comp)[metric]):
            held = ", ".join(f"{c} {int(n)}" for c, n in zip(comp["classes"], perfect[m].sum(0)) if n)
            out.append(f"fold {k}: {metric} is undefined on its {int(m.sum())} validation rows ({held}): that fold's "
                       f"best epoch is chosen by its validation loss, and its score is left out of the fold means")
    return out


# --- helpers ---------------------------------------------------------------------------------------

def _perfect(y, comp: dict) -> np.ndarray:
    """Probabilities ``(rows, n_classes)`` that predict encoded labels ``y`` exactly: what
    :func:`undefined_in_slices` and :func:`undefined_in_folds` score to find a metric undefined
    whatever a model predicts."""
    plain = np.asarray(y)
    return plain.astype(float) if plain.ndim == 2 else np.eye(len(comp["classes"]))[plain]


def _multilabel(comp: dict) -> bool:
    return comp["task"] == "multilabel"


def _positive(comp: dict) -> int:
    return comp["classes"].index(comp["positive"])


def _onehot(y, comp: dict, n: int) -> np.ndarray:
    return np.asarray(y) if _multilabel(comp) else np.eye(n, dtype=int)[np.asarray(y)]


def _per_class(score, y, probs, comp: dict) -> float:
    """Macro mean of a ranking score over the classes that have both positive and negative rows
    (NaN when none has); binary: the one curve of the positive class."""
    probs = np.asarray(probs)
    onehot = _onehot(y, comp, probs.shape[1])
    ks = [_positive(comp)] if comp["task"] == "binary" else range(probs.shape[1])
    values = [score(onehot[:, k], probs[:, k]) for k in ks if 0 < onehot[:, k].sum() < len(onehot)]
    return float(np.mean(values)) if values else float("nan")


def _labels(comp: dict):
    """Every class index for a single-label task (the per-class report lists a class without rows,
    log loss knows every class), ``None`` (sklearn: every column) for a multi-label one."""
    return None if _multilabel(comp) else np.arange(len(comp["classes"]))


def _prf(y, pred, comp: dict, average: str) -> tuple:
    """(precision, recall, F1) by sklearn ``precision_recall_fscore_support`` with zero_division=0:
    ``average="binary"``: of the positive class, all three NaN when the rows hold no positive
    (recall is undefined: a slice or fold of negatives only); ``"macro"``: over the classes (or
    labels) that have true rows, NaN when none has, so that a slice or fold holding some classes
    is scored on those (a row predicted as an absent class still costs its true class's recall);
    ``"micro"``: over every class."""
    y, pred = np.asarray(y), np.asarray(pred)
    if average == "binary":
        pos = _positive(comp)
        if not (y == pos).any():
            return float("nan"), float("nan"), float("nan")
        return precision_recall_fscore_support(y, pred, average="binary", pos_label=pos, zero_division=0)[:3]
    if average == "macro":
        present = np.flatnonzero(y.any(0)) if _multilabel(comp) else np.unique(y)
        if not len(present):
            return float("nan"), float("nan"), float("nan")
        return precision_recall_fscore_support(y, pred, average="macro", labels=present, zero_division=0)[:3]
    return precision_recall_fscore_support(y, pred, average=average, zero_division=0, labels=_labels(comp))[:3]


def _share(hits: np.ndarray) -> float:
    return float(hits.mean()) if hits.size else float("nan")


def _normal(comp: dict) -> int | None:
    """Index of the normal class: ``comp['normal_class']``, by default for a binary task the class
    that is not ``positive``; ``None`` while the classes are unknown (a config without
    ``classes``). Raises ``ConfigError`` for a multiclass task without ``normal_class`` or a
    ``normal_class`` that is not a class."""
    normal, classes = comp.get("normal_class"), comp.get("classes")
    if normal is None and comp["task"] != "binary":
        raise ConfigError("set normal_class in the competition YAML: the class of the normal rows "
                          "(every other class is abnormal)")
    if not classes:
        return None
    if normal is None:
        return 1 - _positive(comp)
    if str(normal) not in classes:
        raise ConfigError(f"normal_class {normal!r} is not in classes {classes}")
    return classes.index(str(normal))


def _se_sp(y, pred, comp: dict, exact: bool) -> tuple[float, float]:
    """(sensitivity, specificity) around the normal class (:func:`_normal`). Sensitivity: the
    share of abnormal rows predicted as their own class (``exact``, ICBHI) or as any abnormal
    class (PhysioNet 2016); specificity: the share of normal rows predicted normal. NaN when
    there is no abnormal (normal) row."""
    normal = _normal(comp)
    y, pred = np.asarray(y), np.asarray(pred)
    abnormal = y != normal
    hit = pred == y if exact else pred != normal
    return _share(hit[abnormal]), _share(pred[~abnormal] == normal)


MURMUR_WEIGHTS = {"present": 5.0, "unknown": 3.0, "absent": 1.0}
OUTCOME_WEIGHTS = {"abnormal": 5.0, "normal": 1.0}
"""PhysioNet/CinC 2022 class weights of the weighted accuracy (``compute_weighted_accuracy``)."""


def _challenge_weights(comp: dict, weights: dict) -> np.ndarray | None:
    """The weight of each of ``comp['classes']`` (names matched case-insensitively); ``None``
    while the classes are unknown. Raises ``ConfigError`` unless the classes are exactly the
    challenge's."""
    classes = comp.get("classes")
    if not classes:
        return None
    if sorted(str(c).lower() for c in classes) != sorted(weights):
        raise ConfigError(f"needs exactly the classes {'/'.join(k.capitalize() for k in weights)} "
                          f"(any case), not {classes}")
    return np.array([weights[str(c).lower()] for c in classes])


def _weighted_accuracy(y, pred, comp: dict, weights: dict) -> float:
    """Accuracy with each row weighted by its true class's weight: trace(W * A) / sum(W * A) of
    the challenge's confusion matrix A, W weighting the columns (true classes)."""
    y = np.asarray(y)
    w = _challenge_weights(comp, weights)[y]
    return float(np.sum(w * (np.asarray(pred) == y)) / w.sum()) if w.size else float("nan")


# --- metrics of decisions ----------------------------------------------------------------------------

@metric("accuracy")
def accuracy(y, pred, comp) -> float:
    """Share of rows predicted exactly right (multi-label: every label right, sklearn's subset accuracy)."""
    return accuracy_score(y, pred)


@metric("balanced_accuracy", task_types=("binary", "multiclass"))
def balanced_accuracy(y, pred, comp) -> float:
    """Mean over classes of the recall (sklearn ``balanced_accuracy_score``)."""
    with warnings.catch_warnings():  # a class predicted but absent from y (a class without training rows, a
        warnings.filterwarnings("ignore", "y_pred contains classes not in y_true", UserWarning)  # slice of one
        warnings.filterwarnings("ignore", "A single label was found", UserWarning)  # row) is the callers' to say
        return balanced_accuracy_score(y, pred)  # (scikit-learn's warnings showed amid 04's tables: probe)


@metric("macro_f1")
def macro_f1(y, pred, comp) -> float:
    """Unweighted mean of the F1 score over the classes (multi-label: labels) that have true rows
    in the rows scored (all of them on a whole OOF set; a slice's or fold's own classes on theirs)."""
    return _prf(y, pred, comp, "macro")[2]


@metric("precision", task_types=("binary",))
def precision(y, pred, comp) -> float:
    """Precision of the positive class (``comp['positive']``, which may be the first class);
    binary tasks (elsewhere: ``macro_precision``, ``micro_precision``). sklearn, zero_division=0;
    NaN (with recall and F1) when the rows hold no positive."""
    return _prf(y, pred, comp, "binary")[0]


@metric("recall", task_types=("binary",))
def recall(y, pred, comp) -> float:
    """Recall (sensitivity) of the positive class; binary tasks, as :func:`precision`."""
    return _prf(y, pred, comp, "binary")[1]


@metric("f1", task_types=("binary",))
def f1(y, pred, comp) -> float:
    """F1 score of the positive class; binary tasks, as :func:`precision`."""
    return _prf(y, pred, comp, "binary")[2]


@metric("macro_precision")
def macro_precision(y, pred, comp) -> float:
    """Unweighted mean of the precision over the classes that have true rows (a class with rows but
    never predicted counts 0)."""
    return _prf(y, pred, comp, "macro")[0]


@metric("macro_recall")
def macro_recall(y, pred, comp) -> float:
    """Unweighted mean of the recall over the classes that have true rows (single-label: the
    balanced accuracy)."""
    return _prf(y, pred, comp, "macro")[1]


@metric("micro_precision")
def micro_precision(y, pred, comp) -> float:
    """Precision over all (row, class) decisions pooled; for a single-label task equal to the
    accuracy, for a multi-label one the share of predicted labels that are true."""
    return _prf(y, pred, comp, "micro")[0]


@metric("micro_recall")
def micro_recall(y, pred, comp) -> float:
    """Recall over all (row, class) decisions pooled: the share of true labels predicted."""
    return _prf(y, pred, comp, "micro")[1]


@metric("micro_f1")
def micro_f1(y, pred, comp) -> float:
    """F1 of :func:`micro_precision` and :func:`micro_recall`."""
    return _prf(y, pred, comp, "micro")[2]


def per_class_report(y, pred, comp: dict) -> pd.DataFrame:
    """Precision, recall, F1 and support (true rows) of each class, then a ``micro`` and a
    ``macro`` row (support: all true labels), from sklearn ``precision_recall_fscore_support``
    (zero_division=0). ``y``, ``pred``: encoded labels and decisions (class indices ``(rows,)``
    or 0/1 matrices ``(rows, n_classes)``)."""
    p, r, f, support = precision_recall_fscore_support(y, pred, labels=_labels(comp), average=None, zero_division=0)
    table = pd.DataFrame({"class": comp["classes"], "precision": p, "recall": r, "f1": f, "support": support})
    pooled = [(avg, *_prf(y, pred, comp, avg), support.sum()) for avg in ("micro", "macro")]
    return pd.concat([table, pd.DataFrame(pooled, columns=table.columns)], ignore_index=True)


@metric("icbhi_sensitivity", task_types=("binary", "multiclass"), check=_normal)
def icbhi_sensitivity(y, pred, comp) -> float:
    """ICBHI sensitivity: abnormal rows (class other than the normal one) predicted as exactly
    their class / all abnormal rows, Se = (Pc + Pw + Pb) / (C + W + B). See :func:`icbhi_score`."""
    return _se_sp(y, pred, comp, exact=True)[0]


@metric("icbhi_specificity", task_types=("binary", "multiclass"), check=_normal)
def icbhi_specificity(y, pred, comp) -> float:
    """ICBHI specificity: normal rows predicted normal / all normal rows, Sp = Nn / N."""
    return _se_sp(y, pred, comp, exact=True)[1]


@metric("icbhi_score", task_types=("binary", "multiclass"), check=_normal)
def icbhi_score(y, pred, comp) -> float:
    """ICBHI 2017 challenge score (Se + Sp) / 2 (:func:`icbhi_sensitivity`,
    :func:`icbhi_specificity`); an abnormal row predicted as another abnormal class is an error.

    ``y``, ``pred``: class indices ``(rows,)``. The normal class is ``comp['normal_class']``
    (binary default: the class that is not ``positive``); raises ``ConfigError`` for a multiclass
    task without it. NaN when there is no abnormal or no normal row.
    Reference: Rocha B.M. et al. (2019) "An open access database for the evaluation of
    respiratory sound classification algorithms", Physiol. Meas. 40 035001,
    https://doi.org/10.1088/1361-6579/ab03ea; https://bhichallenge.med.auth.gr/
    """
    return float(np.mean(_se_sp(y, pred, comp, exact=True)))


@metric("macc", task_types=("binary", "multiclass"), check=_normal)
def macc(y, pred, comp) -> float:
    """PhysioNet/CinC 2016 MAcc (Se + Sp) / 2: Se = abnormal rows predicted as any abnormal class
    (unlike :func:`icbhi_score`, the abnormal class need not match) / abnormal rows, Sp = normal
    rows predicted normal / normal rows. Normal class, inputs and errors as :func:`icbhi_score`.

    This is the unweighted MAcc: the official 2016 score weights Se and Sp by the recordings'
    signal quality (and credits "unsure" answers), which needs quality labels this does not have.
    Reference: Clifford G.D. et al. (2016) "Classification of normal/abnormal heart sound
    recordings: the PhysioNet/Computing in Cardiology Challenge 2016", Computing in Cardiology
    43:609-612, https://doi.org/10.22489/CinC.2016.179-154; https://physionet.org/content/challenge-2016/
    """
    return float(np.mean(_se_sp(y, pred, comp, exact=False)))


@metric("murmur_weighted_accuracy", task_types=("multiclass",),
        check=lambda comp: _challenge_weights(comp, MURMUR_WEIGHTS))
def murmur_weighted_accuracy(y, pred, comp) -> float:
    """PhysioNet/CinC 2022 murmur weighted accuracy (``compute_weighted_accuracy``): accuracy with
    rows weighted 5 (Present), 3 (Unknown), 1 (Absent) by their true class,
    (5 m_PP + 3 m_UU + m_AA) / (5 n_P + 3 n_U + n_A).

    ``y``, ``pred``: class indices ``(rows,)``; the classes must be Present, Unknown and Absent
    (any case, any order), else ``ConfigError``. Reference: Reyna M.A. et al. (2023) "Heart murmur
    detection from phonocardiogram recordings: The George B. Moody PhysioNet Challenge 2022",
    PLOS Digit. Health 2(9) e0000324, https://doi.org/10.1371/journal.pdig.0000324; reference code
    https://github.com/physionetchallenges/evaluation-2022 (evaluate_model.py)."""
    return _weighted_accuracy(y, pred, comp, MURMUR_WEIGHTS)


@metric("outcome_weighted_accuracy", task_types=("binary",),
        check=lambda comp: _challenge_weights(comp, OUTCOME_WEIGHTS))
def outcome_weighted_accuracy(y, pred, comp) -> float:
    """PhysioNet/CinC 2022 outcome weighted accuracy: as :func:`murmur_weighted_accuracy` with
    weights 5 (Abnormal) and 1 (Normal); binary task whose classes are Abnormal and Normal (any
    case), else ``ConfigError``. Reference: as :func:`murmur_weighted_accuracy`."""
    return _weighted_accuracy(y, pred, comp, OUTCOME_WEIGHTS)


@metric("outcome_cost", higher_is_better=False, task_types=("binary",),
        check=lambda comp: _challenge_weights(comp, OUTCOME_WEIGHTS))
def outcome_cost(y, pred, comp) -> float:
    """PhysioNet/CinC 2022 clinical outcome cost (``compute_cost``), mean per patient; lower is better.

    With n rows and Abnormal the positive (referred) class: total = 10 n (algorithm)
    + n (25 + 397 r - 1718 r^2 + 11296 r^4), r = (TP + FP) / n (expert screening of the referred)
    + 10000 TP (treatment) + 50000 FN (missed or late treatment); score = total / n.
    ``y``, ``pred``: class indices ``(rows,)`` of a binary task with classes Abnormal and Normal
    (any case), else ``ConfigError``. Reference: Reyna et al. 2023, PLOS Digit. Health, and
    evaluate_model.py ``cost_algorithm``, ``cost_expert``, ``cost_treatment``, ``cost_error`` of
    https://github.com/physionetchallenges/evaluation-2022."""
    abnormal = [str(c).lower() for c in comp["classes"]].index("abnormal")
    y, pred = np.asarray(y) == abnormal, np.asarray(pred) == abnormal
    n, tp, fp, fn = len(y), np.sum(pred & y), np.sum(pred & ~y), np.sum(~pred & y)
    if n == 0:
        return float("nan")
    r = (tp + fp) / n
    expert = n * (25 + 397 * r - 1718 * r ** 2 + 11296 * r ** 4)
    return (10 * n + expert + 10000 * tp + 50000 * fn) / n


@metric("weighted_f1")
def weighted_f1(y, pred, comp) -> float:
    """Mean over classes of the F1 score weighted by each class's number of true rows."""
    return f1_score(y, pred, average="weighted", zero_division=0)


# --- metrics of probabilities ------------------------------------------------------------------------

@metric("auroc", uses="probs")
def auroc(y, probs, comp) -> float:
    """Area under the ROC curve: binary, of the positive class; otherwise the one-vs-rest macro
    mean over the classes present (NaN when a single class is present: AUROC is undefined then)."""
    return _per_class(roc_auc_score, y, probs, comp)


@metric("average_precision", uses="probs")
def average_precision(y, probs, comp) -> float:
    """Area under the precision-recall curve (sklearn's average precision), macro mean over
    classes as :func:`auroc`; for multi-label tasks this is the usual mAP."""
    return _per_class(average_precision_score, y, probs, comp)


@metric("log_loss", higher_is_better=False, uses="probs")
def log_loss(y, probs, comp) -> float:
    """Mean negative log-likelihood of the true class (sklearn ``log_loss``, probabilities clipped
    to [eps, 1 - eps] as sklearn does, every class passed as ``labels``); multi-label: the mean
    over classes of each class's binary log loss. Lower is better."""
    probs = np.asarray(probs, dtype=float)
    if _multilabel(comp):
        y = np.asarray(y)
        return float(np.mean([sklearn_log_loss(y[:, k], probs[:, k], labels=[0, 1]) for k in range(probs.shape[1])]))
    return sklearn_log_loss(y, probs, labels=_labels(comp))


@metric("lwlrap", uses="probs", task_types=("multilabel",))
def lwlrap(y, probs, comp) -> float:
    """Label-weighted label-ranking average precision (Freesound Audio Tagging 2019): for each true
    label of a row, the precision of the row's classes ranked by probability down to that label,
    averaged over all true labels (so each class weighs by its number of labels; NaN when no row
    has a label).

    ``y``: 0/1 ``(rows, n_classes)``; ``probs`` ``(rows, n_classes)``. Computed as the reference
    does, ties included: each row's classes are ranked by ``np.argsort(scores)[::-1]`` (here one
    ``np.argsort`` along the rows' axis, which sorts each row as the 1-D call does), so tied
    classes take distinct ranks in the reverse of that sort's order (for the stable order numpy
    gives a few classes: the later class first), where scikit-learn's
    ``label_ranking_average_precision_score`` would rank every tied class at the tie's last rank;
    each true label scores the precision at its rank. Reference: D. Ellis'
    ``_one_sample_positive_class_precisions`` and ``calculate_per_class_lwlrap`` in the lwlrap
    colab of https://www.kaggle.com/c/freesound-audio-tagging-2019,
    https://colab.research.google.com/drive/1AgPdhSp7ttY18O3fEoHOQKlt_3HJDLi8; Fonseca E. et al.
    (2019) "Audio tagging with noisy labels and minimal supervision", DCASE 2019,
    https://arxiv.org/abs/1906.02975.
    """
    truth, scores = np.asarray(y) > 0, np.asarray(probs, dtype=float)
    if not truth.any():
        return float("nan")
    retrieved = np.argsort(scores, axis=1)[:, ::-1]  # each row's classes, retrieved first to last
    rank = np.empty_like(retrieved)  # rank[i, k]: 0 = class k of row i retrieved first
    np.put_along_axis(rank, retrieved, np.broadcast_to(np.arange(scores.shape[1]), scores.shape), axis=1)
    hits = np.cumsum(np.take_along_axis(truth, retrieved, axis=1), axis=1)  # true labels among the first r + 1
    precision = np.take_along_axis(hits, rank, axis=1) / (1 + rank)
    return float(precision[truth].sum() / truth.sum())


@metric("padded_cmap", uses="probs", task_types=("multilabel",))
def padded_cmap(y, probs, comp) -> float:
    """BirdCLEF 2023 padded class-wise mAP: 5 rows of all ones appended to both the labels and
    the probabilities (padding_factor 5, so that every class has positives and a class without
    any scores about 1 rather than being undefined), then sklearn ``average_precision_score``
    macro-averaged over classes.

    ``y``: 0/1 ``(rows, n_classes)``; ``probs`` ``(rows, n_classes)``. Reference: the competition's
    metric, https://www.kaggle.com/competitions/birdclef-2023/overview/evaluation (its notebook's
    ``padded_cmap(solution, submission, padding_factor=5)``).
    """
    pad = np.ones((5, np.shape(probs)[1]))
    return average_precision_score(np.vstack([y, pad]), np.vstack([probs, pad]), average="macro")
