"""seed9, batched: many clips at once, the same definitions as :mod:`.reference`.

About 3.9 ms of CPU per clip in one single-threaded process on the 2-core AMD EPYC, measured
while another job loaded the machine (the previous version: 4.8 ms in the same runs; 4.6 ms on
an idle 2-core Xeon; ``bench/README.md``). One torch STFT per FFT size for the whole batch
feeds every channel and scalar (the 512-point one: mel, chroma_stft, gammatone, MFCC, deltas,
modulation spectrum, spectral scalars; the 2048-point one, in float64 two clips at a time:
onset strength/tempogram, flux, and from its even frames rolloff and the CQT tuning
estimate); filterbanks, the CQT filters of all 100 possible tuning estimates, the mel deltas'
Savitzky-Golay filters, smoothing and padding operators are built once per process (about
0.7 s, :func:`prepare_seed9_batch`) and applied as batched matrix products; the CQT follows
``librosa.vqt`` octave by octave (batched STFT, one soxr halving of all clips); piptrack and
the tuning histogram, Burg LPC (from the frames' autocorrelation, computed lag by lag on the
whole signal), percentiles (one partition) and the other scalars are vectorised over the
batch. Tolerances against the reference: :data:`BATCH_CHANNEL_ATOL`, :data:`BATCH_SCALAR_TOL`,
written up in ``bench/README.md``.
"""
from __future__ import annotations

import contextlib
import functools
import itertools
from typing import NamedTuple

import librosa
import numpy as np
import scipy.fft
import scipy.ndimage
import scipy.signal
import scipy.stats
import soxr
import torch

try:  # installed with scikit-learn; only used to keep numpy/scipy's BLAS single-threaded
    import threadpoolctl
except ImportError:  # pragma: no cover
    threadpoolctl = None

from .definitions import CHANNEL_NAMES, HOP, N_FFT, N_SAMPLES, SCALAR_NAMES, SHAPE, SR

_GROUP2048 = 2  # clips per 2048-point STFT: their complex128 frames fit the core's cache
_SUB_BATCH = 16  # clips per internal pass: keeps the work arrays cache-sized (16: ~6% faster than 32)
_TUNING_EDGES = np.linspace(-0.5, 0.5, 101)  # librosa.pitch_tuning's histogram at resolution 0.01
_ZERO_TUNING = int(np.flatnonzero(_TUNING_EDGES == 0.0)[0])  # the estimate of an empty pitch set
_CQT_BPO, _CQT_OCTAVES = 36, 7  # chroma_cens defaults: 7 octaves of 36 bins from C1
_FMIN_C1 = 440.0 * 2.0 ** ((24 - 69) / 12)  # librosa.note_to_hz("C1"), 32.70 Hz


def _linear_operator(fn, n: int) -> np.ndarray:
    """Matrix ``M`` (n, n) with ``fn(x) == x @ M`` for a linear ``fn`` acting on the last axis."""
    return np.asarray(fn(np.eye(n)), dtype=np.float64)


def _relative_bandwidth(freqs: np.ndarray) -> np.ndarray:
    """librosa's ``filters._relative_bandwidth`` (private in librosa 0.10/0.11), rewritten."""
    logf = np.log2(freqs)
    bpo = np.empty_like(freqs)
    bpo[0] = 1 / (logf[1] - logf[0])
    bpo[-1] = 1 / (logf[-1] - logf[-2])
    bpo[1:-1] = 2 / (logf[2:] - logf[:-2])
    return (2.0 ** (2 / bpo) - 1) / (2.0 ** (2 / bpo) + 1)


@functools.cache
def _hann(n: int) -> np.ndarray:
    """Periodic Hann window of ``n`` samples (``scipy.signal.get_window("hann", n)``), cached."""
    return scipy.signal.get_window("hann", n, fftbins=True)


def _wavelet_fft_basis(freqs: np.ndarray, alpha: np.ndarray, sr: float) -> tuple[int, np.ndarray]:
    """One octave of ``librosa.vqt``'s frequency-domain filters -> ``(n_fft, basis)``.

    Mirrors ``librosa.filters.wavelet`` (hann-windowed complex exponentials of length
    ``Q sr / f``, L1-normalised, centred in a power-of-two frame), the ``lengths / n_fft``
    re-normalisation and FFT of ``__vqt_filter_fft``, and ``librosa.util.sparsify_rows``
    (quantile 0.01) as a dense complex64 array (36, n_fft//2+1): the same arithmetic without
    the per-filter sparse-matrix writes that make librosa's version slow (~6 ms per octave).
    """
    lengths, _ = librosa.filters.wavelet_lengths(freqs=freqs, sr=sr, window="hann",
                                                 filter_scale=1, gamma=0, alpha=alpha)
    n_fft = int(2.0 ** np.ceil(np.log2(lengths.max())))
    basis = np.zeros((len(freqs), n_fft), dtype=np.complex64)
    for i, (ilen, freq) in enumerate(zip(lengths, freqs)):
        angles = np.arange(-ilen // 2, ilen // 2, dtype=float) * 2 * np.pi * freq / sr
        sig = (np.cos(angles) + 1j * np.sin(angles)) * _hann(len(angles))
        sig = sig / np.abs(sig).sum()
        lpad = (n_fft - len(sig)) // 2
        basis[i, lpad: lpad + len(sig)] = sig
    basis *= lengths[:, None] / float(n_fft)
    fft_basis = np.fft.fft(basis, n=n_fft, axis=1)[:, : n_fft // 2 + 1]
    mags = np.abs(fft_basis)
    mag_sort = np.sort(mags, axis=1)
    cumulative = np.cumsum(mag_sort / mags.sum(axis=1, keepdims=True), axis=1)
    cut = mag_sort[np.arange(len(mags)), np.argmin(cumulative < 0.01, axis=1)]
    return n_fft, np.where(mags >= cut[:, None], fft_basis, 0).astype(np.complex64)


def _cqt_bases(tuning: float) -> list[tuple[int, np.ndarray]]:
    """Per-octave frequency-domain CQT filters of ``librosa.cqt`` for one tuning (in bins).

    Follows ``librosa.vqt`` (gamma 0, hann windows, norm 1, sparsity 0.01, scale=True) for
    chroma_cens' defaults at 16 kHz and hop 256: octave ``i`` (0 = top) is filtered at
    16000 / 2**i Hz with an ``n_fft``-point basis (36, n_fft//2+1) complex64, to apply to a
    ``window="ones"`` STFT. The per-octave ``sqrt(sr / my_sr)`` and the final ``1/sqrt(length)``
    scalings of ``vqt`` are folded in. Returns ``[(n_fft, basis), ...]`` for the 7 octaves.
    """
    fmin = _FMIN_C1 * 2.0 ** (tuning / _CQT_BPO)
    n_bins = _CQT_BPO * _CQT_OCTAVES
    freqs = librosa.interval_frequencies(n_bins=n_bins, fmin=fmin, intervals="equal",
                                         bins_per_octave=_CQT_BPO, sort=True)
    alpha = _relative_bandwidth(freqs)
    lengths, cutoff = librosa.filters.wavelet_lengths(freqs=freqs, sr=SR, window="hann",
                                                      filter_scale=1, gamma=0, alpha=alpha)
    # librosa would downsample early when the top filter is far below Nyquist; not the case here
    if max(0, int(np.ceil(np.log2(SR / 2 / cutoff)) - 1) - 1) != 0:
        raise NotImplementedError("this CQT layout needs librosa's early downsampling")
    out, my_sr = [], float(SR)
    for i in range(_CQT_OCTAVES):
        sl = slice(n_bins - _CQT_BPO * (i + 1), n_bins - _CQT_BPO * i)
        n_fft, fft_basis = _wavelet_fft_basis(freqs[sl], alpha[sl], my_sr)
        fft_basis = fft_basis * np.sqrt(SR / my_sr) / np.sqrt(lengths[sl])[:, None]
        out.append((n_fft, fft_basis.astype(np.complex64)))
        my_sr /= 2.0
    return out


class _Banded:
    """A mostly-zero matrix ``W`` (M, F) applied to (B, F, T) as dense blocks: rows in groups of
    ``group``, each group multiplied with its non-zero column range only (mel and gammatone
    filterbanks: 5-10x fewer operations than the dense product, same sums)."""

    def __init__(self, w: np.ndarray, device: torch.device, group: int = 8):
        self.shape = w.shape
        self.blocks = []
        for g0 in range(0, w.shape[0], group):
            cols = np.flatnonzero(np.any(w[g0: g0 + group] != 0, axis=0))
            lo, hi = (int(cols[0]), int(cols[-1]) + 1) if cols.size else (0, 0)
            self.blocks.append((g0, min(g0 + group, w.shape[0]), lo, hi, torch.tensor(
                w[g0: g0 + group, lo:hi], dtype=torch.float32, device=device)))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``W @ x`` for x (B, F, T) -> (B, M, T)."""
        out = x.new_zeros((x.shape[0], self.shape[0], x.shape[2]))
        for g0, g1, lo, hi, block in self.blocks:
            if hi > lo:
                out[:, g0:g1] = torch.matmul(block, x[:, lo:hi])
        return out


class _Constants:
    """Filterbanks, windows and linear operators of the batched path, built once per device.

    Built with librosa/scipy (their own definitions, so the values match the reference): mel
    bases, the chroma filterbank and the CQT bases for each of the 100 possible tuning estimates,
    the CENS smoothing and tempogram padding as matrices, windows and contrast band layouts.
    """

    def __init__(self, device: torch.device):
        t32 = {"dtype": torch.float32, "device": device}
        t64 = {"dtype": torch.float64, "device": device}
        self.device = device
        self.win512 = torch.tensor(scipy.signal.get_window("hann", N_FFT, fftbins=True), **t64)
        self.win2048 = torch.tensor(scipy.signal.get_window("hann", 2048, fftbins=True), **t64)
        self.ones512 = torch.ones(N_FFT, **t32)
        self.freq512 = np.fft.rfftfreq(N_FFT, 1.0 / SR)
        self.freq2048 = np.fft.rfftfreq(2048, 1.0 / SR)
        self.freq512_t = torch.tensor(self.freq512, **t64)
        self.mel_4500 = _Banded(librosa.filters.mel(sr=SR, n_fft=N_FFT, n_mels=128, fmax=4500), device)
        self.mel_full = _Banded(librosa.filters.mel(sr=SR, n_fft=N_FFT, n_mels=128), device)
        self.mel_64 = _Banded(librosa.filters.mel(sr=SR, n_fft=N_FFT, n_mels=64), device)
        self.mel_2048 = _Banded(librosa.filters.mel(sr=SR, n_fft=2048, n_mels=128), device)
        self.chroma_fb_np = np.stack([  # (100, 12, 257) float32
            librosa.filters.chroma(sr=SR, n_fft=N_FFT, tuning=t, n_chroma=12) for t in _TUNING_EDGES[:-1]])
        self.cq_to_chroma = torch.tensor(
            librosa.filters.cq_to_chroma(_CQT_BPO * _CQT_OCTAVES, bins_per_octave=_CQT_BPO,
                                         n_chroma=12), **t32)
        # CQT: per octave, the union of the non-zero FFT bins of all tunings' sparse bases
        per_tuning = [_cqt_bases(t) for t in _TUNING_EDGES[:-1]]
        self.cqt = []
        for i in range(_CQT_OCTAVES):
            n_fft = {b[i][0] for b in per_tuning}
            if len(n_fft) != 1:
                raise NotImplementedError("CQT FFT sizes differ between tunings")
            stack = np.stack([b[i][1] for b in per_tuning])  # (100, 36, n_fft//2+1)
            cols = np.flatnonzero(np.any(stack != 0, axis=(0, 1)))
            lo, hi = int(cols[0]), int(cols[-1]) + 1
            self.cqt.append((n_fft.pop(), lo, hi,
                             torch.tensor(stack[:, :, lo:hi], dtype=torch.complex64, device=device)))
        frames = SHAPE[1]
        win = scipy.signal.get_window("hann", 41 + 2, fftbins=False)
        win = (win / win.sum())[None, :]
        self.cens_smooth = torch.tensor(_linear_operator(
            lambda x: scipy.ndimage.convolve(x, win, mode="constant"), frames), **t64)
        self.tempo_pad = torch.tensor(_linear_operator(
            lambda x: np.pad(x, ((0, 0), (192, 192)), mode="linear_ramp", end_values=0), frames), **t64)
        # librosa.feature.delta orders 1 and 2 (width 9, interp edges) as one (63, 126) operator
        self.deltas = np.hstack([_linear_operator(functools.partial(
            scipy.signal.savgol_filter, window_length=9, polyorder=o, deriv=o, axis=-1, mode="interp"), frames)
            for o in (1, 2)])
        self.tempo_win = torch.tensor(scipy.signal.get_window("hann", 384, fftbins=True), **t32)
        self.hamming400 = ham = np.hamming(int(0.025 * SR))
        # for the LPC frames' autocorrelation: ham[t] ham[t+lag], lags 0..12, in 3 blocks of 10 ms
        self.lpc_lag_windows = np.zeros((13, 3 * int(0.010 * SR)))
        for lag in range(13):
            self.lpc_lag_windows[lag, : len(ham) - lag] = ham[: len(ham) - lag] * ham[lag:]
        # spectral_contrast bands (fmin 200, 6 bands, quantile 0.02) on the 512-point STFT
        octa = np.zeros(8)
        octa[1:] = 200.0 * 2.0 ** np.arange(7)
        self.bands = []
        for k, (f_low, f_high) in enumerate(itertools.pairwise(octa)):
            band = (self.freq512 >= f_low) & (self.freq512 <= f_high)
            idx = np.flatnonzero(band)
            if k > 0:
                band[idx[0] - 1] = True
            if k == 6:
                band[idx[-1] + 1:] = True
            rows = np.flatnonzero(band)
            if k < 6:
                rows = rows[:-1]
            q = int(max(np.rint(0.02 * band.sum()), 1))
            self.bands.append((int(rows[0]), int(rows[-1]) + 1, q))  # a contiguous range of bins


_CONSTANTS: dict[str, _Constants] = {}


def _constants(device: torch.device) -> _Constants:
    """The :class:`_Constants` of ``device``, built on first use (about 0.7 s) and then cached."""
    key = str(device)
    if key not in _CONSTANTS:
        _CONSTANTS[key] = _Constants(device)
    return _CONSTANTS[key]


_BLAS_CONTROLLER: list = []


def _one_blas_thread() -> contextlib.AbstractContextManager:
    """Context in which numpy's and scipy's BLAS use one thread (threadpoolctl; a no-op without it).

    The batch calls BLAS only on small matrices (chroma filterbank products, the least-squares
    edge fits of ``scipy.signal.savgol_filter``): threads cannot help there, and with several
    worker processes per core-pair their spinning threads made a batch 2-10x slower.
    """
    if threadpoolctl is None:
        return contextlib.nullcontext()
    if not _BLAS_CONTROLLER:
        _BLAS_CONTROLLER.append(threadpoolctl.ThreadpoolController())
    return _BLAS_CONTROLLER[0].limit(limits=1, user_api="blas")


def _stft(y: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor) -> torch.Tensor:
    """Centred, zero-padded STFT (B, n_fft//2+1, frames) complex64, as ``librosa.stft``.

    Computed in the window's precision. Float64 then rounded to complex64 is what librosa does for
    a float32 signal, and gives the same magnitudes to the last bit (which spectral contrast
    valleys and the tuning estimate need); float32 (3x faster) for the CQT octaves.
    """
    spec = torch.stft(y.to(window.dtype), n_fft, hop, window=window, center=True,
                      pad_mode="constant", return_complex=True)
    return spec.to(torch.complex64)


def _cabs(x: torch.Tensor) -> torch.Tensor:
    """|x| of a complex tensor (numpy's abs on the CPU: same rounding as librosa, and far faster
    than torch's complex abs there)."""
    if x.device.type == "cpu":
        return torch.from_numpy(np.abs(x.numpy()))
    return x.abs()


def _power_to_db(s: torch.Tensor, ref_max: bool) -> torch.Tensor:
    """``librosa.power_to_db`` per clip (amin 1e-10, top_db 80; ref = max over the clip or 1)."""
    dims = tuple(range(1, s.ndim))
    log = 10.0 * torch.log10(torch.clamp(s, min=1e-10))
    if ref_max:
        log = log - 10.0 * torch.log10(torch.clamp(s.amax(dim=dims, keepdim=True), min=1e-10))
    return torch.maximum(log, log.amax(dim=dims, keepdim=True) - 80.0)


def _power_to_db_np(s: np.ndarray, ref_max: bool) -> np.ndarray:
    """:func:`_power_to_db` in numpy, with librosa's exact float32 operations (for the channels
    whose rows can be constant: their z-score amplifies the last bit)."""
    log = 10.0 * np.log10(np.maximum(1e-10, s))
    if ref_max:
        log -= 10.0 * np.log10(np.maximum(1e-10, s.max(axis=(1, 2), keepdims=True)))
    return np.maximum(log, log.max(axis=(1, 2), keepdims=True) - 80.0)


def _normalize(s: torch.Tensor, norm: float, dim: int) -> torch.Tensor:
    """``librosa.util.normalize`` (fill=None): divide by the norm along ``dim`` in float64,
    leaving slices whose norm is below the dtype's tiny value unchanged; same dtype out."""
    mag = s.abs().double()
    if norm == np.inf:
        length = mag.amax(dim=dim, keepdim=True)
    else:
        length = (mag ** norm).sum(dim=dim, keepdim=True) ** (1.0 / norm)
    length = torch.where(length < torch.finfo(s.dtype).tiny, torch.ones_like(length), length)
    return (s.double() / length).to(s.dtype)


def _z_fit(x: np.ndarray, out: np.ndarray, rows: bool = False) -> None:
    """Batched :func:`_z` (``rows``: :func:`_z_rows`) of ``x`` (B, F, T), then :func:`_pad_to`,
    into ``out`` (B, 128, 63); NaN/inf become 0 (``out`` may be in the cache).

    The mean and std come from all of ``x`` with numpy's own reductions in ``x``'s dtype (the
    reference's rounding, which matters where a z-score amplifies it: a constant row, e.g. the
    MFCC of silence, becomes +-1 in float32, not 0); they are applied to the part kept only.
    """
    if rows:
        mean, std = x.mean(axis=2, keepdims=True), x.std(axis=2, keepdims=True) + 1e-8
    else:
        flat = x.reshape(len(x), -1)
        mean, std = flat.mean(axis=1)[:, None, None], flat.std(axis=1)[:, None, None] + 1e-8
    z = (x[:, : SHAPE[0], : SHAPE[1]] - mean[:, : SHAPE[0]]) / std[:, : SHAPE[0]]
    out[:] = z.min(axis=(1, 2))[:, None, None]
    out[:, : z.shape[1], : z.shape[2]] = z
    if not np.isfinite(out).all():
        np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)


def _tuning_index(mag: np.ndarray, n_fft: int, bins_per_octave: int) -> np.ndarray:
    """``librosa.estimate_tuning(S=mag)`` for each clip -> index into the 100 tuning values.

    ``mag`` (B, frames, n_fft//2+1) float32 magnitudes (frames first: the order of the peaks
    found does not matter below). ``librosa.piptrack`` (fmin 150 Hz,
    fmax 4 kHz, threshold 0.1 of each frame's maximum, local maxima over frequency, parabolic
    interpolation) is vectorised over the batch with the same float32/float64 arithmetic, the
    interpolation evaluated at the peaks only, then the median magnitude threshold and the
    0.01-bin histogram of ``librosa.pitch_tuning``, all clips at once.
    """
    x = mag
    freqs = np.fft.rfftfreq(n_fft, 1.0 / SR)
    band = np.flatnonzero((150.0 <= freqs) & (freqs < 4000.0))
    lo, hi = int(band[0]), int(band[-1]) + 1  # 1 <= lo and hi < n_bins: no edge cases below
    ref = 0.1 * x.max(axis=2, keepdims=True)
    sub = x[:, :, lo - 1: hi + 1]
    xs = sub * (sub > ref)
    c, t, f = np.nonzero((xs[:, :, 1:-1] > xs[:, :, :-2]) & (xs[:, :, 1:-1] >= xs[:, :, 2:]))
    f = f + lo
    x0, xm, xp = x[c, t, f], x[c, t, f - 1], x[c, t, f + 1]
    a = (xp + xm).astype(np.float64) - 2 * x0.astype(np.float64)
    b = (xp - xm).astype(np.float64) / 2
    with np.errstate(all="ignore"):
        shift = np.where(np.abs(b) >= np.abs(a), 0.0, -b / a).astype(np.float32)
    mags = x0 + 0.5 * ((xp - xm) / np.float32(2)) * shift
    pitch = ((f + shift) * float(SR) / n_fft).astype(np.float32)
    if not len(c):
        return np.full(len(x), _ZERO_TUNING, dtype=np.int64)
    # librosa.pitch_tuning of each clip's peaks (their pitches are all > 0) at or above the
    # median magnitude, all clips at once: peaks sorted by clip, then magnitude (one int64 key:
    # the float32 magnitudes are > 0, so their bit patterns sort as they do); the median as
    # np.median's (mean of the middle two in float32); histogram bins by searchsorted, as
    # np.histogram counts them; an empty clip keeps the estimate 0
    order = np.argsort((c << 32) | mags.view(np.int32))
    c, m, pitch = c[order], mags[order], pitch[order]
    counts = np.bincount(c, minlength=len(x))
    middle = np.cumsum(counts) - counts + counts // 2
    upper, lower = m[np.minimum(middle, len(m) - 1)], m[np.maximum(middle - 1, 0)]
    median = np.where(counts % 2 == 1, upper, (lower + upper) / np.float32(2))
    keep = m >= median[c]
    residual = np.mod(bins_per_octave * np.log2(pitch[keep] / (440.0 / 16)), 1.0)
    residual[residual >= 0.5] -= 1.0
    n_bins = len(_TUNING_EDGES) - 1
    bins = np.searchsorted(_TUNING_EDGES, residual, side="right") - 1
    hist = np.bincount(c[keep] * n_bins + bins, minlength=len(x) * n_bins).reshape(len(x), n_bins)
    return np.where(counts > 0, np.argmax(hist, axis=1), _ZERO_TUNING)


def _resample_half(y: np.ndarray) -> np.ndarray:
    """``librosa.resample(y, orig_sr=2, target_sr=1, res_type="soxr_hq", scale=True)`` per row
    (the rows as one multi-channel signal: soxr filters channels independently, same values)."""
    out = soxr.resample(y.T, 2, 1, quality="soxr_hq").T
    n = int(np.ceil(y.shape[1] * 0.5))
    out = out[:, :n] if out.shape[1] >= n else np.pad(out, ((0, 0), (0, n - out.shape[1])))
    out /= np.sqrt(0.5)
    return np.ascontiguousarray(out, dtype=np.float32)


def _cqt_mag(y: np.ndarray, tuning: np.ndarray, k: _Constants) -> torch.Tensor:
    """|CQT| (B, 252, 63) float32 of ``librosa.cqt`` (C1, 36 bins/octave, 7 octaves, hop 256)
    with each clip's own tuning index: per octave one ``window="ones"`` STFT of the whole batch
    times the cached basis, then a soxr halving of the signals (as ``librosa.vqt``)."""
    n_bins = _CQT_BPO * _CQT_OCTAVES
    out = torch.empty((len(y), n_bins, SHAPE[1]), dtype=torch.float32, device=k.device)
    tun = torch.as_tensor(tuning, device=k.device)
    hop = HOP
    for i, (n_fft, lo, hi, bases) in enumerate(k.cqt):
        ones = k.ones512 if n_fft == N_FFT else torch.ones(n_fft, dtype=torch.float32, device=k.device)
        spec = _stft(torch.from_numpy(y).to(k.device), n_fft, hop, ones)[:, lo:hi, : SHAPE[1]]
        top = n_bins - _CQT_BPO * i
        out[:, top - _CQT_BPO: top] = _cabs(torch.matmul(bases[tun], spec))
        if i < _CQT_OCTAVES - 1:
            y, hop = _resample_half(y), hop // 2
    return out


def _dot0(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sum of ``a * b`` over the first axis (einsum: no temporary array)."""
    return np.einsum("i...,i...->...", a, b)


def _burg(r: np.ndarray, head: np.ndarray, tail: np.ndarray) -> np.ndarray:
    """Burg's LPC of frames from their autocorrelation -> coefficients 1..order (N, order).

    Input: per frame (N rows) float64, ``order = r.shape[1] - 1``: the autocorrelation ``r``
    (N, order+1) at lags 0..order, and the frame's first and last ``order + 1`` samples,
    ``head`` and ``tail`` (N, order+1). Same recursion as ``librosa.lpc`` (Marple 1980;
    reflection coefficient ``-2 sum(f b) / (sum(f^2 + b^2) + tiny)``), but the error energies are
    not summed over the whole frame at each order: as in the fast Burg of K. Vos ("A fast
    implementation of Burg's method", 2013), the sums over the zero-padded frame come from the
    autocorrelation by a Levinson-type recursion (``q = R a``), minus the lattice errors at the
    first and last ``order`` samples, which are run explicitly. The recursion's arrays hold the
    frames along their last axis, so that each step is a vector operation over all frames.
    Values agree with ``librosa.lpc`` to ~1e-8 (float64 rounding of the different summation
    order); an all-zero frame gives zeros.
    """
    n, p = r.shape[0], r.shape[1] - 1
    r = r.T
    a = np.zeros((p + 1, n))
    a[0] = 1.0
    q = np.zeros((p + 1, n))  # R a for the current order (Toeplitz R of r)
    q[0] = r[0]
    # lattice errors f_i[t], b_i[t-1] of the zero-padded frame at its head (t = 0..p, column 0)
    # and tail (t = L-p..L+p-1, column 1), both at rows p.. so that order i reads rows p..p+i;
    # their sums over t = 0..i and t = L..L+i are removed from the full sums
    f, b = np.zeros((2 * p + 1, 2, n)), np.zeros((2 * p + 1, 2, n))
    f[p:, 0] = head.T
    b[p + 1:, 0] = head[:, :p].T
    f[:p, 1] = tail[:, 1:].T
    b[: p + 1, 1] = tail.T
    eps = np.finfo(np.float64).tiny
    for i in range(p):
        delta = _dot0(r[i + 1: 0: -1], a[: i + 1])
        s_ff = _dot0(a[: i + 1], q[: i + 1])
        s_fb = delta + _dot0(a[1: i + 1], q[i: 0: -1])
        fa, ba = f[p: p + i + 1], b[p: p + i + 1]
        num = s_fb - _dot0(fa, ba).sum(axis=0)
        den = 2.0 * s_ff - (_dot0(fa, fa) + _dot0(ba, ba)).sum(axis=0)
        k = -2.0 * num / (den + eps)
        q_top = delta + k * q[0]
        a[1: i + 2] += k * a[i:: -1]  # the right side is evaluated first: a copy
        q[1: i + 1] += k * q[i: 0: -1]
        q[0] += k * delta
        q[i + 1] = q_top
        b_next = np.empty_like(b)
        b_next[0] = 0.0
        np.add(b[:-1], k * f[:-1], out=b_next[1:])
        f += k * b
        b = b_next
    return a[1:].T


def _frame_autocorrelation(x: np.ndarray, lag_windows: np.ndarray, hop: int, length: int) -> np.ndarray:
    """Autocorrelation at lags ``0..lags-1`` of each windowed frame of each row of ``x``.

    ``x`` (B, samples) float64; frames of ``length`` samples every ``hop`` (as
    ``librosa.util.frame``: ``1 + (samples - length) // hop`` of them); ``lag_windows``
    (lags, blocks * hop) holds ``w[t] w[t + lag]`` (zero for ``t >= length - lag``) of the
    window ``w``. Returns (B, frames, lags) float64: ``sum_t w[t] w[t+lag] x[s+t] x[s+t+lag]``
    for the frame starting at ``s``. Computed lag by lag on the whole signal, without copying
    the overlapping frames: the lag products ``x[u] x[u+lag]`` cut into blocks of ``hop``
    samples, each frame's sum a product of its ``blocks`` consecutive blocks with the window's.
    """
    n_clips, n = x.shape
    lags, n_blocks = lag_windows.shape[0], lag_windows.shape[1] // hop
    n_frames = 1 + (n - length) // hop
    span = (n_frames + n_blocks - 1) * hop
    out = np.empty((n_clips, n_frames, lags))
    prod = np.zeros((n_clips, span))
    for lag in range(lags):
        m = min(n - lag, span)
        np.multiply(x[:, :m], x[:, lag: lag + m], out=prod[:, :m])
        prod[:, m:] = 0.0
        blocks = prod.reshape(n_clips, -1, hop)
        acc = blocks[:, :n_frames] @ lag_windows[lag, :hop]
        for j in range(1, n_blocks):
            acc += blocks[:, j: j + n_frames] @ lag_windows[lag, j * hop: (j + 1) * hop]
        out[:, :, lag] = acc
    return out


def _lpc_batch(y: np.ndarray, k: _Constants, order: int = 12) -> np.ndarray:
    """LPC coefficients 1..order (B, order, 98) float64 of :func:`_lpc_frames`, all frames at once.

    Pre-emphasis 0.97 in float32; 25 ms Hamming frames every 10 ms in float64, of which only
    the autocorrelation (:func:`_frame_autocorrelation`) and the first and last ``order + 1``
    samples are formed; :func:`_burg` on every frame of every clip.
    """
    pre = np.concatenate([y[:, :1], y[:, 1:] - 0.97 * y[:, :-1]], axis=1).astype(np.float64)
    length, hop = int(0.025 * SR), int(0.010 * SR)
    r = _frame_autocorrelation(pre, k.lpc_lag_windows, hop, length)
    n_clips, n_frames, _ = r.shape
    starts = hop * np.arange(n_frames)[:, None]
    head = pre[:, starts + np.arange(order + 1)] * k.hamming400[: order + 1]
    tail = pre[:, starts + np.arange(length - order - 1, length)] * k.hamming400[length - order - 1:]
    coeffs = _burg(*(v.reshape(n_clips * n_frames, order + 1) for v in (r, head, tail)))
    return coeffs.reshape(n_clips, n_frames, order).transpose(0, 2, 1)


def _delta(x: np.ndarray, order: int) -> np.ndarray:
    """``librosa.feature.delta(x, order=order)`` (width 9, interp edges) along the last axis."""
    return scipy.signal.savgol_filter(x, 9, polyorder=order, deriv=order, axis=-1, mode="interp")


def _mel_deltas(x: np.ndarray, k: _Constants) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_delta` orders 1 and 2 of ``x`` (B, F, 63) float32 as one float64 product with the
    Savitzky-Golay filters' matrix (:class:`_Constants`), 8x faster: the same arithmetic summed
    in another order (last-bit differences). Only for whole-array z-scores: a constant row's
    delta is rounding noise, which a per-row z-score (the MFCC channel) would amplify."""
    both = (x.astype(np.float64) @ k.deltas).astype(x.dtype)
    return both[..., : x.shape[-1]], both[..., x.shape[-1]:]


class _Spectra(NamedTuple):
    """What the channels and scalars of a batch share: computed once per batch."""

    mag: torch.Tensor  # |STFT| n_fft 512, hop 256: (B, 257, 63) float32
    mel2048: torch.Tensor  # 128-band mel power of |STFT| n_fft 2048, hop 256: (B, 128, 63) float32
    mag2048_hop512: np.ndarray  # the latter's even frames = hop 512, librosa's default: (B, 32, 1025)


def _spectra(y: torch.Tensor, k: _Constants) -> _Spectra:
    """The STFTs of a batch (float32 signal (B, 16000)) and what derives from them.

    The 2048-point STFT (hop 256) is computed in float64 rounded to float32, as librosa does (the
    rolloff and the tuning estimate compare its magnitudes), ``_GROUP2048`` clips at a time.
    """
    mag = _cabs(_stft(y, N_FFT, HOP, k.win512))
    padded = torch.nn.functional.pad(y, (1024, 1024))  # center=True, constant (zero) padding
    mag2048 = torch.cat([  # (B, 63, 1025): frames first
        _cabs(torch.fft.rfft(padded[i: i + _GROUP2048].double().unfold(1, 2048, HOP) * k.win2048).to(torch.complex64))
        for i in range(0, len(y), _GROUP2048)])
    mel = k.mel_2048((mag2048 * mag2048).transpose(1, 2).contiguous())
    return _Spectra(mag, mel, mag2048[:, ::2].cpu().numpy())


def _channels_batch(y_np: np.ndarray, y: torch.Tensor, sp: _Spectra, k: _Constants,
                    out: np.ndarray) -> None:
    """The nine channels of :func:`_channels` for a batch, written to ``out`` (B, 9, 128, 63).

    Each channel is brought to numpy in the dtype the reference has at that point (float32,
    float64 for LPC and the tempogram) before its z-score.
    """
    def numpy(x: torch.Tensor) -> np.ndarray:
        return x.cpu().numpy()

    mag = sp.mag
    power = mag * mag
    mel_db = _power_to_db_np(numpy(k.mel_4500(power)), ref_max=True)
    # chroma: chroma_stft (tuning from |STFT|) over chroma_cens (tuning from the 2048-point STFT)
    mag_np = numpy(mag)
    tuning = _tuning_index(mag_np.transpose(0, 2, 1), N_FFT, 12)
    raw = np.matmul(k.chroma_fb_np[tuning], mag_np)  # as librosa's einsum
    chroma_stft = _normalize(torch.from_numpy(raw).to(k.device), np.inf, dim=1)
    t36 = _tuning_index(sp.mag2048_hop512, 2048, _CQT_BPO)
    chroma = _normalize(torch.matmul(k.cq_to_chroma, _cqt_mag(y_np, t36, k)), 1, dim=1)
    quant = sum((chroma > step).to(torch.float32) * 0.25 for step in (0.4, 0.2, 0.1, 0.05))
    cens = _normalize(torch.matmul(quant.double(), k.cens_smooth).to(torch.float32), 2, dim=1)
    # DCTs and deltas with the very scipy calls librosa makes, batched along the leading axis
    mfcc = scipy.fft.dct(_power_to_db_np(numpy(k.mel_full(power)), ref_max=False),
                         axis=1, type=2, norm="ortho")[:, :40]
    mel_d1, mel_d2 = _mel_deltas(mel_db, k)
    # onset strength (128-band mel of the 2048-point STFT, hop 256) -> tempogram (384 lags)
    onset_db = _power_to_db(sp.mel2048, ref_max=False)
    onset = torch.clamp(onset_db[:, :, 1:] - onset_db[:, :, :-1], min=0.0).mean(dim=1)
    onset = torch.nn.functional.pad(onset, (1 + 2048 // (2 * HOP), 0))[:, : SHAPE[1]]
    odf = torch.matmul(onset.double(), k.tempo_pad).float().unfold(1, 384, 1)[:, : SHAPE[1]] * k.tempo_win
    n_pad = scipy.fft.next_fast_len(2 * 384 - 1, real=True)
    spec = torch.fft.rfft(odf, n=n_pad)
    acf = torch.fft.irfft(spec.real ** 2 + spec.imag ** 2, n=n_pad)[..., :384]
    feats = {
        "chroma": lambda: numpy(torch.cat([chroma_stft, cens], dim=1)),
        "gammatone": lambda: np.log1p(numpy(k.mel_64(mag))),
        "lpc": lambda: _lpc_batch(y_np, k),
        "mel": lambda: mel_db,
        "mel_delta": lambda: mel_d1,
        "mel_delta2": lambda: mel_d2,
        "mfcc": lambda: np.concatenate([mfcc, _delta(mfcc, 1), _delta(mfcc, 2)], axis=1),
        "mod_spec": lambda: scipy.fft.dct(scipy.fft.dct(mel_db, norm="ortho", axis=1)[:, :40],
                                          norm="ortho", axis=2),
        "tempogram": lambda: numpy(_normalize(acf, np.inf, dim=2).transpose(1, 2)).astype(np.float64),
    }
    for i, name in enumerate(CHANNEL_NAMES):
        _z_fit(feats[name](), out[:, i], rows=name in ("chroma", "mfcc"))


def _skew_kurtosis(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``scipy.stats.skew`` and ``scipy.stats.kurtosis`` (biased, Fisher) of each row of ``x``
    (B, n) -> two (B,) arrays in ``x``'s dtype: scipy's own operations (central moments by
    squaring, NaN where the variance is within rounding of 0) without its per-call checks."""
    mean = x.mean(axis=1, keepdims=True)
    d = x - mean
    d2 = d ** 2
    m2, m3, m4 = d2.mean(axis=1), (d2 * d).mean(axis=1), (d2 ** 2).mean(axis=1)
    zero = m2 <= (np.finfo(m2.dtype).eps * mean[:, 0]) ** 2
    return np.where(zero, np.nan, m3 / m2 ** 1.5), np.where(zero, np.nan, m4 / m2 ** 2.0) - 3


def _percentiles(x: np.ndarray, qs: tuple[float, ...]) -> list[np.ndarray]:
    """``np.percentile(x, q, axis=1)`` (linear interpolation) of ``x`` (B, n) float32 >= 0 (no
    NaN) for each q of ``qs`` -> float64 (B,) arrays: the two order statistics around each
    quantile from one ``np.partition`` of the bit patterns as int32 (which sort as the values
    do; 4x faster than sorting the floats), interpolated in float64 (numpy's float32 result to
    its rounding)."""
    pos = [q / 100 * (x.shape[1] - 1) for q in qs]
    lo = [int(np.floor(p)) for p in pos]
    kth = sorted({i for j in lo for i in (j, min(j + 1, x.shape[1] - 1))})
    part = np.partition(x.view(np.int32), kth, axis=1).view(np.float32)  # x >= 0: same order
    at = {i: part[:, i].astype(np.float64) for i in kth}
    return [at[j] + (at[min(j + 1, x.shape[1] - 1)] - at[j]) * (p - j) for p, j in zip(pos, lo)]


def _stats(x: np.ndarray) -> list[np.ndarray]:
    """mean, std, max, min over axis 1 (float64)."""
    return [x.mean(axis=1), x.std(axis=1), x.max(axis=1), x.min(axis=1)]


def _scalars_batch(y_np: np.ndarray, y: torch.Tensor, sp: _Spectra, k: _Constants) -> np.ndarray:
    """The 36 scalars of :func:`_scalars` for a batch -> float64 (B, 36), may hold NaN."""
    nyq = SR / 2
    mag = sp.mag
    frames = torch.nn.functional.pad(y, (N_FFT // 2, N_FFT // 2)).unfold(1, N_FFT, HOP)
    rms = torch.sqrt((frames * frames).mean(dim=2)).double().cpu().numpy()
    edge = torch.nn.functional.pad(y[:, None], (N_FFT // 2, N_FFT // 2), mode="replicate")[:, 0]
    neg = edge.unfold(1, N_FFT, HOP) < -1e-10  # signbit after zeroing |y| <= 1e-10
    zcr = ((neg[..., 1:] != neg[..., :-1]).sum(dim=2) / N_FFT).double().cpu().numpy()
    snorm = _normalize(mag, 1, dim=1).double()
    freq = k.freq512_t[None, :, None]
    cent = (freq * snorm).sum(dim=1, keepdim=True)
    dev = freq - cent
    bw = (snorm * dev * dev).sum(dim=1).sqrt().cpu().numpy()
    cent = cent[:, 0].cpu().numpy()
    s_th = torch.clamp(mag * mag, min=1e-10)
    flat = (torch.exp(torch.log(s_th).mean(dim=1)) / s_th.mean(dim=1)).double().cpu().numpy()
    # spectral contrast: mean of the q smallest and largest magnitudes of each band (numpy's sort
    # of the band's rows, as librosa: 4x faster than torch.topk on this layout)
    mag_np, valley, peak = mag.cpu().numpy(), [], []
    for lo, hi, q in k.bands:
        band = np.sort(mag_np[:, lo:hi], axis=1) if q > 1 else mag_np[:, lo:hi]
        valley.append(band[:, :q].mean(axis=1) if q > 1 else band.min(axis=1))
        peak.append(band[:, -q:].mean(axis=1) if q > 1 else band.max(axis=1))
    contrast = (_power_to_db(torch.from_numpy(np.stack(peak, 1)).double(), ref_max=False)
                - _power_to_db(torch.from_numpy(np.stack(valley, 1)).double(), ref_max=False))
    contrast = contrast.reshape(len(y), -1).numpy()
    total = np.cumsum(sp.mag2048_hop512, axis=2)
    roll = k.freq2048[np.argmax(total >= 0.85 * total[:, :, -1:], axis=2)]
    power = mag.double()
    power = power * power
    tot = power.sum(dim=(1, 2))
    low = power[:, : int(1000 * N_FFT / SR)].sum(dim=(1, 2)) / tot
    low_ratio = torch.where(tot > 0, low, torch.zeros_like(low)).cpu().numpy()
    flux_db = _power_to_db(sp.mel2048[:, :, ::2], ref_max=True)
    flux = torch.linalg.vector_norm(flux_db[:, :, 1:] - flux_db[:, :, :-1], dim=1).double().cpu().numpy()

    y64 = y_np.astype(np.float64)
    n = y_np.shape[1]
    # Hilbert envelope |y + i H(y)| (scipy.signal.hilbert's analytic signal: its real part is y,
    # its imaginary part the inverse real FFT of -i times the spectrum without DC and Nyquist)
    spec = -1j * scipy.fft.rfft(y64, axis=1)
    spec[:, 0] = 0
    if n % 2 == 0:
        spec[:, -1] = 0
    hilbert = scipy.fft.irfft(spec, n, axis=1)
    env = np.sqrt(y64 * y64 + hilbert * hilbert)
    env_mean, env_std = env.mean(axis=1), env.std(axis=1)
    n_peaks, peak_mean, peak_std = np.zeros(len(y)), np.zeros(len(y)), np.zeros(len(y))
    for c in range(len(y)):
        peaks, props = scipy.signal.find_peaks(env[c], height=env[c].mean(), distance=SR // 10)
        n_peaks[c] = len(peaks)
        if len(peaks) >= 2:
            peak_mean[c], peak_std[c] = props["peak_heights"].mean(), props["peak_heights"].std()
    # linear autocorrelation, lags < sr/20: zero padding to n + sr/20 avoids any wrap-around;
    # 17280 = 2^7 3^3 5 (>= 16800) is twice as fast here as next_fast_len's 16875 = 3^3 5^4
    n_pad = 17280 if n + SR // 20 <= 17280 else scipy.fft.next_fast_len(n + SR // 20, real=True)
    spec = scipy.fft.rfft(y64, n_pad, axis=1)
    acf = scipy.fft.irfft(spec.real ** 2 + spec.imag ** 2, n_pad, axis=1)[:, : SR // 20]
    acf0 = acf[:, :1]
    acf = np.where(acf0 > 0, acf / np.where(acf0 > 0, acf0, 1.0), 0.0)
    p90, p10 = _percentiles(np.abs(y_np), (90, 10))
    cent_skew = _skew_kurtosis(cent)[0]
    skew, kurtosis = _skew_kurtosis(y_np)
    return np.stack([
        *_stats(rms), *_stats(zcr),
        cent.mean(axis=1) / nyq, cent.std(axis=1) / nyq, cent_skew,
        bw.mean(axis=1) / nyq, bw.std(axis=1) / nyq,
        roll.mean(axis=1) / nyq, roll.std(axis=1) / nyq,
        flat.mean(axis=1), flat.std(axis=1),
        contrast.mean(axis=1), contrast.std(axis=1),
        env_mean, env_std, env_mean / (env_std + 1e-8),
        n_peaks, peak_mean, peak_std,
        low_ratio,
        flux.mean(axis=1), flux.std(axis=1), flux.max(axis=1),
        skew, kurtosis,
        p90, p10,
        acf[:, SR // 100], acf[:, SR // 50], np.argmin(acf, axis=1) / SR,
    ], axis=1).astype(np.float64)


def prepare_seed9_batch(device: str | torch.device | None = None) -> None:
    """Build the batched extractor's filterbanks now instead of on the first call.

    They take about 0.7 s (1.4 s with librosa's lazy imports) and are cached per process and
    device; call this in a parent process before forking workers so that they inherit them.
    Input: the torch device (``None``: CPU). Returns nothing; raises what torch raises for an
    unknown device.
    """
    _constants(torch.device(device) if device is not None else torch.device("cpu"))


def compute_seed9_batch(y: np.ndarray, sr: int, device: str | torch.device | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Compute the seed9 stack of many clips at once; same values as :func:`compute_seed9`.

    Args:
        y: clips ``(clips, samples)``, float (float32 expected), amplitude in [-1, 1]; each row
            is zero-padded or truncated to 16000 samples, like :func:`compute_seed9`.
        sr: their sample rate in Hz; must be 16000.
        device: torch device for the STFTs, filterbank products, CQT, LPC and tempogram
            (``None``: CPU). The steps written with numpy/scipy to reproduce librosa's rounding
            (z-scores, DCTs, deltas, tuning estimates, Hilbert envelope, peaks, percentiles) and
            the soxr resampling stay on the CPU. Only the CPU has been tested.

    Returns:
        ``(channels, scalars)``: float32 ``(clips, 9, 128, 63)`` and float32 ``(clips, 36)``,
        in :data:`CHANNEL_NAMES` / :data:`SCALAR_NAMES` order, NaN/inf replaced by 0. They match
        :func:`compute_seed9` within :data:`BATCH_CHANNEL_ATOL` / :data:`BATCH_SCALAR_TOL`
        (module docstring).

    Raises:
        ValueError: if ``sr`` is not 16000, ``y`` is not two-dimensional or holds NaN/inf.

    Performance: about 3.9 ms of CPU per clip on one core of the (loaded) 2-core AMD EPYC,
    chunks of 16-64 clips (larger inputs are processed 16 clips at a time). Run it with one
    torch thread per process (``torch.set_num_threads(1)``), one process per core; numpy/scipy's
    BLAS is limited to one thread during the call (threadpoolctl). The first call builds the
    filterbanks (about 0.7 s, see :func:`prepare_seed9_batch`).

    Method: one torch STFT per FFT size for the whole batch (n_fft 512 and 2048, hop 256; the
    hop-512 features take the even frames of the latter) feeds every channel and scalar;
    filterbanks, the CQT bases of every possible tuning estimate, CENS smoothing and tempogram
    padding are built once with librosa/scipy and applied as batched matrix products; LPC is
    Burg's recursion over all frames at once, from their autocorrelation. Sources: librosa 0.11
    (``stft``, ``feature.*``, ``cqt``/``vqt``, ``estimate_tuning``/``piptrack``, ``lpc``,
    ``onset_strength``, ``tempogram``), scipy (``fft.dct``, ``signal.savgol_filter``,
    ``signal.find_peaks``, ``stats``), soxr; fast Burg after K. Vos (2013).
    """
    if sr != SR:
        raise ValueError(f"seed9 needs audio at {SR} Hz, got sr={sr}; resample the clips first")
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 2:
        raise ValueError(f"seed9 batch needs clips of shape (clips, samples), got shape {y.shape}")
    if not np.isfinite(y).all():  # librosa (hence the reference) refuses them too
        bad = np.flatnonzero(~np.isfinite(y).all(axis=1))
        raise ValueError(f"seed9 batch: clips {bad[:10].tolist()} hold NaN or inf samples")
    y = np.ascontiguousarray(np.pad(y[:, :N_SAMPLES], ((0, 0), (0, max(0, N_SAMPLES - y.shape[1])))))
    if len(y) == 0:
        return (np.zeros((0, len(CHANNEL_NAMES), *SHAPE), np.float32),
                np.zeros((0, len(SCALAR_NAMES)), np.float32))
    k = _constants(torch.device(device) if device is not None else torch.device("cpu"))
    channels = np.empty((len(y), len(CHANNEL_NAMES), *SHAPE), dtype=np.float32)
    scalars = np.empty((len(y), len(SCALAR_NAMES)), dtype=np.float64)
    with torch.no_grad(), np.errstate(all="ignore"), _one_blas_thread():
        for start in range(0, len(y), _SUB_BATCH):
            part = y[start: start + _SUB_BATCH]
            yt = torch.from_numpy(part).to(k.device)
            sp = _spectra(yt, k)
            _channels_batch(part, yt, sp, k, channels[start: start + len(part)])
            scalars[start: start + len(part)] = _scalars_batch(part, yt, sp, k)
    return channels, np.nan_to_num(scalars, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
