"""Model inputs from cached spectrograms (:mod:`lib.features.cache`): one row per *window* of a
recording. Training draws one window per recording per epoch (a fresh one each epoch);
validation and test predict every window (:func:`lib.inputs.base.aggregate` then gives one row per
recording)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..core.paths import Outputs
from ..features.cache import load_features, load_regions
from .base import SplitInputs


@dataclass
class WindowData(SplitInputs):
    """One split's cached features on the training device, with the window -> recording map.

    ``spec (windows, C, F, T)`` and ``scalars (windows, S)`` in the cache's dtype; an item is a
    window index; ``use_scalars``: whether the audio scalars are a model input. The grid and
    label fields are :class:`SplitInputs`'; ``window_region (windows,)`` each window's region,
    ``region_window0``/``region_windows`` ``(regions,)`` a region's first window and count.
    """

    spec: torch.Tensor
    scalars: torch.Tensor
    rec: np.ndarray
    first: np.ndarray
    count: np.ndarray
    manifest: dict
    use_scalars: bool = True
    meta: torch.Tensor | None = None
    y: np.ndarray | None = None
    target: torch.Tensor | None = None

    def __post_init__(self):
        if self.rec is not None:  # built from arrays (not by load): one region per recording
            self.set_grid(self.rec, len(self.count))
            self.window_region, self.region_windows, self.region_window0 = self.rec, self.count, self.first

    @property
    def device(self) -> torch.device:
        return self.spec.device

    @classmethod
    def load(cls, out: Outputs, feature_set: str, split: str, table: pd.DataFrame, comp: dict, device,
             use_scalars: bool = True) -> WindowData:
        """Map a cached split (checked against ``table``'s ids) for training on ``device``.

        The arrays stay memory-mapped (no copy: the operating system pages them in as batches
        touch them and keeps them cached), except on CUDA when they fit in half of the free GPU
        memory: they are then copied to the GPU once. Raises ``MissingArtifact`` naming
        ``01_features.py`` when the cache is missing or stale.
        """
        spec, scalars, windows, manifest = load_features(out, feature_set, split, table=table, mmap_mode="c")
        on_gpu = device.type == "cuda" and spec.nbytes + scalars.nbytes < 0.5 * torch.cuda.mem_get_info(device)[0]
        place = (lambda a: torch.from_numpy(a).to(device)) if on_gpu else torch.from_numpy
        data = cls(place(spec), place(scalars), None, None, None, manifest, use_scalars)
        regions = load_regions(out, feature_set, split)
        data.set_grid(windows[:, 0].astype(np.int64), len(table), regions)
        data.window_region = windows[:, 2].astype(np.int64)
        data.region_windows = np.bincount(data.window_region, minlength=len(regions))
        data.region_window0 = np.concatenate([[0], np.cumsum(data.region_windows)[:-1]])
        data.set_labels(table, comp)
        return data

    @classmethod
    def from_config(cls, out, cfg: dict, split: str, table: pd.DataFrame, comp: dict, device) -> WindowData:
        """:meth:`load` with the experiment's ``inputs.audio_scalars``."""
        return cls.load(out, cfg["features"]["set"], split, table, comp, device, cfg["inputs"]["audio_scalars"])

    @property
    def n_scalars(self) -> int:
        """Width of the model's scalar input: audio scalars (if used) + encoded metadata."""
        return (self.scalars.shape[1] if self.use_scalars else 0) + (0 if self.meta is None else self.meta.shape[1])

    def recordings(self, items: np.ndarray) -> np.ndarray:
        return self.rec[items]

    def region_of(self, items: np.ndarray) -> np.ndarray:
        return self.window_region[items]

    def sample_windows(self, recs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One random window of each region (segment) of the recordings ``recs`` ``(n,)`` (of each
        recording when it is one region) -> window indices ``(m,)`` (:meth:`regions_of`)."""
        regions = self.regions_of(recs, rng)
        return self.region_window0[regions] + (rng.random(len(regions)) * self.region_windows[regions]).astype(np.int64)

    def windows_of(self, recs: np.ndarray, hop_seconds: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Every window of the recordings ``recs`` ``(n,)``: ``(window indices (w,), owner (w,))``
        where ``owner`` is each window's position in ``recs``. ``hop_seconds`` must be ``None``:
        the cache holds one window grid (raises ``ValueError`` otherwise)."""
        if hop_seconds is not None:
            raise ValueError("cached features hold one window grid: a prediction hop needs a waveform feature set")
        return self.grid_windows(recs)

    @property
    def frames_per_second(self) -> float:
        """Spectrogram frames per second (time shifts for test-time augmentation)."""
        return self.manifest["sample_rate"] / self.manifest["hop_length"]

    def batch(self, windows: np.ndarray, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Model inputs of some windows: ``spec (n, C, F, T)`` float32 (with ``inputs.group_norm``, less
        their groups' means: :meth:`set_group_norm`) and ``scalars (n, n_scalars)``."""
        w = torch.as_tensor(windows, device=self.spec.device)
        parts = ([self.scalars[w].float()] if self.use_scalars else []) + self.metadata(windows)
        scalars = torch.cat(parts, 1) if parts else torch.zeros(len(windows), 0, device=self.spec.device)
        spec = self.spec[w]
        if device.type != "cuda":
            return self.group_normed(spec.float(), windows).contiguous(memory_format=torch.channels_last), scalars
        if spec.device.type == "cpu":  # pinned: the copy overlaps compute
            spec, scalars = spec.pin_memory(), scalars.pin_memory()
        spec = self.group_normed(spec.to(device, non_blocking=True).float(), windows)
        return spec.contiguous(memory_format=torch.channels_last), scalars.to(device, non_blocking=True)
