"""Losses on logits ``(batch, n_outputs)`` and soft targets ``(batch, n_outputs)`` in [0, 1].

``loss: {name: auto}`` (the default) picks by task: ``bce`` for binary and multi-label tasks
(a sigmoid per output), ``ce`` for multiclass ones (softmax). ``focal`` follows the task the
same way. Class weights (``train.class_weights: balanced``) are given as ``class_weight
(n_outputs,)``: for sigmoid losses the weight of each output's positive term (``pos_weight``,
n_negative / n_positive when balanced), for softmax losses the weight of each class.

A subdivided competition (``subdivide``: :func:`lib.data.tasks.output_task`) trains a softmax over
its fine classes whatever its task: given the competition config, :func:`build_loss` picks as for
a multiclass task; given only the task name ``binary``, ``auto`` and ``focal`` follow the outputs
(one output: sigmoid; more: the fine classes, softmax) and ``bce`` refuses more than one output.
:func:`balanced_class_weight` of a binary task's targets with more than one column (the fine
classes) weights them as a multiclass task's.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..core.errors import ConfigError
from ..core.registry import Registry
from ..data import tasks

LOSSES = Registry("loss")


@LOSSES.register("bce")
class BCEWithLogits(nn.Module):
    """Binary cross-entropy on logits (``torch.nn.functional.binary_cross_entropy_with_logits``),
    mean over batch and outputs; soft targets (Mixup/CutMix) are allowed. Optional label smoothing
    ``eps`` moves targets to ``eps/2 .. 1 - eps/2``; ``class_weight`` is the ``pos_weight``."""

    def __init__(self, label_smoothing: float = 0.0, class_weight: torch.Tensor | None = None):
        super().__init__()
        self.eps = label_smoothing
        self.register_buffer("pos_weight", None if class_weight is None else torch.as_tensor(class_weight).float())

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target * (1 - self.eps) + self.eps / 2
        return F.binary_cross_entropy_with_logits(logits.float(), target, pos_weight=self.pos_weight)


@LOSSES.register("ce")
class SoftCrossEntropy(nn.Module):
    """Cross-entropy on logits with soft (one-hot or mixed) targets, for multiclass tasks.
    ``class_weight (n_classes,)`` weights each row by its target's class weight, normalised by
    the batch's total weight (as ``torch.nn.CrossEntropyLoss(weight=...)``)."""

    def __init__(self, label_smoothing: float = 0.0, class_weight: torch.Tensor | None = None):
        super().__init__()
        self.eps = label_smoothing
        self.register_buffer("weight", None if class_weight is None else torch.as_tensor(class_weight).float())

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        n = target.shape[1]
        per_row = -((target * (1 - self.eps) + self.eps / n) * F.log_softmax(logits.float(), dim=1)).sum(1)
        if self.weight is None:
            return per_row.mean()
        w = target @ self.weight
        return (per_row * w).sum() / w.sum().clamp_min(1e-12)


@LOSSES.register("focal")
class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017, "Focal Loss for Dense Object Detection"): the cross-entropy of
    each target scaled by ``(1 - p_t) ** gamma``, so easy examples count less (class imbalance).
    ``softmax=False``: per-output sigmoid (binary, multi-label; ``class_weight`` = pos_weight),
    ``alpha`` (a number in [0, 1]) weights the positive terms by ``alpha`` and the negative ones
    by ``1 - alpha`` (the paper's alpha-balanced form; ``None``: no weighting);
    ``softmax=True``: multiclass, ``alpha`` a number or a list of one weight per class
    (``class_weight`` also weights each class's term). ``label_smoothing`` as the ``bce`` and
    ``ce`` losses. Raises ``ConfigError`` for an ``alpha`` outside [0, 1] or a per-class list with
    sigmoid outputs."""

    def __init__(self, gamma: float = 2.0, alpha: float | list[float] | None = None, label_smoothing: float = 0.0,
                 softmax: bool = False, class_weight: torch.Tensor | None = None):
        super().__init__()
        if isinstance(alpha, list) and not softmax:
            raise ConfigError("loss.params.alpha: a per-class list needs a multiclass task; give one number in [0, 1]")
        if alpha is not None and not all(0 <= a <= 1 for a in np.atleast_1d(alpha)):
            raise ConfigError(f"loss.params.alpha={alpha!r} must be in [0, 1]")
        self.gamma, self.softmax, self.eps = gamma, softmax, label_smoothing
        self.alpha = None if alpha is None else torch.as_tensor(alpha, dtype=torch.float32)
        self.register_buffer("weight", None if class_weight is None else torch.as_tensor(class_weight).float())

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.softmax:
            target = target * (1 - self.eps) + self.eps / target.shape[1]
            logp = F.log_softmax(logits, dim=1)
            terms = -target * (1 - logp.exp()) ** self.gamma * logp
            if self.alpha is not None and self.alpha.numel() not in (1, logits.shape[1]):
                raise ConfigError(f"loss.params.alpha has {self.alpha.numel()} class weights for {logits.shape[1]} "
                                  f"outputs (a subdivided competition has one output per fine class): give one number")
            if self.alpha is not None:
                terms = terms * self.alpha.to(logits.device)
            if self.weight is not None:
                terms = terms * self.weight
            return terms.sum(1).mean()
        target = target * (1 - self.eps) + self.eps / 2
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none", pos_weight=self.weight)
        p = torch.sigmoid(logits)
        p_t = p * target + (1 - p) * (1 - target)
        terms = bce * (1 - p_t) ** self.gamma
        if self.alpha is not None:
            terms = terms * (self.alpha * target + (1 - self.alpha) * (1 - target))
        return terms.mean()


class _ByOutputs(nn.Module):
    """A binary task's loss when only the task name is known: ``sigmoid`` on one output, ``softmax``
    on more (the fine classes of a subdivided competition); ``softmax=None``: more outputs are
    refused (``name``, the loss asked for, is then named)."""

    def __init__(self, sigmoid: nn.Module, softmax: nn.Module | None, name: str):
        super().__init__()
        self.sigmoid, self.softmax, self.name = sigmoid, softmax, name

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[1] == 1:
            return self.sigmoid(logits, target)
        if self.softmax is None:
            raise ConfigError(f"loss {self.name!r} is a sigmoid on one output, but this binary competition is "
                              f"subdivided ({logits.shape[1]} fine classes, softmax): use loss: {{name: auto}}")
        return self.softmax(logits, target)


class SupConLoss(nn.Module):
    """Supervised contrastive loss (Khosla et al. 2020, "Supervised Contrastive Learning", eq. 2,
    L_out; github.com/HobbitLong/SupContrast), an auxiliary loss on a network's embedding
    (``train.supcon``): the embeddings of windows of a class are pulled together, the others'
    pushed apart, on the unit sphere at ``temperature``.

    ``forward(embedding (B, D), target (B, n_outputs))`` -> scalar. The embedding is L2-normalised
    (no projection head: nothing outside the model to save or resume). Positives of anchor ``i``
    are weighted by ``t_i . t_p`` of the targets (a binary task's ``(B, 1)`` as ``[1 - t, t]``):
    with one-hot targets exactly Khosla's positives, with Mixup's or multi-label targets their
    overlap. Anchors without a positive in the batch are left out; none at all gives 0.
    """

    def __init__(self, temperature: float = 0.1):
        super().__init__()
        self.temperature = temperature

    def forward(self, embedding: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        z = F.normalize(embedding.float(), dim=1)
        t = target.float()
        if t.shape[1] == 1:
            t = torch.cat([1 - t, t], dim=1)
        own = torch.eye(len(z), dtype=torch.bool, device=z.device)
        sim = (z @ z.T / self.temperature).masked_fill(own, float("-inf"))
        log_prob = (sim - torch.logsumexp(sim, dim=1, keepdim=True)).masked_fill(own, 0.0)
        pos = (t @ t.T).masked_fill(own, 0.0)
        n_pos = pos.sum(1)
        has = n_pos > 0
        if not has.any():
            return z.sum() * 0.0
        return (-(pos * log_prob).sum(1)[has] / n_pos[has]).mean()


def balanced_class_weight(target: np.ndarray, task: str | dict) -> np.ndarray:
    """``class_weight (n_outputs,)`` from training targets ``(rows, n_outputs)`` (0/1): multiclass
    ``rows / (n_classes * rows_of_class)`` (sklearn's "balanced"); sigmoid tasks ``n_neg / n_pos``
    per output. Classes absent from the rows get weight 1. ``task``: the task name or the
    competition config; softmax outputs (a multiclass task, the fine classes of a subdivided
    competition, a binary task's targets of more than one column) are weighted as multiclass."""
    target = np.asarray(target, dtype=np.float64)
    task = tasks.output_task(task) if isinstance(task, dict) else task
    if task == "binary" and target.ndim == 2 and target.shape[1] > 1:  # the fine classes (subdivide)
        task = "multiclass"
    pos = target.sum(0)
    if task == "multiclass":
        w = len(target) / (target.shape[1] * np.maximum(pos, 1e-12))
    else:
        w = (len(target) - pos) / np.maximum(pos, 1e-12)
    return np.where(pos > 0, w, 1.0).astype(np.float32)


def build_loss(section: dict, task: str | dict, class_weight=None) -> nn.Module:
    """The loss of an experiment's ``loss`` section for ``task`` (the task name, or the competition
    config: a subdivided one trains softmax outputs, :func:`lib.data.tasks.output_task`); see the
    module docstring.

    Raises ``ConfigError`` for ``bce`` on a multiclass task or ``ce`` on a sigmoid task (training
    and prediction would disagree on what the outputs mean); ``bce`` given the name ``binary`` of a
    subdivided competition raises it at the first batch.
    """
    name = section["name"]
    task = tasks.output_task(task) if isinstance(task, dict) else task
    if name == "auto":
        name = "ce" if task == "multiclass" else "bce"
    params = dict(section.get("params") or {})
    if (name == "bce" and task == "multiclass") or (name == "ce" and task != "multiclass"):
        raise ConfigError(f"loss {name!r} does not fit a {task} task (predictions use "
                          f"{'softmax' if task == 'multiclass' else 'sigmoid'}); use loss: {{name: auto}}")
    cw = None if class_weight is None else torch.as_tensor(class_weight, dtype=torch.float32)
    if task == "binary":  # maybe subdivided: see the outputs
        sigmoid = LOSSES.get(name)(**params, **({"softmax": False} if name == "focal" else {}), class_weight=cw)
        softmax = (SoftCrossEntropy(params.get("label_smoothing", 0.0), cw) if name == "bce" and section["name"] == "auto"
                   else FocalLoss(**dict(params, softmax=True), class_weight=cw) if name == "focal" else None)
        return _ByOutputs(sigmoid, softmax, section["name"])
    if name == "focal":  # the outputs' activation decides (not a config parameter: lib.components.CODE_SUPPLIED)
        params["softmax"] = task == "multiclass"
    return LOSSES.get(name)(**params, class_weight=cw)
