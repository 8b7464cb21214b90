import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import make_toy_competition

from lib.config import ROOT, load_competition
from lib.prepare import InputError, group_of, id_to_file, prepare


def test_breathing_id_to_file_mapping():
    comp = load_competition(ROOT / "configs/data/breathing.yaml")
    assert id_to_file("steth_20180814_09_37_11_I_004", comp["train"]["audio"]) == "train/steth_20180814_09_37_11_004.wav"
    assert id_to_file("steth_20180814_09_37_11_E_010", comp["train"]["audio"]) == "train/steth_20180814_09_37_11_010.wav"
    assert id_to_file("steth_20190817_10_51_27_000.wav", comp["test"]["audio"]) == "test/steth_20190817_10_51_27_000.wav"
    assert group_of("steth_20180814_09_37_11_E_010", comp["groups"]) == "steth_20180814_09_37_11"


def test_prepare_writes_folds_and_test(tmp_path):
    comp = make_toy_competition(tmp_path / "data")
    summary = prepare(comp, tmp_path / "out")
    folds = pd.read_csv(tmp_path / "out/folds.csv", dtype=str)
    assert list(folds.columns) == ["id", "path", "target", "group", "fold", "sample_rate", "duration_s"]
    assert len(folds) == 12 and summary["sample_rate"] == 16000
    assert folds.groupby("group").fold.nunique().max() == 1
    assert pd.read_csv(tmp_path / "out/test.csv").id.tolist() == ["t0", "t1"]
    assert (tmp_path / "out/competition.yaml").exists()


def test_every_problem_is_reported_and_nothing_written(tmp_path):
    comp = make_toy_competition(tmp_path / "data")
    root = tmp_path / "data"
    train = pd.read_csv(root / "train.csv")
    train.loc[3, "label"] = "c"                 # unknown label, line 5
    train.loc[4, "id"] = train.loc[5, "id"]     # duplicate id, line 7
    train.loc[6, "label"] = ""                  # empty cell, line 8
    train.to_csv(root / "train.csv", index=False)
    (root / "train" / "s4_8.wav").unlink()      # missing audio, line 10
    (root / "train" / "s4_9.wav").write_bytes(b"broken")  # unreadable, line 11
    sf.write(root / "test" / "t1.wav", np.zeros(4000, np.float32), 8000)  # another sample rate
    with pytest.raises(InputError) as err:
        prepare(comp, tmp_path / "out")
    text = str(err.value)
    for needle in ("line 5: unknown label 'c'", "line 7: duplicate id 's2_5'", "line 8: empty 'label'",
                   "line 10 (id 's4_8')", "s4_8.wav: file not found", "line 11 (id 's4_9')", "unreadable",
                   "different sample rates", "t1.wav (8000 Hz)"):
        assert needle in text, needle
    assert not (tmp_path / "out").exists()
