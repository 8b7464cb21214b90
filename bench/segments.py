"""Segment aggregation compared on the same trained models: OOF scores of a recording from its
segments by mean, max and vote (each segment's class of maximum probability), for an experiment
of a competition with ``segments.unit: recording`` (docs/segments.md).

    .venv/bin/python bench/segments.py --output-dir OUT EXPERIMENT

It reads the segments' OOF predictions that 02_train.py wrote (``oof/<exp>.segments.csv``: the
fold models' windows aggregated per segment by ``audio.aggregate``, with the experiment's
test-time augmentation), so the aggregations differ only in how segments become a recording.
Prints one markdown row per aggregation with every metric of the competition. It trains nothing:
run 00-02 first (docs/results.md gives the commands of the figures there).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.core.paths import Outputs  # noqa: E402
from lib.core.utils import read_artifact_csv  # noqa: E402
from lib.data import tasks  # noqa: E402
from lib.evaluation.metrics import score_all  # noqa: E402
from lib.inference.segments import segment_file  # noqa: E402
from lib.inputs import aggregate  # noqa: E402

HOWS = ("mean", "max", "vote")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output-dir", required=True, type=Path)
    p.add_argument("experiment")
    args = p.parse_args()
    out = Outputs(args.output_dir)
    comp = out.load_competition()
    path = segment_file(out.oof(args.experiment), comp)
    if path is None:
        sys.exit("error: the competition has no segments aggregated per recording (segments.unit: recording)")
    out.trained(args.experiment).require()  # a finished training run, whose record holds the file
    seg = read_artifact_csv(path)
    owner, ids = pd.factorize(seg["id"])
    target = seg.groupby(owner)["target"].first().to_numpy()
    y = tasks.class_index(pd.Series(target), comp)
    probs = seg[tasks.prob_columns(comp)].to_numpy()
    print(f"| segments -> recording ({args.experiment}, {len(ids)} OOF recordings, {len(seg)} segments) | "
          + " | ".join(comp["metrics"]) + " |")
    print("|---|" + "---|" * len(comp["metrics"]))
    for h in HOWS:
        s = score_all(comp["metrics"], y, aggregate(probs, owner, len(ids), h, comp), comp)
        print(f"| {h} | " + " | ".join(f"{s[m]:.4f}" for m in comp["metrics"]) + " |")


if __name__ == "__main__":
    main()
