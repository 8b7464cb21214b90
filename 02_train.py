#!/usr/bin/env python3
"""Stage 02: train one model per fold -> output/models/<exp>/, output/oof/<exp>.csv.

    python 02_train.py configs/cnn_small.yaml [--set train.epochs=5] [--name NAME] [--force]
"""
from lib.core import cli


def main() -> None:
    args, out, cfg = cli.parse_experiment(__doc__)
    import pandas as pd

    from lib.core.utils import format_seconds
    from lib.training.experiment import train_experiment

    s = train_experiment(cfg, out, force=args.force)
    if s["skipped"]:
        print(f"{cfg['name']}: trained models are up to date, skipped (use --force to retrain)")
    for fold, status in s.get("status", {}).items():
        print(f"fold {fold}: {status}")
    print(f"\n{'fold':>4} {'epoch':>5} " + " ".join(f"{m:>9}" for m in s["oof"]))
    for f in s["folds"]:
        print(f"{f['fold']:>4} {f['best_epoch']:>5} " + " ".join(f"{f[m]:>9.4f}" for m in s["oof"]))
    print(f"{'mean':>10} " + " ".join(f"{s['fold_mean'][m]:>9.4f}" for m in s["oof"]))
    print(f"{'oof':>10} " + " ".join(f"{v:>9.4f}" for v in s["oof"].values()))
    cm = s["confusion"]
    if cm:
        print("\nOOF confusion matrix per recording (rows: true, columns: predicted)\n"
              + pd.DataFrame(cm["rows_true_cols_pred"], index=cm["classes"], columns=cm["classes"]).to_string())
    print(f"{cfg['name']}: OOF {s['metric']} {s['oof'][s['metric']]:.4f} per recording, {len(s['folds'])} folds "
          f"({format_seconds(s['seconds'])} on {s['device']}) -> {out.model_dir(cfg['name'])}, {out.oof(cfg['name'])}")
    if s.get("report"):
        print(f"report (curves, confusion matrix, ROC/PR, calibration, worst recordings): "
              f"{out.model_dir(cfg['name']) / s['report']}")
    elif s.get("report_error"):
        print(f"WARNING: no report was written: {s['report_error']}")
    if s["partial"]:
        print(f"PARTIAL: folds {s['missing_folds']} are not trained yet; the OOF file holds the other folds' rows, and "
              f"04_ensemble.py refuses it until they are (train them with --set train.folds=[...], any time, anywhere)")


if __name__ == "__main__":
    cli.run("02_train", main)
