"""The one module that imports ``torchaudio`` (swap it out here only).

On-device spectrogram transforms used by :mod:`lib.training.augment` and the biquad filter
used by :mod:`lib.training.wave_augment`.
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


_BIQUADS = {"lowpass": AF.lowpass_biquad, "highpass": AF.highpass_biquad, "bandpass": AF.bandpass_biquad}


def biquad_filter(wave: torch.Tensor, sample_rate: int, kind: str, cutoff_hz: float, q: float = 0.707) -> torch.Tensor:
    """A second-order (biquad) ``lowpass``, ``highpass`` or ``bandpass`` filter, on the signal's device.

    Input and output ``(..., samples)``, same dtype; ``cutoff_hz`` (the centre frequency for
    ``bandpass``) in Hz, below ``sample_rate / 2``; ``q`` the quality factor (0.707: Butterworth).
    Wraps ``torchaudio.functional.{lowpass,highpass,bandpass}_biquad`` (coefficients from the
    RBJ Audio EQ Cookbook). Those clamp their output to [-1, 1]; the signal is scaled to a peak
    of 0.25 before filtering and back after, so the clamp does not bite unless the filter's gain
    exceeds 4 (Q above about 4).
    """
    peak = wave.detach().abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) * 4
    return _BIQUADS[kind](wave / peak, sample_rate, cutoff_hz, q) * peak
