#!/usr/bin/env python3
"""Stage 04: weight experiments by OOF score, average their probabilities -> output/submission.csv.

    python 04_ensemble.py [EXPERIMENT ...] [--weighting softmax|normalised|equal] [--temperature 0.01]
"""
from lib.core import cli


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("experiments", nargs="*", help="experiment names (default: all with OOF and test predictions)")
    p.add_argument("--weighting", default="softmax", help="softmax, normalised or equal (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=0.01, help="softmax temperature (default: %(default)s)")
    p.add_argument("--allow-partial", action="store_true",
                   help="blend experiments whose folds are not all trained yet (refused by default)")
    args = p.parse_args()
    from lib.evaluation.ensemble import WEIGHTINGS, run_ensemble

    if args.weighting not in WEIGHTINGS:
        p.error(f"--weighting: {args.weighting!r} is not one of {', '.join(WEIGHTINGS)}")
    out = cli.outputs(args)
    r = run_ensemble(out, args.experiments or None, args.weighting, args.temperature, args.allow_partial)
    for exp, why in r["skipped"].items():
        print(f"not blended: {exp}: {why}")
    print(r["table"].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"blend ({args.weighting}" + (f", T={args.temperature}" if args.weighting == "softmax" else "") + "): "
          + "  ".join(f"OOF {k} {v:.4f}" for k, v in r["blend"].items()))
    sub = r["submission"]
    if sub is None:
        print(f"no submission written (the competition has no test set or no 'submission' section); "
              f"scores in {out.root / 'ensemble.json'}")
        return
    counts = sub.iloc[:, 1].value_counts().to_dict() if sub.shape[1] == 2 and sub.iloc[:, 1].nunique() <= 20 else ""
    print(f"wrote {r['path']}: {r['rows']} rows {counts}")


if __name__ == "__main__":
    cli.run("04_ensemble", main)
