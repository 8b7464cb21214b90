"""The one module that imports ``torchaudio`` (swap it out here only).

On-device spectrogram transforms used by :mod:`lib.training.augment`.
"""
from __future__ import annotations

import torch
import torchaudio.functional as AF


def mask_along_axis(spec: torch.Tensor, max_width: int, axis: int) -> torch.Tensor:
    """Mask one random band of up to ``max_width`` bins along ``axis`` of each example, on device.

    Input and output ``(batch, channels, freq, frames)``; ``axis`` 2 masks frequency bins, 3 masks
    frames. The band is set to the batch mean (the models standardise their input, so it becomes about 0).
    Wraps ``torchaudio.functional.mask_along_axis_iid`` (SpecAugment, Park et al. 2019).
    """
    if max_width <= 0:
        return spec
    return AF.mask_along_axis_iid(spec, max_width, spec.mean(), axis)  # a tensor: no host sync
