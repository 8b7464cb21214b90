"""Optimisers and learning-rate schedules, by name (``optimizer:`` / ``scheduler:`` sections)."""
from __future__ import annotations

import math

import torch

from ..core.config import Registry

OPTIMIZERS = Registry("optimizer")
OPTIMIZERS.register("adamw")(torch.optim.AdamW)
OPTIMIZERS.register("adam")(torch.optim.Adam)
OPTIMIZERS.register("sgd")(torch.optim.SGD)
SCHEDULERS = Registry("scheduler")


@SCHEDULERS.register("warmup_cosine")
def warmup_cosine(optimizer, steps_per_epoch: int, epochs: int, warmup_epochs: float = 1.0, min_lr_ratio: float = 0.01):
    """Per-step LR: linear warm-up from 0 over ``warmup_epochs``, then cosine decay to
    ``min_lr_ratio`` x the base LR at the last step. Returns a ``LambdaLR``."""
    total, warm = max(1, steps_per_epoch * epochs), int(steps_per_epoch * warmup_epochs)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, total - warm)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

