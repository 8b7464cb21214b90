"""Stage 01: feature sets, computed once per clip in parallel and cached with a manifest.

A feature set turns one clip ``(samples,)`` into a spectrogram stack ``(channels, freq, frames)``
and a scalar vector ``(n_scalars,)``. The cache of a set is a folder
``output/features/<set>/`` holding, per split, ``<split>_spec.npy`` ``(rows, channels, freq,
frames)`` and ``<split>_scalars.npy`` ``(rows, n_scalars)`` (float32, rows in the order of
``folds.csv`` / ``test.csv``, memory-mappable), and ``manifest.json``: channel and scalar names,
shapes, sample rate, hop, the settings and a fingerprint of the inputs. Training reads input
shapes from the manifest, never from constants.

Registered sets (``features: {name, params}`` in an experiment config):

* ``log_mel``: log-mel spectrogram in dB (``librosa.feature.melspectrogram``), optionally with
  its first and second deltas as extra channels; no scalars.
* ``seed9``: the seed project's nine 128x63 channels and 36 waveform scalars
  (``../shared/DESIGN.md`` §5, :mod:`lib.seed9`).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import audio
from .config import Registry
from .paths import Outputs
from .utils import atomic_path, fingerprint, n_cpus, read_json, write_json

FEATURES = Registry("feature set")
SPLITS = ("train", "test")
FORMAT_VERSION = 1


@FEATURES.register("log_mel")
class LogMel:
    """Log-mel spectrogram in dB, ``(1 or 3, n_mels, frames)``; no scalars.

    ``frames = 1 + samples // hop_length`` (centred STFT). Power mel spectrogram (Hann window,
    ``n_fft`` samples), converted with ``librosa.power_to_db(ref=1.0, amin=1e-10)``: absolute dB,
    so loudness differences between clips survive (the model normalises its input).
    ``deltas=True`` adds the first and second deltas (``librosa.feature.delta``, width 9).
    ``fmax`` in Hz (default: half the sample rate).
    """

    def __init__(self, n_mels: int = 64, n_fft: int = 512, hop_length: int = 256, fmin: float = 0.0,
                 fmax: float | None = None, deltas: bool = False):
        self.settings = dict(n_mels=n_mels, n_fft=n_fft, hop_length=hop_length, fmin=fmin, fmax=fmax, deltas=deltas)
        self.hop_length = hop_length
        self.channel_names = ["log_mel", "log_mel_delta", "log_mel_delta2"] if deltas else ["log_mel"]
        self.scalar_names: list[str] = []

    def __call__(self, y: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
        import librosa

        s = self.settings
        mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=s["n_fft"], hop_length=s["hop_length"],
                                             n_mels=s["n_mels"], fmin=s["fmin"], fmax=s["fmax"])
        db = librosa.power_to_db(mel, ref=1.0, amin=1e-10)
        chans = [db]
        if s["deltas"]:
            chans += [librosa.feature.delta(db, order=1), librosa.feature.delta(db, order=2)]
        return np.stack(chans).astype(np.float32), np.zeros(0, np.float32)


@FEATURES.register("seed9")
class Seed9:
    """The seed's nine-channel stack ``(9, 128, 63)`` and 36 scalars; see :mod:`lib.seed9`.

    Requires 1-s clips at 16 kHz (the definitions fix n_fft 512, hop 256 and 63 frames).
    """

    def __init__(self):
        from . import seed9

        self.settings = {"n_fft": seed9.N_FFT, "hop_length": seed9.HOP}
        self.hop_length = seed9.HOP
        self.channel_names = list(seed9.CHANNEL_NAMES)
        self.scalar_names = list(seed9.SCALAR_NAMES)

    def __call__(self, y: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
        from . import seed9

        return seed9.compute_seed9(y, sr)


_WORKER: dict = {}


def _init_worker(extractor, n_samples: int, sample_rate: int | None, pad: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    _WORKER.update(extractor=extractor, n_samples=n_samples, sample_rate=sample_rate, pad=pad)


def _extract(path: str):
    y, sr = audio.load(path, _WORKER["sample_rate"])
    n = _WORKER["n_samples"](sr)
    return _WORKER["extractor"](audio.fix_length(y, n, _WORKER["pad"]), sr)


class _Samples:
    """Picklable ``sr -> samples`` rule for a clip length in seconds."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __call__(self, sr: int) -> int:
        return int(round(self.seconds * sr))


def _inputs_fingerprint(table) -> str:
    stats = [(p, os.path.getsize(p), int(os.path.getmtime(p))) for p in table["path"]]
    return fingerprint(list(table["id"]), stats)


def extract_split(extractor, paths: list[str], spec_path: Path, scalars_path: Path, comp: dict,
                  workers: int, desc: str) -> tuple[tuple, tuple]:
    """Compute one split's features into ``spec_path`` and ``scalars_path`` (``.npy``), atomically.

    Clips are loaded, padded/trimmed to ``comp['audio']['clip_seconds']`` and processed by
    ``workers`` processes; results go straight into a memory-mapped file, so memory stays at a
    few clips per worker. Returns the two array shapes. Errors name the failing file.
    """
    a = comp["audio"]
    n_samples = _Samples(a["clip_seconds"])
    sr0 = a["sample_rate"] or comp["native_sample_rate"]
    y0, _ = audio.load(paths[0], a["sample_rate"])
    spec0, sc0 = extractor(audio.fix_length(y0, n_samples(sr0), a["pad"]), sr0)
    spec_shape, sc_shape = (len(paths), *spec0.shape), (len(paths), *sc0.shape)
    init = (extractor, n_samples, a["sample_rate"], a["pad"])
    with atomic_path(spec_path) as tmp_spec, atomic_path(scalars_path) as tmp_sc:
        spec = np.lib.format.open_memmap(tmp_spec, mode="w+", dtype=np.float32, shape=spec_shape)
        sc = np.lib.format.open_memmap(tmp_sc, mode="w+", dtype=np.float32, shape=sc_shape)
        pool = mp.get_context("fork").Pool(workers, _init_worker, init) if workers > 1 else None
        if pool is None:
            _init_worker(*init)
        try:
            results = pool.imap(_extract, paths, chunksize=8) if pool else map(_extract, paths)
            for i, (x, s) in enumerate(tqdm(results, total=len(paths), desc=desc, unit="clip")):
                if x.shape != spec0.shape or s.shape != sc0.shape:
                    raise ValueError(f"{paths[i]}: feature shape {x.shape} differs from {spec0.shape}")
                spec[i], sc[i] = x, s
        finally:
            if pool is not None:
                pool.terminate()
        spec.flush()
        sc.flush()
        del spec, sc
    return spec_shape, sc_shape


def build_feature_set(out: Outputs, section: dict, force: bool = False, workers: int | None = None) -> dict:
    """Build (or reuse) the cache of one feature set for every split that stage 00 wrote.

    ``section`` is an experiment's ``features`` section ``{name, set, params}``. A cache whose
    manifest fingerprint matches the inputs and settings is reused unless ``force``.
    Returns the manifest with an extra ``"skipped": bool`` and ``"seconds"``.
    Raises ``MissingArtifact`` when stage 00 has not run.
    """
    comp = out.load_competition()
    extractor = FEATURES.build(section)
    folder = out.features(section["set"])
    tables = {s: out.load_split(s) for s in SPLITS if s == "train" or out.test.exists()}
    key = fingerprint(FORMAT_VERSION, section["name"], extractor.settings, comp["audio"],
                      {s: _inputs_fingerprint(t) for s, t in tables.items()})
    old = read_json(folder / "manifest.json")
    if old and old.get("fingerprint") == key and not force and all(
            (folder / f"{s}_spec.npy").exists() for s in tables):
        return dict(old, skipped=True, seconds=0.0)
    t0 = time.time()
    workers = workers or n_cpus()
    shapes = {}
    for split, table in tables.items():
        spec_shape, sc_shape = extract_split(
            extractor, list(table["path"]), folder / f"{split}_spec.npy", folder / f"{split}_scalars.npy",
            comp, workers, desc=f"{section['set']} {split}")
        shapes[split] = {"spec": spec_shape, "scalars": sc_shape, "ids": fingerprint(list(table["id"]))}
    sr = comp["audio"]["sample_rate"] or comp["native_sample_rate"]
    manifest = {
        "set": section["set"], "name": section["name"], "settings": extractor.settings,
        "channel_names": extractor.channel_names, "scalar_names": extractor.scalar_names,
        "spec_shape": list(shapes["train"]["spec"][1:]), "n_scalars": shapes["train"]["scalars"][1],
        "sample_rate": sr, "hop_length": extractor.hop_length, "clip_seconds": comp["audio"]["clip_seconds"],
        "splits": shapes, "dtype": "float32", "fingerprint": key,
    }
    write_json(folder / "manifest.json", manifest)
    return dict(manifest, skipped=False, seconds=time.time() - t0)


def load_features(out: Outputs, feature_set: str, split: str, ids=None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Memory-map a cached split: returns ``(spec (rows, C, F, T), scalars (rows, S), manifest)``.

    When ``ids`` is given, checks that the cache rows are those ids in that order.
    Raises ``MissingArtifact`` naming ``01_features.py`` when the cache is missing or stale.
    """
    from .paths import MissingArtifact

    folder = out.features(feature_set)
    manifest = read_json(folder / "manifest.json")
    if manifest is None or split not in manifest["splits"]:
        raise MissingArtifact(f"{folder}: no {split!r} features of set {feature_set!r}: run 01_features.py first")
    if ids is not None and manifest["splits"][split]["ids"] != fingerprint(list(ids)):
        raise MissingArtifact(f"{folder}: {split} features were built for other rows than "
                              f"{'folds.csv' if split == 'train' else 'test.csv'}: run 01_features.py again")
    spec = np.load(folder / f"{split}_spec.npy", mmap_mode="r")
    scalars = np.load(folder / f"{split}_scalars.npy", mmap_mode="r")
    return spec, scalars, manifest
