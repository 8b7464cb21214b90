"""Heart-cycle scalars of a phonocardiogram window: heart rate, RR, systole and diastole.

A window ``(samples,)`` of a heart-sound recording at ``sr`` Hz goes through three steps:

1. :func:`envelope`: band-pass 25-400 Hz (4th-order Butterworth, zero phase; the upper edge is
   capped at 0.45 ``sr``), spikes removed as Schmidt et al. (2010) do (:func:`remove_spikes`),
   then the normalised average Shannon energy of Liang et al. (1997,
   "Heart sound segmentation algorithm based on heart sound envelogram", Computers in
   Cardiology 24: 105-108) over 20-ms frames every 10 ms (or the Hilbert envelope).
2. :func:`heart_rate`: the highest peak of the envelope's autocorrelation between 40 and 200 bpm
   that leaves room for a systole, and the systole from the highest peak between 0.15 s and
   half a cycle, as in Schmidt et al.
   (2010, "Segmentation of heart sound recordings by a duration-dependent hidden Markov model",
   Physiol. Meas. 31: 513-529) and Springer et al. (2016, "Logistic regression-HSMM-based heart
   sound segmentation", IEEE Trans. Biomed. Eng. 63: 822-832; ``getHeartRateSchmidt.m``).
3. :func:`detect_s1_s2`: the envelope's peaks (``scipy.signal.find_peaks``, at least
   ``min_gap_s`` apart), then the best chain of alternating S1 and S2 among them, a Viterbi
   search whose intervals must fit the expected systole (S1 -> S2) and diastole (S2 -> S1):
   a duration model in the spirit of Schmidt's and Springer's, on peaks instead of samples.
   Systole is the shorter of the two intervals at normal heart rates, which decides which
   sound is S1.

:func:`heart_cycle_scalars` turns these into the :data:`HEART_CYCLE_SCALARS`
(:data:`HEART_CYCLE_UNITS` gives each one's unit). They are the optional scalars of the
``log_mel`` feature set (``params: {heart_cycles: true}``); they mean something only when a
window spans several beats (``audio.clip_seconds`` of 5 s or more).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

HEART_CYCLE_UNITS: dict[str, str] = {
    "hc_heart_rate_bpm": "beats per minute, from the envelope's autocorrelation (0: flat envelope)",
    "hc_rr_mean_s": "s, mean S1 -> next S1 interval of the detected cycles",
    "hc_rr_std_s": "s, its standard deviation",
    "hc_systole_mean_s": "s, mean S1 -> S2 interval of the detected cycles",
    "hc_systole_std_s": "s, its standard deviation",
    "hc_diastole_mean_s": "s, mean S2 -> next S1 interval of the detected cycles",
    "hc_diastole_std_s": "s, its standard deviation",
    "hc_sys_dia_ratio": "unitless, mean systole / mean diastole",
    "hc_n_cycles": "count of complete cycles (S1, S2, next S1) detected",
    "hc_coverage": "fraction (0-1) of the window's envelope covered by the detected cycles",
    "hc_periodicity": "unitless (0-1), the envelope's normalised autocorrelation at the heart-rate lag",
}
"""Each heart-cycle scalar's unit and meaning. Without a detected cycle every interval scalar,
the ratio, ``hc_n_cycles`` and ``hc_coverage`` are 0; the heart rate and periodicity are 0
only when the envelope is flat (silence) or has no positive autocorrelation peak in 40-200 bpm."""

HEART_CYCLE_SCALARS: list[str] = list(HEART_CYCLE_UNITS)
"""The names of :func:`heart_cycle_scalars`' values, in order."""


class HeartRate(NamedTuple):
    """What :func:`heart_rate` finds: ``bpm`` (beats per minute), ``systole_s`` (the expected
    S1 -> S2 interval, s) and ``periodicity`` (the normalised autocorrelation at the cycle's
    lag, at most 1). All 0 when nothing periodic is found."""

    bpm: float
    systole_s: float
    periodicity: float


class HeartSounds(NamedTuple):
    """What :func:`detect_s1_s2` finds, times in seconds (envelope frame ``k`` at ``k / rate``,
    the frame's start: its centre is half a frame, 10 ms, later): ``s1 (n1,)`` and ``s2 (n2,)``
    the sounds' envelope peaks, ``cycles (n_cycles, 3)`` each complete cycle's S1, S2 and next S1."""

    s1: np.ndarray
    s2: np.ndarray
    cycles: np.ndarray


def remove_spikes(x: np.ndarray, sr: int, window_s: float = 0.5, ratio: float = 3.0,
                  max_spikes: int = 1000) -> tuple[np.ndarray, int]:
    """Friction spikes and knocks out of a band-passed phonocardiogram ``x (samples,)`` at ``sr``
    Hz -> ``(a copy (samples,), number of spikes removed)``, as Schmidt et al. (2010) do
    (Springer et al. 2016, ``schmidt_spike_removal.m``): the signal is cut into windows of
    ``window_s`` s; while the largest absolute amplitude of some window exceeds ``ratio`` times
    the median of the windows' largest amplitudes, the stretch of that window between the zero
    crossings around its largest sample is set to zero (at most ``max_spikes`` times). A
    signal shorter than two windows, or whose median window is silent, is returned unchanged.
    """
    x = np.array(x, np.float64)
    n = max(1, int(round(window_s * sr)))
    n_win = len(x) // n
    if n_win < 2:
        return x, 0
    frames = x[:n_win * n].reshape(n_win, n)  # a view: zeroing a stretch of it zeroes x
    maa = np.abs(frames).max(1)
    med = np.median(maa)
    for count in range(max_spikes):
        w = int(np.argmax(maa))
        if not (med > 0 and maa[w] > ratio * med):
            return x, count
        f = frames[w]
        i = int(np.argmax(np.abs(f)))
        sign = np.signbit(f)
        left, right = np.flatnonzero(sign[:i] != sign[i]), np.flatnonzero(sign[i + 1:] != sign[i])
        f[(left[-1] + 1 if len(left) else 0):(i + 1 + right[0] if len(right) else n)] = 0.0
        maa[w] = np.abs(f).max()
        med = np.median(maa)
    return x, max_spikes


def envelope(y: np.ndarray, sr: int, method: str = "shannon", band: tuple[float, float] = (25.0, 400.0),
             frame_s: float = 0.02, hop_s: float = 0.01, despike: bool = True) -> tuple[np.ndarray, float]:
    """The envelope of a phonocardiogram: ``y (samples,)`` at ``sr`` Hz -> ``(env (frames,),
    rate)``, ``rate`` its frames per second (``sr / round(hop_s * sr)``, about 100 Hz).

    The signal is band-passed to ``band`` Hz (4th-order Butterworth, ``sosfiltfilt``; the upper
    edge at most 0.45 ``sr``), cleared of spikes (:func:`remove_spikes`, Schmidt et al. 2010;
    ``despike=False``: not) and divided by its largest absolute value. ``method="shannon"``:
    the Shannon energy ``-x^2 log x^2`` averaged over frames of ``frame_s`` s every ``hop_s`` s,
    then standardised to mean 0 and std 1: the normalised average Shannon energy of Liang et al.
    (1997), which favours medium intensities over the high ones, so that S2 stands out next to
    a loud S1 and low noise stays low. ``method="hilbert"``: the magnitude of the analytic
    signal (Hilbert transform), averaged and standardised the same way.
    ``frames = 1 + (samples - frame) // hop`` (0 for a window shorter than a frame). A silent
    (or constant) window gives zeros, never NaN. Raises ``ValueError`` for a rate under 200 Hz,
    a band that is not ``0 < low < high``, another ``method`` or ``y`` of more than one dimension.
    """
    from scipy import signal

    y = np.asarray(y, np.float64)
    if y.ndim != 1:
        raise ValueError(f"heart-cycle envelope: y must be one channel (samples,), got shape {y.shape}")
    if sr < 200:
        raise ValueError(f"heart-cycle envelope: sample rate {sr} Hz is under 200 Hz")
    if method not in ("shannon", "hilbert"):
        raise ValueError(f"heart-cycle envelope: method {method!r} is not 'shannon' or 'hilbert'")
    low, high = band[0], min(band[1], 0.45 * sr)
    if not 0 < low < high:
        raise ValueError(f"heart-cycle envelope: band {band} Hz is not 0 < low < high (high capped at 0.45 sr)")
    hop = max(1, int(round(hop_s * sr)))
    frame = max(hop, int(round(frame_s * sr)))
    n_frames = 0 if len(y) < frame else 1 + (len(y) - frame) // hop
    env = np.zeros(n_frames)
    y = np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)
    if n_frames < 2 or not np.any(y):
        return env, sr / hop
    sos = signal.butter(4, [low, high], btype="bandpass", fs=sr, output="sos")
    x = signal.sosfiltfilt(sos, y - y.mean(), padlen=min(len(y) - 1, 3 * (2 * len(sos) + 1)))
    if despike:
        x = remove_spikes(x, sr)[0]
    peak = np.max(np.abs(x))
    if not peak > 0:
        return env, sr / hop
    x = x / peak
    if method == "shannon":
        x2 = x * x
        e = -x2 * np.log(np.maximum(x2, 1e-300))
    else:
        e = np.abs(signal.hilbert(x))
    c = np.concatenate([[0.0], np.cumsum(e)])
    starts = np.arange(n_frames) * hop
    env = (c[starts + frame] - c[starts]) / frame
    std = env.std()
    return ((env - env.mean()) / std if std > 0 else np.zeros(n_frames)), sr / hop


def _autocorrelation(env: np.ndarray) -> np.ndarray:
    """Biased, normalised autocorrelation ``(frames,)`` of ``env`` minus its mean (lag 0: 1; all
    0 for a constant ``env``)."""
    x = np.asarray(env, np.float64)
    x = x - x.mean() if len(x) else x
    energy = float(x @ x)
    if not energy > 0:
        return np.zeros(len(x))
    n_fft = 1 << int(np.ceil(np.log2(2 * len(x))))
    spec = np.fft.rfft(x, n_fft)
    return np.fft.irfft(spec * np.conj(spec), n_fft)[:len(x)] / energy


def _maxima(r: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """The lags (frames) of the local maxima of ``r`` in ``[lo, hi]``, highest first."""
    from scipy.signal import find_peaks

    peaks, _ = find_peaks(r[:hi + 2])
    peaks = peaks[(peaks >= lo) & (peaks <= hi)]
    return peaks[np.argsort(-r[peaks], kind="stable")]


def _refine(r: np.ndarray, k: int) -> float:
    """The lag of a local maximum ``k`` of ``r`` refined by a parabola through it and its neighbours."""
    a, b, c = r[k - 1], r[k], r[k + 1]
    den = a - 2 * b + c
    return k + (0.5 * (a - c) / den if den < 0 else 0.0)


def heart_rate(env: np.ndarray, rate: float, min_bpm: float = 40.0, max_bpm: float = 200.0,
               min_systole_s: float = 0.15) -> HeartRate:
    """Heart rate and expected systole from the autocorrelation of an envelope ``env (frames,)``
    sampled at ``rate`` frames per second (:func:`envelope`).

    As Schmidt et al. (2010) and Springer et al. (2016): the cycle is the lag (s) of the highest
    local maximum of the (biased, normalised) autocorrelation between the lags of ``max_bpm``
    and ``min_bpm`` bpm (lags over 3/4 of the window are not searched), the systole the lag of
    the highest local maximum between ``min_systole_s`` and half that cycle (an S1 correlating
    with the S2 after it), both refined by a parabola. One addition: a cycle must have room for
    a systole, a local maximum between ``min_systole_s`` and half the cycle; a candidate without
    one (in noisy recordings, often the lag from one sound to the next, 170-200 bpm) gives way
    to the next highest positive maximum that has one, or, when none has, the highest is kept
    with a systole of 0.4 cycles (so a true rate over about 170 bpm, whose systole is under
    0.15 s, is found only when nothing else is periodic). Returns :class:`HeartRate`: ``bpm``
    = 60 / cycle (s), ``periodicity`` = the autocorrelation there; all 0 when the envelope is
    flat or has no positive maximum in the range. Raises ``ValueError`` unless
    ``0 < min_bpm < max_bpm`` and ``rate > 0``.
    """
    if not 0 < min_bpm < max_bpm or not rate > 0:
        raise ValueError(f"heart_rate: need 0 < min_bpm < max_bpm and rate > 0, got {min_bpm}, {max_bpm}, {rate}")
    r = _autocorrelation(env)
    lo = max(1, int(np.floor(rate * 60.0 / max_bpm)))
    hi = min(int(np.ceil(rate * 60.0 / min_bpm)), int(0.75 * len(r)) - 2)
    cands = _maxima(r, lo, hi) if hi > lo else np.zeros(0, int)
    if not len(cands) or not r[cands[0]] > 0:
        return HeartRate(0.0, 0.0, 0.0)
    for k in cands:
        if not r[k] > 0:
            break
        sys = _maxima(r, max(1, int(np.ceil(min_systole_s * rate))), int(np.floor(0.5 * _refine(r, k))))
        if len(sys):
            lag = _refine(r, k)
            return HeartRate(float(60.0 * rate / lag), float(_refine(r, sys[0]) / rate), float(min(r[k], 1.0)))
    lag = _refine(r, cands[0])
    return HeartRate(float(60.0 * rate / lag), float(0.4 * lag / rate), float(min(r[cands[0]], 1.0)))


def _viterbi(t: np.ndarray, reward: np.ndarray, durations: tuple[float, float, float, float],
             restart: float) -> list[tuple[int, int, bool]]:
    """The best chain of alternating S1 (label 0) and S2 (label 1) among peaks at times ``t (n,)``
    (s) worth ``reward (n,)``: maximises the rewards of the peaks kept minus, for each interval
    between consecutive kept peaks, ``z^2 / 2`` (``z``: the interval minus the systole (S1 -> S2)
    or diastole (S2 -> S1), over its std; ``durations = (systole, its std, diastole, its std)``)
    or, where the chain breaks, ``restart``. Returns ``[(peak, label, linked to the previous), ...]``
    in time order."""
    sys, sd_sys, dia, sd_dia = durations
    n = len(t)
    score = np.full((n, 2), -np.inf)
    back = np.full((n, 2, 2), -1, int)
    linked = np.zeros((n, 2), bool)
    best, best_at = 0.0, (-1, -1)  # the best score of a chain ending before the peak now looked at
    for k in range(n):
        start, start_at = (best - restart, best_at) if best - restart > 0 else (0.0, (-1, -1))
        for lab in (0, 1):
            mu, sd = (dia, sd_dia) if lab == 0 else (sys, sd_sys)  # reaching S1 ends a diastole
            s, frm, link = start, start_at, False
            for j in range(k - 1, -1, -1):
                z = (t[k] - t[j] - mu) / sd
                if z > 3:
                    break
                if z > -3 and score[j, 1 - lab] - 0.5 * z * z > s:
                    s, frm, link = score[j, 1 - lab] - 0.5 * z * z, (j, 1 - lab), True
            score[k, lab], back[k, lab], linked[k, lab] = reward[k] + s, frm, link
        for lab in (0, 1):
            if score[k, lab] > best:
                best, best_at = score[k, lab], (k, lab)
    path, (k, lab) = [], best_at
    while k >= 0:
        path.append((k, lab, bool(linked[k, lab])))
        k, lab = back[k, lab]
    return path[::-1]


def _chains(t: np.ndarray, path: list[tuple[int, int, bool]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The linked runs of a :func:`_viterbi` path as ``(times (m,), labels (m,))``, labels
    swapped in a run whose S1 -> S2 intervals are on average longer than its S2 -> S1 ones
    (systole is the shorter)."""
    runs, cur = [], []
    for k, lab, link in path:
        if not link and cur:
            runs.append(cur)
            cur = []
        cur.append((k, lab))
    if cur:
        runs.append(cur)
    out = []
    for run in runs:
        times = t[[k for k, _ in run]]
        labels = np.array([lab for _, lab in run])
        d = np.diff(times)
        sys_d, dia_d = d[labels[:-1] == 0], d[labels[:-1] == 1]
        if len(sys_d) and len(dia_d) and sys_d.mean() > dia_d.mean():
            labels = 1 - labels
        out.append((times, labels))
    return out


def _cycles(chains: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Every S1, S2, S1 triple in a row of the chains ``(times, labels)`` -> ``(n_cycles, 3)`` s."""
    rows = [(times[i], times[i + 1], times[i + 2]) for times, labels in chains
            for i in range(len(times) - 2) if labels[i] == 0]
    return np.array(rows, np.float64).reshape(-1, 3)


def detect_s1_s2(env: np.ndarray, rate: float, bpm: float, systole_s: float | None = None,
                 min_gap_s: float = 0.15, restart: float = 2.0) -> HeartSounds:
    """S1 and S2 in an envelope ``env (frames,)`` at ``rate`` frames per second (:func:`envelope`),
    given the heart rate ``bpm`` and the expected systole ``systole_s`` (s; default 0.4 of a
    cycle) of :func:`heart_rate`.

    Candidates are the envelope's peaks (``scipy.signal.find_peaks``) at least ``min_gap_s`` s
    apart (0.15 s: shorter than a systole at 200 bpm, longer than the split of S1 or S2),
    each worth 0.5 + its height above the envelope's median relative to the 80th percentile of
    the candidates' heights (at most 1). A Viterbi search (:func:`_viterbi`) keeps the chain of
    alternating S1 and S2 whose S1 -> S2 intervals fit the systole and S2 -> S1 intervals the
    diastole (cycle - systole), a duration model simplified from Schmidt et al. (2010) and
    Springer et al. (2016); extra peaks (murmurs, noise) do not fit and are dropped, a missed
    sound breaks the chain (cost ``restart``). It runs twice: with loose durations (std 20 % of
    the systole, 25 % of the diastole, at least 40 and 60 ms), then with the medians of the first
    run's intervals and tighter ones (12 % and 15 %, at least 25 and 40 ms). In each linked run,
    the sound that starts the shorter of the two alternating intervals is S1 (systole is shorter
    than diastole at normal heart rates; Liang et al. 1997). Returns :class:`HeartSounds` (empty
    arrays for ``bpm <= 0`` or fewer than 3 candidates). Raises ``ValueError`` for ``rate <= 0``.
    """
    from scipy.signal import find_peaks

    if not rate > 0:
        raise ValueError(f"detect_s1_s2: rate must be > 0, got {rate}")
    env = np.asarray(env, np.float64)
    empty = HeartSounds(np.zeros(0), np.zeros(0), np.zeros((0, 3)))
    if not bpm > 0 or len(env) < 3:
        return empty
    peaks, _ = find_peaks(env, distance=max(1, int(round(min_gap_s * rate))))
    if len(peaks) < 3:
        return empty
    height = env[peaks] - np.median(env)
    ref = np.quantile(height, 0.8)
    reward = 0.5 + (np.clip(height / ref, 0.0, 1.0) if ref > 0 else np.zeros(len(peaks)))
    t = peaks / rate
    period = 60.0 / bpm
    sys = systole_s if systole_s and 0 < systole_s < period else 0.4 * period
    dia = period - sys
    durations = (sys, max(0.04, 0.2 * sys), dia, max(0.06, 0.25 * dia))
    chains = _chains(t, _viterbi(t, reward, durations, restart))
    cyc = _cycles(chains)
    if len(cyc) >= 2:
        sys, dia = float(np.median(cyc[:, 1] - cyc[:, 0])), float(np.median(cyc[:, 2] - cyc[:, 1]))
        durations = (sys, max(0.025, 0.12 * sys), dia, max(0.04, 0.15 * dia))
        chains = _chains(t, _viterbi(t, reward, durations, restart))
        cyc = _cycles(chains)
    s1 = np.concatenate([times[labels == 0] for times, labels in chains]) if chains else np.zeros(0)
    s2 = np.concatenate([times[labels == 1] for times, labels in chains]) if chains else np.zeros(0)
    return HeartSounds(np.sort(s1), np.sort(s2), cyc)


def heart_cycle_scalars(y: np.ndarray, sr: int, method: str = "shannon") -> np.ndarray:
    """The heart-cycle scalars of a phonocardiogram window ``y (samples,)`` at ``sr`` Hz ->
    ``(len(HEART_CYCLE_SCALARS),)`` float32, in the order and units of :data:`HEART_CYCLE_UNITS`:
    heart rate (bpm), RR mean and std (s), systole mean and std (s), diastole mean and std (s),
    systole / diastole, number of cycles, coverage (fraction of the window in detected cycles)
    and periodicity (autocorrelation at the heart-rate lag).

    :func:`envelope` (Liang et al. 1997), :func:`heart_rate` (Schmidt et al. 2010, Springer et
    al. 2016) and :func:`detect_s1_s2`. Never NaN: a window without a detected cycle (silence,
    noise, too short for one cycle) gives 0 for the interval scalars, the ratio, the count and
    the coverage, and a flat envelope 0 for everything. Raises ``ValueError`` as
    :func:`envelope` does (rate under 200 Hz, ``y`` not one-dimensional).
    """
    env, rate = envelope(y, sr, method)
    hr = heart_rate(env, rate)
    cyc = detect_s1_s2(env, rate, hr.bpm, hr.systole_s).cycles
    out = dict.fromkeys(HEART_CYCLE_SCALARS, 0.0)
    out.update(hc_heart_rate_bpm=hr.bpm, hc_periodicity=hr.periodicity)
    if len(cyc):
        rr, sys, dia = cyc[:, 2] - cyc[:, 0], cyc[:, 1] - cyc[:, 0], cyc[:, 2] - cyc[:, 1]
        out.update(hc_rr_mean_s=rr.mean(), hc_rr_std_s=rr.std(), hc_systole_mean_s=sys.mean(),
                   hc_systole_std_s=sys.std(), hc_diastole_mean_s=dia.mean(), hc_diastole_std_s=dia.std(),
                   hc_sys_dia_ratio=sys.mean() / dia.mean(), hc_n_cycles=float(len(cyc)),
                   hc_coverage=min(1.0, rr.sum() * rate / max(len(env), 1)))
    return np.nan_to_num(np.array([out[k] for k in HEART_CYCLE_SCALARS], np.float64)).astype(np.float32)
