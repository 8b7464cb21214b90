"""A scikit-learn member: gradient boosting or logistic regression on pooled statistics of a
feature set (per channel and band: mean, std, percentiles over time) plus the scalar inputs
(audio scalars and encoded metadata), behind the same interface as the networks.

The breath-sound project's pilot was a grid-searched scikit-learn model (``../shared/DESIGN.md``
§2, §4: gradient boosting on pooled log-mel/MFCC statistics, 0.739 accuracy on the breathing
clips). :class:`ClassicalModel` is an ``nn.Module`` whose ``forward(spec, scalars)`` returns
``{"logits"}`` from the fitted estimator (``log p`` for a multiclass task, ``logit p`` for
sigmoid tasks, so the pipeline's softmax/sigmoid gives the estimator's probabilities back):
prediction, TTA, aggregation, OOF and test files, 03 and 04 treat it like any network. It is
fitted by :func:`lib.training.classical.train_fold_classical`, one fit per fold on every window of
the training recordings. The estimator travels in the state dict as ``skops`` bytes (the
``_extra_state`` entry, :meth:`get_extra_state`): plain bytes that load with
``torch.load(weights_only=True)`` and, through ``skops.io``, only as the types skops trusts and
:data:`TRUSTED_TYPES` (no code of whoever saved it runs).
"""
from __future__ import annotations

import inspect
import warnings

import numpy as np
import torch
from torch import nn

from ..core.errors import ConfigError

STATS = {"mean": None, "std": None, "min": 0.0, "max": 100.0, "p10": 10.0, "p25": 25.0, "p50": 50.0, "p75": 75.0,
         "p90": 90.0}
"""Statistics over time per channel and band; ``pNN`` (and min/max) are percentiles."""
TRUSTED_TYPES = frozenset({"sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
                           "sklearn.multiclass._ConstantPredictor"})
"""The types beyond skops' own trusted list (skops 0.14 and later: the requirements' minimum) that our
members' estimators hold (every member, task, grid and class weighting measured with skops 0.16:
gradient boosting's tree predictors, whose node arrays skops does not check: a crafted file can
crash prediction, not run code; the one-vs-rest wrapper's constant predictor of a multi-label
class never or always positive in a fold's training rows, which holds one array). Exact names, not module
prefixes: skops calls a listed name when loading, and ``builtins.exec``, ``numpy.memmap`` or
``numpy.load`` would run code or write files."""


def _foreign_types(blob: bytes) -> list[str]:
    """The types in ``skops`` bytes outside skops' trusted list and :data:`TRUSTED_TYPES` (read
    from the bytes' schema; nothing is built)."""
    import skops.io

    return [t for t in skops.io.get_untrusted_types(data=blob) if t not in TRUSTED_TYPES]


def check_stats(stats) -> None:
    """Raise ``ConfigError`` for a statistic not in :data:`STATS`."""
    for name in stats:
        if name not in STATS:
            raise ConfigError(f"model.params.stats: unknown statistic {name!r}; known: {', '.join(STATS)}")


def pooled_statistics(spec: torch.Tensor, stats) -> torch.Tensor:
    """``spec (B, C, F, T)`` -> ``(B, C * F * len(stats))`` float32 on ``spec``'s device: each
    statistic of ``stats`` (:data:`STATS`) over time for every channel and band, statistic-major
    (percentiles linearly interpolated, as ``torch.quantile``). Raises ``ConfigError`` for an
    unknown statistic."""
    check_stats(stats)
    x = spec.float().flatten(1, 2)  # (B, C*F, T)
    percentiles = [name for name in stats if STATS[name] is not None]
    if percentiles:  # one sort for all of them (the same values as one torch.quantile call each)
        q = torch.quantile(x, torch.tensor([STATS[name] / 100.0 for name in percentiles], dtype=x.dtype, device=x.device),
                           dim=-1)
    out = []
    for name in stats:
        if name == "mean":
            out.append(x.mean(-1))
        elif name == "std":
            out.append(x.std(-1, correction=0))
        else:
            out.append(q[percentiles.index(name)])
    return torch.cat(out, dim=1)


def log_prior(target: np.ndarray, task: str, weights: np.ndarray | None = None) -> list[float]:
    """The log prior of each output in ``target (rows, n_outputs)`` 0/1 (one-hot for
    ``multiclass``), each row weighted by ``weights (rows,)`` when given, in the logits' terms:
    ``log pi`` per class for ``multiclass``, ``log(pi / (1 - pi))`` per output for ``binary`` and
    ``multilabel``. An output that is never or always positive gets 0 (no correction: its
    estimator predicts a constant)."""
    pi = np.average(target.astype(float), axis=0, weights=weights)
    if task == "multiclass":
        return np.log(np.where(pi > 0, pi, 1.0)).tolist()  # an unseen class: log 1 = 0
    pi = np.where((pi > 0) & (pi < 1), pi, 0.5)  # a constant output: logit(0.5) = 0
    return (np.log(pi) - np.log1p(-pi)).tolist()


def recording_weights(groups: np.ndarray) -> np.ndarray | None:
    """Window weights ``(windows,)`` that give every recording of ``groups (windows,)`` (each
    window's recording) the same total weight, scaled to a mean of 1; ``None`` when every
    recording has as many windows (equal weights: the unweighted fit, faster)."""
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    if counts.min() == counts.max():
        return None
    weights = 1.0 / counts[inverse]
    return weights * len(weights) / weights.sum()


def _neg_log_loss(estimator, X: np.ndarray, y: np.ndarray) -> float:
    """The grid search's score: minus the log loss of ``estimator`` on ``X (n, n_features)``
    against integer classes ``y (n,)``, over every class of the training fold (0 ..
    ``max(y, estimator.classes_) + 1``), so that an inner split whose training or validation part
    lacks a rare class is still scored (probability 1e-15 for a class the estimator never saw;
    scikit-learn's ``neg_log_loss`` scores such a split NaN, with a traceback, and the search
    then picks its first value)."""
    from sklearn.metrics import log_loss

    classes = np.asarray(estimator.classes_).astype(int)
    n = int(max(classes.max(), np.max(y))) + 1
    p = np.full((len(X), n), 1e-15)
    p[:, classes] = estimator.predict_proba(X)
    return -log_loss(y, p / p.sum(1, keepdims=True), labels=np.arange(n))


def _check_grid_shape(grid) -> None:
    """Raise ``ConfigError`` unless ``grid`` maps parameter names to non-empty lists of values."""
    if not (isinstance(grid, dict) and all(isinstance(v, list) and v for v in grid.values())):
        raise ConfigError(f"model.params.grid must map parameter names to non-empty lists of values, got {grid!r}")


def _inner_folds(y: np.ndarray, groups: np.ndarray, task: str) -> tuple[str, object]:
    """The grid search's inner folds, in words, and the scikit-learn splitter: 3 (at most the
    groups) folds by recording (``GroupKFold``), or, for a single-label ``task`` where one of
    them would train without a class that ``y`` holds (one to three recordings of a rare class),
    ``StratifiedGroupKFold``, whose every inner training split then scored NaN instead."""
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    n = min(3, len(np.unique(groups)))
    plain = GroupKFold(n)
    if task == "multilabel" or np.unique(y, return_counts=True)[1].max() < n or \
            all(len(np.unique(y[tr])) == len(np.unique(y)) for tr, _ in plain.split(y, y, groups)):
        return f"{n} inner folds by recording", plain  # (scikit-learn stratifies where a class has n rows)
    return f"{n} inner folds by recording, stratified: a class is rare", StratifiedGroupKFold(n)


class ClassicalModel(nn.Module):
    """Base of the scikit-learn members (see the module docstring).

    ``stats``: the statistics pooled per channel and band (:data:`STATS`); ``grid``: ``{param:
    [values]}`` for a grid search inside the training fold (``GridSearchCV``, 3 inner folds
    grouped by recording; log loss, for multi-label tasks subset accuracy), ``None``: no search;
    ``recording_weights``: every training recording weighs the same in the fit, its windows
    ``1 / its window count`` each (else a recording of 60 s weighs twelve of 5 s). Subclasses give
    :meth:`estimator`.
    Input ``spec (B, C, F, T)`` (or a waveform ``(B, samples)`` through ``self.frontend``, set by
    :func:`lib.models.build_model`; its per-band normalisation is not applied: trees do not need
    it, the logistic regression standardises its inputs itself) and ``scalars (B, S)``.
    """

    grid_prefix = ""
    """What the estimator's own parameters are called inside it (a pipeline's step name)."""
    balance_by_prior = False
    """``class_weight="balanced"`` as a prior correction of the logits instead of sample weights
    (:meth:`fit`)."""

    def __init__(self, in_channels: int, n_scalars: int, n_outputs: int, stats=("mean", "std", "p10", "p50", "p90"),
                 grid: dict | None = None, recording_weights: bool = False):
        super().__init__()
        check_stats(stats)
        if grid is not None:
            _check_grid_shape(grid)
        self.n_outputs, self.n_scalars, self.stats, self.grid = n_outputs, n_scalars, list(stats), grid
        self.recording_weights = recording_weights
        self.frontend: nn.Module | None = None
        self.register_buffer("anchor", torch.zeros(0))  # gives the module a device
        self.fitted, self.task, self.best_params, self.log_prior = None, None, None, None

    def estimator(self, seed: int, class_weight: str | None):
        """A fresh, unfitted scikit-learn classifier (one output)."""
        raise NotImplementedError

    @classmethod
    def check_params(cls, params: dict) -> None:
        """Raise ``ConfigError`` when ``params["grid"]`` names a parameter the estimator does not
        take (with the closest name) or a value out of its range
        (:data:`lib.core.schema.PARAM_RANGES`); called when a config is loaded, before any work
        (scikit-learn would only say so in fold 0, with a traceback)."""
        from ..core.registry import did_you_mean
        from ..core.schema import param_problem

        grid = params.get("grid")
        if not grid:
            return
        _check_grid_shape(grid)
        est = cls(1, 0, 1, **{k: v for k, v in params.items() if k != "grid"}).estimator(0, None)
        n = len(cls.grid_prefix)
        names = [k[n:] for k in est.get_params() if k.startswith(cls.grid_prefix) and "__" not in k[n:]]
        own = est.get_params()[cls.grid_prefix[:-2]] if n else est  # a pipeline's step
        for name, values in grid.items():
            if name not in names:
                raise ConfigError(f"model.params.grid: {name!r} is not a parameter of {type(own).__name__}"
                                  f"{did_you_mean(name, names)}")
            for value in values:
                problem = param_problem("model", "", name, value)
                if problem:
                    raise ConfigError(f"model.params.grid.{name}: each value {problem}, got {value!r}")

    def to_spec(self, x: torch.Tensor) -> torch.Tensor:
        """The spectrogram stack of a model input: a waveform goes through the front end's
        ``transform`` (no normalisation); ``(B, C, F, T)`` is returned as is."""
        return self.frontend.transform(x) if x.dim() == 2 else x

    def features(self, x: torch.Tensor, scalars: torch.Tensor) -> np.ndarray:
        """``(B, n_features)`` float32: :func:`pooled_statistics` of the input, then the scalars."""
        with torch.no_grad():
            return torch.cat([pooled_statistics(self.to_spec(x), self.stats), scalars.float()], 1).cpu().numpy()

    def fit(self, X: np.ndarray, target: np.ndarray, groups: np.ndarray, task: str, seed: int,
            class_weight: str | None = None, log=print) -> None:
        """Fit on ``X (windows, n_features)``, ``target (windows, n_outputs)`` 0/1 (one-hot for
        multiclass), ``groups (windows,)`` (the recording of each window, so the grid search's
        inner folds never split a recording). ``task``: what the outputs are
        (:func:`lib.data.tasks.output_task`: ``multiclass`` over the fine classes of a subdivided
        competition, whose one-hot targets then have one column per fine class). Multi-label tasks
        get one estimator per label (``OneVsRestClassifier``). ``class_weight="balanced"`` is
        passed to the estimator, or, where :attr:`balance_by_prior` is set, the estimator is fitted
        unweighted and :meth:`logits` subtracts the training windows' log prior of each output
        (post-hoc logit adjustment: Saerens et al. 2002, Menon et al. 2021), which evens out the
        classes' priors as the weights aim to."""
        from sklearn.exceptions import FitFailedWarning
        from sklearn.model_selection import GridSearchCV
        from sklearn.multiclass import OneVsRestClassifier

        by_prior = class_weight == "balanced" and self.balance_by_prior
        est = self.estimator(seed, None if by_prior else class_weight)
        y = target.argmax(1) if task == "multiclass" else target[:, 0] if task == "binary" else target.astype(int)
        weights = recording_weights(groups) if self.recording_weights else None
        if weights is not None and task == "multilabel":
            raise ConfigError("model.params.recording_weights: not for multi-label tasks (scikit-learn's one-vs-rest "
                              "fit takes no sample weights here); remove it")
        self.log_prior = log_prior(target, task, weights) if by_prior else None  # the prior the weighted fit learns
        fit_params = {} if weights is None else {self.grid_prefix + "sample_weight": weights}
        prefix = ""
        if task == "multilabel":
            est, prefix = OneVsRestClassifier(est), "estimator__"
            constant = [i for i in range(y.shape[1]) if y[:, i].min() == y[:, i].max()]
            if constant:
                log(f"output(s) {constant} never or always positive in this fold's training windows: "
                    f"predicted as that constant")
        with warnings.catch_warnings():  # a constant output is said above, not as "Label i is (not) present";
            warnings.filterwarnings("ignore", "Label .* is present in all training examples")  # failed inner
            warnings.filterwarnings("ignore", category=FitFailedWarning)  # folds in the grid search's line, not
            warnings.filterwarnings("ignore", "One or more of the test scores are non-finite")  # as tracebacks
            warnings.filterwarnings("ignore", "The least populated class in y has only")  # (stratified inner folds)
            if self.grid:
                inner, cv = _inner_folds(y, groups, task)
                search = GridSearchCV(est, {prefix + self.grid_prefix + k: v for k, v in self.grid.items()},
                                      cv=cv, scoring=None if task == "multilabel" else _neg_log_loss)
                search.fit(X, y, groups=groups, **fit_params)
                est = search.best_estimator_
                self.best_params = {k.split("__")[-1]: v for k, v in search.best_params_.items()}
                failed = ~np.isfinite(search.cv_results_["mean_test_score"])
                own = inspect.signature(type(self)).parameters  # a value given (not the default) beside its grid
                unused = {k: v for k, v in getattr(self, "params", {}).items()  # (probe: unsaid)
                          if k in self.grid and k in own and v != own[k].default}
                log(f"grid search ({inner}{f'; model.params {unused} not used: the grid chooses' if unused else ''}): "
                    f"best {self.best_params}, score {search.best_score_:.4f}"
                    + (" (WARNING: every value of the grid failed on an inner fold that trained without a class: "
                       "the grid's first values were taken)" if failed.all() else f" ({failed.sum()} of the grid's "
                       f"values failed on an inner fold)" if failed.any() else ""))
            else:
                est.fit(X, y, **fit_params)
        self.fitted, self.task = est, task

    def forward(self, spec: torch.Tensor, scalars: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``{"logits": (B, n_outputs)}`` on the input's device (:meth:`logits`); see the module docstring."""
        scalars = spec.new_zeros(len(spec), 0) if scalars is None else scalars
        return {"logits": torch.as_tensor(self.logits(self.features(spec, scalars)), device=spec.device)}

    def logits(self, X: np.ndarray) -> np.ndarray:
        """``(n, n_outputs)`` float32 logits of feature rows ``X (n, n_features)``. Raises
        ``RuntimeError`` before :meth:`fit` or a state dict with an estimator was loaded."""
        if self.fitted is None:
            raise RuntimeError("the scikit-learn member is not fitted")
        p = self.fitted.predict_proba(X)
        if self.task == "multiclass":
            full = np.full((len(p), self.n_outputs), 1e-7)
            full[:, self.fitted.classes_.astype(int)] = p  # classes absent from the training fold keep ~0
            logits = np.log(np.clip(full, 1e-7, 1.0))
        else:
            p = np.clip(p[:, 1:] if self.task == "binary" else p, 1e-7, 1 - 1e-7)
            logits = np.log(p) - np.log1p(-p)
        if self.log_prior is not None:
            logits = logits - np.asarray(self.log_prior)
        return logits.astype(np.float32)

    def n_parameters(self) -> int:
        """Fitted values: coefficients of a linear model, tree nodes of boosting."""
        import sklearn.base

        def count(est) -> int:
            if hasattr(est, "estimators_"):
                return sum(count(e) for e in est.estimators_)
            if hasattr(est, "steps"):
                return count(est.steps[-1][1])
            if hasattr(est, "_predictors"):
                return sum(len(t.nodes) for trees in est._predictors for t in trees)
            return int(est.coef_.size + est.intercept_.size) if hasattr(est, "coef_") else 0

        return count(self.fitted) if isinstance(self.fitted, sklearn.base.BaseEstimator) else 0

    def get_extra_state(self):
        """The fitted estimator as ``skops`` bytes with the task and best grid parameters. Raises
        ``RuntimeError`` when the bytes hold a type :meth:`set_extra_state` would refuse, so that
        stage 02 stops at the first fold, not stage 03 after all of them."""
        import skops.io

        blob = None if self.fitted is None else skops.io.dumps(self.fitted)
        if blob is not None and (foreign := _foreign_types(blob)):
            raise RuntimeError(f"the fitted {type(self.fitted).__name__} holds types {foreign} that loading refuses "
                               f"(lib.models.classical.TRUSTED_TYPES): it could not be predicted from")
        return {"estimator": blob, "task": self.task, "best_params": self.best_params, "log_prior": self.log_prior}

    def set_extra_state(self, state) -> None:
        """Load :meth:`get_extra_state`. Raises ``ValueError``, before anything in the bytes is
        built, when they hold any type outside skops' trusted list and :data:`TRUSTED_TYPES`."""
        import skops.io

        self.task, self.best_params, blob = state["task"], state["best_params"], state["estimator"]
        self.log_prior = state.get("log_prior")  # absent from members fitted before the prior correction
        if blob is None:
            self.fitted = None
            return
        foreign = _foreign_types(blob)
        if foreign:
            raise ValueError(f"refusing to load a scikit-learn member holding types {foreign}")
        self.fitted = skops.io.loads(blob, trusted=skops.io.get_untrusted_types(data=blob))


class HistGradientBoosting(ClassicalModel):
    """``sklearn.ensemble.HistGradientBoostingClassifier`` (LightGBM-style histogram gradient
    boosting; Ke et al. 2017) on the pooled statistics; its parameters by name. Internal early
    stopping is off by default (``early_stopping=False``): its validation split would be random
    over windows, not grouped by recording. ``train.class_weights: balanced`` is a prior
    correction of the logits (:attr:`balance_by_prior`): with sample weights scikit-learn 1.9's
    boosting fitted 8x slower here (non-constant hessians; 105 s against 13 s for the 5 folds of
    heart-sound) and scored lower (OOF MAcc 0.697 against 0.730, docs/results.md)."""

    balance_by_prior = True

    def __init__(self, in_channels: int, n_scalars: int, n_outputs: int, stats=("mean", "std", "p10", "p50", "p90"),
                 grid: dict | None = None, learning_rate: float = 0.1, max_iter: int = 200, max_leaf_nodes: int = 31,
                 min_samples_leaf: int = 20, l2_regularization: float = 0.0, max_features: float = 1.0,
                 early_stopping: bool = False, recording_weights: bool = False):
        super().__init__(in_channels, n_scalars, n_outputs, stats, grid, recording_weights)
        self.params = dict(learning_rate=learning_rate, max_iter=max_iter, max_leaf_nodes=max_leaf_nodes,
                           min_samples_leaf=min_samples_leaf, l2_regularization=l2_regularization,
                           max_features=max_features, early_stopping=early_stopping)

    def fit(self, X: np.ndarray, target: np.ndarray, groups: np.ndarray, task: str, seed: int,
            class_weight: str | None = None, log=print) -> None:
        """:meth:`ClassicalModel.fit`, after a warning through ``log`` when ``X`` has fewer than
        twice ``min_samples_leaf`` rows: no tree can split then, and every prediction is the
        class prior (a tiny competition's folds; lower ``model.params.min_samples_leaf``)."""
        leaf = min((self.grid or {}).get("min_samples_leaf", [self.params["min_samples_leaf"]]))
        if len(X) < 2 * leaf:
            log(f"WARNING: {len(X)} training windows, fewer than twice min_samples_leaf ({leaf}): the trees cannot "
                f"split and predict the class prior; set model.params.min_samples_leaf to at most {max(1, len(X) // 2)}")
        super().fit(X, target, groups, task, seed, class_weight, log)

    def estimator(self, seed: int, class_weight: str | None):
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(**self.params, class_weight=class_weight, random_state=seed)


class LogisticRegression(ClassicalModel):
    """``StandardScaler`` then ``sklearn.linear_model.LogisticRegression`` (L2, lbfgs) on the pooled
    statistics; ``C`` is the inverse regularisation strength (``grid`` keys name the logistic
    regression's own parameters, e.g. ``{C: [0.01, 0.1, 1]}``)."""

    grid_prefix = "clf__"

    def __init__(self, in_channels: int, n_scalars: int, n_outputs: int, stats=("mean", "std", "p10", "p50", "p90"),
                 grid: dict | None = None, C: float = 1.0, max_iter: int = 2000, recording_weights: bool = False):
        super().__init__(in_channels, n_scalars, n_outputs, stats, grid, recording_weights)
        self.params = dict(C=C, max_iter=max_iter)

    def estimator(self, seed: int, class_weight: str | None):
        from sklearn.linear_model import LogisticRegression as LR
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        return Pipeline([("scale", StandardScaler()), ("clf", LR(**self.params, class_weight=class_weight,
                                                                 random_state=seed))])
