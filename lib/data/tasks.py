"""What the task type means for targets, model outputs and probability columns.

* ``binary``: one logit; ``sigmoid`` gives p(positive class); files carry one probability
  column per class (``p_<class>``), the negative one being ``1 - p``.
* ``multiclass``: one logit per class; ``softmax``; one probability column per class.
* ``multilabel``: one logit per class; a ``sigmoid`` each (columns need not sum to 1); a row's
  labels are stored in ``folds.csv`` joined by :data:`LABEL_SEP` (empty: no label).

Encoded labels ``y`` are class indices ``(rows,)`` for binary and multiclass tasks and a 0/1
matrix ``(rows, n_classes)`` for multi-label ones; metrics take them in that form.

**Subdivided classes** (``subdivide`` in the competition config, docs/competition.md): stage 00
writes each training row's *fine class* (``<class>|<column>=<value>|...``: :data:`FINE_SEP`
between the parts) to ``folds.csv`` (``fine_target``) and the sorted fine classes found in
training to ``competition.yaml`` (``fine_classes``). The model then has one output per fine
class and is trained with a softmax over them (also for a binary competition:
:func:`output_task`); :func:`logits_to_probs` softmaxes the fine classes and sums each
competition class's fine ones, so every probability outside training (OOF and test files,
scores, decisions, blends, submissions) is in the competition's classes. The voice-pathology
winner (MAIC 2021) trained 21 classes (6 by sex and age band) this way.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

LABEL_SEP = ";"
"""Separator of a multi-label row's labels in ``folds.csv`` and OOF files."""
FINE_SEP = "|"
"""Separator of a fine class's parts: ``<class>|sex=F|40<=age<60``."""


def n_outputs(comp: dict) -> int:
    """Number of model outputs: the number of fine classes of a subdivided competition
    (``fine_classes``), else 1 for a binary task and the number of classes otherwise."""
    if comp.get("fine_classes"):
        return len(comp["fine_classes"])
    return 1 if comp["task"] == "binary" else len(comp["classes"])


def output_task(comp: dict) -> str:
    """What the model's outputs are, as a task name for losses and estimators: ``multiclass`` (one
    softmax over the fine classes) for a subdivided competition (``fine_classes``), else its task."""
    return "multiclass" if comp.get("fine_classes") else comp["task"]


def fine_parent(comp: dict) -> np.ndarray:
    """The competition class index ``(n_fine,)`` of each of ``comp['fine_classes']``: the class the
    fine class begins with (``<class>|...``; the longest such class). Raises ``ValueError``
    naming a fine class that begins with no class."""
    parents = []
    for fine in comp["fine_classes"]:
        found = [i for i, c in enumerate(comp["classes"]) if str(fine).startswith(f"{c}{FINE_SEP}")]
        if not found:
            raise ValueError(f"fine class {fine!r} does not begin with any of the classes {comp['classes']} "
                             f"followed by {FINE_SEP!r}")
        parents.append(max(found, key=lambda i: len(comp["classes"][i])))
    return np.asarray(parents, dtype=np.int64)


def prob_columns(comp: dict) -> list[str]:
    """Names of the probability columns in OOF/test prediction files: ``p_<class>`` per class."""
    return [f"p_{c}" for c in comp["classes"]]


def class_index(labels, comp: dict) -> np.ndarray:
    """Labels -> encoded ``y``: class indices ``(rows,)`` into ``comp['classes']``, or for a
    multi-label task a 0/1 int matrix ``(rows, n_classes)`` from :data:`LABEL_SEP`-joined labels.

    Raises ``ValueError`` naming the first unknown label.
    """
    lookup = {c: i for i, c in enumerate(comp["classes"])}
    try:
        if comp["task"] != "multilabel":
            return np.array([lookup[str(v)] for v in labels], dtype=np.int64)
        y = np.zeros((len(labels), len(lookup)), dtype=np.int64)
        for row, value in enumerate(labels):
            for label in split_labels(value):
                y[row, lookup[label]] = 1
        return y
    except KeyError as exc:
        raise ValueError(f"unknown label {exc.args[0]!r}; expected one of {comp['classes']}") from None


def split_labels(value) -> list[str]:
    """A :data:`LABEL_SEP`-joined cell -> its labels (an empty or missing cell -> ``[]``)."""
    return [] if not isinstance(value, str) or value == "" else value.split(LABEL_SEP)


def encode_targets(y: np.ndarray, comp: dict, fine=None) -> np.ndarray:
    """Encoded labels ``y`` (see :func:`class_index`) -> float32 training targets ``(rows, n_outputs)``.

    A subdivided competition (``fine_classes``) trains on the fine classes: ``fine`` ``(rows,)``
    holds each row's fine class (``folds.csv``'s ``fine_target``) and the targets are one-hot over
    ``comp['fine_classes']``; ``y`` is then unused. Raises ``ValueError`` when ``fine`` is missing
    there or names an unknown fine class.
    """
    if comp.get("fine_classes"):
        if fine is None:
            raise ValueError("this competition trains on subdivided classes (fine_classes in competition.yaml): "
                             "the rows need their fine class (folds.csv's fine_target column; run 00_prepare.py again)")
        lookup = {c: i for i, c in enumerate(comp["fine_classes"])}
        try:
            idx = np.array([lookup[str(v)] for v in fine], dtype=np.int64)
        except KeyError as exc:
            raise ValueError(f"unknown fine class {exc.args[0]!r}; expected one of {comp['fine_classes']}") from None
        return np.eye(len(lookup), dtype=np.float32)[idx]
    if comp["task"] == "binary":
        pos = comp["classes"].index(comp["positive"])
        return (y == pos).astype(np.float32)[:, None]
    if comp["task"] == "multilabel":
        return y.astype(np.float32)
    return np.eye(len(comp["classes"]), dtype=np.float32)[y]


def logits_to_probs(logits: torch.Tensor | np.ndarray, comp: dict, allowed: np.ndarray | None = None) -> np.ndarray:
    """Model logits ``(rows, n_outputs)`` -> class probabilities ``(rows, n_classes)`` (float64).

    A subdivided competition (``fine_classes``): the softmax over the fine classes, each
    competition class getting the sum of its fine classes' probabilities (:func:`fine_parent`),
    whatever the task (binary included); ``allowed`` ``(rows, n_fine)`` bool (``subdivide.mask``:
    :func:`lib.data.prepare.fine_mask`): the softmax over each row's allowed fine classes only.
    Raises ``ValueError`` when the logits are not one per fine class then (a model trained before
    the competition was subdivided).
    """
    import torch  # here: the scoring tools (leaderboard.py, score_submission.py) import this module without torch

    logits = torch.as_tensor(logits, dtype=torch.float64)
    if comp.get("fine_classes"):
        n_fine = len(comp["fine_classes"])
        if logits.dim() != 2 or logits.shape[1] != n_fine:
            raise ValueError(f"logits of shape {tuple(logits.shape)} for a competition of {n_fine} subdivided "
                             f"classes (fine_classes): expected (rows, {n_fine})")
        if allowed is not None:
            logits = logits.masked_fill(~torch.as_tensor(allowed, dtype=torch.bool), float("-inf"))
        fine = torch.softmax(logits, dim=1).numpy()
        merge = np.zeros((n_fine, len(comp["classes"])))
        merge[np.arange(n_fine), fine_parent(comp)] = 1.0
        return fine @ merge
    if comp["task"] == "binary":
        p = torch.sigmoid(logits[:, 0]).numpy()
        pos = comp["classes"].index(comp["positive"])
        out = np.empty((len(p), 2))
        out[:, pos], out[:, 1 - pos] = p, 1 - p
        return out
    if comp["task"] == "multilabel":
        return torch.sigmoid(logits).numpy()
    return torch.softmax(logits, dim=1).numpy()


def fixed_decision(comp: dict) -> dict | None:
    """The decision a competition fixes in its config, as :func:`decide` takes it: a number (or a
    list, one per class) in ``decision.threshold`` of a binary or multi-label task gives
    ``{"threshold": t}`` / ``{"thresholds": [t_k, ...]}``; ``auto``, and any multiclass task, give
    ``None``. Raises ``ConfigError`` for a list of another length than ``classes`` (checked here
    too: the config's loader cannot when 00 finds the classes in the data)."""
    fixed = (comp.get("decision") or {}).get("threshold", "auto")
    if fixed == "auto" or comp["task"] == "multiclass":
        return None
    if comp["task"] == "binary":
        return {"threshold": float(fixed)}
    if isinstance(fixed, list) and len(fixed) != len(comp["classes"]):  # classes found in the data by 00
        from ..core.errors import ConfigError

        raise ConfigError(f"decision.threshold lists {len(fixed)} values for the {len(comp['classes'])} classes "
                          f"{comp['classes']}: give one per class, in that order")
    return {"thresholds": [float(t) for t in fixed] if isinstance(fixed, list) else [float(fixed)] * len(comp["classes"])}


def fixes_a_cut(comp: dict) -> bool:
    """Whether the competition's :func:`fixed_decision` cuts elsewhere than the default 0.5."""
    fixed = fixed_decision(comp)
    return fixed is not None and set(np.ravel(next(iter(fixed.values())))) != {0.5}


def decide(probs: np.ndarray, comp: dict, decision: dict | None = None) -> np.ndarray:
    """Class probabilities ``(rows, n_classes)`` -> decisions in the encoding of :func:`class_index`:
    class indices ``(rows,)``, or for a multi-label task a 0/1 matrix ``(rows, n_classes)``.

    ``decision`` (fitted on OOF predictions by :mod:`lib.evaluation.decisions`; ``None``: the
    defaults): binary ``{"threshold": t}``, the positive class when p(positive) > t (default 0.5:
    the most probable class); multi-label ``{"thresholds": [t_k, ...]}``, class k when p_k > t_k
    (default 0.5 each); multiclass ``{"bias": [b_k, ...]}``, ``argmax_k log p_k + b_k`` (default 0:
    the most probable class). Raises ``ValueError`` for a decision of another task.
    """
    probs = np.asarray(probs, dtype=float)
    decision = decision or {}
    unknown = set(decision) - {"binary": {"threshold"}, "multilabel": {"thresholds"},
                               "multiclass": {"bias"}}[comp["task"]]
    if unknown:
        raise ValueError(f"decision keys {sorted(unknown)} do not apply to a {comp['task']} task")
    if comp["task"] == "binary":
        pos = comp["classes"].index(comp["positive"])
        return np.where(probs[:, pos] > decision.get("threshold", 0.5), pos, 1 - pos).astype(np.int64)
    if comp["task"] == "multilabel":
        return (probs > np.asarray(decision.get("thresholds", 0.5), dtype=float)).astype(np.int64)
    bias = np.asarray(decision.get("bias", 0.0), dtype=float)
    return (np.log(np.clip(probs, 1e-12, None)) + bias).argmax(1).astype(np.int64)


def predict_indicators(probs: np.ndarray, comp: dict, decision: dict | None = None) -> np.ndarray:
    """Class probabilities ``(rows, n_classes)`` -> 0/1 predictions ``(rows, n_classes)``: one
    class per row (binary, multiclass) or any number (multi-label), by :func:`decide`."""
    pred = decide(probs, comp, decision)
    return pred if comp["task"] == "multilabel" else np.eye(np.shape(probs)[1], dtype=np.int64)[pred]


def probs_to_labels(probs: np.ndarray, comp: dict, separator: str = LABEL_SEP, decision: dict | None = None) -> np.ndarray:
    """Class probabilities ``(rows, n_classes)`` -> predicted labels ``(rows,)`` by :func:`decide`;
    multi-label: the predicted classes joined by ``separator``."""
    classes = np.asarray(comp["classes"], dtype=object)
    pred = decide(probs, comp, decision)
    if comp["task"] == "multilabel":
        return np.array([separator.join(classes[row.astype(bool)]) for row in pred], dtype=object)
    return classes[pred]
