"""The stage functions a notebook calls (README, "From a notebook"): the whole chain in one
process with output folders given as strings, a variant from overrides that leaves the base
experiment's models alone, and clear errors for the arguments a notebook user gets wrong."""
from __future__ import annotations

import pandas as pd
import pytest
import yaml
from conftest import ROOT, make_toy_competition

from lib.components import load_competition, load_experiment
from lib.core.errors import ConfigError
from lib.data.prepare import prepare
from lib.evaluation.ensemble import run_ensemble
from lib.features.cache import build_feature_set
from lib.inference.infer import infer_experiment
from lib.runs.experiment import train_experiment


def test_the_chain_from_a_notebook(tmp_path):
    make_toy_competition(tmp_path / "data", n=24)
    exp_path = tmp_path / "hgb.yaml"
    exp_path.write_text(yaml.safe_dump({
        "base": str(ROOT / "configs/zoo/hgb.yaml"), "model": {"params": {"max_iter": 10}},
        "features": {"name": "log_mel", "set": "lm16", "params": {"n_mels": 16, "n_fft": 512, "hop_length": 256}}}))
    out = str(tmp_path / "out")  # a string, as a notebook writes it
    with pytest.raises(ConfigError, match=r"prepare's cfg: a config as lib.components.load_competition\(path\) returns"):
        prepare(str(tmp_path / "data/toy.yaml"), out)
    prepare(load_competition(tmp_path / "data/toy.yaml"), out)
    cfg = load_experiment(exp_path)
    with pytest.raises(ConfigError, match=r"give the experiment's features section \(cfg\['features'\] of 'hgb'\)"):
        build_feature_set(out, cfg)
    build_feature_set(out, cfg["features"])
    with pytest.raises(ConfigError, match=r"train_experiment's cfg: a config as lib.components.load_experiment"):
        train_experiment(str(exp_path), out)
    train_experiment(cfg, out)
    base_oof = pd.read_csv(tmp_path / "out/oof/hgb.csv")
    variant = load_experiment(exp_path, ["model.params.max_iter=3"])  # a --set variant: a name of its own
    assert variant["name"].startswith("hgb+")
    train_experiment(variant, out)
    assert pd.read_csv(tmp_path / "out/oof/hgb.csv").equals(base_oof)  # the base experiment untouched (probe)
    with pytest.raises(ConfigError, match=r"exp is the experiment's name \(cfg\['name'\], e.g. 'wave_cnn'\)"):
        infer_experiment(cfg, out)
    infer_experiment("hgb", out)
    r = run_ensemble(out, "hgb")  # one name as a string: that experiment, not its letters
    assert r["method"] == "single" and list(r["table"]["experiment"]) == ["hgb"]
    assert (tmp_path / "out/submission.csv").is_file()
