#!/usr/bin/env python3
"""Score a submission file against a labelled CSV (a private holdout) with the competition's metrics.

    python score_submission.py SUBMISSION.csv LABELS.csv [--config configs/data/X.yaml]
                               [--id-column ID] [--target-column T] [--format F] [--json PATH]

The competition (task, classes, metrics, submission format) comes from --config, or without it
from the output folder's competition.yaml (--output-dir). The ids of both files must match
exactly. Metrics of probabilities (AUROC, ...) need a probability/probabilities submission.
"""
from pathlib import Path

from lib import cli


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("submission", help="the submission CSV, in the competition's submission format")
    p.add_argument("labels", help="a CSV with the true labels of the same ids")
    p.add_argument("--config", help="competition config (default: competition.yaml of --output-dir)")
    p.add_argument("--id-column", help="id column of LABELS (default: submission.id_column, else train.id_column)")
    p.add_argument("--target-column", help="label column of LABELS (default: train.target_column, else "
                                           "submission.target_column; multi-label: or one 0/1 column per class)")
    p.add_argument("--format", choices=["label", "probability", "probabilities", "indicators"],
                   help="the submission's format (default: the config's submission.format)")
    p.add_argument("--json", metavar="PATH", help="also write the scores and the per-class table as JSON")
    args = p.parse_args()
    if args.json and Path(args.json).is_dir():
        p.error(f"--json {args.json} is a folder; give the path of a file to write")
    from lib.components import load_competition
    from lib.core.utils import write_json
    from lib.evaluation.scoring import score_submission

    comp = load_competition(args.config) if args.config else cli.outputs(args).load_competition()
    r = score_submission(args.submission, args.labels, comp, args.id_column, args.target_column, args.format)
    for note in r["notes"]:
        print(f"note: {note}")
    print(f"{args.submission}: {r['rows']} rows, format {r['format']!r} ({r['holds']}), "
          f"competition {comp.get('name')!r} ({comp['task']})")
    width = max(map(len, [*r["scores"], *r["not_computable"]]))
    for name, value in r["scores"].items():
        print(f"  {name:<{width}}  {value:.4f}")
    for name, why in r["not_computable"].items():
        print(f"  {name:<{width}}  -       ({why})")
    print(r["per_class"].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if args.json:
        write_json(args.json, {"submission": args.submission, "labels": args.labels, **r,
                               "per_class": r["per_class"].to_dict("records")})
        print(f"wrote {args.json}")


if __name__ == "__main__":
    cli.run("score_submission", main)
