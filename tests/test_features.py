import numpy as np
import pytest
from conftest import make_toy_competition

from lib.core.paths import MissingArtifact, Outputs
from lib.data.prepare import prepare
from lib.features.cache import build_feature_set, load_features


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
    spec, *_ = load_features(prepared, "lm", "train", ids=folds["id"])
    with pytest.raises(MissingArtifact, match="other rows"):
        load_features(prepared, "lm", "train", ids=folds["id"][::-1])
    changed = dict(section, params=dict(section["params"], n_mels=16))
    assert not build_feature_set(prepared, changed)["skipped"]  # settings changed: rebuilt


def test_missing_stage_is_named(tmp_path):
    with pytest.raises(MissingArtifact, match="run 00_prepare.py first"):
        build_feature_set(Outputs(tmp_path), {"name": "log_mel", "set": "x", "params": {}})
    with pytest.raises(MissingArtifact, match="run 01_features.py first"):
        load_features(Outputs(tmp_path), "x", "train")
