"""Model inputs from cached whole waveforms (:mod:`lib.features.waveform`): random crops at any
offset for training, the window grid (or a denser one) for validation and test.

An *item* is a row ``(region, start sample)`` of an int64 array ``(n, 2)`` (a region is a
recording, or one of its segments); a batch of items is cut out of the one long waveform by a
single gather, on the device that holds it, with the competition's padding (``audio.pad``) past a
region's end, exactly as :func:`lib.data.audio.cut_windows` pads the windows of the cached
feature sets.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..core.paths import Outputs
from ..features.cache import load_features, load_regions
from ..data.audio import window_starts
from .base import SplitInputs, expand


class WaveData(SplitInputs):
    """One split's cached waveforms with the window -> region -> recording maps.

    ``wave (total_samples,)`` (float32 or float16; memory-mapped, or on the GPU when it fits in
    half its free memory), ``offsets (regions + 1,)``: region ``k`` (a recording, or a segment of
    one: :func:`lib.data.segments.regions`) is ``wave[offsets[k]:offsets[k + 1]]``; ``clip`` the
    window length in samples (``round(clip_seconds * rate)``); ``pad`` the padding mode for
    regions shorter than a window (a crop never reaches outside its region); ``starts (windows,)``
    the start sample of each grid window within its region ``grid_region (windows,)`` (``rec``
    its recording). Audio scalars: none (metadata, when used, is the scalar input).
    """

    def __init__(self, wave: torch.Tensor, offsets: np.ndarray, grid: np.ndarray, manifest: dict, n_recordings: int,
                 regions: np.ndarray | None = None):
        self.wave, self.offsets, self.manifest = wave, offsets, manifest
        self.rate = self.input_rate(manifest)
        self.clip = max(1, int(round(manifest["clip_seconds"] * self.rate)))
        self.pad = manifest["pad"]
        self.lengths = np.diff(offsets)
        self.set_grid(grid[:, 0].astype(np.int64), n_recordings, regions)
        self.starts = np.round(grid[:, 1] * self.rate).astype(np.int64)
        self.grid_region = grid[:, 2].astype(np.int64) if grid.shape[1] > 2 else grid[:, 0].astype(np.int64)

    @staticmethod
    def input_rate(manifest: dict) -> float:
        """Input steps per second: the waveform's sample rate (Hz)."""
        return float(manifest["sample_rate"])

    @classmethod
    def load(cls, out: Outputs, feature_set: str, split: str, table: pd.DataFrame, comp: dict, device) -> WaveData:
        """Map a cached split (checked against ``table``'s ids) for ``device``. Raises
        ``MissingArtifact`` naming ``01_features.py`` when the cache is missing or stale."""
        wave, offsets, grid, manifest = load_features(out, feature_set, split, table=table, mmap_mode="c")
        on_gpu = device.type == "cuda" and wave.nbytes < 0.5 * torch.cuda.mem_get_info(device)[0]
        data = cls(torch.from_numpy(wave).to(device) if on_gpu else torch.from_numpy(wave), np.asarray(offsets),
                   grid, manifest, len(table), load_regions(out, feature_set, split))
        data.set_labels(table, comp)
        return data

    @property
    def device(self) -> torch.device:
        return self.wave.device

    @property
    def n_scalars(self) -> int:
        """Width of the model's scalar input: the encoded metadata (no audio scalars)."""
        return 0 if self.meta is None else self.meta.shape[1]

    @property
    def frames_per_second(self) -> float:
        """Input steps per second: samples of a waveform, frames of a matrix (time shifts for
        test-time augmentation)."""
        return self.rate

    def region_of(self, items: np.ndarray) -> np.ndarray:
        return items[:, 0]

    def sample_windows(self, recs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A random crop of each region of the recordings ``recs`` ``(n,)`` (:meth:`regions_of`;
        the recording itself when it is one region): items ``(m, 2)`` (region, start) whose start
        is uniform over every offset at which a whole window fits in the region (0 for a region no
        longer than a window, which is then padded)."""
        regions = self.regions_of(recs, rng)
        room = np.maximum(self.lengths[regions] - self.clip, 0) + 1
        return np.column_stack([regions, (rng.random(len(regions)) * room).astype(np.int64)])

    def windows_of(self, recs: np.ndarray, hop_seconds: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Every window of the recordings ``recs`` ``(n,)``: ``(items (w, 2), owner (w,))``, where
        ``owner`` is each window's position in ``recs``. ``hop_seconds=None``: the cached grid
        (``audio.hop_seconds``); else windows every ``hop_seconds`` over each region
        (:func:`window_starts`)."""
        if hop_seconds is None:
            idx, owner = self.grid_windows(recs)
            return np.column_stack([self.grid_region[idx], self.starts[idx]]), owner
        clip_s = self.clip / self.rate
        regions, region_owner = expand(self.region_first, self.region_count, np.asarray(recs))
        starts = [np.round(window_starts(self.lengths[k] / self.rate, clip_s, hop_seconds) * self.rate).astype(np.int64)
                  for k in regions]
        owner = np.repeat(region_owner, [len(s) for s in starts])
        return np.column_stack([np.repeat(regions, [len(s) for s in starts]), np.concatenate(starts)]), owner

    def crops(self, items: np.ndarray) -> torch.Tensor:
        """The windows of ``items`` ``(n, 2)`` as ``(n, clip)`` float32 (``(n, clip, bins)`` for a
        store of matrix frames) on the store's device, padded past a region's end by ``pad``: ``zero`` (silence), ``repeat`` (the recording
        tiled), ``reflect`` (mirrored without repeating the edge sample, period ``2 * (L - 1)``)."""
        first, start = self.offsets[:-1][items[:, 0]], items[:, 1]
        if len(items) and start.min() >= 0 and (start + self.clip <= self.lengths[items[:, 0]]).all():
            # every window inside its region (1-s clips, most crops): one slice each, 15x cheaper than the gather below
            return torch.stack([self.wave[i:i + self.clip] for i in (first + start).tolist()]).float()
        dev = self.wave.device
        rec = torch.as_tensor(items[:, 0], device=dev)
        length = torch.as_tensor(self.lengths, device=dev)[rec][:, None]
        pos = torch.as_tensor(items[:, 1], device=dev)[:, None] + torch.arange(self.clip, device=dev)[None, :]
        inside = pos < length
        if self.pad == "repeat":
            pos = pos % length
        elif self.pad == "reflect":
            period = (2 * length - 2).clamp_min(1)
            pos = pos % period
            pos = torch.where(pos < length, pos, period - pos)
        pos = pos.clamp_max(length - 1)
        x = self.wave[torch.as_tensor(self.offsets[:-1], device=dev)[rec][:, None] + pos].float()
        if self.pad != "zero":
            return x
        return x * (inside if x.ndim == 2 else inside[..., None])

    def batch(self, items: np.ndarray, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Model inputs of some items: ``wave (n, clip)`` float32 and ``scalars (n, n_scalars)``
        (the metadata, or ``(n, 0)``), on ``device``."""
        wave = self.crops(items)
        parts = self.metadata(items)
        scalars = torch.cat(parts, 1) if parts else torch.zeros(len(items), 0, device=wave.device)
        return wave.to(device, non_blocking=True), scalars.to(device, non_blocking=True)
