"""Reports a person looks at: one folder per experiment, written by stage 02 when it merges the folds.

:func:`write_report` writes under ``models/<exp>/report/``:

* ``curves.png``: training and validation loss, every competition metric on the validation
  fold, and the learning rate (log scale) per epoch, one line per fold, each fold's best epoch
  (``scores.json``'s ``best_epoch``) marked with a dot;
* ``confusion.png`` / ``confusion.csv``: the OOF confusion matrix, counts and shares of each
  true class (rows sum to 1); multi-label: one 2x2 matrix per label (no picture beyond
  :data:`MAX_CURVES` labels, the numbers are in the CSV);
* ``roc_pr.png``: ROC and precision-recall curves (binary: the positive class; otherwise one
  per class, one-vs-rest; beyond :data:`MAX_CURVES` classes grey lines and their macro mean);
* ``calibration.png``: reliability diagram and histogram of the predicted probabilities
  (binary: p(positive); multiclass: the top class's probability against being right;
  multi-label: every label pooled), with the expected calibration error (ECE);
* ``folds.csv``: the competition metrics per fold (scored again from the OOF file), best epoch,
  epochs run, validation loss, seconds; then ``mean`` and ``std`` rows;
* ``per_class.csv``: precision, recall, F1, support, AUROC and average precision per class;
* ``worst.csv``: the :data:`N_WORST` recordings predicted worst (lowest probability given to
  the true class; multi-label: highest mean log loss over the labels);
* ``report.md``: the OOF scores and tables, linking the pictures.

``python -m lib.evaluation.reports OUTPUT_DIR EXP [--to DIR]`` writes the report of a finished
experiment again from its files (into ``DIR``, by default ``/tmp/report_<EXP>``: the record's own
report folder is only written by stage 02).
"""
from __future__ import annotations

import argparse
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch  # noqa: F401  before scikit-learn (lib/data/folds.py says why)
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from ..core.utils import atomic_path, format_seconds, read_artifact_csv, write_csv
from ..data import tasks
from ..data.slices import with_slice_columns, with_slices
from .decisions import postprocessed_scores, scored_after
from .metrics import (
    base_metric,
    get_metric,
    per_class_report,
    score_all,
    score_slices,
    sign,
)

MAX_CURVES = 20
"""Most classes drawn one by one (legend, annotated confusion matrix); beyond, macro means only."""
N_WORST = 30
"""Rows of ``worst.csv``."""
FILES = ("report.md", "curves.png", "confusion.png", "confusion.csv", "roc_pr.png", "calibration.png",
         "folds.csv", "per_class.csv", "worst.csv")


def pyplot():
    """matplotlib's ``pyplot`` with the non-interactive Agg backend (no screen needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    """Save ``fig`` to ``path`` atomically (:func:`lib.core.utils.atomic_path`), close it, return ``path``."""
    plt = pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path


# --- numbers --------------------------------------------------------------------------------------------

def fold_table(oof_df: pd.DataFrame, comp: dict, scores: dict, decision: dict | None = None) -> pd.DataFrame:
    """Per-fold table: ``fold, n, best_epoch, epochs_run, valid_loss, <metric> ..., seconds``,
    the metrics scored again from the OOF rows of each fold (:func:`score_all`), the rest from
    ``scores['folds']``; then rows ``mean`` and ``std`` (sample std, as ``scores.json``)."""
    info = {int(f["fold"]): f for f in scores["folds"]}
    rows = []
    for fold, part in oof_df.groupby("fold", sort=True):
        y = with_slices(tasks.class_index(part["target"], comp), part)  # for worst_/slice_mean_ metrics
        s = score_all(comp["metrics"], y, part[tasks.prob_columns(comp)].to_numpy(), comp, decision)
        f = info.get(int(fold), {})
        rows.append({"fold": str(fold), "n": len(part), "best_epoch": f.get("best_epoch"),
                     "epochs_run": f.get("epochs_run"), "valid_loss": f.get("valid_loss"), **s,
                     "seconds": f.get("seconds")})
    table = pd.DataFrame(rows)
    numbers = table.drop(columns="fold").apply(pd.to_numeric, errors="coerce")
    summary = pd.DataFrame([numbers.mean(), numbers.std()]).assign(fold=["mean", "std"])
    return pd.concat([table, summary[table.columns]], ignore_index=True)


def _count(v) -> str:
    """An epoch number or count as a table cell: ``1``, not ``1.0000`` (a mean: one decimal)."""
    return "" if pd.isna(v) else str(int(v)) if float(v).is_integer() else f"{v:.1f}"


def confusion_table(y: np.ndarray, pred: np.ndarray, comp: dict) -> pd.DataFrame:
    """Long-format confusion counts: ``true, predicted, count, row_share`` per pair of classes
    (``row_share``: count / the true class's rows, NaN for a class without rows); multi-label:
    ``class, true, predicted (0/1), count, row_share`` per label."""
    classes = comp["classes"]
    if comp["task"] == "multilabel":
        rows = []
        for k, c in enumerate(classes):
            cm = confusion_matrix(y[:, k], pred[:, k], labels=[0, 1])
            share = cm / np.where(cm.sum(1, keepdims=True) > 0, cm.sum(1, keepdims=True), np.nan)
            rows += [{"class": c, "true": t, "predicted": p, "count": int(cm[t, p]), "row_share": share[t, p]}
                     for t in (0, 1) for p in (0, 1)]
        return pd.DataFrame(rows)
    cm = confusion_matrix(y, pred, labels=range(len(classes)))
    share = cm / np.where(cm.sum(1, keepdims=True) > 0, cm.sum(1, keepdims=True), np.nan)
    return pd.DataFrame([{"true": classes[t], "predicted": classes[p], "count": int(cm[t, p]),
                          "row_share": share[t, p]} for t in range(len(classes)) for p in range(len(classes))])


def class_table(y: np.ndarray, probs: np.ndarray, pred: np.ndarray, comp: dict) -> pd.DataFrame:
    """:func:`lib.evaluation.metrics.per_class_report` (``class, precision, recall, f1, support``
    per class, then ``micro`` and ``macro`` rows) with ``auroc`` and ``average_precision`` per
    class, one-vs-rest (NaN for a class with no or only positive rows; the ``macro`` row: their
    mean over the classes that have one, ``micro``: NaN)."""
    table = per_class_report(y, pred, comp)
    classes = comp["classes"]
    onehot = y if comp["task"] == "multilabel" else np.eye(len(classes), dtype=int)[y]
    for col, score in (("auroc", roc_auc_score), ("average_precision", average_precision_score)):
        values = [score(onehot[:, k], probs[:, k]) if 0 < onehot[:, k].sum() < len(onehot) else np.nan
                  for k in range(len(classes))]
        table[col] = values + [np.nan if row == "micro" else np.nanmean(values) if np.isfinite(values).any()
                               else np.nan for row in table["class"][len(classes):]]
    return table


def worst_table(oof_df: pd.DataFrame, comp: dict, decision: dict | None = None, n: int = N_WORST) -> pd.DataFrame:
    """The ``n`` recordings predicted worst: ``id, fold, target, predicted, p_true, log_loss``,
    worst first. ``p_true``: the probability of the true class (multi-label: the geometric mean
    over labels of the probability of each label's true state, ``exp(-log_loss)``);
    ``log_loss``: ``-log p_true`` (multi-label: the mean binary cross-entropy over labels;
    probabilities clipped to [1e-15, 1 - 1e-15]). Ties keep the OOF file's order."""
    probs = oof_df[tasks.prob_columns(comp)].to_numpy(dtype=float)
    y = tasks.class_index(oof_df["target"], comp)
    clipped = np.clip(probs, 1e-15, 1 - 1e-15)
    if comp["task"] == "multilabel":
        loss = -(y * np.log(clipped) + (1 - y) * np.log(1 - clipped)).mean(1)
        p_true = np.exp(-loss)
    else:
        p_true = probs[np.arange(len(y)), y]
        loss = -np.log(clipped[np.arange(len(y)), y])
    order = np.argsort(-loss, kind="stable")[:n]
    return pd.DataFrame({"id": oof_df["id"].to_numpy()[order], "fold": oof_df["fold"].to_numpy()[order],
                         "target": oof_df["target"].to_numpy()[order],
                         "predicted": tasks.probs_to_labels(probs, comp, decision=decision)[order],
                         "p_true": p_true[order], "log_loss": loss[order]})


def expected_calibration_error(truth: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """ECE: the mean over equal-width probability bins of |share true - mean p|, weighted by the
    bin's rows (the bins of sklearn's ``calibration_curve(strategy="uniform")``)."""
    which = np.searchsorted(np.linspace(0, 1, n_bins + 1)[1:-1], p)
    total = 0.0
    for b in np.unique(which):
        m = which == b
        total += m.sum() * abs(truth[m].mean() - p[m].mean())
    return float(total / len(p))


def calibration_inputs(y: np.ndarray, probs: np.ndarray, comp: dict) -> tuple[np.ndarray, np.ndarray, str, str]:
    """``(truth 0/1, p, what p is, what truth is)`` for the reliability diagram: binary,
    p(positive) against being positive; multiclass, the top class's probability against the top
    class being right; multi-label, every (row, label) pair pooled."""
    y = np.asarray(y)  # plain labels: a SlicedLabels flattened over labels would keep one slice value per row
    if comp["task"] == "binary":
        pos = comp["classes"].index(comp["positive"])
        return (y == pos).astype(int), probs[:, pos], f"p({comp['positive']})", f"share that is {comp['positive']}"
    if comp["task"] == "multilabel":
        return y.ravel(), probs.ravel(), "p(label), every label pooled", "share of labels present"
    return (probs.argmax(1) == y).astype(int), probs.max(1), "probability of the top class", "share right"


# --- pictures ---------------------------------------------------------------------------------------------

def plot_curves(history: pd.DataFrame, comp: dict, best_epochs: dict, path: Path, title: str) -> Path:
    """Per-epoch curves, one panel per series (train loss, validation loss, each metric of
    ``comp['metrics']``, learning rate on a log scale; the learning-rate panel is left out when
    the history has none, as for scikit-learn members), one line per fold; ``best_epochs``
    ``{fold: epoch}`` marked with a dot. A history of one epoch per fold (a single fit) is drawn
    against the fold instead. Losses use a log scale when they span over two decades."""
    plt = pyplot()
    series = [("train_loss", "training loss"), ("valid_loss", "validation loss")]
    series += [(m, f"validation {m} ({'higher' if get_metric(m, comp).higher_is_better else 'lower'} is better)")
               for m in comp["metrics"]]
    if history["lr"].notna().any():
        series.append(("lr", "learning rate"))
    ncols = min(3, len(series))
    nrows = math.ceil(len(series) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.4 * nrows + 0.9), squeeze=False,
                             layout="constrained")
    colors = plt.get_cmap("tab10")
    folds = sorted(history["fold"].unique())
    few = history.groupby("fold")["epoch"].count().max() <= 3
    single = history.groupby("fold")["epoch"].count().max() == 1  # one fit per fold: the folds side by side
    x = "fold" if single else "epoch"
    for ax, (col, label) in zip(axes.flat, series):
        for i, fold in enumerate(folds):
            h = history[history["fold"] == fold].sort_values("epoch")
            ax.plot(h[x], h[col], color=colors(i % 10), lw=1.4, marker="o" if few else None, ms=4,
                    label=f"fold {fold}")
            best = h[h["epoch"] == best_epochs.get(int(fold), -1)]
            ax.plot(best[x], best[col], "o", color=colors(i % 10), ms=7, mec="black", mew=0.8)
        values = history[col].to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        if col == "lr" or (col.endswith("loss") and len(values) and values.min() > 0
                           and values.max() / values.min() > 100):
            ax.set_yscale("log")
        ax.set_title(label, fontsize=11)
        ax.set_xlabel("fold (one fit each)" if single else "epoch")
        ax.grid(alpha=0.3)
        if single:
            ax.set_xticks(folds)
            ax.set_xlim(min(folds) - 0.5, max(folds) + 0.5)
        else:
            ax.xaxis.get_major_locator().set_params(integer=True)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    handles.append(plt.Line2D([], [], ls="", marker="o", color="grey", mec="black", ms=7))
    labels.append(f"best epoch ({comp['metric']})")
    spare = list(axes.flat[len(series):])
    for ax in spare:
        ax.set_axis_off()
    if spare:  # the legend in the first empty panel
        spare[0].legend(handles, labels, loc="center", frameon=False, fontsize=11)
    else:
        fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), frameon=False, fontsize=10)
    fig.suptitle(title, fontsize=13)
    return save_figure(fig, path)


def _heatmap(ax, values: np.ndarray, text: list[list[str]], vmax: float, labels, xlabel: str, ylabel: str,
             title: str, annotate: bool):
    plt = pyplot()
    im = ax.imshow(np.nan_to_num(values), cmap="Blues", vmin=0, vmax=vmax)
    n = len(labels)
    ax.set_xticks(range(values.shape[1]), labels if values.shape[1] == n else None,
                  rotation=45 if max(map(len, map(str, labels))) > 3 else 0, ha="right" if n > 3 else "center")
    ax.set_yticks(range(values.shape[0]), labels)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    if annotate:
        for (i, j), v in np.ndenumerate(np.nan_to_num(values)):
            ax.text(j, i, text[i][j], ha="center", va="center", fontsize=9 if n > 8 else 11,
                    color="white" if v > 0.6 * vmax else "black")
    plt.colorbar(im, ax=ax, fraction=0.046, pad=0.04)


def plot_confusion(table: pd.DataFrame, comp: dict, path: Path, title: str) -> Path | None:
    """The confusion matrix of :func:`confusion_table` as heatmaps: counts and shares of each true
    class side by side, annotated up to :data:`MAX_CURVES` classes; multi-label: one annotated
    2x2 matrix (count and row share) per label, or ``None`` (nothing written) beyond
    :data:`MAX_CURVES` labels."""
    plt = pyplot()
    classes = comp["classes"]
    n = len(classes)
    if comp["task"] == "multilabel":
        if n > MAX_CURVES:
            return None
        ncols = min(5, n)
        nrows = math.ceil(n / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols + 0.5, 2.6 * nrows + 0.6), squeeze=False,
                                 layout="constrained")
        for ax, c in zip(axes.flat, classes):
            t = table[table["class"] == c]
            counts = t["count"].to_numpy().reshape(2, 2)
            share = t["row_share"].to_numpy().reshape(2, 2)
            ax.imshow(np.nan_to_num(share), cmap="Blues", vmin=0, vmax=1)
            for (i, j), v in np.ndenumerate(counts):
                ax.text(j, i, f"{v}\n{share[i, j]:.2f}", ha="center", va="center", fontsize=10,
                        color="white" if np.nan_to_num(share[i, j]) > 0.6 else "black")
            ax.set_xticks([0, 1], ["0", "1"])
            ax.set_yticks([0, 1], ["0", "1"])
            ax.set_title(str(c), fontsize=10)
            ax.set_xlabel("predicted", fontsize=9)
            ax.set_ylabel("true", fontsize=9)
        for ax in axes.flat[n:]:
            ax.set_visible(False)
        fig.suptitle(f"{title}: per label, count and share of the true row", fontsize=12)
        return save_figure(fig, path)
    counts = table["count"].to_numpy().reshape(n, n)
    share = table["row_share"].to_numpy(dtype=float).reshape(n, n)
    side = min(max(4.0, 0.5 * n + 2.5), 10.0)
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 1.5, side + 0.6))
    annotate = n <= MAX_CURVES
    _heatmap(axes[0], counts, [[str(v) for v in row] for row in counts], max(counts.max(), 1), classes,
             "predicted", "true", "counts", annotate)
    _heatmap(axes[1], share, [["" if np.isnan(v) else f"{v:.2f}" for v in row] for row in share], 1.0, classes,
             "predicted", "true", "share of each true class (rows sum to 1)", annotate)
    fig.suptitle(f"{title}: OOF confusion matrix, {counts.sum()} recordings", fontsize=12)
    fig.tight_layout()
    return save_figure(fig, path)


def _curve_classes(onehot: np.ndarray, comp: dict) -> list[int]:
    ks = [comp["classes"].index(comp["positive"])] if comp["task"] == "binary" else range(onehot.shape[1])
    return [k for k in ks if 0 < onehot[:, k].sum() < len(onehot)]


def plot_roc_pr(y: np.ndarray, probs: np.ndarray, comp: dict, path: Path, title: str) -> Path:
    """ROC (left) and precision-recall (right) curves, one-vs-rest per class (binary: the positive
    class only), with AUROC / average precision in the legend; classes with no or only positive
    rows are left out. Beyond :data:`MAX_CURVES` classes: thin grey lines and the macro mean
    (curves interpolated on a common grid)."""
    plt = pyplot()
    classes = comp["classes"]
    onehot = y if comp["task"] == "multilabel" else np.eye(len(classes), dtype=int)[y]
    ks = _curve_classes(onehot, comp)
    many = len(ks) > MAX_CURVES
    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(12, 5.6))
    colors = plt.get_cmap("tab10" if len(ks) <= 10 else "tab20")
    grid = np.linspace(0, 1, 201)
    tprs, precs, aucs, aps = [], [], [], []
    for i, k in enumerate(ks):
        fpr, tpr, _ = roc_curve(onehot[:, k], probs[:, k])
        prec, rec, _ = precision_recall_curve(onehot[:, k], probs[:, k])
        auc, ap = roc_auc_score(onehot[:, k], probs[:, k]), average_precision_score(onehot[:, k], probs[:, k])
        tprs.append(np.interp(grid, fpr, tpr))
        precs.append(np.interp(grid, rec[::-1], prec[::-1]))
        aucs.append(auc)
        aps.append(ap)
        # earlier classes drawn wider, so that curves on top of each other (a near-perfect model) stay visible
        style = (dict(color="0.75", lw=0.6) if many else
                 dict(color=colors(i % 20), lw=1.4 + 2.0 * (len(ks) - 1 - i) / len(ks)))
        roc_ax.plot(fpr, tpr, label=None if many else f"{classes[k]} (AUROC {auc:.3f})", **style)
        pr_ax.plot(rec, prec, label=None if many else f"{classes[k]} (AP {ap:.3f})", drawstyle="steps-post", **style)
        if comp["task"] == "binary":
            pr_ax.axhline(onehot[:, k].mean(), color="grey", ls=":", lw=1, label=f"chance ({onehot[:, k].mean():.2f})")
    if many:
        roc_ax.plot(grid, np.mean(tprs, 0), color="C0", lw=2.2, label=f"macro mean (AUROC {np.mean(aucs):.3f})")
        pr_ax.plot(grid, np.mean(precs, 0), color="C0", lw=2.2, label=f"macro mean (AP {np.mean(aps):.3f})")
    roc_ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate (recall)", title="ROC",
               xlim=(-0.03, 1.03), ylim=(-0.03, 1.03))
    pr_ax.set(xlabel="recall", ylabel="precision", title="precision-recall", xlim=(-0.03, 1.03), ylim=(-0.03, 1.03))
    for ax in (roc_ax, pr_ax):
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # none for a class that has no or only positive rows
            ax.legend(loc="lower right" if ax is roc_ax else "lower left", fontsize=9 if len(ks) <= 10 else 7)
    what = f"positive class {comp['positive']}" if comp["task"] == "binary" else "one-vs-rest per class"
    fig.suptitle(f"{title}: OOF, {what}", fontsize=12)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_slices(table: pd.DataFrame, names: list[str], path: Path, title: str) -> Path:
    """Bars of every metric in ``names`` (one panel each) per slice value of ``table``
    (:func:`lib.evaluation.metrics.score_slices`; its ``worst`` rows are left out), labelled
    ``column=value (n=rows)``, one colour per slice column, each bar annotated with its value
    (``n/a`` where the metric is undefined, e.g. AUROC of a slice with one class); saved to
    ``path``."""
    plt = pyplot()
    part = table[table["value"] != "worst"].reset_index(drop=True)
    labels = [f"{r.slice}={r.value}\n(n={int(r.n)})" for r in part.itertuples()]
    colors = {c: f"C{i}" for i, c in enumerate(dict.fromkeys(part["slice"]))}
    fig, axes = plt.subplots(1, len(names), figsize=(max(4.0, 0.9 * len(part) + 1.5) * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        values = part[name].astype(float)
        ax.bar(range(len(part)), values.fillna(0), color=[colors[c] for c in part["slice"]])
        for i, v in enumerate(values):
            ax.text(i, 0 if np.isnan(v) else v, "n/a" if np.isnan(v) else f"{v:.3f}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(part)), labels, fontsize=8)
        ax.set(title=name, ylim=(0, max(1.0, float(np.nanmax(values.to_numpy())) * 1.1) if values.notna().any() else 1.0))
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{title}: OOF scores per slice", fontsize=12)
    fig.tight_layout()
    return save_figure(fig, path)


def slice_section(y, probs: np.ndarray, comp: dict, decision: dict | None, out_dir: Path, title: str,
                  paths: dict, before: list[str] = ()) -> list[str]:
    """The report's "Scores per slice" section: ``slices.csv`` (:func:`score_slices`) and
    ``slices.png`` (:func:`plot_slices`) written into ``out_dir`` (their paths added to ``paths``)
    and the markdown lines, naming the worst slice of the competition metric. ``y`` carries the
    rows' slices (:class:`lib.data.slices.SlicedLabels`); none: no section (``[]``). ``before``:
    the ``decision`` keys that ``probs`` were not post-processed by (02's report), said."""
    table = score_slices(comp["metrics"], y, probs, comp, decision)
    if table.empty:
        return []
    names = list(dict.fromkeys(base_metric(n) for n in comp["metrics"]))
    for c in [c for c in table.columns if c == "n" or c.startswith("n_")]:  # counts (the worst rows have none)
        table[c] = table[c].astype("Int64")
    paths["slices"] = out_dir / "slices.csv"
    write_csv(paths["slices"], table)
    paths["slices_png"] = plot_slices(table, names, out_dir / "slices.png", title)
    metric, values = base_metric(comp["metric"]), table[table["value"] != "worst"]
    worst = values.loc[values[metric].astype(float).idxmin() if sign(metric, comp) > 0 else
                       values[metric].astype(float).idxmax()] if values[metric].notna().any() else None
    lines = ["## Scores per slice ([slices.csv](slices.csv))", "",
             ("Every metric over the rows of each slice value (`slices` in the competition config), with its "
              "rows (`n`) and rows per class (`n_<class>`); `worst`: each metric's worst value over the "
              "slice's values. A pooled score can hide a slice the model fails on."
              + (f" Scored on the models' own probabilities, before {', '.join('decision.' + k for k in before)}: "
                 f"04_ensemble.py's slice table scores the rows after it, so its figures differ." if before else "")),
             ""]
    if worst is not None:
        pooled = score_all([metric], y, probs, comp, decision)[metric]
        lines += [(f"Worst slice on {metric}: **{worst['slice']} = {worst['value']}** ({worst[metric]:.4f} over "
                   f"{int(worst['n'])} rows; all rows pooled: {pooled:.4f})."), ""]
    return lines + [markdown_table(table), "", "![scores per slice](slices.png)", ""]


def plot_calibration(truth: np.ndarray, p: np.ndarray, what: str, observed: str, path: Path, title: str,
                     n_bins: int = 10) -> Path:
    """Reliability diagram (``observed``, the share of ``truth``, against the mean predicted
    probability per equal-width bin, sklearn ``calibration_curve``; bins of fewer than 10 rows
    hollow) over a histogram of the predicted probabilities (log counts when they span over two
    decades)."""
    plt = pyplot()
    frac, mean_p = calibration_curve(truth, p, n_bins=n_bins, strategy="uniform")
    counts = np.bincount(np.searchsorted(np.linspace(0, 1, n_bins + 1)[1:-1], p), minlength=n_bins)
    few = counts[counts > 0] < 10
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(6.2, 7.4), height_ratios=(3, 1.2), sharex=True)
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1, label="perfectly calibrated")
    ax.plot(mean_p, frac, "-", color="C0", lw=1.2,
            label=f"OOF, per bin (ECE {expected_calibration_error(truth, p, n_bins):.3f})")
    ax.plot(mean_p[~few], frac[~few], "o", color="C0", ms=6)
    if few.any():
        ax.plot(mean_p[few], frac[few], "o", mfc="white", mec="C0", ms=6, label="bins of fewer than 10 rows")
    ax.set(ylabel=observed, xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
    ax.set_title(f"{title}: calibration of {what}", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=9)
    hist.hist(p, bins=np.linspace(0, 1, n_bins + 1), color="C0", alpha=0.7, edgecolor="white")
    if counts.max() > 100 * max(counts[counts > 0].min(), 1):
        hist.set_yscale("log")
    hist.set(xlabel=f"predicted {what}", ylabel="count")
    hist.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


# --- the report ------------------------------------------------------------------------------------------------

def markdown_table(df: pd.DataFrame, digits: int = 4) -> str:
    """A DataFrame as a Markdown table (floats with ``digits`` decimals, NaN and ``pd.NA`` as empty)."""
    def cell(v):
        if v is pd.NA:
            return ""
        if isinstance(v, (float, np.floating)):
            if np.isnan(v):
                return ""
            return str(int(v)) if float(v).is_integer() and abs(v) > 1 else f"{v:.{digits if abs(v) < 10 else 1}f}"
        return str(v).replace("|", "\\|")
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def write_report(out_dir: str | Path, name: str, comp: dict, oof_df: pd.DataFrame, history: pd.DataFrame,
                 scores: dict, decision: dict | None = None) -> list[Path]:
    """Write the report of one experiment into ``out_dir`` (replaced whole: an older report's
    files never stay beside a new one's) and return the paths written (``report.md`` first).

    ``oof_df``: the OOF file (``id, fold, target, p_<class> ...``; multi-label targets joined
    by ``;``), with the rows' ``slice_<column>`` columns of ``folds.csv`` when the competition
    declares slices (the report then has a "Scores per slice" section); ``history``: ``log.csv`` (``fold, epoch, lr, train_loss, valid_loss, <metric>
    ...``); ``scores``: ``scores.json`` (``oof``, ``folds`` with ``best_epoch`` per fold,
    ``partial``, ``missing_folds``); ``decision``: thresholds or class biases for the decisions
    (:func:`lib.data.tasks.decide`; ``None``: the defaults). Every file is written atomically;
    on an exception (raised as is) the folder is removed, so a report is whole or absent.
    """
    out_dir = Path(out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    try:
        return _write_report(out_dir, name, comp, oof_df, history, scores, decision)
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise


def _write_report(out_dir, name, comp, oof_df, history, scores, decision) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    y = with_slices(tasks.class_index(oof_df["target"], comp), oof_df)
    probs = oof_df[tasks.prob_columns(comp)].to_numpy(dtype=float)
    pred = tasks.decide(probs, comp, decision)
    folds, confusion = fold_table(oof_df, comp, scores, decision), confusion_table(y, pred, comp)
    per_class, worst = class_table(y, probs, pred, comp), worst_table(oof_df, comp, decision)
    paths = {}
    for key, table in (("folds", folds), ("confusion", confusion), ("per_class", per_class), ("worst", worst)):
        paths[key] = out_dir / f"{key}.csv"
        write_csv(paths[key], table)
    best = {int(f["fold"]): int(f["best_epoch"]) for f in scores["folds"]}
    paths["curves"] = plot_curves(history, comp, best, out_dir / "curves.png",
                                  f"{name}: per-epoch curves, {len(best)} folds")
    paths["confusion_png"] = plot_confusion(confusion, comp, out_dir / "confusion.png", name)
    paths["roc_pr"] = plot_roc_pr(y, probs, comp, out_dir / "roc_pr.png", name)
    truth, p, what, observed = calibration_inputs(y, probs, comp)
    paths["calibration"] = plot_calibration(truth, p, what, observed, out_dir / "calibration.png", name)
    ece = expected_calibration_error(truth, p)

    oof_scores = score_all(comp["metrics"], y, probs, comp, decision)
    summary = pd.DataFrame({"metric": list(oof_scores), "OOF": list(oof_scores.values()),
                            "fold mean": [folds[m].iloc[-2] for m in oof_scores],
                            "fold std": [folds[m].iloc[-1] for m in oof_scores]})
    n_folds = len(folds) - 2
    text = [f"# {name}", "",
            f"{comp['task']} task, classes {', '.join(map(str, comp['classes']))}"
            + (f" (positive: {comp['positive']})" if comp["task"] == "binary" else "")
            + f"; {len(oof_df)} recordings in {n_folds} folds; competition metric **{comp['metric']}**; "
              f"each fold's predictions from its best epoch.", ""]
    if scores.get("partial"):
        text += [f"**Partial**: folds {scores.get('missing_folds')} are not trained yet; everything below "
                 f"covers the other folds only.", ""]
    text += ["## OOF scores", "", markdown_table(summary), ""]
    if by := scored_after(comp):
        post = scores.get("postprocessed") or {}
        text += [f"These score the models' own probabilities. When this report was written the competition set "
                 f"{', '.join('decision.' + k for k in by)}: 04_ensemble.py and leaderboard.py score the OOF rows "
                 f"after it, so their figures differ (02_train.py prints that figure too)"
                 + (": " + ", ".join(f"{m} {v:.4f}" for m, v in post.items()) if post else "") + ".", ""]
    text += ["## Learning curves", "", "![learning curves](curves.png)", ""]
    if "epoch" in history and history["epoch"].max() > 1:  # (two figures of one epoch, unexplained: probe)
        text += [("The curves' scores are each epoch's validation in the training precision (bfloat16 or float16 "
                  "where autocast trains); the table below scores the kept epoch predicted again in float32, "
                  "as 03 predicts, so the two can differ a little."), ""]
    text += ["## Scores per fold ([folds.csv](folds.csv))", "",
             markdown_table(folds.assign(seconds=[format_seconds(s) if pd.notna(s) else "" for s in folds["seconds"]],
                                         **{c: [_count(v) for v in folds[c]] for c in ("best_epoch", "epochs_run")})), "",
             "## Confusion matrix ([confusion.csv](confusion.csv))", ""]
    if paths["confusion_png"] is None:
        text += [f"No picture for {len(comp['classes'])} labels (more than {MAX_CURVES}): the counts per label "
                 f"are in confusion.csv.", ""]
    else:
        text += ["![confusion matrix](confusion.png)", ""]
    text += slice_section(y, probs, comp, decision, out_dir, name, paths, before=scored_after(comp))
    text += ["## Per class ([per_class.csv](per_class.csv))", "", markdown_table(per_class), "",
             "## ROC and precision-recall", "", "![ROC and precision-recall curves](roc_pr.png)", "",
             "## Calibration", "", f"Expected calibration error ({what}, 10 bins): {ece:.4f}.", "",
             "![calibration](calibration.png)", "",
             f"## Recordings predicted worst ([worst.csv](worst.csv): {len(worst)}; the first 10)", "",
             markdown_table(worst.head(10)), ""]
    paths["report"] = out_dir / "report.md"
    with atomic_path(paths["report"]) as tmp:
        tmp.write_text("\n".join(text))
    return [paths["report"]] + [p for k, p in paths.items() if k != "report" and p is not None]


def report_from_outputs(root: str | Path, exp: str, to: str | Path) -> list[Path]:
    """Write the report of experiment ``exp`` of the output folder ``root`` into ``to`` from its
    files (``competition.yaml``, ``oof/<exp>.csv``, ``models/<exp>/log.csv``, ``scores.json``);
    reads only. Raises ``FileNotFoundError`` for a missing file."""
    import json

    import yaml

    from ..core.paths import Outputs

    out = Outputs(Path(root))
    comp = yaml.safe_load(out.competition.read_text())
    oof_df, table = read_artifact_csv(out.oof(exp)), out.load_split("train")
    history = pd.read_csv(out.model_dir(exp) / "log.csv")
    scores = json.loads((out.model_dir(exp) / "scores.json").read_text())
    scores["postprocessed"] = (postprocessed_scores(oof_df, table, comp) or {}).get("oof")  # under this competition.yaml
    return write_report(to, exp, comp, with_slice_columns(oof_df, table), history, scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("output_dir")
    parser.add_argument("exp")
    parser.add_argument("--to", default=None, help="folder of the report (default /tmp/report_<EXP>)")
    args = parser.parse_args()
    paths = report_from_outputs(args.output_dir, args.exp, args.to or f"/tmp/report_{args.exp.replace('/', '_')}")
    print(f"{args.exp}: report -> {paths[0]}")


if __name__ == "__main__":
    main()
