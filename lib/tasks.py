"""What the task type means for targets, model outputs and probability columns.

* ``binary``: one logit; ``sigmoid`` gives p(positive class); files carry one probability
  column per class (``p_<class>``), the negative one being ``1 - p``.
* ``multiclass``: one logit per class; ``softmax``; one probability column per class.
"""
from __future__ import annotations

import numpy as np
import torch


def n_outputs(comp: dict) -> int:
    """Number of model outputs: 1 for a binary task, else the number of classes."""
    return 1 if comp["task"] == "binary" else len(comp["classes"])


def prob_columns(comp: dict) -> list[str]:
    """Names of the probability columns in OOF/test prediction files: ``p_<class>`` per class."""
    return [f"p_{c}" for c in comp["classes"]]


def class_index(labels, comp: dict) -> np.ndarray:
    """Labels ``(rows,)`` -> class indices ``(rows,)`` into ``comp['classes']``.

    Raises ``ValueError`` naming the first unknown label.
    """
    lookup = {c: i for i, c in enumerate(comp["classes"])}
    try:
        return np.array([lookup[str(v)] for v in labels], dtype=np.int64)
    except KeyError as exc:
        raise ValueError(f"unknown label {exc.args[0]!r}; expected one of {comp['classes']}") from None


def encode_targets(y: np.ndarray, comp: dict) -> np.ndarray:
    """Class indices ``(rows,)`` -> float32 training targets ``(rows, n_outputs)``."""
    if comp["task"] == "binary":
        pos = comp["classes"].index(comp["positive"])
        return (y == pos).astype(np.float32)[:, None]
    return np.eye(len(comp["classes"]), dtype=np.float32)[y]


def logits_to_probs(logits: torch.Tensor | np.ndarray, comp: dict) -> np.ndarray:
    """Model logits ``(rows, n_outputs)`` -> class probabilities ``(rows, n_classes)`` (float64)."""
    logits = torch.as_tensor(logits, dtype=torch.float64)
    if comp["task"] == "binary":
        p = torch.sigmoid(logits[:, 0]).numpy()
        pos = comp["classes"].index(comp["positive"])
        out = np.empty((len(p), 2))
        out[:, pos], out[:, 1 - pos] = p, 1 - p
        return out
    return torch.softmax(logits, dim=1).numpy()


def probs_to_labels(probs: np.ndarray, comp: dict) -> np.ndarray:
    """Class probabilities ``(rows, n_classes)`` -> predicted labels ``(rows,)`` (most probable;
    for a binary task that is p(positive) > 0.5)."""
    return np.asarray(comp["classes"], dtype=object)[np.asarray(probs).argmax(1)]
