#!/usr/bin/env python3
"""Every experiment of an output folder in one table, best first: OOF scores recomputed from
oof/<exp>.csv for every competition metric, fold mean ± std, training status, size and time.

    python leaderboard.py [--sort METRIC] [--all] [--csv PATH] [--output-dir output]

--sort takes any metric (default: the competition's `metric`), in its own direction; the blend
of ensemble.json, when there is one, is the last line. When the competition declares `slices`,
the table has the worst slice's score (worst_<metric>), and a second table gives every
experiment's metric per slice value (with counts), drawn in <output>/leaderboard_slices.png.
"""
from pathlib import Path

from lib import cli


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--sort", metavar="METRIC", help="metric to rank by (default: the competition's metric)")
    p.add_argument("--all", action="store_true", help="also show experiments with no record of a whole run (interrupted, "
                   "or a pruned sweep trial); partial ones (folds missing) are always shown, unranked, last")
    p.add_argument("--csv", metavar="PATH", help="also write the table (unformatted values) to this CSV")
    args = p.parse_args()
    if args.csv and Path(args.csv).is_dir():
        p.error(f"--csv {args.csv} is a folder; give the path of a file to write")
    from lib.core.utils import write_csv
    from lib.core.artifacts import remove_stale_temporaries
    from lib.evaluation.metrics import base_metric
    from lib.evaluation.leaderboard import (
        blend_summary,
        format_leaderboard,
        leaderboard,
        plot_slice_leaderboard,
        slice_leaderboard,
    )

    out = cli.outputs(args)
    df = leaderboard(out, args.sort, args.all)
    direction = "higher" if df.attrs["higher_is_better"] else "lower"
    print(f"{out.root}: {len(df)} experiment(s), by OOF {df.attrs['sort']} ({direction} is better)")
    if len(df):
        print(format_leaderboard(df))
    for exp, why in df.attrs["skipped"].items():
        print(f"not shown: {exp}: {why}")
    metric = base_metric(df.attrs["fold_metric"])
    per_slice = slice_leaderboard(df, metric)
    if len(per_slice):  # the competition metric drawn; every metric printed
        png = plot_slice_leaderboard(per_slice, metric, out.root / "leaderboard_slices.png")
        names = dict.fromkeys([metric, *(base_metric(m) for m in df.attrs["metrics"])])
        for i, name in enumerate(names):
            table = slice_leaderboard(df, name)
            if len(table):
                print(f"\nOOF {name} per slice" + (f" ({png}):" if not i else ":"))
                print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    line = blend_summary(out)
    if line:
        print(line)
    if args.csv:
        remove_stale_temporaries(Path(args.csv).resolve().parent)  # a killed writer's, beside the CSV
        write_csv(args.csv, df)
        print(f"wrote {args.csv}")


if __name__ == "__main__":
    cli.run("leaderboard", main)
