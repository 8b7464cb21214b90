"""Stage 04 core: weight experiments by their OOF score, average probabilities, write the submission.

Weights (``../shared/DESIGN.md`` §2, the seed's final step, with its pitfall fixed):

* ``softmax``: ``w_i = exp(s_i / T) / sum_j exp(s_j / T)`` over OOF scores ``s``. The
  temperature matters: with ``T = 1`` two accuracies of 0.778 and 0.792 get 0.4965/0.5035, a
  plain mean; the default ``T = 0.01`` gives each 0.01 of score a factor e (0.20/0.80 there).
* ``normalised``: ``w_i = s_i / sum_j s_j``.
* ``equal``: the plain mean.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import tasks
from .metrics import score_all
from .paths import MissingArtifact, Outputs
from .utils import write_csv, write_json

WEIGHTINGS = ("softmax", "normalised", "equal")


def score_weights(scores, method: str = "softmax", temperature: float = 0.01) -> np.ndarray:
    """Ensemble weights ``(n_models,)`` summing to 1 from OOF scores ``(n_models,)`` (higher is better).

    Raises ``ValueError`` for an unknown method, a non-positive temperature, or (``normalised``)
    scores that do not sum to a positive number.
    """
    s = np.asarray(scores, dtype=float)
    if method == "softmax":
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        z = np.exp((s - s.max()) / temperature)
        return z / z.sum()
    if method == "normalised":
        if s.sum() <= 0:
            raise ValueError(f"normalised weights need positive scores, got {s.tolist()}")
        return s / s.sum()
    if method == "equal":
        return np.full(len(s), 1.0 / len(s))
    raise ValueError(f"weighting {method!r} is not one of {WEIGHTINGS}")


def blend(probs: list[np.ndarray], weights) -> np.ndarray:
    """Weighted average of probability arrays, each ``(rows, n_classes)``; returns ``(rows, n_classes)``."""
    return np.tensordot(np.asarray(weights, dtype=float), np.stack(probs), axes=1)


def available_experiments(out: Outputs) -> list[str]:
    """Experiments with both an OOF file and test predictions, sorted by name."""
    oof = {p.stem for p in (out.root / "oof").glob("*.csv")}
    return sorted(e for e in oof if out.preds(e).exists())


def make_submission(comp: dict, test_ids, probs: np.ndarray) -> pd.DataFrame:
    """Submission rows in the order of the competition's sample submission.

    ``submission.format``: ``label`` (the most probable class label) or ``probability`` (binary:
    p(positive)). Raises ``ValueError`` when the ids differ from the sample's.
    """
    sub = comp["submission"]
    sample_path = Path(comp["data_dir"]) / sub["sample"]
    sample = pd.read_csv(sample_path, dtype=str, keep_default_na=False)
    pred = pd.DataFrame({"id": list(test_ids)})
    if sub["format"] == "label":
        pred["value"] = tasks.probs_to_labels(probs, comp)
    elif sub["format"] == "probability" and comp["task"] == "binary":
        pred["value"] = probs[:, comp["classes"].index(comp["positive"])]
    else:
        raise ValueError(f"submission format {sub['format']!r} is not supported for task {comp['task']!r}")
    if set(pred["id"]) != set(sample[sub["id_column"]]) or len(pred) != len(sample):
        raise ValueError(f"test predictions and {sample_path} hold different ids")
    sample[sub["target_column"]] = pred.set_index("id")["value"].loc[sample[sub["id_column"]]].to_numpy()
    return sample


def run_ensemble(out: Outputs, experiments: list[str] | None = None, method: str = "softmax",
                 temperature: float = 0.01) -> dict:
    """Blend experiments' OOF and test probabilities; write ``submission.csv`` and ``ensemble.json``.

    ``experiments``: names to use (default: every experiment with OOF and test predictions).
    Returns ``{"table": DataFrame(experiment, oof score, weight), "blend": {metric: score}, ...}``.
    Raises ``MissingArtifact`` naming the stage to run when predictions are missing, and
    ``ValueError`` when the experiments' OOF rows differ (different folds or subsets).
    """
    comp = out.load_competition()
    experiments = experiments or available_experiments(out)
    if not experiments:
        raise MissingArtifact(f"{out.root}: no experiment has both oof/ and preds/ files: run 02_train.py and 03_infer.py first")
    cols = tasks.prob_columns(comp)
    oofs, preds = [], []
    for exp in experiments:
        oofs.append(pd.read_csv(out.require(out.oof(exp), f"02_train.py for {exp}"), dtype={"id": str, "target": str}))
        preds.append(pd.read_csv(out.require(out.preds(exp), f"03_infer.py for {exp}"), dtype={"id": str}))
    for exp, o, p in zip(experiments, oofs, preds):
        if not o["id"].equals(oofs[0]["id"]) or not o["fold"].equals(oofs[0]["fold"]):
            raise ValueError(f"OOF rows of {exp} differ from those of {experiments[0]}: train both on the same folds")
        if not p["id"].equals(preds[0]["id"]):
            raise ValueError(f"test rows of {exp} differ from those of {experiments[0]}: run 03_infer.py again")
    y = tasks.class_index(oofs[0]["target"], comp)
    metric = comp["metric"]
    each = [score_all(comp["metrics"], y, o[cols].to_numpy()) for o in oofs]
    weights = score_weights([e[metric] for e in each], method, temperature)
    oof_blend = blend([o[cols].to_numpy() for o in oofs], weights)
    test_blend = blend([p[cols].to_numpy() for p in preds], weights)
    blend_scores = score_all(comp["metrics"], y, oof_blend)
    table = pd.DataFrame([{"experiment": e, **s, "weight": w} for e, s, w in zip(experiments, each, weights)])
    submission = make_submission(comp, preds[0]["id"], test_blend)
    write_csv(out.submission, submission)
    write_json(out.root / "ensemble.json", {"method": method, "temperature": temperature, "metric": metric,
                                            "experiments": table.to_dict("records"), "blend": blend_scores})
    return {"table": table, "blend": blend_scores, "metric": metric, "rows": len(submission),
            "submission": submission, "path": out.submission}
