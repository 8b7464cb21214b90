"""``log_mel``: a log-mel spectrogram in dB, optionally with deltas and heart-cycle scalars."""
from __future__ import annotations

import functools

import numpy as np

from ..core.errors import ConfigError
from ..data import audio
from .heart_cycles import HEART_CYCLE_SCALARS, heart_cycle_scalars


class LogMel:
    """Log-mel spectrogram in dB, ``(1 or 3, n_mels, frames)``; no scalars unless ``heart_cycles``.

    ``frames = 1 + samples // hop_length`` (centred STFT, an even ``n_fft``; odd: :func:`mel_spectrogram`).
    Power mel spectrogram (Hann window, ``n_fft`` samples; :func:`mel_spectrogram`, librosa's),
    converted to absolute dB as ``librosa.power_to_db(ref=1.0, amin=1e-10)`` does
    (:func:`power_to_db`), so loudness differences between clips survive (the model normalises
    its input).
    ``deltas=True`` adds the first and second deltas (``librosa.feature.delta``, width 9).
    ``fmax`` in Hz (default, and at most: half the sample rate); ``fmin`` in Hz, below it.
    Raises ``ConfigError`` for ``fmin`` not below ``fmax`` (:meth:`check_rate`: below half the
    sample rate).
    ``heart_cycles=True`` (phonocardiograms) adds the window's heart-cycle scalars
    (:data:`lib.features.heart_cycles.HEART_CYCLE_SCALARS`: heart rate in bpm, RR, systole and
    diastole means and stds in s, their ratio, cycle count, coverage, periodicity;
    :func:`lib.features.heart_cycles.heart_cycle_scalars`) as its scalar vector
    ``(11,)``; they need windows of several beats (``audio.clip_seconds`` 5 s or more) and a
    rate of 200 Hz or more. Off, the settings (and so the cache's key) are those of before.
    """

    kind = "spectrogram"  # the input kind of its cache (lib.inputs.INPUT_KINDS)

    def __init__(self, n_mels: int = 64, n_fft: int = 512, hop_length: int = 256, fmin: float = 0.0,
                 fmax: float | None = None, deltas: bool = False, heart_cycles: bool = False):
        if fmax is not None and fmax <= fmin:  # the sizes' and fmin's ranges: lib.core.schema
            raise ConfigError(f"features.params: fmin={fmin} Hz must be below fmax={fmax} Hz")
        self.settings = dict(n_mels=n_mels, n_fft=n_fft, hop_length=hop_length, fmin=fmin, fmax=fmax, deltas=deltas)
        if heart_cycles:  # only when on: existing caches and bundles keep their settings
            self.settings["heart_cycles"] = True
        self.hop_length = hop_length
        self.channel_names = ["log_mel", "log_mel_delta", "log_mel_delta2"] if deltas else ["log_mel"]
        self.scalar_names: list[str] = list(HEART_CYCLE_SCALARS) if heart_cycles else []

    def check_rate(self, sr: float, training: bool = True) -> None:
        """Raise ``ConfigError`` when ``fmax`` is above half the rate ``sr`` (Hz; it was cut to it
        unsaid, while the manifest kept the value asked for; the front end refuses it too; not
        when only test features are made (``training`` false): a bundle predicts as its models
        were trained) or ``fmin`` is not below the band's top: every mel band would be empty."""
        if training and self.settings["fmax"] and self.settings["fmax"] > sr / 2:
            raise ConfigError(f"features.params.fmax={self.settings['fmax']} Hz is above half the sample rate "
                              f"({sr / 2:g} Hz): lower it, leave it out (null: half the rate), or set a higher "
                              f"audio.sample_rate in the competition config")
        top = min(self.settings["fmax"] or sr / 2, sr / 2)
        if self.settings["fmin"] >= top:
            raise ConfigError(f"features.params.fmin={self.settings['fmin']} Hz is not below the top of the band, "
                              f"{top} Hz (fmax, at most half the sample rate of {sr} Hz)")

    def __call__(self, y: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
        audio.check_clip(y)
        s = self.settings
        fmax = min(s["fmax"] or sr / 2, sr / 2)
        db = power_to_db(mel_spectrogram(y, sr, s["n_fft"], s["hop_length"], s["n_mels"], s["fmin"], fmax))
        chans = [db]
        if s["deltas"]:
            import librosa

            chans += [librosa.feature.delta(db, order=1), librosa.feature.delta(db, order=2)]
        if s.get("heart_cycles"):
            return np.stack(chans).astype(np.float32), heart_cycle_scalars(y, sr)
        return np.stack(chans).astype(np.float32), np.zeros(0, np.float32)


@functools.lru_cache(maxsize=16)
def _hann(n_fft: int) -> np.ndarray:
    from scipy.signal import get_window

    return get_window("hann", n_fft, fftbins=True)  # librosa's periodic window, float64


@functools.lru_cache(maxsize=16)
def _mel_basis(sr: float, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    import librosa.filters

    return librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)


def mel_spectrogram(y: np.ndarray, sr: float, n_fft: int, hop_length: int, n_mels: int, fmin: float,
                    fmax: float) -> np.ndarray:
    """Power mel spectrogram ``(n_mels, frames)`` of a mono clip ``(samples,)`` (|STFT|², weighted
    and summed by each mel filter: amplitude squared, no unit): bit for bit
    ``librosa.feature.melspectrogram`` at its defaults (frames centred on multiples of
    ``hop_length`` with ``n_fft // 2`` zeros padded at each end, so ``frames = 1 + samples //
    hop_length`` for an even ``n_fft``, ``1 + (samples - 1) // hop_length`` for an odd one;
    periodic Hann window of ``n_fft`` samples; power 2; Slaney mel filters of
    ``librosa.filters.mel`` between ``fmin`` and ``fmax`` Hz; float32 for a float32 or float16
    clip, float64 for a float64 one), tested against it. ``n_fft`` and ``hop_length`` in samples,
    ``sr`` in Hz.

    Computed here because importing ``librosa.feature`` compiles about 20 of librosa's numba
    functions on a machine whose numba cache is empty: about 12 s of stage 01 on a fresh install,
    for work that takes 0.4 ms a clip (its ``stft`` alone imports 3 s of them). Unlike librosa it
    does not check the clip (:func:`lib.data.audio.check_clip` does, in :class:`LogMel`; loading
    refuses non-finite samples) and it transforms all frames at once, not in 256-kB blocks: its
    memory is about ``24 * n_fft * frames`` bytes, fine for windows, large for a whole long
    recording at a small hop. Raises ``ValueError`` (numpy's; librosa's would be a
    ``ParameterError``) for a clip that is not 1-D, or an empty one with an odd ``n_fft``.
    """
    window = _hann(n_fft)
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(y, n_fft // 2), n_fft)[::hop_length].T
    # librosa's order of operations: a float64 product and FFT, stored at the clip's complex precision
    stft = np.fft.rfft(window[:, None] * frames, axis=-2).astype(np.result_type(y.dtype, np.complex64))
    return np.einsum("...ft,mf->...mt", np.abs(stft) ** 2.0, _mel_basis(sr, n_fft, n_mels, fmin, fmax), optimize=True)


def power_to_db(power: np.ndarray, amin: float = 1e-10, top_db: float = 80.0) -> np.ndarray:
    """``librosa.power_to_db(power, ref=1.0, amin=amin, top_db=top_db)``, bit for bit: absolute dB
    (``10 log10`` of the power), floored at ``amin`` (> 0; not checked) and at ``top_db`` dB (a number) below the
    array's maximum; same shape and dtype. Raises ``ValueError`` for an empty array."""
    db = 10.0 * np.log10(np.maximum(amin, power))
    return np.maximum(db, db.max() - top_db)
