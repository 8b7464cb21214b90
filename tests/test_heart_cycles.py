"""Heart-cycle scalars (lib/features/heart_cycles.py): generated beats of known intervals, silence
and noise, hand-annotated real heart-sound recordings, real heart-valve clips, and the ``log_mel``
feature set with ``heart_cycles: true``."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import HEART_SOUND, HEART_VALVE

from lib.features import FEATURES
from lib.features.heart_cycles import (HEART_CYCLE_SCALARS, HEART_CYCLE_UNITS, detect_s1_s2, envelope,
                                       heart_cycle_scalars, heart_rate, remove_spikes)


def _require(folder, what: str):
    """The real data folder, or skip the test with a clear message."""
    if not (folder / "train.csv").exists():
        pytest.skip(f"real data not found at {folder} ({what}; see ../shared/data/README.md)")
    return folder


def beats(sr: int, rr: float, systole: float, seconds: float = 10.0, noise: float = 0.05, seed: int = 0,
          s2_gain: float = 0.6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A generated phonocardiogram ``(samples,)`` float32: S1 (50 ms Hann-windowed 60-Hz tone) every
    ``rr`` s from 0.23 s, S2 (40 ms at 110 Hz, ``s2_gain`` times as loud) ``systole`` s after each,
    plus white noise of std ``noise``; with the true S1 and S2 onsets (s)."""
    rng = np.random.default_rng(seed)
    y = np.zeros(int(seconds * sr))
    s1 = np.arange(0.23, seconds - rr, rr)
    for onsets, hz, gain, length in ((s1, 60.0, 1.0, 0.05), (s1 + systole, 110.0, s2_gain, 0.04)):
        n = int(length * sr)
        burst = gain * np.hanning(n) * np.sin(2 * np.pi * hz * np.arange(n) / sr)
        for t in onsets:
            y[int(t * sr):int(t * sr) + n] += burst
    y += noise * rng.standard_normal(len(y))
    return y.astype(np.float32), s1, s1 + systole


def _named(v: np.ndarray) -> dict:
    return dict(zip(HEART_CYCLE_SCALARS, v.tolist()))


# --- generated beats ---------------------------------------------------------------------------

@pytest.mark.parametrize("sr", [2000, 8000])
@pytest.mark.parametrize("rr,systole", [(0.8, 0.30), (0.5, 0.22), (1.2, 0.35)])
def test_generated_beats_give_their_rate_systole_and_diastole(sr, rr, systole):
    y, _, _ = beats(sr, rr, systole)
    v = _named(heart_cycle_scalars(y, sr))
    assert abs(v["hc_heart_rate_bpm"] - 60.0 / rr) < 3.0
    assert abs(v["hc_rr_mean_s"] - rr) < 0.02
    assert abs(v["hc_systole_mean_s"] - systole) < 0.03
    assert abs(v["hc_diastole_mean_s"] - (rr - systole)) < 0.03
    assert v["hc_sys_dia_ratio"] == pytest.approx(v["hc_systole_mean_s"] / v["hc_diastole_mean_s"], rel=1e-5)
    assert v["hc_n_cycles"] >= int(10.0 / rr) - 3 and v["hc_coverage"] > 0.7 and v["hc_periodicity"] > 0.5


@pytest.mark.parametrize("rr,systole", [(0.8, 0.30), (0.5, 0.22)])
def test_s1_and_s2_are_labelled_right(rr, systole):
    """Each detected cycle's S1 lies at a true S1 and its S2 at the true S2 after it (the
    envelope's frames are 10 ms; a burst's energy peaks 20-25 ms after its onset), even when S2
    is the louder; nearly every true sound is found with its label."""
    for s2_gain in (0.6, 1.5):
        y, s1, s2 = beats(2000, rr, systole, s2_gain=s2_gain, seed=1)
        env, rate = envelope(y, 2000)
        hr = heart_rate(env, rate)
        found = detect_s1_s2(env, rate, hr.bpm, hr.systole_s)
        cyc = found.cycles
        assert cyc.shape == (len(s1) - 1, 3) or cyc.shape == (len(s1), 3)
        nearest = np.abs(cyc[:, :1] - s1[None] - 0.02).argmin(1)
        np.testing.assert_allclose(cyc[:, 0], s1[nearest] + 0.02, atol=0.03)
        np.testing.assert_allclose(cyc[:, 1], s2[nearest] + 0.02, atol=0.03)
        for true, got in ((s1, found.s1), (s2, found.s2)):  # at most one stray sound at an end
            assert (np.abs(true[:, None] - got[None] + 0.02).min(1) < 0.03).mean() > 0.9
            assert (np.abs(got[:, None] - true[None] - 0.02).min(1) < 0.03).sum() >= len(got) - 1


def test_beats_with_jitter_murmur_and_a_knock():
    """Heart-rate variability, a systolic murmur (noise between S1 and S2) and a loud knock: the
    rate and intervals hold, and the knock's spike is removed (Schmidt et al. 2010)."""
    sr, rr, systole = 2000, 0.75, 0.3
    y, s1, _ = beats(sr, rr, systole, seconds=12.0, seed=2)
    rng = np.random.default_rng(3)
    for t in s1:  # murmur: band noise from 60 to 240 ms after S1, a third of S1's level
        i, n = int((t + 0.06) * sr), int(0.18 * sr)
        y[i:i + n] += 0.12 * rng.standard_normal(n).astype(np.float32)
    y[int(5.0 * sr):int(5.0 * sr) + 6] += np.array([8, -9, 7, -6, 5, -4], np.float32)  # a knock
    cleaned, n_spikes = remove_spikes(y, sr)
    assert n_spikes >= 1 and np.abs(cleaned).max() < 2.0 and cleaned.shape == y.shape
    v = _named(heart_cycle_scalars(y, sr))
    assert abs(v["hc_heart_rate_bpm"] - 80.0) < 3.0
    assert abs(v["hc_systole_mean_s"] - systole) < 0.03 and abs(v["hc_diastole_mean_s"] - (rr - systole)) < 0.03


@pytest.mark.parametrize("sr", [2000, 8000])
def test_silence_noise_and_short_windows_give_finite_values(sr):
    rng = np.random.default_rng(0)
    silent = heart_cycle_scalars(np.zeros(5 * sr, np.float32), sr)
    assert silent.shape == (len(HEART_CYCLE_SCALARS),) and silent.dtype == np.float32
    assert (silent == 0).all()  # the documented fallback: everything 0
    noise = _named(heart_cycle_scalars(rng.standard_normal(5 * sr).astype(np.float32), sr))
    assert np.isfinite(list(noise.values())).all() and noise["hc_periodicity"] < 0.3
    for y in (np.zeros(10, np.float32), np.ones(sr, np.float32), rng.standard_normal(int(0.3 * sr)),
              np.full(sr, np.nan, np.float32)):
        v = heart_cycle_scalars(y, sr)
        assert np.isfinite(v).all() and v[HEART_CYCLE_SCALARS.index("hc_n_cycles")] == 0
    assert len(envelope(np.zeros(10), sr)[0]) == 0


def test_names_units_and_errors():
    assert HEART_CYCLE_SCALARS == list(HEART_CYCLE_UNITS) and len(HEART_CYCLE_SCALARS) == 11
    assert all(name.startswith("hc_") for name in HEART_CYCLE_SCALARS)
    with pytest.raises(ValueError, match="one channel"):
        envelope(np.zeros((2, 100)), 2000)
    with pytest.raises(ValueError, match="under 200 Hz"):
        envelope(np.zeros(100), 100)
    with pytest.raises(ValueError, match="method"):
        envelope(np.zeros(100), 2000, method="teager")
    with pytest.raises(ValueError, match="min_bpm"):
        heart_rate(np.zeros(100), 100.0, min_bpm=200, max_bpm=40)
    with pytest.raises(ValueError, match="rate"):
        detect_s1_s2(np.zeros(100), 0.0, 60.0)
    y, _, _ = beats(2000, 0.8, 0.3)  # the Hilbert envelope gives the same intervals
    v = _named(heart_cycle_scalars(y, 2000, method="hilbert"))
    assert abs(v["hc_heart_rate_bpm"] - 75.0) < 3.0 and abs(v["hc_systole_mean_s"] - 0.3) < 0.03


# --- real recordings ---------------------------------------------------------------------------

# Hand annotation of six heart-sound recordings (PhysioNet 2016, 2 kHz) and one heart rate: each
# window was plotted (band-passed 25-400 Hz waveform above its Shannon envelope, 0.1-s grid,
# 8-s and zoomed 4-s views, without the detector's marks), the S1 and S2 times were read off by
# eye (the b recordings' sharp peaks to about 10 ms; the f recordings' wide bursts at their
# centres, to about 30 ms), and: heart rate = 60 / ((last S1 - first S1) / number of cycles
# between them); systole = mean S1 -> S2; diastole = RR - systole. S1 is the sound that starts
# the shorter interval. Tuples: (record, start s, end s, bpm, systole s, diastole s).
HAND_ANNOTATED = [
    ("b0118", 0, 8, 53.2, 0.350, 0.780),  # S1 0.40 .. 7.17 (6 cycles); faint S2 0.35 s after each
    ("b0262", 0, 8, 68.6, 0.300, 0.575),  # abnormal; S1 0.21 .. 7.21 (8 cycles), an extra sound at 6.89
    ("b0026", 0, 8, 82.8, 0.310, 0.415),  # S1 0.46 .. 7.71 (10 cycles), systoles 0.29-0.32
    ("b0106", 0, 8, 101.7, 0.255, 0.335),  # abnormal; S1 0.11 .. 7.19 (12 cycles), a knock at 7.93
    ("f0006", 10, 18, 88.0, 0.300, 0.380),  # wide bursts, S1 10.42 .. 17.90 (11 cycles)
    ("f0107", 10, 18, 80.0, 0.265, 0.485),  # wide bursts, S1 11.00 .. 17.75 (9 cycles)
    ("f0050", 3, 8, 125.0, None, None),  # abnormal, 125 bpm, intervals 0.26 / 0.22 s: which is
    # systole cannot be told by the rule (the wide burst -> narrow sound interval is the longer)
]


@pytest.mark.parametrize("record,start,end,bpm,systole,diastole", HAND_ANNOTATED,
                         ids=[h[0] for h in HAND_ANNOTATED])
def test_hand_annotated_heart_sound_recordings(record, start, end, bpm, systole, diastole):
    folder = _require(HEART_SOUND, "heart-sound")
    y, sr = sf.read(str(folder / "audio" / f"{record}.wav"), dtype="float32")
    v = _named(heart_cycle_scalars(y[int(start * sr):int(end * sr)], sr))
    assert abs(v["hc_heart_rate_bpm"] - bpm) < 5.0, v
    assert abs(60.0 / v["hc_rr_mean_s"] - bpm) < 5.0, v
    if systole is not None:
        assert abs(v["hc_systole_mean_s"] - systole) < 0.04, v
        assert abs(v["hc_diastole_mean_s"] - diastole) < 0.04, v
        assert v["hc_n_cycles"] >= 5 and v["hc_coverage"] > 0.6


def test_heart_sound_windows_are_finite_and_mostly_physiological():
    """Every 5-s window (every 2.5 s, as configs/data/heart_sound.yaml) of 40 recordings of both
    databases: finite values, and a heart rate in 40-200 bpm with a detected cycle in most."""
    folder = _require(HEART_SOUND, "heart-sound")
    table = pd.read_csv(folder / "train.csv")
    rows = []
    for record in pd.concat([g.iloc[::12] for _, g in table.groupby("database")]).record:
        y, sr = sf.read(str(folder / "audio" / f"{record}.wav"), dtype="float32")
        for start in np.arange(0.0, len(y) / sr - 5.0 + 1e-9, 2.5)[:4]:
            rows.append(heart_cycle_scalars(y[int(start * sr):int((start + 5) * sr)], sr))
    v = pd.DataFrame(rows, columns=HEART_CYCLE_SCALARS)
    assert len(v) > 60 and np.isfinite(v.to_numpy()).all()
    assert v.hc_heart_rate_bpm.between(40, 200).mean() > 0.95 and (v.hc_n_cycles > 0).mean() > 0.9
    assert v.hc_sys_dia_ratio[v.hc_n_cycles > 0].median() < 1.0
    assert 55 < v.hc_heart_rate_bpm.median() < 95


def test_heart_valve_clips_at_8khz():
    """Short heart-valve clips (8 kHz, 1.2-4 s): finite everywhere; the normal ones' median rate
    and systole plausible."""
    folder = _require(HEART_VALVE, "heart-valve")
    table = pd.read_csv(folder / "train.csv").iloc[::10]
    rows = []
    for name in table.filename:
        y, sr = sf.read(str(folder / "audio" / name), dtype="float32")
        assert sr == 8000
        rows.append(heart_cycle_scalars(y, sr))
    v = pd.DataFrame(rows, columns=HEART_CYCLE_SCALARS, index=table.label.to_numpy())
    assert np.isfinite(v.to_numpy()).all()
    normal = v.loc["N"]
    assert 55 < normal.hc_heart_rate_bpm.median() < 100 and 0.2 < normal.hc_systole_mean_s.median() < 0.4


# --- the log_mel feature set -------------------------------------------------------------------

def test_log_mel_with_heart_cycles_returns_the_scalars():
    y, _, _ = beats(2000, 0.8, 0.3, seconds=5.0)
    params = {"n_mels": 48, "n_fft": 256, "hop_length": 40, "fmin": 20, "fmax": 1000}
    plain = FEATURES.build({"name": "log_mel", "params": params})
    cycles = FEATURES.build({"name": "log_mel", "params": dict(params, heart_cycles=True)})
    assert plain.scalar_names == [] and "heart_cycles" not in plain.settings  # old caches keep their key
    assert cycles.scalar_names == HEART_CYCLE_SCALARS and cycles.settings["heart_cycles"] is True
    spec0, sc0 = plain(y, 2000)
    spec, sc = cycles(y, 2000)
    assert sc0.shape == (0,) and sc.shape == (len(HEART_CYCLE_SCALARS),) and sc.dtype == np.float32
    np.testing.assert_array_equal(spec, spec0)
    np.testing.assert_array_equal(sc, heart_cycle_scalars(y, 2000))
    assert abs(sc[HEART_CYCLE_SCALARS.index("hc_heart_rate_bpm")] - 75.0) < 3.0
    assert np.isfinite(cycles(np.zeros(10000, np.float32), 2000)[1]).all()  # stage 01's silent probe


def test_hgb_cycles_config_uses_the_heart_cycle_set():
    from conftest import ROOT
    from lib.components import load_experiment

    cfg = load_experiment(ROOT / "configs" / "heart_sound" / "hgb_cycles.yaml")
    base = load_experiment(ROOT / "configs" / "heart_sound" / "hgb.yaml")
    assert cfg["features"]["params"]["heart_cycles"] is True
    assert cfg["features"]["set"] != base["features"]["set"] and cfg["model"] == base["model"]
    assert {k: v for k, v in cfg["features"]["params"].items() if k != "heart_cycles"} == base["features"]["params"]
