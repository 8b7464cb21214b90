"""Losses on logits ``(batch, n_outputs)`` and soft targets ``(batch, n_outputs)`` in [0, 1]."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .config import Registry

LOSSES = Registry("loss")


@LOSSES.register("bce")
class BCEWithLogits(nn.Module):
    """Binary cross-entropy on logits (``torch.nn.functional.binary_cross_entropy_with_logits``),
    mean over batch and outputs; soft targets (Mixup/CutMix) are allowed. Optional label smoothing
    ``eps`` moves targets to ``eps/2 .. 1 - eps/2``."""

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.eps = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target * (1 - self.eps) + self.eps / 2
        return F.binary_cross_entropy_with_logits(logits.float(), target)


@LOSSES.register("focal")
class FocalLoss(nn.Module):
    """Binary focal loss (Lin et al. 2017): ``BCE * (1 - p_t) ** gamma``, for class imbalance."""

    def __init__(self, gamma: float = 2.0):
        super().__init__()
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        p = torch.sigmoid(logits)
        p_t = p * target + (1 - p) * (1 - target)
        return (bce * (1 - p_t) ** self.gamma).mean()


@LOSSES.register("ce")
class SoftCrossEntropy(nn.Module):
    """Cross-entropy on logits with soft (one-hot or mixed) targets, for multiclass tasks."""

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.eps = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        n = target.shape[1]
        target = target * (1 - self.eps) + self.eps / n
        return -(target * F.log_softmax(logits.float(), dim=1)).sum(1).mean()
