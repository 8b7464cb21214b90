"""Exponential moving average of the weights (``train.ema``)."""
from __future__ import annotations

import torch


def ema_avg_fn(decay: float):
    """EMA update for ``torch.optim.swa_utils.AveragedModel`` with a warm-up of the decay:
    ``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates (as timm's ``ModelEma`` and
    TensorFlow's ``ExponentialMovingAverage(num_updates=...)``), so that short runs on small data
    are not dominated by the initial weights."""
    def avg(averaged: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        d = ((1 + n) / (10 + n)).clamp(max=decay).to(averaged.dtype)
        return d * averaged + (1 - d) * current
    return avg

