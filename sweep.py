#!/usr/bin/env python3
"""Hyper-parameter sweep on Optuna: one experiment per trial, the study in a database shared by
any number of workers -> output/models/<exp>/, output/oof/<exp>.csv, output/sweeps/<study>/.

    python sweep.py configs/sweeps/cnn_small.yaml [--trials N] [--study NAME] [--storage URL] [--top K]

Run the same command in several terminals or on several machines (with a shared --storage URL and
output folder) to add workers; --trials is per worker; a rerun continues the study. Each trial
trains the sweep's experiment with its sampled values as --set overrides under a name made of them
(e.g. cnn_small@lr=0.0012,mixup.p=0.4) and is pruned after a fold that falls below the median of
earlier trials. At the end: every trial best first, sweeps/<study>/trials.csv, sweeps/<study>/best.txt
(the best experiments' names) and the commands that predict and blend them. Workers on one
machine's CPU need cores of their own: taskset -c 0 python sweep.py ... & taskset -c 1 python sweep.py ...
"""
import os
import shlex
import sys
from pathlib import Path

from lib import cli


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("sweep", help="sweep file, e.g. configs/sweeps/cnn_small.yaml")
    p.add_argument("--trials", type=int, help="trials this worker runs (default: the sweep file's trials; 0: only "
                                              "the summary)")
    p.add_argument("--study", help="study name (default: the sweep file's name)")
    p.add_argument("--storage", help="where the study lives: a database URL (default: "
                   "sqlite:///OUTPUT_DIR/sweeps/STUDY.db; postgresql://user:password@host/db for several "
                   "machines) or journal:PATH (a journal file on a shared disk)")
    p.add_argument("--top", type=int, default=3, help="experiments listed in best.txt (default: %(default)s)")
    args = p.parse_args()
    if args.trials is not None and args.trials < 0 or args.top < 1:
        p.error("--trials must be >= 0 and --top >= 1")
    os.environ.setdefault("TQDM_DISABLE", "1")  # before tqdm is imported: one line per trial, the rest in its log
    # SIGTERM (timeout, a batch scheduler) is Ctrl-C (lib.cli.run): the running trial is marked failed at once
    # (its finished folds kept), not left running until its heartbeat runs out
    from lib.core.schema import check_folder_name
    from lib.runs.sweep import direction, load_sweep, open_study, printable, run_sweep, summarize

    out = cli.outputs(args)
    sweep = load_sweep(args.sweep, out.prepared_competition())  # every value checked before the study starts
    out.check_writable()
    comp = out.load_competition()
    name = args.study or Path(args.sweep).stem
    check_folder_name(name, "--study" if args.study else f"{args.sweep} (its file name names the study)")
    storage = args.storage or f"sqlite:///{out.root / 'sweeps' / name}.db"
    (out.root / "sweeps" / name).parent.mkdir(parents=True, exist_ok=True)
    study = open_study(sweep, name, storage, comp)
    trials = sweep.trials if args.trials is None else args.trials
    print(f"study {name} ({printable(storage)}): {len(study.trials)} trials so far; {direction(comp)} OOF "
          f"{comp['metric']} of {sweep.stem}@...; this worker runs {trials}")
    run_sweep(sweep, study, out, trials)
    s = summarize(study, out, args.top, sweep)
    if len(s["table"]):  # text left-aligned; no value yet (running, failed): "-"
        t = s["table"].assign(value=[f"{v:.4f}" if v == v and v is not None else "-" for v in s["table"]["value"]])
        t = t.fillna("-").astype(str)
        left = {c: (lambda w: lambda x: x.ljust(w))(t[c].str.len().max()) for c in ("state", "experiment", "params")}
        print("\n" + t.to_string(index=False, justify="left", formatters=left))
    print(f"\ntrials: {s['trials_csv']}\nbest {len(s['best'])}: {s['best_txt']}" +
          "".join(f"\n  {n}" for n in s["best"]))
    if s["best"]:
        q = lambda path: shlex.quote(str(path))  # noqa: E731
        where, here = f"--output-dir {q(out.root)}", Path(__file__).resolve().parent
        run = lambda script: f"{q(sys.executable)} {q(here / script)}"  # noqa: E731  (from any folder)
        print(f"\npredict and blend them:\n"
              f"for e in $(cat {q(s['best_txt'])}); do {run('03_infer.py')} {q(out.root / 'models')}/\"$e\"/config.yaml "
              f"--name \"$e\" {where}; done\n"
              f"{run('04_ensemble.py')} $(cat {q(s['best_txt'])}) {where}{' --allow-partial' if s['partial'] else ''}")


if __name__ == "__main__":
    cli.run("sweep", main)
