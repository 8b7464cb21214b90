"""The ``precomputed`` feature set: the competition's own matrices (spectrogram tables), cached
for random crops at any frame offset.

For a competition that ships no audio but a matrix per recording (``matrix`` section of the
competition config; :mod:`lib.data.matrix`), stage 01 stores each split's rows (or, with
segments, their regions: :func:`lib.data.segments.regions`) end to end, frames first, in
``<split>_frames.npy`` ``(total_frames, n_bins)``, with ``<split>_offsets.npy``,
``<split>_regions.npy`` and ``<split>_windows.npy`` as the waveform cache
(:func:`lib.features.waveform.extract_stretches`). Training then crops ``audio.clip_seconds`` of
frames at any offset of a region, padded by ``audio.pad`` (the voice-pathology winner's random
64-frame token crops, MAIC 2021); validation and test predict the window grid
(:class:`lib.inputs.frames.FrameData`). Spectrogram models, SpecAugment, Mixup, CutMix and
test-time shifts work on them; the waveform path (front ends, waveform augmentations) needs audio
and is refused.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.errors import ConfigError
from ..data import segments
from ..data.matrix import read_matrix
from .waveform import extract_stretches


class Precomputed:
    """The ``precomputed`` feature set (no parameters): one channel, the competition's matrix as
    it ships, ``(1, n_bins, frames)`` per window; no audio scalars."""

    kind = "frames"  # the input kind of its cache (lib.inputs.INPUT_KINDS)
    store = "frames"  # its cache's file: <split>_frames.npy
    channel_names = ["precomputed"]
    scalar_names: list[str] = []
    hop_length = None

    def __init__(self):
        self.settings: dict = {}

    @staticmethod
    def stretch(path: str, start_s: float, end_s: float, audio_cfg: dict) -> np.ndarray:
        """``(frames, n_bins)`` float32 of the file's matrix from ``start_s`` to ``end_s`` seconds
        (frames ``round(start_s * fps)`` to ``round(end_s * fps)``, at least one)."""
        x = read_matrix(path, audio_cfg["matrix"])
        fps = audio_cfg["frames_per_second"]
        a, b = _frame_span(start_s, end_s, fps)
        return np.ascontiguousarray(x[:, a:b].T)


def _frame_span(start_s, end_s, fps: float) -> tuple:
    """First and end frame of stretches (arrays or numbers of seconds): rounded, at least one frame."""
    a = np.round(np.asarray(start_s, float) * fps).astype(np.int64)
    return a, np.maximum(np.round(np.asarray(end_s, float) * fps).astype(np.int64), a + 1)


def extract_frames_split(extractor: Precomputed, table, folder: Path, split: str, comp: dict, workers: int,
                         dtype: str = "float32") -> dict:
    """Cache one split's matrices (:func:`extract_stretches`). Raises ``ConfigError`` when the
    competition ships audio, not matrices."""
    if not comp.get("matrix"):
        raise ConfigError("features.name precomputed reads the competition's matrices, but its config has no "
                          "matrix section (it ships audio): use log_mel, seed9 or waveform")
    fps = segments.frames_per_second(comp)
    a = dict(comp["audio"], matrix=comp["matrix"], frames_per_second=fps)
    regions = segments.regions(table)
    first, end = _frame_span(regions[:, 1], regions[:, 2], fps)
    return extract_stretches(extractor, table, regions, end - first, (comp["matrix"]["n_bins"],), folder, split,
                             comp, a, workers, dtype)
