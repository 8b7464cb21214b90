"""Hyper-parameter sweeps (sweep.py, lib/training/sweep.py) on a tiny generated competition: two
worker processes sharing one SQLite study, pruning after the first fold, trials that repeat a
finished one, strict sweep files, trial names."""
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import ROOT, make_toy_competition

from lib.core.errors import ConfigError, MissingArtifact
from lib.core.paths import Outputs
from lib.data.prepare import prepare
from lib.features.cache import build_feature_set
from lib.runs.sweep import load_sweep, open_study, printable, run_sweep, short_keys, summarize, trial_name

EXPERIMENT = {  # a tiny CNN on 16-band log-mel, 2 epochs (the toy competition of tests/test_training.py)
    "features": {"name": "log_mel", "set": "lm16", "params": {"n_mels": 16, "n_fft": 512, "hop_length": 256}},
    "model": {"name": "cnn", "params": {"channels": [4, 8], "convs_per_block": 1, "head_hidden": 8, "dropout": 0.3}},
    "train": {"epochs": 2, "batch_size": 4, "patience": 10, "device": "cpu"},
}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """``(folder, Outputs)``: a prepared 16-clip generated binary competition (2 folds, a test set)
    with its feature set built, and ``exp.yaml`` (:data:`EXPERIMENT`) in the folder."""
    from lib.components import load_experiment

    root = tmp_path_factory.mktemp("sweep")
    out = Outputs(root / "out")
    prepare(make_toy_competition(root / "data", n=16), out.root)
    (root / "exp.yaml").write_text(yaml.safe_dump(EXPERIMENT))
    build_feature_set(out, load_experiment(root / "exp.yaml")["features"], workers=1)
    return root, out


def _sweep_file(folder, name, **keys):
    """Write ``folder/<name>.yaml``: a sweep of ``folder/exp.yaml`` with ``keys``; returns its path."""
    sweep = {"experiment": str(folder / "exp.yaml"), "space": {"optimizer.params.lr": {"low": 1e-4, "high": 1e-2,
                                                                                      "log": True}}, **keys}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def test_two_workers_share_one_sqlite_study(toy):
    folder, out = toy
    path = _sweep_file(folder, "two", space={"optimizer.params.lr": {"low": 1e-4, "high": 1e-2, "log": True},
                                             "augment.mixup.p": {"low": 0.0, "high": 0.5}}, startup_trials=5)
    cmd = [sys.executable, "sweep.py", str(path), "--trials", "1", "--output-dir", str(out.root)]
    t0 = time.time()
    workers = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for _ in range(2)]
    logs = [w.communicate(timeout=110)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), logs
    assert time.time() - t0 < 110
    study = optuna.load_study(study_name="two", storage=f"sqlite:///{out.root / 'sweeps' / 'two.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    names = [t.user_attrs["experiment"] for t in study.trials]
    assert len(set(names)) == 2 and all(n.startswith("exp@lr=") and ",mixup.p=" in n for n in names)
    for t, name in zip(study.trials, names):
        assert out.trained(name).check()[0] is not None and out.oof(name).is_file()
        assert t.value == pytest.approx(t.user_attrs["oof_accuracy"])
        assert any(line.startswith(f"trial {t.number:>3}  lr=") and "fold 0" in line and "-> OOF accuracy" in line
                   for log in logs for line in log.splitlines())
    # a summary-only run (--trials 0) after both; then the commands it prints, as printed
    done = subprocess.run(cmd[:3] + ["--trials", "0", "--output-dir", str(out.root)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    header, *rows = done.stdout.split("\n\n")[1].splitlines()[:3]  # the summary: left-aligned names, one column
    assert header.split() == ["number", "state", "value", "experiment", "params"] and len(rows) == 2
    assert len({row.index(name) for row, name in zip(rows, [r.split()[3] for r in rows])}) == 1, rows
    folder_out = out.root / "sweeps" / "two"
    assert len((folder_out / "trials.csv").read_text().splitlines()) == 3
    best = (folder_out / "best.txt").read_text().split()
    assert sorted(best) == sorted(names)
    values = {t.user_attrs["experiment"]: t.value for t in study.trials}
    assert values[best[0]] >= values[best[1]]
    assert all(out.trained(n).read()["info"]["partial"] is False for n in best)
    commands = done.stdout.split("predict and blend them:\n")[1].splitlines()[:2]
    ran = subprocess.run(["bash", "-ec", "\n".join(commands)], cwd=folder_out, capture_output=True, text=True,
                         timeout=100)  # as printed, from another folder, whatever `python` is on the PATH
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert all(out.preds(n).is_file() for n in best) and out.submission.is_file()


def test_a_trial_behind_the_median_is_pruned_after_its_first_fold(toy):
    folder, out = toy
    sweep = load_sweep(_sweep_file(folder, "prune", startup_trials=0, seed=1))
    comp = out.load_competition()
    storage = f"sqlite:///{folder / 'prune.db'}"
    study = open_study(sweep, "prune", storage, comp)
    # an earlier trial whose first fold scored 2.0, beyond any accuracy: the next one falls behind it
    study.add_trial(optuna.trial.create_trial(params={"optimizer.params.lr": 1e-3}, distributions=sweep.space,
                                              value=2.0, intermediate_values={0: 2.0}))
    lines = []
    run_sweep(sweep, open_study(sweep, "prune", storage, comp), out, 1, echo=lambda *a, **k: lines.append(a[0]))
    trial = optuna.load_study(study_name="prune", storage=storage).trials[1]
    assert trial.state == optuna.trial.TrialState.PRUNED and list(trial.intermediate_values) == [0]
    name = trial.user_attrs["experiment"]
    model_dir = out.model_dir(name)
    assert (model_dir / "fold0.record.json").is_file() and (model_dir / "fold0.pt").is_file()
    assert not (model_dir / "fold1.pt").exists() and not (model_dir / "fold1.state.pt").exists()
    assert not (model_dir / "record.json").exists() and not out.oof(name).exists()
    assert "".join(lines).endswith(")") and "-> pruned after fold 0" in "".join(lines)
    s = summarize(optuna.load_study(study_name="prune", storage=storage), out)
    assert s["best"] == [] and list(s["table"]["state"]) == ["COMPLETE", "PRUNED"]


def test_values_of_a_finished_trial_are_trained_again_only_when_the_experiment_changed(toy):
    folder, out = toy
    (folder / "twin.yaml").write_text(yaml.safe_dump(EXPERIMENT))
    path = _sweep_file(folder, "twice", experiment=str(folder / "twin.yaml"),
                       space={"optimizer.params.lr": {"choices": [0.002]}}, pruner="none")
    storage = f"sqlite:///{folder / 'twice.db'}"
    lines = []

    def run(n):
        sweep = load_sweep(path)
        run_sweep(sweep, open_study(sweep, "twice", storage, out.load_competition()), out, n,
                  echo=lambda *a, **k: lines.append(a[0]))
        return optuna.load_study(study_name="twice", storage=storage).trials

    first, second = run(2)
    weights = out.model_dir("twin@lr=0.002") / "fold0.pt"
    assert first.state == second.state == optuna.trial.TrialState.COMPLETE and first.value == second.value
    assert second.user_attrs["same_as"] == 0 and second.user_attrs["experiment"] == "twin@lr=0.002"
    assert "(same values as trial 0: up to date, not trained again)" in "".join(lines)
    assert second.intermediate_values == first.intermediate_values != {}  # the pruner's medians count it (probe)
    # the experiment file edited under the same name: the same values train the new network
    before = weights.read_bytes()
    (folder / "twin.yaml").write_text(yaml.safe_dump(
        dict(EXPERIMENT, model=dict(EXPERIMENT["model"], params=dict(EXPERIMENT["model"]["params"], channels=[4, 16])))))
    third = run(1)[2]
    assert third.user_attrs["same_as"] == 0 and weights.read_bytes() != before
    assert "(same values as trial 0: trained again: its config, folds or features changed since)" in "".join(lines)
    assert yaml.safe_load(out.model_dir("twin@lr=0.002").joinpath("config.yaml").read_text())["model"]["params"][
        "channels"] == [4, 16]


KILLED_WORKER = """
import os, signal, sys, time
sys.path.insert(0, sys.argv[1])
import optuna
from lib.runs.sweep import _run_trials
store = optuna.storages.RDBStorage(sys.argv[2], heartbeat_interval=1, grace_period=2)
study = optuna.load_study(study_name="beat", storage=store)

def objective(trial):
    time.sleep(1.5)  # a heartbeat or two, then killed outright (out of memory, a preempted machine)
    os.kill(os.getpid(), signal.SIGKILL)

_run_trials(study, objective, 1)
"""


def test_seeded_workers_opened_together_draw_their_own_values_and_a_rerun_repeats_them(toy):
    folder, out = toy
    sweep = load_sweep(_sweep_file(folder, "seeded", seed=7, pruner="none"))
    comp = out.load_competition()

    def values(study_name):  # two workers that both joined the study before its first trial
        storage = f"sqlite:///{folder / (study_name + '.db')}"
        first, second = (open_study(sweep, study_name, storage, comp) for _ in range(2))
        for study in (first, second):
            run_sweep(sweep, study, out, 1, echo=lambda *a, **k: None)
        return [t.params["optimizer.params.lr"] for t in optuna.load_study(study_name=study_name,
                                                                           storage=storage).trials]

    drawn = values("seeded")
    assert len(drawn) == 2 and drawn[0] != drawn[1]  # one seed for both drew the same value twice
    assert values("seeded_again") == drawn  # seed and the trial's number: the same sweep draws the same values
    from lib.runs.sweep import _trial_seed  # seed + number made seed 11's trial 0 seed 7's trial 4 (probe)

    assert len({_trial_seed(seed, n) for seed in (7, 11) for n in range(10)}) == 20


def test_the_summary_reads_a_trial_added_by_another_worker_meanwhile(toy, monkeypatch):
    folder, out = toy
    storage = f"sqlite:///{folder / 'race.db'}"
    sweep = load_sweep(_sweep_file(folder, "race", pruner="none"))
    study = open_study(sweep, "race", storage, out.load_competition())
    run_sweep(sweep, study, out, 1, echo=lambda *a, **k: None)
    read = study.trials_dataframe

    def another_worker_asks_first(*args, **kwargs):  # a trial that a list of trials read before this lacks
        study.ask()
        return read(*args, **kwargs)

    monkeypatch.setattr(study, "trials_dataframe", another_worker_asks_first)
    s = summarize(study, out)
    assert list(s["table"]["state"]) == ["COMPLETE", "RUNNING"]
    assert len(s["best"]) == 1 and s["best"][0].startswith("exp@")


def test_the_trial_of_a_killed_worker_is_failed_by_the_next_worker(tmp_path):
    from lib.runs.sweep import _run_trials

    url = f"sqlite:///{tmp_path / 'beat.db'}"
    store = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(study_name="beat", storage=store)
    r = subprocess.run([sys.executable, "-c", KILLED_WORKER, str(ROOT), url], capture_output=True, text=True)
    assert r.returncode == -9 and [t.state for t in study.get_trials()] == [optuna.trial.TrialState.RUNNING]
    time.sleep(2.5)  # past the grace period
    _run_trials(study, None, 0)  # --trials 0 (a look at the study) fails it too (probe)
    assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.FAIL]

    def objective(trial):  # this worker's trial outlives the grace period too: its own heartbeat keeps it
        time.sleep(2.5)
        optuna.storages.fail_stale_trials(study)
        return 1.0

    _run_trials(study, objective, 1)
    assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]


def test_a_study_of_the_other_direction_is_refused(toy):
    folder, out = toy
    sweep = load_sweep(_sweep_file(folder, "dir"))
    storage = f"sqlite:///{folder / 'dir.db'}"
    optuna.create_study(study_name="dir", storage=storage, direction="minimize")
    with pytest.raises(ConfigError, match="is to minimize, but the competition metric accuracy is to maximize"):
        open_study(sweep, "dir", storage, out.load_competition())


def test_a_study_of_a_space_with_a_key_more_is_refused(toy):
    """A sweep of lr into a study, then a sweep of lr and mixup into the same study: it joined,
    and best.txt ranked both kinds of trial together (a key changed or removed was refused,
    a key added was not)."""
    folder, out = toy
    storage, comp = f"sqlite:///{folder / 'space.db'}", out.load_competition()
    open_study(load_sweep(_sweep_file(folder, "space")), "space", storage, comp)
    wider = _sweep_file(folder, "space", space={"optimizer.params.lr": {"low": 1e-4, "high": 1e-2, "log": True},
                                                "augment.mixup.p": {"low": 0.0, "high": 0.5}})
    with pytest.raises(ConfigError, match=r"study 'space' .* sweeps space \['optimizer.params.lr'\], this sweep "
                                          r"\['augment.mixup.p', 'optimizer.params.lr'\]"):
        open_study(load_sweep(wider), "space", storage, comp)


@pytest.mark.parametrize("keys, match", [
    ({"trails": 3}, r"unknown key 'trails' in .*bad\.yaml; did you mean 'trials'\?"),
    ({"space": {"optimizer.params.lrr": {"low": 1e-4, "high": 1e-2}}},
     r"bad\.yaml \[space\.optimizer\.params\.lrr\]: unknown parameter optimizer\.params\.lrr .*did you mean 'lr'\?"),
    ({"space": {"optimzer.params.lr": {"low": 1e-4, "high": 1e-2}}},
     r"bad\.yaml \[space\.optimzer\.params\.lr\]: unknown key 'optimzer' .*did you mean 'optimizer'\?"),
    ({"space": {"optimizer.params.lr": {"low": 1e-4, "hihg": 1e-2}}},
     r"unknown key 'hihg' in .*bad\.yaml \[space\.optimizer\.params\.lr\]; did you mean 'high'\?"),
    ({"space": {"model.params.pooling": {"choices": ["mean", "meen"]}}},
     r"bad\.yaml \[space\.model\.params\.pooling\]: .*'meen'"),
    ({"space": {"optimizer.params.lr": {"low": 0.0, "high": 1e-2, "log": True}}},
     r"bad\.yaml \[space\.optimizer\.params\.lr\]: .*low"),
    ({"space": {"train.folds": {"choices": [[0], [1]]}}}, r"bad\.yaml \[space\.train\.folds\]: .*no hyper-parameter"),
    ({"sets": ["train.epoch=3"]}, r"bad\.yaml \(experiment/sets\): unknown key 'train\.epoch' .*'train\.epochs'"),
    ({"space": {"model.params.dropout": {"low": 0.99996, "high": 0.99999}}},  # trials get 4 digits: 1.0 (probe)
     r"bad\.yaml \[space\.model\.params\.dropout\]: .*dropout must be .*got 1\.0"),
    ({"space": {"model.params.dropout": {"low": 0.1, "high": 0.45, "step": 0.1}}},  # Optuna would cut high (probe)
     r"\[space\.model\.params\.dropout\]: step 0\.1 must be > 0 and divide high - low = 0\.35"),
    ({"space": {"optimizer.params.lr": {"low": 1e-4, "high": 1e-2, "choices": [1e-3]}}},  # ("unknown key 'low'": probe)
     r"\[space\.optimizer\.params\.lr\]: choices and low, high cannot be combined"),
    ({"space": {}}, r"bad\.yaml: space is empty"),
    ({"experiment": {}}, r"bad\.yaml: missing required key 'experiment'"),
    ({"space": None}, r"bad\.yaml: missing required key 'space'"),  # (a KeyError: review)
    ({"space": {"pretrain.lr": {"low": 1e-4, "high": 1e-2}}}, r"\[space\.pretrain\.lr\]: .*pretrain\.py's"),
])
def test_a_bad_sweep_file_names_the_file_and_key(toy, keys, match):
    with pytest.raises(ConfigError, match=match):
        load_sweep(_sweep_file(toy[0], "bad", **keys))


def test_a_sweep_over_settings_a_scikit_learn_member_has_no_use_for_is_refused(toy):
    """A --set passes network-only settings over for ``hgb`` (a run gives its overrides to every
    experiment), so a sweep of ``optimizer.params.lr`` on it fitted the same model every trial."""
    folder = toy[0]
    (folder / "member.yaml").write_text(yaml.safe_dump({"base": "exp.yaml", "model": {"name": "hgb"}}))
    with pytest.raises(ConfigError, match=r"lr\.yaml \[space\.optimizer\.params\.lr\]: optimizer\.params\.lr does "
                                          r"not apply to the scikit-learn member 'hgb' .*every trial would fit the same"):
        load_sweep(_sweep_file(folder, "lr", experiment=str(folder / "member.yaml")))
    grid = {"model.params.max_iter": {"choices": [10, 20]}}
    assert load_sweep(_sweep_file(folder, "iters", experiment=str(folder / "member.yaml"), space=grid)).space


def test_trial_names_are_deterministic_distinct_and_readable():
    values = {"optimizer.params.lr": 0.0012, "augment.mixup.p": 0.4, "model.params.dropout": 0.3,
              "train.batch_size": 64, "model.params.channels": [8, 16]}
    name = trial_name("cnn_small", values)
    assert name == "cnn_small@batch_size=64,channels=8_16,dropout=0.3,lr=0.0012,mixup.p=0.4"
    assert name == trial_name("cnn_small", dict(reversed(list(values.items()))))
    assert trial_name("a", {"x.y": 1e6, "x.zz": 1e-5}) == "a@x.y=1e06,zz=1e-05"  # no "+" in a name
    variants = [{**values, "optimizer.params.lr": lr, "augment.mixup.p": p} for lr in (1e-3, 1.001e-3, 1e-4)
                for p in (0.0, 0.4, 0.45)] + [{**values, "model.params.channels": [8, 16, 32]},
                                              {**values, "model.params.channels": "a b"}]
    names = [trial_name("cnn_small", v) for v in variants]
    assert len(set(names)) == len(names) and all(n.count("@") == 1 for n in names)
    assert all(c.isalnum() or c in "@=,._-~" for n in names for c in n)
    assert short_keys(["augment.mixup.p", "augment.cutmix.p", "model.params.lr", "optimizer.params.lr"]) == {
        "augment.mixup.p": "mixup.p", "augment.cutmix.p": "cutmix.p", "model.params.lr": "model.params.lr",
        "optimizer.params.lr": "optimizer.params.lr"}


def test_a_pipeline_error_stops_the_sweep(toy):
    folder, out = toy
    exp = dict(EXPERIMENT, features={**EXPERIMENT["features"], "set": "never_built"})
    (folder / "unbuilt.yaml").write_text(yaml.safe_dump(exp))
    path = _sweep_file(folder, "stops")
    path.write_text(path.read_text().replace(str(folder / "exp.yaml"), str(folder / "unbuilt.yaml")))
    sweep = load_sweep(path)
    storage = f"sqlite:///{folder / 'stops.db'}"
    with pytest.raises(MissingArtifact, match="never_built"):
        run_sweep(sweep, open_study(sweep, "stops", storage, out.load_competition()), out, 3, echo=lambda *a, **k: None)
    assert [t.state.name for t in optuna.load_study(study_name="stops", storage=storage).trials] == ["FAIL"]


def test_values_invalid_together_fail_their_trial_and_the_sweep_goes_on(toy):
    """train.epochs 1 and warmup_epochs 2 are each within their ranges, not together: that trial
    fails with a line naming the sweep file and why, and the others train."""
    folder, out = toy
    path = _sweep_file(folder, "together", space={"train.epochs": {"choices": [2, 1]},
                                                  "scheduler.params.warmup_epochs": {"choices": [0, 2]}},
                       sets=["train.folds=[0]"])
    sweep = load_sweep(path)  # each value alone is valid
    from lib.core.config import variant_name  # a sweep's sets name a variant once (twice: a review of a change)
    assert load_sweep(_sweep_file(folder, "named", sets=["train.epochs=2"])).stem == variant_name("exp", ["train.epochs=2"])
    # the choices in the other order: epochs 1 first failed with warmup 2 at load, in any order now (probe)
    load_sweep(_sweep_file(folder, "together2", space={"train.epochs": {"choices": [1, 2]},
                                                       "scheduler.params.warmup_epochs": {"choices": [0, 2]}}))
    lines = []
    study = open_study(sweep, "together", f"sqlite:///{folder / 'together.db'}", out.load_competition())
    study.enqueue_trial({"train.epochs": 1, "scheduler.params.warmup_epochs": 2})
    study.enqueue_trial({"train.epochs": 2, "scheduler.params.warmup_epochs": 0})
    run_sweep(sweep, study, out, 2, echo=lambda *a, **k: lines.append(a[0]))
    assert [t.state.name for t in study.get_trials()] == ["FAIL", "COMPLETE"]
    assert "warmup_epochs 2 is more than train.epochs 1" in study.trials[0].user_attrs["invalid"]
    failed = next(line for line in lines if "do not go together" in line)
    assert failed.startswith("trial   0") and str(path) in failed and "warmup_epochs 2 is more than" in failed


@pytest.fixture
def postgres():
    """The URL of a throw-away PostgreSQL server on a free loopback port (``initdb`` + ``pg_ctl``
    from the system's PostgreSQL; run as the ``postgres`` user when the tests run as root, since
    the server refuses root), stopped and deleted afterwards. Skips, saying why, where the server
    binaries are absent (``.ci/run`` installs them) or a root run has no ``postgres`` user."""
    import glob
    import pwd
    import shutil
    import socket
    import tempfile

    found = [shutil.which("initdb")] + sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))[-1:]
    initdb = next((p for p in found if p), None)
    if initdb is None:
        pytest.skip("PostgreSQL server not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin): "
                    "install the 'postgresql' package, as .ci/run does, to run the database-server sweep test")
    pg_ctl = str(Path(initdb).resolve().with_name("pg_ctl"))
    as_user = []
    folder = Path(tempfile.mkdtemp(prefix="sweep-pg-"))
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("tests run as root and there is no 'postgres' user to run the PostgreSQL server as")
        os.chown(folder, user.pw_uid, user.pw_gid)
        as_user = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = folder / "data"
    run = lambda *cmd: subprocess.run(as_user + list(cmd), capture_output=True, text=True, timeout=120, cwd=folder)
    made = run(initdb, "-D", str(data), "-A", "trust", "-U", "sweep", "--no-sync")
    assert made.returncode == 0, made.stdout + made.stderr
    started = run(pg_ctl, "-D", str(data), "-l", str(folder / "server.log"), "-w", "start",
                  "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off")
    assert started.returncode == 0, started.stdout + started.stderr + (folder / "server.log").read_text()
    try:
        yield f"postgresql://sweep@127.0.0.1:{port}/postgres"
    finally:
        run(pg_ctl, "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def test_workers_share_prune_and_resume_a_postgresql_study(toy, postgres):
    """Two sweep.py workers on one PostgreSQL study; a worker stopped by Ctrl-C (SIGINT) marks its
    trial failed and the same command goes on with the study; a trial behind the median of the
    server's trials is pruned after its first fold."""
    import signal

    folder, out = toy
    path = _sweep_file(folder, "pg", startup_trials=2)
    cmd = [sys.executable, "sweep.py", str(path), "--trials", "1", "--storage", postgres, "--output-dir", str(out.root)]
    workers = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for _ in range(2)]
    logs = [w.communicate(timeout=150)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), logs
    study = optuna.load_study(study_name="pg", storage=postgres)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    names = {t.user_attrs["experiment"] for t in study.trials}
    assert len(names) == 2 and all(out.oof(n).is_file() for n in names)
    assert all(f"study pg ({postgres})" in log for log in logs)

    # Ctrl-C while the third trial runs: the trial fails, the worker stops, the study keeps the rest.
    # The worker starts with SIGINT's default action, as from a terminal: a test run started in the
    # background of a non-interactive shell (as CI may be) ignores SIGINT, and its children inherit that
    worker = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not any(t.state == optuna.trial.TrialState.RUNNING for t in study.get_trials(deepcopy=False)):
        assert worker.poll() is None and time.time() < deadline, worker.communicate()[0]
        time.sleep(0.05)
    worker.send_signal(signal.SIGINT)
    log = worker.communicate(timeout=60)[0]
    assert worker.returncode != 0, log
    assert [t.state.name for t in study.get_trials(deepcopy=False)] == ["COMPLETE", "COMPLETE", "FAIL"], log
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=150)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "3 trials so far" in again.stdout
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    assert states[:3] == ["COMPLETE", "COMPLETE", "FAIL"] and states[3] in ("COMPLETE", "PRUNED")

    # four more trials whose first fold scored 2.0, beyond any accuracy, outnumber the three real ones:
    # the next trial falls behind the median
    sweep = load_sweep(path)
    for lr in (1e-3, 2e-3, 3e-3, 4e-3):
        study.add_trial(optuna.trial.create_trial(params={"optimizer.params.lr": lr}, distributions=sweep.space,
                                                  value=2.0, intermediate_values={0: 2.0}))
    run_sweep(sweep, open_study(sweep, "pg", postgres, out.load_competition()), out, 1, echo=lambda *a, **k: None)
    last = optuna.load_study(study_name="pg", storage=postgres).trials[-1]
    assert last.state == optuna.trial.TrialState.PRUNED and list(last.intermediate_values) == [0]


def test_a_journal_file_study_is_shared_and_passwords_are_not_printed(toy):
    """``--storage journal:PATH``: a second worker joins the first's study and adds its trial; a
    database URL's password never appears in what sweep.py prints."""
    folder, out = toy
    sweep = load_sweep(_sweep_file(folder, "journal", pruner="none"))
    storage = f"journal:{folder / 'journal.log'}"
    for worker in range(2):
        run_sweep(sweep, open_study(sweep, "journal", storage, out.load_competition()), out, 1,
                  echo=lambda *a, **k: None)
    reread = optuna.load_study(study_name="journal", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(folder / "journal.log"))))
    assert [t.state.name for t in reread.trials] == ["COMPLETE", "COMPLETE"]
    assert all(out.oof(t.user_attrs["experiment"]).is_file() for t in reread.trials)
    assert printable("postgresql://ann:s3cret@db.example:5432/sweeps") == "postgresql://ann:***@db.example:5432/sweeps"
    with pytest.raises(ConfigError, match=r"--storage postgresql://ann:\*\*\*@127\.0\.0\.1:1/x: cannot open") as e:
        open_study(sweep, "x", "postgresql://ann:s3cret@127.0.0.1:1/x", out.load_competition())
    assert "s3cret" not in str(e.value)


def test_a_study_name_that_is_not_one_folder_name_is_refused(toy):
    """--study ../../x put the study's database and folder outside the output folder (review)."""
    from conftest import stage

    folder, out = toy
    path = _sweep_file(folder, "named")
    r = stage("sweep.py", path, "--trials", "0", "--study", "../../x", "--output-dir", out.root, check=False)
    assert r.returncode == 1 and "--study: one folder name expected" in r.stderr
    assert not (out.root.parent / "x.db").exists()  # where sweeps/../../x.db lands


def test_a_storage_that_cannot_be_opened_says_what_was_meant(toy, tmp_path):
    """Typos of --storage gave the driver's words alone (probe): 'postgres://', a bare path, a
    sqlite path taken relative to the current folder."""
    folder, out = toy
    sweep, comp = load_sweep(_sweep_file(folder, "hint")), out.load_competition()
    for storage, hint in (("postgres://u:pw@127.0.0.1:1/db", "SQLAlchemy names it postgresql://"),
                          (str(tmp_path / "study.db"), "expected journal:PATH"),
                          ("sqlite:///no/such/folder/x.db", "sqlite:///PATH is relative to the current folder")):
        with pytest.raises(ConfigError, match="cannot open the study") as exc:
            open_study(sweep, "hint", storage, comp)
        assert hint in str(exc.value) and "pw" not in str(exc.value), str(exc.value)


def test_trials_csv_holds_the_values_trained(tmp_path):
    """Float ranges train at 4 significant digits and trials.csv says so; integers and choices
    are kept as drawn (a float column of an integer parameter, NaN for a trial without it, was
    rounded too: review)."""
    import pandas as pd
    from optuna.distributions import FloatDistribution, IntDistribution

    study = optuna.create_study(study_name="r", direction="maximize")
    dists = {"lr": FloatDistribution(1e-5, 1e-3, log=True), "n": IntDistribution(1, 100000)}
    study.add_trial(optuna.trial.create_trial(params={"lr": 0.000123456, "n": 40225}, distributions=dists, value=0.5))
    study.add_trial(optuna.trial.create_trial(params={"lr": 0.0002}, distributions={"lr": dists["lr"]}, value=0.4))
    summarize(study, Outputs(tmp_path))
    table = pd.read_csv(tmp_path / "sweeps" / "r" / "trials.csv")
    assert table["params_lr"].tolist() == [0.0001235, 0.0002] and table["params_n"].tolist()[0] == 40225


def test_a_trials_value_is_its_score_at_the_competitions_fixed_threshold(tmp_path):
    """With ``decision.threshold: 0.9`` 04 and the leaderboard score every member at that cut; the
    sweep ranked its trials at p > 0.5 (probe: best.txt named a trial 04 put 7th of 8)."""
    import pandas as pd
    from sklearn.metrics import accuracy_score

    from lib.components import load_experiment

    import soundfile as sf

    comp = make_toy_competition(tmp_path / "data", n=16)
    for path in sorted((tmp_path / "data/train").glob("*.wav"))[1::2]:  # class b louder: a score the cut changes
        y, sr = sf.read(path, dtype="float32")
        sf.write(path, 8 * y, sr)
    comp["decision"] = dict(comp.get("decision") or {}, threshold=0.9)
    out = Outputs(tmp_path / "out")
    prepare(comp, out.root)
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump({"base": str(ROOT / "configs/zoo/hgb.yaml"),
                                                       "model": {"params": {"min_samples_leaf": 2}},
                                                       "features": EXPERIMENT["features"]}))
    build_feature_set(out, load_experiment(tmp_path / "exp.yaml")["features"], workers=1)
    sweep = load_sweep(_sweep_file(tmp_path, "cut", space={"model.params.max_iter": {"choices": [3, 10]}}))
    storage = f"sqlite:///{tmp_path / 'cut.db'}"
    run_sweep(sweep, open_study(sweep, "cut", storage, out.load_competition()), out, 2, echo=lambda *a, **k: None)
    for trial in optuna.load_study(study_name="cut", storage=storage).trials:
        oof = pd.read_csv(out.oof(trial.user_attrs["experiment"]))
        at_cut = accuracy_score(oof["target"] == "b", oof["p_b"] > 0.9)
        assert trial.value == pytest.approx(at_cut) and trial.user_attrs["oof_accuracy"] == pytest.approx(at_cut)
        assert at_cut != accuracy_score(oof["target"] == "b", oof["p_b"] > 0.5)  # the case this test is about


def test_sigterm_fails_the_running_trial_as_ctrl_c_does(toy):
    """``timeout`` or a batch scheduler stops a worker with SIGTERM: its trial is marked failed at
    once (it stayed running until its heartbeat ran out, and a later trial of the same values was
    pruned as running in another worker meanwhile: probe)."""
    import signal

    folder, out = toy
    path = _sweep_file(folder, "term", pruner="none", sets=["train.epochs=8"])  # time to be stopped in
    storage = f"sqlite:///{folder / 'term.db'}"
    worker = subprocess.Popen([sys.executable, "sweep.py", str(path), "--trials", "1", "--storage", storage,
                               "--output-dir", str(out.root)], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while True:  # until the trial trains (a signal amid the worker's own database writes is another matter)
        try:
            trials = optuna.load_study(study_name="term", storage=storage).trials
        except KeyError:  # the study not made yet
            trials = []
        name = trials[0].user_attrs.get("experiment") if trials else None
        if name and trials[0].state.name == "RUNNING" and list(out.model_dir(name).glob("fold0*")):
            break
        assert worker.poll() is None and time.time() < deadline, worker.communicate()[0]
        time.sleep(0.05)
    worker.send_signal(signal.SIGTERM)
    log = worker.communicate(timeout=120)[0]
    assert worker.returncode != 0, log
    assert [t.state.name for t in optuna.load_study(study_name="term", storage=storage).trials] == ["FAIL"], log
