"""On-device front ends (lib/models/frontend.py) against librosa and the cached ``log_mel`` feature.

Signals: a linear chirp (100 Hz to 0.45 sr) plus white noise, at 16 kHz and 8 kHz, 1 s and 2.3 s.
Measured max abs differences (float32): log-mel 8e-5 dB, its deltas 5e-6 dB, MFCC 5e-5,
PCEN 3e-6; the tolerances below leave room for other BLAS/FFT builds.
"""
from __future__ import annotations

import librosa
import numpy as np
import pytest
import scipy.signal
import torch

from lib.core.errors import ConfigError
from lib.features.log_mel import LogMel
from lib.models.frontend import FRONTENDS, LogMelFrontEnd, MFCCFrontEnd, PCENFrontEnd

CASES = [(16000, 1.0), (16000, 2.3), (8000, 1.0), (8000, 2.3)]
DB_TOL = 1e-3


def signal(sr: int, dur: float, seed: int = 0) -> np.ndarray:
    t = np.arange(int(sr * dur)) / sr
    noise = np.random.default_rng(seed).standard_normal(t.size)
    return (0.5 * scipy.signal.chirp(t, 100, dur, 0.45 * sr) + 0.05 * noise).astype(np.float32)


def run(name: str, y: np.ndarray, **params) -> np.ndarray:
    fe = FRONTENDS.build({"name": name, "params": params})
    with torch.no_grad():
        return fe(torch.from_numpy(y)[None])[0].numpy()


@pytest.mark.parametrize("sr,dur", CASES)
@pytest.mark.parametrize("extra", [{}, {"deltas": True}, {"fmin": 50.0, "fmax": "quarter"}])
def test_log_mel_equals_cached_feature(sr, dur, extra):
    extra = {k: (sr / 4 if v == "quarter" else v) for k, v in extra.items()}
    y = signal(sr, dur)
    settings = dict(n_mels=64, n_fft=512, hop_length=256, **extra)
    ref = LogMel(**settings)(y, sr)[0]
    out = run("log_mel", y, sample_rate=sr, **settings)
    assert out.shape == ref.shape and out.dtype == np.float32
    assert np.abs(out - ref).max() < DB_TOL


@pytest.mark.parametrize("name", ["log_mel", "mfcc"])
def test_db_floor_80_db_below_the_peak_as_librosa(name):
    """A loud low tone over near-silence spans more than 80 dB: librosa (and so the cache) floors
    each window at 80 dB below its peak (``power_to_db``'s default ``top_db``), as the front end."""
    sr = 8000
    t = np.arange(sr) / sr
    y = (0.9 * np.sin(2 * np.pi * 200 * t) + 1e-6 * np.random.default_rng(3).standard_normal(sr)).astype(np.float32)
    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=256, hop_length=80, n_mels=32)
    db = librosa.power_to_db(mel)
    assert db.max() - 10 * np.log10(mel.min()) > 90  # the floor matters here
    ref = db if name == "log_mel" else librosa.feature.mfcc(S=db, n_mfcc=20, norm="ortho")
    out = run(name, y, sample_rate=sr, n_fft=256, hop_length=80, n_mels=32)[0]
    assert np.abs(out - ref).max() < 5 * DB_TOL  # measured 1.5e-3 dB: float32 FFT bins 80 dB under a loud tone
    floorless = run(name, y, sample_rate=sr, n_fft=256, hop_length=80, n_mels=32, top_db=None)[0]
    assert np.abs(floorless - ref).max() > 5


def test_log_mel_magnitude_and_log1p():
    sr, y = 16000, signal(16000, 1.0)
    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=1024, hop_length=320, n_mels=40, power=1.0)
    out = run("log_mel", y, sample_rate=sr, n_fft=1024, hop_length=320, n_mels=40, power=1.0, scale="log1p")
    assert np.abs(out[0] - np.log1p(mel)).max() < 1e-4


@pytest.mark.parametrize("sr,dur", CASES)
def test_mfcc_matches_librosa(sr, dur):
    y = signal(sr, dur, seed=1)
    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=512, hop_length=256, n_mels=64)
    ref = librosa.feature.mfcc(S=librosa.power_to_db(mel), n_mfcc=20, dct_type=2, norm="ortho")
    out = run("mfcc", y, sample_rate=sr, n_mfcc=20, n_fft=512, hop_length=256, n_mels=64, deltas=True)
    assert out.shape == (3, 20, ref.shape[1])
    assert np.abs(out[0] - ref).max() < DB_TOL
    assert np.abs(out[1] - librosa.feature.delta(ref)).max() < DB_TOL
    assert np.abs(out[2] - librosa.feature.delta(ref, order=2)).max() < DB_TOL


@pytest.mark.parametrize("sr,dur", CASES)
def test_pcen_matches_librosa(sr, dur):
    y = signal(sr, dur, seed=2)
    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=512, hop_length=256, n_mels=64)
    ref = librosa.pcen(mel * 2 ** 31, sr=sr, hop_length=256)
    out = run("pcen", y, sample_rate=sr, n_fft=512, hop_length=256, n_mels=64, deltas=True)
    assert np.abs(out[0] - ref).max() < 1e-4
    assert np.abs(out[1] - librosa.feature.delta(ref)).max() < 1e-4
    assert np.abs(out[2] - librosa.feature.delta(ref, order=2)).max() < 1e-4


@pytest.mark.parametrize("samples", [2304, 8000, 16000, 36800, 36801])
@pytest.mark.parametrize("cls,bins", [(LogMelFrontEnd, 48), (MFCCFrontEnd, 13), (PCENFrontEnd, 48)])
def test_shapes(samples, cls, bins):
    kw = {"n_mfcc": 13} if cls is MFCCFrontEnd else {}
    for deltas, ch in ((False, 1), (True, 3)):
        fe = cls(sample_rate=16000, n_fft=400, hop_length=160, n_mels=48, deltas=deltas, **kw)
        out = fe(torch.randn(2, samples))
        assert out.shape == (2, ch, bins, 1 + samples // 160)


def test_deltas_need_nine_frames():
    fe = LogMelFrontEnd(sample_rate=16000, hop_length=256, deltas=True)
    with pytest.raises(ValueError, match="9 frames"):
        fe(torch.randn(1, 256 * 7))


@pytest.mark.parametrize("name", ["log_mel", "mfcc", "pcen"])
def test_float32_under_autocast(name):
    fe = FRONTENDS.build({"name": name, "params": {"sample_rate": 16000, "deltas": True}})
    x = torch.from_numpy(signal(16000, 1.0))[None]
    ref = fe(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fe(x.to(torch.bfloat16))
    assert out.dtype == torch.float32
    # the bf16 input is rounded, but the spectrogram itself is float32 (not bf16-coarse)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out32 = fe(x)
    assert out32.dtype == torch.float32 and torch.equal(out32, ref)


def test_normalisation_round_trips_and_applies():
    fe = LogMelFrontEnd(sample_rate=8000, n_mels=32, deltas=True)
    x = torch.from_numpy(signal(8000, 1.0))[None]
    raw = fe(x)
    assert fe.band_mean.shape == (3, 32, 1) and fe.band_std.shape == (3, 32, 1)
    mean = raw.mean(dim=(0, 3), keepdim=True)[0]
    std = raw.std(dim=(0, 3), keepdim=True)[0]
    fe.set_normalisation(mean, std)
    normed = fe(x)
    torch.testing.assert_close(normed, (raw - mean) / std)
    assert torch.allclose(normed.mean(dim=3), torch.zeros(1, 3, 32), atol=1e-4)
    state = fe.state_dict()
    assert set(state) == {"band_mean", "band_std"}
    fresh = LogMelFrontEnd(sample_rate=8000, n_mels=32, deltas=True)
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh(x), normed)
    fe.set_normalisation(1.0, 2.0)  # scalars broadcast
    torch.testing.assert_close(fe(x), (raw - 1.0) / 2.0)


def test_config_errors():
    with pytest.raises(ConfigError, match="fmax"):
        LogMelFrontEnd(sample_rate=16000, fmax=9000)
    with pytest.raises(ConfigError, match="fmax"):
        FRONTENDS.build({"name": "pcen", "params": {"sample_rate": 8000, "fmax": 4001}})
    with pytest.raises(ConfigError, match="fmin"):
        MFCCFrontEnd(sample_rate=8000, fmin=4000)
    with pytest.raises(ConfigError, match="scale"):
        LogMelFrontEnd(sample_rate=8000, scale="ln")
    with pytest.raises(ConfigError, match="n_mfcc"):
        MFCCFrontEnd(sample_rate=8000, n_mels=20, n_mfcc=40)
    with pytest.raises(ConfigError, match="front end"):
        FRONTENDS.build({"name": "logmel", "params": {}})
    assert FRONTENDS.names() == ["log_mel", "mfcc", "pcen"]


@pytest.mark.parametrize("name", ["log_mel", "mfcc"])
def test_example_norm_mean_cancels_a_fixed_device_response(name):
    """A fixed gain is a constant offset per band in dB: ``example_norm: mean`` removes it exactly
    (no floor), and a fixed colouring filter nearly (its response varies inside a band)."""
    y = signal(8000, 2.3)
    params = {"sample_rate": 8000, "top_db": None, "example_norm": "mean"}
    plain = run(name, y, **params)
    np.testing.assert_allclose(plain.mean(-1), 0, atol=1e-3)
    np.testing.assert_allclose(run(name, 4.0 * y, **params), plain, atol=1e-3)
    b, a = scipy.signal.butter(1, 1000, fs=8000)  # a gentle low-pass: a different device
    coloured = scipy.signal.lfilter(b, a, y).astype(np.float32)
    no_norm = {k: v for k, v in params.items() if k != "example_norm"}
    shift_raw = np.abs(run(name, coloured, **no_norm) - run(name, y, **no_norm)).mean()
    shift_norm = np.abs(run(name, coloured, **params) - plain).mean()
    assert shift_norm < 0.2 * shift_raw


def test_example_norm_mean_std_and_errors():
    out = run("log_mel", signal(16000, 1.0), sample_rate=16000, example_norm="mean_std")
    np.testing.assert_allclose(out.std(-1, ddof=1), 1, atol=1e-3)
    with pytest.raises(ConfigError, match="example_norm"):
        LogMelFrontEnd(sample_rate=16000, example_norm="cmvn")
