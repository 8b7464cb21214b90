#!/usr/bin/env python3
"""Stage 03: predict the test set with every fold model and average -> output/preds/<exp>.csv.

    python 03_infer.py configs/cnn_small.yaml [--set train.epochs=5] [--name NAME] [--force]
"""
from lib import cli


def main() -> None:
    args, out, cfg = cli.parse_experiment(__doc__)
    from lib.core.config import row_noun
    from lib.inference.infer import infer_experiment
    from lib.runs.self_training import teacher_note

    s = infer_experiment(cfg["name"], out, force=args.force, device=cfg["train"]["device"], given=cfg)
    if s.get("no_test"):
        print(f"{cfg['name']}: the competition has no test set; nothing to predict (04_ensemble.py blends the OOF predictions)")
        return
    state = "up to date, skipped (use --force to redo)" if s["skipped"] else "written"
    if s["partial"]:
        print(f"PARTIAL: {cfg['name']} has only folds {s['folds']}; these predictions are their mean")
    print(f"{cfg['name']}: {s['rows']} test {row_noun(out.load_competition())}s ({s['windows']} windows), mean of folds {s['folds']}, mean probabilities {s['mean_probs']}; "
          f"{state} -> {out.preds(cfg['name'])}")
    if note := teacher_note(out, cfg["name"]):
        print(note)


if __name__ == "__main__":
    cli.run("03_infer", main)
