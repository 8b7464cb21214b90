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

from ..core.artifacts import check_inputs
from ..core.errors import ConfigError, InputError, MissingArtifact
from ..core.paths import Outputs
from ..core.utils import fingerprint, write_csv, write_json
from ..data import tasks
from .metrics import score_all

WEIGHTINGS = ("softmax", "normalised", "equal")


def score_weights(scores, method: str = "softmax", temperature: float = 0.01) -> np.ndarray:
    """Ensemble weights ``(n_models,)`` summing to 1 from OOF scores ``(n_models,)`` (higher is better).

    Raises ``ValueError`` for an unknown method, a non-positive temperature, or (``normalised``)
    scores that do not sum to a positive number.
    """
    s = np.asarray(scores, dtype=float)
    if method == "softmax":
        if temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        z = np.exp((s - s.max()) / temperature)
        return z / z.sum()
    if method == "normalised":
        if s.sum() <= 0:
            raise ConfigError(f"normalised weights need positive scores, got {s.tolist()}")
        return s / s.sum()
    if method == "equal":
        return np.full(len(s), 1.0 / len(s))
    raise ConfigError(f"weighting {method!r} is not one of {WEIGHTINGS}")


def blend(probs: list[np.ndarray], weights) -> np.ndarray:
    """Weighted average of probability arrays, each ``(rows, n_classes)``; returns ``(rows, n_classes)``."""
    return np.tensordot(np.asarray(weights, dtype=float), np.stack(probs), axes=1)


def available_experiments(out: Outputs, allow_partial: bool = False) -> tuple[list[str], dict[str, str]]:
    """The experiments ready to blend and the others with the reason: ``(names, {name: reason})``.

    Ready: the training record is complete (and not partial, unless ``allow_partial``) and, when
    the competition has a test set, the test predictions come from that training run. Sizes are
    checked, not hashes (:func:`run_ensemble` verifies what it blends).
    """
    names, skipped = [], {}
    for folder in sorted(p for p in (out.root / "models").glob("*") if p.is_dir()):
        exp = folder.name
        trained, why = out.trained(exp).check(hashes=False)
        if trained is None:
            skipped[exp] = f"training: {why} (02_train.py)"
        elif trained["info"]["partial"] and not allow_partial:
            skipped[exp] = f"partial, folds {trained['info']['missing_folds']} missing (02_train.py, or --allow-partial)"
        elif out.has_test():
            pred, why = out.predicted(exp).check(hashes=False)
            if pred is None or pred["inputs"].get("train") != trained["id"]:
                skipped[exp] = f"test predictions: {why or 'made by an older training run'} (03_infer.py)"
        if exp not in skipped:
            names.append(exp)
    return names, skipped


def verified_predictions(out: Outputs, exp: str, with_test: bool, allow_partial: bool = False) -> tuple[dict, dict | None]:
    """The verified records of ``exp``'s training and (``with_test``) test predictions.

    Raises ``MissingArtifact`` naming the stage to run when the training is missing, incomplete,
    partial (unless ``allow_partial``), or when the test predictions are missing or were made by
    another training run than the current one.
    """
    trained = out.trained(exp).require()
    if trained["info"]["partial"] and not allow_partial:
        raise MissingArtifact(f"{exp!r} is partial: folds {trained['info']['missing_folds']} are not trained yet; "
                              f"run 02_train.py for {exp} (or pass --allow-partial to blend it anyway)")
    if not with_test:
        return trained, None
    pred = out.predicted(exp).require()
    check_inputs(pred, {"train": trained["id"]}, f"test predictions of {exp!r}", f"03_infer.py for {exp}")
    return trained, pred


SUBMISSION_FORMATS = ("label", "probability", "probabilities", "indicators")


def make_submission(comp: dict, test_ids, probs: np.ndarray) -> pd.DataFrame:
    """Submission rows in the order of the competition's sample submission, in its columns.

    ``submission.format``: ``label`` (the predicted label in ``target_column``; multi-label: the
    predicted labels joined by ``label_separator``), ``probability`` (binary: p(positive) in
    ``target_column``), ``probabilities`` (one column per class, named as the class, holding its
    probability) or ``indicators`` (one 0/1 column per class: the most probable class, or every
    class with p > 0.5 for multi-label tasks). ``probs`` ``(rows, n_classes)`` in ``test_ids``
    order. Raises ``ValueError`` when the ids differ from the sample's or the format does not fit.
    """
    sub = comp["submission"]
    sample_path = Path(comp["data_dir"]) / sub["sample"]
    sample = pd.read_csv(sample_path, dtype=str, keep_default_na=False)
    fmt = sub["format"]
    if fmt not in SUBMISSION_FORMATS:
        raise ConfigError(f"submission format {fmt!r} is not one of {SUBMISSION_FORMATS}")
    if fmt == "probability" and comp["task"] != "binary":
        raise ConfigError(f"submission format 'probability' is for binary tasks; use 'probabilities' for {comp['task']}")
    ids = pd.Index(list(test_ids))
    if set(ids) != set(sample[sub["id_column"]]) or len(ids) != len(sample):
        raise InputError([f"test predictions and {sample_path} hold different ids"])
    order = ids.get_indexer(sample[sub["id_column"]])
    probs = np.asarray(probs)[order]
    if fmt == "label":
        sample[sub["target_column"]] = tasks.probs_to_labels(probs, comp, sub.get("label_separator", " "))
    elif fmt == "probability":
        sample[sub["target_column"]] = probs[:, comp["classes"].index(comp["positive"])]
    else:
        values = probs if fmt == "probabilities" else tasks.predict_indicators(probs, comp)
        missing = [c for c in comp["classes"] if c not in sample.columns]
        if missing:
            raise InputError([f"{sample_path} has no column for class(es) {missing} (submission format {fmt!r})"])
        for k, c in enumerate(comp["classes"]):
            sample[c] = values[:, k]
    return sample


def run_ensemble(out: Outputs, experiments: list[str] | None = None, method: str = "softmax",
                 temperature: float = 0.01, allow_partial: bool = False) -> dict:
    """Blend experiments' OOF and test probabilities; write ``submission.csv`` and ``ensemble.json``.

    ``experiments``: names to use (default: every experiment with complete training and current
    test predictions; the others are returned in ``"skipped"`` with the reason). Every experiment's training and predictions are verified through their
    records (:func:`verified_predictions`); a partial experiment (folds missing) is refused
    unless ``allow_partial``. The result is written under ``ensemble.record.json``.
    Without a test set (or a ``submission`` section) only the OOF blend is scored and no
    submission is written. Returns ``{"table": DataFrame(experiment, oof scores, weight),
    "blend": {metric: score}, "submission": DataFrame or None, ...}``.
    Raises ``MissingArtifact`` naming the stage to run when predictions are missing, and
    ``ValueError`` when the experiments' OOF rows differ (different folds or subsets).
    """
    comp = out.load_competition()
    skipped = {}
    if not experiments:
        experiments, skipped = available_experiments(out, allow_partial)
    with_test = out.has_test()
    if not experiments:
        reasons = "".join(f"\n  {e}: {why}" for e, why in skipped.items())
        raise MissingArtifact(f"{out.root}: no experiment has finished training and current test predictions: "
                              f"run 02_train.py and 03_infer.py first{reasons}")
    cols = tasks.prob_columns(comp)
    oofs, preds, inputs = [], [], {}
    for exp in experiments:
        trained, pred = verified_predictions(out, exp, with_test, allow_partial)
        inputs[exp] = trained["id"]
        oofs.append(pd.read_csv(out.oof(exp), dtype={"id": str, "target": str}))
        if with_test:
            preds.append(pd.read_csv(out.preds(exp), dtype={"id": str}))
    for exp, o in zip(experiments, oofs):
        if not o["id"].equals(oofs[0]["id"]) or not o["fold"].equals(oofs[0]["fold"]):
            raise MissingArtifact(f"OOF rows of {exp} differ from those of {experiments[0]}: train both on the same folds")
    for exp, p in zip(experiments, preds):
        if not p["id"].equals(preds[0]["id"]):
            raise MissingArtifact(f"test rows of {exp} differ from those of {experiments[0]}: run 03_infer.py again")
    y = tasks.class_index(oofs[0]["target"].fillna(""), comp)
    metric = comp["metric"]
    each = [score_all(comp["metrics"], y, o[cols].to_numpy(), comp) for o in oofs]
    weights = score_weights([e[metric] for e in each], method, temperature)
    oof_blend = blend([o[cols].to_numpy() for o in oofs], weights)
    blend_scores = score_all(comp["metrics"], y, oof_blend, comp)
    table = pd.DataFrame([{"experiment": e, **s, "weight": w} for e, s, w in zip(experiments, each, weights)])
    submission = None
    if with_test and comp.get("submission"):
        submission = make_submission(comp, preds[0]["id"], blend([p[cols].to_numpy() for p in preds], weights))
    record = out.ensembled
    record.begin()
    members = [out.root / "ensemble.json"]
    if submission is None:
        out.submission.unlink(missing_ok=True)  # never left beside a newer blend it does not belong to
    else:
        write_csv(out.submission, submission)
        members.append(out.submission)
    write_json(out.root / "ensemble.json", {"method": method, "temperature": temperature, "metric": metric,
                                            "experiments": table.to_dict("records"), "blend": blend_scores})
    record.commit(members, fingerprint(method, temperature, inputs), inputs=inputs)
    return {"table": table, "blend": blend_scores, "metric": metric, "skipped": skipped,
            "rows": 0 if submission is None else len(submission),
            "submission": submission, "path": out.submission if submission is not None else None}
