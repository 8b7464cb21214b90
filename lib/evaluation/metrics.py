"""Competition metrics over class probabilities, from scikit-learn.

Every metric takes encoded labels ``y`` (class indices ``(rows,)``, or for a multi-label task a
0/1 matrix ``(rows, n_classes)``; see :func:`lib.data.tasks.class_index`) and ``probs``
``(rows, n_classes)`` (one probability column per class) and returns a float where higher is
better. Predictions are the most probable class, or for a multi-label task every class with
p > 0.5. Names (``metric:`` / ``metrics:`` in a competition config): ``accuracy``,
``balanced_accuracy``, ``macro_f1``, ``weighted_f1``, ``auroc``, ``average_precision``.
For a binary task the ranking metrics score the second column; :func:`score_all` given the
competition config puts the configured ``positive`` class there.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    roc_auc_score,
)

from ..core.config import Registry

METRICS = Registry("metric")


def _multilabel(y) -> bool:
    return np.ndim(y) == 2


def _predict(y, probs) -> np.ndarray:
    probs = np.asarray(probs)
    return (probs > 0.5).astype(int) if _multilabel(y) else probs.argmax(1)


@METRICS.register("accuracy")
def accuracy(y, probs) -> float:
    """Share of rows predicted exactly right (multi-label: every label right, sklearn's subset accuracy)."""
    return float(accuracy_score(y, _predict(y, probs)))


@METRICS.register("balanced_accuracy")
def balanced_accuracy(y, probs) -> float:
    """Mean over classes of the recall (single-label tasks only; raises ``ValueError`` otherwise)."""
    if _multilabel(y):
        raise ValueError("balanced_accuracy is for single-label tasks; use macro_f1 or auroc")
    return float(balanced_accuracy_score(y, _predict(y, probs)))


@METRICS.register("macro_f1")
def macro_f1(y, probs) -> float:
    """Unweighted mean over classes of the F1 score of the predictions."""
    labels = None if _multilabel(y) else np.arange(np.shape(probs)[1])
    return float(f1_score(y, _predict(y, probs), average="macro", labels=labels, zero_division=0))


@METRICS.register("weighted_f1")
def weighted_f1(y, probs) -> float:
    """Mean over classes of the F1 score weighted by each class's number of true rows."""
    return float(f1_score(y, _predict(y, probs), average="weighted", zero_division=0))


def _per_class(score, y, probs) -> float:
    """Macro mean of a ranking score over the classes that have both positive and negative rows
    (NaN when none has)."""
    y, probs = np.asarray(y), np.asarray(probs)
    onehot = y if _multilabel(y) else np.eye(probs.shape[1], dtype=int)[y]
    if not _multilabel(y) and probs.shape[1] == 2:  # binary: one curve, of the second class (score_all: the positive one)
        onehot, probs = onehot[:, 1:], probs[:, 1:]
    values = [score(onehot[:, k], probs[:, k]) for k in range(onehot.shape[1]) if 0 < onehot[:, k].sum() < len(onehot)]
    return float(np.mean(values)) if values else float("nan")


@METRICS.register("auroc")
def auroc(y, probs) -> float:
    """Area under the ROC curve: binary, of the second class (the positive one through
    :func:`score_all` with ``comp``); otherwise the one-vs-rest macro mean
    over the classes present (NaN when a single class is present: AUROC is undefined then)."""
    return _per_class(roc_auc_score, y, probs)


@METRICS.register("average_precision")
def average_precision(y, probs) -> float:
    """Area under the precision-recall curve (sklearn's average precision), macro mean over
    classes as :func:`auroc`; for multi-label tasks this is the usual mAP."""
    return _per_class(average_precision_score, y, probs)


def score_all(names, y, probs, comp: dict | None = None) -> dict[str, float]:
    """``{name: metric(y, probs)}`` for each metric name; raises ``ConfigError`` for unknown names.

    ``comp``: the competition config (``task``, ``classes``, ``positive``). For a binary task
    whose ``positive`` class is the first, labels and columns are swapped so that the ranking
    metrics (AUROC, average precision) score the positive class; accuracy and F1 do not change
    under that swap. Without ``comp`` the second class counts as positive.
    """
    if comp and comp.get("task") == "binary" and comp["classes"].index(comp["positive"]) == 0:
        y, probs = 1 - np.asarray(y), np.asarray(probs)[:, ::-1]
    return {name: METRICS.get(name)(y, probs) for name in names}
