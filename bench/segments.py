"""Segment aggregation compared on the same trained models: OOF scores of a recording from its
segments by mean, max and vote (each segment's class of maximum probability), for an experiment
of a competition with ``segments.unit: recording`` (docs/segments.md).

    .venv/bin/python bench/segments.py --output-dir OUT EXPERIMENT

Each fold model predicts the windows of its validation recordings once (no test-time
augmentation); the aggregations then differ only in how those window probabilities become a
recording's. Prints one markdown row per aggregation with every metric of the competition. It
trains nothing: run 00-02 first (docs/results.md gives the commands of the figures there).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.core.paths import Outputs  # noqa: E402
from lib.data import tasks  # noqa: E402
from lib.evaluation.metrics import score_all  # noqa: E402
from lib.inference.infer import load_fold_models, trained_experiment  # noqa: E402
from lib.inference.predict import aggregate_windows, predict_logits  # noqa: E402
from lib.inputs import load_inputs  # noqa: E402

HOWS = ("mean", "max", "vote")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output-dir", required=True, type=Path)
    p.add_argument("experiment")
    args = p.parse_args()
    out = Outputs(args.output_dir)
    comp = out.load_competition()
    if (comp.get("segments") or {}).get("unit") != "recording":
        sys.exit("error: the competition has no segments aggregated per recording (segments.unit: recording)")
    record, cfg = trained_experiment(out, args.experiment)
    table = out.load_split("train")
    data = load_inputs(out, cfg, "train", table, comp, torch.device("cpu"))
    probs = {h: np.zeros((len(table), len(comp["classes"]))) for h in HOWS}
    done = np.zeros(len(table), bool)  # the rows of the trained folds (all, unless partial)
    for ckpt, model in load_fold_models(out, args.experiment, "cpu", record):
        recs = np.flatnonzero(table["fold"].to_numpy() == ckpt["fold"])
        done[recs] = True
        data.set_metadata(ckpt.get("metadata_encoder"), table)
        items, owner = data.windows_of(recs)
        window = tasks.logits_to_probs(predict_logits(model, data, items)[0], comp)
        for h in HOWS:
            c = dict(comp, segments=dict(comp["segments"], aggregate=h))
            probs[h][recs] = aggregate_windows(window, owner, data.region_of(items), len(recs), c)
    y = tasks.class_index(table["target"][done], comp)
    rows = {h: score_all(comp["metrics"], y, probs[h][done], comp) for h in HOWS}
    print(f"| segments -> recording ({args.experiment}, {int(done.sum())} OOF recordings, "
          f"{int(data.region_count[done].sum())} segments) | " + " | ".join(comp["metrics"]) + " |")
    print("|---|" + "---|" * len(comp["metrics"]))
    for h, s in rows.items():
        print(f"| {h} | " + " | ".join(f"{s[m]:.4f}" for m in comp["metrics"]) + " |")


if __name__ == "__main__":
    main()
