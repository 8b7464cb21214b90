"""Configs that never lie: every class of config error is reported before any work, naming the
file (or --set override) and the key; variant runs get their own experiment name; --help is fast."""
import signal
import subprocess
import sys
import time

import pytest
import yaml
from conftest import ROOT

from lib.cli import experiment, run_name
from lib.core.config import variant_name
from lib.components import load_competition, load_experiment
from lib.core.errors import ConfigError

COMPETITION = {
    "task": "binary", "classes": ["a", "b"], "audio": {"clip_seconds": 1.0},
    "train": {"csv": "train.csv", "id_column": "id", "target_column": "label"},
}


def _write(path, cfg):
    path.write_text(cfg if isinstance(cfg, str) else yaml.safe_dump(cfg))
    return path


def _error(load, *args) -> str:
    with pytest.raises(ConfigError) as err:
        load(*args)
    return str(err.value)


def test_unknown_key_in_competition_file(tmp_path):
    path = _write(tmp_path / "comp.yaml", {**COMPETITION, "folds": {"n_fold": 3}})
    msg = _error(load_competition, path)
    assert f"unknown key 'folds.n_fold' in {path}; did you mean 'folds.n_folds'?" in msg


def test_unknown_key_in_experiment_file_names_the_file_that_has_it(tmp_path):
    base = _write(tmp_path / "base.yaml", {"train": {"epoch": 3}})
    child = _write(tmp_path / "child.yaml", {"base": "base.yaml", "train": {"batch_size": 8}})
    msg = _error(load_experiment, child)
    assert f"unknown key 'train.epoch' in {base}; did you mean 'train.epochs'?" in msg


def test_an_unknown_key_with_a_stray_space_is_said_as_such(tmp_path):
    spaced = _write(tmp_path / "spaced.yaml", {"base": str(ROOT / "configs/cnn_small.yaml"), "train": {"epochs ": 3}})
    assert "looks the same but is other text" in _error(load_experiment, spaced)  # not "did you mean" (review)


def test_unknown_key_in_set_override():
    msg = _error(load_experiment, ROOT / "configs/cnn_small.yaml", ["train.epoch=3"])
    assert "unknown key 'train.epoch' in --set train.epoch=3; did you mean 'train.epochs'?" in msg
    # a key of a section with nothing close: the section's keys, not the section itself (probe: "did you mean 'train.swa'")
    assert _error(load_experiment, ROOT / "configs/cnn_small.yaml", ["train.swa={begin: 0.5}"]).endswith(
        "unknown key 'train.swa.begin' in --set train.swa={begin: 0.5}; train.swa takes start")
    assert _error(load_experiment, ROOT / "configs/cnn_small.yaml", ["augment.spec_augment.freq_masks=2"]).endswith(
        "did you mean 'augment.spec_augment.freq_mask'?")
    assert _error(load_experiment, ROOT / "configs/cnn_small.yaml", ["train.swa_start=0.5"]).endswith(
        "did you mean 'train.swa.start'?")  # a key nested deeper in the section (review)
    assert _error(load_experiment, ROOT / "configs/cnn_small.yaml", ["augment.mixup.beta=1"]).endswith(
        "augment.mixup takes p, alpha")  # not the closest whole dotted key, 'augment.mixup.p' (review)
    assert "train takes epochs, batch_size" in _error(load_experiment, ROOT / "configs/cnn_small.yaml", ["train.lr=1"])


def test_a_bad_parameter_of_a_waveform_augmentation_set_on_the_command_line_names_the_set():
    """It named configs/wave_cnn.yaml, which has no such parameter (probe)."""
    over = "augment.waveform=[{name: gain, params: {p: 0.5, max_bd: 3}}]"
    msg = _error(load_experiment, ROOT / "configs/wave_cnn.yaml", [over])
    assert f"unknown parameter augment.waveform[0].params.max_bd in --set {over}" in msg
    over = "augment.waveform=[{name: gain, params: {p: 1.5}}]"
    assert _error(load_experiment, ROOT / "configs/wave_cnn.yaml", [over]).startswith(f"--set {over}: ")


def test_set_under_an_option_that_is_off_turns_it_on_and_a_scalar_is_no_mapping():
    cfg = load_experiment(ROOT / "configs/cnn_small.yaml", ["train.swa.start=0.5"])  # train.swa: null by default
    assert cfg["train"]["swa"]["start"] == 0.5
    msg = _error(load_experiment, ROOT / "configs/cnn_small.yaml", ["train.swa.start=1.5"])
    assert "train.swa.start" in msg and "1.5" in msg  # then checked like any value
    msg = _error(load_experiment, ROOT / "configs/cnn_small.yaml", ["frontend.params.n_mels=32"])  # frontend: null
    assert msg == "--set frontend.params.n_mels=32: missing required key 'frontend.name'"  # the override, not the file
    msg = _error(load_experiment, ROOT / "configs/cnn_small.yaml", ["train.epochs.x=1"])
    assert msg == "--set train.epochs.x=1: train.epochs is 30, not a mapping of options"


def test_an_empty_fold_list_is_a_config_error():
    msg = _error(load_experiment, ROOT / "configs/cnn_small.yaml", ["train.folds=[]"])
    assert msg.startswith("--set train.folds=[]: train.folds: list should have at least 1 item"), msg


def test_wrong_type(tmp_path):
    path = _write(tmp_path / "x.yaml", 'train: {epochs: "ten"}\n')
    msg = _error(load_experiment, path)
    assert f"{path}: train.epochs:" in msg and "integer" in msg and "'ten'" in msg


@pytest.mark.parametrize("key, value", [("epochs", 0), ("batch_size", -1), ("patience", 0)])
def test_impossible_training_values(tmp_path, key, value):
    path = _write(tmp_path / "x.yaml", {"train": {key: value}})
    msg = _error(load_experiment, path)
    assert f"{path}: train.{key}:" in msg and "greater than 0" in msg


@pytest.mark.parametrize("key, value", [("clip_seconds", 0), ("hop_seconds", -0.5), ("sample_rate", "fast"),
                                        ("sample_rate", 0), ("sample_rate", 16000.5)])
def test_impossible_audio_values(tmp_path, key, value):
    path = _write(tmp_path / "c.yaml", {**COMPETITION, "audio": {"clip_seconds": 1.0, key: value}})
    msg = _error(load_competition, path)
    assert f"{path}: audio.{key}:" in msg


def test_sample_rate_written_as_a_float_is_a_whole_number_of_hz(tmp_path):
    path = _write(tmp_path / "c.yaml", yaml.safe_dump({**COMPETITION, "audio": {"clip_seconds": 1.0, "sample_rate": 1}})
                  .replace("sample_rate: 1\n", "sample_rate: 16e3\n"))
    rate = load_competition(path)["audio"]["sample_rate"]
    assert rate == 16000 and isinstance(rate, int)


def test_unknown_fold_scheme_names_the_known_ones(tmp_path):
    path = _write(tmp_path / "c.yaml", {**COMPETITION, "folds": {"scheme": "stratifed"}})
    msg = _error(load_competition, path)
    assert str(path) in msg and "did you mean 'stratified'?" in msg and "predefined" in msg


def test_floats_without_a_dot_and_params_types(tmp_path):
    path = _write(tmp_path / "x.yaml", "optimizer: {name: adamw, params: {lr: 1e-3, weight_decay: 5E-2}}\n")
    params = load_experiment(path)["optimizer"]["params"]
    assert params == {"lr": 0.001, "weight_decay": 0.05} and isinstance(params["lr"], float)
    assert load_experiment(path, ["optimizer.params.lr=2e-4"])["optimizer"]["params"]["lr"] == 0.0002
    bad = _write(tmp_path / "bad.yaml", "optimizer: {name: adamw, params: {lr: fast}}\n")
    msg = _error(load_experiment, bad)
    assert f"{bad}: optimizer.params.lr must be a number, got 'fast'" in msg
    msg = _error(load_experiment, ROOT / "configs/cnn_small.yaml", ["features.params.n_mels=many"])
    assert "--set features.params.n_mels=many: features.params.n_mels must be an integer" in msg
    for config, override in (("cnn_small", "model.params.channels=16"), ("zoo/resnet", "model.params.blocks=2")):
        msg = _error(load_experiment, ROOT / f"configs/{config}.yaml", [override])  # a list there (probe: a TypeError in fold 0)
        assert msg.endswith("must be a list of at least 1 item(s), each an integer > 0, got " + override.split("=")[1])
    assert load_experiment(ROOT / "configs/zoo/wavenet.yaml", ["model.params.channels=32"])["model"]["params"]["channels"] == 32


def test_base_cycles(tmp_path):
    own = _write(tmp_path / "own.yaml", {"base": "own.yaml"})
    assert "'base' chain loops" in _error(load_experiment, own) and str(own) in _error(load_experiment, own)
    _write(tmp_path / "a.yaml", {"base": "b.yaml"})
    _write(tmp_path / "b.yaml", {"base": "a.yaml"})
    msg = _error(load_experiment, tmp_path / "a.yaml")
    assert "'base' chain loops" in msg and "a.yaml -> " in msg and "b.yaml -> " in msg


def test_misspelt_registry_name(tmp_path):
    path = _write(tmp_path / "x.yaml", {"model": {"name": "vgq"}})
    msg = _error(load_experiment, path)
    assert str(path) in msg and "unknown model 'vgq'" in msg and "known: cnn, cnn14, cnn8," in msg and "did you mean 'vgg'" in msg
    assert "did you mean 'vgg'?" in msg
    comp = _write(tmp_path / "c.yaml", {**COMPETITION, "metric": "acuracy"})
    msg = _error(load_competition, comp)
    assert str(comp) in msg and "unknown metric 'acuracy'" in msg and "did you mean 'accuracy'?" in msg


def test_misspelt_component_param(tmp_path):
    path = _write(tmp_path / "x.yaml", {"model": {"name": "cnn", "params": {"chanels": [8, 16]}}})
    msg = _error(load_experiment, path)
    assert f"unknown parameter model.params.chanels in {path}" in msg and "did you mean 'channels'?" in msg
    assert "in_channels" not in msg  # supplied by the code, not settable
    # arguments the code passes are not settable either
    msg = _error(load_experiment, ROOT / "configs/cnn_small.yaml", ["scheduler.params.epochs=3"])
    assert "scheduler.params.epochs is not settable: the code gives it" in msg


def test_misspelt_registry_name_inside_params(tmp_path):
    path = _write(tmp_path / "x.yaml", {"model": {"name": "vgg", "params": {"pooling": "atention"}}})
    msg = _error(load_experiment, path)
    assert f"{path} (model.params.pooling): unknown pooling 'atention'" in msg and "did you mean 'attention'?" in msg
    assert load_experiment(path, ["model.params.pooling=gem"])["model"]["params"]["pooling"] == "gem"


def test_a_head_width_beside_a_pooling_that_classifies_itself_is_refused(tmp_path):
    path = _write(tmp_path / "x.yaml", {"model": {"name": "cnn", "params": {"pooling": "attention", "head_hidden": 64}}})
    msg = _error(load_experiment, path)
    assert f"{path}: model.params.head_hidden 64 has no effect with model.params.pooling 'attention'" in msg
    msg = _error(load_experiment, ROOT / "configs/wave_long.yaml", ["model.params.head_hidden=[32]"])
    assert "--set model.params.head_hidden=[32]: model.params.head_hidden [32] has no effect" in msg
    assert load_experiment(path, ["model.params.pooling=mean_max"])["model"]["params"]["head_hidden"] == 64


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = _write(tmp_path / "x.yaml", "train:\n  epochs: 3\n batch_size: 4\n")
    msg = _error(load_experiment, path)
    assert f"{path}: YAML syntax error at line 3" in msg


def test_key_given_twice_is_refused(tmp_path):
    """PyYAML keeps the last of two equal keys: the first train section (epochs 2) vanished."""
    path = _write(tmp_path / "x.yaml", f"base: {ROOT / 'configs/cnn_small.yaml'}\ntrain: {{epochs: 2}}\n"
                                       "model: {params: {dropout: 0.1}}\ntrain: {ema: null}\n")
    msg = _error(load_experiment, path)
    assert f"{path}: YAML syntax error at line 4, column 1: key 'train' is given twice in one mapping (first at line 2)" in msg
    fixed = _write(tmp_path / "y.yaml", f"base: {ROOT / 'configs/cnn_small.yaml'}\ntrain: {{epochs: 2, ema: null}}\n")
    assert load_experiment(fixed)["train"]["epochs"] == 2
    assert "key 'p' is given twice" in _error(load_experiment, fixed, ["augment.mixup={p: 0.5, p: 0.2}"])
    # YAML merge keys override what they merge, anchors merged twice included: not duplicates
    from lib.core.config import parse_yaml

    text = "defaults: &c {lr: 1}\ntrain:\n  opt: &b\n    <<: *c\n    lr: 2\nother:\n  <<: *b\n"
    assert parse_yaml(text, "t") == {"defaults": {"lr": 1}, "train": {"opt": {"lr": 2}}, "other": {"lr": 2}}


def test_names_that_become_folders_stay_inside_the_output_folder(tmp_path):
    """features.set ../../x wrote a whole feature cache outside the output folder (probe)."""
    from lib.cli import experiment

    for bad in ("../../escaped", "/tmp/x", ".hidden", "a\\b"):
        msg = _error(load_experiment, ROOT / "configs/cnn_small.yaml", [f"features.set={bad}"])
        assert "features.set: one folder name expected" in msg and repr(bad) in msg
        (tmp_path / "named.yaml").write_text(yaml.safe_dump({"base": str(ROOT / "configs/cnn_small.yaml"), "name": bad}))
        msg = _error(load_experiment, tmp_path / "named.yaml")  # (a --set name=...: refused, --name names a run)
        assert "name: one folder name expected" in msg and repr(bad) in msg
    assert load_experiment(ROOT / "configs/cnn_small.yaml", ["features.set=my set+2"])["features"]["set"] == "my set+2"
    msg = _error(experiment, str(ROOT / "configs/cnn_small.yaml"), [], "../x")
    assert msg == "--name: one folder name expected (no '/' or '\\', not starting with '.'): it names a folder or " \
                  "file under the output folder, got '../x'"


@pytest.mark.parametrize("config, grid, expected", [
    ("zoo/hgb", "{learning_ratee: [0.1]}", "model.params.grid: 'learning_ratee' is not a parameter of "
                                           "HistGradientBoostingClassifier; did you mean 'learning_rate'?"),
    ("zoo/hgb", "{learning_rate: [0.1, -0.1]}", "model.params.grid.learning_rate: each value must be a number > 0, got -0.1"),
    ("zoo/logreg", "{CC: [1.0]}", "model.params.grid: 'CC' is not a parameter of LogisticRegression; did you mean 'C'?"),
    ("zoo/hgb", "[1]", "model.params.grid must map parameter names to non-empty lists of values, got [1]")])
def test_sklearn_grid_is_checked_at_load(config, grid, expected):
    """A misspelt or out-of-range grid entry passed the load check, then scikit-learn raised a
    traceback in fold 0 (probe)."""
    msg = _error(load_experiment, ROOT / f"configs/{config}.yaml", [f"model.params.grid={grid}"])
    assert msg == f"--set model.params.grid={grid}: {expected}"
    ok = load_experiment(ROOT / f"configs/{config}.yaml", ["model.params.grid={max_iter: [100, 200]}"])
    assert ok["model"]["params"]["grid"] == {"max_iter": [100, 200]}  # the estimator's own parameters


def test_a_target_column_beside_a_format_of_class_columns_is_refused(tmp_path):
    """Switching format to probabilities and keeping target_column: 00 asked the sample for a
    column the format does not write (probe)."""
    cfg = dict(COMPETITION, submission={"sample": "s.csv", "id_column": "id", "target_column": "Target",
                                        "format": "probabilities"})
    path = _write(tmp_path / "c.yaml", cfg)
    assert _error(load_competition, path) == (
        f"{path} [submission]: target_column 'Target' is the column of formats label and probability; format "
        f"probabilities writes a column per class, named as the class: remove target_column (given by a base: "
        f"config, write `target_column: null` under submission)")
    path = _write(tmp_path / "m.yaml", dict(COMPETITION, task="multiclass", classes=["a", "b", "c"], positive="a"))
    assert "positive 'a' names the positive class of a binary task; this one is multiclass" in _error(load_competition, path)


def test_network_settings_given_for_a_scikit_learn_member_are_refused(tmp_path):
    """``train.epochs`` or an optimiser set in an ``hgb`` file were ignored without a word (its fit
    has neither); a network config that the member's file builds on may set them."""
    member = _write(tmp_path / "member.yaml", {"base": str(ROOT / "configs/cnn_small.yaml"), "model": {"name": "hgb"},
                                               "train": {"epochs": 5, "class_weights": "balanced"}})
    assert _error(load_experiment, member) == (
        f"{member}: train.epochs does not apply to the scikit-learn member 'hgb': it is fitted once per fold, "
        f"without epochs, optimiser, schedule, loss or augmentation (docs/zoo.md); remove it")
    shifted = _write(tmp_path / "shifted.yaml", {"base": "member.yaml", "tta": {"shifts": [0.0, 0.25]}})  # a no-op
    _write(member, {"base": str(ROOT / "configs/cnn_small.yaml"), "model": {"name": "hgb"}})  # (probe: said nothing)
    assert _error(load_experiment, shifted).startswith(f"{shifted}: tta.shifts does not apply to the scikit-learn member")
    weighted = ["model.params.recording_weights=true"]  # not for multi-label tasks: said at load, not in fold 0
    multi = {"name": "ml", "task": "multilabel", "classes": ["a", "b"], "metric": "macro_f1", "metrics": ["macro_f1"]}
    assert "model.params.recording_weights is not for multi-label tasks (competition 'ml'" in _error(
        load_experiment, ROOT / "configs/zoo/hgb.yaml", weighted, multi)
    assert load_experiment(ROOT / "configs/zoo/hgb.yaml", weighted, dict(multi, task="multiclass"))
    _write(member, {"base": str(ROOT / "configs/cnn_small.yaml"), "model": {"name": "hgb"}})
    child = _write(tmp_path / "child.yaml", {"base": "member.yaml", "optimizer": {"params": {"lr": 0.1}}})
    assert _error(load_experiment, child).startswith(f"{child}: optimizer does not apply to the scikit-learn member")
    sampled = _write(tmp_path / "sampled.yaml", {"base": "member.yaml", "train": {"sampler": "balanced"}})
    assert _error(load_experiment, sampled).startswith(f"{sampled}: train.sampler does not apply to the scikit-learn")
    # a --set model.name=hgb on a network's config (a sweep over model.name): its files are the network's (review)
    assert load_experiment(ROOT / "configs/cnn_small.yaml", ["model.name=hgb"])["model"]["name"] == "hgb"
    # a --set goes to every experiment of a run (run_all.sh --set train.epochs=5): passed over for the member
    assert load_experiment(ROOT / "configs/zoo/hgb.yaml", ["train.epochs=3"])["model"]["name"] == "hgb"
    cfg = load_experiment(ROOT / "configs/zoo/hgb.yaml", ["train.folds=[0]", "train.class_weights=balanced"])
    assert cfg["train"]["epochs"] == load_experiment(ROOT / "configs/cnn_small.yaml")["train"]["epochs"]  # the base's
    assert load_experiment(ROOT / "configs/wave_cnn.yaml", ["train.epochs=3"])["train"]["epochs"] == 3
    # the resolved config 02 writes (every default filled in) is what 03 and sweeps' commands read (verification)
    resolved = tmp_path / "out/models/hgb/config.yaml"
    resolved.parent.mkdir(parents=True)
    resolved.write_text(yaml.safe_dump(dict(cfg, name="hgb"), sort_keys=False))
    assert load_experiment(resolved) == dict(cfg, name="hgb")
    copied = _write(tmp_path / "copied.yaml", yaml.safe_dump(dict(cfg, name="hgb"), sort_keys=False))
    assert "train.epochs" in _error(load_experiment, copied)  # a user's own file of it: refused as before


@pytest.mark.parametrize("override, expected", [
    ("augment.waveform=[{name: gain}, {name: noise, params: {color: red}}]",
     "augment.waveform[1] (noise): color must be white or pink (got 'red')"),
    ("augment.waveform=[{name: noise, params: {min_snr_db: 50}}]",
     "augment.waveform[0] (noise): min_snr_db must be <= max_snr_db (got 50 > 30.0)"),
    ("scheduler={name: one_cycle, params: {anneal_strategy: cubic}}",
     "scheduler.params: anneal_strategy")])  # (the rest in torch's words)
def test_components_own_checks_run_at_load(override, expected):
    """These passed the load check and failed when a fold started: after the experiments before
    them in the same 02 run had trained (probe)."""
    assert _error(load_experiment, ROOT / "configs/wave_cnn.yaml", [override]).startswith(f"--set {override}: {expected}")
    # a valid one_cycle whose first step divided by zero on the check's own step count (review)
    ok = ["scheduler={name: one_cycle, params: {pct_start: 0.1}}", "train.epochs=10"]
    assert load_experiment(ROOT / "configs/cnn_small.yaml", ok)["scheduler"]["name"] == "one_cycle"


def test_keys_inside_list_entries_are_named_with_their_index(tmp_path):
    """The walk stopped at the list: "unknown key 'augment.waveform'; did you mean
    'augment.waveform'?" without the misspelt key (probe)."""
    o = "augment.waveform=[{name: gain, params: {p: 0.5}}, {name: noise, parms: {p: 0.3}}]"
    assert _error(load_experiment, ROOT / "configs/wave_cnn.yaml", [o]) == (
        f"unknown key 'augment.waveform[1].parms' in --set {o}; did you mean 'augment.waveform.params'?")
    o = "augment.waveform=[{name: gain, params: {p: 5}}]"
    assert _error(load_experiment, ROOT / "configs/wave_cnn.yaml", [o]).endswith(
        "augment.waveform[0].params.p must be a number in [0, 1], got 5")
    # a missing or unknown name in an entry that an override wrote named the config file (probe)
    o = "augment.waveform=[{name: gain}, {params: {p: 0.5}}]"
    assert _error(load_experiment, ROOT / "configs/wave_cnn.yaml", [o]) == (
        f"--set {o}: missing required key 'augment.waveform[1].name'")
    o = "augment.waveform=[{name: gainz}]"
    assert _error(load_experiment, ROOT / "configs/wave_cnn.yaml", [o]).startswith(
        f"--set {o} (augment.waveform[0].name): unknown waveform augmentation 'gainz'")
    path = _write(tmp_path / "c.yaml", {**COMPETITION, "decision": {"mask": [{"wher": "x == 1", "classes": ["a"]}]}})
    msg = _error(load_competition, path)
    assert f"{path}: missing required key 'decision.mask[0].where'" in msg
    assert f"unknown key 'decision.mask[0].wher' in {path}; did you mean 'decision.mask.where'?" in msg


def test_class_names_read_as_booleans_are_refused_with_a_hint(tmp_path):
    """classes: [no, yes] became 'False'/'True', and 00 refused every row's label (probe)."""
    path = _write(tmp_path / "c.yaml", yaml.safe_dump({**COMPETITION, "classes": [False, True]}))
    assert _error(load_competition, path) == (f"{path}: classes [False, True]: YAML reads yes, no, on, off, true and "
                                              f"false without quotes as booleans; quote the class names (e.g. \"no\")")
    path = _write(tmp_path / "p.yaml", yaml.safe_dump({**COMPETITION, "positive": True}))
    assert "positive True: YAML reads yes, no" in _error(load_competition, path)
    quoted = _write(tmp_path / "q.yaml", "classes: ['no', 'yes']\n" + yaml.safe_dump({**COMPETITION, "classes": None})
                    .replace("classes: null\n", ""))
    assert load_competition(quoted)["classes"] == ["no", "yes"]


def test_a_data_dir_beside_the_config_but_not_in_the_project_is_named(tmp_path):
    """data_dir: comp in a config kept in one's own folder meant the project's comp/ ("data folder
    not found" at 00, the folder beside the config unsaid; two probes): refused at load, naming both."""
    (tmp_path / "comp").mkdir()
    path = _write(tmp_path / "c.yaml", yaml.safe_dump({**COMPETITION, "data_dir": "comp"}))
    assert _error(load_competition, path) == (
        f"{path}: data_dir 'comp' is relative to the project folder ({ROOT}), where there is no such folder; the "
        f"folder beside this config is {tmp_path / 'comp'}: write that path as data_dir, or pass --data-dir "
        f"{tmp_path / 'comp'}")
    assert load_competition(path, tmp_path / "comp")["data_dir"] == str(tmp_path / "comp")  # --data-dir: as given
    (tmp_path / "comp").rmdir()  # nowhere: 00 says the data folder is not found, as before
    assert load_competition(path)["data_dir"] == str(ROOT / "comp")


def test_missing_config_file(tmp_path):
    assert f"config file not found: {tmp_path / 'no.yaml'}" in _error(load_experiment, tmp_path / "no.yaml")


def test_cuda_device_without_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    path = _write(tmp_path / "x.yaml", {"train": {"device": "cuda"}})
    msg = _error(load_experiment, path)
    assert f"{path}: train.device is 'cuda'" in msg and "no CUDA GPU" in msg


def test_variant_names(capsys):
    assert variant_name("cnn_small", []) == "cnn_small"
    assert variant_name("cnn_small", ["train.folds=[0]", "train.device=cpu", "train.compile=true"]) == "cnn_small"
    name = variant_name("cnn_small", ["train.epochs=5", "train.folds=[1]"])
    assert name.startswith("cnn_small+") and len(name) == len("cnn_small+") + 8
    assert name == variant_name("cnn_small", ["train.folds=[0]", "train.epochs=5"])  # folds merge; order-free
    assert variant_name("cnn_small", ["train.epochs=6"]) != name
    assert variant_name("cnn_small", ["pretrain.epochs=7", "train.epochs=5"]) == name  # pretrain.py's own (probe)
    assert variant_name("cnn_small", ["train.epochs=5", "model.params.dropout=0.1"]) == \
        variant_name("cnn_small", ["model.params.dropout=0.1", "train.epochs=5"])
    cfg = experiment(str(ROOT / "configs/cnn_small.yaml"), ["train.epochs=5"], announce=True)
    assert cfg["name"] == variant_name("cnn_small", ["train.epochs=5"]) and cfg["train"]["epochs"] == 5
    assert f"variant of cnn_small (--set train.epochs=5): experiment {cfg['name']}" in capsys.readouterr().out
    assert experiment(str(ROOT / "configs/cnn_small.yaml"), ["train.epochs=5"], name="mine")["name"] == "mine"
    name_of = lambda config, *sets: subprocess.run(  # noqa: E731  (run_all.sh's names of its runs)
        [sys.executable, "-m", "lib.cli", "name", config, *[a for s in sets for a in ("--set", s)]],
        cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert name_of("configs/cnn_small.yaml", "train.epochs=5") == cfg["name"]
    # from a notebook, load_experiment names the same variant (it kept the base name, and the variant's training
    # replaced the base experiment's models: probe); overrides that change nothing trained keep the name
    assert load_experiment(ROOT / "configs/cnn_small.yaml", ["train.epochs=5"])["name"] == cfg["name"]
    assert load_experiment(ROOT / "configs/cnn_small.yaml", ["train.folds=[0]"])["name"] == "cnn_small"
    notebook = load_experiment(ROOT / "configs/zoo/hgb.yaml", ["train.epochs=5"])  # as the CLI names and trains it
    assert notebook == experiment(str(ROOT / "configs/zoo/hgb.yaml"), ["train.epochs=5"]) and notebook["name"] == "hgb"
    with pytest.raises(ConfigError, match=r"--set name=foo: a run is named with --name"):  # lib.cli name named
        experiment(str(ROOT / "configs/cnn_small.yaml"), ["name=foo"])  # another run than 02 trained (review)
    with pytest.raises(ConfigError, match=r"--set name=foo: a run is named with --name"):
        run_name(str(ROOT / "configs/cnn_small.yaml"), ["name=foo"])
    # a run's --set that a scikit-learn member has no use for is passed over, said, and leaves its name (probes)
    capsys.readouterr()
    hgb = experiment(str(ROOT / "configs/zoo/hgb.yaml"), ["train.epochs=5", "train.swa.start=0.5"], announce=True)
    assert hgb["name"] == "hgb" and hgb["train"]["epochs"] == load_experiment(ROOT / "configs/zoo/hgb.yaml")["train"]["epochs"]
    assert "hgb: --set train.epochs, train.swa.start passed over (the scikit-learn member 'hgb'" in capsys.readouterr().out
    assert name_of("configs/zoo/hgb.yaml", "train.epochs=5") == "hgb"
    # a run's --set train.sampler=balanced (a network's option) stopped a run with hgb in it (probe)
    assert experiment(str(ROOT / "configs/zoo/hgb.yaml"), ["train.sampler=balanced"])["name"] == "hgb"
    assert experiment(str(ROOT / "configs/cnn_small.yaml"), ["train.sampler=balanced"])["train"]["sampler"] == "balanced"
    # a key of a schedule the member has none of (checked against its default schedule, it stopped the run: review)
    assert experiment(str(ROOT / "configs/zoo/hgb.yaml"), ["scheduler.params.factor=0.5"])["name"] == "hgb"
    assert name_of("configs/zoo/mini_resnet.yaml", "scheduler.params.factor=0.5").startswith("mini_resnet+")
    assert experiment(str(ROOT / "configs/cnn_small.yaml"), ["model.params=null"])["model"]["params"] == {}  # (probe)
    with pytest.raises(ConfigError, match=r"--set train.epochs is given more than once \(train.epochs=2, train.epochs"
                                          r"=3\): give each key once"):  # (the last won, under another name: probe)
        experiment(str(ROOT / "configs/cnn_small.yaml"), ["train.epochs=2", "model.params.dropout=0.1", "train.epochs=3"])
    cached = ["features.name=log_mel", "features.set=lm", "frontend=null", "augment.waveform=[]"]  # valid only together
    assert experiment(str(ROOT / "configs/wave_cnn.yaml"), cached)["name"] == variant_name("wave_cnn", cached)
    other = experiment(str(ROOT / "configs/zoo/hgb.yaml"), ["train.epochs=5", "model.params.max_iter=50"])["name"]
    assert other.startswith("hgb+") and other == variant_name("hgb", ["model.params.max_iter=50"])
    assert name_of("configs/zoo/hgb.yaml", "train.epochs=5", "model.params.max_iter=50") == other


def test_every_shipped_config_loads():
    comps = sorted((ROOT / "configs/data").glob("*.yaml"))
    exps = sorted(p for p in (ROOT / "configs").rglob("*.yaml")
                  if not {"data", "sweeps"} & set(p.relative_to(ROOT / "configs").parts))
    assert len(comps) >= 3 and len(exps) >= 7
    for path in comps:
        assert load_competition(path)["audio"]["clip_seconds"] > 0
    for path in exps:
        cfg = load_experiment(path)
        assert cfg["name"] == path.stem and cfg["features"]["set"]


def test_unexpected_errors_keep_their_traceback(tmp_path):
    """Only PipelineErrors are one-line messages: a plain ValueError is a bug, shown with its traceback."""
    code = ("from lib import cli\n"
            "def boom():\n    raise ValueError('a bug')\n"
            "cli.run('stage', boom)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" in r.stderr and "ValueError: a bug" in r.stderr
    r = subprocess.run([sys.executable, "02_train.py", str(tmp_path / "no.yaml")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr and "config file not found" in r.stderr


def test_ctrl_c_exits_even_when_a_thread_is_left_behind():
    """A Ctrl-C that leaves a library's non-daemon thread running (as an interrupted
    ``Thread.start()`` does) still ends the stage with exit code 130 and its message."""
    code = ("import threading\nfrom lib import cli\n"
            "def main():\n    threading.Thread(target=threading.Event().wait).start()\n    raise KeyboardInterrupt\n"
            "cli.run('stage', main)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 130 and "stage: interrupted; finished artifacts are intact" in r.stderr


def test_sigterm_ends_a_stage_as_ctrl_c_does_and_says_how_to_carry_on():
    """SIGTERM (Kaggle's and a cluster's time limit) is handled as Ctrl-C: the stage's interrupted
    message with how a rerun carries on, and exit code 143 (a probe saw it end silently)."""
    code = ("import time\nfrom lib import cli\n"
            "def main():\n    print('ready', flush=True)\n    time.sleep(60)\n"
            "cli.run('stage', main)\n")
    p = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))
    assert p.stdout.readline() == "ready\n"
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143 and "stage: terminated (SIGTERM); finished artifacts are intact; run the same " \
                                   "command again: it redoes only what did not finish" in err, err


@pytest.mark.parametrize("stage", ["00_prepare.py", "01_features.py", "02_train.py", "03_infer.py", "04_ensemble.py"])
def test_help_is_fast_and_shows_the_usage_example(stage):
    t0 = time.time()
    r = subprocess.run([sys.executable, stage, "--help"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and time.time() - t0 < 2.0
    assert f"\n    python {stage} " in r.stdout  # the docstring's example, on its own line


def test_a_section_naming_another_component_replaces_the_inherited_one(tmp_path):
    base = _write(tmp_path / "base.yaml", {"model": {"name": "cnn", "params": {"channels": [8, 16], "dropout": 0.1}},
                                           "scheduler": {"name": "warmup_cosine", "params": {"warmup_epochs": 2}}})
    child = _write(tmp_path / "child.yaml", {"base": "base.yaml", "model": {"name": "resnet", "params": {"depth": 34}},
                                             "scheduler": {"name": "plateau"}})
    cfg = load_experiment(child)
    assert cfg["model"] == {"name": "resnet", "params": {"depth": 34}}  # no cnn 'channels' inherited
    assert cfg["scheduler"] == {"name": "plateau", "params": {}}
    same = _write(tmp_path / "same.yaml", {"base": "base.yaml", "model": {"params": {"dropout": 0.5}}})
    assert load_experiment(same)["model"]["params"] == {"channels": [8, 16], "dropout": 0.5}  # same component: merged
    # a base with a name of its own names the base alone: its children keep their file names
    named = _write(tmp_path / "named.yaml", {"name": "parentexp", "train": {"epochs": 3}})
    kid = _write(tmp_path / "kid.yaml", {"base": "named.yaml", "train": {"batch_size": 8}})
    assert load_experiment(named)["name"] == "parentexp" and load_experiment(kid)["name"] == "kid"
    assert load_experiment(kid)["train"]["epochs"] == 3


def test_a_model_with_its_own_front_end_needs_waveforms_and_no_frontend(tmp_path):
    msg = _error(load_experiment, _write(tmp_path / "a.yaml", {"model": {"name": "cnn14"}}))
    assert "a.yaml" in msg and "computes its own front end" in msg and "features: {name: waveform" in msg
    cfg = {"features": {"name": "waveform"}, "model": {"name": "cnn14"}, "frontend": {"name": "log_mel"}}
    assert "no frontend section" in _error(load_experiment, _write(tmp_path / "b.yaml", cfg))
    cfg.pop("frontend")
    assert load_experiment(_write(tmp_path / "c.yaml", cfg))["model"]["name"] == "cnn14"
    msg = _error(load_experiment, _write(tmp_path / "d.yaml", dict(cfg, model={"name": "cnn14", "params": {"freeze": 2}})))
    assert "unknown parameter model.params.freeze" in msg and "did you mean 'freeze_blocks'" in msg


def test_a_misspelt_timm_architecture_is_caught_when_the_config_loads(tmp_path):
    path = _write(tmp_path / "t.yaml", {"model": {"name": "timm", "params": {"arch": "convnext_tiniy"}}})
    msg = _error(load_experiment, path)
    assert str(path) in msg and "unknown timm architecture 'convnext_tiniy'" in msg and "did you mean 'convnext_tiny'" in msg


def test_set_naming_another_component_replaces_its_section():
    """--set scheduler.name=one_cycle kept the default warmup_cosine's warmup_epochs and failed, blaming
    the config file (probe); it now replaces the section as base: does, and later --set params apply."""
    from lib.components import load_experiment

    cfg = load_experiment(ROOT / "configs/cnn_small.yaml", ["scheduler.name=one_cycle", "scheduler.params.pct_start=0.2"])
    assert cfg["scheduler"] == {"name": "one_cycle", "params": {"pct_start": 0.2}}
    either = load_experiment(ROOT / "configs/cnn_small.yaml", ["scheduler.params.pct_start=0.2", "scheduler.name=one_cycle"])
    assert either["scheduler"] == cfg["scheduler"]  # any order (a sweep's space orders them as written: review)
    whole = load_experiment(ROOT / "configs/cnn_small.yaml", ["scheduler={name: one_cycle, params: {pct_start: 0.3}}",
                                                             "scheduler.name=plateau"])
    assert whole["scheduler"] == {"name": "plateau", "params": {}}  # the one_cycle section's params went with it
    same = load_experiment(ROOT / "configs/cnn_small.yaml", ["optimizer.name=adamw"])  # the same component: kept
    assert same["optimizer"] == load_experiment(ROOT / "configs/cnn_small.yaml")["optimizer"]


def test_a_child_of_a_named_base_is_named_after_its_own_file(tmp_path):
    """run_all.sh's ``python -m lib.cli name`` named the base (``load_yaml`` follows ``base:``) where
    02 and 03 train the child (review)."""
    (tmp_path / "base.yaml").write_text(f"base: {ROOT / 'configs/cnn_small.yaml'}\nname: mybase\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\n")

    assert run_name(str(tmp_path / "child.yaml"), []) == load_experiment(tmp_path / "child.yaml")["name"] == "child"
    assert run_name(str(tmp_path / "base.yaml"), []) == "mybase"
    assert experiment(str(tmp_path / "child.yaml"), [])["name"] == "child"
