"""What every model input of a split shares (:class:`SplitInputs`), and the aggregation of window
probabilities into recording probabilities (:func:`aggregate`)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..data import tasks
from ..data.metadata import MetadataEncoder
from ..data.prepare import fine_mask
from ..data.slices import with_slices


class SplitInputs:
    """What every model input of a split shares, whatever holds the audio: the recordings' window
    grid (``rec (windows,)`` each window's recording row, ``first``/``count`` ``(recordings,)`` its
    first window and number of windows; a recording's windows are contiguous), the feature
    ``manifest``, the encoded metadata ``meta (recordings, M)`` (set per fold, see
    :class:`MetadataEncoder`) and, for the training split, encoded labels ``y`` and float targets
    ``target (recordings, n_outputs)``; the *regions* (stretches of a recording: the whole of it, or
    its segments: :func:`lib.data.segments.regions`) with ``region_row``, ``region_first`` and
    ``region_count``. Subclasses (:class:`lib.inputs.windows.WindowData`, cached spectrograms;
    :class:`lib.inputs.waveforms.WaveData`, whole waveforms) define what an *item* (one model input)
    is, :meth:`region_of`, :meth:`sample_windows`, :meth:`windows_of` and ``batch``."""

    rec: np.ndarray
    first: np.ndarray
    count: np.ndarray
    manifest: dict
    device: torch.device
    meta: torch.Tensor | None = None
    y: np.ndarray | None = None
    target: torch.Tensor | None = None
    fine_allowed: np.ndarray | None = None
    group_offset: torch.Tensor | None = None
    """``inputs.group_norm``'s band means ``(groups, C, F)`` (:meth:`set_group_norm`); ``row_group
    (recordings,)`` each row's index into them."""
    row_group: torch.Tensor | None = None

    def set_grid(self, rec: np.ndarray, n_recordings: int, regions: np.ndarray | None = None) -> None:
        """Set ``rec``, ``first`` and ``count`` from each grid window's recording row ``rec``, and
        the regions (:func:`lib.data.segments.regions`: ``(regions, 3)`` row, start, end s; default
        one per row): ``region_row (regions,)``, each row's ``region_first``/``region_count``."""
        self.rec = rec
        self.count = np.bincount(rec, minlength=n_recordings)
        self.first = np.concatenate([[0], np.cumsum(self.count)[:-1]])
        self.region_row = np.arange(n_recordings) if regions is None else regions[:, 0].astype(np.int64)
        self.region_count = np.bincount(self.region_row, minlength=n_recordings)
        self.region_first = np.concatenate([[0], np.cumsum(self.region_count)[:-1]])

    def regions_of(self, recs: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Every region (segment) of the recordings ``recs`` ``(n,)`` -> region indices ``(m,)``;
        with ``rng`` and more regions than recordings, in random order (a training epoch then
        holds every segment once, not runs of one recording's). One region per recording: ``recs``."""
        if (self.region_count[recs] == 1).all():
            return self.region_first[recs]
        regions = expand(self.region_first, self.region_count, recs)[0]
        return regions if rng is None else rng.permutation(regions)

    def region_of(self, items: np.ndarray) -> np.ndarray:
        """The region ``(n,)`` of each item."""
        raise NotImplementedError

    def set_labels(self, table: pd.DataFrame, comp: dict) -> None:
        """Encode ``table``'s ``target`` column (when it has one) as ``y`` (carrying the rows'
        slices when the table has any: :func:`lib.data.slices.with_slices`) and ``target``; a
        subdivided competition (``fine_classes``) trains on the fine classes of the table's
        ``fine_target`` column (:func:`lib.data.tasks.encode_targets`), ``y`` staying the
        competition's classes (scores, the balanced sampler), and with ``subdivide.mask`` each
        row's allowed fine classes are ``fine_allowed (recordings, n_fine)`` bool
        (:func:`lib.data.prepare.fine_mask`)."""
        self.fine_allowed = fine_mask(table, comp)
        if "target" in table:
            y = tasks.class_index(table["target"], comp)
            fine = table["fine_target"].astype(str).tolist() if "fine_target" in table else None
            self.target = torch.from_numpy(tasks.encode_targets(y, comp, fine)).to(self.device)
            self.y = with_slices(y, table)

    def set_metadata(self, encoder: MetadataEncoder | dict | None, table: pd.DataFrame) -> None:
        """Encode ``table``'s metadata (its rows are this split's recordings) with a fold's fitted
        ``encoder`` (or its :meth:`MetadataEncoder.state` dict, as a checkpoint stores it) as the
        ``meta`` input ``(recordings, M)``, on the data's device; ``None``: no metadata input."""
        if isinstance(encoder, dict):
            encoder = MetadataEncoder.from_state(encoder)
        self.meta = None if encoder is None else torch.from_numpy(encoder.transform(table)).to(self.device)

    def set_group_norm(self, groups) -> None:
        """Per-group normalisation (``inputs.group_norm``): from now on every spectrogram of a batch
        has its group's mean of each channel and band removed, that mean taken over every window
        of the group's rows in this split (``groups (recordings,)``, e.g. a recording session, a
        speaker, a device; a row its own group: per-recording normalisation). A fixed colouring
        of a group's recordings (microphone, placement, room: a constant offset per band in dB)
        cancels, as cepstral mean subtraction per speaker does in speech recognition (Atal 1974);
        no label is read, and a split's groups use its own rows only (the test
        set's from the test rows, as a hidden test set's would be). Spectrogram inputs ``(n, C,
        F, T)`` only; called before :meth:`batch` is used. A window's padding (``audio.pad``, of a
        recording shorter than a window) counts in the mean like its audio."""
        codes, names = pd.factorize(pd.Series(np.asarray(groups)).astype(str))
        items, owner = self.windows_of(np.arange(len(codes)))
        sums = None
        for i in range(0, len(items), 512):
            x, _ = self.batch(items[i:i + 512], torch.device("cpu"))
            x = x.double().mean(-1).cpu()  # (n, C, F) (a cache copied to the GPU batches there)
            if sums is None:
                sums = torch.zeros((len(names), *x.shape[1:]), dtype=torch.float64)
            sums.index_add_(0, torch.as_tensor(codes[owner[i:i + 512]]), x)
        counts = np.bincount(codes[owner], minlength=len(names))
        self.group_offset = (sums / torch.as_tensor(np.maximum(counts, 1))[:, None, None]).float()
        self.row_group = torch.as_tensor(codes)

    def group_normed(self, x: torch.Tensor, items: np.ndarray) -> torch.Tensor:
        """A batch of spectrograms ``(n, C, F, T)`` with its rows' group means removed
        (:meth:`set_group_norm`); unchanged without."""
        if self.group_offset is None:
            return x
        offset = self.group_offset[self.row_group[torch.as_tensor(self.recordings(items))]]
        return x - offset.to(x.device, x.dtype)[..., None]

    def grid_windows(self, recs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The grid windows of the recordings ``recs`` ``(n,)``: ``(window indices (w,), owner (w,))``
        where ``owner`` is each window's position in ``recs``."""
        return expand(self.first, self.count, recs)

    @classmethod
    def from_config(cls, out, cfg: dict, split: str, table: pd.DataFrame, comp: dict, device) -> SplitInputs:
        """The inputs of experiment ``cfg`` for ``split`` (rows of ``table``, the split's
        ``folds.csv``/``test.csv``) on ``device``, from ``out`` (a :class:`lib.core.paths.Outputs`):
        ``cls.load(out, feature set, split, table, comp, device)``; an input kind with options of
        its own overrides this. Raises ``MissingArtifact`` naming ``01_features.py`` when the cache
        is missing or stale."""
        return cls.load(out, cfg["features"]["set"], split, table, comp, device)

    def recordings(self, items: np.ndarray) -> np.ndarray:
        """The recording row ``(n,)`` of each item."""
        return self.region_row[self.region_of(items)]

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


def expand(first: np.ndarray, count: np.ndarray, recs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The members of ``recs`` ``(n,)`` in a contiguous layout (member ``first[r]`` to ``first[r] +
    count[r] - 1`` belong to ``r``): ``(member indices (m,), owner (m,))``, ``owner`` each member's
    position in ``recs``."""
    counts = count[recs]
    owner = np.repeat(np.arange(len(recs)), counts)
    offsets = np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)
    return first[recs][owner] + offsets, owner


def aggregate(probs: np.ndarray, owner: np.ndarray, n: int, how: str, comp: dict) -> np.ndarray:
    """Window probabilities ``(windows, n_classes)`` -> recording probabilities ``(n, n_classes)``.

    ``owner (windows,)`` gives each window's recording (0..n-1); ``comp``: the competition config
    (its ``task``, and ``classes`` and ``positive`` for a binary one). ``how``: ``mean`` of the
    probabilities; ``max``: a binary recording's p(positive) is its largest window's ("abnormal
    if any window is"; the other class 1 - p), a multi-label one's each class's largest, a
    multi-class one's each class's largest with the row renormalised to sum 1; ``vote``: the share
    of windows predicting each class (argmax, or p > 0.5 for multi-label), so the majority wins.
    Raises ``ValueError`` for an unknown ``how``.
    """
    task = comp["task"]
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
        if task == "binary":  # renormalising both maxima would pull a window's 0.9 back towards 0.5
            pos = comp["classes"].index(comp["positive"])
            out[:, 1 - pos] = 1 - out[:, pos]
            return out
        return out if task == "multilabel" else out / out.sum(1, keepdims=True)
    raise ValueError(f"aggregation {how!r} is not one of mean, max, vote")
