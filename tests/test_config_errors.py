"""No silent wrong values (issue 22): every numeric config value is range-checked when the config
is loaded, and bad folders, empty tables, one-class binary data and out-of-range sweeps stop a
stage with one line naming the file, key or folder, before any work and without a traceback.

User-facing cases run the stage scripts as a user would (in this process, as `conftest.stage` does;
in a process of its own where root must lose its privileges)."""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from conftest import ROOT, make_toy_competition, stage

from lib.core.artifacts import file_hash
from lib.core.errors import ConfigError

ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TQDM_DISABLE="1")
ENV.pop("PIPELINE_DEBUG", None)


def run(*args: str, setpriv: bool = False) -> subprocess.CompletedProcess:
    """Run a project script as ``python SCRIPT ARGS`` from the project folder would: in this process
    (``conftest.stage``: its exit code, stdout and stderr; a traceback fails the test), or with
    ``setpriv`` in a process of its own without the capabilities that let root write into a
    read-only folder (so that root sees what a user sees)."""
    if not (setpriv and os.geteuid() == 0):
        return stage(*args, check=False)
    cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", sys.executable, *map(str, args)]
    return subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, env=ENV, timeout=300)


@pytest.fixture(autouse=True)
def _as_a_user(monkeypatch):
    """The environment of ``ENV`` for the in-process runs too: no ``PIPELINE_DEBUG`` tracebacks, no bars."""
    monkeypatch.delenv("PIPELINE_DEBUG", raising=False)
    monkeypatch.setenv("TQDM_DISABLE", "1")


def error_of(r: subprocess.CompletedProcess, stage: str, one_line: bool = True) -> str:
    """The stage's error message (``<stage>: error: ...``), after checking exit code 1 and no traceback."""
    assert r.returncode == 1, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr
    marker = f"{stage}: error: "
    assert marker in r.stderr, r.stderr
    text = r.stderr[r.stderr.index(marker) + len(marker):].strip()
    if one_line:
        assert "\n" not in text, text
    return text


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A generated binary competition (12 train clips, 2 folds) and its config file."""
    root = tmp_path_factory.mktemp("toy")
    make_toy_competition(root / "data")
    return root / "data"


def _variant(toy, tmp_path, edit) -> str:
    """A copy of the toy competition under ``tmp_path`` changed by ``edit(folder)``; returns its config path."""
    data = tmp_path / "data"
    shutil.copytree(toy, data, symlinks=True)
    cfg = yaml.safe_load((data / "toy.yaml").read_text())
    cfg["data_dir"] = str(data)
    (data / "toy.yaml").write_text(yaml.safe_dump(cfg))
    edit(data)
    return str(data / "toy.yaml")


# --- numeric ranges of experiment configs (in-process: the same code the stages call) ----------------

@pytest.mark.parametrize("override, key, allowed", [
    ("loss.params.label_smoothing=2.0", "loss.params.label_smoothing", "[0, 1)"),
    ("loss.params.label_smoothing=-0.1", "loss.params.label_smoothing", "[0, 1)"),
    ("loss={name: focal, params: {gamma: -1}}", "loss.params.gamma", ">= 0"),
    ("loss={name: focal, params: {alpha: 1.5}}", "loss.params.alpha", "[0, 1]"),
    ("model.params.dropout=1.0", "model.params.dropout", "[0, 1)"),
    ("model.params.channels=[16, 0, 32]", "model.params.channels", "> 0"),
    ("model.params.channels=[]", "model.params.channels", "at least 1"),
    ("optimizer.params.lr=0", "optimizer.params.lr", "> 0"),
    ("optimizer.params.weight_decay=-0.01", "optimizer.params.weight_decay", ">= 0"),
    ("optimizer.params.betas=[0.9, 1.2]", "optimizer.params.betas", "[0, 1)"),
    ("scheduler.params.warmup_epochs=-1", "scheduler.params.warmup_epochs", ">= 0"),
    ("train.epochs=0", "train.epochs", "> 0"),
    ("train.batch_size=-8", "train.batch_size", "> 0"),
    ("train.folds=[-1]", "train.folds", ">= 0"),
    ("train.device=gpu", "train.device", "auto, cpu, cuda or cuda:N"),
    ("train.device=cuda:first", "train.device", "auto, cpu, cuda or cuda:N"),
    ("augment.mixup.alpha=0", "augment.mixup.alpha", "> 0"),
    ("augment.mixup.p=1.5", "augment.mixup.p", "[0, 1]"),
    ("augment.spec_augment.p=-0.5", "augment.spec_augment.p", "[0, 1]"),
    ("augment={mixup: {p: 0.8}, cutmix: {p: 0.5}}", "augment.mixup.p 0.8 + augment.cutmix.p 0.5", "more than 1"),
    ("loss={name: focal, params: {softmax: true}}", "loss.params.softmax is not settable: the code gives it",
     "takes: gamma, alpha, label_smoothing"),
    ("train.ema=1.0", "train.ema", "(0, 1)"),
    ("train.supcon={weight: 50}", "train.supcon.weight", "(0, 10]"),
    ("train.supcon={temperature: 7}", "train.supcon.temperature", "(0, 1]"),
    ("features.params.n_mels=0", "features.params.n_mels", "> 0"),
])
def test_out_of_range_values_name_key_and_range(override, key, allowed):
    from lib.components import load_experiment

    with pytest.raises(ConfigError) as e:
        load_experiment(ROOT / "configs" / "cnn_small.yaml", [override])
    msg = str(e.value)
    assert "\n" not in msg and f"--set {override}" in msg and key in msg and allowed in msg, msg


def test_range_error_names_the_config_file(tmp_path):
    from lib.components import load_experiment

    cfg = tmp_path / "smooth.yaml"
    cfg.write_text(f"base: {ROOT / 'configs' / 'cnn_small.yaml'}\nloss: {{name: bce, params: {{label_smoothing: 2.0}}}}\n"
                   f"model: {{name: cnn, params: {{dropout: 0.2}}}}\n")
    with pytest.raises(ConfigError, match=rf"^{cfg}: loss.params.label_smoothing must be a number in \[0, 1\), got 2.0$"):
        load_experiment(cfg)
    wave = tmp_path / "wave.yaml"
    wave.write_text(f"base: {ROOT / 'configs' / 'wave_cnn.yaml'}\naugment: {{waveform: [{{name: gain, params: {{p: 2}}}}]}}\n")
    with pytest.raises(ConfigError, match=rf"^{wave}: augment.waveform\[0\].params.p must be a number in \[0, 1\]"):
        load_experiment(wave)


def test_every_shipped_experiment_config_is_in_range():
    from lib.components import load_experiment

    files = sorted(ROOT.glob("configs/*.yaml")) + sorted(ROOT.glob("configs/*/*.yaml")) + sorted(ROOT.glob("configs/*/*/*.yaml"))
    experiments = [f for f in files if "data" not in f.parts and "sweeps" not in f.parts]
    assert len(experiments) > 10
    for f in experiments:
        load_experiment(f)  # raises on a value out of range


def test_allowed_values_still_load():
    from lib.components import load_experiment

    cfg = load_experiment(ROOT / "configs" / "cnn_small.yaml",
                          ["loss.params.label_smoothing=0.0", "model.params.dropout=0", "optimizer.params.weight_decay=0",
                           "train.device=cpu", "augment.mixup.p=1", "loss={name: focal, params: {alpha: 0.25, gamma: 0}}"])
    assert cfg["loss"]["params"] == {"alpha": 0.25, "gamma": 0} and cfg["train"]["device"] == "cpu"


def test_competition_ranges_name_file_and_key(toy, tmp_path):
    from lib.components import load_competition

    for section, key, value, allowed in (("folds", "n_folds", 1, ">= 2"), ("decision", "threshold", 1.5, "[0, 1]"),
                                         ("ensemble", "temperature", 0, "> 0"), ("audio", "clip_seconds", -1, "> 0"),
                                         ("folds", "seed", -5, "[0, 4294967296)")):
        cfg = yaml.safe_load((toy / "toy.yaml").read_text())
        cfg.setdefault(section, {})[key] = value
        path = tmp_path / f"{key}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        with pytest.raises(ConfigError) as e:
            load_competition(path)
        msg = str(e.value)
        assert msg.startswith(f"{path}: {section}.{key}:") and allowed in msg and "\n" not in msg, msg
    cfg = yaml.safe_load((toy / "toy.yaml").read_text()) | {"metadata": {"numeric": ["age"], "categorical": ["age"]}}
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=r"metadata column\(s\) \['age'\] are listed as numeric and as categorical"):
        load_competition(path)  # (one of them was kept: probe)


def test_regexes_submission_format_and_threshold_lists_are_checked_when_the_config_is_read(toy, tmp_path):
    from lib.components import load_competition

    def variant(name, edit):
        cfg = yaml.safe_load((toy / "toy.yaml").read_text())
        edit(cfg)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    cases = {"groups.regex": (lambda c: c.update(groups={"regex": "("}), "not a valid regular expression"),
             "train.audio.pattern": (lambda c: c["train"].setdefault("audio", {}).update(pattern="(["),
                                     "not a valid regular expression"),
             "submission.format": (lambda c: c.setdefault("submission", {}).update(format="labels"),
                                   "input should be 'label', 'probability', 'probabilities' or 'indicators', got 'labels'")}
    for key, (edit, words) in cases.items():
        with pytest.raises(ConfigError) as e:
            load_competition(variant(key, edit))
        assert f": {key}: {words}" in str(e.value) and "\n" not in str(e.value), str(e.value)
    # as a user runs 00: one line naming the file and key, no traceback, nothing written
    path = variant("regex", cases["groups.regex"][0])
    r = run("00_prepare.py", path, "--output-dir", tmp_path / "out")
    assert error_of(r, "00_prepare").startswith(f"{path}: groups.regex: not a valid regular expression")
    assert not (tmp_path / "out/folds.csv").exists()
    with pytest.raises(ConfigError, match=r"threshold lists 2 values for the 3 classes \['a', 'b', 'c'\]: give one per"):
        load_competition(variant("thr", lambda c: c.update(task="multilabel", classes=["a", "b", "c"], positive=None,
                                                           decision={"threshold": [0.1, 0.2]})))
    with pytest.raises(ConfigError, match=r"threshold 0.9 is for binary and multi-label tasks; a multiclass decision"):
        load_competition(variant("mc_thr", lambda c: c.update(task="multiclass", classes=["a", "b", "c"], positive=None,
                                                               decision={"threshold": 0.9})))
    with pytest.raises(ConfigError, match="format 'probability' .* is for binary tasks; this one is multiclass"):
        load_competition(variant("prob", lambda c: c.update(task="multiclass", classes=["a", "b", "c"], positive=None,
                                                            submission=dict(c.get("submission") or {}, format="probability"))))


def test_train_folds_checked_against_the_prepared_competition():
    from lib.components import check_experiment, load_experiment

    cfg = load_experiment(ROOT / "configs" / "cnn_small.yaml", ["train.folds=[0, 4]"])
    check_experiment(cfg, "x.yaml", comp=None)  # not prepared yet: nothing to check against
    with pytest.raises(ConfigError, match=r"train.folds: each value once expected; repeated: \[0\]"):
        load_experiment(ROOT / "configs" / "cnn_small.yaml", ["train.folds=[0, 0]"])  # fold 0 trained twice
    check_experiment(cfg, "x.yaml", comp={"name": "toy", "folds": {"n_folds": 5}})
    with pytest.raises(ConfigError, match=r"^x.yaml: train.folds \[4\] .* allowed 0 to 3 \(its folds.n_folds is 4\)$"):
        check_experiment(cfg, "x.yaml", comp={"name": "toy", "folds": {"n_folds": 4}})


def test_a_warmup_longer_than_training_is_refused():
    from lib.components import load_experiment

    cfg = ROOT / "configs" / "cnn_small.yaml"
    with pytest.raises(ConfigError, match=r"^--set scheduler.params.warmup_epochs=31: scheduler.params.warmup_epochs "
                                          r"31 is more than train.epochs 30: the learning rate would never reach its peak$"):
        load_experiment(cfg, ["scheduler.params.warmup_epochs=31", "train.epochs=30"])
    assert load_experiment(cfg, ["train.epochs=1"])["scheduler"]["params"]["warmup_epochs"] == 1  # a one-epoch smoke run


def test_file_system_errors_become_one_line(tmp_path):
    from lib.cli import file_system_message

    blocker = tmp_path / "afile"
    blocker.write_text("x")
    msg = file_system_message(NotADirectoryError(errno.ENOTDIR, "Not a directory", str(blocker / "models" / "a.pt")))
    assert msg == f"{blocker} is a file, not a folder (needed for {blocker / 'models' / 'a.pt'})"
    msg = file_system_message(PermissionError(errno.EACCES, "Permission denied", str(tmp_path / ".x.tmp.csv")))
    assert msg.startswith(f"cannot write in folder {tmp_path} ") and "Permission denied" in msg
    assert file_system_message(FileNotFoundError(errno.ENOENT, "No such file", "x")) is None  # a bug keeps its traceback
    assert file_system_message(ValueError("x")) is None


# --- as a user runs the stages ----------------------------------------------------------------------

def test_train_refuses_label_smoothing_2_before_any_work(tmp_path):
    r = run("02_train.py", "configs/cnn_small.yaml", "--set", "loss.params.label_smoothing=2.0", "--output-dir", tmp_path / "out")
    assert error_of(r, "02_train") == ("--set loss.params.label_smoothing=2.0: loss.params.label_smoothing must be a "
                                       "number in [0, 1), got 2.0")
    assert not (tmp_path / "out").exists()


def test_predict_bundle_and_01_refuse_a_bad_device_or_workers_before_any_work(tmp_path):
    args = ["predict_bundle.py", tmp_path / "bundle", "--data-dir", tmp_path / "data", "--work-dir", tmp_path / "work"]
    assert error_of(run(*args, "--device", "gpu"), "predict_bundle") == "device 'gpu' is not auto, cpu, cuda or cuda:N"
    for script in (args, ["01_features.py", "configs/cnn_small.yaml", "--output-dir", tmp_path / "out"]):
        r = run(*script, "--workers", "-1")
        assert r.returncode == 2 and "argument --workers: '-1' is not a whole number of 1 or more" in r.stderr
    assert not (tmp_path / "work").exists() and not (tmp_path / "out").exists()


def test_train_folds_sampler_and_monitor_the_prepared_competition_cannot_serve(toy, tmp_path):
    from lib.components import load_competition
    from lib.data.prepare import prepare

    out = tmp_path / "out"
    prepare(load_competition(toy / "toy.yaml"), out)  # stage 00, in-process (2 folds)
    r = run("02_train.py", "configs/cnn_small.yaml", "--set", "train.folds=[0, 7]", "--output-dir", out)
    msg = error_of(r, "02_train")
    assert msg.startswith("--set train.folds=[0, 7]: train.folds [7] are not folds") and "allowed 0 to 1" in msg
    r = run("02_train.py", "configs/cnn_small.yaml", "--set", "train.sampler=balanced_slices", "--output-dir", out)
    msg = error_of(r, "02_train")  # the toy competition declares no slices to balance within
    assert msg.startswith("--set train.sampler=balanced_slices: train.sampler balanced_slices") and "slices:" in msg
    msg = error_of(run("02_train.py", "configs/cnn_small.yaml", "--set", "train.monitor=aurco", "--output-dir", out),
                   "02_train")
    assert msg.startswith("--set train.monitor=aurco (train.monitor): unknown metric 'aurco'") and "auroc" in msg
    msg = error_of(run("02_train.py", "configs/cnn_small.yaml", "--set", "loss.params.pos_weight=2", "--output-dir", out),
                   "02_train")  # named, not the loss's TypeError once a competition is prepared (probe)
    assert "unknown parameter loss.params.pos_weight" in msg and "label_smoothing" in msg, msg
    assert not (out / "models").exists()
    # what only a build or a first batch finds is said by 01, before any experiment of a run trains (probe)
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"base: {ROOT / 'configs/zoo/resnet.yaml'}\nmodel: {{name: resnet, params: {{depth: 50}}}}\n")
    msg = error_of(run("01_features.py", "configs/cnn_small.yaml", bad, "--output-dir", out), "01_features")
    assert msg.startswith(f"{bad}: model.params.depth=50 must be one of [18, 34]"), msg
    bad.write_text(f"base: {ROOT / 'configs/vgg.yaml'}\nfeatures: {{name: log_mel, set: log_mel64}}\n"
                   f"model: {{name: vgg, params: {{channels: [4, 4, 4, 4, 64]}}}}\n")  # (a block left out: probe)
    msg = error_of(run("01_features.py", bad, "--output-dir", out), "01_features")
    assert msg.startswith(f"{bad}: model.params.channels (5 blocks: [4, 4, 4, 4, 64]) and model.params.convs (4: "), msg
    bad.write_text(f"base: {ROOT / 'configs/zoo/hgb.yaml'}\nloss: {{name: bce, params: {{label_smoothing: 0.2}}}}\n")
    msg = error_of(run("01_features.py", bad, "--output-dir", out), "01_features")
    assert "loss does not apply to the scikit-learn member 'hgb'" in msg, msg
    r = run("01_features.py", "configs/cnn_small.yaml", "--set", "augment.spec_augment.freq_mask=200", "--output-dir",
            out)  # a mask that could hide every band: said (a warning: 6 bands trained before), and a test-time shift
    assert r.returncode == 0 and ("WARNING: configs/cnn_small.yaml: augment.spec_augment: freq_mask 200 against the "
                                  "input's 64 frequency bands: a mask (drawn up to that width) can hide most or all of "
                                  "it") in r.stdout, r.stdout  # of the whole window or more (probe)
    assert "WARNING" not in run("01_features.py", "configs/cnn_small.yaml", "--output-dir", out).stdout
    msg = error_of(run("02_train.py", "configs/cnn_small.yaml", "--set", "tta.shifts=[0.0, 0.5]", "--output-dir", out),
                   "02_train")
    assert msg.startswith("--set tta.shifts=[0.0, 0.5]: tta.shifts [0.5] (seconds) are not shorter than the window, "
                          "audio.clip_seconds 0.5"), msg


def test_prepare_into_a_read_only_folder(toy, tmp_path):
    if os.geteuid() == 0 and not shutil.which("setpriv"):
        pytest.skip("root writes into read-only folders; setpriv is needed to drop that")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        msg = error_of(run("00_prepare.py", toy / "toy.yaml", "--output-dir", ro / "out", setpriv=True), "00_prepare")
        assert msg.startswith(f"output folder {ro} (to create {ro / 'out'} in) is not writable"), msg
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_output_or_work_dir_that_is_a_file(toy, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    msg = error_of(run("00_prepare.py", toy / "toy.yaml", "--output-dir", afile), "00_prepare")
    assert msg.startswith(f"output folder {afile} is an existing file, not a folder"), msg
    bundle = tmp_path / "bundle"  # the smallest bundle that load_bundle reads: no files, no experiments
    bundle.mkdir()
    (bundle / "bundle.json").write_text('{"format": 2, "files": {}, "experiments": []}')
    (bundle / "ensemble.json").write_text("{}")
    (bundle / "bundle.sha256").write_text(f"{file_hash(bundle / 'bundle.json')}  bundle.json\n")
    shutil.copy(toy / "toy.yaml", bundle / "competition.yaml")
    from lib.shipping.bundle import predict_bundle

    # predict_bundle.py --work-dir, in-process (as fast as the check; the script only adds lib.cli.run)
    with pytest.raises(ConfigError, match=f"^output folder {afile} is an existing file, not a folder"):
        predict_bundle(bundle, toy, afile)


def test_header_only_test_csv_and_a_binary_class_absent(toy, tmp_path):
    """Both problems in one run (stage 00 reports every problem together, one line each)."""
    def edit(d):
        (d / "test.csv").write_text("id\n")
        pd.read_csv(d / "train.csv").assign(label="a").to_csv(d / "train.csv", index=False)

    cfg = _variant(toy, tmp_path, edit)
    msg = error_of(run("00_prepare.py", cfg, "--output-dir", tmp_path / "out"), "00_prepare", one_line=False)
    data = tmp_path / "data"
    assert sorted(p.strip() for p in msg.splitlines()[1:]) == [
        f"{data / 'test.csv'}: no rows (only the header ['id'])",
        f"{data / 'train.csv'}: class(es) ['b'] of the binary task ['a', 'b'] have no training rows; both classes need rows",
    ], msg
    assert not (tmp_path / "out" / "folds.csv").exists()


def test_header_only_tables_in_process(toy, tmp_path):
    from lib.components import load_competition
    from lib.core.errors import InputError
    from lib.data.prepare import prepare

    cfg = _variant(toy, tmp_path, lambda d: (d / "train.csv").write_text(""))  # not even a header
    with pytest.raises(InputError, match="train.csv: no rows"):
        prepare(load_competition(cfg), tmp_path / "out")


def test_sweep_values_outside_a_range(tmp_path):
    sweep = tmp_path / "bad.yaml"
    sweep.write_text("experiment: configs/cnn_small.yaml\nspace:\n  optimizer.params.lr: {low: 1.0e-4, high: 1.0e-3, log: true}\n"
                     "  model.params.dropout: {low: 0.1, high: 1.5}\n  loss.params.label_smoothing: {choices: [0.0, 2.0]}\n")
    r = run("sweep.py", sweep, "--output-dir", tmp_path / "out")
    assert error_of(r, "sweep") == (f"{sweep} [space.model.params.dropout]: --set model.params.dropout=1.5: "
                                    f"model.params.dropout must be a number in [0, 1), got 1.5")
    assert not (tmp_path / "out").exists()  # the study was never opened


def test_sweep_low_end_and_choices_name_their_key(tmp_path):
    from lib.runs.sweep import load_sweep

    sweep = tmp_path / "low.yaml"
    sweep.write_text("experiment: configs/cnn_small.yaml\nspace:\n  model.params.dropout: {low: 0.1, high: 0.5}\n"
                     "  optimizer.params.weight_decay: {low: -0.1, high: 0.1}\n")
    with pytest.raises(ConfigError, match=r"low.yaml \[space.optimizer.params.weight_decay\]: --set "
                                          r"optimizer.params.weight_decay=-0.1: "
                                          r"optimizer.params.weight_decay must be a number >= 0, got -0.1$"):
        load_sweep(sweep)
    sweep.write_text("experiment: configs/cnn_small.yaml\nspace:\n  train.epochs: {low: 40, high: 80}\n"
                     "  scheduler.params.warmup_epochs: {low: 35, high: 40}\n")  # valid together (epochs 30 alone)
    load_sweep(sweep)  # each low end alone against the experiment's own values refused it (review)
    sweep.write_text("experiment: configs/cnn_small.yaml\nspace:\n  train.epochs: {low: 40, high: 80}\n"
                     "  scheduler.params.warmup_epochs: {low: 35, high: 40}\n"
                     "  optimizer.params.weight_decay: {low: -0.1, high: 0.1}\n")
    with pytest.raises(ConfigError, match=r"\[space.optimizer.params.weight_decay\]: --set "):  # the key that fails so
        load_sweep(sweep)
    sweep.write_text("experiment: configs/cnn_small.yaml\nspace:\n  loss.params.label_smoothing: {choices: [0.0, 2.0]}\n")
    with pytest.raises(ConfigError, match=r"\[space.loss.params.label_smoothing\]: .* in \[0, 1\), got 2.0$"):
        load_sweep(sweep)
    sweep.write_text("experiment: configs/cnn_small.yaml\nspace:\n  model.params.dropout: {choices: [1.5, 0.2]}\n")
    with pytest.raises(ConfigError, match=r"\[space.model.params.dropout\]: .*got 1.5$"):  # its own other value
        load_sweep(sweep)  # does not mend a bad first choice (review)


def test_every_numeric_parameter_of_every_model_family_has_a_range():
    """A family's numbers reach torch only after a range check (``PARAM_RANGES['model']``):
    ``width: 0`` of a new family failed deep in ``conv2d`` and ``n_blocks: -1`` trained an empty
    trunk (probe of docs/contributing.md). Parameters the code supplies, and the shared
    ``AudioClassifier`` ones a family passes on through ``**kwargs``, are included."""
    import inspect

    from lib.components import CODE_SUPPLIED
    from lib.core.schema import PARAM_RANGES
    from lib.models import MODELS
    from lib.models.base import AudioClassifier

    checked_when_built = {"hf_audio.layer"}  # an index into the checkpoint's own layers (resolve_layer)
    missing = []
    for family in MODELS.names():
        params = list(inspect.signature(MODELS.get(family)).parameters.values())
        if any(p.kind is p.VAR_KEYWORD for p in params):
            params += list(inspect.signature(AudioClassifier).parameters.values())
        for p in params:
            ann = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", "")
            numeric = type(p.default) in (int, float) or ann.split("|")[0].strip() in ("int", "float")
            if (numeric and p.name not in CODE_SUPPLIED["model"] and p.name not in PARAM_RANGES["model"]
                    and f"{family}.{p.name}" not in PARAM_RANGES["model"] | dict.fromkeys(checked_when_built)):
                missing.append(f"{family}.{p.name}")
    assert not missing, f"numeric model parameters without a range in PARAM_RANGES['model']: {sorted(set(missing))}"


def test_waveform_mixup_union_is_for_multilabel_tasks():
    """labels: union on a multiclass task gave targets summing to 2, taken as they were (probe)."""
    from lib.components import load_experiment

    union = ["augment.waveform=[{name: mixup, params: {labels: union}}]"]
    comp = {"name": "toy", "task": "multiclass", "classes": ["a", "b", "c"], "folds": {"n_folds": 2}}
    with pytest.raises(ConfigError, match=r"augment.waveform\[0\] mixup labels: union gives both clips' labels, "
                                          r"which softmax outputs cannot hold .* use labels: mix"):
        load_experiment(ROOT / "configs" / "wave_cnn.yaml", union, comp)
    load_experiment(ROOT / "configs" / "wave_cnn.yaml", union, dict(comp, task="multilabel"))
    load_experiment(ROOT / "configs" / "wave_cnn.yaml", union, dict(comp, task="binary", classes=["a", "b"]))  # 1 sigmoid


def test_loss_checks_that_waited_for_a_fold_are_made_at_load():
    """bce on a multiclass task and a focal alpha list of the wrong length were refused only when
    the first fold started, after the experiment line (probe); with the prepared competition they
    are refused at load, naming the override."""
    from lib.components import load_experiment

    comp = {"name": "toy", "task": "multiclass", "classes": ["a", "b", "c"], "folds": {"n_folds": 2}}
    with pytest.raises(ConfigError, match=r"^--set loss.name=bce: loss 'bce' does not fit a multiclass task"):
        load_experiment(ROOT / "configs" / "cnn_small.yaml", ["loss.name=bce"], comp)
    with pytest.raises(ConfigError, match=r"loss.params.alpha has 2 class weights; competition 'toy' has 3 classes"):
        load_experiment(ROOT / "configs" / "cnn_small.yaml", ["loss={name: focal, params: {alpha: [0.5, 0.5]}}"], comp)
    assert load_experiment(ROOT / "configs" / "cnn_small.yaml", ["loss.name=focal"], comp)["loss"]["name"] == "focal"


def test_a_row_whose_every_class_is_masked_is_refused_by_00(toy, tmp_path):
    """Two mask rules that together leave a training (or test) row no class: 00 accepted them and
    04 refused after every training (review: 02 too). Now 00 refuses, naming the split and the rows,
    and no later stage may start from that preparation."""
    for rows, where in (("id == 's0_0'", "train"), ("id == 't1'", "test")):
        def edit(data):
            cfg = yaml.safe_load((data / "toy.yaml").read_text())
            cfg["decision"] = {"mask": [{"where": rows, "classes": ["a"]}, {"where": rows, "classes": ["b"]}]}
            (data / "toy.yaml").write_text(yaml.safe_dump(cfg))
        config = _variant(toy, tmp_path / where, edit)
        out = tmp_path / where / "out"
        text = error_of(run("00_prepare.py", config, "--output-dir", out), "00_prepare", one_line=False)
        assert f"decision.mask ({where} rows): every class is masked for 1 row(s), e.g. [{rows.split()[-1]}]" in text
        assert not (out / "prepare.record.json").exists()
