"""The seed project's ``seed9`` feature stack: nine 128x63 channels and 36 scalars per clip.

Two implementations of the same definitions (``../shared/DESIGN.md`` §5): :mod:`.reference`
(one clip at a time with librosa; the documented definition) and :mod:`.batch` (many clips at
once, one STFT per FFT size shared by every channel; what stage 01 runs). Settings and names:
:mod:`.definitions`; tolerances of the batch against the reference: ``bench/README.md``.
"""
from __future__ import annotations

import importlib

import numpy as np

from ...core.errors import ConfigError
from ...data import audio

from .definitions import (  # noqa: F401  (the names users of the stack read)
    BATCH_CHANNEL_ATOL,
    BATCH_SCALAR_TOL,
    CHANNEL_NAMES,
    HOP,
    N_FFT,
    N_SAMPLES,
    SCALAR_NAMES,
    SHAPE,
    SR,
)

_LAZY = {"compute_seed9": "reference", "_pad_to": "reference", "_z": "reference", "_z_rows": "reference",
         "compute_seed9_batch": "batch", "prepare_seed9_batch": "batch"}


def __getattr__(name: str):
    """The implementations load on first use (they import librosa and torch)."""
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Seed9:
    """The seed's nine-channel stack ``(9, 128, 63)`` and 36 scalars; see :mod:`lib.features.seed9`.

    Requires 1-s clips at 16 kHz (the definitions fix n_fft 512, hop 256 and 63 frames).
    """

    kind = "spectrogram"  # the input kind of its cache (lib.inputs.INPUT_KINDS)

    def __init__(self):
        self.settings = {"n_fft": N_FFT, "hop_length": HOP}
        self.hop_length = HOP
        self.channel_names = list(CHANNEL_NAMES)
        self.scalar_names = list(SCALAR_NAMES)

    def __call__(self, y: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
        from .reference import compute_seed9

        audio.check_clip(y)
        return compute_seed9(y, sr)

    def check_rate(self, sr: float, training: bool = True) -> None:
        """Raise ``ConfigError`` unless the audio is read at 16 kHz (a traceback from the first chunk
        before), for training and test features alike."""
        if sr != SR:
            raise ConfigError(f"features seed9 needs audio at {SR} Hz, and this competition's is read at {sr:g} Hz: "
                              f"set audio.sample_rate: {SR} in the competition config (00_prepare.py then says "
                              f"which files it resamples) and run 00_prepare.py again")

    def prepare(self) -> None:
        """Build the batched extractor's filterbanks (about 0.7 s) before worker processes fork."""
        from .batch import prepare_seed9_batch

        prepare_seed9_batch()

    def batch(self, y: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
        """Many clips ``(clips, samples)`` at once -> ``(clips, 9, 128, 63)``, ``(clips, 36)``
        (:func:`.batch.compute_seed9_batch`: one STFT for the batch, shared by every channel)."""
        from .batch import compute_seed9_batch

        return compute_seed9_batch(y, sr)

