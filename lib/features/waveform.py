"""The waveform cache: whole recordings, mono, at one sample rate, for models with a front end.

``features: {name: waveform, params: {sample_rate: null}}`` makes stage 01 store each split's
recordings end to end in ``<split>_wave.npy`` ``(total_samples,)`` (float32, or float16 with
``features.dtype``), with ``<split>_offsets.npy`` ``(recordings + 1,)`` int64: recording ``i`` is
``wave[offsets[i]:offsets[i + 1]]``, and ``<split>_windows.npy`` ``(windows, 2)`` (recording row,
start in seconds) of the validation/test window grid, as for every feature set. Training then
draws a crop at any sample offset of a recording every epoch (:class:`lib.inputs.waveforms.WaveData`)
and the model computes its spectrogram on the device (:mod:`lib.models.frontend`).

``sample_rate`` (Hz): ``null`` takes the competition's rate (``audio.sample_rate``, else the
files' native rate); another value resamples every file explicitly from its native rate
(``audio.resample_type``), which 01 prints.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.utils import atomic_path
from ..data import audio
from .parallel import WORKER, run_parallel


class Waveform:
    """The ``waveform`` feature set: no per-window features; stage 01 caches whole recordings
    (:func:`extract_waveform_split`). ``sample_rate`` in Hz or ``None`` (the competition's rate).
    Raises ``ValueError`` for a non-positive ``sample_rate``."""

    kind = "waveform"  # the input kind of its cache (lib.inputs.INPUT_KINDS)
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


def expected_samples(table, rate: int) -> np.ndarray:
    """Samples ``(recordings,)`` of each recording of ``table`` (``duration_s``, ``sample_rate``: the
    header's) once loaded at ``rate`` Hz: its frames, or ``ceil(frames * rate / native)`` after
    ``librosa.resample`` (which fixes the length to that)."""
    native = table["sample_rate"].to_numpy(float)
    frames = np.round(table["duration_s"].to_numpy(float) * native).astype(np.int64)
    resampled = np.ceil(frames * rate / native - 1e-9).astype(np.int64)
    return np.where(native == rate, frames, resampled)


def _extract_waves(job: tuple[list[tuple[str, int, int]], int]) -> int:
    """Load a few recordings ``(path, first sample, samples)`` and write them into the split's
    wave file; returns how many. Raises ``ValueError`` naming the file when its length is not
    the one the header promised (the file changed since stage 00)."""
    recordings, _ = job
    a = WORKER["audio"]
    out = np.load(WORKER["outputs"][0], mmap_mode="r+")
    for path, first, n in recordings:
        y, _ = audio.load(path, a["sample_rate"], a["channel"], a["resample_type"])
        if len(y) != n:
            raise ValueError(f"{path}: {len(y)} samples, but its header promised {n}: run 00_prepare.py again")
        out[first:first + n] = y
    del out
    return len(recordings)


def extract_waveform_split(extractor: Waveform, table, folder: Path, split: str, comp: dict, workers: int,
                           dtype: str = "float32", chunk: int = 64) -> dict:
    """Cache one split's whole recordings into ``folder/<split>_{wave,offsets,windows}.npy``, atomically.

    Each recording of ``table`` (``path``, ``duration_s``, ``sample_rate``) is loaded mono (or
    ``audio.channel``) at :meth:`Waveform.rate` and written at its offset by ``workers``
    processes; the window grid is that of every feature set (``audio.clip_seconds``,
    ``audio.hop_seconds``; :func:`lib.data.audio.window_starts`). Returns ``{"wave": (samples,),
    "recordings": n, "windows": n}``. Errors name the failing file; on any error the split's
    previous files are left as they were.
    """
    a = dict(comp["audio"], sample_rate=extractor.rate(comp))
    lengths = expected_samples(table, a["sample_rate"])
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    starts = [audio.window_starts(float(d), a["clip_seconds"], a["hop_seconds"]) for d in table["duration_s"]]
    windows = np.concatenate([np.column_stack([np.full(len(st), i), st]) for i, st in enumerate(starts)])
    jobs = list(zip(table["path"], offsets[:-1].tolist(), lengths.tolist()))
    chunks = [(jobs[i:i + chunk], i) for i in range(0, len(jobs), chunk)]
    with atomic_path(folder / f"{split}_wave.npy") as tmp:
        np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(int(offsets[-1]),)).flush()
        run_parallel(_extract_waves, chunks, (extractor, a, (tmp,)), workers, len(jobs), f"{folder.name} {split}")
    for name, arr in (("offsets", offsets), ("windows", windows)):
        with atomic_path(folder / f"{split}_{name}.npy") as tmp:
            np.save(tmp, arr)
    return {"wave": (int(offsets[-1]),), "recordings": len(table), "windows": len(windows)}
