"""seed9, the reference: one clip at a time with librosa, the documented definition.

The seed project's seed9 stack (``../shared/DESIGN.md`` §5; an independent implementation with
numpy, scipy and librosa). Input is a mono clip at 16 kHz, zero-padded or truncated to 16000
samples (1 s). The STFT uses n_fft 512 and hop 256 (librosa default ``center=True``), giving 63
frames of 16 ms. Each channel is normalised (z-score, std + 1e-8), then cropped and/or padded
to 128 x 63 with its own minimum value; channels are stacked in alphabetical order of their
names (:data:`CHANNEL_NAMES`). The 36 scalars are listed in :data:`SCALAR_NAMES`; frequencies
are divided by the Nyquist frequency (sr/2), lags by sr (seconds). About 20 clips/s in one
single-threaded process on a 2-core Xeon.
"""
from __future__ import annotations

import warnings

import librosa
import numpy as np
import scipy.fft
import scipy.ndimage
import scipy.signal
import scipy.stats

from .definitions import CHANNEL_NAMES, HOP, N_FFT, N_SAMPLES, SHAPE, SR


def _pad_to(x: np.ndarray, shape: tuple[int, int] = SHAPE) -> np.ndarray:
    """Crop ``x`` (freq, frames) to at most ``shape``, then pad it to ``shape`` with its own minimum."""
    x = x[: shape[0], : shape[1]]
    pad = ((0, shape[0] - x.shape[0]), (0, shape[1] - x.shape[1]))
    return np.pad(x, pad, constant_values=x.min())


def _z(x: np.ndarray) -> np.ndarray:
    """Whole-array z-score (std + 1e-8)."""
    return (x - x.mean()) / (x.std() + 1e-8)


def _z_rows(x: np.ndarray) -> np.ndarray:
    """Per-row z-score over time (std + 1e-8)."""
    return (x - x.mean(axis=1, keepdims=True)) / (x.std(axis=1, keepdims=True) + 1e-8)


def _lpc_frames(y: np.ndarray, sr: int, order: int = 12) -> np.ndarray:
    """LPC coefficients 1..``order`` of 25 ms Hamming frames every 10 ms -> (order, frames).

    Pre-emphasis 0.97 (first sample kept), frames from ``librosa.util.frame`` (400 / 160 samples
    at 16 kHz: 98 frames for 1 s), ``librosa.lpc`` per frame; all-zero or failing frames give 0.
    """
    y = np.append(y[0], y[1:] - 0.97 * y[:-1])
    frames = librosa.util.frame(y, frame_length=int(0.025 * sr), hop_length=int(0.010 * sr))
    frames = frames * np.hamming(frames.shape[0])[:, None]
    out = np.zeros((order, frames.shape[1]), dtype=np.float64)
    for i in range(frames.shape[1]):
        if not np.any(frames[:, i]):
            continue
        try:
            out[:, i] = librosa.lpc(np.ascontiguousarray(frames[:, i]), order=order)[1:]
        except (FloatingPointError, librosa.util.exceptions.ParameterError):
            pass
    return out


def _channels(y: np.ndarray, sr: int, mag: np.ndarray) -> np.ndarray:
    """The nine normalised, padded channels -> float (9, 128, 63), in :data:`CHANNEL_NAMES` order."""
    mel_db = librosa.power_to_db(
        librosa.feature.melspectrogram(S=mag**2, sr=sr, n_mels=128, fmax=4500), ref=np.max)
    with warnings.catch_warnings():  # CQT octaves of a 1 s clip ("n_fft too large"), silent tuning
        warnings.filterwarnings("ignore", category=UserWarning, module="librosa")
        chroma = np.vstack([
            librosa.feature.chroma_stft(S=mag, sr=sr, n_fft=N_FFT, hop_length=HOP),
            librosa.feature.chroma_cens(y=y, sr=sr, hop_length=HOP),
        ])
    gamma = np.log1p(librosa.filters.mel(sr=sr, n_fft=N_FFT, n_mels=64) @ mag)
    # mfcc(y=...) = DCT of power_to_db(ref=1) of the 128-band full-band mel of the same STFT
    mfcc = librosa.feature.mfcc(
        S=librosa.power_to_db(librosa.feature.melspectrogram(S=mag**2, sr=sr, n_mels=128)),
        sr=sr, n_mfcc=40)
    mod = scipy.fft.dct(scipy.fft.dct(mel_db, norm="ortho", axis=0)[:40], norm="ortho", axis=1)
    onset = librosa.onset.onset_strength(y=y, sr=sr, hop_length=HOP)
    feats = {
        "chroma": _z_rows(chroma),
        "gammatone": _z(gamma),
        "lpc": _z(_lpc_frames(y, sr)),
        "mel": _z(mel_db),
        "mel_delta": _z(librosa.feature.delta(mel_db)),
        "mel_delta2": _z(librosa.feature.delta(mel_db, order=2)),
        "mfcc": _z_rows(np.vstack([mfcc, librosa.feature.delta(mfcc),
                                   librosa.feature.delta(mfcc, order=2)])),
        "mod_spec": _z(mod),
        "tempogram": _z(librosa.feature.tempogram(onset_envelope=onset, sr=sr, hop_length=HOP)),
    }
    return np.stack([_pad_to(feats[name]) for name in CHANNEL_NAMES])


def _scalars(y: np.ndarray, sr: int, mag: np.ndarray) -> np.ndarray:
    """The 36 scalars of :data:`SCALAR_NAMES` -> float64 (36,); may hold NaN for silent clips."""
    nyq = sr / 2
    rms = librosa.feature.rms(y=y, frame_length=N_FFT, hop_length=HOP)[0]
    zcr = librosa.feature.zero_crossing_rate(y, frame_length=N_FFT, hop_length=HOP)[0]
    cent = librosa.feature.spectral_centroid(S=mag, sr=sr)[0]
    bw = librosa.feature.spectral_bandwidth(S=mag, sr=sr)[0]
    roll = librosa.feature.spectral_rolloff(y=y, sr=sr, roll_percent=0.85)[0]
    flat = librosa.feature.spectral_flatness(S=mag)[0]
    contrast = librosa.feature.spectral_contrast(S=mag, sr=sr)

    env = np.abs(scipy.signal.hilbert(y.astype(np.float64)))
    peaks, props = scipy.signal.find_peaks(env, height=env.mean(), distance=sr // 10)
    heights = props["peak_heights"]
    peak_mean, peak_std = (heights.mean(), heights.std()) if len(peaks) >= 2 else (0.0, 0.0)

    power = mag.astype(np.float64) ** 2
    total = power.sum()
    low_ratio = power[: int(1000 * N_FFT / sr)].sum() / total if total > 0 else 0.0

    flux_db = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr, n_mels=128), ref=np.max)
    flux = np.linalg.norm(np.diff(flux_db, axis=1), axis=0)

    # full linear autocorrelation via FFT (zero padding to 2n), normalised by lag 0
    n = len(y)
    spec = scipy.fft.rfft(y.astype(np.float64), 2 * n)
    acf = scipy.fft.irfft(np.abs(spec) ** 2, 2 * n)[:n]
    acf = acf / acf[0] if acf[0] > 0 else np.zeros(n)

    with np.errstate(all="ignore"):
        return np.array([
            rms.mean(), rms.std(), rms.max(), rms.min(),
            zcr.mean(), zcr.std(), zcr.max(), zcr.min(),
            cent.mean() / nyq, cent.std() / nyq, scipy.stats.skew(cent),
            bw.mean() / nyq, bw.std() / nyq,
            roll.mean() / nyq, roll.std() / nyq,
            flat.mean(), flat.std(),
            contrast.mean(), contrast.std(),
            env.mean(), env.std(), env.mean() / (env.std() + 1e-8),
            len(peaks), peak_mean, peak_std,
            low_ratio,
            flux.mean(), flux.std(), flux.max(),
            scipy.stats.skew(y), scipy.stats.kurtosis(y, fisher=True),
            np.percentile(np.abs(y), 90), np.percentile(np.abs(y), 10),
            acf[sr // 100], acf[sr // 50], np.argmin(acf[: sr // 20]) / sr,
        ], dtype=np.float64)


def compute_seed9(y: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Compute the seed9 stack of one clip (the seed project's seed9 stack, ../shared/DESIGN.md §5).

    Args:
        y: mono waveform ``(samples,)``, float (float32 expected), amplitude in [-1, 1].
        sr: its sample rate in Hz; must be 16000.

    Returns:
        ``(channels, scalars)``: float32 ``(9, 128, 63)`` (channels in :data:`CHANNEL_NAMES`
        order, frequency x STFT frames of hop 256 = 16 ms) and float32 ``(36,)`` (in
        :data:`SCALAR_NAMES` order). The clip is zero-padded or truncated to 16000 samples first.
        NaN/inf (e.g. from a silent clip) are replaced by 0.

    Raises:
        ValueError: if ``sr`` is not 16000 or ``y`` is not one-dimensional.
    """
    if sr != SR:
        raise ValueError(f"seed9 needs audio at {SR} Hz, got sr={sr}; resample the clip first")
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"seed9 needs a mono clip of shape (samples,), got shape {y.shape}")
    y = np.pad(y[:N_SAMPLES], (0, max(0, N_SAMPLES - len(y))))
    mag = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP))
    with np.errstate(all="ignore"):
        channels = _channels(y, sr, mag)
    scalars = _scalars(y, sr, mag)
    return (np.nan_to_num(channels, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32),
            np.nan_to_num(scalars, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32))


# ---------------------------------------------------------------------------------------------
# Batched implementation (compute_seed9_batch): the same definitions, many clips at once.
# ---------------------------------------------------------------------------------------------
