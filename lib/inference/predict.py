"""Predictions of a model over windows, aggregated per recording."""
from __future__ import annotations

import numpy as np
import torch

from ..data import tasks
from ..data.windows import WindowData, aggregate
from ..training.precision import autocast


@torch.no_grad()
def predict_logits(model, data: WindowData, windows: np.ndarray, batch_size: int = 256) -> torch.Tensor:
    """Logits ``(windows, n_outputs)`` (float32, CPU) of the given windows, every one kept
    (:func:`autocast` for inference: float32 on the CPU)."""
    model.eval()
    device = next(model.parameters()).device
    out = [torch.zeros(0, model.n_outputs)]
    for i in range(0, len(windows), batch_size):
        with autocast(device, training=False):
            out.append(model(*data.batch(windows[i:i + batch_size], device))["logits"].float().cpu())
    return torch.cat(out)


def predict_recordings(model, data: WindowData, recs: np.ndarray, comp: dict) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
    """Predict every window of the recordings ``recs`` ``(n,)`` and aggregate them per recording
    (``audio.aggregate``). Returns ``(probs (n, n_classes), window logits (w, n_outputs),
    window indices (w,))``."""
    windows, owner = data.windows_of(recs)
    logits = predict_logits(model, data, windows)
    probs = aggregate(tasks.logits_to_probs(logits, comp), owner, len(recs), comp["audio"]["aggregate"], comp["task"])
    return probs, logits, windows

