"""Training on several processes (``torchrun``, gloo on the CPU, 2 ranks): folds shared out give the
OOF predictions of a sequential run, DDP trains as one rank with the doubled batch, rank 0 writes
the artifacts, an interrupted parallel run goes on where it stopped."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import ROOT, make_toy_competition

from lib.core.errors import ConfigError
from lib.data.demo import make_demo
from lib.runs import distributed
from lib.training import ddp
from lib.training.ddp import Ranks

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
TINY = {"base": str(ROOT / "configs" / "cnn_small.yaml"),
        "features": {"name": "log_mel", "set": "lm16", "params": {"n_mels": 16, "n_fft": 512, "hop_length": 256}},
        "model": {"name": "cnn", "params": {"channels": [4, 8], "convs_per_block": 1, "dropout": 0.3}},
        "augment": {"mixup": {"p": 0.5}, "spec_augment": {"p": 0.5, "freq_mask": 4, "time_mask": 4}},
        "train": {"epochs": 3, "batch_size": 4, "ema": 0.9, "device": "cpu"}}


def _one_core():
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one thread, as each of two ranks on two cores


def _run(args, out, one_core=False):
    r = subprocess.run([*args, "--output-dir", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600,
                       preexec_fn=_one_core if one_core else None, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout + r.stderr


def _prepared(root, exps: dict, data_config, data_dir=None):
    """Stages 00 and 01 for the experiments ``exps`` (name -> config dict) into ``root/base``."""
    paths = []
    for name, exp in exps.items():
        (root / f"{name}.yaml").write_text(yaml.safe_dump(exp))
        paths.append(str(root / f"{name}.yaml"))
    base = root / "base"
    _run([sys.executable, "00_prepare.py", str(data_config), *(["--data-dir", str(data_dir)] if data_dir else [])], base)
    _run([sys.executable, "01_features.py", *paths], base)
    return paths, base


def _copy(base, to):
    subprocess.run(["cp", "-r", str(base), str(to)], check=True)
    return to


def _oof(out, name):
    return pd.read_csv(out / "oof" / f"{name}.csv")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Two experiments (a tiny CNN with dropout, Mixup, SpecAugment and EMA; and its variant with
    another seed) of a generated 24-clip, 3-fold competition, prepared through stage 01."""
    root = tmp_path_factory.mktemp("dist")
    make_toy_competition(root / "data", n=24)
    comp = yaml.safe_load((root / "data" / "toy.yaml").read_text())
    comp["folds"]["n_folds"] = 3
    (root / "data" / "toy.yaml").write_text(yaml.safe_dump(comp))
    other = dict(TINY, train=dict(TINY["train"], seed=7))
    paths, base = _prepared(root, {"tiny": TINY, "tiny_seed7": other}, root / "data" / "toy.yaml")
    return root, paths, base


def test_folds_shared_out_give_the_sequential_oof(toy, tmp_path):
    root, paths, base = toy
    seq, par = _copy(base, tmp_path / "seq"), _copy(base, tmp_path / "par")
    _run([sys.executable, "02_train.py", *paths], seq, one_core=True)
    log = _run([*TORCHRUN, "02_train.py", *paths], par)
    trained_by = {}
    for name in ("tiny", "tiny_seed7"):  # 6 folds of two experiments shared out to two ranks
        a, b = _oof(seq, name), _oof(par, name)
        assert len(a) == 24 and a[["id", "fold", "target"]].equals(b[["id", "fold", "target"]])
        np.testing.assert_array_equal(a.filter(like="p_").to_numpy(), b.filter(like="p_").to_numpy())
        record = json.loads((par / "models" / name / "record.json").read_text())
        assert record["info"]["folds"] == [0, 1, 2] and not record["info"]["partial"]
        trained_by[name] = [json.loads((par / "models" / name / f"fold{f}.record.json").read_text())["info"]
                            ["environment"]["ranks"] for f in range(3)]
    # the first round dealt (fold k of the run to rank k); the other 4 to whichever rank was free
    assert trained_by["tiny"][:2] == ["rank 0 of 2", "rank 1 of 2"], trained_by
    assert log.count("tiny: OOF accuracy") == 1 and log.count("tiny_seed7: OOF accuracy") == 1  # rank 0 merges
    assert "trained by rank 1" in log and "[rank 1] fold" in log
    again = _run([*TORCHRUN, "02_train.py", *paths], par)  # nothing left to do: both skipped, nothing rewritten
    assert again.count("trained models are up to date, skipped") == 2


def _two_machines(args: list[list[str]], out, kill_when: str | None = None) -> tuple[list[int], list[str]]:
    """Two launchers of docs/distributed.md's multi-machine lines (``--nnodes 2``, a c10d
    rendezvous on 127.0.0.1, hosted by node 0's), node r running ``02_train.py *args[r] --output-dir
    out``, each pinned to a core of its own; ``kill_when``: node 1's launcher is killed (SIGKILL, as a machine that
    goes away) when its output matches this regular expression. Returns their exit codes and outputs."""
    import functools
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cores = sorted(os.sched_getaffinity(0))

    def launch(node: int) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node), "--nproc-per-node",
             "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "loopback",
             "02_train.py", *args[node], "--output-dir", str(out)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
            preexec_fn=functools.partial(os.sched_setaffinity, 0, {cores[node % len(cores)]}))

    launchers = [launch(0)]
    for _ in range(600):  # node 0 hosts the rendezvous store (the first launcher to bind the port does)
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    launchers.append(launch(1))
    seen = []
    if kill_when:
        for line in launchers[1].stdout:
            seen.append(line)
            if re.search(kill_when, line):
                launchers[1].kill()
                break
    logs = [p.communicate(timeout=600)[0] for p in launchers]
    return [p.returncode for p in launchers], [logs[0], "".join(seen) + logs[1]]


def test_two_machines_on_the_loopback_address(toy, tmp_path):
    """The multi-machine lines of docs/distributed.md (``--nnodes 2``, a c10d rendezvous), as two
    launchers on this machine meeting on 127.0.0.1 and sharing one output folder, each pinned to
    a core of its own: the folds are shared out over both "machines" and the OOF predictions are
    the sequential run's."""
    import functools
    import socket

    root, paths, base = toy
    seq, par = _copy(base, tmp_path / "seq"), _copy(base, tmp_path / "par")
    _run([sys.executable, "02_train.py", *paths], seq, one_core=True)
    codes, logs = _two_machines([paths, paths], par)
    assert codes == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    for name in ("tiny", "tiny_seed7"):
        np.testing.assert_array_equal(_oof(seq, name).filter(like="p_").to_numpy(),
                                      _oof(par, name).filter(like="p_").to_numpy())
    trained_by = {json.loads((par / "models" / name / f"fold{f}.record.json").read_text())["info"]["environment"]["ranks"]
                  for name in ("tiny", "tiny_seed7") for f in range(3)}
    assert trained_by == {"rank 0 of 2", "rank 1 of 2"}  # both machines trained folds
    assert not (par / ".claims").exists()  # the launch's claims removed at the end


def test_machines_given_other_lines_are_refused_before_any_work(toy, tmp_path):
    """Launchers given the experiments in another order (or other settings under one name) dealt
    folds by position: both ranks trained one experiment's folds at once, the other's were never
    trained, and the summary said "trained by rank 1" (probe). Now every rank refuses at once."""
    root, paths, base = toy
    par = _copy(base, tmp_path / "par")
    codes, logs = _two_machines([paths, paths[::-1]], par)
    assert codes[0] != 0 and codes[1] != 0, logs[0][-3000:]
    for log in logs:
        assert "the ranks of this launch were given other experiments or another order" in log, log[-3000:]
    assert not list(par.glob("models/*/fold*.record.json")) and not list(par.glob("models/*/record.json"))
    codes, logs = _two_machines([[paths[0], "--set", "train.epochs=2", "--name", "x"],
                                 [paths[0], "--set", "train.epochs=3", "--name", "x"]], par)
    assert codes[0] != 0 and "were given other settings" in logs[0], logs[0][-3000:]
    codes, logs = _two_machines([[paths[0], "--set", "train.folds=[0]"], [paths[0], "--set", "train.folds=[1]"]], par)
    assert codes[0] != 0 and "were given other train.folds: rank 0: [[0]]; rank 1: [[1]]" in logs[0], logs[0][-3000:]


def test_a_machine_that_goes_away_is_said_in_one_line(toy, tmp_path):
    """The other machine's launcher killed in the middle of its fold: this one trains the folds
    left and then says that a rank left, keeping its folds (it ended in a gloo traceback: probe)."""
    root, paths, base = toy
    slow = dict(TINY, train=dict(TINY["train"], epochs=30))
    (root / "slow.yaml").write_text(yaml.safe_dump(slow))
    par = _copy(base, tmp_path / "par")
    codes, logs = _two_machines([[str(root / "slow.yaml")]] * 2, par, kill_when=r"fold \d epoch  3/30")
    assert codes[0] != 0 and "another rank of this launch left before the end" in logs[0], logs[0][-3000:]
    assert "Traceback" not in logs[0].split("another rank of this launch left")[0][-2000:]
    assert list(par.glob("models/slow/fold*.record.json"))  # the folds this machine trained are kept


def test_interrupted_parallel_run_goes_on(toy, tmp_path):
    """torchrun killed (SIGINT, as Ctrl-C) after rank 1 finished an epoch: the re-run keeps the
    finished folds, resumes the others and gives the sequential OOF predictions."""
    root, paths, base = toy
    slow = dict(TINY, train=dict(TINY["train"], epochs=30))  # long enough to be caught in the middle
    (root / "slow.yaml").write_text(yaml.safe_dump(slow))
    seq, par = _copy(base, tmp_path / "seq"), _copy(base, tmp_path / "par")
    _run([sys.executable, "02_train.py", str(root / "slow.yaml")], seq, one_core=True)
    p = subprocess.Popen([*TORCHRUN, "02_train.py", str(root / "slow.yaml"), "--output-dir", str(par)], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
    seen = []
    for line in p.stdout:
        seen.append(line)
        if re.search(r"\[rank 1\] fold \d epoch  5/30", line):  # rank 1's first fold, in the middle
            os.killpg(p.pid, signal.SIGINT)
            break
    p.wait(60)
    assert p.returncode != 0, "".join(seen)[-3000:]
    assert not (par / "models" / "slow" / "record.json").exists()
    log = _run([*TORCHRUN, "02_train.py", str(root / "slow.yaml")], par)
    assert "resuming after epoch" in log
    np.testing.assert_array_equal(_oof(seq, "slow").filter(like="p_").to_numpy(),
                                  _oof(par, "slow").filter(like="p_").to_numpy())


def test_ddp_trains_as_one_rank_with_the_doubled_batch(tmp_path):
    """Two ranks of 8 windows (DDP) against one rank of 16 on a learnable generated competition:
    the same OOF probabilities within 0.05 (BatchNorm statistics are per rank: over 8 windows,
    not 16; measured 0.008 at most); rank 0 alone writes and logs."""
    make_demo(tmp_path / "input", n_train=96, n_test=8)
    exp = dict(TINY, model={"name": "cnn", "params": {"channels": [8, 16], "convs_per_block": 1, "dropout": 0.0}},
               augment={"mixup": {"p": 0.0}, "spec_augment": {"p": 0.0}},
               train={"epochs": 4, "batch_size": 8, "ema": None, "device": "cpu",
                      "smooth_epochs": 1})  # the raw best epoch: a 3-epoch mean of near-equal scores may pick neighbours
    (path,), base = _prepared(tmp_path, {"ddp": exp}, ROOT / "configs" / "data" / "demo.yaml", tmp_path / "input")
    one, ddp = _copy(base, tmp_path / "one"), _copy(base, tmp_path / "ddp")
    _run([sys.executable, "02_train.py", path, "--set", "train.batch_size=16", "--name", "ddp"], one, one_core=True)
    log = _run([*TORCHRUN, "02_train.py", path, "--set", "train.distributed=ddp"], ddp)
    a, b = _oof(one, "ddp"), _oof(ddp, "ddp")
    assert np.abs(a.p_rise - b.p_rise).max() < 0.05 and a.p_rise.corr(b.p_rise) > 0.95
    assert "[rank 1] fold" not in log and log.count("[rank 0] fold 0 epoch  4/4") == 1
    assert "[rank 1] ddp: fold 0: trained; fold 1: trained" in log
    env = json.loads((ddp / "models" / "ddp" / "fold0.record.json").read_text())["info"]["environment"]
    assert env["ranks"] == "all 2 (DDP)"
    # a one-process run of the same config is another training (another global batch): not "finished"
    log = _run([sys.executable, "02_train.py", path, "--set", "train.distributed=ddp", "--set", "train.folds=[0]"], ddp)
    assert "fold 0: trained" in log
    assert ("ddp: the training mode (DDP over 2 ranks -> one model per fold on one process) changed since its models "
            "were trained: they are trained again") in log  # it was unsaid, where other changes were said (probe)


def test_rank_threads_honour_the_users_omp_num_threads(monkeypatch):
    """Two launchers of one rank each on a 2-core machine took 2 threads each whatever
    OMP_NUM_THREADS said (probe): the user's value holds where torchrun cannot have set it."""
    from lib.runs import distributed

    monkeypatch.setattr(distributed, "n_cpus", lambda: 8)
    for given, local_world, threads in [("1", 1, 1), ("3", 1, 3), ("3", 2, 3), ("1", 2, 4), (None, 2, 4),
                                        (None, 1, 8), ("0", 1, 8), ("x", 1, 8), (None, 16, 1)]:
        if given is None:
            monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        else:
            monkeypatch.setenv("OMP_NUM_THREADS", given)
        assert distributed.rank_threads(local_world) == threads, (given, local_world)


def _ddp_step(rank, init, batches, result):
    """Rank ``rank`` of 2: one DDP training step of a BatchNorm-free model on its share of a global
    batch of 5 (3 + 2 windows); rank 0 saves the weights after the step to ``result``."""
    import torch.distributed as dist

    from lib.training.loop import train_step

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2")
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    ranks = Ranks.from_env()
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 1)
    net = torch.nn.parallel.DistributedDataParallel(model)
    x, y = batches
    mine = ddp.shard(np.arange(len(x)), ranks)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    train_step(lambda s, _: {"logits": net(s)}, model, opt, torch.nn.BCEWithLogitsLoss(),
               torch.amp.GradScaler("cpu", enabled=False), x[mine], None, y[mine], torch.device("cpu"), amp=False,
               weight=len(mine) * 2 / len(x), ranks=ranks)
    if rank == 0:
        torch.save(model.state_dict(), result)
    distributed.finish(ranks)


def test_ddp_step_is_the_global_batch_step(tmp_path):
    """Shares of 3 and 2 windows, each weighted by its size: the step equals one process's step
    on all 5 (gradient averaging over ranks is exact)."""
    from lib.training.loop import train_step

    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(5, 6, generator=g), (torch.rand(5, 1, generator=g) > 0.5).float()
    torch.multiprocessing.spawn(_ddp_step, args=(f"file://{tmp_path / 'init'}", (x, y), str(tmp_path / "w.pt")),
                                nprocs=2)
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    train_step(lambda s, _: {"logits": model(s)}, model, opt, torch.nn.BCEWithLogitsLoss(),
               torch.amp.GradScaler("cpu", enabled=False), x, None, y, torch.device("cpu"), amp=False)
    ddp = torch.load(tmp_path / "w.pt")
    for k, v in model.state_dict().items():
        torch.testing.assert_close(ddp[k], v, rtol=1e-6, atol=1e-7)


def test_a_free_rank_takes_the_next_unclaimed_fold(tmp_path):
    """claim_work: ranks that share a claims folder each take a task once, in order, whenever they
    are free, after a first round dealt one to each rank (here rank 1 starts first and is free
    again before rank 0 starts; then rank 0 is free twice while rank 1 trains one long fold)."""
    folder = tmp_path / "claims"
    folder.mkdir()
    rank0, rank1 = (distributed.claim_work(list("abcde"), folder, rank, 2) for rank in (0, 1))
    assert next(rank1) == "b" and next(rank1) == "c"  # "a" is rank 0's, however late it starts
    assert next(rank0) == "a"
    assert [next(rank0), next(rank0)] == ["d", "e"]  # rank 1 still busy with c
    assert list(rank1) == [] and list(rank0) == []  # nothing left, nothing twice
    assert list(distributed.claim_work([1, 2, 3], None)) == [1, 2, 3]  # one rank: everything


def test_ddp_configuration_errors():
    two = Ranks(rank=0, world=2, local_rank=0, local_world=2)
    with pytest.raises(ConfigError, match="SyncBatchNorm needs CUDA"):
        ddp.check_ddp(two, torch.device("cpu"), sync_bn=True)
    ddp.check_ddp(two, torch.device("cpu"), sync_bn=False)
    assert [len(ddp.shard(np.arange(5), Ranks(r, 2, r, 2))) for r in (0, 1)] == [3, 2]
    assert ddp.rank_seed(42, Ranks()) == 42 and ddp.rank_seed(42, Ranks(1, 2, 1, 2)) != 42


def test_a_bad_distributed_option_is_named(toy, tmp_path):
    root, paths, base = toy
    r = subprocess.run([sys.executable, "02_train.py", paths[0], "--set", "train.distributed=dpp",
                        "--output-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 1 and "train.distributed" in r.stderr and "ddp" in r.stderr


def test_ddp_trains_a_model_with_parameters_that_take_no_part(toy, tmp_path):
    """WaveNet's last residual convolution never reaches the loss: DDP must still step
    (``static_graph``; without it DDP stops with "Expected to have finished reduction")."""
    root, paths, base = toy
    wavenet = dict(TINY, model={"name": "wavenet", "params": {"blocks": 1, "layers": 3, "channels": 8,
                                                              "skip_channels": 8}},
                   train=dict(TINY["train"], epochs=1, distributed="ddp"))
    (root / "wavenet.yaml").write_text(yaml.safe_dump(wavenet))
    out = _copy(base, tmp_path / "out")
    log = _run([*TORCHRUN, "02_train.py", str(root / "wavenet.yaml")], out)
    assert "wavenet: OOF accuracy" in log and (out / "models" / "wavenet" / "fold2.pt").exists()


def _processes(command: str) -> list[int]:
    """The ids of the running processes whose command line holds ``command``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            line = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # ended meanwhile
            continue
        if command in line:
            found.append(int(pid))
    return found


def test_ranks_end_with_a_killed_launcher(toy, tmp_path):
    """kill -9 of torchrun alone (its ranks run in sessions of their own): the ranks end too,
    instead of training on beside a re-run."""
    root, paths, base = toy
    (root / "endless.yaml").write_text(yaml.safe_dump(dict(TINY, train=dict(TINY["train"], epochs=5000,
                                                                             patience=5000))))
    out = _copy(base, tmp_path / "out")
    p = subprocess.Popen([*TORCHRUN, "02_train.py", str(root / "endless.yaml"), "--output-dir", str(out)], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
    for line in p.stdout:
        if re.search(r"\[rank 1\] fold \d epoch  2/5000", line):
            break
    command = f"02_train.py {root / 'endless.yaml'}"
    assert len(_processes(command)) == 3  # torchrun and its two ranks
    p.kill()
    p.wait(10)
    for _ in range(50):
        alive = _processes(command)
        if not alive:
            break
        time.sleep(0.2)
    assert not alive, f"ranks left training: {alive}"


def test_a_second_launch_leaves_the_claims_of_a_running_one(tmp_path, monkeypatch):
    """Rank 0 of every launch removed all of <output>/.claims/, so a second torchrun on the same
    output folder made the running one die on its next claim (FileNotFoundError; probe)."""
    monkeypatch.setattr(distributed, "broadcast", lambda obj, ranks: obj)  # rank 0's view; no process group here
    main = Ranks(rank=0, world=2)
    first = distributed.claims_folder(tmp_path, main)
    assert next(distributed.claim_work([("exp", 0), ("exp", 1)], first, 0, 2)) == ("exp", 0)
    second = distributed.claims_folder(tmp_path, main)
    assert second != first and first.is_dir() and list(first.iterdir())  # the first launch's claims are intact
    assert next(distributed.claim_work([("exp", 0), ("exp", 1)], first, 1, 2)) == ("exp", 1)  # fold 0 stays claimed


def test_a_resumed_ddp_fold_gives_the_uninterrupted_result(toy, tmp_path):
    """Only rank 0's generators were saved: a DDP fold killed mid-way and resumed drew other
    batches on rank 1 from then on, and ended at another best epoch and other scores (probe).
    Every rank's generators are saved now, so the resumed fold is the uninterrupted one."""
    root, _, base = toy
    slow = dict(TINY, train=dict(TINY["train"], epochs=14, patience=100, distributed="ddp"))
    (root / "ddp_slow.yaml").write_text(yaml.safe_dump(slow))
    args = ["02_train.py", str(root / "ddp_slow.yaml"), "--set", "train.folds=[0]"]
    ref, cut = _copy(base, tmp_path / "ref"), _copy(base, tmp_path / "cut")
    _run([*TORCHRUN, *args], ref)
    p = subprocess.Popen([*TORCHRUN, *args, "--output-dir", str(cut)], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    seen = []
    for line in p.stdout:
        seen.append(line)
        if "fold 0 epoch  6/14" in line:
            os.killpg(p.pid, signal.SIGKILL)
            break
    p.wait(60)
    assert p.returncode != 0, "".join(seen)[-3000:]
    assert re.search(r"fold 0: resuming after epoch [1-9]", _run([*TORCHRUN, *args], cut))
    log = lambda out: pd.read_csv(out / "models" / "ddp_slow" / "fold0_log.csv")  # noqa: E731
    pd.testing.assert_frame_equal(log(ref).drop(columns="seconds"), log(cut).drop(columns="seconds"))
    np.testing.assert_array_equal(_oof(ref, "ddp_slow").filter(like="p_").to_numpy(),
                                  _oof(cut, "ddp_slow").filter(like="p_").to_numpy())
