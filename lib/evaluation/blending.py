"""Blending methods of stage 04, each fitted on OOF predictions and estimated fairly.

A method maps the members' probabilities, a list of ``(rows, n_classes)`` arrays, to one
``(rows, n_classes)`` array. Those that learn something from the OOF rows (``softmax``,
``normalised``, ``fitted``, ``hill_climb``, ``stacking``) are scored *cross-fitted*
(:func:`cross_fitted`): for each fold they are fitted on the other folds' OOF rows and applied
to that fold's, so that every method's OOF score is a held-out one. The test set gets the
method fitted on every OOF row.

* ``single``: the best member alone (by the competition metric, ties to the lower log loss;
  cross-fitted: chosen on the other folds). Listed first, so that ``best`` takes a blend only
  when its cross-fitted score beats the best member's.
* ``softmax``: the seed's weighting, ``w_i = exp(s_i / T) / sum_j exp(s_j / T)`` over the
  members' OOF scores ``s`` on the competition metric (negated when lower is better). The
  temperature matters: with ``T = 1`` accuracies of 0.778 and 0.792 get 0.4965/0.5035, a plain
  mean; the default ``T = 0.01`` gives each 0.01 of score a factor e (0.20/0.80 there).
* ``normalised``: ``w_i = s_i / sum_j s_j`` (``1/s_i`` normalised when lower is better).
* ``equal``: the plain mean.
* ``rank``: the mean of each class column's ranks (scipy ``rankdata``, ties averaged) divided by
  the number of rows, so in (0, 1] (for ranking metrics such as AUROC), then renormalised so that
  a multiclass row sums to 1; binary: p(positive) is the positive column's mean rank divided by
  rows + 1, in (0, 1), and the other class gets 1 minus it; multi-label: each class's mean rank,
  in (0, 1]. Ranks are taken within the rows blended (the test set's among the test rows). Its
  values keep the members' mean order (binary, multi-label: exactly; multiclass: up to the row
  renormalisation) but are not calibrated probabilities: it is not offered when a metric scores
  probabilities (``log_loss``, a custom one) or the submission holds probabilities
  (:func:`rank_refusal`).
* ``geometric``: the geometric mean (Freesound Audio Tagging 2019, 1st place, lRomul/
  argus-freesound): the mean of the members' log-probabilities, renormalised (softmax of the
  mean log p for single-label tasks, a sigmoid of the mean logit per class for multi-label).
* ``fitted``: non-negative weights summing to 1 that minimise the log loss of the weighted mean
  on OOF rows (scipy SLSQP; the log loss because it is smooth where accuracy or F1 are not).
* ``hill_climb``: greedy forward selection with replacement (Caruana et al. 2004, "Ensemble
  selection from libraries of models", ICML): start from the best member, add the member that
  most improves the competition metric of the mean, at most :data:`HILL_CLIMB_STEPS` times
  (:data:`HILL_CLIMB_PATIENCE` without a gain end it); the best prefix's member counts are the
  weights. Ties on the metric go to the lower log loss of the mean (not to the first member).
* ``stacking``: a logistic regression on the members' log-probabilities (scikit-learn;
  multinomial for multiclass, one per class on that class's columns for multi-label); a class
  without training rows (multi-label: a label never or always on in them) keeps the members'
  mean probability (multiclass: the rest shares what it leaves).
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, logit, softmax
from scipy.stats import rankdata
import torch  # noqa: F401  before scikit-learn (lib/data/folds.py says why)
from sklearn.linear_model import LogisticRegression

from ..core.errors import ConfigError
from ..data import tasks
from .metrics import base_metric, get_metric, score_all, sign

METHODS = ("best", "single", "softmax", "normalised", "equal", "rank", "geometric", "fitted", "hill_climb",
           "stacking")
"""Names of the blending methods; ``best`` picks the one with the best cross-fitted OOF score."""
FITTED = ("single", "softmax", "normalised", "fitted", "hill_climb", "stacking")
"""The methods that learn from OOF rows (scored cross-fitted)."""
HILL_CLIMB_STEPS = 50
HILL_CLIMB_PATIENCE = 10
"""Hill climbing stops after this many additions without a better score (the best prefix is kept)."""
EPS = 1e-7


def _mean(probs: list[np.ndarray], weights) -> np.ndarray:
    return np.tensordot(np.asarray(weights, dtype=float), np.stack(probs), axes=1)


def _member_scores(probs, y, comp, metric) -> np.ndarray:
    """Each member's ``metric`` on ``y``, at a fixed ``decision.threshold`` as 04 scores members
    (:func:`lib.data.tasks.fixed_decision`); an undefined score (NaN: e.g. AUROC on rows of one
    class) becomes the worst possible, so that it never wins a weight or a choice."""
    s = np.array([score_all([metric], y, p, comp, tasks.fixed_decision(comp))[metric] for p in probs], dtype=float)
    return np.where(np.isfinite(s), s, -np.inf if get_metric(metric, comp).higher_is_better else np.inf)


def score_weights(scores, method: str = "softmax", temperature: float = 0.01, higher_is_better: bool = True) -> np.ndarray:
    """Weights ``(n_models,)`` summing to 1 from OOF ``scores`` ``(n_models,)``: ``softmax``
    (with ``temperature``), ``normalised`` or ``equal`` (see the module docstring).
    Raises ``ConfigError`` for an unknown method, a non-positive temperature, or (``normalised``)
    scores that are not all positive."""
    s = np.asarray(scores, dtype=float)
    if method == "softmax":
        if temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        if not np.isfinite(s).any():  # no member has a defined score: nothing to weight by
            return np.full(len(s), 1.0 / len(s))
        z = s if higher_is_better else -s
        with np.errstate(over="ignore"):  # shifted first: a tiny temperature gives 1 to the best, not NaN
            return softmax((z - z[np.isfinite(z)].max()) / temperature)
    if method == "normalised":
        if not np.isfinite(s).all() or (s <= 0).any():
            raise ConfigError(f"normalised weights need positive finite scores, got {s.tolist()}")
        s = s if higher_is_better else 1 / s
        return s / s.sum()
    if method == "equal":
        return np.full(len(s), 1.0 / len(s))
    raise ConfigError(f"weighting {method!r} is not one of softmax, normalised, equal")


def _fit_log_loss_weights(probs, y, comp) -> np.ndarray:
    """Simplex weights minimising the mean log loss (binary cross-entropy per class for
    multi-label) of the weighted mean of ``probs``: SLSQP with the loss's exact gradient and a
    tight tolerance (the loss is convex in the weights; with scipy's default tolerance and a
    finite-difference gradient it stopped at its start, equal weights, when the members were near
    chance and the loss nearly flat), and no worse than any single member."""
    onehot = np.asarray(y, float) if comp["task"] == "multilabel" else np.eye(probs[0].shape[1])[y]
    stack = np.clip(np.stack(probs), EPS, 1 - EPS)  # (members, rows, classes)
    multilabel = comp["task"] == "multilabel"

    def loss_and_grad(w):
        p = np.clip(np.tensordot(w, stack, axes=1), EPS, 1 - EPS)
        if multilabel:
            d = onehot / p - (1 - onehot) / (1 - p)  # d(log-likelihood)/dp
            return -np.mean(onehot * np.log(p) + (1 - onehot) * np.log(1 - p)), -np.mean(stack * d, axis=(1, 2))
        return -np.mean(np.sum(onehot * np.log(p), 1)), -np.mean(np.sum(stack * (onehot / p), 2), axis=1)

    n = len(probs)
    res = minimize(loss_and_grad, np.full(n, 1 / n), jac=True, method="SLSQP", bounds=[(0, 1)] * n,
                   constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1, "jac": lambda w: np.ones_like(w)}],
                   options={"ftol": 1e-12, "maxiter": 500})
    w = np.clip(np.nan_to_num(res.x), 0, None)
    candidates = [*np.eye(n), *([w / w.sum()] if w.sum() > 0 else [])]
    return min(candidates, key=lambda c: np.nan_to_num(loss_and_grad(c)[0], nan=np.inf))


def _hill_climb(probs, y, comp, metric) -> np.ndarray:
    """Caruana et al. (2004) ensemble selection with replacement; returns member weights. Ties on
    ``metric`` (common for a thresholded metric on a few hundred rows) go to the lower log loss of
    the mean, so the weights do not depend on the order the members were named in (they did:
    heart-sound, worst-database MAcc 0.714 or 0.744 by the order of two members)."""
    s, decision = sign(metric, comp), tasks.fixed_decision(comp)

    def f(counts) -> tuple[float, float]:  # (metric in its better direction, -log loss): compared in that order
        scores = score_all([metric, "log_loss"], y, _mean(probs, counts / counts.sum()), comp, decision)
        return tuple(-np.inf if np.isnan(v) else v for v in (s * scores[metric], -scores["log_loss"]))

    one_hot = np.eye(len(probs))
    counts = one_hot[max(range(len(probs)), key=lambda i: f(one_hot[i]))].copy()
    best, best_counts, since = f(counts), counts.copy(), 0
    for _ in range(HILL_CLIMB_STEPS):
        if since >= HILL_CLIMB_PATIENCE:
            break
        trials = [f(counts + one_hot[i]) for i in range(len(probs))]
        i = max(range(len(probs)), key=lambda i: trials[i])
        counts[i] += 1
        since += 1
        if trials[i][0] > best[0] + 1e-12 or (trials[i][0] >= best[0] - 1e-12 and trials[i][1] > best[1] + 1e-12):
            best, best_counts, since = trials[i], counts.copy(), 0
    return best_counts / best_counts.sum()


def _stack_features(probs, k=None) -> np.ndarray:
    cols = [np.log(np.clip(p if k is None else p[:, [k]], EPS, 1)) for p in probs]
    return np.concatenate(cols, axis=1)


class Blender:
    """One blending ``method`` (see :data:`METHODS`; not ``best``), fitted with :meth:`fit` on OOF
    members ``probs`` (list of ``(rows, n_classes)``) with encoded ``y``, applied with
    :meth:`apply`. ``weights`` (``(n_members,)`` or ``None`` for ``rank``/``geometric``'s
    equal weights and ``stacking``) describe the fit. Raises ``ConfigError`` for an unknown method.
    """

    def __init__(self, method: str, comp: dict, metric: str | None = None, temperature: float = 0.01):
        if method not in METHODS or method == "best":
            raise ConfigError(f"blending method {method!r} is not one of {', '.join(METHODS[1:])}")
        self.method, self.comp, self.temperature = method, comp, temperature
        self.metric = metric or comp["metric"]
        self.weights, self.models = None, None

    def fit(self, probs: list[np.ndarray], y) -> Blender:
        m, comp = self.method, self.comp
        if m == "single":  # ties on the metric go to the lower log loss, as in hill climbing
            s = sign(self.metric, comp) * _member_scores(probs, y, comp, self.metric)
            loss = _member_scores(probs, y, comp, "log_loss")
            self.weights = np.eye(len(probs))[max(range(len(probs)), key=lambda i: (s[i], -loss[i]))]
        elif m in ("softmax", "normalised", "equal"):
            higher = get_metric(self.metric, comp).higher_is_better
            self.weights = score_weights(_member_scores(probs, y, comp, self.metric), m, self.temperature, higher)
        elif m in ("rank", "geometric"):
            self.weights = np.full(len(probs), 1 / len(probs))
        elif m == "fitted":
            self.weights = _fit_log_loss_weights(probs, y, comp)
        elif m == "hill_climb":
            self.weights = _hill_climb(probs, y, comp, self.metric)
        else:  # stacking
            if comp["task"] == "multilabel":
                self.models = [LogisticRegression(max_iter=1000).fit(_stack_features(probs, k), np.asarray(y)[:, k])
                               if 0 < np.asarray(y)[:, k].sum() < len(y) else float(np.asarray(y)[:, k].mean())
                               for k in range(probs[0].shape[1])]
            else:
                self.models = LogisticRegression(max_iter=1000).fit(_stack_features(probs), y)
        return self

    def state(self) -> dict:
        """What :meth:`apply` needs, as plain JSON values: method, weights, and for ``stacking``
        the logistic regressions' ``coef``, ``intercept``, ``classes`` (multi-label: one per
        class, or the constant probability of a class with one label value)."""
        lr = lambda m: {"coef": m.coef_.tolist(), "intercept": m.intercept_.tolist(), "classes": m.classes_.tolist()}
        models = None if self.models is None else (
            [lr(m) if hasattr(m, "coef_") else float(m) for m in self.models] if isinstance(self.models, list)
            else lr(self.models))
        return {"method": self.method, "temperature": self.temperature, "metric": self.metric,
                "weights": None if self.weights is None else self.weights.tolist(), "models": models}

    @classmethod
    def from_state(cls, state: dict, comp: dict) -> Blender:
        """The fitted blender that :meth:`state` describes (no pickles: stackers are rebuilt
        from their coefficients)."""
        b = cls(state["method"], comp, state["metric"], state["temperature"])
        b.weights = None if state["weights"] is None else np.asarray(state["weights"], dtype=float)

        def lr(d):
            m = LogisticRegression()
            m.coef_, m.intercept_, m.classes_ = (np.asarray(d[k]) for k in ("coef", "intercept", "classes"))
            return m

        models = state["models"]
        if models is not None:
            b.models = [lr(m) if isinstance(m, dict) else m for m in models] if isinstance(models, list) else lr(models)
        return b

    def apply(self, probs: list[np.ndarray]) -> np.ndarray:
        """The blend ``(rows, n_classes)`` of members ``probs`` (each ``(rows, n_classes)``)."""
        m, task = self.method, self.comp["task"]
        if m == "rank":
            if task == "binary":  # the positive column's mean rank, in (0, 1); the other column 1 - it
                pos = self.comp["classes"].index(self.comp["positive"])
                r = _mean([rankdata(p[:, pos]) / (len(p) + 1) for p in probs], self.weights)
                return np.stack([1 - r, r] if pos == 1 else [r, 1 - r], 1)
            out = _mean([rankdata(p, axis=0) / len(p) for p in probs], self.weights)
            return out if task == "multilabel" else out / out.sum(1, keepdims=True)
        if m == "geometric":
            if task == "multilabel" or task == "binary":
                z = _mean([logit(np.clip(p, EPS, 1 - EPS)) for p in probs], self.weights)
                out = expit(z)
                return out if task == "multilabel" else out / out.sum(1, keepdims=True)
            return softmax(_mean([np.log(np.clip(p, EPS, 1)) for p in probs], self.weights), axis=1)
        if m == "stacking":
            if task == "multilabel":
                return np.stack([mdl.predict_proba(_stack_features(probs, k))[:, 1] if hasattr(mdl, "predict_proba")
                                 else np.mean([p[:, k] for p in probs], 0)  # (a label never or always on in the
                                 for k, mdl in enumerate(self.models)], 1)  # fit: the members', not 0 or 1)
            out = np.mean(probs, axis=0)  # a class without rows to fit on keeps the members' mean (was exactly 0)
            seen = np.zeros(out.shape[1], bool)
            seen[self.models.classes_] = True
            out[:, seen] = self.models.predict_proba(_stack_features(probs)) * out[:, seen].sum(1, keepdims=True)
            return out
        return _mean(probs, self.weights)


def cross_fitted(method: str, probs: list[np.ndarray], y, folds, comp: dict, temperature: float = 0.01) -> np.ndarray:
    """The OOF blend ``(rows, n_classes)`` of ``method`` with every fold's rows blended by the
    method fitted on the other folds (methods that fit nothing are applied once to all rows)."""
    if method not in FITTED:
        return Blender(method, comp, temperature=temperature).fit(probs, y).apply(probs)
    folds, y = np.asarray(folds), y if isinstance(y, np.ndarray) else np.asarray(y)  # SlicedLabels stay
    out = np.zeros_like(probs[0], dtype=float)
    for k in np.unique(folds):
        rows = folds == k
        b = Blender(method, comp, temperature=temperature).fit([p[~rows] for p in probs], y[~rows])
        out[rows] = b.apply([p[rows] for p in probs])
    return out


RANKING_METRICS = ("auroc", "average_precision", "lwlrap", "padded_cmap")
"""The built-in metrics of probabilities that read only the order of the scores, not their values
as probabilities: a rank blend may be scored by them. Every other metric that reads probabilities
(``log_loss``, a ``custom_metrics`` entry with ``uses: probs``, which may score calibration)
needs calibrated probabilities, which a rank blend does not give."""


def rank_refusal(comp: dict) -> str | None:
    """Why the ``rank`` blend cannot serve competition ``comp`` (one sentence), or ``None`` when
    it can: a metric in ``metric``/``metrics`` (per slice too: ``worst_log_loss``) reads
    probabilities and is not in :data:`RANKING_METRICS`, the submission holds probabilities
    (``submission.format``: ``probability`` or ``probabilities``), or ``decision.threshold`` fixes
    a cut other than 0.5 (on a rank blend's output, 0.3 is a quantile, not a probability)."""
    names = dict.fromkeys([comp["metric"], *(comp.get("metrics") or [])])
    needs = [m for m in names if get_metric(m, comp).uses == "probs" and base_metric(m) not in RANKING_METRICS]
    fmt = (comp.get("submission") or {}).get("format")
    fixed = (comp.get("decision") or {}).get("threshold", "auto")
    cut = tasks.fixes_a_cut(comp)
    if not needs and fmt not in ("probability", "probabilities") and not cut:
        return None
    why = ([f"the metric(s) {', '.join(needs)} score probabilities"] if needs else []) + (
        [f"the submission (format: {fmt}) holds probabilities"] if fmt in ("probability", "probabilities") else []) + (
        [f"decision.threshold {fixed} cuts probabilities"] if cut else [])
    return (f"blending method 'rank' is not offered here: its output keeps the members' order but is not a "
            f"calibrated probability, and {' and '.join(why)}")


def offered_methods(comp: dict) -> tuple[str, ...]:
    """The blending methods :func:`compare_methods` tries for competition ``comp``: every method
    but ``best``, and but ``rank`` when :func:`rank_refusal` gives a reason."""
    return tuple(m for m in METHODS[1:] if not (m == "rank" and rank_refusal(comp)))


def compare_methods(probs: list[np.ndarray], y, folds, comp: dict, temperature: float = 0.01,
                    methods=None, post=None) -> dict:
    """Every method's (``methods``, default :func:`offered_methods`) cross-fitted OOF blend and scores
    (decisions as the config fixes them, :func:`lib.data.tasks.fixed_decision`; else the default): ``{method: {"oof": (rows,
    n_classes), "scores": {metric: value}, "blender": the Blender fitted on every row, "weights":
    its weights (n_members,) or None}}``;
    a method that cannot blend these members (``normalised`` with a score <= 0) gets ``"oof":
    None``, NaN scores and ``"error"``.
    With the OOF rows of a single fold (a partial experiment) nothing can be scored held out, so
    only the methods that fit nothing are compared. ``post``: applied to each blend before it is
    scored (04: the label masks again, :func:`lib.evaluation.decisions.mask_blend`)."""
    out, methods = {}, offered_methods(comp) if methods is None else methods
    if len(np.unique(folds)) < 2:
        methods = [m for m in methods if m not in FITTED]
    for m in methods:
        try:
            oof = cross_fitted(m, probs, y, folds, comp, temperature)
            oof = oof if post is None else post(oof)
            full = Blender(m, comp, temperature=temperature).fit(probs, y)
        except ConfigError as exc:  # e.g. normalised weights of non-positive scores: this method cannot blend them
            out[m] = {"oof": None, "scores": {k: float("nan") for k in comp["metrics"]}, "weights": None,
                      "error": str(exc)}
            continue
        out[m] = {"oof": oof, "scores": score_all(comp["metrics"], y, oof, comp, tasks.fixed_decision(comp)), "blender": full,
                  "weights": None if full.weights is None else full.weights.tolist()}
    return out


def best_method(results: dict, comp: dict, best_member: float | None = None) -> str:
    """The method of :func:`compare_methods`'s ``results`` with the best score on the competition
    metric (its direction; NaN scores never win; ties: the first in :data:`METHODS`), but
    ``single`` (when compared) where that method does not beat ``best_member``, the best member's
    own OOF score: cross-fitted, ``single`` predicts each fold with the member best on the other
    folds and can score below every member, so a blend must beat both to be taken."""
    s = sign(comp["metric"], comp)
    scored = {m: r["scores"][comp["metric"]] for m, r in results.items() if np.isfinite(r["scores"][comp["metric"]])}
    if not scored:
        raise ValueError(f"no blending method has a finite OOF {comp['metric']}")
    best = max(scored, key=lambda m: (s * scored[m], -METHODS.index(m)))
    below = best_member is not None and np.isfinite(best_member) and s * scored[best] <= s * best_member
    return "single" if below and "single" in results else best


def prob_columns_of(df, comp: dict) -> np.ndarray:
    """The ``(rows, n_classes)`` probability columns of an OOF or test prediction DataFrame."""
    return df[tasks.prob_columns(comp)].to_numpy(dtype=float)
