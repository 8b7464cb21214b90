"""Training and prediction inputs: the windows of a split, metadata encoding, window aggregation.

A split's cached features hold one row per *window* (see :mod:`lib.features.cache`); labels, folds
and metadata belong to *recordings*. :class:`WindowData` links the two: training draws one
window per recording per epoch (a fresh one each epoch), validation and test predict every
window, and :func:`aggregate` turns window probabilities into one row per recording, on which
every score is computed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..core.paths import Outputs
from ..features.cache import load_features
from . import tasks
from .metadata import MetadataEncoder


@dataclass
class WindowData:
    """One split's features on the training device, with the window -> recording map.

    ``spec (windows, C, F, T)`` and ``scalars (windows, S)`` in the cache's dtype; ``rec
    (windows,)`` each window's recording row; ``first``/``count`` ``(recordings,)`` the first
    window and number of windows of each recording (a recording's windows are contiguous);
    ``meta (recordings, M)`` encoded metadata (set per fold, see :class:`MetadataEncoder`);
    ``use_scalars``: whether the audio scalars are a model input. For the training split also
    encoded labels ``y`` and float targets ``target (recordings, n_outputs)``.
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

    @classmethod
    def load(cls, out: Outputs, feature_set: str, split: str, table: pd.DataFrame, comp: dict, device,
             use_scalars: bool = True) -> WindowData:
        """Map a cached split (checked against ``table``'s ids) for training on ``device``.

        The arrays stay memory-mapped (no copy: the operating system pages them in as batches
        touch them and keeps them cached), except on CUDA when they fit in half of the free GPU
        memory: they are then copied to the GPU once. Raises ``MissingArtifact`` naming
        ``01_features.py`` when the cache is missing or stale.
        """
        spec, scalars, windows, manifest = load_features(out, feature_set, split, ids=table["id"], mmap_mode="c")
        rec = windows[:, 0].astype(np.int64)
        count = np.bincount(rec, minlength=len(table))
        on_gpu = device.type == "cuda" and spec.nbytes + scalars.nbytes < 0.5 * torch.cuda.mem_get_info(device)[0]
        place = (lambda a: torch.from_numpy(a).to(device)) if on_gpu else torch.from_numpy
        data = cls(place(spec), place(scalars), rec, np.concatenate([[0], np.cumsum(count)[:-1]]), count, manifest,
                   use_scalars)
        if "target" in table:
            data.y = tasks.class_index(table["target"], comp)
            data.target = torch.from_numpy(tasks.encode_targets(data.y, comp)).to(device)
        return data

    def set_metadata(self, encoder: MetadataEncoder | dict | None, table: pd.DataFrame) -> None:
        """Encode ``table``'s metadata (its rows are this split's recordings) with a fold's fitted
        ``encoder`` (or its :meth:`MetadataEncoder.state` dict, as a checkpoint stores it) as the
        ``meta`` input ``(recordings, M)``, on the features' device; ``None``: no metadata input."""
        if isinstance(encoder, dict):
            encoder = MetadataEncoder.from_state(encoder)
        self.meta = None if encoder is None else torch.from_numpy(encoder.transform(table)).to(self.spec.device)

    @property
    def n_scalars(self) -> int:
        """Width of the model's scalar input: audio scalars (if used) + encoded metadata."""
        return (self.scalars.shape[1] if self.use_scalars else 0) + (0 if self.meta is None else self.meta.shape[1])

    def sample_windows(self, recs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One random window of each recording in ``recs`` ``(n,)`` -> window indices ``(n,)``."""
        return self.first[recs] + (rng.random(len(recs)) * self.count[recs]).astype(np.int64)

    def windows_of(self, recs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every window of the recordings ``recs`` ``(n,)``: ``(window indices (w,), owner (w,))``
        where ``owner`` is each window's position in ``recs``."""
        counts = self.count[recs]
        owner = np.repeat(np.arange(len(recs)), counts)
        offsets = np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)
        return self.first[recs][owner] + offsets, owner

    def batch(self, windows: np.ndarray, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Model inputs of some windows: ``spec (n, C, F, T)`` float32 and ``scalars (n, n_scalars)``."""
        w = torch.as_tensor(windows, device=self.spec.device)
        parts = [self.scalars[w].float()] if self.use_scalars else []
        if self.meta is not None:
            parts.append(self.meta[torch.as_tensor(self.rec[windows], device=self.meta.device)])
        scalars = torch.cat(parts, 1) if parts else torch.zeros(len(windows), 0, device=self.spec.device)
        spec = self.spec[w]
        if device.type != "cuda":
            return spec.float().contiguous(memory_format=torch.channels_last), scalars
        if spec.device.type == "cpu":  # pinned: the copy overlaps compute
            spec, scalars = spec.pin_memory(), scalars.pin_memory()
        spec = spec.to(device, non_blocking=True).float().contiguous(memory_format=torch.channels_last)
        return spec, scalars.to(device, non_blocking=True)

    def targets(self, windows: np.ndarray) -> torch.Tensor:
        """Training targets ``(n, n_outputs)`` of some windows (their recordings' targets)."""
        return self.target[torch.as_tensor(self.rec[windows], device=self.target.device)]


def aggregate(probs: np.ndarray, owner: np.ndarray, n: int, how: str, task: str) -> np.ndarray:
    """Window probabilities ``(windows, n_classes)`` -> recording probabilities ``(n, n_classes)``.

    ``owner (windows,)`` gives each window's recording (0..n-1). ``how``: ``mean`` of the
    probabilities; ``max`` per class (rows renormalised to sum 1 unless multi-label); ``vote``:
    the share of windows predicting each class (argmax, or p > 0.5 for multi-label), so the
    majority wins. Raises ``ValueError`` for an unknown ``how``.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if how == "vote":
        probs = tasks.predict_indicators(probs, {"task": task}).astype(np.float64)
    if how in ("mean", "vote"):
        out = np.zeros((n, probs.shape[1]))
        np.add.at(out, owner, probs)
        return out / np.bincount(owner, minlength=n)[:, None]
    if how == "max":
        out = np.full((n, probs.shape[1]), -np.inf)
        np.maximum.at(out, owner, probs)
        return out if task == "multilabel" else out / out.sum(1, keepdims=True)
    raise ValueError(f"aggregation {how!r} is not one of mean, max, vote")
