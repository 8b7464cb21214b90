"""Predictions of a model over windows, aggregated per recording, with optional test-time
augmentation (TTA): each window also predicted time-shifted, and (waveform input) over a denser
window grid. The same function makes the OOF predictions (at the end of each fold) and the test
predictions, so OOF scores measure what is submitted."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import torch

from ..data import tasks
from ..inputs import SplitInputs, aggregate
from ..core.device import autocast


def tta_active(tta: dict | None) -> bool:
    """Whether an experiment's ``tta`` section asks for more than the plain prediction
    (a shift other than ``[0]`` or a ``hop_seconds``)."""
    return bool(tta) and (list(tta.get("shifts") or [0.0]) != [0.0] or tta.get("hop_seconds") is not None)


@torch.no_grad()
def predict_logits(model, data: SplitInputs, items: np.ndarray, shifts=(0.0,), batch_size: int = 256,
                   amp: bool | None = None) -> torch.Tensor:
    """Logits ``(shifts, items, n_outputs)`` (float32, CPU) of the given items, every one kept,
    computed in the inference precision (:func:`autocast` for inference: float32 on the CPU) or,
    with ``amp`` a bool, in the precision of the training steps with that autocast flag (a fold's
    :func:`lib.core.device.training_amp`: bfloat16 on a CPU that computes it natively, the
    cheaper per-epoch validation of stage 02).
    Each shift (seconds) rolls the model input along time by ``round(shift *
    data.frames_per_second)`` (samples of a waveform, frames of a cached spectrogram), wrapping
    around, as the ``time_shift`` augmentation does."""
    model.eval()
    device = next(itertools.chain(model.parameters(), model.buffers())).device
    rolls = [int(round(s * data.frames_per_second)) if s else 0 for s in shifts]
    out = [[torch.zeros(0, model.n_outputs)] for _ in rolls]
    for i in range(0, len(items), batch_size):
        x, scalars = data.batch(items[i:i + batch_size], device)
        for k, roll in enumerate(rolls):
            with autocast(device, True if amp is None else amp, training=amp is not None):
                xs = torch.roll(x, roll, dims=-1) if roll else x
                out[k].append(model(xs, scalars)["logits"].float().cpu())
    return torch.stack([torch.cat(o) for o in out])


def _window_probs(model, data: SplitInputs, recs: np.ndarray, comp: dict, tta: dict, amp: bool | None = None):
    """Every window of ``recs``: ``(probabilities (w, n_classes), owner (w,), logits (shifts, w,
    n_outputs), items (w, ...))`` (see :func:`predict_recordings`)."""
    items, owner = data.windows_of(recs, tta.get("hop_seconds"))
    logits = predict_logits(model, data, items, tta.get("shifts") or (0.0,), amp=amp)
    allowed = None if data.fine_allowed is None else data.fine_allowed[data.recordings(items)]
    return np.mean([tasks.logits_to_probs(lg, comp, allowed) for lg in logits], axis=0), owner, logits, items


def predict_recordings(model, data: SplitInputs, recs: np.ndarray, comp: dict, tta: dict | None = None,
                       amp: bool | None = None) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
    """Predict every window of the recordings ``recs`` ``(n,)`` and aggregate them per recording
    (:func:`aggregate_windows`). ``tta`` (an experiment's ``tta`` section; ``None``: none): the window
    probabilities are the mean over ``shifts`` (seconds; :func:`predict_logits`), and with
    ``hop_seconds`` the windows are every ``hop_seconds`` (waveform input only); with
    ``subdivide.mask`` each window over its recording's allowed fine classes (``data.fine_allowed``).
    ``amp``: the precision (:func:`predict_logits`). Returns ``(probs (n, n_classes), window
    logits (shifts, w, n_outputs), items (w, ...))``."""
    window_probs, owner, logits, items = _window_probs(model, data, recs, comp, tta or {}, amp)
    return aggregate_windows(window_probs, owner, data.region_of(items), len(recs), comp), logits, items


def predict_segments(model, data: SplitInputs, recs: np.ndarray, comp: dict, tta: dict | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Predict every window of the recordings ``recs`` ``(n,)`` (as :func:`predict_recordings`)
    and aggregate them per region (a segment of ``segments.unit: recording``) by
    ``audio.aggregate``. Returns ``(regions (m,), probs (m, n_classes))``: every region of
    ``recs``, in the order of their windows."""
    window_probs, _, _, items = _window_probs(model, data, recs, comp, tta or {})
    return aggregate_regions(window_probs, data.region_of(items), comp)


def aggregate_regions(window_probs: np.ndarray, region: np.ndarray, comp: dict) -> tuple[np.ndarray, np.ndarray]:
    """Window probabilities ``(windows, n_classes)`` -> per region by ``audio.aggregate``:
    ``(regions (m,), probs (m, n_classes))``, the regions of ``region (windows,)`` in order of
    first appearance."""
    codes, uniques = pd.factorize(region)
    return np.asarray(uniques), aggregate(window_probs, codes, len(uniques), comp["audio"]["aggregate"], comp)


def aggregate_windows(window_probs: np.ndarray, owner: np.ndarray, region: np.ndarray, n: int, comp: dict) -> np.ndarray:
    """Window probabilities ``(windows, n_classes)`` -> recording probabilities ``(n, n_classes)``
    (``owner (windows,)``: each window's recording 0..n-1; ``region (windows,)``: its region).

    Windows are aggregated by ``audio.aggregate``; with ``segments.unit: recording`` first per
    segment (region) by ``audio.aggregate`` (as :func:`aggregate_regions`), then the segments per
    recording by ``segments.aggregate`` (``vote``: each segment votes for its class of maximum
    probability, as the voice-pathology winner's tokens voted per patient, MAIC 2021)."""
    seg = comp.get("segments") or {}
    if seg.get("unit") != "recording":
        return aggregate(window_probs, owner, n, comp["audio"]["aggregate"], comp)
    regions, per_region = aggregate_regions(window_probs, region, comp)
    owner_of = pd.Series(owner, index=region).groupby(level=0).first()  # a region's windows share its recording
    return aggregate(per_region, owner_of.loc[regions].to_numpy(), n, seg["aggregate"], comp)
