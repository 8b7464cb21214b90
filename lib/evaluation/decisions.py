"""Decisions from OOF evidence: label masks, per-group aggregation, thresholds and class biases.

A competition config's ``decision`` section (docs/ensembling.md):

* ``mask``: rules ``{where: QUERY, classes: [...]}``; ``QUERY`` is a pandas expression over the
  competition's metadata columns (e.g. ``"sex == 'male'"``); for the rows it selects, the named
  classes are impossible: their probability becomes 0 (single-label rows renormalised). The
  voice-pathology winner (MAIC 2021) masked classes impossible for a patient's sex and age.
* ``slice_prior``: a slice column (``slices``, e.g. ``database``): each row's probabilities are
  re-expressed as if its slice had the pooled class ratio (:func:`shift_slice_priors`; the
  priors from the training rows, for OOF rows those of the other folds). A model that learnt
  the recording device from sources with different class ratios then decides each source on
  the heart, not on its ratio. The test CSV must have the column too.
* ``group_aggregate``: ``mean`` or ``vote``: every recording of a group (``groups`` section,
  e.g. a patient) gets the mean of its group's probabilities, or the share of its recordings
  predicting each class (as the MAIC 2021 winner's patients voted).
* ``threshold`` (binary, multi-label): ``auto`` (default) fits the decision threshold (one per
  class for multi-label) that maximises the competition metric on the OOF predictions; a number
  (or a list, one per class) fixes it. ``class_bias`` (multiclass): fit one additive bias per
  class on the log-probabilities (a prior correction).

Fairness: a fitted decision is also *cross-fitted*: for each fold it is fitted on the other
folds' OOF rows and scored on that fold's, so the reported gain is not self-flattering. With
``auto`` the fitted decision is used only when its cross-fitted score beats the default one and
its held-out gains per fold are larger than their fold-to-fold noise (:func:`adoption_test`: a
one-sided corrected paired t-test over the folds at 2.5 %).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..core.errors import ConfigError, InputError, MissingArtifact
from ..core.progress import progress
from ..data import tasks
from ..data.metadata import META_PREFIX
from ..data.slices import PREFIX as SLICE_PREFIX
from ..data.slices import match_slice_values, with_slices
from .metrics import get_metric, score_all, sign

THRESHOLD_GRID = np.concatenate([[0.0], np.round(np.arange(0.05, 0.96, 0.05), 2), [1.0]])
"""Candidate thresholds of a multi-label class: 0.05 to 0.95 and the extremes 0 (every row with
p > 0 positive) and 1 (every row negative)."""
BIAS_GRID = np.arange(-2.0, 2.01, 0.25)
"""Candidate log-probability biases of a multiclass class (coordinate ascent, class 0 fixed at 0)."""


def _metadata_view(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with its metadata columns under their own names (``attrs["metadata"]``: those names)."""
    view = table.rename(columns=lambda c: c[len(META_PREFIX):] if str(c).startswith(META_PREFIX) else c)
    view.attrs["metadata"] = [str(c)[len(META_PREFIX):] for c in table.columns if str(c).startswith(META_PREFIX)]
    return view


def _rule_rows(view: pd.DataFrame, rule: dict, where: str) -> np.ndarray:
    """The rows ``(rows,)`` bool of ``view`` (:func:`_metadata_view`) that mask rule ``rule``'s
    ``where`` expression selects. Raises ``ConfigError`` naming the rule when it cannot be
    evaluated or does not give one boolean per row."""
    try:
        rows = view.eval(rule["where"])
    except Exception as exc:  # pandas raises many types for a bad expression
        raise ConfigError(f"{where}: rule {rule['where']!r} cannot be evaluated over the competition's metadata "
                          f"columns {view.attrs.get('metadata', [])} (its `metadata` section; folds.csv's other "
                          f"columns can be named too): {exc}") from exc
    rows = np.asarray(rows)
    if rows.dtype != bool or rows.shape != (len(view),):
        raise ConfigError(f"{where}: rule {rule['where']!r} must give one true/false per row")
    return rows


def mask_matches(table: pd.DataFrame, comp: dict) -> list[str]:
    """One line per ``decision.mask`` rule: how many rows of ``table`` (``folds.csv``) it selects,
    with a warning when none (a value spelt otherwise than in the CSV) and when some of them are
    labelled a class it makes impossible (the rule contradicts the training labels), which 00 and
    04 print, so that no rule is silently without effect or wrong. Raises as :func:`_rule_rows` (00: a misspelt column
    is said before any training)."""
    view = _metadata_view(table.reset_index(drop=True))
    labels = [tasks.split_labels(v) for v in table["target"]] if "target" in table else [[]] * len(table)
    out = []
    for r in (comp.get("decision") or {}).get("mask") or []:
        rows = np.flatnonzero(_rule_rows(view, r, "decision.mask"))
        held = pd.Series([c for i in rows for c in labels[i] if c in r["classes"]], dtype=object).value_counts()
        line = f"label mask {r['where']!r}: {len(rows)} training rows"
        if not len(rows):
            line += ": WARNING: it selects none (the expression against the metadata's values as folds.csv has them?)"
        elif len(held):  # the rule contradicts the training labels
            line += (f": WARNING: {int(held.sum())} of them are labelled a class it makes impossible "
                     f"({', '.join(f'{c}: {n}' for c, n in held.items())}): their probability of it is set to 0")
        out.append(line)
    return out


def apply_masks(probs: np.ndarray, table: pd.DataFrame, comp: dict, where: str = "decision.mask") -> tuple[np.ndarray, int]:
    """Zero the classes that ``comp['decision']['mask']`` rules make impossible for each row.

    ``probs`` ``(rows, n_classes)`` in the order of ``table`` (``folds.csv`` or ``test.csv``,
    whose ``meta_<column>`` columns the rules read by their plain names). Single-label rows are
    renormalised. With ``decision.group_aggregate`` and a ``group`` column in ``table``, a class
    that a rule excludes for one row of a group is excluded for all of them (the group has one
    label: its recordings' mean, or vote, could otherwise give a masked row its class back, and
    the group's rows would differ). Returns ``(masked probs, rows changed (rows,) bool)`` (rows
    with a masked class above 0). Raises ``ConfigError`` naming the
    rule when its expression does not evaluate to one boolean per row, and ``InputError`` when a
    row would have every class masked.
    """
    rules = (comp.get("decision") or {}).get("mask") or []
    if not rules:
        return probs, np.zeros(len(probs), bool)
    view = _metadata_view(table.reset_index(drop=True))
    keep = np.ones(np.shape(probs), dtype=bool)
    for rule in rules:
        keep[np.ix_(_rule_rows(view, rule, where), [comp["classes"].index(c) for c in rule["classes"]])] = False
    if (comp.get("decision") or {}).get("group_aggregate") and "group" in view:  # excluded for one: for the group
        keep = pd.DataFrame(keep).groupby(view["group"].to_numpy()).transform("min").to_numpy(dtype=bool)
    if comp["task"] != "multilabel" and not keep.any(1).all():
        bad = view["id"][~keep.any(1)].tolist()
        raise InputError([f"{where}: every class is masked for {len(bad)} row(s), e.g. {bad[:5]}"])
    out = np.where(keep, probs, 0.0)
    if comp["task"] != "multilabel":
        total = out.sum(1, keepdims=True)
        out = np.divide(out, total, out=np.where(keep, 1.0 / keep.sum(1, keepdims=True), 0.0), where=total > 0)
    return out, (~keep & (np.asarray(probs) > 0)).any(1)  # rows whose probabilities it moved


def slice_priors(y, values, comp: dict) -> dict:
    """Class priors of encoded labels ``y`` (``(rows,)`` class indices, or ``(rows, n_classes)``
    0/1 for multi-label), pooled and per slice value ``values (rows,)``, with add-one (Laplace)
    smoothing so that no prior is 0 or 1: single-label ``(count_k + 1) / (rows + n_classes)``,
    multi-label per class ``(positives_k + 1) / (rows + 2)``. Returns ``{"pooled": [n_classes],
    "slices": {value: [n_classes]}, "rows": {value: rows}, "unknown": {value: [class names]}}``
    (plain lists: it is saved in ``ensemble.json`` for the test rows and bundles), where
    ``unknown`` lists, per value, the classes that no row of it has (multi-label: that no row has,
    or that every row has): their prior is a guess of the smoothing, and :func:`shift_slice_priors`
    does not shift by it (a database whose training rows are all normal would otherwise have every
    row pushed to abnormal)."""
    k, values = len(comp["classes"]), np.asarray(values).astype(str)

    def counts(rows) -> np.ndarray:
        if comp["task"] == "multilabel":
            return np.asarray(rows, float).sum(0)
        return np.bincount(np.asarray(rows, int), minlength=k).astype(float)

    def prior(rows) -> list[float]:
        return ((counts(rows) + 1) / (len(rows) + (2 if comp["task"] == "multilabel" else k))).tolist()

    def absent(rows) -> list[str]:
        n = counts(rows)
        lacking = (n == 0) | (n == len(rows)) if comp["task"] == "multilabel" else n == 0
        return [c for c, a in zip(comp["classes"], lacking) if a]

    kept = np.unique(values)
    unknown = {str(v): absent(y[values == v]) for v in kept}
    return {"pooled": prior(y), "slices": {str(v): prior(y[values == v]) for v in kept},
            "rows": {str(v): int((values == v).sum()) for v in kept},
            "unknown": {v: c for v, c in unknown.items() if c}}


def training_slice_priors(train: pd.DataFrame, comp: dict) -> dict | None:
    """:func:`slice_priors` of every training row of ``train`` (``folds.csv``) over the
    ``decision.slice_prior`` column, with ``"column"`` and ``"classes"``: what test rows are
    shifted with; ``None`` without the setting."""
    column = (comp.get("decision") or {}).get("slice_prior")
    if not column:
        return None
    y = tasks.class_index(train["target"].fillna(""), comp)
    return {"column": column, "classes": list(comp["classes"]),
            **slice_priors(y, train[SLICE_PREFIX + column].astype(str).to_numpy(), comp)}


def unknown_prior_notes(priors: dict | None, comp: dict) -> list[str]:
    """One line per slice value of ``priors`` (:func:`training_slice_priors`; ``None``: none)
    whose training rows lack a class, saying what the shift leaves alone there, and with 04's
    ``oof_lacking`` one more on the OOF rows whose fold's other folds lack one (00, 04 and its
    report print them)."""
    if not priors:
        return []
    multilabel = comp["task"] == "multilabel"

    def left(classes) -> str:
        these = "that class" if len(classes) == 1 else "those classes"
        if multilabel:
            return f"{these} {'is' if len(classes) == 1 else 'are'} left unshifted on its rows"
        if len(comp["classes"]) - len(classes) <= 1:
            return "its rows are left unshifted"
        kept = "that class's probability" if len(classes) == 1 else "those classes' probabilities"
        return f"its rows keep {kept}, and the other classes are shifted within the rest"

    lines = [f"decision.slice_prior {priors['column']!r}: {value!r} ({priors['rows'][value]} training rows) has "
             f"{'no row, or only rows, with' if multilabel else 'no row of'} {', '.join(map(repr, classes))}: its "
             f"prior there is unknown, so {left(classes)}" for value, classes in priors.get("unknown", {}).items()]
    return lines + ([_lacking_oof_note(priors, comp)] if priors.get("oof_lacking") else [])


def _lacking_oof_note(priors: dict, comp: dict) -> str:
    """The line on the OOF rows whose fold's other folds lack a class of their slice value that
    the training rows have (``priors["oof_lacking"]``, from 04: :func:`lib.evaluation.ensemble`),
    saying what the shift does there for this task."""
    lacking = priors["oof_lacking"]
    effect = ("those rows are left unshifted" if comp["task"] == "binary" else "that class is not shifted on them"
              if comp["task"] == "multilabel" else "that class keeps its probability on them")
    return (f"OOF rows whose fold's other folds lack a class of their {priors['column']} "
            + ("(or always have it) " if comp["task"] == "multilabel" else "") + "that its training rows have: "
            + "; ".join(f"{v} ({', '.join(parts)})" for v, parts in lacking.items()) + f": {effect}, unlike on test rows")


def shift_slice_priors(probs: np.ndarray, values, priors: dict, comp: dict) -> np.ndarray:
    """Probabilities ``(rows, n_classes)`` re-expressed as if every row's slice (``values``,
    ``(rows,)``) had the pooled class ratio of ``priors`` (:func:`slice_priors`): single-label
    ``p_k * pooled_k / slice_k``, renormalised; multi-label, per class, the odds times the pooled
    odds over the slice's odds. This is the prior-shift correction of Saerens, Latinne &
    Decaestecker (2002), "Adjusting the outputs of a classifier to new a priori probabilities",
    Neural Computation 14(1), with known priors, applied per slice as Menon et al. (2021),
    "Long-tail learning via logit adjustment" (ICLR), apply it per class. Values are matched to
    the training rows' as :func:`lib.data.slices.match_slice_values` does (``"1.0"`` is ``"1"``);
    rows of a value without a prior (a slice the training rows lack), a slice's classes whose
    prior is unknown (``priors["unknown"]``; single-label: the other classes are shifted within
    the probability they hold together, so a binary slice lacking a class is kept whole) and
    probabilities of exactly 0 or 1 (masked classes) are kept as they are. Returns a new array."""
    probs = np.asarray(probs, dtype=float)
    values, out = match_slice_values(np.asarray(values).astype(str), priors["slices"]), probs.copy()
    pooled = np.asarray(priors["pooled"], dtype=float)
    unknown = priors.get("unknown", {})
    for value, prior in priors["slices"].items():
        rows = values == value
        if not rows.any():
            continue
        prior, p = np.asarray(prior, dtype=float), probs[rows]
        lacking = [comp["classes"].index(c) for c in unknown.get(value, [])]
        if comp["task"] == "multilabel":  # per class on the log-odds: + logit(pooled) - logit(slice)
            inner = (p > 0) & (p < 1)
            q = np.where(inner, p, 0.5)
            shift = np.log(pooled / (1 - pooled)) - np.log(prior / (1 - prior))
            shift[lacking] = 0.0
            out[rows] = np.where(inner, 1 / (1 + np.exp(-(np.log(q / (1 - q)) + shift))), p)
        elif not lacking:
            q = p * pooled / prior
            out[rows] = q / q.sum(1, keepdims=True)
        else:  # the known classes shifted within the probability they hold together; the others kept
            known = ~np.isin(np.arange(len(prior)), lacking)
            q, mass = p[:, known] * pooled[known] / prior[known], p[:, known].sum(1, keepdims=True)
            out[np.ix_(np.flatnonzero(rows), np.flatnonzero(known))] = q / np.where(q.sum(1, keepdims=True) > 0,
                                                                                    q.sum(1, keepdims=True), 1) * mass
    return out


def slice_prior_shift(probs: np.ndarray, table: pd.DataFrame, comp: dict, priors: dict | None = None,
                      population: pd.DataFrame | None = None) -> np.ndarray:
    """``decision.slice_prior`` applied to ``probs (rows, n_classes)``, the rows of ``table``
    (``folds.csv`` or ``test.csv``, or some of their rows, with the ``slice_<column>`` column) by
    :func:`shift_slice_priors`. ``priors`` ``None`` (OOF rows): each fold's rows are shifted with
    the priors of the labelled rows of ``population`` (``folds.csv``; default ``table``) outside
    that fold (a fold's own labels never enter its rows' shift, so not the pseudo-labelled rows
    either, whose labels came from a blend that learnt them; an experiment with some folds
    unfinished is shifted as a finished one);
    else with ``priors`` (:func:`slice_priors` of every training row: test rows). Raises
    ``MissingArtifact`` when the table lacks the column (00_prepare.py ran before the setting)."""
    column = SLICE_PREFIX + comp["decision"]["slice_prior"]
    if column not in table:
        raise MissingArtifact(f"decision.slice_prior: the prepared table has no {column} column: run 00_prepare.py again")
    values = table[column].astype(str).to_numpy()
    if priors is not None:
        return shift_slice_priors(probs, values, priors, comp)
    pop = table if population is None else population
    pop = pop[pop["fold"].astype(int) >= 0]  # not pseudo-labelled rows: their labels came from this fold's
    y, pop_values, pop_folds = (tasks.class_index(pop["target"].fillna(""), comp), pop[column].astype(str).to_numpy(),
                                pop["fold"].astype(int).to_numpy())
    folds, out = table["fold"].astype(int).to_numpy(), np.empty_like(probs)
    for k in np.unique(folds):
        rows, other = folds == k, pop_folds != k
        out[rows] = shift_slice_priors(probs[rows], values[rows], slice_priors(y[other], pop_values[other], comp), comp)
    return out


VOTE_TIE = 1e-6
"""The weight of a group's mean probability in its ``vote`` (:func:`aggregate_groups`): enough to
break a tie, never enough to outweigh one recording's vote."""


def aggregate_groups(probs: np.ndarray, groups, comp: dict, how: str | None) -> np.ndarray:
    """Every row's probabilities ``(rows, n_classes)`` replaced by its group's: the ``mean`` over
    the group's rows, or the ``vote`` (the share of its rows deciding each class by the default
    decision; a tie, e.g. half a patient's recordings each way, goes by the group's mean
    probability, added at :data:`VOTE_TIE` of its weight: single-label rows still sum to 1,
    multi-label ones move by it around 0.5 and stay within [0, 1]). ``how=None`` returns
    ``probs`` unchanged. Raises ``ValueError`` for another ``how``."""
    if how is None:
        return probs
    if how not in ("mean", "vote"):
        raise ValueError(f"group_aggregate {how!r} is not mean or vote")
    codes, _ = pd.factorize(pd.Series(groups).astype(str))

    def group_mean(values):
        sums = np.zeros((codes.max() + 1, values.shape[1]))
        np.add.at(sums, codes, values)
        return (sums / np.bincount(codes)[:, None])[codes]
    mean = group_mean(np.asarray(probs, float))
    if how == "mean":
        return mean
    share = group_mean(tasks.predict_indicators(probs, comp).astype(float))
    if comp["task"] == "multilabel":
        return np.clip(share + VOTE_TIE * (mean - 0.5), 0.0, 1.0)
    return (share + VOTE_TIE * mean) / (1 + VOTE_TIE)


def mask_blend(probs: np.ndarray, ids, table: pd.DataFrame, comp: dict, split: str) -> np.ndarray:
    """A blend ``(rows, n_classes)`` of masked members (:func:`postprocess`), masked again: a
    blend that fits its own model (``stacking``) or works in logs (``geometric``) gives a masked
    class some probability back; with ``decision.group_aggregate`` a group's rows are aggregated
    again, as :func:`postprocess` leaves them. ``ids``: the rows' ids, all in ``table``; unchanged
    without ``decision.mask``. Raises as :func:`apply_masks`."""
    decision = comp.get("decision") or {}
    if not decision.get("mask"):
        return probs
    rows = table.set_index("id").loc[list(ids)].reset_index()
    masked = apply_masks(probs, rows, comp, f"decision.mask ({split})")[0]
    how = decision.get("group_aggregate")  # then as postprocess: a group's rows share its probabilities again
    return aggregate_groups(masked, rows["group"] if how else None, comp, how)


def postprocess_keys(comp: dict) -> list[str]:
    """The keys of the competition's ``decision`` section that :func:`postprocess` applies and
    ``comp`` sets, of ``mask``, ``slice_prior`` and ``group_aggregate``."""
    return [k for k in ("mask", "slice_prior", "group_aggregate") if (comp.get("decision") or {}).get(k)]


def scored_after(comp: dict) -> list[str]:
    """What 04 and the leaderboard score a member's OOF rows after, of the competition's
    ``decision`` section: :func:`postprocess_keys` and a fixed ``threshold``
    (:func:`lib.data.tasks.fixed_decision`), where 02 scores the models' own probabilities at 0.5."""
    return postprocess_keys(comp) + (["threshold"] if tasks.fixes_a_cut(comp) else [])  # (0.5: the default)


def postprocessed_scores(oof: pd.DataFrame, table: pd.DataFrame, comp: dict) -> dict | None:
    """An experiment's OOF scores ``{"by": [decision keys set], "oof": {metric: value}}`` after
    :func:`postprocess` (label masks, slice prior shift, group aggregation) and at a fixed
    ``decision.threshold``, as 04_ensemble.py and leaderboard.py score it; ``None`` when ``comp``
    sets none of :func:`scored_after` (the competition as stage 00 wrote it last). ``oof``: an OOF
    table (id, fold, target, probability columns), its ids in ``table`` (``folds.csv``). Raises as
    :func:`postprocess` (e.g. ``InputError`` for a row whose every class is masked)."""
    by = scored_after(comp)
    if not by:
        return None
    y = with_slices(tasks.class_index(oof["target"], comp), table, oof["id"])
    probs = postprocess([oof], table, comp, "folds")[0][0]
    return {"by": by, "oof": score_all(comp["metrics"], y, probs, comp, tasks.fixed_decision(comp))}


def postprocess(frames: list[pd.DataFrame], table: pd.DataFrame, comp: dict, split: str,
                 priors: dict | None = None) -> tuple[list[np.ndarray], int]:
    """The members' probability arrays after the label masks, the slice prior shift
    (``decision.slice_prior``: OOF rows with their other folds' priors, test rows with
    ``priors``) and group aggregation (each recording gets its group's probabilities); returns
    ``(arrays (rows, n_classes) in the frames' row order, rows masked)``. ``frames``: OOF or test
    prediction tables with the same ids, all of them in ``table`` (``folds.csv``/``test.csv``), to
    which they are matched by id; what 04 and the leaderboard score. Raises ``MissingArtifact`` when
    ``decision.group_aggregate`` is set and ``table`` has no group column."""
    cols = tasks.prob_columns(comp)
    rows = table.set_index("id").loc[frames[0]["id"]].reset_index()
    decision = comp.get("decision") or {}
    how = decision.get("group_aggregate")
    if how and "group" not in rows:
        raise MissingArtifact(f"{split}.csv has no group column for decision.group_aggregate: run 00_prepare.py again")
    out, masked = [], np.zeros(len(rows), bool)
    for f in frames:
        p, moved = apply_masks(f[cols].to_numpy(dtype=float), rows, comp, f"decision.mask ({split})")
        masked |= moved  # rows any member's probabilities moved
        if decision.get("slice_prior"):
            p = slice_prior_shift(p, rows, comp, priors, table)  # (table: OOF rows' priors; test: priors)
        out.append(aggregate_groups(p, rows["group"] if how else None, comp, how))
    return out, int(masked.sum())


def _label_metric(comp: dict) -> str | None:
    """The metric that decisions are fitted for: the competition metric when it scores decisions,
    else the first of ``metrics`` that does (``None`` when none does)."""
    names = [comp["metric"]] + [m for m in comp["metrics"] if m != comp["metric"]]
    return next((m for m in names if get_metric(m, comp).uses == "labels"), None)


ADOPTION_ALPHA = 0.025
"""Significance level of the one-sided corrected paired t-test a fitted decision must pass to be
adopted (:func:`adoption_test`; one-sided 2.5 %: the usual two-sided 5 % test)."""


def _objective(metric: str, y, probs, comp):
    s = sign(metric, comp)
    return lambda decision: s * score_all([metric], y, probs, comp, decision)[metric]


def fit_decision(y, probs: np.ndarray, comp: dict, metric: str) -> dict:
    """The decision that maximises ``metric`` (a decision metric) on ``(y, probs)``: binary, the
    threshold on p(positive) among the midpoints of the sorted distinct probabilities (at most
    400 quantiles) and the two extremes: 0 (every row positive, on any data: only a row whose
    positive class a mask made impossible, p = 0, stays negative) and 1 (every row negative);
    multi-label, one threshold per class from :data:`THRESHOLD_GRID` by one sweep of coordinate
    ascent over the classes on the whole metric; multiclass, one bias per
    class from :data:`BIAS_GRID` by coordinate ascent (two sweeps, class 0 fixed at 0). Ties
    keep the value closest to the default. Returns ``{"threshold"}``, ``{"thresholds"}`` or
    ``{"bias"}`` (see :func:`lib.data.tasks.decide`)."""
    if comp["task"] == "binary":
        f = _objective(metric, y, probs, comp)
        p = np.unique(probs[:, comp["classes"].index(comp["positive"])])
        mids = (p[1:] + p[:-1]) / 2 if len(p) > 1 else np.array([0.5])
        if len(mids) > 400:
            mids = np.unique(np.quantile(mids, np.linspace(0, 1, 400)))
        mids = np.concatenate([mids, [0.0, 1.0]])  # all positive (p > 0), all negative (p > 1: none)
        cands = np.concatenate([[0.5], mids[np.argsort(np.abs(mids - 0.5), kind="stable")]])
        values = [f({"threshold": float(t)}) for t in cands]
        return {"threshold": float(cands[int(np.argmax(values))])}
    key, grid, default, first = (("thresholds", THRESHOLD_GRID, 0.5, 0) if comp["task"] == "multilabel"
                                 else ("bias", BIAS_GRID, 0.0, 1))  # class 0's bias stays 0: only differences count
    return {key: _coordinate_ascent(_objective(metric, y, probs, comp), key, grid, default, first,
                                    probs.shape[1], sweeps=1 if key == "thresholds" else 2)}


def _coordinate_ascent(f, key: str, grid, default: float, first: int, n: int, sweeps: int) -> list[float]:
    """Per-class values (from ``grid``, tried nearest ``default`` first) maximising ``f({key:
    values})`` one class at a time from class ``first`` on, ``sweeps`` times over the classes."""
    grid = grid[np.argsort(np.abs(grid - default), kind="stable")]
    current = np.full(n, default)
    best = f({key: current.tolist()})
    for _ in range(sweeps):
        for k in progress(range(first, n), desc=key, unit="class", leave=False, disable=n < 20):
            for v in grid:
                trial = current.copy()
                trial[k] = v
                value = f({key: trial.tolist()})
                if value > best + 1e-12:
                    best, current = value, trial
    return [float(v) for v in current]


def choose_decision(y, probs: np.ndarray, folds, comp: dict) -> dict:
    """Fit the competition's ``decision`` section on OOF ``probs`` ``(rows, n_classes)`` with
    encoded ``y`` and each row's ``folds``, and estimate it fairly.

    Returns ``{"decision": dict or None (the default decision), "metric", "how" (auto / fixed /
    default / none), "scores": {"default", "fitted_in_sample", "cross_fitted"}, "note"}``, and with
    ``auto`` ``"fitted"`` (the decision fitted on every OOF row, adopted or not) and ``"per_fold"``
    (each fold's, fitted on the other folds);
    ``scores`` are of ``metric``, the decision metric (:func:`_label_metric`). ``decision`` is
    what the submission uses: with ``threshold: auto`` (or ``class_bias: true``) the fit on every
    OOF row, kept only when its cross-fitted score beats the default decision's and its mean
    held-out gain per fold passes a one-sided corrected paired t-test over the folds (:func:`adoption_test`;
    ``"gain": {"mean", "se", "bar", "per_fold", "adopted"}`` says by how much, and ``"note"`` says
    it in words); a fixed threshold is used as given (:func:`lib.data.tasks.fixed_decision`).
    """
    cfg = comp.get("decision") or {}
    metric = _label_metric(comp)
    if metric is None:
        return {"decision": None, "metric": None, "how": "none", "scores": {},
                "note": "no metric scores decisions: the default decision is used"}
    default = score_all([metric], y, probs, comp)[metric]
    if comp["task"] == "multiclass" and not cfg.get("class_bias"):
        return {"decision": None, "metric": metric, "how": "default", "scores": {"default": default},
                "note": "the most probable class; decision.class_bias: true fits a bias per class on OOF"}
    if (decision := tasks.fixed_decision(comp)) is not None:
        fixed_score = score_all([metric], y, probs, comp, decision)[metric]
        return {"decision": decision, "metric": metric, "how": "fixed",
                "scores": {"default": default, "fixed": fixed_score}, "note": "fixed in the config"}
    folds = np.asarray(folds)
    if len(np.unique(folds)) < 2:
        return {"decision": None, "metric": metric, "how": "default", "scores": {"default": default},
                "note": "OOF rows of a single fold: a fitted decision cannot be checked on held-out folds"}
    decisions, pred, gains = {}, np.empty_like(tasks.decide(probs, comp)), []
    s = sign(metric, comp)
    for k in np.unique(folds):
        rows = folds == k
        decisions[int(k)] = fit_decision(y[~rows], probs[~rows], comp, metric)
        pred[rows] = tasks.decide(probs[rows], comp, decisions[int(k)])
        gains.append(s * (score_all([metric], y[rows], probs[rows], comp, decisions[int(k)])[metric]
                          - score_all([metric], y[rows], probs[rows], comp)[metric]))
    cross = get_metric(metric, comp)(y, pred, comp)
    final = fit_decision(y, probs, comp, metric)
    in_sample = score_all([metric], y, probs, comp, final)[metric]
    sizes = np.unique(folds, return_counts=True)[1]
    gains = np.asarray(gains, dtype=float)
    defined = np.isfinite(gains)  # a fold whose held-out rows leave the metric undefined (one class) is no evidence
    gain, se, bar = adoption_test(gains[defined], float(np.mean(sizes[defined] / (len(folds) - sizes[defined])))
                                  if defined.any() else None)
    beats, passes = bool(s * (cross - default) > 1e-12), bool(gain > bar)
    use = beats and passes
    note = _adoption_note(beats, passes, gain, se, bar)
    if not defined.all():
        note += (f" ({int((~defined).sum())} of {len(gains)} folds left out of the test: {metric} is undefined on "
                 f"their held-out rows, e.g. rows of one class)")
    finite = lambda v: float(v) if np.isfinite(v) else None  # noqa: E731  (JSON has no NaN or infinity)
    return {"decision": final if use else None, "fitted": final, "metric": metric, "how": "auto",
            "scores": {"default": default, "fitted_in_sample": in_sample, "cross_fitted": cross},
            "gain": {"mean": finite(gain), "se": finite(se), "bar": finite(bar), "per_fold": [finite(g) for g in gains],
                     "adopted": use}, "per_fold": decisions, "note": note}


def decision_words(decision: dict | None, comp: dict) -> str:
    """A decision as 04 and the ensemble report say it: ``default``, ``threshold 0.31``, or one
    value per class, named (``thresholds: wheeze 0.2, stridor 0.5``; ``bias: ...``), so that a
    list is never read in another class order than its own (``comp["classes"]``)."""
    if not decision:
        return "default"
    if "threshold" in decision:
        return f"threshold {decision['threshold']:.4g}"
    key = "thresholds" if "thresholds" in decision else "bias"
    return f"{key}: " + ", ".join(f"{c} {v:.4g}" for c, v in zip(comp["classes"], decision[key]))


def in_sample_note(decision: dict | None) -> str:
    """What a blend's decision-metric scores mean when ``decision`` (:func:`choose_decision`'s
    result, as ``ensemble.json`` holds it) adopted a fitted decision: measured with the decision
    fitted on those same OOF rows (in-sample, optimistic), and the cross-fitted score of the
    decision metric beside it. ``""`` otherwise."""
    d = decision or {}
    if d.get("how") != "auto" or not d.get("decision"):
        return ""
    return (f" (decision metrics at the decision fitted on these OOF rows, in-sample; cross-fitted "
            f"{d['metric']} {d['scores']['cross_fitted']:.4f})")


def _adoption_note(beats: bool, passes: bool, gain: float, se: float, bar: float) -> str:
    """The report's sentence on a fitted decision: its mean held-out gain per fold, the gain's
    standard error, the bar of :func:`adoption_test` and whether it was adopted (and why not)."""
    if not np.isfinite(bar):
        what = "fewer than 2 folds' held-out rows can judge it"
    else:
        what = (f"its mean held-out gain per fold {gain:+.4f} (s.e. {se:.4f}) is "
                + ("no gain" if gain <= 0 else f"{'above' if passes else 'within'} the fold-to-fold noise")
                + f" (bar {bar:.4f}: one-sided corrected paired t-test over the folds at {ADOPTION_ALPHA})")
    if beats and passes:
        return f"fitted on OOF and adopted: {what}"
    why = "" if beats else "; its pooled cross-fitted score does not beat the default decision's"
    return f"fitted on OOF, not adopted: {what}{why}: the default decision is kept"


def adoption_test(gains: np.ndarray, test_to_train: float | None = None,
                  alpha: float = ADOPTION_ALPHA) -> tuple[float, float, float]:
    """Whether a fitted decision's per-fold held-out ``gains (folds,)`` over the default decision
    (in the metric's better direction) are larger than the folds' noise: a one-sided corrected
    paired t-test over the folds. Returns ``(mean gain, its standard error, the gain it must
    exceed: t_(1 - alpha, folds - 1) standard errors)``; the decision is adopted when the mean
    exceeds that bar. Fewer than 2 folds: the bar is infinite (never adopted).

    The standard error is Nadeau & Bengio's: ``std(gains, ddof=1) * sqrt(1 / folds +
    test_to_train)`` (``test_to_train``: the held-out rows per fitting row, ``1 / (folds - 1)``
    for equal folds and by default), not the plain ``std / sqrt(folds)``: each fold's decision is
    fitted on rows that the other folds' fits share, so the folds' gains are positively correlated
    and the plain paired t-test adopts noise about twice as often as its level (Dietterich (1998),
    "Approximate statistical tests for comparing supervised classification learning algorithms",
    Neural Computation 10(7); the correction: Nadeau C. & Bengio Y. (2003), "Inference for the
    generalization error", Machine Learning 52(3)). ``alpha`` 0.025 one-sided is the usual
    two-sided 5 % test (as Bouckaert & Frank (2004), "Evaluating the replicability of significance
    tests for comparing learning algorithms", PAKDD, use the corrected test). Measured on labels
    independent of the scores (300 generated sets of 300 rows, 5 folds, tests/test_decisions_rule.py
    for 20 of them): fitted thresholds, per-class thresholds and class biases adopted 1-3 % of the
    time; the plain paired t-test at 5 % adopts 9-11 %.

    Not the one-standard-error rule (keep the simpler choice unless the other beats it by more
    than one s.e.; Breiman, Friedman, Olshen & Stone (1984) "Classification and Regression Trees",
    ch. 3; Hastie, Tibshirani & Friedman (2009) "The Elements of Statistical Learning", 2nd ed.,
    §7.10): the same comparison with a bar of one plain s.e., which that noise clears 25-27 % of
    the time (P(t_4 > 1) = 0.19 even for independent folds)."""
    from scipy.stats import t

    gains = np.asarray(gains, dtype=float)
    k = len(gains)
    if k < 2:
        return float(gains.mean()) if k else 0.0, float("inf"), float("inf")
    ratio = 1 / (k - 1) if test_to_train is None else test_to_train
    se = float(gains.std(ddof=1) * np.sqrt(1 / k + ratio))
    return float(gains.mean()), se, float(t.ppf(1 - alpha, k - 1) * se)
