"""Waveform augmentations (lib.training.wave_augment) on generated signals: 8 x 16000 at 16 kHz."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from lib.core.errors import ConfigError
from lib.training.wave_augment import WAVE_AUGMENTS, WaveAugmenter

SR, B, N = 16000, 8, 16000
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def batch(device="cpu", freqs=None):
    """Sums of two tones per example (random frequencies 100 Hz .. 3 kHz) and soft targets (8, 5)."""
    rng = np.random.default_rng(0)
    t = np.arange(N) / SR
    rows = []
    for i in range(B):
        f1, f2 = freqs if freqs is not None else rng.uniform(100, 3000, 2)
        rows.append(0.3 * np.sin(2 * np.pi * f1 * t + i) + 0.1 * (i + 1) / B * np.sin(2 * np.pi * f2 * t))
    wave = torch.as_tensor(np.stack(rows), dtype=torch.float32, device=device)
    target = torch.as_tensor(rng.uniform(0, 1, (B, 5)), dtype=torch.float32, device=device)
    return wave, target


def run(name, seed=0, **params):
    wave, target = batch()
    aug = WaveAugmenter([{"name": name, "params": {"p": 1.0, **params}}], seed=seed)
    out, tout = aug(wave, target)
    return wave, target, out, tout, aug


def db(x):
    return 20 * np.log10(x)


def rms(x):
    return x.pow(2).mean(-1).sqrt()


def snr_db(clean, out):
    return db((rms(clean) / rms(out - clean)).numpy())


@pytest.fixture
def noise_folder(tmp_path):
    rng = np.random.default_rng(1)
    sf.write(tmp_path / "long.wav", (0.1 * rng.standard_normal(3 * SR)).astype(np.float32), SR)
    sf.write(tmp_path / "short.wav", (0.2 * rng.standard_normal(SR // 3)).astype(np.float32), 8000)  # resampled
    return tmp_path


def all_entries():
    """One entry per augmentation, with the params each needs."""
    return {
        "gain": {}, "noise": {"color": "pink"}, "background": {},
        "time_shift": {"sample_rate": SR, "max_seconds": 0.1}, "polarity": {},
        "filter": {"sample_rate": SR, "kind": "bandpass", "min_hz": 300, "max_hz": 3000},
        "time_stretch": {}, "pitch_shift": {"sample_rate": SR}, "mixup": {"alpha": 0.4},
        "eq": {"sample_rate": SR}, "band_limit": {"sample_rate": SR, "low_hz": [50, 200], "high_hz": [2000, 6000]},
    }


def test_every_registered_name_is_covered():
    assert sorted(all_entries()) == WAVE_AUGMENTS.names()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(all_entries()))
def test_p1_keeps_shape_dtype_device_and_targets(name, device):
    wave, target = batch(device)
    out, tout = WaveAugmenter([{"name": name, "params": {"p": 1.0, **all_entries()[name]}}], seed=0)(wave, target)
    assert out.shape == wave.shape and out.dtype == torch.float32 and out.device == wave.device
    assert tout.shape == target.shape and tout.dtype == target.dtype and tout.device == target.device
    assert not torch.equal(out, wave)
    if name != "mixup":
        assert torch.equal(tout, target)


@pytest.mark.parametrize("name", sorted(all_entries()))
def test_p0_is_bit_identical(name):
    wave, target = batch()
    w0, t0 = wave.clone(), target.clone()
    out, tout = WaveAugmenter([{"name": name, "params": {"p": 0.0, **all_entries()[name]}}], seed=0)(wave, target)
    assert torch.equal(out, w0) and torch.equal(tout, t0)


def test_per_example_decision_leaves_others_untouched():
    wave, target = batch()
    out, _ = WaveAugmenter([{"name": "gain", "params": {"p": 0.5, "min_db": 3, "max_db": 6}}], seed=4)(wave, target)
    same = [torch.equal(out[i], wave[i]) for i in range(B)]
    assert any(same) and not all(same)


def test_a_per_example_augmentation_computes_the_chosen_rows_only(monkeypatch, noise_folder):
    """Noise on p = 0.3 of the batch generates and shapes noise for those rows only, and the
    others come back bit-identical; in-batch mixing (``background`` without a folder) still sees
    the whole batch, ``background`` from a folder the chosen rows."""
    from lib.training import wave_augment

    seen = {}
    for cls in (wave_augment.Noise, wave_augment.Background):
        apply = cls.apply
        monkeypatch.setattr(cls, "apply", lambda self, w, m, rng, apply=apply, cls=cls: (
            seen.setdefault(cls.__name__, []).append((len(w), int(m.sum()))), apply(self, w, m, rng))[1])
    wave, target = batch()
    out, _ = WaveAugmenter([{"name": "noise", "params": {"p": 0.3, "color": "pink"}}], seed=3)(wave, target)
    changed = [not torch.equal(out[i], wave[i]) for i in range(B)]
    assert seen["Noise"] == [(sum(changed), sum(changed))] and 0 < sum(changed) < B
    WaveAugmenter([{"name": "background", "params": {"p": 0.3}}], seed=3)(wave, target)
    assert seen["Background"][0][0] == B and 0 < seen["Background"][0][1] < B
    entry = {"name": "background", "params": {"p": 0.3, "folder": str(noise_folder), "sample_rate": SR}}
    out, _ = WaveAugmenter([entry], seed=3)(wave, target)
    changed = sum(not torch.equal(out[i], wave[i]) for i in range(B))
    assert seen["Background"][1] == (changed, changed) and 0 < changed < B


def test_fixed_seed_reproduces(noise_folder):
    entries = [{"name": n, "params": {"p": 0.7, **p}} for n, p in all_entries().items()]
    entries.append({"name": "background", "params": {"p": 1.0, "folder": str(noise_folder), "sample_rate": SR}})
    a = WaveAugmenter(entries, seed=7)(*batch())
    b = WaveAugmenter(entries, seed=7)(*batch())
    c = WaveAugmenter(entries, seed=8)(*batch())
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_gain_rms_ratio_in_range():
    wave, _, out, _, _ = run("gain", min_db=-9, max_db=-3)
    ratio = db((rms(out) / rms(wave)).numpy())
    assert np.all((ratio >= -9 - 1e-3) & (ratio <= -3 + 1e-3)) and np.ptp(ratio) > 0.5  # drawn per example


@pytest.mark.parametrize("color", ["white", "pink"])
def test_noise_snr_in_range(color):
    wave, _, out, _, _ = run("noise", color=color, min_snr_db=5, max_snr_db=15)
    snr = snr_db(wave, out)
    assert np.all((snr >= 4.5) & (snr <= 15.5)) and np.ptp(snr) > 1
    spec = torch.fft.rfft(out - wave).abs().pow(2).mean(0)  # Hz bins (1 s at 16 kHz)
    low, high = spec[50:500].mean(), spec[5000:7500].mean()
    assert (low / high > 10) if color == "pink" else (0.5 < low / high < 2)


def test_background_in_batch_snr_in_range():
    wave, target, out, tout, _ = run("background", min_snr_db=6, max_snr_db=12)
    snr = snr_db(wave, out)
    assert np.all((snr >= 5.5) & (snr <= 12.5))
    assert torch.equal(tout, target)


def test_background_folder_snr_in_range(noise_folder):
    wave, target, out, tout, _ = run("background", min_snr_db=0, max_snr_db=20, folder=str(noise_folder), sample_rate=SR)
    snr = snr_db(wave, out)
    assert np.all((snr >= -0.5) & (snr <= 20.5)) and torch.equal(tout, target)
    power = torch.fft.rfft(out - wave).abs().pow(2)  # the files' noise (the 8 kHz one up to 4 kHz), not the tones (< 3 kHz)
    assert torch.all(power[:, 3200:3900].sum(-1) / power.sum(-1) > 0.04)


def test_background_folder_errors(tmp_path):
    with pytest.raises(ConfigError, match=rf"augment.waveform\[0\] \(background\): folder {tmp_path} holds no audio"):
        WaveAugmenter([{"name": "background", "params": {"folder": str(tmp_path), "sample_rate": SR}}])
    with pytest.raises(ConfigError, match="sample_rate"):
        WaveAugmenter([{"name": "background", "params": {"folder": str(tmp_path)}}])


@pytest.mark.parametrize("mode", ["roll", "zero"])
def test_time_shift_moves_by_whole_samples(mode):
    wave, _, out, _, _ = run("time_shift", sample_rate=SR, max_seconds=0.05, mode=mode)
    bound = int(0.05 * SR)
    shifts = []
    for i in range(B):
        found = []
        for s in range(-bound, bound + 1):
            ref = torch.roll(wave[i], s)
            if mode == "zero":
                ref = ref.clone()
                if s > 0:
                    ref[:s] = 0
                elif s < 0:
                    ref[s:] = 0
            if torch.equal(out[i], ref):
                found.append(s)
        assert found, f"example {i} is not a shift within {bound} samples"
        shifts.append(found[0])
    assert len(set(shifts)) > 1


def test_polarity_negates_exactly():
    wave, _, out, _, _ = run("polarity")
    assert torch.equal(out, -wave)


def test_lowpass_removes_high_tone_keeps_low():
    wave, target = batch(freqs=(200.0, 6000.0))
    aug = WaveAugmenter([{"name": "filter", "params": {"p": 1, "kind": "lowpass", "min_hz": 800, "max_hz": 1500,
                                                        "sample_rate": SR}}])
    out, _ = aug(wave, target)
    before, after = torch.fft.rfft(wave).abs(), torch.fft.rfft(out).abs()  # 1 Hz bins
    assert np.all(db((after[:, 6000] / before[:, 6000]).numpy()) < -15)
    assert np.all(np.abs(db((after[:, 200] / before[:, 200]).numpy())) < 1)


def test_eq_gains_stay_within_max_db_and_differ_per_example():
    wave, target = batch(freqs=(300.0, 3000.0))
    aug = WaveAugmenter([{"name": "eq", "params": {"p": 1, "max_db": 6, "n_bands": 5, "sample_rate": SR}}], seed=3)
    out, _ = aug(wave, target)
    before, after = torch.fft.rfft(wave).abs(), torch.fft.rfft(out).abs()  # 1 Hz bins
    gains = db((after[:, [300, 3000]] / before[:, [300, 3000]]).numpy())
    assert np.all(np.abs(gains) <= 6.01)
    assert np.ptp(gains[:, 0]) > 1 and np.abs(gains[:, 0] - gains[:, 1]).max() > 1  # per example and per band


def test_band_limit_keeps_the_band_and_removes_outside():
    wave, target = batch(freqs=(1000.0, 7000.0))
    aug = WaveAugmenter([{"name": "band_limit", "params": {"p": 1, "low_hz": [50, 100], "high_hz": [2000, 3000],
                                                            "width": 0.5, "sample_rate": SR}}])
    out, _ = aug(wave, target)
    before, after = torch.fft.rfft(wave).abs(), torch.fft.rfft(out).abs()
    assert np.all(np.abs(db((after[:, 1000] / before[:, 1000]).numpy())) < 0.01)
    assert np.all(db((after[:, 7000] / before[:, 7000]).clamp_min(1e-12).numpy()) < -60)


@pytest.mark.parametrize("entry, message", [
    ({"name": "eq", "params": {"max_db": -1}}, "max_db must be >= 0"),
    ({"name": "band_limit", "params": {"low_hz": [500, 900], "high_hz": [300, 400]}}, "must lie below"),
    ({"name": "band_limit", "params": {"high_hz": [300, 9000]}}, r"high_hz \[300, 9000\] must lie below the Nyquist "
                                                                 r"frequency, sample_rate / 2 = 8000 Hz"),
    ({"name": "band_limit", "params": {"low_hz": 100}}, r"low_hz must be a pair \[lo, hi\]"),  # a TypeError before
    ({"name": "band_limit", "params": {"low_hz": [200, 100]}}, r"0 < lo <= hi \(Hz\) \(got \[200, 100\]\)"),
])
def test_device_augment_errors(entry, message):
    with pytest.raises(ConfigError, match=message):
        WaveAugmenter([entry], sample_rate=SR)


def test_time_stretch_keeps_length_and_changes():
    wave, _, out, _, _ = run("time_stretch", min_rate=0.8, max_rate=0.9)
    assert out.shape == wave.shape and not torch.allclose(out, wave, atol=1e-3)


def centroid(x):
    """Power-weighted spectral centroid in Hz (the magnitude-weighted one is swamped by the phase
    vocoder's spectral smear)."""
    mag = torch.fft.rfft(x).abs().pow(2)
    f = torch.fft.rfftfreq(x.shape[-1], 1 / SR)
    return (mag * f).sum(-1) / mag.sum(-1)


@pytest.mark.parametrize("lo,hi,up", [(3, 4, True), (-4, -3, False)])
def test_pitch_shift_moves_centroid(lo, hi, up):
    wave, _, out, _, _ = run("pitch_shift", min_semitones=lo, max_semitones=hi, sample_rate=SR)
    assert out.shape == wave.shape
    ratio = (centroid(out) / centroid(wave)).numpy()
    assert np.all(ratio > 1.1) if up else np.all(ratio < 0.9)


@pytest.mark.parametrize("labels", ["mix", "union"])
def test_mixup_targets_follow_the_same_lam(labels):
    wave, target, out, tout, aug = run("mixup", alpha=0.4, labels=labels)
    lam = aug.augments[0].last_lam
    for i in range(B):  # recover the partner of each example from the waveform
        j = min(range(B), key=lambda k: (out[i] - lam * wave[i] - (1 - lam) * wave[k]).abs().max().item())
        assert torch.allclose(out[i], lam * wave[i] + (1 - lam) * wave[j], atol=1e-6)
        want = lam * target[i] + (1 - lam) * target[j] if labels == "mix" else torch.maximum(target[i], target[j])
        assert torch.allclose(tout[i], want, atol=1e-6)


def test_config_errors_name_entry_and_parameter():
    ok = {"name": "gain", "params": {}}
    with pytest.raises(ConfigError, match=r"augment.waveform\[2\] \(noise\): min_snr_db must be <= max_snr_db"):
        WaveAugmenter([ok, ok, {"name": "noise", "params": {"min_snr_db": 20, "max_snr_db": 10}}])
    with pytest.raises(ConfigError, match=r"augment.waveform\[0\]: unknown waveform augmentation 'nosie'.*did you mean 'noise'"):
        WaveAugmenter([{"name": "nosie", "params": {}}])
    with pytest.raises(ConfigError, match=r"augment.waveform\[0\] \(gain\): .*unexpected keyword argument 'min_dB'"):
        WaveAugmenter([{"name": "gain", "params": {"min_dB": 1}}])
    with pytest.raises(ConfigError, match=r"augment.waveform\[0\] \(time_shift\): sample_rate \(Hz\) is required"):
        WaveAugmenter([{"name": "time_shift", "params": {}}])
    with pytest.raises(ConfigError, match=r"augment.waveform\[0\] \(filter\): max_hz must be < sample_rate / 2"):
        WaveAugmenter([{"name": "filter", "params": {"sample_rate": SR, "min_hz": 100, "max_hz": 9000}}])
    with pytest.raises(ConfigError, match=r"augment.waveform\[0\] \(mixup\): p must be in \[0, 1\]"):
        WaveAugmenter([{"name": "mixup", "params": {"p": 1.5}}])
    with pytest.raises(ConfigError, match=r"augment.waveform\[0\] \(noise\): color must be white or pink"):
        WaveAugmenter([{"name": "noise", "params": {"color": "brown"}}])
