"""Waveform augmentations for models that take the raw signal, applied per training batch on its device.

Each takes ``wave (batch, samples)`` float32 and soft targets ``target (batch, n_outputs)`` in
[0, 1] and returns both with the same shapes, dtype and device. Each has a probability ``p``;
except ``mixup`` (one decision per batch) whether it applies, and its parameters, are drawn per
example, and examples not picked come back bit-identical. Randomness comes from the numpy
Generator of :class:`WaveAugmenter` (noise from a torch Generator seeded from it), so a fixed seed
reproduces a run. An experiment's ``augment.waveform`` lists ``{name, params}`` entries, applied in
order (``sample_rate`` is the data's, supplied by the pipeline)::

    - {name: gain, params: {p: 0.5, min_db: -6, max_db: 6}}
    - {name: noise, params: {p: 0.3, color: pink, min_snr_db: 10, max_snr_db: 30}}
    - {name: mixup, params: {p: 0.5, alpha: 0.4, labels: union}}

Libraries: none added. ``torch-audiomentations`` (0.12) covers part of this on tensors but brings
``julius`` and ``torch-pitch-shift``, its own RNG and output container; ``audiomentations`` works
on numpy arrays one example at a time on the CPU. The few lines of torch here keep the batch on
its device and draw from one seeded Generator. Only ``time_stretch`` and ``pitch_shift`` leave
the device: they use ``librosa.effects`` (already a dependency) per example on the CPU. The
biquad filters come from torchaudio through :mod:`lib.training.transforms`.
"""
from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import torch

from ..core.errors import ConfigError
from ..core.registry import Registry
from ..data.audio import fix_length, load
from .transforms import biquad_filter

WAVE_AUGMENTS = Registry("waveform augmentation")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


def _check(ok: bool, message: str) -> None:
    """Raise ``ConfigError(message)`` unless ``ok`` (:class:`WaveAugmenter` prefixes the entry)."""
    if not ok:
        raise ConfigError(message)


def _check_range(lo: float, hi: float, lo_name: str, hi_name: str) -> None:
    _check(lo <= hi, f"{lo_name} must be <= {hi_name} (got {lo} > {hi})")


def _rms(x: torch.Tensor) -> torch.Tensor:
    """Root mean square of each row ``(batch, samples) -> (batch, 1)``."""
    return x.pow(2).mean(dim=-1, keepdim=True).sqrt()


def _scale_to_snr(x: torch.Tensor, noise: torch.Tensor, snr_db: np.ndarray) -> torch.Tensor:
    """``noise`` scaled per row so that ``20 log10(rms(x) / rms(noise)) = snr_db``; silent rows add nothing."""
    snr = torch.as_tensor(snr_db, dtype=x.dtype, device=x.device)[:, None]
    return noise * (_rms(x) / _rms(noise).clamp_min(1e-12) * 10 ** (-snr / 20))


def _torch_generator(rng: np.random.Generator, device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(int(rng.integers(2**62)))
    return g


class WaveAugment:
    """Base: ``p`` in [0, 1] is the chance that an example is augmented. Subclasses implement
    ``apply(wave, mask, rng) -> wave``, the augmented batch (rows outside ``mask (batch,)`` bool
    may hold anything: they are replaced by the input). An augmentation of each example on its
    own (``per_example``, the default) gets only the chosen rows, every one in ``mask``, so
    that its noise, FFTs and filters cost ``p`` of the batch's; one that mixes examples of the
    batch (``per_example = False``) gets the whole batch."""

    per_example = True

    def __init__(self, p: float = 0.5):
        _check(0 <= p <= 1, f"p must be in [0, 1] (got {p})")
        self.p = float(p)

    def __call__(self, wave: torch.Tensor, target: torch.Tensor, rng: np.random.Generator):
        mask = rng.random(len(wave)) < self.p
        if not mask.any():
            return wave, target
        if self.per_example:
            rows = torch.as_tensor(np.flatnonzero(mask), device=wave.device)
            out = self.apply(wave[rows], np.ones(len(rows), dtype=bool), rng)
            return wave.index_copy(0, rows, out.to(wave.dtype)), target
        out = self.apply(wave, mask, rng)
        keep = torch.as_tensor(mask, device=wave.device)[:, None]
        return torch.where(keep, out.to(wave.dtype), wave), target

    def apply(self, wave, mask, rng):  # pragma: no cover - abstract
        raise NotImplementedError


@WAVE_AUGMENTS.register("gain")
class Gain(WaveAugment):
    """Random gain: ``wave * 10 ** (g / 20)`` with ``g`` in dB uniform in ``[min_db, max_db]`` per
    example. Shapes ``(batch, samples)`` in and out."""

    def __init__(self, p: float = 0.5, min_db: float = -6.0, max_db: float = 6.0):
        super().__init__(p)
        _check_range(min_db, max_db, "min_db", "max_db")
        self.min_db, self.max_db = float(min_db), float(max_db)

    def apply(self, wave, mask, rng):
        db = torch.as_tensor(rng.uniform(self.min_db, self.max_db, len(wave)), dtype=wave.dtype, device=wave.device)
        return wave * 10 ** (db[:, None] / 20)


@WAVE_AUGMENTS.register("noise")
class Noise(WaveAugment):
    """Additive Gaussian noise, ``color: white`` (flat spectrum) or ``pink`` (power ~ 1/f: white
    noise's FFT scaled by ``1 / sqrt(f)``, the DC bin zeroed), at an SNR in dB uniform in
    ``[min_snr_db, max_snr_db]`` per example, relative to the example's RMS (a silent example
    stays silent). Shapes ``(batch, samples)`` in and out. Pink noise by spectral shaping as in
    audiomentations' ``AddColorNoise``."""

    def __init__(self, p: float = 0.5, color: str = "white", min_snr_db: float = 10.0, max_snr_db: float = 30.0):
        super().__init__(p)
        _check(color in ("white", "pink"), f"color must be white or pink (got {color!r})")
        _check_range(min_snr_db, max_snr_db, "min_snr_db", "max_snr_db")
        self.color, self.min_snr_db, self.max_snr_db = color, float(min_snr_db), float(max_snr_db)

    def apply(self, wave, mask, rng):
        snr = rng.uniform(self.min_snr_db, self.max_snr_db, len(wave))
        noise = torch.randn(wave.shape, generator=_torch_generator(rng, wave.device), device=wave.device, dtype=wave.dtype)
        if self.color == "pink":
            n = wave.shape[-1]
            f = torch.fft.rfftfreq(n, device=wave.device, dtype=wave.dtype)
            shape = f.clamp_min(1.0 / n).rsqrt()
            shape[0] = 0.0
            noise = torch.fft.irfft(torch.fft.rfft(noise) * shape, n=n)
        return wave + _scale_to_snr(wave, noise, snr)


@WAVE_AUGMENTS.register("background")
class Background(WaveAugment):
    """Mix in a background at an SNR in dB uniform in ``[min_snr_db, max_snr_db]`` per example,
    relative to the example's RMS; the targets are unchanged (the background counts as noise).

    Without ``folder`` the background of each example is another example of the batch (a random
    cyclic permutation, so never itself). With ``folder``, every audio file there (wav, flac, ogg,
    mp3; loaded once, at ``sample_rate`` Hz, which is then required and must be the batch's rate)
    is a source of random crops (repeated when shorter than the batch). Shapes ``(batch, samples)``.
    In-batch mixing and external noise banks as in several BirdCLEF solutions.
    """

    def __init__(self, p: float = 0.5, min_snr_db: float = 3.0, max_snr_db: float = 30.0,
                 folder: str | None = None, sample_rate: int | None = None):
        super().__init__(p)
        _check_range(min_snr_db, max_snr_db, "min_snr_db", "max_snr_db")
        self.min_snr_db, self.max_snr_db = float(min_snr_db), float(max_snr_db)
        self.clips: list[np.ndarray] = []
        if folder is not None:
            _check(sample_rate is not None and sample_rate > 0, f"sample_rate (Hz) is required with folder {folder}")
            files = sorted(f for f in Path(folder).glob("*") if f.suffix.lower() in AUDIO_SUFFIXES)
            _check(bool(files), f"folder {folder} holds no audio files ({', '.join(AUDIO_SUFFIXES)})")
            self.clips = [load(f, sample_rate)[0] for f in files]

    @property
    def per_example(self) -> bool:
        """With ``folder`` each example draws its own crop; without, another example of the batch
        is its background, so it needs the whole batch."""
        return bool(self.clips)

    def apply(self, wave, mask, rng):
        b, n = wave.shape
        snr = rng.uniform(self.min_snr_db, self.max_snr_db, b)
        if self.clips:
            rows = []
            for clip in (self.clips[i] for i in rng.integers(len(self.clips), size=b)):
                start = int(rng.integers(max(1, len(clip) - n + 1)))
                rows.append(fix_length(clip[start:start + n], n, "repeat"))
            bg = torch.as_tensor(np.stack(rows), dtype=wave.dtype, device=wave.device)
        else:
            order = rng.permutation(b)
            perm = np.empty(b, dtype=np.int64)
            perm[order] = np.roll(order, 1)
            bg = wave[torch.as_tensor(perm, device=wave.device)]
        return wave + _scale_to_snr(wave, bg, snr)


def _spectral(wave: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """``wave (batch, samples)`` times a per-example magnitude response ``gain (batch, samples // 2 + 1)``
    (linear, over the ``rfft`` bins; zero phase) -> ``(batch, samples)``."""
    n = wave.shape[-1]
    return torch.fft.irfft(torch.fft.rfft(wave.float()) * gain, n=n)


@WAVE_AUGMENTS.register("eq")
class Equalise(WaveAugment):
    """A random equalisation curve per example, as a different microphone or stethoscope would
    colour the sound: gains in dB uniform in ``[-max_db, max_db]`` at ``n_bands`` control
    frequencies log-spaced from ``min_hz`` to the Nyquist frequency (Hz), linearly interpolated
    over log-frequency and applied to the spectrum (``rfft``, zero phase, ``irfft``). Shapes
    ``(batch, samples)``. Random smooth band weights in the spirit of FilterAugment (Nam et al.
    2022, "FilterAugment: An Acoustic Environmental Data Augmentation Method", ICASSP), here on
    the waveform so that the front end's statistics see it."""

    def __init__(self, p: float = 0.5, max_db: float = 6.0, n_bands: int = 6, min_hz: float = 20.0,
                 sample_rate: int | None = None):
        super().__init__(p)
        _check(sample_rate is not None and sample_rate > 0, "sample_rate (Hz) is required")
        _check(max_db >= 0, f"max_db must be >= 0 (got {max_db})")
        _check(int(n_bands) == n_bands and n_bands >= 2, f"n_bands must be an integer >= 2 (got {n_bands})")
        _check(0 < min_hz < sample_rate / 2, f"min_hz must be in (0, sample_rate / 2 = {sample_rate / 2}) (got {min_hz})")
        self.max_db, self.n_bands, self.min_hz, self.sr = float(max_db), int(n_bands), float(min_hz), int(sample_rate)

    def apply(self, wave, mask, rng):
        b, n = wave.shape
        freqs = np.fft.rfftfreq(n, 1.0 / self.sr)
        knots = np.log(np.geomspace(self.min_hz, self.sr / 2, self.n_bands))
        db = rng.uniform(-self.max_db, self.max_db, (b, self.n_bands))
        logf = np.log(np.maximum(freqs, self.min_hz))
        curve = np.stack([np.interp(logf, knots, row) for row in db])
        gain = torch.as_tensor(10 ** (curve / 20), dtype=torch.float32, device=wave.device)
        return _spectral(wave, gain)


@WAVE_AUGMENTS.register("band_limit")
class BandLimit(WaveAugment):
    """Random band-limiting per example, as devices with other bandwidths would record: the
    spectrum (``rfft``) is kept between a low cutoff drawn log-uniformly in ``low_hz: [lo, hi]`` and
    a high cutoff drawn log-uniformly in ``high_hz: [lo, hi]`` (Hz, below the Nyquist frequency),
    with raised-cosine edges ``width`` octaves wide, and zeroed outside. Shapes ``(batch, samples)``.
    """

    def __init__(self, p: float = 0.5, low_hz: tuple = (20.0, 100.0), high_hz: tuple = (400.0, 900.0),
                 width: float = 0.5, sample_rate: int | None = None):
        super().__init__(p)
        _check(sample_rate is not None and sample_rate > 0, "sample_rate (Hz) is required")
        for name, pair in (("low_hz", low_hz), ("high_hz", high_hz)):
            _check(isinstance(pair, (list, tuple)) and len(pair) == 2 and 0 < pair[0] <= pair[1],
                   f"{name} must be a pair [lo, hi] of frequencies with 0 < lo <= hi (Hz) (got {pair})")
            _check(pair[1] < sample_rate / 2, f"{name} {pair} must lie below the Nyquist frequency, sample_rate / 2 = "
                                              f"{sample_rate / 2:g} Hz")
        _check(low_hz[1] < high_hz[0], f"low_hz {low_hz} must lie below high_hz {high_hz}")
        _check(width > 0, f"width must be > 0 octaves (got {width})")
        self.low, self.high, self.width, self.sr = tuple(low_hz), tuple(high_hz), float(width), int(sample_rate)

    def apply(self, wave, mask, rng):
        b, n = wave.shape
        octave = np.log2(np.maximum(np.fft.rfftfreq(n, 1.0 / self.sr), 1e-3))[None, :]
        lo = np.log2(np.exp(rng.uniform(*np.log(self.low), b)))[:, None]
        hi = np.log2(np.exp(rng.uniform(*np.log(self.high), b)))[:, None]
        rise = np.clip((octave - lo) / self.width + 0.5, 0, 1)
        fall = np.clip((hi - octave) / self.width + 0.5, 0, 1)
        gain = (0.5 - 0.5 * np.cos(np.pi * rise)) * (0.5 - 0.5 * np.cos(np.pi * fall))
        return _spectral(wave, torch.as_tensor(gain, dtype=torch.float32, device=wave.device))


@WAVE_AUGMENTS.register("time_shift")
class TimeShift(WaveAugment):
    """Shift each example by a whole number of samples uniform in ``[-s, s]``, ``s = round(max_seconds
    * sample_rate)`` (seconds, Hz); ``mode: roll`` wraps around, ``zero`` fills with silence.
    Shapes ``(batch, samples)`` in and out."""

    def __init__(self, p: float = 0.5, max_seconds: float = 0.5, sample_rate: int | None = None, mode: str = "roll"):
        super().__init__(p)
        _check(sample_rate is not None and sample_rate > 0, "sample_rate (Hz) is required")
        _check(max_seconds >= 0, f"max_seconds must be >= 0 (got {max_seconds})")
        _check(mode in ("roll", "zero"), f"mode must be roll or zero (got {mode!r})")
        self.max_shift, self.mode = round(max_seconds * sample_rate), mode

    def apply(self, wave, mask, rng):
        b, n = wave.shape
        shift = torch.as_tensor(rng.integers(-self.max_shift, self.max_shift + 1, b), device=wave.device)
        src = torch.arange(n, device=wave.device)[None, :] - shift[:, None]  # out[t] = wave[t - shift]
        if self.mode == "roll":
            return wave.gather(1, src % n)
        inside = (src >= 0) & (src < n)
        return torch.where(inside, wave.gather(1, src.clamp(0, n - 1)), torch.zeros((), dtype=wave.dtype, device=wave.device))


@WAVE_AUGMENTS.register("polarity")
class Polarity(WaveAugment):
    """Polarity inversion: ``-wave`` (same magnitude spectrum). Shapes ``(batch, samples)``."""

    def apply(self, wave, mask, rng):
        return -wave


@WAVE_AUGMENTS.register("filter")
class Filter(WaveAugment):
    """A biquad ``kind: lowpass | highpass | bandpass`` with its cutoff (centre for bandpass) in Hz
    drawn log-uniformly in ``[min_hz, max_hz]`` per example (``max_hz < sample_rate / 2``), quality
    factor ``q``. Shapes ``(batch, samples)``. Biquads from the RBJ Audio EQ Cookbook via torchaudio
    (:func:`lib.training.transforms.biquad_filter`), run on the batch's device one example at a time."""

    def __init__(self, p: float = 0.5, kind: str = "lowpass", min_hz: float = 1000.0, max_hz: float = 4000.0,
                 q: float = 0.707, sample_rate: int | None = None):
        super().__init__(p)
        _check(kind in ("lowpass", "highpass", "bandpass"), f"kind must be lowpass, highpass or bandpass (got {kind!r})")
        _check(sample_rate is not None and sample_rate > 0, "sample_rate (Hz) is required")
        _check(min_hz > 0, f"min_hz must be > 0 (got {min_hz})")
        _check_range(min_hz, max_hz, "min_hz", "max_hz")
        _check(max_hz < sample_rate / 2, f"max_hz must be < sample_rate / 2 = {sample_rate / 2} (got {max_hz})")
        _check(q > 0, f"q must be > 0 (got {q})")
        self.kind, self.min_hz, self.max_hz, self.q, self.sr = kind, float(min_hz), float(max_hz), float(q), int(sample_rate)

    def apply(self, wave, mask, rng):
        hz = np.exp(rng.uniform(np.log(self.min_hz), np.log(self.max_hz), len(wave)))
        out = wave.clone()
        for i in np.flatnonzero(mask):
            out[i] = biquad_filter(wave[i], self.sr, self.kind, float(hz[i]), self.q)
        return out


class _Librosa(WaveAugment):
    """Per-example CPU effects: ``effect(y (samples,) float32 numpy, value) -> y'``, then cropped
    (the start kept) or zero-padded back to the input length and moved to the batch's device."""

    def _effect(self, y: np.ndarray, value: float) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def apply(self, wave, mask, rng):
        values = rng.uniform(self.lo, self.hi, len(wave))
        host = wave.detach().cpu().numpy()
        out = host.copy()
        for i in np.flatnonzero(mask):
            out[i] = fix_length(self._effect(host[i], float(values[i])).astype(np.float32), wave.shape[1])
        return torch.as_tensor(out, device=wave.device)


@WAVE_AUGMENTS.register("time_stretch")
class TimeStretch(_Librosa):
    """Time stretch without pitch change by a rate uniform in ``[min_rate, max_rate]`` per example
    (rate > 1 is faster); phase vocoder of ``librosa.effects.time_stretch`` on the CPU, the output
    cropped or zero-padded to the input length. Shapes ``(batch, samples)``."""

    def __init__(self, p: float = 0.5, min_rate: float = 0.8, max_rate: float = 1.25):
        super().__init__(p)
        _check(min_rate > 0, f"min_rate must be > 0 (got {min_rate})")
        _check_range(min_rate, max_rate, "min_rate", "max_rate")
        self.lo, self.hi = float(min_rate), float(max_rate)

    def _effect(self, y, value):
        import librosa

        return librosa.effects.time_stretch(y, rate=value)


@WAVE_AUGMENTS.register("pitch_shift")
class PitchShift(_Librosa):
    """Pitch shift without tempo change by semitones uniform in ``[min_semitones, max_semitones]``
    per example; ``librosa.effects.pitch_shift`` (time stretch + resample) on the CPU at
    ``sample_rate`` Hz (required). Shapes ``(batch, samples)``."""

    def __init__(self, p: float = 0.5, min_semitones: float = -2.0, max_semitones: float = 2.0,
                 sample_rate: int | None = None):
        super().__init__(p)
        _check(sample_rate is not None and sample_rate > 0, "sample_rate (Hz) is required")
        _check_range(min_semitones, max_semitones, "min_semitones", "max_semitones")
        self.lo, self.hi, self.sr = float(min_semitones), float(max_semitones), int(sample_rate)

    def _effect(self, y, value):
        import librosa

        return librosa.effects.pitch_shift(y, sr=self.sr, n_steps=value)


@WAVE_AUGMENTS.register("mixup")
class WaveMixup(WaveAugment):
    """Waveform mixup (Zhang et al. 2018, "mixup: Beyond Empirical Risk Minimization"), decided once
    per batch with probability ``p``: ``wave = lam wave + (1 - lam) wave[perm]``, ``lam ~
    Beta(alpha, alpha)``, ``perm`` a random permutation. Targets: ``labels: mix`` the same lam-weighted
    sum; ``union`` the element-wise max (both clips' labels present, as several BirdCLEF winners did
    for multi-label). Shapes ``(batch, samples)`` and ``(batch, n_outputs)``."""

    def __init__(self, p: float = 0.5, alpha: float = 0.4, labels: str = "mix"):
        super().__init__(p)
        _check(alpha > 0, f"alpha must be > 0 (got {alpha})")
        _check(labels in ("mix", "union"), f"labels must be mix or union (got {labels!r})")
        self.alpha, self.labels = float(alpha), labels
        self.last_lam: float | None = None

    def __call__(self, wave, target, rng):
        if not rng.random() < self.p:
            return wave, target
        lam = float(rng.beta(self.alpha, self.alpha))
        perm = torch.as_tensor(rng.permutation(len(wave)), device=wave.device)
        self.last_lam = lam
        mixed = lam * target + (1 - lam) * target[perm] if self.labels == "mix" else torch.maximum(target, target[perm])
        return lam * wave + (1 - lam) * wave[perm], mixed


class WaveAugmenter:
    """Applies a config list of ``{name, params}`` entries (an experiment's ``augment.waveform``;
    names in :data:`WAVE_AUGMENTS`) in order to a training batch ``wave (batch, samples)``,
    ``target (batch, n_outputs)``, with its own numpy Generator seeded by ``seed``.
    ``sample_rate`` (Hz, the data's) is passed to every augmentation that takes one, unless the
    entry gives it (configs cannot: :func:`lib.components.check_experiment` checks names and
    parameters when a config is loaded). Raises ``ConfigError`` naming the entry
    (``augment.waveform[i] (name)``) for an unknown name, unknown parameter or bad value."""

    def __init__(self, entries: list[dict] | None, seed: int = 0, sample_rate: int | None = None):
        self.rng = np.random.default_rng(seed)
        self.augments = []
        for i, entry in enumerate(entries or []):
            where = f"augment.waveform[{i}]"
            cls = WAVE_AUGMENTS.get(entry.get("name") if isinstance(entry, dict) else None, where=where)
            params = dict(entry.get("params") or {})
            if sample_rate is not None and "sample_rate" in inspect.signature(cls).parameters:
                params.setdefault("sample_rate", sample_rate)
            try:
                self.augments.append(cls(**params))
            except (ConfigError, TypeError, ValueError) as exc:
                raise ConfigError(f"{where} ({entry['name']}): {exc}") from exc

    def __call__(self, wave: torch.Tensor, target: torch.Tensor):
        """Augment one batch; returns ``(wave, target)`` with the input's shapes, dtype and device."""
        with torch.no_grad():
            for aug in self.augments:
                wave, target = aug(wave, target, self.rng)
        return wave, target
