"""Per-group normalisation of spectrogram inputs (``inputs.group_norm``, lib/inputs/base.py): the
group means removed, computed per split from its own rows, through 00 (``groups.test``), 02, 03
and a bundle, and the errors that stop it before any training."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import yaml
from conftest import make_toy_competition, stage

from lib.core.errors import ConfigError
from lib.inputs import WindowData

CPU = torch.device("cpu")


def test_each_band_loses_its_groups_mean_so_a_devices_colouring_cancels():
    """Three groups of two single-window rows: the same sounds through three "devices" (a fixed dB
    offset per band each). After the groups' means are removed the three groups' inputs are equal,
    and each is its rows' spectrogram less the mean over the group's windows and frames."""
    rng = np.random.default_rng(0)
    sounds = rng.normal(size=(2, 1, 5, 7))  # two recordings' log-mel, 5 bands x 7 frames
    device = rng.normal(scale=10, size=(3, 1, 5, 1))  # a fixed colouring per band and group
    spec = np.concatenate([sounds + device[g] for g in range(3)]).astype(np.float32)
    data = WindowData(torch.from_numpy(spec), torch.zeros(6, 0), np.arange(6), np.arange(6), np.ones(6, int), {})
    raw = data.batch(np.arange(6), CPU)[0].numpy()
    np.testing.assert_array_equal(raw, spec)
    data.set_group_norm(["a", "a", "b", "b", "c", "c"])
    x = data.batch(np.array([5, 0, 3, 2, 1, 4]), CPU)[0].numpy()  # any order of items
    groups = np.array([2, 0, 1, 1, 0, 2])
    expect = spec[[5, 0, 3, 2, 1, 4]] - np.stack([spec[2 * g:2 * g + 2].mean((0, 3)) for g in groups])[..., None]
    np.testing.assert_allclose(x, expect, atol=1e-5)
    by_group = data.batch(np.arange(6), CPU)[0].numpy().reshape(3, 2, 1, 5, 7)
    np.testing.assert_allclose(by_group[0], by_group[1], atol=1e-4)
    np.testing.assert_allclose(by_group[0], by_group[2], atol=1e-4)


@pytest.fixture(scope="module")
def comp_dir(tmp_path_factory):
    """The toy competition (groups of two clips by id) and a tiny cached-spectrogram experiment
    with ``inputs.group_norm``."""
    root = tmp_path_factory.mktemp("gn")
    make_toy_competition(root / "data", n=16)
    rng = np.random.default_rng(1)  # two test recordings of one session (the regex's group s90), not silence
    for i in ("t0", "t1"):
        (root / "data/test" / f"{i}.wav").unlink()
        sf.write(root / "data/test" / f"s90_{i}.wav", rng.standard_normal(8000).astype(np.float32) * 0.1, 16000)
    pd.DataFrame({"id": ["s90_t0", "s90_t1"]}).to_csv(root / "data/test.csv", index=False)
    pd.DataFrame({"id": ["s90_t1", "s90_t0"], "label": "a"}).to_csv(root / "data/sample.csv", index=False)
    exp = {"features": {"name": "log_mel", "set": "lm16", "params": {"n_mels": 16, "n_fft": 512, "hop_length": 256}},
           "model": {"name": "cnn", "params": {"channels": [4, 8], "convs_per_block": 1, "head_hidden": 8}},
           "inputs": {"group_norm": True}, "train": {"epochs": 2, "batch_size": 4, "device": "cpu"}}
    (root / "gn.yaml").write_text(yaml.safe_dump(exp))
    return root


def _competition(root, **groups) -> str:
    cfg = yaml.safe_load((root / "data" / "toy.yaml").read_text())
    cfg["groups"].update(groups)
    path = root / f"toy_{'_'.join(groups) or 'plain'}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_without_the_test_rows_groups_02_stops_before_training(comp_dir, tmp_path):
    out = tmp_path / "out"
    stage("00_prepare.py", _competition(comp_dir), "--output-dir", out)
    assert "group" not in pd.read_csv(out / "test.csv")
    stage("01_features.py", comp_dir / "gn.yaml", "--output-dir", out, "--workers", "1")
    r = stage("02_train.py", comp_dir / "gn.yaml", "--output-dir", out, check=False)
    assert r.returncode == 1 and "gn: inputs.group_norm needs the test rows' groups too: set groups.test: true in " \
        "the competition config and run 00_prepare.py again" in r.stderr, r.stderr
    assert not (out / "models" / "gn").exists()  # nothing trained
    wave = yaml.safe_load((comp_dir / "gn.yaml").read_text())  # the waveform path: its front end's example_norm
    wave.update(features={"name": "waveform", "set": "wave"}, frontend={"name": "log_mel", "params": {"n_mels": 16}})
    (tmp_path / "wave.yaml").write_text(yaml.safe_dump(wave))
    stage("00_prepare.py", _competition(comp_dir, test=True), "--output-dir", out)
    stage("01_features.py", tmp_path / "wave.yaml", "--output-dir", out, "--workers", "1")
    r = stage("02_train.py", tmp_path / "wave.yaml", "--output-dir", out, check=False)
    assert r.returncode == 1 and "inputs.group_norm normalises cached spectrograms" in r.stderr and \
        "frontend.params.example_norm" in r.stderr, r.stderr


def test_trained_predicted_and_bundled_with_the_groups_of_each_split(comp_dir, tmp_path):
    """00 with ``groups.test`` writes each test row's group (by the same regex); 02 trains on the
    normalised inputs (other OOF probabilities than without), 03 predicts the test rows with their
    own groups' means, and the bundle predicts what 03 did."""
    from lib.core.paths import Outputs
    from lib.inputs import load_inputs
    from lib.components import load_experiment

    out = tmp_path / "out"
    data = comp_dir / "data"
    stage("00_prepare.py", _competition(comp_dir, test=True), "--output-dir", out)
    assert pd.read_csv(out / "test.csv")["group"].tolist() == ["s90", "s90"]  # by the same regex as training rows
    stage("01_features.py", comp_dir / "gn.yaml", "--output-dir", out, "--workers", "1")
    o = Outputs(out)
    cfg, comp = load_experiment(comp_dir / "gn.yaml"), o.load_competition()
    train = load_inputs(o, cfg, "train", o.load_split("train"), comp, CPU)
    groups = o.load_split("train")["group"].to_numpy()
    x = train.batch(np.arange(len(groups)), CPU)[0].double()
    for g in np.unique(groups):  # every group's mean is 0 in every band
        assert x[groups == g].mean((0, 3)).abs().max() < 1e-5
    stage("02_train.py", comp_dir / "gn.yaml", "--output-dir", out)
    stage("02_train.py", comp_dir / "gn.yaml", "--set", "inputs.group_norm=false", "--name", "plain", "--output-dir", out)
    assert not np.allclose(pd.read_csv(out / "oof/gn.csv").p_b, pd.read_csv(out / "oof/plain.csv").p_b)
    stage("03_infer.py", comp_dir / "gn.yaml", "--output-dir", out)
    stage("04_ensemble.py", "gn", "--output-dir", out)
    stage("05_bundle.py", "--output-dir", out, "--to", tmp_path / "bundle")
    stage("predict_bundle.py", tmp_path / "bundle", "--data-dir", data, "--work-dir", tmp_path / "work")
    ours = pd.read_csv(tmp_path / "work/test_blend.csv").set_index("id")
    theirs = pd.read_csv(out / "preds/gn.csv").set_index("id")
    np.testing.assert_allclose(ours.loc[theirs.index, "p_b"], theirs["p_b"], atol=1e-6)
    test = load_inputs(o, cfg, "test", o.load_split("test"), comp, CPU)  # the test rows' own group's mean
    x = test.batch(np.arange(2), CPU)[0].double()
    assert x.mean((0, 3)).abs().max() < 1e-5 and x.abs().max() > 0.1


def test_a_group_column_the_test_rows_lack_is_a_problem_not_a_traceback():
    """A folder of test files (``predict_bundle.py --test-files``) has no columns: a group column
    the bundle's config names is a problem naming the key and the fix (a review saw a KeyError)."""
    from lib.data.prepare import _groups

    rows = pd.DataFrame({"id": ["a.wav", "b.wav"], "where": ["/data/a.wav", "/data/b.wav"]})
    problems: list[str] = []
    assert _groups(rows, {"column": "patient", "regex": None}, None, problems) == ["a.wav", "b.wav"]
    assert problems == ["/data/a.wav: no column 'patient' for the rows' groups (groups.column; a folder of files has "
                        "no columns: list them in a CSV with it, e.g. --test-csv)"]
