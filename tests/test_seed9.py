"""Tests of lib.features.seed9 (the seed project's seed9 stack, ../shared/DESIGN.md §5)."""
from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import pytest
import scipy.signal

from lib.features.seed9 import (
    BATCH_CHANNEL_ATOL,
    BATCH_SCALAR_TOL,
    CHANNEL_NAMES,
    N_SAMPLES,
    SCALAR_NAMES,
    SHAPE,
    SR,
    compute_seed9,
    compute_seed9_batch,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared/data/breathing/train"


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The batched extractor runs one torch thread per worker process (many small operations);
    with two threads on a busy 2-core machine every small op waits for the other thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _signal(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """A seeded chirp (100 Hz -> 4 kHz) plus noise at 16 kHz, float32."""
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    y = 0.5 * scipy.signal.chirp(t, f0=100, t1=1.0, f1=4000) + 0.05 * rng.standard_normal(len(t))
    return y.astype(np.float32)


@pytest.fixture(scope="module")
def result():
    y = _signal()
    return y, *compute_seed9(y, SR)


def _scalar(scalars: np.ndarray, name: str) -> float:
    return float(scalars[SCALAR_NAMES.index(name)])


def test_names():
    assert len(CHANNEL_NAMES) == 9 and list(CHANNEL_NAMES) == sorted(CHANNEL_NAMES)
    assert len(SCALAR_NAMES) == 36 and len(set(SCALAR_NAMES)) == 36


def test_shapes_dtype_finite(result):
    _, channels, scalars = result
    assert channels.shape == (9, *SHAPE) == (9, 128, 63)
    assert scalars.shape == (36,)
    assert channels.dtype == np.float32 and scalars.dtype == np.float32
    assert np.isfinite(channels).all() and np.isfinite(scalars).all()


def test_mel_is_z_scored(result):
    mel = result[1][CHANNEL_NAMES.index("mel")]  # 128 bands x 63 frames: no padding
    assert abs(mel.mean()) < 1e-4
    assert abs(mel.std() - 1) < 1e-3


def test_chroma_rows_z_scored_then_padded(result):
    chroma = result[1][CHANNEL_NAMES.index("chroma")]
    np.testing.assert_allclose(chroma[:24].mean(axis=1), 0, atol=1e-4)
    assert np.all(chroma[24:] == chroma.min())
    assert chroma[:24].min() == chroma.min()


def test_short_clip_equals_zero_padded():
    y = _signal(0.5, seed=1)
    padded = np.pad(y, (0, N_SAMPLES - len(y)))
    for a, b in zip(compute_seed9(y, SR), compute_seed9(padded, SR)):
        np.testing.assert_array_equal(a, b)


def test_long_clip_is_truncated():
    y = _signal(1.5, seed=2)
    for a, b in zip(compute_seed9(y, SR), compute_seed9(y[:N_SAMPLES], SR)):
        np.testing.assert_array_equal(a, b)


def test_silent_clip_is_finite():
    channels, scalars = compute_seed9(np.zeros(N_SAMPLES, dtype=np.float32), SR)
    assert channels.shape == (9, 128, 63) and scalars.shape == (36,)
    assert np.isfinite(channels).all() and np.isfinite(scalars).all()


def test_wrong_sample_rate_raises():
    with pytest.raises(ValueError, match="16000"):
        compute_seed9(_signal(), 8000)


def test_rms_against_librosa(result):
    y, _, scalars = result
    # rms from time-domain frames: sqrt(mean(frame**2)), frames of 512 every 256, centred
    frames = librosa.util.frame(np.pad(y, 256), frame_length=512, hop_length=256)
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=0))
    assert rms.shape == (63,)
    np.testing.assert_allclose(
        librosa.feature.rms(y=y, frame_length=512, hop_length=256)[0], rms, rtol=1e-4)
    assert _scalar(scalars, "rms_mean") == pytest.approx(rms.mean(), rel=1e-4)
    assert _scalar(scalars, "rms_max") == pytest.approx(rms.max(), rel=1e-4)


def test_autocorrelation_against_direct(result):
    y, _, scalars = result
    y64 = y.astype(np.float64)
    acf = np.correlate(y64, y64, mode="full")[len(y64) - 1:]
    acf = acf / acf[0]
    assert abs(_scalar(scalars, "acf_lag10ms") - acf[160]) < 1e-4
    assert abs(_scalar(scalars, "acf_lag20ms") - acf[320]) < 1e-4
    assert _scalar(scalars, "acf_min_lag") == pytest.approx(np.argmin(acf[:800]) / SR)


def test_low_energy_ratio():
    t = np.arange(N_SAMPLES) / SR
    low = _scalar(compute_seed9((0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), SR)[1],
                  "low_energy_ratio")
    high = _scalar(compute_seed9((0.5 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32), SR)[1],
                   "low_energy_ratio")
    assert 0 <= high <= 1 and 0 <= low <= 1
    assert low > 0.9 and high < 0.1


def test_real_clip():
    sf = pytest.importorskip("soundfile")
    if not DATA.is_dir():
        pytest.skip(f"real-data folder {DATA} is absent")
    wavs = sorted(DATA.glob("*.wav"))
    if not wavs:
        pytest.skip(f"no .wav files in {DATA}")
    y, sr = sf.read(wavs[0], dtype="float32")
    if y.ndim > 1:
        y = y.mean(axis=1)
    if sr != SR:
        y, sr = librosa.resample(y, orig_sr=sr, target_sr=SR), SR
    channels, scalars = compute_seed9(y, sr)
    assert channels.shape == (9, 128, 63) and scalars.shape == (36,)
    assert np.isfinite(channels).all() and np.isfinite(scalars).all()


# --- compute_seed9_batch: the batched extractor against the per-clip reference ----------------

def _fixed(y: np.ndarray) -> np.ndarray:
    """Zero-pad or truncate to 1 s, as compute_seed9 does."""
    return np.pad(y[:N_SAMPLES], (0, max(0, N_SAMPLES - len(y))))


def _batch_mismatches(clips: dict[str, np.ndarray]) -> list[str]:
    """compute_seed9_batch on all clips at once vs compute_seed9 on each: one line per channel or
    scalar outside the tolerances documented in lib.features.seed9 (BATCH_CHANNEL_ATOL, BATCH_SCALAR_TOL)."""
    channels, scalars = compute_seed9_batch(np.stack([_fixed(y) for y in clips.values()]), SR)
    assert channels.shape == (len(clips), 9, *SHAPE) and scalars.shape == (len(clips), 36)
    assert channels.dtype == np.float32 and scalars.dtype == np.float32
    bad = []
    for i, (name, y) in enumerate(clips.items()):
        ref_channels, ref_scalars = compute_seed9(y, SR)
        for c, channel in enumerate(CHANNEL_NAMES):
            diff = float(np.abs(channels[i, c] - ref_channels[c]).max())
            if not diff <= BATCH_CHANNEL_ATOL[channel]:
                bad.append(f"{name} {channel}: max |diff| {diff:.3g} > {BATCH_CHANNEL_ATOL[channel]}")
        for j, scalar in enumerate(SCALAR_NAMES):
            rtol, atol = BATCH_SCALAR_TOL[scalar]
            got, want = float(scalars[i, j]), float(ref_scalars[j])
            if not abs(got - want) <= atol + rtol * abs(want):
                bad.append(f"{name} {scalar}: {got!r} vs reference {want!r} (rtol {rtol}, atol {atol})")
    return bad


def test_batch_tolerances_cover_every_output():
    assert set(BATCH_CHANNEL_ATOL) == set(CHANNEL_NAMES)
    assert set(BATCH_SCALAR_TOL) == set(SCALAR_NAMES)


def test_batch_matches_reference_on_generated_signals():
    rng = np.random.default_rng(7)
    clips = {
        "chirp+noise": _signal(),
        "silence": np.zeros(N_SAMPLES, dtype=np.float32),
        "short (0.4 s)": _signal(0.4, seed=3),
        "loud (clipped noise)": np.clip(3.0 * rng.standard_normal(N_SAMPLES), -1, 1).astype(np.float32),
        "long (1.3 s)": _signal(1.3, seed=4),
    }
    assert _batch_mismatches(clips) == []


def test_batch_matches_reference_on_real_clips():
    from lib.data.audio import fix_length, load

    if not DATA.is_dir():
        pytest.skip(f"real-data folder {DATA} is absent: batch-vs-reference check on real clips skipped")
    wavs = sorted(DATA.glob("*.wav"))
    if len(wavs) < 16:
        pytest.skip(f"fewer than 16 .wav files in {DATA}")
    clips = {p.name: fix_length(load(p, SR)[0], N_SAMPLES) for p in wavs[:: len(wavs) // 16][:16]}
    assert _batch_mismatches(clips) == []


def test_batch_shapes_and_errors():
    channels, scalars = compute_seed9_batch(np.zeros((0, N_SAMPLES), np.float32), SR)
    assert channels.shape == (0, 9, 128, 63) and scalars.shape == (0, 36)
    with pytest.raises(ValueError, match="16000"):
        compute_seed9_batch(np.zeros((2, N_SAMPLES), np.float32), 8000)
    with pytest.raises(ValueError, match="clips, samples"):
        compute_seed9_batch(np.zeros(N_SAMPLES, np.float32), SR)
    bad = np.zeros((3, N_SAMPLES), np.float32)
    bad[1, 5] = np.nan
    with pytest.raises(ValueError, match=r"clips \[1\]"):
        compute_seed9_batch(bad, SR)


def test_batch_rows_are_independent_and_padded():
    y = np.stack([_signal(seed=5), _signal(seed=6)])
    both = compute_seed9_batch(y, SR)
    alone = compute_seed9_batch(y[1:], SR)
    for a, b in zip(both, alone):
        np.testing.assert_array_equal(a[1], b[0])
    short = compute_seed9_batch(y[:, :9000], SR)
    padded = compute_seed9_batch(np.pad(y[:, :9000], ((0, 0), (0, N_SAMPLES - 9000))), SR)
    for a, b in zip(short, padded):
        np.testing.assert_array_equal(a, b)


def test_batch_helpers_match_their_definitions():
    """The batched path's rewritten pieces against the numpy/librosa calls they replace."""
    from lib.features.seed9 import batch

    rng = np.random.default_rng(11)
    x = np.abs(rng.standard_normal((3, 1000))).astype(np.float32)
    x[1, :600] = 0.0  # ties and zeros
    x[2] = np.round(x[2], 1)
    for got, q in zip(batch._percentiles(x, (90, 10)), (90, 10)):
        np.testing.assert_allclose(got, np.percentile(x, q, axis=1), rtol=1e-6)
    # LPC frames' autocorrelation without forming the frames
    import torch

    k = batch._constants(torch.device("cpu"))
    y = rng.standard_normal((2, N_SAMPLES))
    frames = librosa.util.frame(y, frame_length=400, hop_length=160, axis=-1) * k.hamming400[:, None]
    want = np.stack([np.einsum("cjf,cjf->cf", frames[:, : 400 - lag], frames[:, lag:]) for lag in range(13)], axis=-1)
    np.testing.assert_allclose(batch._frame_autocorrelation(y, k.lpc_lag_windows, 160, 400), want, rtol=1e-12, atol=1e-12)
    # tuning estimates of real spectra as librosa.estimate_tuning gives them
    mag = np.abs(librosa.stft(np.stack([_signal(seed=8), 0.1 * _signal(seed=9)]), n_fft=2048, hop_length=512))
    want = [np.argmin(np.abs(batch._TUNING_EDGES[:-1] - librosa.estimate_tuning(S=m, sr=SR, bins_per_octave=36)))
            for m in mag]
    np.testing.assert_array_equal(batch._tuning_index(mag.transpose(0, 2, 1), 2048, 36), want)
