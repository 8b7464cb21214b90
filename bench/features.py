"""Benchmark the seed9 feature stack: the seed's per-clip librosa loop against our batched extractor.

Usage::

    python bench/features.py [--clips N] [--workers W] [--chunk C]

On the same N clips of ``../shared/data/breathing/train`` (default 512, sorted by name) it runs:

(a) baseline: the seed's style, one clip at a time in this process: ``librosa.load(path, sr=16000)``,
    then every feature of ``../shared/DESIGN.md`` §5 computed from the waveform with its own
    librosa call and its own STFT, and the autocorrelation by a direct O(n²) ``np.correlate``
    (as the seed did, DESIGN §5);
(a') for information, the same loop with numpy/scipy's BLAS limited to one thread (faster than
    the libraries' default on a busy 2-core machine: a stronger baseline than the seed's own);
(b) for information, the reference :func:`lib.features.seed9.reference.compute_seed9` per clip in this process
    (``lib.data.audio.load`` + one shared STFT per clip, librosa for the rest);
(c) ours: the feature stage's own code (:func:`lib.features.extract_split`, as ``01_features.py``
    runs it): ``lib.data.audio.load`` + :func:`lib.features.seed9.batch.compute_seed9_batch` on chunks of C clips over
    W forked worker processes with one torch thread each, audio loading and writing the cache
    files included (reading them back for the comparison is not timed: the loops keep their
    results in memory).

Each method first runs once on one clip outside the timing (numba/librosa warm-up); (c) also builds
its filterbanks once in this process before forking (reported separately as its one-time setup).
(a) runs with the libraries' default threads, as the seed did; (a'), (b) and (c) with one thread
per process (torch and numpy/scipy BLAS).
It prints wall-clock clips/s and CPU seconds of each (all threads and processes; a figure that
other users of the machine hardly change), the ratios, and the largest differences of ours and of
the baseline against the reference. Exits with status 2 and a message when the data folder is absent.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from lib.core.numba_cache import claim_numba_cache  # noqa: E402

claim_numba_cache()  # before librosa is imported: a cache no other running process writes

import librosa
import scipy.fft
import scipy.signal
import scipy.stats
import torch
from threadpoolctl import threadpool_limits

from lib import audio, seed9
from lib.features import FEATURES
from lib.core.utils import keep_freed_memory
from lib.features.cache import extract_split

DATA = ROOT.parent / "shared" / "data" / "breathing" / "train"
SR, N_FFT, HOP = seed9.SR, seed9.N_FFT, seed9.HOP


# ---------------------------------------------------------------------------------------------
# (a) the seed's style: one clip at a time, each feature from the waveform with librosa
# ---------------------------------------------------------------------------------------------

def seed_style_clip(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """seed9 of one file the way the seed computed it -> float32 (9, 128, 63) and (36,).

    ``librosa.load(path, sr=16000)``, zero-padded or truncated to 1 s; each feature of DESIGN §5 is
    its own librosa call on the waveform (so its own STFT), LPC frame by frame with
    ``librosa.lpc``, and the autocorrelation by direct ``np.correlate`` (O(n²)). Same definitions
    (and values, up to the float32 autocorrelation) as :func:`lib.features.seed9.reference.compute_seed9`.
    """
    y, sr = librosa.load(str(path), sr=SR)
    y = librosa.util.fix_length(y, size=seed9.N_SAMPLES)
    stft = {"n_fft": N_FFT, "hop_length": HOP}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="librosa")
        mel_db = librosa.power_to_db(
            librosa.feature.melspectrogram(y=y, sr=sr, n_mels=128, fmax=4500, **stft), ref=np.max)
        chroma = np.vstack([
            librosa.feature.chroma_stft(S=np.abs(librosa.stft(y, **stft)), sr=sr, **stft),
            librosa.feature.chroma_cens(y=y, sr=sr, hop_length=HOP)])
        gamma = np.log1p(librosa.feature.melspectrogram(y=y, sr=sr, n_mels=64, power=1.0, **stft))
        mfcc = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=40, **stft)
        tempogram = librosa.feature.tempogram(y=y, sr=sr, hop_length=HOP)
    pre = np.append(y[0], y[1:] - 0.97 * y[:-1])
    frames = librosa.util.frame(pre, frame_length=int(0.025 * sr), hop_length=int(0.010 * sr))
    frames = frames * np.hamming(frames.shape[0])[:, None]
    lpc = np.zeros((12, frames.shape[1]))
    for i in range(frames.shape[1]):
        if np.any(frames[:, i]):
            lpc[:, i] = librosa.lpc(np.ascontiguousarray(frames[:, i]), order=12)[1:]
    mod = scipy.fft.dct(scipy.fft.dct(mel_db, norm="ortho", axis=0)[:40], norm="ortho", axis=1)
    z, zr = seed9._z, seed9._z_rows
    with np.errstate(all="ignore"):
        feats = {
            "chroma": zr(chroma), "gammatone": z(gamma), "lpc": z(lpc), "mel": z(mel_db),
            "mel_delta": z(librosa.feature.delta(mel_db)),
            "mel_delta2": z(librosa.feature.delta(mel_db, order=2)),
            "mfcc": zr(np.vstack([mfcc, librosa.feature.delta(mfcc), librosa.feature.delta(mfcc, order=2)])),
            "mod_spec": z(mod), "tempogram": z(tempogram),
        }
    channels = np.stack([seed9._pad_to(feats[name]) for name in seed9.CHANNEL_NAMES])

    nyq = sr / 2
    rms = librosa.feature.rms(y=y, frame_length=N_FFT, hop_length=HOP)[0]
    zcr = librosa.feature.zero_crossing_rate(y, frame_length=N_FFT, hop_length=HOP)[0]
    cent = librosa.feature.spectral_centroid(y=y, sr=sr, **stft)[0]
    bw = librosa.feature.spectral_bandwidth(y=y, sr=sr, **stft)[0]
    roll = librosa.feature.spectral_rolloff(y=y, sr=sr, roll_percent=0.85)[0]
    flat = librosa.feature.spectral_flatness(y=y, **stft)[0]
    contrast = librosa.feature.spectral_contrast(y=y, sr=sr, **stft)
    env = np.abs(scipy.signal.hilbert(y.astype(np.float64)))
    peaks, props = scipy.signal.find_peaks(env, height=env.mean(), distance=sr // 10)
    heights = props["peak_heights"]
    peak_mean, peak_std = (heights.mean(), heights.std()) if len(peaks) >= 2 else (0.0, 0.0)
    power = np.abs(librosa.stft(y, **stft)).astype(np.float64) ** 2
    low_ratio = power[: int(1000 * N_FFT / sr)].sum() / power.sum() if power.sum() > 0 else 0.0
    flux_db = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr, n_mels=128), ref=np.max)
    flux = np.linalg.norm(np.diff(flux_db, axis=1), axis=0)
    acf = np.correlate(y, y, mode="full")[len(y) - 1:]  # direct O(n^2), as the seed did
    acf = acf / acf[0] if acf[0] > 0 else np.zeros(len(y))
    with np.errstate(all="ignore"):
        scalars = np.array([
            rms.mean(), rms.std(), rms.max(), rms.min(), zcr.mean(), zcr.std(), zcr.max(), zcr.min(),
            cent.mean() / nyq, cent.std() / nyq, scipy.stats.skew(cent), bw.mean() / nyq, bw.std() / nyq,
            roll.mean() / nyq, roll.std() / nyq, flat.mean(), flat.std(), contrast.mean(), contrast.std(),
            env.mean(), env.std(), env.mean() / (env.std() + 1e-8), len(peaks), peak_mean, peak_std,
            low_ratio, flux.mean(), flux.std(), flux.max(),
            scipy.stats.skew(y), scipy.stats.kurtosis(y, fisher=True),
            np.percentile(np.abs(y), 90), np.percentile(np.abs(y), 10),
            acf[sr // 100], acf[sr // 50], np.argmin(acf[: sr // 20]) / sr,
        ], dtype=np.float64)
    return (np.nan_to_num(channels, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32),
            np.nan_to_num(scalars, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32))


# ---------------------------------------------------------------------------------------------
# (b) the reference, per clip; (c) ours, batched over worker processes
# ---------------------------------------------------------------------------------------------

def _load(path: str | Path) -> np.ndarray:
    """One clip as float32 (16000,) at 16 kHz with ``lib.data.audio`` (zero-padded or truncated)."""
    y, _ = audio.load(path, SR)
    return audio.fix_length(y, seed9.N_SAMPLES)


def reference_clip(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """:func:`lib.features.seed9.reference.compute_seed9` of one file loaded with ``lib.data.audio``."""
    return seed9.compute_seed9(_load(path), SR)


def extract_seed9_parallel(paths: list[str | Path], workers: int = 2, chunk: int = 32
                           ) -> tuple[np.ndarray, np.ndarray, float, float]:
    """seed9 of many 1-s files through the feature stage's own code, :func:`lib.features.extract_split`:
    ``lib.data.audio.load`` + :func:`lib.features.seed9.batch.compute_seed9_batch` on chunks of ``chunk`` clips over
    ``workers`` forked processes (one torch thread each), each writing its rows into the cache
    files. Input: audio paths at 16 kHz. Output: float32 ``(len(paths), 9, 128, 63)`` and
    ``(len(paths), 36)`` in the order of ``paths`` (read back from a temporary cache, after the
    timing), and the wall and CPU seconds of ``extract_split``.
    Raises ``lib.data.audio.AudioError`` for unreadable files.
    """
    table = pd.DataFrame({"path": [str(p) for p in paths], "duration_s": 1.0})
    comp = {"native_sample_rate": seed9.SR, "audio": {"clip_seconds": 1.0, "hop_seconds": None, "sample_rate": None,
                                                      "channel": None, "resample_type": "soxr_hq", "pad": "zero"}}
    with tempfile.TemporaryDirectory() as tmp:
        start, cpu = time.perf_counter(), _cpu_seconds()
        extract_split(FEATURES.build({"name": "seed9"}), table, Path(tmp), "bench", comp, workers, chunk=chunk)
        seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
        return np.load(Path(tmp) / "bench_spec.npy"), np.load(Path(tmp) / "bench_scalars.npy"), seconds, cpu


def _cpu_seconds() -> float:
    """CPU seconds (user + system) used so far by this process and its reaped children, all threads."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _per_clip(fn, paths: list[Path], one_blas_thread: bool) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Run ``fn`` on each path in this process -> stacked channels, scalars, wall seconds, CPU
    seconds.

    ``one_blas_thread``: numpy/scipy BLAS limited to one thread (threadpoolctl), else the
    libraries' default (one thread per core, as the seed ran).
    """
    limit = threadpool_limits(limits=1, user_api="blas") if one_blas_thread else contextlib.nullcontext()
    with limit:
        fn(paths[0])  # warm-up (numba caches, lazy imports), not timed
        start, cpu = time.perf_counter(), _cpu_seconds()
        out = [fn(p) for p in paths]
        seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    return np.stack([o[0] for o in out]), np.stack([o[1] for o in out]), seconds, cpu


def _differences(label: str, channels: np.ndarray, scalars: np.ndarray,
                 ref_channels: np.ndarray, ref_scalars: np.ndarray) -> None:
    """Print the largest absolute difference per channel and relative difference per scalar."""
    chan = np.abs(channels - ref_channels).max(axis=(0, 2, 3))
    rel = (np.abs(scalars - ref_scalars) / np.maximum(np.abs(ref_scalars), 1e-6)).max(axis=0)
    worst = np.argsort(rel)[::-1][:3]
    print(f"{label} vs reference: max |diff| on z-scored channels {chan.max():.2e} ("
          + ", ".join(f"{n} {d:.1e}" for n, d in zip(seed9.CHANNEL_NAMES, chan)) + ")")
    print(f"{' ' * len(label)}               max relative diff on scalars {rel.max():.2e} (worst: "
          + ", ".join(f"{seed9.SCALAR_NAMES[j]} {rel[j]:.1e}" for j in worst) + ")")


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=512, help="number of clips (default 512; fixed costs, about 0.3 s for starting and warming the workers, weigh more on fewer)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for ours (default 2)")
    parser.add_argument("--chunk", type=int, default=32, help="clips per batch for ours (default 32)")
    parser.add_argument("--skip-baseline", action="store_true", help="skip (a) and (a'), the slow seed-style loops")
    args = parser.parse_args(argv)
    if not DATA.is_dir() or not any(DATA.glob("*.wav")):
        print(f"bench/features.py: no .wav files in {DATA}; the breathing data is needed "
              "(see ../shared/data/README.md)", file=sys.stderr)
        return 2
    paths = sorted(DATA.glob("*.wav"))[: args.clips]
    n = len(paths)
    torch.set_num_threads(1)  # before any torch work: fork-safe, and one core per process
    print(f"{n} clips from {DATA}; torch {torch.__version__}, librosa {librosa.__version__}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} (other processes slow every figure)")

    rows = []
    if not args.skip_baseline:
        base_c, base_s, base_t, base_cpu = _per_clip(seed_style_clip, paths, one_blas_thread=False)
        _, _, base1_t, base1_cpu = _per_clip(seed_style_clip, paths, one_blas_thread=True)
        rows += [("(a) baseline: seed-style librosa loop, 1 process", base_t, base_cpu),
                 ("(a') the same loop with 1 BLAS thread", base1_t, base1_cpu)]
    ref_c, ref_s, ref_t, ref_cpu = _per_clip(reference_clip, paths, one_blas_thread=True)
    rows.append(("(b) reference compute_seed9 per clip, 1 process, 1 BLAS thread", ref_t, ref_cpu))
    # (c) after the others: librosa's lazy imports are done, as for their untimed warm-up; and
    # glibc keeps freed memory, as in stage 01 (lib.cli.run), only from here on
    keep_freed_memory()
    start = time.perf_counter()
    seed9.prepare_seed9_batch()
    setup = time.perf_counter() - start
    ours_c, ours_s, ours_t, ours_cpu = extract_seed9_parallel(paths, workers=args.workers, chunk=args.chunk)
    rows.append((f"(c) ours: compute_seed9_batch, {args.workers} workers x chunks of {args.chunk}",
                 ours_t, ours_cpu))

    print(f"\n{'method':<68}{'wall s':>8}{'clips/s':>9}{'CPU s':>8}{'clips/CPU s':>13}")
    for label, seconds, cpu in rows:
        print(f"{label:<68}{seconds:>8.2f}{n / seconds:>9.1f}{cpu:>8.2f}{n / cpu:>13.1f}")
    print("(CPU s: all threads of all processes of the method; clips/CPU s hardly depends on what "
          "else runs on the machine)")
    print(f"one-time setup of (c) (filterbanks, before forking): {setup:.2f} s; "
          f"with it, (c) runs at {n / (ours_t + setup):.1f} clips/s")
    print()
    if not args.skip_baseline:
        print(f"ratio ours / baseline (a): {base_t / ours_t:.1f}x (with the setup: {base_t / (ours_t + setup):.1f}x)")
        print(f"ratio ours / (a'): {base1_t / ours_t:.1f}x")
    if not args.skip_baseline:
        print(f"per CPU second: ours / (a) {base_cpu / ours_cpu:.1f}x, ours / (a') {base1_cpu / ours_cpu:.1f}x")
    print(f"ratio ours / reference (b): {ref_t / ours_t:.1f}x; "
          f"load average at the end {os.getloadavg()[0]:.2f}\n")
    _differences("ours", ours_c, ours_s, ref_c, ref_s)
    if not args.skip_baseline:
        _differences("baseline", base_c, base_s, ref_c, ref_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
