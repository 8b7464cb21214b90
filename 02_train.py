#!/usr/bin/env python3
"""Stage 02: train one model per fold -> output/models/<exp>/, output/oof/<exp>.csv.

    python 02_train.py configs/cnn_small.yaml [--set train.epochs=5] [--name NAME] [--force]
    python 02_train.py configs/cnn_small.yaml configs/wave_cnn.yaml     # several, one after the other

On several processes (docs/distributed.md): torchrun starts one
process per device (or several per GPU); the folds of every experiment given are shared out
(train.distributed: folds), or each fold is trained by all of them together (ddp):

    torchrun --standalone --nproc-per-node 4 02_train.py configs/cnn_small.yaml configs/wave_cnn.yaml
"""
import os

from lib import cli
from lib.core.config import RUN_ONLY_KEYS


def main() -> None:
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if rank:
        os.environ.setdefault("TQDM_DISABLE", "1")  # one set of progress bars: rank 0's
    p = cli.parser(__doc__)
    cli.add_experiment_args(p, many=True)
    p.add_argument("--name", help="experiment name, with one config (default: the config's; with --set overrides "
                                  f"of other keys than {', '.join(RUN_ONLY_KEYS)}: NAME+<hash of them>)")
    args = p.parse_args()
    if args.name and len(args.configs) > 1:
        raise cli.ConfigError("--name names one experiment: give one config with it")
    out = cli.outputs(args)
    cfgs = [cli.experiment(c, args.set, args.name, announce=not rank, out=out) for c in args.configs]
    from lib.runs.experiment import train_experiments

    def log(msg):
        print(f"[rank {rank}] {msg}" if world > 1 else msg, flush=True)

    results = train_experiments(cfgs, out, force=args.force, log=log)
    if rank:
        for s in results:
            trained = [f"fold {f}: {v}" for f, v in s["status"].items() if v != "finished earlier"]
            print(f"[rank {rank}] {s['experiment']}: " + ("; ".join(trained) or "no fold trained here"), flush=True)
        return
    for cfg, s in zip(cfgs, results):
        summary(cfg, s, out)


def summary(cfg: dict, s: dict, out) -> None:
    """Print an experiment's fold status, score table, confusion matrix and where it went."""
    import pandas as pd

    from lib.core.utils import format_seconds

    print()
    if s["skipped"]:
        print(f"{cfg['name']}: trained models are up to date, skipped (use --force to retrain)")
    for fold, status in s.get("status", {}).items():
        print(f"fold {fold}: {status}")
    print(f"\n{'fold':>4} {'epoch':>5} " + " ".join(f"{m:>9}" for m in s["oof"]))
    for f in s["folds"]:
        print(f"{f['fold']:>4} {f['best_epoch']:>5} " + " ".join(f"{f[m]:>9.4f}" for m in s["oof"]))
    print(f"{'mean':>10} " + " ".join(f"{s['fold_mean'][m]:>9.4f}" for m in s["oof"]))
    print(f"{'oof':>10} " + " ".join(f"{v:>9.4f}" for v in s["oof"].values()))
    from lib.core.config import row_noun

    row = row_noun(out.load_competition())  # the unit of a row
    cm = s["confusion"]
    if cm:
        print(f"\nOOF confusion matrix per {row} (rows: true, columns: predicted)\n"
              + pd.DataFrame(cm["rows_true_cols_pred"], index=cm["classes"], columns=cm["classes"]).to_string())
    print(f"{cfg['name']}: OOF {s['metric']} {s['oof'][s['metric']]:.4f} per {row}, {len(s['folds'])} folds "
          f"({format_seconds(s['seconds'])} on {s['device']}) -> {out.model_dir(cfg['name'])}, {out.oof(cfg['name'])}")
    _postprocessed_line(cfg["name"], s["metric"], out)
    if s.get("report"):
        report = out.model_dir(cfg["name"]) / s["report"]
        _slices_table(s["metric"], report.parent / "slices.csv", out.load_competition())
        print(f"report (curves, confusion matrix, ROC/PR, calibration, worst recordings): {report}")
    elif s.get("report_error"):
        print(f"WARNING: no report was written: {s['report_error']}")
    if s["partial"]:
        print(f"PARTIAL: folds {s['missing_folds']} are not trained yet; the OOF file holds the other folds' rows, and "
              f"04_ensemble.py refuses it until they are (train them with --set train.folds=[...], any time, anywhere)")


def _slices_table(metric: str, path, comp: dict) -> None:
    """The competition metric per slice value with its rows, from the report's ``slices.csv``
    (only when the competition declares ``slices``): a pooled score can hide a slice that fails.
    Said to be of the models' own probabilities when ``comp`` post-processes them (a probe read
    it beside the line after ``decision.group_aggregate``)."""
    import pandas as pd

    from lib.evaluation.decisions import scored_after
    from lib.evaluation.metrics import base_metric

    if not path.is_file():
        return
    table, metric = pd.read_csv(path, dtype={"value": str}), base_metric(metric)
    table["n"] = table["n"].map(lambda n: "" if pd.isna(n) else int(n))  # (the worst rows have none)
    by = ", ".join("decision." + k for k in scored_after(comp))
    before = f" of the models' own probabilities, before {by} (04_ensemble.py scores the slices after it)" if by else ""
    print(f"\nOOF {metric} per slice{before} (the worst over each slice's values last; every metric: {path})\n"
          + table[["slice", "value", "n", metric]].to_string(index=False, float_format="{:.4f}".format))


def _postprocessed_line(name: str, metric: str, out) -> None:
    """The OOF score after the competition's decision post-processing (masks, slice prior, group
    aggregation), as 04 and the leaderboard score it, from the current competition.yaml and OOF
    file (a probe saw two figures for one experiment, unexplained); a failure is said, never fatal."""
    from lib.core.utils import read_artifact_csv
    from lib.evaluation.decisions import postprocessed_scores

    try:
        post = postprocessed_scores(read_artifact_csv(out.oof(name)), out.load_split("train"), out.load_competition())
    except Exception as exc:  # noqa: BLE001  (the models and OOF file are written: say why, go on)
        print(f"{name}: the OOF score after the competition's decision post-processing could not be computed: {exc}")
        return
    if post:
        print(f"{name}: OOF {metric} {post['oof'][metric]:.4f} after "
              f"{', '.join('decision.' + k for k in post['by'])}, as 04_ensemble.py and leaderboard.py score it")


if __name__ == "__main__":
    cli.run("02_train", main, resume="run the same command again: finished folds are kept and the "
                                  "interrupted fold resumes after its last finished epoch")
