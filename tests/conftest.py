"""Shared test fixtures: the project on sys.path, the real data location, small real subsets."""
from __future__ import annotations

import atexit
import contextlib
import io
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest -n N: N workers share the cores, so one thread each
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # (torch and every script a test starts read it), not
    os.environ.setdefault("MKL_NUM_THREADS", "1")  # N x cores threads that spin waiting for each other
    # and a numba cache of its own: librosa's functions are compiled with cache=True, and two processes
    # compiling one of them into the same fresh cache can leave a file that segfaults every later
    # call (numba issue #10128; it crashed a CI worker in librosa's localmax on a fresh install)
    os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix=f"numba-{os.environ['PYTEST_XDIST_WORKER']}-")
    atexit.register(shutil.rmtree, os.environ["NUMBA_CACHE_DIR"], ignore_errors=True)
SHARED_DATA = ROOT.parent / "shared" / "data"
BREATHING = SHARED_DATA / "breathing"
HEART_VALVE = SHARED_DATA / "heart-valve"
HEART_SOUND = SHARED_DATA / "heart-sound"


def stage(*args, check: bool = True) -> subprocess.CompletedProcess:
    """Run a project script (``stage("02_train.py", cfg, "--output-dir", out)``) as ``python
    SCRIPT ARGS`` from the project folder would, but in this process: one import of torch and the
    library for the whole suite instead of one per run (about 4 s each). Returns a
    ``CompletedProcess`` with the exit code and the captured stdout and stderr (the environment
    variables the script sets are undone after it); ``check``: assert
    exit code 0, showing the output's tail otherwise. Tests of what only a separate process shows
    (a kill, a read-only mount, torchrun, another user) run the script with ``subprocess``."""
    argv, cwd, env, code = sys.argv, os.getcwd(), dict(os.environ), 0
    out, err = io.StringIO(), io.StringIO()
    sys.argv = [str(a) for a in args]
    try:
        os.chdir(ROOT)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_path(str(ROOT / args[0]), run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
        os.chdir(cwd)
        os.environ.clear()  # what the script set (sweep.py: TQDM_DISABLE) ends with it, as a process's would
        os.environ.update(env)
    r = subprocess.CompletedProcess(sys.argv, code, out.getvalue(), err.getvalue())
    if check:
        assert code == 0, f"{args} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def require_breathing() -> Path:
    """The real breathing data folder, or skip the test with a clear message."""
    if not (BREATHING / "train.csv").exists():
        pytest.skip(f"real data not found at {BREATHING} (see ../shared/data/README.md)")
    return BREATHING


@pytest.fixture
def breathing_subset(tmp_path) -> Path:
    """A small real competition in the breathing layout: 48 train clips (24 I, 24 E, whole sessions
    kept apart by the groups) and 12 test clips, audio linked from ``../shared/data/breathing``."""
    src = require_breathing()
    root = tmp_path / "breathing_subset"
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    train = pd.read_csv(src / "train.csv")
    train = pd.concat([train[train.Target == c].iloc[::60].head(24) for c in ("I", "E")])
    train.to_csv(root / "train.csv", index=False)
    for sample_id in train.ID:
        name = sample_id.replace("_I_", "_").replace("_E_", "_") + ".wav"
        (root / "train" / name).symlink_to(src / "train" / name)
    sample = pd.read_csv(src / "sample_submission.csv").iloc[::150].head(12)
    sample[["ID"]].to_csv(root / "test.csv", index=False)
    sample.to_csv(root / "sample_submission.csv", index=False)
    for name in sample.ID:
        (root / "test" / name).symlink_to(src / "test" / name)
    return root


@pytest.fixture
def heart_valve_subset(tmp_path) -> Path:
    """A small real competition of recordings of varying length: 24 heart-valve recordings (6 per
    class, 8 kHz, 1.2-4 s, the shortest of each class among them) with a competition config
    (``heart_valve.yaml``: 1.5-s windows every 0.5 s, ``pad: repeat``), audio linked from
    ``../shared/data/heart-valve``."""
    if not (HEART_VALVE / "train.csv").exists():
        pytest.skip(f"real data not found at {HEART_VALVE} (see ../shared/data/README.md)")
    root = tmp_path / "heart_valve_subset"
    (root / "audio").mkdir(parents=True)
    train = pd.read_csv(HEART_VALVE / "train.csv")
    import soundfile

    train["frames"] = [soundfile.info(str(HEART_VALVE / "audio" / f)).frames for f in train.filename]
    train = pd.concat([g.sort_values("frames").iloc[::33].head(6) for _, g in train.groupby("label")])
    train[["filename", "label"]].to_csv(root / "train.csv", index=False)
    for name in train.filename:
        (root / "audio" / name).symlink_to(HEART_VALVE / "audio" / name)
    cfg = yaml.safe_load((ROOT / "configs" / "data" / "heart_valve.yaml").read_text())
    cfg.update(data_dir=str(root), experiments=None, folds={"n_folds": 2, "scheme": "stratified", "seed": 0})
    (root / "heart_valve.yaml").write_text(yaml.safe_dump(cfg))
    return root


@pytest.fixture
def heart_sound_subset(tmp_path) -> Path:
    """A small real long-recording competition of two databases (devices): 32 heart-sound
    recordings, 8 normal and 8 abnormal from each of ``training-b`` and ``training-f`` (the
    shortest of each, 5-9 s at 2 kHz), with ``heart_sound.yaml`` (``slices: [database]``, 2
    folds), audio linked from ``../shared/data/heart-sound``."""
    if not (HEART_SOUND / "train.csv").exists():
        pytest.skip(f"real data not found at {HEART_SOUND} (see ../shared/data/README.md)")
    import soundfile

    root = tmp_path / "heart_sound_subset"
    (root / "audio").mkdir(parents=True)
    train = pd.read_csv(HEART_SOUND / "train.csv")
    train["frames"] = [soundfile.info(str(HEART_SOUND / "audio" / f"{r}.wav")).frames for r in train.record]
    train = pd.concat([g.sort_values("frames").head(8) for _, g in train.groupby(["database", "label"])])
    train[["record", "database", "label"]].to_csv(root / "train.csv", index=False)
    for r in train.record:
        (root / "audio" / f"{r}.wav").symlink_to(HEART_SOUND / "audio" / f"{r}.wav")
    cfg = yaml.safe_load((ROOT / "configs" / "data" / "heart_sound.yaml").read_text())
    cfg.update(data_dir=str(root), experiments=None, folds={"n_folds": 2, "scheme": "stratified", "seed": 0})
    (root / "heart_sound.yaml").write_text(yaml.safe_dump(cfg))
    return root


def make_toy_competition(root, n=12, sr=16000):
    """Write a generated binary competition (noise clips, 0.5 s, groups of 2) under ``root``;
    returns its competition config, loaded (defaults filled) by ``lib.components.load_competition``."""
    from lib.components import load_competition

    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    rng = np.random.default_rng(0)
    ids = [f"s{i // 2}_{i}" for i in range(n)]
    for i in ids:
        sf.write(root / "train" / f"{i}.wav", rng.standard_normal(sr // 2).astype(np.float32) * 0.1, sr)
    pd.DataFrame({"id": ids, "label": ["a", "b"] * (n // 2)}).to_csv(root / "train.csv", index=False)
    for i in ("t0", "t1"):
        sf.write(root / "test" / f"{i}.wav", np.zeros(sr // 2, np.float32), sr)
    pd.DataFrame({"id": ["t0", "t1"]}).to_csv(root / "test.csv", index=False)
    pd.DataFrame({"id": ["t1", "t0"], "label": "a"}).to_csv(root / "sample.csv", index=False)
    cfg = {
        "name": "toy", "data_dir": str(root), "task": "binary", "classes": ["a", "b"], "positive": "b",
        "metric": "accuracy", "metrics": ["accuracy"],
        "train": {"csv": "train.csv", "id_column": "id", "target_column": "label", "audio": {"template": "train/{id}.wav"}},
        "test": {"csv": "test.csv", "id_column": "id", "audio": {"template": "test/{id}.wav"}},
        "audio": {"clip_seconds": 0.5, "sample_rate": None, "pad": "zero"},
        "groups": {"regex": "^(s\\d+)_"}, "folds": {"n_folds": 2, "scheme": "stratified_group", "seed": 0},
        "submission": {"sample": "sample.csv", "id_column": "id", "target_column": "label", "format": "label"},
    }
    (root / "toy.yaml").write_text(yaml.safe_dump(cfg))
    return load_competition(root / "toy.yaml")
