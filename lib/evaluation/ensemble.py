"""Stage 04 core: post-process and blend the experiments' OOF and test probabilities, choose the
blending method and the decisions on OOF evidence, write the submission and the ensemble report.

Order: each member's probabilities get the label masks and group aggregation of the
competition's ``decision`` section (:mod:`lib.evaluation.decisions`); every blending method
(:mod:`lib.evaluation.blending`) is scored cross-fitted on the OOF rows; the chosen one (the
config's ``ensemble.method`` or ``--method``; ``best``: the best cross-fitted score) blends the
test predictions; the decision threshold or class biases are fitted on its cross-fitted OOF
blend; the submission applies them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..core.artifacts import (
    COMPETITION,
    FOLDS,
    TEST,
    check_folds,
    check_inputs,
    check_trained,
    competition_id,
    file_hash,
    folds_id,
    retrain_stages,
    trained_problem,
)
from ..core.errors import ConfigError, InputError, MissingArtifact
from ..core.paths import Outputs, as_outputs
from ..core.schema import SUBMISSION_FORMATS
from ..core.utils import fingerprint, read_artifact_csv, read_text_table, write_csv, write_json
from ..data import tasks
from ..data.slices import PREFIX, unmatched_slice_values, with_slice_columns, with_slices
from .blending import Blender, best_method, compare_methods, rank_refusal
from .decisions import choose_decision, mask_blend, postprocess, slice_priors, training_slice_priors
from .metrics import metrics_with_worst_slice, score_all, sign


def available_experiments(out: Outputs, allow_partial: bool = False) -> tuple[list[str], dict[str, str]]:
    """The experiments ready to blend and the others with the reason: ``(names, {name: reason})``.

    Ready: the training record is complete, made on the current folds (:func:`folds_id`) and
    not partial (unless ``allow_partial``) and, when the competition has a test set, the test
    predictions come from that training run. Sizes are checked, not hashes (:func:`run_ensemble`
    verifies what it blends).
    """
    names, skipped = [], {}
    fid, comp = folds_id(out.load_split("train")), out.load_competition()
    for folder in sorted(p for p in (out.root / "models").glob("*") if p.is_dir()):
        exp = folder.name
        trained, why = out.trained(exp).check(hashes=False)
        if trained is None:
            skipped[exp] = f"training: {why} (02_train.py)"
        elif trained["inputs"].get(FOLDS) != fid:
            skipped[exp] = "trained on other folds or labels than the current folds.csv's (02_train.py)"
        elif why := trained_problem(trained, comp):
            skipped[exp] = f"{why} ({', '.join(retrain_stages(trained, comp))})"
        elif trained["info"]["partial"] and not allow_partial:
            skipped[exp] = f"partial, folds {trained['info']['missing_folds']} missing (02_train.py, or --allow-partial)"
        elif stale := features_rebuilt(out, exp, trained):
            skipped[exp] = f"{stale} ({_rerun(out, exp, trained, 'train', '02_train.py, 03_infer.py')})"
        elif out.has_test():
            pred, why = out.predicted(exp).check(hashes=False)
            if pred is None or pred["inputs"].get("train") != trained["id"]:
                skipped[exp] = f"test predictions: {why or 'made by an older training run'} (03_infer.py)"
            elif stale := features_rebuilt(out, exp, pred, "test"):
                skipped[exp] = f"test predictions: {stale} ({_rerun(out, exp, pred, 'test', '03_infer.py')})"
        if exp not in skipped:
            names.append(exp)
    return names, skipped


def features_rebuilt(out: Outputs, exp: str, made: dict, split: str = "train") -> str | None:
    """What makes ``exp``'s models (``made``: its training record, ``split`` ``"train"``) or test
    predictions (03's record, ``"test"``) stale through their feature set, in words, else ``None``:
    01 has rebuilt that split of the cache since (:meth:`lib.core.paths.Outputs.features_since`: a
    test recording replaced rebuilds the test split alone, which leaves the models current and
    their predictions stale), or the cache and stage 00 read other audio in it
    (:meth:`lib.core.paths.Outputs.audio_changed`: a recording replaced since one of them ran).
    The same build, or the cache removed (04 and 05 do not read it), is ``None``."""
    name = out.feature_set_of(exp)
    since = out.features_since(name, made, split)
    if since == "rebuilt":
        return f"feature set {name!r} was rebuilt after {exp!r} was {'trained' if split == 'train' else 'predicted'}"
    if since == "unfinished":
        return f"feature set {name!r} has no finished build (01_features.py was interrupted, or is running)"
    if since and since != "removed":
        return (f"feature set {name!r} and 00_prepare.py read other {split} recordings (replaced or changed since "
                f"one of them ran; run 01_features.py for {exp} first, and 00_prepare.py before it if the audio "
                f"changed after 00 ran)")
    return None


def _rerun(out: Outputs, exp: str, made: dict, split: str, stages: str) -> str:
    """The stages to run when :func:`features_rebuilt` finds ``made`` stale: ``stages``, or 01
    first when the feature set has no finished build (what it keeps is not known until then)."""
    unfinished = out.features_since(out.feature_set_of(exp), made, split) == "unfinished"
    return f"01_features.py for {exp} first" if unfinished else stages


def check_features(out: Outputs, exp: str, made: dict, rerun: str, split: str = "train") -> None:
    """Raise ``MissingArtifact`` saying to run ``rerun`` (:func:`_rerun`) when :func:`features_rebuilt`
    finds ``made`` (a training record; with ``split`` ``"test"``, 03's record) stale."""
    if why := features_rebuilt(out, exp, made, split):
        what = "stale models" if split == "train" else "stale test predictions"
        raise MissingArtifact(f"{why} ({what}): run {_rerun(out, exp, made, split, rerun)}")


def verified_predictions(out: Outputs, exp: str, with_test: bool, allow_partial: bool = False) -> tuple[dict, dict | None]:
    """The verified records of ``exp``'s training and (``with_test``) test predictions.

    Raises ``MissingArtifact`` naming the stage to run when the training is missing, incomplete,
    partial (unless ``allow_partial``), made on other folds than those of the current
    ``folds.csv`` (:func:`lib.core.artifacts.check_folds`), under other audio settings or
    :func:`lib.core.artifacts.model_settings` (classes, positive class, metric ...) than the current ``competition.yaml``'s
    (:func:`lib.core.artifacts.check_trained`) or on a feature cache
    that 01 has rebuilt since (:func:`features_rebuilt`), or when the test predictions are
    missing, were made by another training run than the current one or from another build of
    the test split.
    """
    trained = out.trained(exp).require()
    check_folds(trained, folds_id(out.load_split("train")), f"trained experiment {exp!r}",
                f"02_train.py and 03_infer.py for {exp}")
    check_trained(trained, out.load_competition(), f"trained experiment {exp!r}",
                f"{{stages}} and 03_infer.py for {exp}")
    if trained["info"]["partial"] and not allow_partial:
        raise MissingArtifact(f"{exp!r} is partial: folds {trained['info']['missing_folds']} are not trained yet; "
                              f"run 02_train.py for {exp} (or pass --allow-partial to blend it anyway)")
    check_features(out, exp, trained, f"02_train.py and 03_infer.py for {exp}")
    if not with_test:
        return trained, None
    pred = out.predicted(exp).require()
    check_inputs(pred, {"train": trained["id"]}, f"test predictions of {exp!r}", f"03_infer.py for {exp}")
    check_features(out, exp, pred, f"03_infer.py for {exp}", "test")
    return trained, pred


def make_submission(comp: dict, test_ids, probs: np.ndarray, decision: dict | None = None) -> pd.DataFrame:
    """Submission rows in the order of the competition's sample submission, in its columns.

    ``submission.format``: ``label`` (the predicted label in ``target_column``; multi-label: the
    predicted labels joined by ``label_separator``), ``probability`` (binary: p(positive) in
    ``target_column``), ``probabilities`` (one column per class, named as the class, holding its
    probability) or ``indicators`` (one 0/1 column per class: the most probable class, or every
    class with p > 0.5 for multi-label tasks); ``label`` and ``indicators`` apply ``decision``
    (thresholds or class biases, :func:`lib.data.tasks.decide`). ``probs`` ``(rows, n_classes)``
    in ``test_ids`` order. The frame's ``attrs["lineterminator"]`` and ``attrs["encoding"]`` are the
    sample's line end and byte-order mark (``utf-8-sig``) or none, which
    :func:`lib.core.utils.write_csv` writes. Raises ``ValueError`` when the ids differ from the
    sample's or the format does not fit.
    """
    sub = comp["submission"]
    sample_path = Path(comp["data_dir"]) / sub["sample"]
    sample = read_text_table(sample_path)
    with open(sample_path, "rb") as f:  # written back with the sample's line ends (a Windows CRLF file gives CRLF)
        first = f.readline()  # and its byte-order mark, if any
        sample.attrs["lineterminator"] = "\r\n" if first.endswith(b"\r\n") else "\n"
        sample.attrs["encoding"] = "utf-8-sig" if first.startswith(b"\xef\xbb\xbf") else "utf-8"
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
        sample[sub["target_column"]] = tasks.probs_to_labels(probs, comp, sub.get("label_separator", " "), decision)
    elif fmt == "probability":
        sample[sub["target_column"]] = probs[:, comp["classes"].index(comp["positive"])]
    else:
        values = probs if fmt == "probabilities" else tasks.predict_indicators(probs, comp, decision)
        missing = [c for c in comp["classes"] if c not in sample.columns]
        if missing:
            raise InputError([f"{sample_path} has no column for class(es) {missing} (submission format {fmt!r})"])
        for k, c in enumerate(comp["classes"]):
            sample[c] = values[:, k]
    return sample


def blend_test(comp: dict, blender: Blender, decision: dict | None, preds: list[pd.DataFrame], table: pd.DataFrame,
               priors: dict | None = None) -> tuple[np.ndarray, pd.DataFrame | None]:
    """The test blend ``(rows, n_classes)`` of the experiments' test predictions ``preds`` (same
    ids, in ``table`` = ``test.csv``'s order) after the label masks, the slice prior shift (with
    ``priors``, :func:`lib.evaluation.decisions.slice_priors` of the training rows, when
    ``decision.slice_prior`` is set) and group aggregation, and the submission made from it with
    ``decision`` (``None`` without a ``submission`` section; with ``submission.unit: group``, one
    row per group, its id the group's). Raises ``MissingArtifact`` when ``decision.slice_prior``
    is set and ``priors`` is missing."""
    if (comp.get("decision") or {}).get("slice_prior") and priors is None:
        raise MissingArtifact("decision.slice_prior: the training rows' slice priors are missing: run 04_ensemble.py again")
    blend = mask_blend(blender.apply(postprocess(preds, table, comp, "test", priors)[0]), preds[0]["id"], table, comp,
                       "test")
    if not comp.get("submission"):
        return blend, None
    ids, probs = preds[0]["id"], blend
    if comp["submission"].get("unit") == "group":  # a row per group: its rows share the group's probabilities
        groups = table.set_index("id").loc[ids, "group"].astype(str).to_numpy()
        first = ~pd.Series(groups).duplicated().to_numpy()
        ids, probs = groups[first], blend[first]
    return blend, make_submission(comp, ids, probs, decision)


def _load_members(out: Outputs, experiments: list[str], with_test: bool, allow_partial: bool
                  ) -> tuple[list[pd.DataFrame], list[pd.DataFrame], dict[str, str]]:
    """Read the OOF predictions and (``with_test``) test predictions of ``experiments``, each
    verified through its records first (:func:`verified_predictions`).

    Returns ``(oofs, preds, inputs)``: the OOF tables (id, fold, target, ``p_<class>`` ...), the
    test tables (id, ``p_<class>`` ...; empty without a test set), both in ``experiments``' order,
    and ``{experiment: training record id, "preds/<experiment>": its test predictions' record id}``. Raises ``MissingArtifact`` as
    :func:`verified_predictions` does, when an experiment's OOF rows (ids, folds) or test rows
    differ from the first one's, and when test rows are not ``test.csv``'s.
    """
    oofs, preds, inputs = [], [], {}
    for exp in experiments:
        trained, pred = verified_predictions(out, exp, with_test, allow_partial)
        inputs[exp] = trained["id"]
        if pred:  # (a new test set predicted by 03 leaves the training as it was)
            inputs[f"preds/{exp}"] = pred["id"]
        oofs.append(read_artifact_csv(out.oof(exp)))
        if with_test:
            preds.append(read_artifact_csv(out.preds(exp)))
    for exp, o in zip(experiments, oofs):
        if not o["id"].equals(oofs[0]["id"]) or not o["fold"].equals(oofs[0]["fold"]):
            folds = {e: sorted(f.fold.unique().tolist()) for e, f in zip(experiments, oofs)}
            raise MissingArtifact(f"OOF rows of {exp} (folds {folds[exp]}) differ from those of {experiments[0]} "
                                  f"(folds {folds[experiments[0]]}): a blend needs the same folds of every member; "
                                  f"name experiments trained on the same folds (04_ensemble.py "
                                  f"{' '.join(e for e in experiments if folds[e] == folds[exp])}), or train the "
                                  f"missing folds with 02_train.py")
    test_ids = set(out.load_split("test")["id"].astype(str)) if with_test else set()
    for exp, p in zip(experiments, preds):
        if set(p["id"].astype(str)) != test_ids:  # 00 read another test set since 03 ran
            raise MissingArtifact(f"test predictions of {exp} are of other rows than test.csv's ({len(p)} against "
                                  f"{len(test_ids)}; test.csv changed since 03 ran): run 01_features.py and "
                                  f"03_infer.py for {exp}")
        if not p["id"].equals(preds[0]["id"]):
            raise MissingArtifact(f"test rows of {exp} differ from those of {experiments[0]}: run 03_infer.py again")
    return oofs, preds, inputs


def _choose_method(method: str, results: dict, comp: dict, config_method: str | None,
                   member_probs: list[np.ndarray], y) -> tuple[str, str]:
    """The blending method to use and why: ``(name, note)``. ``method``: ``best`` (the best
    cross-fitted OOF score of ``results``, :func:`lib.evaluation.blending.compare_methods`, when
    it beats the best member's own OOF score, of ``member_probs`` ``[(rows, n_classes)]`` against
    ``y``: :func:`best_method`; with one member, ``single``: every weighted blend is that member,
    and ``rank`` alone
    would change its decisions, cutting at the median rank of whatever set it predicts, with no
    check) or a method's name (the note says whether the config, whose ``ensemble.method`` is
    ``config_method``, or the command line named it). Raises ``ConfigError`` for an unknown
    method or one that failed on these predictions."""
    if method == "best" and len(member_probs) == 1:  # equal: when the OOF rows of one fold leave nothing fitted to compare
        return ("single" if "single" in results else "equal"), "one member: nothing to blend"
    if method == "best":
        left_out = f" ('rank' left out: {rank_refusal(comp).split(', and ', 1)[-1]})" if rank_refusal(comp) else ""
        fixed = tasks.fixed_decision(comp)
        at = f" at decision.threshold {comp['decision']['threshold']}" if fixed else ""
        alone = [score_all([comp["metric"]], y, p, comp, fixed)[comp["metric"]] for p in member_probs]  # as methods
        best_member = max(alone, key=lambda v: sign(comp["metric"], comp) * v if np.isfinite(v) else -np.inf)
        chosen, top = best_method(results, comp, best_member), best_method(results, comp)
        if chosen != top:
            return chosen, (f"the best blend, {top} ({results[top]['scores'][comp['metric']]:.4f} cross-fitted OOF "
                            f"{comp['metric']}{at}), does not beat the best member's own OOF score ({best_member:.4f}): that "
                            f"member is submitted and scored by its own OOF (cross-fitted, taking on each fold the "
                            f"member best on the other folds scores {results['single']['scores'][comp['metric']]:.4f})"
                            f"{left_out}")
        recut = ("; NOTE: a rank blend decides by each row's rank within the set it predicts, so it gives each class "
                 "about the share of test rows it gave of OOF rows, whatever the test set's class ratio (--method "
                 "names another)") if chosen == "rank" and comp["task"] != "multilabel" else ""
        return chosen, f"best cross-fitted OOF {comp['metric']}{at} of {len(results)} methods{left_out}{recut}"
    if results.get(method, {}).get("error"):
        raise ConfigError(f"blending method {method!r}: {results[method]['error']}")
    if method in results:
        return method, "named in the " + ("command line" if method != config_method else "config")
    if method == "rank" and rank_refusal(comp):
        raise ConfigError(f"{rank_refusal(comp)}; choose another method (ensemble.method or --method)")
    raise ConfigError(f"blending method {method!r} is not one of best, {', '.join(results)}")


def _member_table(experiments: list[str], each: list[dict], weights) -> pd.DataFrame:
    """The members' table: one row per experiment with its OOF scores ``each`` (``{metric:
    score}``, in ``experiments``' order) and its weight in the chosen blend (``weights``: one per
    experiment; ``None`` for a method without weights, e.g. stacking: no weight column)."""
    return pd.DataFrame([{"experiment": e, **s, **({} if weights is None else {"weight": weights[i]})}
                         for i, (e, s) in enumerate(zip(experiments, each))])


def _slice_priors(train: pd.DataFrame, comp: dict, test: pd.DataFrame | None = None) -> dict | None:
    """``decision.slice_prior``'s class priors of every training row (``folds.csv``), pooled and
    per value of the column (:func:`lib.evaluation.decisions.slice_priors`, with ``"column"`` and
    ``"classes"``), what the test rows are shifted with, and with a ``test`` table
    ``"test_unknown"``: its values that no training row has, with row counts (left unshifted);
    ``"oof_unshifted"``: the values of OOF rows that no other fold holds (folds grouped by the
    column), with row counts: those rows keep their probabilities, so the OOF scores cannot judge
    the shift there; ``"oof_lacking"``: the values of OOF rows whose other folds lack a class
    that the training rows of that value have, ``{value: ["fold k: n rows, 'class'", ...]}``: that
    class is not shifted by on them (:func:`lib.evaluation.decisions.shift_slice_priors`), unlike
    on test rows; ``None`` without the setting."""
    priors = training_slice_priors(train, comp)
    if priors is None:
        return None
    column = priors["column"]
    unknown = {} if test is None else unmatched_slice_values(test[PREFIX + column], priors["slices"])
    labelled = train[train["fold"] >= 0]  # the OOF rows
    values, fold = labelled[PREFIX + column].astype(str).to_numpy(), labelled["fold"].to_numpy()
    alone = {v: int(((fold == k) & (values == v)).sum()) for k in np.unique(fold)
             for v in sorted(set(values[fold == k]) - set(values[fold != k]))}
    y, lacking = tasks.class_index(labelled["target"].fillna(""), comp), {}
    for k in np.unique(fold):  # a class that the other folds' rows of a value lack, all training rows have
        other = slice_priors(y[fold != k], values[fold != k], comp)["unknown"]
        for v, classes in other.items():
            n, new = int(((fold == k) & (values == v)).sum()), sorted(set(classes) - set(priors["unknown"].get(v, [])))
            if n and new:
                lacking.setdefault(v, []).append(f"fold {k}: {n} rows, {', '.join(map(repr, new))}")
    return {**priors, "test_unknown": unknown, "oof_unshifted": alone, "oof_lacking": lacking}


def _chosen_oof(chosen: str, results: dict, probs: list[np.ndarray], post) -> np.ndarray | None:
    """The OOF ``(rows, n_classes)`` that stands for the ``chosen`` method's submission: its
    cross-fitted blend (:func:`lib.evaluation.blending.compare_methods`), but for ``single`` the
    member it submits (fitted on every row) with its own OOF rows (``post``: the label masks, as
    the blends have them). Cross-fitted, ``single`` predicts each fold with
    the member best on the other folds, which can score below every member; the submission is one
    member's predictions, which its own OOF scores, as every other report of that member does."""
    if chosen != "single" or results[chosen]["oof"] is None:
        return results[chosen]["oof"]
    return post(results[chosen]["blender"].apply(probs))


def _without_slice_prior(oofs: list[pd.DataFrame], train: pd.DataFrame, y, folds, comp: dict, method: str,
                         temperature: float) -> dict:
    """The blend 04 would choose without ``decision.slice_prior`` (the same ``method``, on the
    members' OOF ``oofs`` without the shift) and its OOF scores (:func:`_chosen_oof`) at the
    default decision or a fixed ``decision.threshold``, worst slice included: ``{"method", metric:
    score, ...}``, the comparison the report and 04's output give beside the shifted blend's."""
    plain = dict(comp, decision={k: v for k, v in comp["decision"].items() if k != "slice_prior"})
    probs = postprocess(oofs, train, plain, "folds")[0]
    post = lambda p: mask_blend(p, oofs[0]["id"], train, plain, "folds")
    results = compare_methods(probs, y, folds, plain, temperature, post=post)
    chosen = _choose_method(method, results, plain, None, probs, y)[0] if method == "best" else method
    if results[chosen]["oof"] is None:  # a named method that cannot blend these members
        return {"method": chosen, "error": results[chosen]["error"]}
    return {"method": chosen, **score_all(metrics_with_worst_slice(plain), y, _chosen_oof(chosen, results, probs, post),
                                          plain, tasks.fixed_decision(plain))}


def _same_oof_as(before: dict | None, oof_blend: Path) -> dict | None:
    """The blend record's ``info``: ``{"same_oof_as": ids}``, the earlier blend records whose
    ``ensemble/oof_blend.csv`` held the bytes that ``oof_blend`` holds now (``before``, the record
    this run replaces, and those it named; at most ten), or ``None`` when ``before`` held others. A
    student of ``train.distill`` trained on any of them learnt from the same OOF probabilities and
    stays (an earlier version's student is keyed by such a record's id)."""
    was = ((before or {}).get("members") or {}).get("ensemble/oof_blend.csv", {}).get("sha256")
    if was is None or not oof_blend.is_file() or file_hash(oof_blend) != was:
        return None
    return {"same_oof_as": list(dict.fromkeys([before["id"], *(before.get("info") or {}).get("same_oof_as", [])]))[:10]}


def _write_submission(out: Outputs, submission: pd.DataFrame | None) -> None:
    """Write ``submission.csv``, or remove it when there is no ``submission`` (no test set or
    ``submission`` section)."""
    if submission is None:
        out.submission.unlink(missing_ok=True)  # never left beside a newer blend it does not belong to
    else:
        write_csv(out.submission, submission)


def run_ensemble(out: Outputs, experiments: list[str] | None = None, method: str | None = None,
                 temperature: float | None = None, allow_partial: bool = False) -> dict:
    """Blend experiments' OOF and test probabilities; write ``submission.csv``, ``ensemble.json``
    and the report under ``ensemble/`` (all under ``ensemble.record.json``).

    ``experiments``: names to use (default: every experiment with complete training and current
    test predictions; the others are returned in ``"skipped"`` with the reason). Every
    experiment's training and predictions are verified through their records
    (:func:`verified_predictions`); a partial experiment (folds missing) is refused unless
    ``allow_partial``. ``method``/``temperature``: the blending method (:data:`METHODS`) and
    softmax temperature; ``None``: the competition's ``ensemble`` section. Without a test set (or
    a ``submission`` section) only the OOF blends are scored and no submission is written.
    Returns ``{"table": DataFrame(experiment, OOF scores, weight), "methods": DataFrame(method,
    cross-fitted OOF scores), "method", "note", "blend": {metric: score}, "oof_folds": the number of
    folds the OOF rows hold (1: nothing is cross-fitted, only blends that fit nothing), "decision": the
    :func:`lib.evaluation.decisions.choose_decision` result, "slice_prior": the training rows'
    priors of ``decision.slice_prior`` with ``"compare"`` (the chosen blend's OOF scores,
    :func:`_chosen_oof`, with and without the shift, :func:`_without_slice_prior`) or None, "submission": DataFrame or None, ...}``.
    Raises ``MissingArtifact`` naming the stage to run when predictions are missing or the
    experiments' OOF rows differ (other folds or subsets)."""
    from .ensemble_report import write_ensemble_report

    out, experiments = as_outputs(out), [experiments] if isinstance(experiments, str) else experiments
    comp = out.load_competition()
    ens_cfg = comp.get("ensemble") or {}
    method = method or ens_cfg.get("method", "best")
    temperature = ens_cfg.get("temperature", 0.01) if temperature is None else temperature
    experiments, skipped = (experiments, {}) if experiments else available_experiments(out, allow_partial)
    with_test = out.has_test()
    if not experiments:
        reasons = "".join(f"\n  {e}: {why}" for e, why in skipped.items())
        raise MissingArtifact(f"{out.root}: no experiment has finished training and current test predictions: "
                              f"run {'the stage each line names' if reasons else '02_train.py and 03_infer.py'} first{reasons}")
    oofs, preds, inputs = _load_members(out, experiments, with_test, allow_partial)
    train, test = out.load_split("train"), (out.load_split("test") if with_test else None)
    oofs[0] = with_slice_columns(oofs[0], train)
    y = with_slices(tasks.class_index(oofs[0]["target"], comp), oofs[0])
    folds = oofs[0]["fold"].to_numpy()
    oof_probs, masked = postprocess(oofs, train, comp, "folds")
    priors = _slice_priors(train, comp, test)
    each = [score_all(metrics_with_worst_slice(comp), y, p, comp, tasks.fixed_decision(comp)) for p in oof_probs]
    post = lambda p: mask_blend(p, oofs[0]["id"], train, comp, "folds")
    results = compare_methods(oof_probs, y, folds, comp, temperature, post=post)
    methods = pd.DataFrame([{"method": m, **r["scores"], "note": r.get("error", "")} for m, r in results.items()])
    chosen, note = _choose_method(method, results, comp, ens_cfg.get("method"), oof_probs, y)
    chosen_oof = _chosen_oof(chosen, results, oof_probs, post)
    table = _member_table(experiments, each, results[chosen]["weights"])
    if priors:  # what the shift changes: the same choice without it, both at the default decision
        shifted = score_all(metrics_with_worst_slice(comp), y, chosen_oof, comp, tasks.fixed_decision(comp))
        priors["compare"] = {"with": {"method": chosen, **shifted},
                             "without": _without_slice_prior(oofs, train, y, folds, comp, method, temperature)}
    decision = choose_decision(y, chosen_oof, folds, comp)
    blend_scores = score_all(comp["metrics"], y, chosen_oof, comp, decision["decision"])
    submission = test_blend = None
    final = results[chosen]["blender"]  # fitted on every OOF row
    if with_test:
        test_blend, submission = blend_test(comp, final, decision["decision"], preds, test, priors)
    record, before = out.ensembled, out.ensembled.read()  # (before: its OOF blend's student stays, _same_oof_as)
    record.begin(out.root / "ensemble")  # (and a killed run's temporaries there)
    _write_submission(out, submission)
    summary = {"method": chosen, "asked": method, "note": note, "temperature": temperature, "metric": comp["metric"],
               "experiments": table.to_dict("records"), "blend": blend_scores,
               "methods": {m: {k: r[k] for k in ("scores", "weights", "error") if k in r} for m, r in results.items()},
               "decision": decision, "rows_masked": masked,
               "slice_prior": priors,
               "blender": final.state()}
    write_json(out.root / "ensemble.json", summary)
    members = [out.root / "ensemble.json", *write_ensemble_report(
        out.root / "ensemble", comp, summary, oofs[0], chosen_oof, oof_probs, experiments,
        None if test_blend is None else (preds[0]["id"], test_blend))]
    if submission is not None:
        members.append(out.submission)
    inputs.update({FOLDS: folds_id(train), COMPETITION: competition_id(comp),  # what 05_bundle.py checks,
                   **({TEST: out.test_id()} if with_test else {})})  # and 00 (another test set: the blend goes)
    record.commit(members, fingerprint(chosen, method, temperature, inputs, comp.get("decision")), inputs=inputs,
                  info=_same_oof_as(before, out.root / "ensemble" / "oof_blend.csv"))
    return {"table": table, "methods": methods, "method": chosen, "note": note, "blend": blend_scores,
            "oof_folds": len(np.unique(folds)), "metric": comp["metric"], "skipped": skipped, "decision": decision,
            "rows_masked": masked, "slice_prior": priors, "rows": 0 if submission is None else len(submission),
            "submission": submission, "path": out.submission if submission is not None else None}
