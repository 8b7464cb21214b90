"""The waveform cache: whole recordings, mono, at one sample rate, for models with a front end.

``features: {name: waveform, params: {sample_rate: null}}`` makes stage 01 store each split's
recordings (or, with segments, their regions: :func:`lib.data.segments.regions`) end to end in
``<split>_wave.npy`` ``(total_samples,)`` (float32, or float16 with ``features.dtype``), with
``<split>_offsets.npy`` ``(regions + 1,)`` int64: region ``k`` is ``wave[offsets[k]:offsets[k + 1]]``,
``<split>_regions.npy`` ``(regions, 3)`` (recording row, start and end in seconds) and
``<split>_windows.npy`` ``(windows, 3)`` (recording row, start in seconds within its region,
region) of the validation/test window grid, as for every feature set. Training then
draws a crop at any sample offset of a recording every epoch (:class:`lib.inputs.waveforms.WaveData`)
and the model computes its spectrogram on the device (:mod:`lib.models.frontend`).

``sample_rate`` (Hz): ``null`` takes the competition's rate (``audio.sample_rate``, else the
files' native rate); another value resamples every file explicitly from its native rate
(``audio.resample_type``), which 01 prints.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.errors import MissingArtifact
from ..core.utils import atomic_path, open_memmap
from ..data import audio, segments
from .parallel import WORKER, run_parallel


class Waveform:
    """The ``waveform`` feature set: no per-window features; stage 01 caches whole recordings
    (:func:`extract_waveform_split`). ``sample_rate`` in Hz or ``None`` (the competition's rate).
    Raises ``ValueError`` for a non-positive ``sample_rate``."""

    kind = "waveform"  # the input kind of its cache (lib.inputs.INPUT_KINDS)
    store = "wave"  # its cache's file: <split>_wave.npy
    channel_names = ["waveform"]
    scalar_names: list[str] = []
    hop_length = None

    def __init__(self, sample_rate: int | None = None):
        if sample_rate is not None and sample_rate <= 0:
            raise ValueError(f"waveform: sample_rate={sample_rate} must be a positive number of Hz or null")
        self.settings = {"sample_rate": sample_rate}

    def rate(self, comp: dict) -> int:
        """The cache's sample rate in Hz for competition ``comp`` (see the module docstring)."""
        return int(self.settings["sample_rate"] or comp["audio"]["sample_rate"] or comp["native_sample_rate"])

    @staticmethod
    def stretch(path: str, start_s: float, end_s: float, audio_cfg: dict) -> np.ndarray:
        """``(samples,)`` float32 of the file from ``start_s`` to ``end_s`` seconds at the cache's rate."""
        return audio.load(path, audio_cfg["sample_rate"], audio_cfg["channel"], audio_cfg["resample_type"],
                          start_s, end_s)[0]


def grid(regions: np.ndarray, audio_cfg: dict) -> np.ndarray:
    """The window grid of a split ``(windows, 3)``: recording row, start in seconds within its
    region, region index; every region of ``regions`` (:func:`lib.data.segments.regions`) cut
    into windows of ``clip_seconds`` every ``hop_seconds`` (:func:`lib.data.audio.window_starts`)."""
    parts = [np.column_stack([np.full(len(st), row), st, np.full(len(st), k)])
             for k, (row, start, end) in enumerate(regions)
             for st in [audio.window_starts(float(end - start), audio_cfg["clip_seconds"], audio_cfg["hop_seconds"])]]
    return np.concatenate(parts)


def _extract_stretches(job: tuple[list[tuple[str, float, float, int, int]], int]) -> tuple[int, list[int]]:
    """Load a few stretches ``(path, start s, end s, first index, length)`` (the regions from
    ``job[1]`` on) through the worker's extractor (its ``stretch(path, start_s, end_s,
    audio_cfg)``) and write them into the split's store; returns how many, and which of those
    regions are digital silence (a waveform of samples all 0; none for other stores). Raises
    ``MissingArtifact`` naming the file when a stretch's length is not the one expected (the file
    changed since stage 00: folds.csv is stale)."""
    stretches, region0 = job
    a, extractor = WORKER["audio"], WORKER["extractor"]
    out, silent = np.load(WORKER["outputs"][0], mmap_mode="r+"), []
    for k, (path, start, end, first, n) in enumerate(stretches):
        y = extractor.stretch(path, start, end, a)
        if len(y) != n:
            raise MissingArtifact(f"{path}: {len(y)} samples or frames from {start:g} to {end:g} s, but stage 00 "
                             f"promised {n}: run 00_prepare.py again")
        out[first:first + n] = y
        if extractor.kind == "waveform" and n and not y.any():
            silent.append(region0 + k)
    del out
    return len(stretches), silent


def extract_stretches(extractor, table, regions: np.ndarray, lengths: np.ndarray, tail: tuple, folder: Path,
                      split: str, comp: dict, audio_cfg: dict, workers: int, dtype: str = "float32",
                      chunk: int = 64) -> dict:
    """Store every region of one split end to end in ``folder/<split>_<extractor.store>.npy``
    ``(total, *tail)``, with ``<split>_offsets.npy`` ``(regions + 1,)`` (region ``k`` is
    ``store[offsets[k]:offsets[k + 1]]``), ``<split>_regions.npy`` ``(regions, 3)`` (row, start,
    end in seconds) and ``<split>_windows.npy`` (:func:`grid`), atomically; ``workers`` processes
    load the stretches (``extractor.stretch``) and write them in place. ``lengths``: each
    region's length in the store's first axis. Returns ``{"wave": shape, "recordings": rows,
    "regions": n, "windows": n, "silent_regions": the regions of digital silence}``. Errors name
    the failing file; on any error the split's previous files are left as they were."""
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    paths = table["path"].to_numpy()
    jobs = [(paths[int(r)], float(s), float(e), int(o), int(n))
            for (r, s, e), o, n in zip(regions, offsets[:-1], lengths)]
    chunks = [(jobs[i:i + chunk], i) for i in range(0, len(jobs), chunk)]
    with atomic_path(folder / f"{split}_{extractor.store}.npy") as tmp:
        open_memmap(tmp, dtype, (int(offsets[-1]), *tail))
        silent = run_parallel(_extract_stretches, chunks, (extractor, audio_cfg, (tmp,)), workers, len(jobs),
                              f"{folder.name} {split}")
    windows = grid(regions, audio_cfg)
    for name, arr in (("offsets", offsets), ("regions", regions), ("windows", windows)):
        with atomic_path(folder / f"{split}_{name}.npy") as tmp:
            np.save(tmp, arr)
    return {"wave": (int(offsets[-1]), *tail), "recordings": len(table), "regions": len(regions),
            "windows": len(windows), "silent_regions": silent}


def extract_waveform_split(extractor: Waveform, table, folder: Path, split: str, comp: dict, workers: int,
                           dtype: str = "float32") -> dict:
    """Cache one split's audio (:func:`extract_stretches`): each region of each recording of
    ``table`` (``path``, ``duration_s``, ``sample_rate``; segments: :func:`lib.data.segments.regions`)
    loaded mono (or ``audio.channel``) at :meth:`Waveform.rate`."""
    a = dict(comp["audio"], sample_rate=extractor.rate(comp))
    regions = segments.regions(table)
    native = table["sample_rate"].to_numpy(float)[regions[:, 0].astype(int)]
    lengths = audio.region_samples(regions[:, 1], regions[:, 2], native, a["sample_rate"])
    return extract_stretches(extractor, table, regions, lengths, (), folder, split, comp, a, workers, dtype)
