"""Results that never mix: records, interrupted stages (really killed subprocesses), stale inputs,
folds trained in separate runs. On a generated toy competition (12 clips of 0.5 s, 2 folds)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml
from conftest import ROOT, make_toy_competition, stage

from lib.core.artifacts import Record, remove_stale_temporaries
from lib.core.errors import ConfigError, MissingArtifact
from lib.core.paths import Outputs
from lib.core.utils import atomic_path

TINY = {"features": {"name": "log_mel", "set": "lm", "params": {"n_mels": 16, "n_fft": 256, "hop_length": 128}},
        "model": {"name": "cnn", "params": {"channels": [4, 8], "convs_per_block": 1, "head_hidden": 8}},
        "train": {"epochs": 3, "batch_size": 4, "patience": 10, "device": "cpu"}}


def _kill_when(args, needle: str, stream: str = "stdout", timeout: float = 120, sig=signal.SIGKILL) -> str:
    """Run a stage, send it ``sig`` (SIGKILL; SIGINT is Ctrl-C) as soon as ``needle`` appears in
    its output; returns the output, to its end."""
    # SIGINT's default action, as from a terminal: a test run in the background of a non-interactive shell (as
    # CI's) ignores SIGINT, its children inherit that, and Python then never raises KeyboardInterrupt
    p = subprocess.Popen([sys.executable, *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"),
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen, hit = [], threading.Event()

    def watch(pipe):
        while ch := pipe.read(1):
            seen.append(ch)
            if needle in "".join(seen[-len(needle) - 200:]):
                hit.set()

    readers = [threading.Thread(target=watch, args=(pipe,), daemon=True) for pipe in (p.stdout, p.stderr)]
    for reader in readers:
        reader.start()
    assert hit.wait(timeout), "".join(seen)[-2000:]
    os.kill(p.pid, sig)
    p.wait()
    for reader in readers:
        reader.join(10)
    return "".join(seen)


@pytest.fixture
def toy(tmp_path):
    """A prepared toy competition: ``(output folder, experiment config path, Outputs)``."""
    make_toy_competition(tmp_path / "data")
    out = tmp_path / "out"
    stage("00_prepare.py", tmp_path / "data/toy.yaml", "--output-dir", out)
    exp = tmp_path / "toy_exp.yaml"
    exp.write_text(yaml.safe_dump(TINY))
    stage("01_features.py", exp, "--output-dir", out)
    return out, exp, Outputs(out)


def test_record_protocol(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("one")
    b.write_text("two")
    rec = Record(tmp_path / "r.json", tmp_path, "thing", "make.py")
    with pytest.raises(MissingArtifact, match="thing: not built yet.*run make.py first"):
        rec.require()
    r = rec.commit([a, b], "k1", inputs={"up": "x"})
    assert rec.require("k1")["id"] == r["id"] and rec.check("k2")[1] == "built from other inputs or settings"
    b.write_text("TWO")  # same size, other content
    assert rec.check("k1") == (None, "b.txt has changed since it was written")
    b.write_text("tw")
    assert "changed size" in rec.check("k1")[1]
    b.unlink()
    with pytest.raises(MissingArtifact, match="b.txt is missing.*run make.py again"):
        rec.require("k1")
    rec.begin()
    assert not rec.path.exists()
    (tmp_path / "models/hgb").mkdir(parents=True)  # a model folder renamed: said, not only "missing" (probe)
    (tmp_path / "models/hgb/scores.json").write_text("{}")
    Record(tmp_path / "models/hgb/record.json", tmp_path, "hgb", "02").commit([tmp_path / "models/hgb/scores.json"], "k")
    (tmp_path / "models/hgb").rename(tmp_path / "models/hgbX")
    assert Record(tmp_path / "models/hgbX/record.json", tmp_path, "hgbX", "02").check()[1] == (
        "models/hgb/scores.json is missing (models/hgbX holds the files of 'hgb': the folder was renamed; give it its "
        "name back)")


def test_temporaries_of_killed_writers_are_removed(tmp_path):
    code = ("import os, sys; sys.path.insert(0, sys.argv[1]); from lib.core.utils import atomic_path\n"
            "with atomic_path(sys.argv[2]) as tmp:\n    tmp.write_text('half'); os.kill(os.getpid(), 9)")
    subprocess.run([sys.executable, "-c", code, str(ROOT), str(tmp_path / "x.npy")])
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".x.") and not (tmp_path / "x.npy").exists()
    with atomic_path(tmp_path / "y.npy") as tmp:  # a live writer's temporary is kept
        assert remove_stale_temporaries(tmp_path) == 1 and tmp.exists()
        tmp.write_text("done")
    assert [p.name for p in tmp_path.iterdir()] == ["y.npy"]


def test_a_folder_replaced_leaves_the_old_or_the_new_one_whole_after_a_kill(tmp_path):
    """05 --force and offline_kit.py --force removed the old folder, then renamed the new one in:
    killed while removing, a half-deleted folder stayed, which the same command then refused as
    "not an offline kit" (probe). Now the old one is renamed aside first, and a kill between the
    two renames is cleared by the next call."""
    from lib.core.utils import replace_folder

    def folder(name, text):
        (tmp_path / name).mkdir()
        (tmp_path / name / "INSTALL.txt").write_text(text)

    folder("kit", "old")
    folder(".kit.partial", "new")
    replace_folder(tmp_path / ".kit.partial", tmp_path / "kit")
    assert (tmp_path / "kit/INSTALL.txt").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["kit"]
    (tmp_path / "kit").rename(tmp_path / ".kit.old")  # killed between the two renames: nothing at kit
    folder(".kit.partial", "newer")
    replace_folder(tmp_path / ".kit.partial", tmp_path / "kit")
    assert (tmp_path / "kit/INSTALL.txt").read_text() == "newer" and sorted(p.name for p in tmp_path.iterdir()) == ["kit"]


def test_interrupted_retrain_never_mixes_and_stale_predictions_are_refused(toy, tmp_path):
    out, exp, o = toy
    stage("02_train.py", exp, "--output-dir", out)
    stage("03_infer.py", exp, "--output-dir", out)
    oof_a, preds_a = (out / "oof/toy_exp.csv").read_text(), (out / "preds/toy_exp.csv").read_text()
    # the same experiment file edited (another learning rate), killed after its first fold
    edited = dict(TINY, optimizer={"name": "adamw", "params": {"lr": 3e-3}})
    exp.write_text(yaml.safe_dump(edited))
    _kill_when(["02_train.py", exp, "--output-dir", out], "fold 0: best epoch")
    assert not o.trained("toy_exp").path.exists()  # nothing marked complete
    with pytest.raises(MissingArtifact, match="02_train.py"):
        o.trained("toy_exp").require()
    r = stage("03_infer.py", exp, "--output-dir", out, "--force", check=False)
    assert r.returncode == 1 and "run 02_train.py for toy_exp" in r.stderr
    r = stage("04_ensemble.py", "--output-dir", out, check=False)  # the lines below name the stage (probe)
    assert r.returncode == 1 and "current test predictions: run the stage each line names first\n  toy_exp: " in r.stderr
    # back to the original settings: fold 1 (untouched) is kept, fold 0 retrained, nothing mixed
    exp.write_text(yaml.safe_dump(TINY))
    log = stage("02_train.py", exp, "--output-dir", out).stdout
    assert "up to date" not in log and "fold 0: trained" in log and "fold 1: finished earlier" in log
    assert (out / "oof/toy_exp.csv").read_text() == oof_a  # the same models as the first run, bit for bit
    # a new training run: predicted again, with the same models the same predictions
    assert "written" in stage("03_infer.py", exp, "--output-dir", out).stdout
    assert (out / "preds/toy_exp.csv").read_text() == preds_a
    # retrain with other settings, skip 03: the ensemble refuses the old predictions
    exp.write_text(yaml.safe_dump(edited))
    stage("02_train.py", exp, "--output-dir", out)
    r = stage("04_ensemble.py", "toy_exp", "--output-dir", out, check=False)
    assert r.returncode == 1 and "test predictions of 'toy_exp' was made from an older train result" in r.stderr
    assert "run 03_infer.py for toy_exp" in r.stderr and not (out / "submission.csv").exists()
    stage("03_infer.py", exp, "--output-dir", out)
    stage("04_ensemble.py", "toy_exp", "--output-dir", out)
    assert len(pd.read_csv(out / "submission.csv")) == 2
    # the test set changed and 00 ran again, 03 not: 04 said KeyError "['t2'] not in index" (probe)
    data = out.parent / "data"
    sf.write(data / "test" / "t2.wav", np.zeros(8000, np.float32), 16000)
    pd.DataFrame({"id": ["t0", "t1", "t2"]}).to_csv(data / "test.csv", index=False)
    pd.DataFrame({"id": ["t2", "t1", "t0"], "label": "a"}).to_csv(data / "sample.csv", index=False)
    stage("00_prepare.py", data / "toy.yaml", "--output-dir", out)
    r = stage("04_ensemble.py", "toy_exp", "--output-dir", out, check=False)
    assert r.returncode == 1 and "feature set 'lm' and 00_prepare.py read other test recordings" in r.stderr, r.stderr
    shutil.rmtree(out / "features")  # removed after 03 to free disk space: 04 does not read it, but the predictions
    r = stage("04_ensemble.py", "toy_exp", "--output-dir", out, check=False)  # remember the recordings they were made of
    assert r.returncode == 1 and "feature set 'lm' and 00_prepare.py read other test recordings" in r.stderr, r.stderr
    pred = o.predicted("toy_exp")
    rec = pred.read()
    del rec["inputs"]["recordings"]  # as an earlier version wrote it: 04 checks the rows
    pred.path.write_text(json.dumps(rec))
    r = stage("04_ensemble.py", "toy_exp", "--output-dir", out, check=False)
    assert r.returncode == 1 and ("test predictions of toy_exp are of other rows than test.csv's (2 against 3; "
                                  "test.csv changed since 03 ran): run 01_features.py and 03_infer.py for toy_exp") \
        in r.stderr, r.stderr


def test_a_named_run_retrained_with_other_settings_says_so_and_03_refuses_settings_never_trained(toy):
    out, exp, o = toy
    stage("02_train.py", exp, "--set", "model.params.head_hidden=4", "--name", "dup", "--output-dir", out)
    log = stage("02_train.py", exp, "--set", "model.params.head_hidden=2", "--name", "dup", "--output-dir", out).stdout
    assert "dup: its models were trained with other settings (model.params.head_hidden: 4 -> 2): they are replaced" in log
    r = stage("03_infer.py", exp, "--set", "model.params.head_hidden=64", "--name", "dup", "--output-dir", out, check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr and not (out / "preds/dup.csv").exists()
    assert "dup was trained with other settings than the config given here (model.params.head_hidden: 2 -> 64)" in r.stderr
    assert "written" in stage("03_infer.py", exp, "--set", "model.params.head_hidden=2", "--name", "dup",
                              "--set", "train.device=cpu", "--output-dir", out).stdout  # a run-only key may differ
    log = stage("02_train.py", exp, "--set", "model.params.head_hidden=2", "--set", "model.params.dropout=0.1", "--name",
                "dup", "--output-dir", out).stdout  # a param given where it was left at its default: said too (probe)
    assert "dup: its models were trained with other settings (model.params.dropout: (default) -> 0.1): they are " \
        "replaced" in log, log


def test_an_experiment_trained_by_another_process_now_is_waited_for(toy):
    """Two 02 runs of one experiment into one folder: the second resumed from the first's live
    epoch files and both wrote the result (probe). A lock per experiment, freed when its holder
    ends however it ends (flock): the second waits, naming the first, then trains what is left."""
    import subprocess
    import sys
    import time

    out, exp, o = toy
    name = yaml.safe_load(exp.read_text()).get("name") or exp.stem
    code = ("import sys, time; sys.path.insert(0, sys.argv[1]); from lib.core.paths import Outputs\n"
            "from lib.runs.experiment import _training_locks\n"
            "with _training_locks(Outputs(sys.argv[2]), [sys.argv[3]]):\n"
            "    print('held', flush=True); time.sleep(4)")
    holder = subprocess.Popen([sys.executable, "-c", code, ROOT, out, name], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    t0 = time.time()
    log = stage("02_train.py", exp, "--output-dir", out).stdout
    assert time.time() - t0 > 2 and holder.wait(timeout=30) == 0  # it waited for the holder to end
    assert f"{name}: waiting for another process (process {holder.pid} on " in log and "fold 0: trained" in log, log
    assert "each epoch line: that epoch's validation scores; * the epoch kept so far, the best 3-epoch trailing mean " \
        "of accuracy, ties by valid_loss" in log  # (the star was unexplained: probe)
    holder = subprocess.Popen([sys.executable, "-c", code.replace("time.sleep(4)", "time.sleep(600)"), ROOT, out, name],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.kill()  # kill -9: its lock goes with it, nothing to wait for
    holder.wait(timeout=30)
    log = stage("02_train.py", exp, "--output-dir", out).stdout
    assert "waiting" not in log and "skipped" in log, log


def test_01_says_which_trained_experiments_a_rebuilt_feature_set_leaves_stale(toy, tmp_path):
    """A shared set rebuilt for another config made the experiments trained on it stale, said only
    later by 04 or the leaderboard (probe)."""
    out, exp, o = toy
    stage("02_train.py", exp, "--output-dir", out)
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**TINY, "features": {**TINY["features"], "params": {
        **TINY["features"]["params"], "n_mels": 8}}}))
    log = stage("01_features.py", other, "--output-dir", out).stdout
    assert "note: lm was built again: toy_exp trained on its earlier build is stale now (02_train.py trains it " \
           "again)" in log, log
    assert "note:" not in stage("01_features.py", other, "--output-dir", out).stdout  # up to date: nothing said


def test_a_process_that_trains_an_experiment_cannot_wait_for_itself(tmp_path):
    """A second lock of one experiment in the process that holds it waited for itself for ever (review)."""
    from lib.runs.experiment import _training_locks

    with _training_locks(Outputs(tmp_path), ["x"]):
        with pytest.raises(ConfigError, match=f"x: this process is training it into {tmp_path} already"):
            with _training_locks(Outputs(tmp_path), ["x", "y"]):
                pass
        with _training_locks(Outputs(tmp_path), ["y"]):  # another experiment: fine
            pass
    with _training_locks(Outputs(tmp_path), ["x"]):  # freed
        pass


def test_a_file_system_without_locks_trains_unlocked_and_says_so(tmp_path, monkeypatch):
    """An NFS mount with nolock raises ENOLCK: 02 crashed with a traceback (review)."""
    import errno
    import fcntl

    from lib.runs.experiment import _training_locks

    def no_locks(*_):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(fcntl, "flock", no_locks)
    said = []
    with _training_locks(Outputs(tmp_path), ["x"], said.append):
        pass
    assert said == [f"WARNING: x: this file system takes no locks (No locks available): another process training it "
                    f"into {tmp_path} at the same time would not be noticed"]


def test_changed_members_are_noticed_and_merged_again_without_training(toy):
    out, exp, o = toy
    stage("02_train.py", exp, "--output-dir", out)
    scores = json.loads((out / "models/toy_exp/scores.json").read_text())
    # a kill between the OOF file and scores.json leaves scores.json older than the OOF file
    (out / "models/toy_exp/scores.json").write_text("{}")
    log = stage("02_train.py", exp, "--output-dir", out).stdout
    assert "fold 0: finished earlier" in log and "fold 1: finished earlier" in log and "up to date" not in log
    assert json.loads((out / "models/toy_exp/scores.json").read_text())["oof"] == scores["oof"]
    # a fold model that changed after training is noticed: that fold is trained again
    with open(out / "models/toy_exp/fold1.pt", "ab") as f:
        f.write(b"x")
    log = stage("02_train.py", exp, "--output-dir", out).stdout
    assert "fold 0: finished earlier" in log and "fold 1: trained" in log


def test_one_feature_set_asked_by_two_configs_compares_settings_with_defaults_filled(toy, tmp_path):
    """``fmax: null`` written out in one config and left to its default in another is the same set;
    01 refused them together (not apart), naming neither the key nor the other config (probe)."""
    out, exp, _ = toy
    spelt = dict(TINY, features=dict(TINY["features"], params=dict(TINY["features"]["params"], fmax=None, deltas=False)))
    (tmp_path / "spelt.yaml").write_text(yaml.safe_dump(spelt))
    assert "up to date" in stage("01_features.py", exp, tmp_path / "spelt.yaml", "--output-dir", out).stdout
    other = dict(TINY, features=dict(TINY["features"], params=dict(TINY["features"]["params"], fmax=4000)))
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    r = stage("01_features.py", exp, tmp_path / "other.yaml", "--output-dir", out, check=False)
    assert r.returncode != 0 and (f"feature set 'lm' is asked for with different settings (fmax: {exp} null, "
                                  f"{tmp_path / 'other.yaml'} 4000); give one of them another features.set name") in r.stderr


def test_feature_cache_checks(toy, tmp_path):
    out, exp, o = toy
    stage("02_train.py", exp, "--output-dir", out)
    assert "up to date" in stage("01_features.py", exp, "--output-dir", out).stdout
    # a deleted windows file or a truncated spec file is not up to date, and 02 refuses it
    (out / "features/lm/train_windows.npy").unlink()
    r = stage("02_train.py", exp, "--output-dir", out, check=False)
    assert r.returncode == 1 and "train_windows.npy is missing" in r.stderr and "run 01_features.py again" in r.stderr
    assert "built in" in stage("01_features.py", exp, "--output-dir", out).stdout
    spec = out / "features/lm/test_spec.npy"
    spec.write_bytes(spec.read_bytes()[:-10])
    assert "built in" in stage("01_features.py", exp, "--output-dir", out).stdout
    # rebuilt identically: the trained models stay up to date
    assert "up to date" in stage("02_train.py", exp, "--output-dir", out).stdout
    # the data folder moved (00 again with --data-dir there): the same files, the cache and models kept
    shutil.copytree(tmp_path / "data", tmp_path / "moved")
    stage("00_prepare.py", tmp_path / "data/toy.yaml", "--data-dir", tmp_path / "moved", "--output-dir", out)
    assert "up to date" in stage("01_features.py", exp, "--output-dir", out).stdout
    assert "up to date" in stage("02_train.py", exp, "--output-dir", out).stdout
    # moved without 00 again: one line naming 00 (was a FileNotFoundError traceback: probe)
    (tmp_path / "moved").rename(tmp_path / "moved_again")
    r = stage("01_features.py", exp, "--output-dir", out, check=False)
    assert r.returncode == 1 and "audio file(s) that 00_prepare.py listed are not there, e.g. " in r.stderr \
        and "run 00_prepare.py again (--data-dir NEW_FOLDER)" in r.stderr and "Traceback" not in r.stderr, r.stderr
    stage("00_prepare.py", tmp_path / "data/toy.yaml", "--output-dir", out)  # back where the rest expects it
    # an audio file replaced by another of the same size, its modification time kept
    wav = tmp_path / "data/train/s0_0.wav"
    st = os.stat(wav)
    y, sr = sf.read(wav, dtype="float32")
    sf.write(wav, -y, sr)
    os.utime(wav, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(wav).st_size == st.st_size
    log = stage("01_features.py", exp, "--output-dir", out).stdout
    assert "(the train recordings changed since the last build)" in log, log  # why 01 built it again
    assert "built in" in log and "WARNING: lm: the train recordings are not those 00_prepare.py read (a file replaced " \
        "since): run 00_prepare.py again" in log, log  # said by 01 already
    r = stage("02_train.py", exp, "--output-dir", out, check=False)  # 00 read the old file: one of them is stale
    assert r.returncode == 1 and "feature set 'lm' and 00_prepare.py read other train recordings (replaced or " \
        "changed since one of them ran): run 01_features.py again, and 00_prepare.py before it if the audio changed " \
        "after 00 ran" in r.stderr, r.stderr
    stage("00_prepare.py", tmp_path / "data/toy.yaml", "--output-dir", out)
    assert "up to date" in stage("01_features.py", exp, "--output-dir", out).stdout
    assert "up to date" not in stage("02_train.py", exp, "--output-dir", out).stdout
    # 02 given other feature settings than the set was cached with refuses, before training
    r = stage("02_train.py", exp, "--set", "features.params.n_mels=32", "--name", "m32", "--output-dir", out, check=False)
    assert r.returncode == 1 and "n_mels: cached 16, asked 32" in r.stderr and "run 01_features.py" in r.stderr
    assert not (out / "models/m32").exists()


SLOW_FEATURES = """
import runpy, sys, time
sys.path.insert(0, sys.argv[1])
from lib.features import FEATURES
from lib.features.log_mel import LogMel

class SlowLogMel(LogMel):
    def __call__(self, y, sr):
        time.sleep(0.3)
        return super().__call__(y, sr)

FEATURES.register("log_mel")(SlowLogMel)   # the stage's own code, with a slow extractor
sys.argv = sys.argv[2:]
runpy.run_path("01_features.py", run_name="__main__")
"""


def test_feature_build_killed_in_the_test_split_is_never_taken_for_finished(toy, tmp_path):
    out, exp, o = toy
    before = {p.name: p.read_bytes() for p in (out / "features/lm").glob("*.npy")}
    other = tmp_path / "other.yaml"  # another setting, the same cache folder
    other.write_text(yaml.safe_dump(dict(TINY, features=dict(TINY["features"], params={"n_mels": 8}))))
    script = tmp_path / "slow.py"
    script.write_text(SLOW_FEATURES)
    _kill_when([script, ROOT, "01_features.py", other, "--output-dir", out, "--workers", "1", "--force"],
               "lm test:", stream="stderr")
    assert not (out / "features/lm/record.json").exists()
    log = stage("01_features.py", exp, "--output-dir", out).stdout
    assert "built in" in log and "up to date" not in log
    after = {p.name: p.read_bytes() for p in (out / "features/lm").glob("*.npy")}
    assert after == before  # the original settings' cache again, whole; no temporaries left
    assert not [p for p in (out / "features/lm").iterdir() if p.name.startswith(".")]


def test_folds_trained_in_separate_runs_merge(toy):
    out, exp, o = toy
    log = stage("02_train.py", exp, "--output-dir", out, "--set", "train.folds=[1]").stdout
    assert "PARTIAL: folds [0]" in log
    oof = pd.read_csv(out / "oof/toy_exp.csv")
    assert set(oof.fold) == {1}
    stage("03_infer.py", exp, "--output-dir", out)
    r = stage("04_ensemble.py", "toy_exp", "--output-dir", out, check=False)
    assert r.returncode == 1 and "partial" in r.stderr and "--allow-partial" in r.stderr
    log = stage("04_ensemble.py", "toy_exp", "--output-dir", out, "--allow-partial").stdout
    assert "blend" in log and "OOF rows of a single fold: only those that fit nothing" in log
    assert "cross-fitted: each fold" not in log  # one fold: nothing was blended held out
    log = stage("05_bundle.py", "--to", out.parent / "partial_bundle", "--output-dir", out).stdout
    assert "WARNING: toy_exp is partial (folds [0] were never trained" in log and "folds [1] only" in log
    log = stage("02_train.py", exp, "--output-dir", out, "--set", "train.folds=[0]").stdout
    assert "fold 0: trained" in log and "PARTIAL" not in log
    assert set(pd.read_csv(out / "oof/toy_exp.csv").fold) == {0, 1}
    r = stage("04_ensemble.py", "toy_exp", "--output-dir", out, check=False)
    assert r.returncode == 1 and "run 03_infer.py for toy_exp" in r.stderr  # predictions of the partial run
    stage("03_infer.py", exp, "--output-dir", out)
    stage("04_ensemble.py", "toy_exp", "--output-dir", out)
    # a partial experiment beside a complete one: --allow-partial names the folds and what blends
    stage("02_train.py", exp, "--output-dir", out, "--set", "train.folds=[0]", "--name", "part")
    stage("03_infer.py", exp, "--output-dir", out, "--set", "train.folds=[0]", "--name", "part")
    r = stage("04_ensemble.py", "toy_exp", "part", "--allow-partial", "--output-dir", out, check=False)
    assert r.returncode == 1 and "OOF rows of part (folds [0]) differ from those of toy_exp (folds [0, 1])" in r.stderr
    assert "(04_ensemble.py part)" in r.stderr
    rec = o.trained("toy_exp").require()
    assert rec["info"] == {"folds": [0, 1], "partial": False, "missing_folds": []}
    run = json.loads((out / "models/toy_exp/run.json").read_text())
    assert {"fold0", "fold1"} == set(run) and run["fold0"]["torch"] and "precision" in run["fold0"]
    assert yaml.safe_load((out / "models/toy_exp/config.yaml").read_text())["model"]["name"] == "cnn"


def test_training_killed_mid_fold_resumes(toy, tmp_path):
    out, exp, o = toy
    long = dict(TINY, train=dict(TINY["train"], epochs=5))
    exp.write_text(yaml.safe_dump(long))
    ref = tmp_path / "ref"  # an uninterrupted run of the same experiment, for comparison
    ref.mkdir()
    for name in ("folds.csv", "test.csv", "competition.yaml", "prepare.record.json"):
        (ref / name).write_bytes((out / name).read_bytes())
    stage("01_features.py", exp, "--output-dir", ref)
    stage("02_train.py", exp, "--output-dir", ref)
    _kill_when(["02_train.py", exp, "--output-dir", out], "fold 0 epoch  3/5")
    time.sleep(0.1)
    assert (out / "models/toy_exp/fold0.state.pt").exists()
    log = stage("02_train.py", exp, "--output-dir", out).stdout
    assert "fold 0: resumed from epoch" in log and "fold 1: trained" in log
    assert (out / "oof/toy_exp.csv").read_text() == (ref / "oof/toy_exp.csv").read_text()
    assert not (out / "models/toy_exp/fold0.state.pt").exists()
    np.testing.assert_array_equal(np.load(out / "models/toy_exp/fold0_oof.npy"), np.load(ref / "models/toy_exp/fold0_oof.npy"))
    # --force killed once fold 0 is trained again, then resumed: fold 1, finished before the forced run, is not
    # kept as "finished earlier" (a resumed --force mixed folds from before it, by an earlier version too: probe)
    killed = _kill_when(["02_train.py", exp, "--output-dir", out, "--force"], "fold 0: best epoch")
    log = stage("02_train.py", exp, "--output-dir", out).stdout  # (fold 1 trained or resumed: the kill's timing)
    assert "fold 0: finished earlier" in log and ("fold 1: finished earlier" in log) == ("fold 1: best" in killed), log
    assert (out / "oof/toy_exp.csv").read_text() == (ref / "oof/toy_exp.csv").read_text()


WAVE = {"features": {"name": "waveform", "set": "wave"},
        "frontend": {"name": "log_mel", "params": {"n_mels": 16, "n_fft": 256, "hop_length": 128}},
        "model": TINY["model"], "augment": {"waveform": [{"name": "gain", "params": {"p": 0.5}}]},
        "tta": {"shifts": [0.0, 0.1]}, "train": TINY["train"]}

SLOW_AUDIO = """
import runpy, sys, time
sys.path.insert(0, sys.argv[1])
from lib.data import audio
load = audio.load

def slow_load(*args, **kwargs):
    time.sleep(0.3)
    return load(*args, **kwargs)

audio.load = slow_load   # the stage's own code, reading audio slowly
sys.argv = sys.argv[2:]
runpy.run_path("01_features.py", run_name="__main__")
"""


def test_waveform_chain_after_a_killed_waveform_cache_build(toy, tmp_path):
    """01 killed while caching the test split's waveforms leaves no record and no temporaries for
    the next run to trust; then the whole chain runs on the waveform path."""
    out, _, o = toy
    exp = tmp_path / "wave.yaml"
    exp.write_text(yaml.safe_dump(WAVE))
    script = tmp_path / "slow.py"
    script.write_text(SLOW_AUDIO)
    _kill_when([script, ROOT, "01_features.py", exp, "--output-dir", out, "--workers", "1"], "wave test:",
               stream="stderr")
    assert not (out / "features/wave/record.json").exists()
    r = stage("02_train.py", exp, "--output-dir", out, check=False)
    assert r.returncode == 1 and "01_features.py" in r.stderr
    log = stage("01_features.py", exp, "--output-dir", out).stdout
    assert "built in" in log and "whole waveforms at 16000 Hz" in log
    assert not [p for p in (out / "features/wave").iterdir() if p.name.startswith(".")]
    assert "with test-time augmentation" in stage("02_train.py", exp, "--output-dir", out).stdout
    stage("03_infer.py", exp, "--output-dir", out)
    stage("04_ensemble.py", "wave", "--output-dir", out)
    preds = pd.read_csv(out / "preds/wave.csv")
    assert len(preds) == 2 and np.isfinite(preds[["p_a", "p_b"]].to_numpy()).all()
    assert len(pd.read_csv(out / "submission.csv")) == 2


@pytest.mark.parametrize("change, said", [
    ({"classes": ["b", "a"]}, "classes ['a', 'b'] -> ['b', 'a']"),
    ({"positive": "a"}, "positive 'b' -> 'a'"),
    ({"metric": "auroc", "metrics": ["accuracy", "auroc"]}, "metric 'accuracy' -> 'auroc'")])
def test_models_trained_under_other_classes_or_positive_class_are_refused(toy, tmp_path, change, said):
    """00 re-run with the classes reordered or another positive class: 02 retrained, but 03
    --force, 04, 05 and the leaderboard took the old models, and the bundle's and 03's test
    predictions came out under the wrong classes (all 30 submission rows flipped, probe)."""
    out, exp, o = toy
    name = yaml.safe_load(exp.read_text()).get("name") or exp.stem
    for script in ("02_train.py", "03_infer.py"):
        stage(script, exp, "--output-dir", out)
    stage("04_ensemble.py", name, "--output-dir", out)
    stage("05_bundle.py", "--output-dir", out, "--to", tmp_path / "bundle")
    cfg_path = tmp_path / "data/toy.yaml"
    cfg_path.write_text(yaml.safe_dump({**yaml.safe_load(cfg_path.read_text()), **change}))
    assert "removed the earlier blend" in stage("00_prepare.py", cfg_path, "--output-dir", out).stdout
    for args in (("03_infer.py", exp, "--force"), ("04_ensemble.py", name)):
        r = stage(*args, "--output-dir", out, check=False)
        assert r.returncode == 1 and f"trained experiment {name!r} was trained under other settings" in r.stderr, r.stderr
        assert said in r.stderr and "01_features.py" not in r.stderr  # (the features still fit: review)
    r = stage("05_bundle.py", "--to", tmp_path / "bundle2", "--output-dir", out, check=False)  # 00 removed the blend
    assert r.returncode == 1 and "ensemble: removed by 00_prepare.py" in r.stderr and "run 04_ensemble.py again" in \
        r.stderr, r.stderr  # (the reason 00 left: probe V)
    from lib.evaluation.leaderboard import leaderboard

    board = leaderboard(o).set_index("experiment")
    assert board.loc[name, "status"] == "stale" and said in board.loc[name, "note"]
    assert board.loc[name, "note"].endswith("run 02_train.py")  # not 01 too: the features still fit (probe)
    assert "fold 0: trained" in stage("02_train.py", exp, "--output-dir", out).stdout
    stage("03_infer.py", exp, "--output-dir", out)
    stage("04_ensemble.py", name, "--output-dir", out)


def test_a_cache_built_before_the_audio_settings_changed_is_refused(toy, tmp_path):
    """00 re-run with another audio.clip_seconds, 01 not: 02 (even --force) and 03 trained and
    predicted on the old 0.5-s windows while competition.yaml said 0.25, unsaid; now they stop,
    naming the feature set and 01_features.py, until 01 rebuilds it."""
    out, exp, o = toy
    stage("02_train.py", exp, "--output-dir", out)
    stage("03_infer.py", exp, "--output-dir", out)
    cfg_path = tmp_path / "data/toy.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["audio"]["clip_seconds"] = 0.25
    cfg_path.write_text(yaml.safe_dump(cfg))
    stage("00_prepare.py", cfg_path, "--output-dir", out)
    for args in (("02_train.py", exp), ("02_train.py", exp, "--force"), ("03_infer.py", exp)):
        r = stage(*args, "--output-dir", out, check=False)
        assert r.returncode == 1 and "other audio settings" in r.stderr and "run 01_features.py again" in r.stderr
    # 04 blended the models of the old windows and the leaderboard called them complete, unsaid
    name = yaml.safe_load(exp.read_text()).get("name") or exp.stem
    r = stage("04_ensemble.py", name, "--output-dir", out, check=False)
    assert r.returncode == 1 and f"trained experiment {name!r} was trained with other audio settings" in r.stderr
    r = stage("04_ensemble.py", "--output-dir", out, check=False)
    assert r.returncode == 1 and "trained with other audio settings than competition.yaml's now" in r.stderr
    from lib.evaluation.leaderboard import leaderboard

    board = leaderboard(o).set_index("experiment")
    assert board.loc[name, "status"] == "stale" and "other audio settings" in board.loc[name, "note"]
    assert board.loc[name, "note"].endswith("run 01_features.py and 02_train.py")
    stage("01_features.py", exp, "--output-dir", out)
    log = stage("02_train.py", exp, "--output-dir", out).stdout
    assert "fold 0: trained" in log
    assert o.load_competition()["audio"]["clip_seconds"] == 0.25


def test_ensemble_arguments_are_checked_and_its_summary_counts_the_labels(tmp_path):
    """04 with a member named twice blended it as two members (twice the weight) and 05 then failed
    with a traceback; --temperature nan was a traceback and 0 dropped softmax unsaid: each is
    refused before any work. With the sample submission's columns in the order label, id the
    last line counted the ids, not the labels."""
    make_toy_competition(tmp_path / "data")
    sample = pd.read_csv(tmp_path / "data/sample.csv")
    sample[["label", "id"]].to_csv(tmp_path / "data/sample.csv", index=False)
    out, exp = tmp_path / "out", tmp_path / "toy_exp.yaml"
    exp.write_text(yaml.safe_dump(TINY))
    stage("00_prepare.py", tmp_path / "data/toy.yaml", "--output-dir", out)
    for script in ("01_features.py", "02_train.py", "03_infer.py"):
        stage(script, exp, "--output-dir", out)
    for args, said in ((["toy_exp", "toy_exp"], "toy_exp named more than once"),
                       (["--temperature", "nan"], "--temperature: nan is not a positive number"),
                       (["--temperature", "0"], "--temperature: 0.0 is not a positive number")):
        r = stage("04_ensemble.py", *args, "--output-dir", out, check=False)
        assert r.returncode == 2 and said in r.stderr, r.stderr
    assert not (out / "ensemble.json").exists()
    last = stage("04_ensemble.py", "--output-dir", out).stdout.rstrip().splitlines()[-2]
    assert last.startswith("wrote ") and "rows {'" in last and "t0" not in last, last


def test_a_replaced_test_recording_rebuilds_the_test_split_alone_and_stales_the_predictions(toy, tmp_path):
    """A test recording replaced, 00 and 01 re-run: 01 rebuilt the whole cache, so 02 trained every
    model again for a change that only 03 needs (note of an earlier session); and 04 had blended
    the old predictions and written the old label for that id (probe). Now 01 keeps the train split
    (its files and id), 02 has nothing to do, 00 removes the blend of the old test set, 04 refuses
    the old predictions until 03 has run and 05 bundles the models (current); a train recording
    replaced still makes the models stale."""
    out, exp, o = toy
    for script in ("02_train.py", "03_infer.py"):
        stage(script, exp, "--output-dir", out)
    name = yaml.safe_load(exp.read_text()).get("name") or exp.stem
    stage("04_ensemble.py", name, "--output-dir", out)
    folder = out / "features" / TINY["features"]["set"]
    train_files = {p.name: p.read_bytes() for p in folder.glob("train_*.npy")}
    sf.write(tmp_path / "data/test/t0.wav", np.random.default_rng(1).standard_normal(8000).astype(np.float32), 16000)
    said = stage("00_prepare.py", tmp_path / "data/toy.yaml", "--output-dir", out).stdout  # the same test.csv:
    assert "removed the earlier blend" in said and not (out / "submission.csv").exists(), said  # it stayed (probe)
    r = stage("04_ensemble.py", name, "--output-dir", out, check=False)  # 01 not run yet: 00 read other test audio
    assert r.returncode == 1 and "and 00_prepare.py read other test recordings" in r.stderr and \
        "(stale test predictions): run 03_infer.py" in r.stderr, r.stderr
    said = stage("01_features.py", exp, "--output-dir", out).stdout
    assert "built in" in said and "the test recordings changed since the last build; the train features are kept" \
        in said and f"note: lm's train features are those of its earlier build: {name} trained on them stays " \
        "current; 03_infer.py predicts its test split again" in said and "stale now" not in said, said
    assert {p.name: p.read_bytes() for p in folder.glob("train_*.npy")} == train_files
    trained = o.trained(name).read()
    assert "up to date" in stage("02_train.py", exp, "--output-dir", out).stdout
    assert o.trained(name).read() == trained  # not trained again
    r = stage("04_ensemble.py", name, "--output-dir", out, check=False)
    assert r.returncode == 1 and f"feature set 'lm' was rebuilt after {name!r} was predicted" in r.stderr, r.stderr
    r = stage("04_ensemble.py", "--output-dir", out, check=False)
    assert r.returncode == 1 and f"{name}: test predictions: feature set 'lm' was rebuilt" in r.stderr, r.stderr
    assert "stale" not in stage("leaderboard.py", "--output-dir", out).stdout  # the models are current
    before = pd.read_csv(out / "preds" / f"{name}.csv").set_index("id").drop(columns="fold")
    stage("03_infer.py", exp, "--output-dir", out)
    after = pd.read_csv(out / "preds" / f"{name}.csv").set_index("id").drop(columns="fold")
    assert list(after.index[(after - before).abs().max(axis=1) > 1e-6]) == ["t0"]  # t0 predicted anew, no other
    stage("04_ensemble.py", name, "--output-dir", out)
    stage("05_bundle.py", "--output-dir", out, "--to", tmp_path / "bundle")  # the models: current
    # a test recording replaced after 00 ran, then 01 alone: the blend's test part is not current (review)
    sf.write(tmp_path / "data/test/t1.wav", np.random.default_rng(6).standard_normal(8000).astype(np.float32), 16000)
    stage("01_features.py", exp, "--output-dir", out)
    board = stage("leaderboard.py", "--output-dir", out).stdout
    assert "stale" not in board and "[ensemble.json is not current: member(s) toy_exp trained or predicted" in board
    r = stage("pseudo_label.py", "--output-dir", out, "--to", tmp_path / "pl", "--min-confidence", "0.51", check=False)
    assert r.returncode == 1 and "used other training runs or test predictions of toy_exp" in r.stderr, r.stderr
    for script in ("00_prepare.py", "01_features.py", "03_infer.py", "04_ensemble.py"):
        stage(script, *([tmp_path / "data/toy.yaml"] if script == "00_prepare.py" else [name] if script ==
                        "04_ensemble.py" else [exp]), "--output-dir", out)
    # a train recording replaced: the train split is built again and the models are stale
    sf.write(next((tmp_path / "data/train").glob("*.wav")),
             np.random.default_rng(2).standard_normal(8000).astype(np.float32), 16000)
    stage("00_prepare.py", tmp_path / "data/toy.yaml", "--output-dir", out)
    said = stage("01_features.py", exp, "--output-dir", out).stdout
    assert "kept" not in said and f"{name} trained on its earlier build is stale now" in said, said
    r = stage("04_ensemble.py", name, "--output-dir", out, check=False)
    assert r.returncode == 1 and f"was rebuilt after {name!r} was trained" in r.stderr and "03_infer.py" in r.stderr
    r = stage("04_ensemble.py", "--output-dir", out, check=False)
    assert r.returncode == 1 and f"{name}: feature set 'lm' was rebuilt after {name!r} was trained" in r.stderr
    r = stage("05_bundle.py", "--output-dir", out, "--to", tmp_path / "bundle", "--force", check=False)
    assert r.returncode == 1 and f"was rebuilt after {name!r} was trained (stale models)" in r.stderr
    for script in ("02_train.py", "03_infer.py", "04_ensemble.py"):
        stage(script, *([exp] if script != "04_ensemble.py" else [name]), "--output-dir", out)
    # a rebuild begun and killed leaves the folder without its record (Record.begin removes it first):
    # the old test predictions are not blended as if the cache were merely gone
    o.features_record(TINY["features"]["set"]).path.unlink()
    r = stage("04_ensemble.py", name, "--output-dir", out, check=False)
    assert r.returncode == 1 and ("feature set 'lm' has no finished build (01_features.py was interrupted, or is "
                                  f"running) (stale models): run 01_features.py for {name} first") in r.stderr, r.stderr
    board = stage("leaderboard.py", "--output-dir", out).stdout
    assert "stale" in board and "has no finished build" in board, board
    said = stage("01_features.py", exp, "--output-dir", out).stdout  # everything was current: rebuilt the same
    assert "trained on its earlier build" not in said and "predicts its test split again" not in said, said
    stage("04_ensemble.py", name, "--output-dir", out)
    # the caches removed after 03 (disk space): 04 and 05 do not read them, and go on
    shutil.rmtree(out / "features")
    stage("04_ensemble.py", name, "--output-dir", out)
    stage("05_bundle.py", "--output-dir", out, "--to", tmp_path / "bundle", "--force")
    # ... but once 00 has read another test recording, the predictions remember what they were made from (review)
    sf.write(tmp_path / "data/test/t1.wav", np.random.default_rng(4).standard_normal(8000).astype(np.float32), 16000)
    stage("00_prepare.py", tmp_path / "data/toy.yaml", "--output-dir", out)
    r = stage("04_ensemble.py", name, "--output-dir", out, check=False)
    assert r.returncode == 1 and "and 00_prepare.py read other test recordings" in r.stderr and \
        "(stale test predictions): run 03_infer.py" in r.stderr, r.stderr


def test_a_new_test_set_whose_features_build_is_killed_keeps_the_train_split(toy, tmp_path):
    """A new, larger test set; 01 killed while it builds the test split (its record already
    removed): the next 01 keeps the train split (its files, described by train_split.json, hashed
    again) and builds the test split alone, so the models stay current and 02 trains nothing."""
    out, exp, o = toy
    stage("02_train.py", exp, "--output-dir", out)
    trained = o.trained("toy_exp").read()
    folder = out / "features" / TINY["features"]["set"]
    train_files = {p.name: p.read_bytes() for p in folder.glob("train_*.npy")}
    ids = [f"t{i}" for i in range(400)]
    rng = np.random.default_rng(3)
    for i in ids:
        sf.write(tmp_path / "data/test" / f"{i}.wav", rng.standard_normal(8000).astype(np.float32) * 0.1, 16000)
    pd.DataFrame({"id": ids}).to_csv(tmp_path / "data/test.csv", index=False)
    pd.DataFrame({"id": ids, "label": "a"}).to_csv(tmp_path / "data/sample.csv", index=False)
    stage("00_prepare.py", tmp_path / "data/toy.yaml", "--output-dir", out)
    record = o.features_record(TINY["features"]["set"]).path
    p = subprocess.Popen([sys.executable, "01_features.py", str(exp), "--output-dir", str(out), "--workers", "1"],
                         cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while record.exists() and p.poll() is None and time.time() < deadline:  # begin() removes it first
        time.sleep(0.001)
    p.kill()
    assert p.wait() == -signal.SIGKILL and not record.exists()  # killed amid the build
    assert {p.name: p.read_bytes() for p in folder.glob("train_*.npy")} == train_files
    said = stage("01_features.py", exp, "--output-dir", out).stdout
    assert "the train features are kept as they were" in said and "rows: train 12, test 400" in said, said
    assert {p.name: p.read_bytes() for p in folder.glob("train_*.npy")} == train_files
    assert "up to date" in stage("02_train.py", exp, "--output-dir", out).stdout
    assert o.trained("toy_exp").read() == trained
    stage("03_infer.py", exp, "--output-dir", out)
    stage("04_ensemble.py", "toy_exp", "--output-dir", out)
    assert len(pd.read_csv(out / "submission.csv")) == 400
    # a train file changed by hand (train_split.json no longer describes it): every split built again; the same
    # train files come out, so they have the same id and the models stay current
    (folder / "train_spec.npy").write_bytes((folder / "train_spec.npy").read_bytes()[:-4] + b"abcd")
    said = stage("01_features.py", exp, "--output-dir", out).stdout
    assert "(features/lm/train_spec.npy has changed since it was written)" in said and "kept" not in said, said
    assert {p.name: p.read_bytes() for p in folder.glob("train_*.npy")} == train_files
    assert "up to date" in stage("02_train.py", exp, "--output-dir", out).stdout


KILLED_BEFORE_THE_BLEND_CHECK = """
import os, runpy, signal, sys
sys.path.insert(0, sys.argv[1])
from lib.data import prepare
prepare.drop_stale_blend = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)  # killed once its tables are written
sys.argv = sys.argv[2:]
runpy.run_path("00_prepare.py", run_name="__main__")
"""


def test_00_killed_after_writing_a_new_test_set_still_removes_the_old_blend(toy, tmp_path):
    """00 killed after it wrote a new test.csv and before it removed the blend of the old one: the
    next 00 compared test.csv with what the killed run had already written, found no change and
    left the old submission.csv, with a row the new test set no longer has (probe)."""
    out, exp, o = toy
    for script in ("02_train.py", "03_infer.py"):
        stage(script, exp, "--output-dir", out)
    stage("04_ensemble.py", "toy_exp", "--output-dir", out)
    pd.DataFrame({"id": ["t0"]}).to_csv(tmp_path / "data/test.csv", index=False)
    pd.DataFrame({"id": ["t0"], "label": "a"}).to_csv(tmp_path / "data/sample.csv", index=False)
    script = tmp_path / "killed.py"
    script.write_text(KILLED_BEFORE_THE_BLEND_CHECK)
    r = subprocess.run([sys.executable, script, ROOT, "00_prepare.py", tmp_path / "data/toy.yaml", "--output-dir", out],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == -signal.SIGKILL and len(pd.read_csv(out / "test.csv")) == 1, r.stderr
    assert len(pd.read_csv(out / "submission.csv")) == 2  # the old blend's, still there
    said = stage("00_prepare.py", tmp_path / "data/toy.yaml", "--output-dir", out).stdout
    assert "removed the earlier blend" in said and not (out / "submission.csv").exists(), said


def test_a_pseudo_labelled_folder_drops_the_blend_of_a_replaced_test_recording(toy, tmp_path):
    """A pseudo-labelled folder's stage-00 record held no audio fingerprints: a test recording
    replaced under its name and the folder made again kept its submission.csv of the old audio,
    and 05 bundled it (review). An experiment named "test" is a member like any other (the blend's
    record named the test set under that key, and the blend was never current: review)."""
    out, _, o = toy
    exp = tmp_path / "test.yaml"
    exp.write_text(yaml.safe_dump(TINY))
    for script in ("02_train.py", "03_infer.py"):
        stage(script, exp, "--output-dir", out)
    stage("04_ensemble.py", "test", "--output-dir", out)
    assert "not current" not in stage("leaderboard.py", "--output-dir", out).stdout
    pl = tmp_path / "pl"
    stage("pseudo_label.py", "--output-dir", out, "--to", pl, "--min-confidence", "0.5001")
    for script in ("01_features.py", "02_train.py", "03_infer.py"):
        stage(script, exp, "--output-dir", pl)
    stage("04_ensemble.py", "test", "--output-dir", pl)
    made_for = Outputs(pl).ensembled.read()["inputs"]["test.csv"]  # the test set the blend was made for
    sf.write(tmp_path / "data/test/t0.wav", np.random.default_rng(1).standard_normal(8000).astype(np.float32), 16000)
    for script in ("00_prepare.py", "01_features.py", "03_infer.py", "04_ensemble.py"):
        stage(script, tmp_path / "data/toy.yaml" if script == "00_prepare.py" else "test" if script ==
              "04_ensemble.py" else exp, "--output-dir", out)
    said = stage("pseudo_label.py", "--output-dir", out, "--to", pl, "--min-confidence", "0.5001", "--force").stdout
    assert Outputs(pl).test_id() != made_for and not (pl / "submission.csv").exists(), said  # another test set
    r = stage("05_bundle.py", "--output-dir", pl, "--to", tmp_path / "bundle", check=False)
    assert r.returncode == 1, r.stdout


def test_a_new_test_set_keeps_a_distilled_student(toy, tmp_path):
    """A student distilled from the blend (``train.distill``) depended on the blend's whole record,
    which a new test set changes: it was trained again once 03 and 04 had predicted the new test
    set (review). It depends on the blend's OOF probabilities alone now."""
    out, exp, o = toy
    student = tmp_path / "student.yaml"
    student.write_text(yaml.safe_dump(dict(TINY, train=dict(TINY["train"], distill={"weight": 0.5}))))
    for script in ("02_train.py", "03_infer.py"):
        stage(script, exp, "--output-dir", out)
    stage("04_ensemble.py", "toy_exp", "--output-dir", out)
    stage("02_train.py", student, "--output-dir", out)
    trained = o.trained("student").read()
    sf.write(tmp_path / "data/test/t0.wav", np.random.default_rng(1).standard_normal(8000).astype(np.float32), 16000)
    stage("00_prepare.py", tmp_path / "data/toy.yaml", "--output-dir", out)
    stage("01_features.py", exp, "--output-dir", out)
    stage("03_infer.py", exp, "--output-dir", out)
    stage("04_ensemble.py", "toy_exp", "--output-dir", out)  # the same OOF blend, another test part
    assert "up to date" in stage("02_train.py", student, "--output-dir", out).stdout
    assert o.trained("student").read() == trained
    assert "NOTE" not in stage("03_infer.py", student, "--output-dir", out).stdout  # not "an earlier blend's student"


def test_a_member_on_a_cache_of_the_old_audio_is_refused_after_00_read_new_audio(toy, tmp_path):
    """A test recording replaced, 00 run again, then 01-03 for one experiment only: 04 blended the
    other, whose feature set (never rebuilt) still held the old recording, and wrote its old label
    for that id (probe). Its models stay current: 01 and 03 for it are what is missing."""
    out, exp, o = toy
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(dict(TINY, features=dict(TINY["features"], set="lm12",
                                                             params=dict(TINY["features"]["params"], n_mels=12)))))
    stage("01_features.py", other, "--output-dir", out)
    stage("02_train.py", exp, other, "--output-dir", out)
    for cfg in (exp, other):
        stage("03_infer.py", cfg, "--output-dir", out)
    stage("04_ensemble.py", "toy_exp", "other", "--output-dir", out)
    sf.write(tmp_path / "data/test/t0.wav", np.random.default_rng(1).standard_normal(8000).astype(np.float32), 16000)
    stage("00_prepare.py", tmp_path / "data/toy.yaml", "--output-dir", out)
    for script in ("01_features.py", "02_train.py", "03_infer.py"):
        stage(script, exp, "--output-dir", out)
    r = stage("04_ensemble.py", "toy_exp", "other", "--output-dir", out, check=False)
    assert r.returncode == 1 and ("feature set 'lm12' and 00_prepare.py read other test recordings (replaced or "
                                  "changed since one of them ran; run 01_features.py for other first, and "
                                  "00_prepare.py before it if the audio changed after 00 ran) (stale test "
                                  "predictions): run 03_infer.py for other") in r.stderr, r.stderr
    assert not (out / "submission.csv").exists()  # 00 removed the blend of the old test audio (probe)
    r = stage("03_infer.py", other, "--output-dir", out, check=False)
    assert r.returncode == 1 and "feature set 'lm12' and 00_prepare.py read other test recordings" in r.stderr, r.stderr
    assert "stale" not in stage("leaderboard.py", "--output-dir", out).stdout  # its models and OOF: current
    stage("01_features.py", other, "--output-dir", out)  # the test split rebuilt from the new audio
    assert "up to date" in stage("02_train.py", other, "--output-dir", out).stdout
    stage("03_infer.py", other, "--output-dir", out)
    stage("04_ensemble.py", "toy_exp", "other", "--output-dir", out)
    r = stage("04_ensemble.py", "toy_exp", "nosuch", "--output-dir", out, check=False)  # a refusal names what the
    assert r.returncode == 1 and (f"; {out / 'submission.csv'} is still the last blend's that finished (toy_exp, "  # file
                                  "other; written ") in r.stderr, r.stderr  # there is (it said "made before the change")


def test_a_binary_max_model_of_before_its_meaning_changed_is_stale():
    """audio.aggregate max on a binary task renormalised both classes' maxima before 4e2b2bc; the
    models and OOF files of that meaning are refused, and retrained by 02, not kept (review)."""
    from lib.core.artifacts import SETTINGS, model_settings, trained_problem

    comp = {"task": "binary", "classes": ["n", "a"], "positive": "a", "metric": "macc", "metrics": ["macc"],
            "metadata": None, "audio": {"aggregate": "max"}}
    old = {"inputs": {SETTINGS: {**model_settings(comp), "aggregate": "max"}}}
    assert "aggregate 'max' -> 'max of the positive class'" in trained_problem(old, comp)
    assert trained_problem({"inputs": {SETTINGS: model_settings(comp)}}, comp) is None
    multiclass = {**comp, "task": "multiclass", "classes": ["n", "a", "b"], "positive": None}
    assert model_settings(multiclass)["aggregate"] == "max"  # unchanged meaning, unchanged key


def test_a_missing_experiment_names_its_variants_trained_under_other_names(toy):
    out, exp, _ = toy
    stage("02_train.py", exp, "--set", "train.epochs=1", "--output-dir", out)  # trained as toy_exp+<hash>
    r = stage("03_infer.py", exp, "--output-dir", out, check=False)
    assert r.returncode == 1 and "run 02_train.py for toy_exp (it was trained as toy_exp+" in r.stderr, r.stderr
    assert "the same --set, or --name, reaches it) first" in r.stderr
    name = next(p.name for p in (out / "models").iterdir() if p.is_dir())
    typo = name[:-1] + ("x" if name[-1] != "x" else "y")  # a typo of a trained name (probe)
    r = stage("04_ensemble.py", typo, "--output-dir", out, check=False)
    assert r.returncode == 1 and f"run 02_train.py for {typo} (did you mean {name!r}?) first" in r.stderr, r.stderr
