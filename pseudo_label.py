#!/usr/bin/env python3
"""Pseudo-labelling: a new output folder whose training rows add the blend's confident test predictions.

    python pseudo_label.py --output-dir output --to output_pl [--min-confidence 0.9]
    python pseudo_label.py --output-dir output --to output_pl --source WORK   # predict_bundle.py --test-files ... --work-dir WORK
    python 01_features.py CFG --output-dir output_pl && python 02_train.py CFG --output-dir output_pl ...

The pseudo-labelled rows get fold -1: every fold trains on them, none validates on them, and the
OOF scores cover the labelled rows only, optimistically: the blend that labels them learnt every
fold's labels (docs/self-training.md).
"""
from lib import cli


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--to", required=True, help="the new output folder")
    p.add_argument("--min-confidence", type=float, default=0.9, help="(default: %(default)s)")
    p.add_argument("--source", help="a predict_bundle.py work folder of unlabelled audio (default: the test set's blend)")
    p.add_argument("--force", action="store_true", help="replace the folds and config of an existing output folder --to")
    args = p.parse_args()
    from lib.runs.self_training import pseudo_labelled_folder

    r = pseudo_labelled_folder(cli.outputs(args), args.to, args.min_confidence, args.source, args.force)
    what = "unlabelled recordings" if args.source else "test recordings"
    print(f"{r['pseudo']} of {r['test']} {what} pseudo-labelled {r['per_class']} (p >= {args.min_confidence})"
          + (f"; they replace the {r['replaced']} pseudo labels of the earlier round" if r["replaced"] else "")
          + (f"; {r['kept']} pseudo labels of earlier rounds kept" if r["kept"] else "")
          + (f"; {r['silenced']} recordings predicted from silence left out" if r["silenced"] else "")
          + f"; {r['rows']} training rows -> {args.to}/folds.csv; now run 01-04 there")
    if not r["pseudo"] and r["most_confident"] is not None:
        print(f"WARNING: no recording reaches p >= {args.min_confidence} (the surest: {r['most_confident']:.4f}): "
              + (f"{args.to} keeps the earlier rounds' pseudo labels only" if r["kept"] else
                 f"{args.to} holds the labelled rows alone") + "; lower --min-confidence")
    if r["pseudo"] or r["kept"]:
        print(f"note: the OOF scores of {args.to} will be optimistic: the blend that labelled these recordings "
              f"learnt every fold's labels, and a recording like a validation one brings its label into the fold "
              f"that validates it; judge self-training on labels no model saw (docs/self-training.md)")
    if r["removed_blend"]:
        print(f"removed the blend of {args.to}, made from its earlier folds: {', '.join(r['removed_blend'])}")


if __name__ == "__main__":
    cli.run("pseudo_label", main)
