"""Competition metrics over class probabilities, from scikit-learn.

Every metric takes ``y`` ``(rows,)`` integer class indices and ``probs`` ``(rows, n_classes)``
(one probability column per class, rows summing to 1 for binary and multiclass tasks) and
returns a float where higher is better.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from .config import Registry

METRICS = Registry("metric")


@METRICS.register("accuracy")
def accuracy(y, probs) -> float:
    """Share of rows whose most probable class is the true one (binary: p(positive) > 0.5)."""
    return float(accuracy_score(y, np.asarray(probs).argmax(1)))


@METRICS.register("macro_f1")
def macro_f1(y, probs) -> float:
    """Unweighted mean over classes of the F1 score of the most probable class."""
    return float(f1_score(y, np.asarray(probs).argmax(1), average="macro"))


@METRICS.register("auroc")
def auroc(y, probs) -> float:
    """Area under the ROC curve; binary: of the second column, multiclass: one-vs-rest macro mean.

    Returns NaN when the rows hold a single class (AUROC is undefined then).
    """
    probs = np.asarray(probs)
    if len(np.unique(y)) < 2:
        return float("nan")
    if probs.shape[1] == 2:
        return float(roc_auc_score(y, probs[:, 1]))
    return float(roc_auc_score(y, probs, multi_class="ovr", labels=np.arange(probs.shape[1])))


def score_all(names, y, probs) -> dict[str, float]:
    """``{name: metric(y, probs)}`` for each metric name; raises ``ConfigError`` for unknown names."""
    return {name: METRICS.get(name)(y, probs) for name in names}
