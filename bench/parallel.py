#!/usr/bin/env python3
"""Wall time of an experiment's folds trained one after the other vs shared out over N processes.

    python bench/parallel.py                                  # breathing, cnn_small, 3 epochs, 1 and 2 processes
    python bench/parallel.py --nproc 1 2 4 8 --configs configs/cnn_small.yaml configs/cnn8.yaml --epochs 2

Prepares the competition (stages 00 and 01, once, into ``--work``), then for each config and each
N trains every fold from scratch into a fresh copy of that output folder: N = 1 is the plain
``02_train.py`` (one process, all the cores), N > 1 is ``torchrun --nproc-per-node N 02_train.py``
(train.distributed: folds: each process a fold at a time, on ``cuda:<rank mod GPUs>`` or with
its share of the CPU cores). Wall time includes starting the processes and the merge. On the
CPU, each N > 1 is also run as one process with the threads each of its ranks had
(``OMP_NUM_THREADS``; ``--no-matched`` skips it): the folds are then the same trainings, and their
OOF probabilities must be equal (a different thread count changes float rounding, which training
amplifies). Prints one table: config, processes, threads per process, wall seconds, speed-up over
N = 1, the OOF score and the largest difference of the OOF probabilities from N = 1's and from
the matched run's. ``--ddp`` adds, for each N > 1, a ``train.distributed: ddp`` run with
``batch_size / N`` per process (the global batch of N = 1). Needs ``../shared/data/breathing`` or ``--data-dir`` (exits 2 without).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run(cmd: list[str], log: Path, threads: int | None = None) -> float:
    """Run ``cmd`` in the project folder with its output to ``log`` (``threads``: its
    ``OMP_NUM_THREADS``); returns its wall seconds. Exits with the log's tail when it fails."""
    t0 = time.time()
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    with open(log, "w") as f:
        r = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env)
    if r.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n" + log.read_text()[-3000:])
    return time.time() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-config", default="configs/data/breathing.yaml")
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "breathing"))
    p.add_argument("--configs", nargs="+", default=["configs/cnn_small.yaml"])
    p.add_argument("--nproc", nargs="+", type=int, default=[1, 2])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--work", default="/tmp/bench_parallel")
    p.add_argument("--no-matched", action="store_true", help="skip the one-process runs with the ranks' threads")
    p.add_argument("--ddp", action="store_true", help="also train each N > 1 with DDP at the same global batch")
    args = p.parse_args()
    if not (Path(args.data_dir) / "train.csv").exists():
        print(f"no competition at {args.data_dir} (see ../shared/data/README.md)", file=sys.stderr)
        sys.exit(2)
    work, py = Path(args.work), sys.executable
    work.mkdir(parents=True, exist_ok=True)
    base = work / "base"
    run([py, "00_prepare.py", args.data_config, "--data-dir", args.data_dir, "--output-dir", str(base)], work / "00.log")
    run([py, "01_features.py", *args.configs, "--output-dir", str(base)], work / "01.log")
    import torch

    cpu, cores = not torch.cuda.is_available(), len(os.sched_getaffinity(0))

    def train(cfg: str, stem: str, n: int, threads: int | None, sets=()) -> tuple[float, dict, object]:
        tag = f"{stem}_n{n}" + (f"_t{threads}" if threads else "") + ("_ddp" if sets else "")
        out = work / tag
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(base, out, ignore=shutil.ignore_patterns("models", "oof", "preds", "ensemble"))
        launch = [py] if n == 1 else [py, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n)]
        sets = [x for kv in (f"train.epochs={args.epochs}", *sets) for x in ("--set", kv)]
        seconds = run([*launch, "02_train.py", cfg, *sets, "--name", stem, "--output-dir", str(out)],
                      work / f"{tag}.log", threads)
        scores = json.loads((out / "models" / stem / "scores.json").read_text())
        return seconds, scores, pd.read_csv(out / "oof" / f"{stem}.csv").filter(like="p_").to_numpy()

    rows = []
    for cfg in args.configs:
        stem, first = Path(cfg).stem, None
        for n in args.nproc:
            seconds, scores, oof = train(cfg, stem, n, None)
            first = first or (seconds, oof)
            row = {"config": stem, "processes": n, "threads": max(1, cores // n) if cpu else "-",
                   "wall_s": round(seconds, 1), "speed_up": round(first[0] / seconds, 2),
                   scores["metric"]: round(scores["oof"][scores["metric"]], 4), "folds": len(scores["folds"]),
                   "max_diff_vs_1": float(abs(oof - first[1]).max())}
            if cpu and n > 1 and not args.no_matched:  # the same trainings on one process: equal OOF
                row["max_diff_vs_1_matched_threads"] = float(abs(oof - train(cfg, stem, 1, max(1, cores // n))[2]).max())
            rows.append(row)
            print(rows[-1], flush=True)
            if args.ddp and n > 1:
                from lib.components import load_experiment

                batch = load_experiment(ROOT / cfg)["train"]["batch_size"] // n
                seconds, scores, oof = train(cfg, stem, n, None, ("train.distributed=ddp", f"train.batch_size={batch}"))
                rows.append({"config": f"{stem} ddp {n}x{batch}", "processes": n, "threads": row["threads"],
                             "wall_s": round(seconds, 1), "speed_up": round(first[0] / seconds, 2),
                             scores["metric"]: round(scores["oof"][scores["metric"]], 4), "folds": len(scores["folds"]),
                             "max_diff_vs_1": float(abs(oof - first[1]).max())})
                print(rows[-1], flush=True)
    where = torch.cuda.get_device_name() if not cpu else f"CPU, {cores} cores"
    print(f"\n{args.epochs} epochs a fold; {where}\n" + pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
