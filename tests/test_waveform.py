"""The waveform path: the waveform cache of stage 01, crops at any offset and their padding, the
front end against the cached log-mel, test-time augmentation, checkpoints that carry their front
end, and the config checks (real heart-valve recordings where the data is there, generated
signals otherwise)."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import ROOT, stage

from lib.components import load_competition, load_experiment
from lib.core.errors import ConfigError
from lib.core.paths import Outputs
from lib.data import audio
from lib.data.prepare import prepare
from lib.inputs import WaveData
from lib.inputs import WindowData, load_inputs
from lib.features.cache import build_feature_set, load_features
from lib.inference.infer import load_fold_models
from lib.inference.predict import predict_logits, predict_recordings
from lib.models import build_model
from lib.runs.experiment import train_experiment

CPU = torch.device("cpu")
HV_LOG_MEL = {"n_mels": 64, "n_fft": 256, "hop_length": 80}  # configs/heart_valve/cnn.yaml's


def _experiment(tmp_path, body: dict, name: str = "exp") -> dict:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body))
    return load_experiment(path)


def _wave_experiment(tmp_path, **extra) -> dict:
    return _experiment(tmp_path, {"features": {"name": "waveform", "set": "wave", **extra.pop("features", {})},
                                  "frontend": {"name": "log_mel", "params": HV_LOG_MEL},
                                  "model": {"name": "cnn", "params": {"channels": [4, 8], "convs_per_block": 1,
                                                                      "head_hidden": 8}},
                                  "train": {"epochs": 2, "batch_size": 8, "device": "cpu"}, **extra}, "wave")


@pytest.fixture
def hv(heart_valve_subset, tmp_path) -> Outputs:
    """Stage 00 run on the real heart-valve subset."""
    out = Outputs(tmp_path / "out")
    prepare(load_competition(heart_valve_subset / "heart_valve.yaml"), out.root)
    return out


def _generated(pad: str, sr: int = 100, clip_s: float = 0.1) -> tuple[WaveData, list[np.ndarray]]:
    """WaveData over four generated recordings of 15, 10, 7 and 1 samples (windows of 10)."""
    rng = np.random.default_rng(0)
    ys = [rng.standard_normal(n).astype(np.float32) for n in (15, 10, 7, 1)]
    grid = np.concatenate([np.column_stack([np.full(len(st), i), st]) for i, y in enumerate(ys)
                           for st in [audio.window_starts(len(y) / sr, clip_s, 0.02)]])
    offsets = np.concatenate([[0], np.cumsum([len(y) for y in ys])])
    manifest = {"sample_rate": sr, "clip_seconds": clip_s, "pad": pad}
    return WaveData(torch.from_numpy(np.concatenate(ys)), offsets, grid, manifest, len(ys)), ys


def test_random_crops_cover_every_offset_within_the_recording():
    data, ys = _generated("zero")
    rng = np.random.default_rng(1)
    items = data.sample_windows(np.repeat(np.arange(4), 500), rng)
    starts = {r: set(items[items[:, 0] == r, 1].tolist()) for r in range(4)}
    assert starts[0] == set(range(6))  # 15 samples, windows of 10: every offset 0..5, none beyond
    assert starts[1] == starts[2] == starts[3] == {0}  # no longer than a window: from the start, padded
    crops = data.crops(items).numpy()
    for (r, s), crop in zip(items[:50], crops):
        assert np.array_equal(crop, audio.fix_length(ys[r][s:s + 10], 10, "zero"))


def test_windows_inside_their_recording_are_cut_alike_with_or_without_padding_in_the_batch():
    """A batch of windows that all lie inside their recording (the fast path: one slice each)
    equals the same windows cut together with one that needs padding (the general gather)."""
    data, ys = _generated("zero")
    inside = np.array([[0, 0], [0, 5], [0, 3], [0, 5]])
    fast = data.crops(inside).numpy()
    assert np.array_equal(fast, data.crops(np.vstack([inside, [[2, 0]]])).numpy()[:-1])
    assert [np.array_equal(c, ys[0][s:s + 10]) for (_, s), c in zip(inside, fast)] == [True] * 4
    assert fast.dtype == np.float32 and data.crops(inside[:0]).shape == (0, 10)


@pytest.mark.parametrize("pad", audio.PAD_MODES)
def test_grid_windows_equal_cut_windows(pad):
    data, ys = _generated(pad)
    items, owner = data.windows_of(np.arange(4))
    crops = data.crops(items).numpy()
    for r, y in enumerate(ys):
        starts = audio.window_starts(len(y) / 100, 0.1, 0.02)
        assert np.array_equal(crops[owner == r], audio.cut_windows(y, 100, starts, 0.1, pad))


def test_waveform_cache_holds_whole_recordings(hv, tmp_path):
    comp, table = hv.load_competition(), hv.load_split("train")
    for dtype, tol in (("float32", 0.0), ("float16", 2.0 ** -11)):
        section = {"name": "waveform", "set": f"wave_{dtype}", "params": {}, "dtype": dtype}
        m = build_feature_set(hv, section, workers=2)
        wave, offsets, grid, _ = load_features(hv, section["set"], "train", table=table)
        assert m["kind"] == "waveform" and m["sample_rate"] == 8000 and wave.dtype == dtype
        for i, path in enumerate(table["path"]):
            y, _ = audio.load(path)
            assert np.abs(wave[offsets[i]:offsets[i + 1]].astype(np.float32) - y).max() <= tol
        data = load_inputs(hv, {"features": section}, "train", table, comp, CPU)
        items, owner = data.windows_of(np.arange(len(table)))
        assert len(items) == len(grid) > len(table)  # recordings of 1.2-4 s: several 1.5-s windows
        crops = data.crops(items).numpy()
        for i in (0, len(table) // 2, len(table) - 1):
            y, sr = audio.load(table["path"][i])
            want = audio.cut_windows(y, sr, grid[grid[:, 0] == i, 1], 1.5, "repeat")
            assert np.abs(crops[owner == i] - want).max() <= tol
    # another rate: each file resampled explicitly from its native rate, lengths as librosa gives them
    build_feature_set(hv, {"name": "waveform", "set": "wave4k", "params": {"sample_rate": 4000}}, workers=1)
    wave, offsets, _, m = load_features(hv, "wave4k", "train")
    y, _ = audio.load(table["path"][3], 4000)
    assert m["sample_rate"] == 4000 and np.array_equal(wave[offsets[3]:offsets[4]], y)


def test_front_end_equals_cached_log_mel(hv):
    comp, table = hv.load_competition(), hv.load_split("train")
    build_feature_set(hv, {"name": "log_mel", "set": "lm", "params": HV_LOG_MEL}, workers=2)
    build_feature_set(hv, {"name": "waveform", "set": "wave", "params": {}}, workers=2)
    cached = WindowData.load(hv, "lm", "train", table, comp, CPU)
    waves = load_inputs(hv, {"features": {"name": "waveform", "set": "wave"}}, "train", table, comp, CPU)
    items, _ = waves.windows_of(np.arange(len(table)))
    model = build_model({"name": "cnn", "params": {}}, waves.manifest, 4, 0, {"name": "log_mel", "params": HV_LOG_MEL})
    spec = model.to_spec(waves.batch(items, CPU)[0])
    want = cached.batch(cached.windows_of(np.arange(len(table)))[0], CPU)[0]
    assert spec.shape == want.shape == (len(items), 1, 64, 151)
    assert (spec - want).abs().max() < 5e-3  # dB; measured 1.7e-3 over 80 recordings: float32 FFT bins near the 80-dB floor


def test_test_time_shifts_and_hop(hv):
    comp, table = hv.load_competition(), hv.load_split("train")
    build_feature_set(hv, {"name": "waveform", "set": "wave", "params": {}}, workers=2)
    data = load_inputs(hv, {"features": {"name": "waveform", "set": "wave"}}, "train", table, comp, CPU)
    torch.manual_seed(0)
    model = build_model({"name": "cnn", "params": {"channels": [4, 8]}}, data.manifest, 4, 0,
                        {"name": "log_mel", "params": HV_LOG_MEL}).eval()
    recs = np.arange(len(table))
    plain, logits, items = predict_recordings(model, data, recs, comp)
    shifted, logits2, _ = predict_recordings(model, data, recs, comp, {"shifts": [0.0, 0.25]})
    assert logits.shape[0] == 1 and logits2.shape[0] == 2 and torch.equal(logits2[0], logits[0])
    with torch.no_grad():  # the second copy is the input rolled by 0.25 s = 2000 samples
        x = data.batch(items, CPU)[0]
        rolled = model(torch.roll(x, 2000, dims=-1))["logits"]
    assert torch.allclose(logits2[1], rolled, atol=1e-5)
    assert not np.allclose(plain, shifted)
    # a denser window grid: windows every 0.25 s instead of the competition's 0.5 s
    dense, _, dense_items = predict_recordings(model, data, recs, comp, {"hop_seconds": 0.25})
    lengths = np.diff(data.offsets) / 8000
    assert len(dense_items) == sum(len(audio.window_starts(d, 1.5, 0.25)) for d in lengths) > len(items)
    assert dense.shape == plain.shape and np.allclose(dense.sum(1), 1)


def test_test_time_shifts_of_cached_spectrograms_roll_frames():
    cached = WindowData(torch.randn(3, 1, 8, 20), torch.zeros(3, 0), np.arange(3), np.arange(3), np.ones(3, int),
                        {"sample_rate": 8000, "hop_length": 80})  # 100 frames a second
    torch.manual_seed(0)
    model = build_model({"name": "cnn", "params": {"channels": [4, 8]}}, {"spec_shape": [1, 8, 20], "n_scalars": 0},
                        1).eval()
    logits = predict_logits(model, cached, np.arange(3), [0.0, 0.03])
    with torch.no_grad():
        rolled = model(torch.roll(cached.spec, 3, dims=-1))["logits"]
    assert torch.allclose(logits[1], rolled, atol=1e-5) and not torch.allclose(logits[0], logits[1])
    with pytest.raises(ValueError, match="waveform"):
        cached.windows_of(np.arange(3), 0.25)


def test_trained_checkpoint_predicts_its_oof_again_after_reload(hv, tmp_path):
    """02 on the waveform path with TTA, then the saved fold models (front end inside) reloaded as
    03 loads them: their predictions of each fold's validation rows are the OOF file's."""
    cfg = _wave_experiment(tmp_path, tta={"shifts": [0.0, 0.3], "hop_seconds": 0.25},
                           augment={"waveform": [{"name": "gain", "params": {"p": 0.5}},
                                                 {"name": "filter", "params": {"p": 0.5, "kind": "highpass",
                                                                               "min_hz": 20, "max_hz": 200}}]})
    build_feature_set(hv, cfg["features"], workers=2)
    scores = train_experiment(cfg, hv, log=lambda *_: None)
    assert not scores["partial"] and all("without_tta" in f for f in scores["folds"])
    comp, table = hv.load_competition(), hv.load_split("train")
    oof = pd.read_csv(hv.oof("wave"))
    data = load_inputs(hv, cfg, "train", table, comp, CPU)
    for ckpt, model in load_fold_models(hv, "wave", CPU):
        assert ckpt["frontend"] == cfg["frontend"]
        assert model.frontend.band_std.abs().sum() > 0 and not torch.equal(model.frontend.band_mean,
                                                                          torch.zeros_like(model.frontend.band_mean))
        recs = np.flatnonzero(table["fold"] == ckpt["fold"])
        probs = predict_recordings(model, data, recs, comp, cfg["tta"])[0]
        assert np.allclose(probs, oof.loc[oof["fold"] == ckpt["fold"], ["p_MR", "p_MS", "p_MVP", "p_N"]], rtol=0, atol=1e-12)


@pytest.mark.parametrize("body, match", [
    ({"features": {"name": "waveform"}}, r"features.name waveform caches raw audio; the model then needs a front end"),
    ({"frontend": {"name": "log_mel"}}, r"a frontend section need\(s\) waveform input, but features.name is 'log_mel'"),
    ({"augment": {"waveform": [{"name": "gain"}]}}, r"augment.waveform entries need\(s\) waveform input"),
    ({"tta": {"hop_seconds": 0.5}}, r"tta.hop_seconds need\(s\) waveform input.*audio.hop_seconds"),
    ({"features": {"name": "waveform"}, "frontend": {"name": "log_mle"}}, r"did you mean 'log_mel'"),
    ({"features": {"name": "waveform"}, "frontend": {"name": "log_mel", "params": {"sample_rate": 8000}}},
     r"frontend.params.sample_rate is not settable: the code gives it"),  # the data's rate
    ({"features": {"name": "waveform"}, "frontend": {"name": "log_mel"},
      "augment": {"waveform": [{"name": "gain", "params": {"min_dB": 3}}]}},
     r"unknown parameter augment.waveform\[0\].params.min_dB .*did you mean 'min_db'"),
    ({"features": {"name": "waveform"}, "frontend": {"name": "log_mel"},
      "augment": {"waveform": [{"name": "time_shift", "params": {"sample_rate": 8000}}]}},
     r"augment.waveform\[0\].params.sample_rate is not settable: the code gives it"),
    ({"features": {"name": "waveform"}, "frontend": {"name": "log_mel"},
      "augment": {"waveform": [{"name": "nosie"}]}}, r"augment.waveform\[0\].name.*did you mean 'noise'"),
    ({"tta": {"shifts": 0.5}}, r"tta.shifts: input should be a valid list"),
])
def test_config_errors_name_the_key(tmp_path, body, match):
    with pytest.raises(ConfigError, match=match):
        _experiment(tmp_path, body)


def test_a_child_config_that_removes_the_front_end_is_named(tmp_path):
    """`frontend: null` in a child of a waveform config: the error named the (valid) base file."""
    child = tmp_path / "child.yaml"
    child.write_text(f"base: {ROOT / 'configs/wave_cnn.yaml'}\nfrontend: null\n")
    with pytest.raises(ConfigError, match=rf"^{child}: features.name waveform \(set in {ROOT / 'configs/wave_cnn.yaml'}\) "
                                          r".*frontend: null removes it"):
        load_experiment(child)


def test_shipped_long_recording_config_runs_on_real_recordings(hv):
    """configs/wave_long.yaml (2 kHz cache resampled from 8 kHz, balanced sampler, attention head,
    TTA over a denser grid and a shift) through stages 01-02 on real heart-valve recordings."""
    cfg = load_experiment(ROOT / "configs/wave_long.yaml", ["train.epochs=2", "train.device=cpu"])
    m = build_feature_set(hv, cfg["features"], workers=2)
    assert m["sample_rate"] == 2000 and m["dtype"] == "float16"
    scores = train_experiment(cfg, hv, log=lambda *_: None)
    assert not scores["partial"] and np.isfinite(scores["oof"]["macro_f1"])
    assert all("without_tta" in f for f in scores["folds"])


def test_the_readme_notebook_code_runs_as_written(tmp_path):
    """The README's "From a notebook" block, run verbatim (only the project path filled in) in a
    folder whose ``output/`` holds a trained waveform experiment ``wave_cnn``: it loads a fold
    model (``Outputs`` given a str) and computes logits of the shape it says."""
    import re
    import subprocess
    import sys

    import soundfile as sf
    from conftest import make_toy_competition, stage

    make_toy_competition(tmp_path / "data")
    for f in (tmp_path / "data/test").glob("*.wav"):  # 1.5-s test recordings: 5 windows every 0.25 s
        sf.write(f, 0.1 * np.random.default_rng(0).standard_normal(24000).astype(np.float32), 16000)
    out = tmp_path / "output"
    exp = tmp_path / "wave_cnn.yaml"
    exp.write_text(yaml.safe_dump({"features": {"name": "waveform", "set": "waveform"},
                                   "frontend": {"name": "log_mel", "params": {"n_mels": 16, "n_fft": 256, "hop_length": 128}},
                                   "model": {"name": "cnn", "params": {"channels": [4, 8], "convs_per_block": 1}},
                                   "tta": {"hop_seconds": 0.25}, "train": {"epochs": 1, "batch_size": 4, "device": "cpu"}}))
    stage("00_prepare.py", tmp_path / "data/toy.yaml", "--output-dir", out)
    for script in ("01_features.py", "02_train.py"):
        stage(script, exp, "--output-dir", out)
    # 03 counts the windows it predicts every tta.hop_seconds (it said the cache's grid: 1 window each, probe)
    assert "2 test recordings (10 windows)" in stage("03_infer.py", exp, "--output-dir", out).stdout
    y, sr = sf.read(sorted((tmp_path / "data/test").glob("*.wav"))[0])
    sf.write(tmp_path / "clip.wav", y[::2][:sr // 8], sr // 2)  # another rate, shorter than a window (probe)
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"## From a notebook\n\n```python\n(.*?)```", readme, re.S).group(1)
    code = code.replace("/path/to/this/project", str(ROOT)) + "\nprint(tuple(logits.shape), spec.shape, sr, x.shape)\n"
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    # binary: one logit; 64 mel bands; the clip resampled to the training rate and padded to the window
    manifest = json.loads((out / "features/waveform/manifest.json").read_text())
    n = round(manifest["clip_seconds"] * manifest["sample_rate"])
    assert r.stdout.split("\n")[-2].startswith("(1, 1) (1, 64, "), r.stdout
    assert r.stdout.split("\n")[-2].endswith(f"{manifest['sample_rate']} ({n},)"), r.stdout


def test_train_benchmark_refuses_a_waveform_config_before_timing():
    """bench/train.py times models on spectrograms computed from a silent clip; a waveform config
    (the CPU default) was a TypeError deep inside: now one line pointing at bench/waveform.py."""
    r = stage("bench/train.py", "configs/cnn_mel4k.yaml", "configs/wave_cnn.yaml", check=False)
    assert r.returncode == 2
    assert "configs/wave_cnn.yaml" in r.stderr and "bench/waveform.py" in r.stderr
    assert "config" not in r.stdout  # nothing was timed, not even the spectrogram config before it
