"""Model inputs from a competition's own matrices (:mod:`lib.features.precomputed`): random crops
of ``audio.clip_seconds`` of frames at any offset of a region for training, the window grid for
validation and test, as :class:`lib.inputs.waveforms.WaveData` crops waveforms."""
from __future__ import annotations

import numpy as np
import torch

from .waveforms import WaveData


class FrameData(WaveData):
    """One split's cached matrix frames ``(total_frames, bins)`` with the window -> region ->
    recording maps; an item is ``(region, start frame)``; a batch is ``(n, 1, bins, clip frames)``
    float32, as a cached spectrogram's. Audio scalars: none (metadata, when used, is the scalar input)."""

    @staticmethod
    def input_rate(manifest: dict) -> float:
        """Input steps per second: the matrices' frames per second."""
        return float(manifest["frames_per_second"])

    def batch(self, items: np.ndarray, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Model inputs of some items: ``spec (n, 1, bins, clip)`` float32 (channels last; with
        ``inputs.group_norm``, less their groups' means: :meth:`set_group_norm`) and
        ``scalars (n, n_scalars)`` (the metadata, or ``(n, 0)``), on ``device``."""
        spec = self.crops(items).transpose(1, 2)[:, None]
        parts = self.metadata(items)
        scalars = torch.cat(parts, 1) if parts else torch.zeros(len(items), 0, device=spec.device)
        spec = self.group_normed(spec.to(device, non_blocking=True), items).contiguous(memory_format=torch.channels_last)
        return spec, scalars.to(device, non_blocking=True)
