import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, make_toy_competition, require_breathing

from lib.core.paths import MissingArtifact, Outputs
from lib.data.prepare import prepare
from lib.features.cache import build_feature_set, load_features
from lib.features.parallel import run_parallel


@pytest.fixture
def prepared(tmp_path):
    comp = make_toy_competition(tmp_path / "data")
    out = Outputs(tmp_path / "out")
    prepare(comp, out.root)
    return out


def test_log_mel_cache_matches_manifest_and_is_reused(prepared):
    section = {"name": "log_mel", "set": "lm", "params": {"n_mels": 32, "hop_length": 128, "deltas": True}}
    m = build_feature_set(prepared, section, workers=2)
    assert not m["skipped"]
    assert m["channel_names"] == ["log_mel", "log_mel_delta", "log_mel_delta2"]
    assert m["spec_shape"] == [3, 32, 1 + 8000 // 128] and m["n_scalars"] == 0 and m["sample_rate"] == 16000
    folds = prepared.load_split("train")
    for split, rows in (("train", 12), ("test", 2)):
        spec, scalars, windows, man = load_features(prepared, "lm", split)
        assert windows.shape == (rows, 3) and (windows[:, 0] == np.arange(rows)).all()
        assert spec.shape == (rows, *m["spec_shape"]) and scalars.shape == (rows, 0)
        assert tuple(man["splits"][split]["spec"]) == spec.shape
        assert np.isfinite(spec).all()
    # row order follows folds.csv; a serial run gives the same values as the parallel one
    m1 = build_feature_set(prepared, section, workers=1, force=True)
    assert not m1["skipped"]
    again = build_feature_set(prepared, section)
    assert again["skipped"]
    spec, *_ = load_features(prepared, "lm", "train", table=folds)
    with pytest.raises(MissingArtifact, match="other rows"):
        load_features(prepared, "lm", "train", table=folds[::-1])
    changed = dict(section, params=dict(section["params"], n_mels=16))
    assert not build_feature_set(prepared, changed)["skipped"]  # settings changed: rebuilt


def test_a_rebuild_says_which_settings_or_cache_format_changed(prepared, monkeypatch):
    """01 says why it builds a set again: each setting that changed (built and now), or a cache
    format of an earlier version (a probe: both read "built from other inputs or settings")."""
    import lib.features.cache as cache

    section = {"name": "log_mel", "set": "lm", "params": {"n_mels": 32}}
    assert build_feature_set(prepared, section, workers=1)["because"] == ""
    m = build_feature_set(prepared, dict(section, params={"n_mels": 16}), workers=1)
    assert m["because"] == "settings changed since the last build, n_mels: built 32, now 16"
    assert m["format_version"] == cache.FORMAT_VERSION
    monkeypatch.setattr(cache, "FORMAT_VERSION", cache.FORMAT_VERSION + 1)  # what a new version's format does
    m = build_feature_set(prepared, dict(section, params={"n_mels": 16}), workers=1)
    assert m["because"] == f"an earlier version's cache format, {cache.FORMAT_VERSION - 1} (now {cache.FORMAT_VERSION})"
    assert build_feature_set(prepared, dict(section, params={"n_mels": 16}), workers=1)["skipped"]
    files = {"config.json": "c" * 64, "model.safetensors": "a" * 64}  # a Hugging Face folder's hashes: the file
    assert cache.settings_diff({"files": files}, {"files": dict(files, **{"model.safetensors": "b"})}, "built", "now") \
        == 'files.model.safetensors: built "' + "a" * 64 + '", now "b"'  # that changed, not the table (a probe)


def test_a_mel_band_above_the_audio_is_refused_before_any_work(prepared):
    from lib.core.errors import ConfigError
    from lib.features.seed9 import Seed9

    # the toy audio is at 16 kHz: fmin 9000 Hz would leave every band empty (all -100 dB features)
    for params, words in (({"fmin": 9000}, "fmin=9000 Hz is not below the top of the band, 8000.0 Hz"),
                          ({"fmin": 5000, "fmax": 3000}, "fmin=5000 Hz must be below fmax=3000 Hz"),
                          ({"fmax": 9000}, r"fmax=9000 Hz is above half the sample rate \(8000 Hz\)")):  # (was cut)
        with pytest.raises(ConfigError, match=words):
            build_feature_set(prepared, {"name": "log_mel", "set": "lm", "params": params})
        assert not prepared.features("lm").exists()
    with pytest.raises(ConfigError, match=r"features seed9 needs audio at 16000 Hz, and this competition's is read at "
                                          r"8000 Hz: set audio.sample_rate: 16000"):  # (a traceback in the first chunk)
        Seed9().check_rate(8000)  # (01 calls it, as log_mel's, before any audio is read)
    from lib.features import FEATURES  # a bundle's test features as its models were trained (review)

    FEATURES.build({"name": "log_mel", "params": {"fmax": 9000}}).check_rate(16000, training=False)
    m = build_feature_set(prepared, {"name": "log_mel", "set": "lm", "params": {"fmin": 4000, "n_mels": 16}})
    spec, *_ = load_features(prepared, "lm", "train")
    assert m["spec_shape"][1] == 16 and np.asarray(spec).std() > 1  # a band inside the audio: real features


def test_01_names_the_recordings_of_digital_silence(tmp_path):
    """A training file of zeros (and the toy's two silent test files) is named by 01 for the
    waveform cache and for feature caches when it builds them (not again when they are up to date);
    a very quiet file is not (a probe: silent recordings went unsaid)."""
    import soundfile as sf
    from conftest import stage

    make_toy_competition(tmp_path / "data")
    sf.write(tmp_path / "data/train/s1_2.wav", np.zeros(8000, np.float32), 16000)
    sf.write(tmp_path / "data/train/s2_4.wav", np.full(8000, 1e-3, np.float32), 16000)  # quiet, not silent
    stage("00_prepare.py", tmp_path / "data/toy.yaml", "--output-dir", tmp_path / "out")
    configs = [ROOT / f"configs/{c}.yaml" for c in ("wave_cnn", "cnn_small", "cnn8")]
    log = stage("01_features.py", *configs, "--output-dir", tmp_path / "out", "--workers", "2").stdout
    for name in ("waveform", "log_mel64", "seed9"):  # (seed9's features of silence are not one value)
        assert (f"note: {name}: 1 train recording is digital silence (every sample 0), e.g. s1_2: kept as it is; "
                f"check it if the audio should not be silent") in log
        assert f"note: {name}: 2 test recordings are digital silence (every sample 0), e.g. t0, t1: kept" in log
    assert log.count("digital silence") == 6
    assert "note:" not in stage("01_features.py", *configs, "--output-dir", tmp_path / "out").stdout  # up to date


def test_missing_stage_is_named(tmp_path):
    with pytest.raises(MissingArtifact, match="run 00_prepare.py first"):
        build_feature_set(Outputs(tmp_path), {"name": "log_mel", "set": "x", "params": {}})
    with pytest.raises(MissingArtifact, match="run 01_features.py first"):
        load_features(Outputs(tmp_path), "x", "train")


def _chunk(n) -> int:
    """A run_parallel job: chunk 3 kills its own process (as the out-of-memory killer or a crash in
    compiled code would), chunk -1 raises, a path writes the process id into that file; each chunk
    counts as one recording."""
    if n == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    if n == -1:
        raise ValueError("bad recording in chunk -1")
    if not isinstance(n, int):
        n.write_text(str(os.getpid()))
    return 1


@pytest.mark.timeout(120)
def test_a_worker_that_dies_is_an_error_not_a_hang():
    before = set(mp.active_children())
    with pytest.raises(RuntimeError, match="ended abruptly.*--workers 1"):
        run_parallel(_chunk, list(range(8)), (None, {}, ()), 2, 8, "toy")  # multiprocessing.Pool hung here
    assert not set(mp.active_children()) - before
    with pytest.raises(ValueError, match="chunk -1"):  # an ordinary error comes through as itself
        run_parallel(_chunk, [0, 1, -1, 2], (None, {}, ()), 2, 4, "toy")
    assert not set(mp.active_children()) - before  # no worker left behind


def test_the_first_chunk_runs_here_before_the_workers_fork(tmp_path):
    """What the extraction compiles on first use (librosa's numba functions) is compiled by this
    process alone, before any worker exists, and inherited by the forked workers."""
    files = [tmp_path / f"chunk{i}" for i in range(6)]
    run_parallel(_chunk, files, (None, {}, ()), 2, 6, "toy")
    pids = [int(f.read_text()) for f in files]
    assert pids[0] == os.getpid() and os.getpid() not in pids[1:]


WAITING_POOL = """
import os, sys, time
sys.path.insert(0, sys.argv[1])
from lib.features.parallel import run_parallel

def chunk(n):
    if n:  # the workers' chunks: note the process, then work for a long time
        open(os.path.join(sys.argv[2], str(os.getpid())), "w").close()
        time.sleep(120)
    return 1

run_parallel(chunk, list(range(4)), (None, {}, ()), 2, 4, "slow")
"""


def test_workers_end_with_a_killed_stage(tmp_path):
    """``kill -9`` of the stage alone (not its process group): its feature workers, blocked in
    their chunks, end too instead of living on beside a re-run."""
    p = subprocess.Popen([sys.executable, "-c", WAITING_POOL, str(ROOT), str(tmp_path)], stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while len(list(tmp_path.iterdir())) < 2:
        assert p.poll() is None and time.time() < deadline
        time.sleep(0.05)
    workers = [int(f.name) for f in tmp_path.iterdir()]
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    deadline = time.time() + 10
    while any(_alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie waiting for its new parent to reap it does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_check_unchanged_compares_segment_rows_with_their_last_segment(tmp_path):
    """Segment rows (start_s/end_s) carry the segment's duration, not the file's: a file still
    reaching past its last segment passes; one shortened below it, or at another rate, is refused
    naming the file and stage 00."""
    import pandas as pd
    import soundfile as sf

    from lib.features.cache import check_unchanged

    wav = tmp_path / "rec.wav"
    sf.write(wav, np.zeros(4000, np.float32), 2000)  # 2 s
    table = pd.DataFrame({"id": ["rec#0", "rec#1"], "path": [str(wav)] * 2, "sample_rate": [2000] * 2,
                          "channels": [1] * 2, "start_s": [0.0, 1.0], "end_s": [0.8, 1.9], "duration_s": [0.8, 0.9]})
    check_unchanged(table, "train")
    sf.write(wav, np.zeros(3000, np.float32), 2000)  # 1.5 s: the second segment is cut
    with pytest.raises(MissingArtifact, match=r"rec\.wav \(train\).*segments up to 1\.9000 s.*run 00_prepare"):
        check_unchanged(table, "train")
    sf.write(wav, np.zeros(8000, np.float32), 4000)  # the same 2 s at another rate
    with pytest.raises(MissingArtifact, match="4000 Hz.*2000 Hz"):
        check_unchanged(table, "train")


@pytest.mark.parametrize("name", ["log_mel", "seed9"])
def test_feature_sets_refuse_a_clip_that_is_not_one_mono_float_array(name):
    """A stereo array gave log_mel a 4-D stack or a (1, 16000, 64, 1) one and int16 PCM gave seed9
    scalars 32767 times too large, unsaid; a list was a traceback inside librosa."""
    from lib.core.errors import AudioError
    from lib.features import FEATURES

    extractor = FEATURES.build({"name": name, "set": name})
    y = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    spec, scalars = extractor(y, 16000)
    assert np.isfinite(spec).all() and spec.ndim == 3
    for bad, said in ((np.stack([y, y], 1), r"shape \(16000, 2\)"), (np.stack([y, y]), r"shape \(2, 16000\)"),
                      ((y * 32767).astype(np.int16), "dtype int16"), (list(y[:100]), "a list")):
        with pytest.raises(AudioError, match=f"one mono clip.*got.*{said}"):
            extractor(bad, 16000)


def test_windows_go_through_the_extractor_a_bounded_batch_at_a_time(tmp_path, monkeypatch):
    """A chunk of 32 long recordings went through the extractor all at once: memory grew with
    the audio (1.76 GiB for one 10-minute file at a 0.1-s hop, probe). Batches of at most
    BATCH_WINDOWS windows, within a recording and across recordings, give the same cache."""
    import lib.features.cache as cache

    comp = make_toy_competition(tmp_path / "data")
    comp["audio"].update(clip_seconds=0.1, hop_seconds=0.05)  # 9 windows in each 0.5-s recording
    out = Outputs(tmp_path / "out")
    prepare(comp, out.root)
    section = {"name": "log_mel", "set": "lm", "params": {"n_mels": 16, "hop_length": 64}}
    build_feature_set(out, section, workers=1)
    whole = load_features(out, "lm", "train")[0].copy()
    sizes, run = [], cache._run
    monkeypatch.setattr(cache, "_run", lambda ex, w, sr: sizes.append(len(w)) or run(ex, w, sr))
    monkeypatch.setattr(cache, "BATCH_WINDOWS", 7, raising=False)
    build_feature_set(out, section, workers=1, force=True)
    assert whole.shape[0] == 12 * 9 and max(sizes) <= 7
    assert sum(sizes) == 12 * 9 + 2 * 9 + 2  # train and test windows, and each split's shape probe
    np.testing.assert_array_equal(load_features(out, "lm", "train")[0], whole)


def test_a_feature_shape_error_names_the_files_of_its_batch(tmp_path, monkeypatch):
    """The message named no file: the batch's list of files was emptied before it was read (review)."""
    import lib.features.cache as cache

    comp = make_toy_competition(tmp_path / "data")
    out = Outputs(tmp_path / "out")
    prepare(comp, out.root)
    section = {"name": "log_mel", "set": "lm", "params": {"n_mels": 16, "hop_length": 64}}
    run = cache._run
    wrong = lambda ex, w, sr: (lambda s, c: (s[:, :, :-1] if len(w) > 1 else s, c))(*run(ex, w, sr))  # noqa: E731
    monkeypatch.setattr(cache, "_run", wrong)  # the shape probe (one window) right, the batches one frame short
    with pytest.raises(ValueError, match=r"train/s0_0\.wav, .*train/s0_1\.wav.*: feature shape"):
        build_feature_set(out, section, workers=1)


def _librosa_log_mel(y, sr, n_fft, hop, n_mels, fmin, fmax):
    import librosa

    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels, fmin=fmin, fmax=fmax)
    return librosa.power_to_db(mel, ref=1.0, amin=1e-10)


def _assert_log_mel_is_librosas(clips):
    from lib.features.log_mel import mel_spectrogram, power_to_db

    for y in clips:
        for n_fft, hop, n_mels, fmin, fmax in ((512, 256, 64, 0.0, 8000.0), (1024, 320, 40, 50.0, 7000.0),
                                               (256, 64, 32, 20.0, 4000.0), (511, 128, 24, 0.0, 8000.0)):
            ours = power_to_db(mel_spectrogram(y, 16000, n_fft, hop, n_mels, fmin, fmax))
            theirs = _librosa_log_mel(y, 16000, n_fft, hop, n_mels, fmin, fmax)
            assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs), (len(y), y.dtype, n_fft, hop)


def test_log_mel_is_librosas_melspectrogram_bit_for_bit_without_importing_librosa_feature():
    """``log_mel`` computes librosa's power mel spectrogram and dB itself (importing
    ``librosa.feature`` compiles 12 s of numba functions on a fresh install): the same bits as
    ``librosa.feature.melspectrogram`` + ``power_to_db`` on generated clips of awkward lengths
    (shorter than the FFT, not a multiple of the hop), float32, float64 and float16, even and odd
    FFT sizes, hops and bands; and a process computing it never imports ``librosa.feature``."""
    rng = np.random.default_rng(0)
    _assert_log_mel_is_librosas([(0.1 * rng.standard_normal(n)).astype(dtype) for n in (100, 300, 1000, 16001)
                                 for dtype in (np.float32, np.float64, np.float16)])
    from lib.features.log_mel import mel_spectrogram

    for bad in (np.zeros((2, 1000), np.float32), np.zeros(0, np.float32)):  # not 1-D; empty with an odd n_fft
        with pytest.raises(ValueError):
            mel_spectrogram(bad, 16000, 511, 128, 24, 0.0, 8000.0)
    probe = ("import sys; sys.path.insert(0, %r)\nimport numpy as np\nfrom lib.features import FEATURES\n"
             "spec, _ = FEATURES.build({'name': 'log_mel', 'params': {}})(np.ones(16000, np.float32), 16000)\n"
             "print(spec.shape, 'librosa.feature' in sys.modules)\n") % str(ROOT)
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["(1,", "64,", "63)", "False"], r.stdout + r.stderr[-2000:]


def test_log_mel_is_librosas_on_real_breathing_clips():
    """The same bits as librosa on real breathing clips (skipped without ``../shared/data``)."""
    from lib.data.audio import load

    _assert_log_mel_is_librosas([load(f)[0] for f in sorted((require_breathing() / "train").glob("*.wav"))[:8]])
