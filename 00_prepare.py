#!/usr/bin/env python3
"""Stage 00: validate a competition's input and assign folds -> output/folds.csv, output/test.csv.

    python 00_prepare.py configs/data/breathing.yaml --data-dir ../shared/data/breathing
"""
from lib import cli
from lib.config import load_competition
from lib.prepare import prepare


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("data_config", nargs="?", default="configs/data/breathing.yaml",
                   help="competition config (default: %(default)s)")
    p.add_argument("--data-dir", help="competition folder (default: the config's data_dir, usually input/)")
    args = p.parse_args()
    out = cli.outputs(args)
    comp = load_competition(args.data_config, args.data_dir)
    print(f"competition {comp['name']} ({comp['task']}, classes {comp['classes']}) from {comp['data_dir']}")
    s = prepare(comp, out.root)
    lo, hi = s["duration_s"]
    print(f"train: {s['train_rows']} rows in {s['groups']} groups, {s['sample_rate']} Hz, {lo:.2f}-{hi:.2f} s; "
          f"test: {s['test_rows']} rows")
    print(f"folds ({comp['folds']['scheme']}, {comp['folds']['n_folds']}), class counts:\n"
          + s["fold_table"].to_string())
    print(f"wrote {out.folds}, {out.test if s['test_rows'] else '(no test set)'}, {out.competition}")


if __name__ == "__main__":
    cli.run("00_prepare", main)
