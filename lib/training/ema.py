"""Exponential moving average of the weights (``train.ema``)."""
from __future__ import annotations

import torch


def ema_avg_fn(decay: float):
    """EMA update for ``torch.optim.swa_utils.AveragedModel`` with a warm-up of the decay:
    ``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates (as timm's ``ModelEma`` and
    TensorFlow's ``ExponentialMovingAverage(num_updates=...)``), so that short runs on small data
    are not dominated by the initial weights.

    Written ``averaged + (1 - d) * (current - averaged)``, which leaves a tensor that does not
    change exactly as it is: with ``use_buffers=True`` every buffer is averaged, the constants of a
    front end (filterbank, window) too, and those are not saved in a ``state_dict``, so the form
    ``d * averaged + (1 - d) * current`` would let them drift by rounding, and a resumed run or a
    reloaded checkpoint would differ from the model that was validated."""
    def avg(averaged: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        d = ((1 + n) / (10 + n)).clamp(max=decay).to(averaged.dtype)
        return averaged + (1 - d) * (current - averaged)
    return avg

