"""Training and prediction inputs: the windows of a split, metadata encoding, window aggregation.

A split's cached features hold one row per *window* (see :mod:`lib.features.cache`); labels, folds
and metadata belong to *recordings*. :class:`WindowData` links the two: training draws one
window per recording per epoch (a fresh one each epoch), validation and test predict every
window, and :func:`aggregate` turns window probabilities into one row per recording, on which
every score is computed. :class:`lib.data.waveforms.WaveData` does the same over cached whole
waveforms, where training draws a crop at any offset; both share :class:`SplitInputs`, and
:func:`load_inputs` picks the one a feature set needs.
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


class SplitInputs:
    """What every model input of a split shares, whatever holds the audio: the recordings' window
    grid (``rec (windows,)`` each window's recording row, ``first``/``count`` ``(recordings,)`` its
    first window and number of windows; a recording's windows are contiguous), the feature
    ``manifest``, the encoded metadata ``meta (recordings, M)`` (set per fold, see
    :class:`MetadataEncoder`) and, for the training split, encoded labels ``y`` and float targets
    ``target (recordings, n_outputs)``. Subclasses (:class:`WindowData`, cached spectrograms;
    :class:`lib.data.waveforms.WaveData`, whole waveforms) define what an *item* (one model input)
    is, :meth:`recordings`, :meth:`sample_windows`, :meth:`windows_of` and ``batch``."""

    rec: np.ndarray
    first: np.ndarray
    count: np.ndarray
    manifest: dict
    device: torch.device
    meta: torch.Tensor | None = None
    y: np.ndarray | None = None
    target: torch.Tensor | None = None

    def set_grid(self, rec: np.ndarray, n_recordings: int) -> None:
        """Set ``rec``, ``first`` and ``count`` from each grid window's recording row ``rec``."""
        self.rec = rec
        self.count = np.bincount(rec, minlength=n_recordings)
        self.first = np.concatenate([[0], np.cumsum(self.count)[:-1]])

    def set_labels(self, table: pd.DataFrame, comp: dict) -> None:
        """Encode ``table``'s ``target`` column (when it has one) as ``y`` and ``target``."""
        if "target" in table:
            self.y = tasks.class_index(table["target"], comp)
            self.target = torch.from_numpy(tasks.encode_targets(self.y, comp)).to(self.device)

    def set_metadata(self, encoder: MetadataEncoder | dict | None, table: pd.DataFrame) -> None:
        """Encode ``table``'s metadata (its rows are this split's recordings) with a fold's fitted
        ``encoder`` (or its :meth:`MetadataEncoder.state` dict, as a checkpoint stores it) as the
        ``meta`` input ``(recordings, M)``, on the data's device; ``None``: no metadata input."""
        if isinstance(encoder, dict):
            encoder = MetadataEncoder.from_state(encoder)
        self.meta = None if encoder is None else torch.from_numpy(encoder.transform(table)).to(self.device)

    def grid_windows(self, recs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The grid windows of the recordings ``recs`` ``(n,)``: ``(window indices (w,), owner (w,))``
        where ``owner`` is each window's position in ``recs``."""
        counts = self.count[recs]
        owner = np.repeat(np.arange(len(recs)), counts)
        offsets = np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)
        return self.first[recs][owner] + offsets, owner

    def recordings(self, items: np.ndarray) -> np.ndarray:
        """The recording row ``(n,)`` of each item."""
        raise NotImplementedError

    train_target: torch.Tensor | None = None
    """Targets to train on instead of ``target`` (``(recordings, n_outputs)``; distillation's mix
    of labels and a blend's soft targets), ``None``: the labels."""

    def targets(self, items: np.ndarray, training: bool = False) -> torch.Tensor:
        """Targets ``(n, n_outputs)`` of some items (their recordings' targets); ``training``: the
        ``train_target`` when there is one."""
        target = self.train_target if training and self.train_target is not None else self.target
        return target[torch.as_tensor(self.recordings(items), device=target.device)]

    def metadata(self, items: np.ndarray) -> list[torch.Tensor]:
        """``[meta (n, M)]`` of the items' recordings, or ``[]`` without metadata."""
        if self.meta is None:
            return []
        return [self.meta[torch.as_tensor(self.recordings(items), device=self.meta.device)]]


@dataclass
class WindowData(SplitInputs):
    """One split's cached features on the training device, with the window -> recording map.

    ``spec (windows, C, F, T)`` and ``scalars (windows, S)`` in the cache's dtype; an item is a
    window index; ``use_scalars``: whether the audio scalars are a model input. The grid and
    label fields are :class:`SplitInputs`'.
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
        spec, scalars, windows, manifest = load_features(out, feature_set, split, ids=table["id"], mmap_mode="c")
        on_gpu = device.type == "cuda" and spec.nbytes + scalars.nbytes < 0.5 * torch.cuda.mem_get_info(device)[0]
        place = (lambda a: torch.from_numpy(a).to(device)) if on_gpu else torch.from_numpy
        data = cls(place(spec), place(scalars), None, None, None, manifest, use_scalars)
        data.set_grid(windows[:, 0].astype(np.int64), len(table))
        data.set_labels(table, comp)
        return data

    @property
    def n_scalars(self) -> int:
        """Width of the model's scalar input: audio scalars (if used) + encoded metadata."""
        return (self.scalars.shape[1] if self.use_scalars else 0) + (0 if self.meta is None else self.meta.shape[1])

    def recordings(self, items: np.ndarray) -> np.ndarray:
        return self.rec[items]

    def sample_windows(self, recs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One random window of each recording in ``recs`` ``(n,)`` -> window indices ``(n,)``."""
        return self.first[recs] + (rng.random(len(recs)) * self.count[recs]).astype(np.int64)

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
        """Model inputs of some windows: ``spec (n, C, F, T)`` float32 and ``scalars (n, n_scalars)``."""
        w = torch.as_tensor(windows, device=self.spec.device)
        parts = ([self.scalars[w].float()] if self.use_scalars else []) + self.metadata(windows)
        scalars = torch.cat(parts, 1) if parts else torch.zeros(len(windows), 0, device=self.spec.device)
        spec = self.spec[w]
        if device.type != "cuda":
            return spec.float().contiguous(memory_format=torch.channels_last), scalars
        if spec.device.type == "cpu":  # pinned: the copy overlaps compute
            spec, scalars = spec.pin_memory(), scalars.pin_memory()
        spec = spec.to(device, non_blocking=True).float().contiguous(memory_format=torch.channels_last)
        return spec, scalars.to(device, non_blocking=True)


def aggregate(probs: np.ndarray, owner: np.ndarray, n: int, how: str, task: str) -> np.ndarray:
    """Window probabilities ``(windows, n_classes)`` -> recording probabilities ``(n, n_classes)``.

    ``owner (windows,)`` gives each window's recording (0..n-1). ``how``: ``mean`` of the
    probabilities; ``max`` per class (rows renormalised to sum 1 unless multi-label); ``vote``:
    the share of windows predicting each class (argmax, or p > 0.5 for multi-label), so the
    majority wins. Raises ``ValueError`` for an unknown ``how``.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if how == "vote":
        probs = tasks.predict_indicators(probs, {"task": "multilabel" if task == "multilabel" else "multiclass"}).astype(np.float64)
    if how in ("mean", "vote"):
        out = np.zeros((n, probs.shape[1]))
        np.add.at(out, owner, probs)
        return out / np.bincount(owner, minlength=n)[:, None]
    if how == "max":
        out = np.full((n, probs.shape[1]), -np.inf)
        np.maximum.at(out, owner, probs)
        return out if task == "multilabel" else out / out.sum(1, keepdims=True)
    raise ValueError(f"aggregation {how!r} is not one of mean, max, vote")


def load_inputs(out: Outputs, cfg: dict, split: str, table: pd.DataFrame, comp: dict, device) -> SplitInputs:
    """The inputs of experiment ``cfg`` for ``split`` (rows of ``table``) on ``device``:
    :class:`lib.data.waveforms.WaveData` for a waveform feature set, else :class:`WindowData`.
    Raises ``MissingArtifact`` naming ``01_features.py`` when the cache is missing or stale."""
    if cfg["features"]["name"] == "waveform":
        from .waveforms import WaveData

        return WaveData.load(out, cfg["features"]["set"], split, table, comp, device)
    return WindowData.load(out, cfg["features"]["set"], split, table, comp, device, cfg["inputs"]["audio_scalars"])
