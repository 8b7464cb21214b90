"""The ensemble report of stage 04: members, their correlation, every blending method, the decision."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..core.utils import atomic_path, write_csv
from ..data import tasks
from ..data.slices import counts_text, with_slices
from .reports import markdown_table, pyplot, save_figure, slice_section
from .decisions import decision_words, unknown_prior_notes


def prediction_correlation(probs: list[np.ndarray], comp: dict) -> np.ndarray:
    """Pearson correlation ``(n_members, n_members)`` of the members' OOF predictions: of
    p(positive) for a binary task, else of the flattened ``(rows, n_classes)`` probabilities; NaN
    for a member whose predictions are constant (nothing to correlate)."""
    if comp["task"] == "binary":
        pos = comp["classes"].index(comp["positive"])
        flat = [p[:, pos] for p in probs]
    else:
        flat = [p.ravel() for p in probs]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.atleast_2d(np.corrcoef(np.stack(flat)))


def _plots(folder: Path, corr: np.ndarray, names: list[str], methods: pd.DataFrame, members: pd.DataFrame,
           metric: str, chosen: str) -> list[Path]:
    plt = pyplot()
    paths = []
    n = len(names)
    fig, ax = plt.subplots(figsize=(2.5 + 0.7 * n, 2 + 0.6 * n))
    defined = corr[np.isfinite(corr)]  # a constant member (a class prior) correlates with nothing: NaN
    low = min(np.floor(defined.min() * 10) / 10, 0.9) if defined.size else 0.9  # contrast where members differ a little
    im = ax.imshow(corr, vmin=low, vmax=1, cmap="viridis")
    ax.set_xticks(range(n), names, rotation=45, ha="right")
    ax.set_yticks(range(n), names)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{corr[i, j]:.2f}", ha="center", va="center",
                    color="black" if corr[i, j] > (low + 1) / 2 else "white", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title("correlation of OOF predictions")
    fig.tight_layout()
    paths.append(save_figure(fig, folder / "correlation.png"))

    rows = pd.concat([members.assign(kind="member", name=members["experiment"]),
                      methods.assign(kind="blend", name="blend: " + methods["method"])], ignore_index=True)
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.32 * len(rows)))
    colors = ["tab:gray" if k == "member" else ("tab:red" if nm == f"blend: {chosen}" else "tab:blue")
              for k, nm in zip(rows["kind"], rows["name"])]
    values = rows[metric].to_numpy(dtype=float)
    ax.barh(range(len(rows)), values, color=colors)
    ax.set_yticks(range(len(rows)), rows["name"])
    ax.invert_yaxis()
    finite = values[np.isfinite(values)]
    if len(finite):
        span = max(finite.max() - finite.min(), 1e-3)
        ax.set_xlim(finite.min() - 0.5 * span, finite.max() + 0.3 * span)
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.4f}", va="center", fontsize=8)
    ax.set_xlabel(f"OOF {metric} (blends: cross-fitted; red: used)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    paths.append(save_figure(fig, folder / "methods.png"))
    return paths


def write_ensemble_report(folder: Path, comp: dict, summary: dict, oof_df: pd.DataFrame, blend_oof: np.ndarray,
                          member_probs: list[np.ndarray], experiments: list[str], test=None) -> list[Path]:
    """Write the ensemble report under ``folder`` (``output/ensemble/``) and return its files:
    ``members.csv`` (each experiment's OOF scores and weight), ``methods.csv`` (every blending
    method's cross-fitted OOF scores), ``correlation.csv``/``.png`` (:func:`prediction_correlation`),
    ``methods.png`` (members and blends on the competition metric), ``oof_blend.csv`` (id, fold,
    target, ``p_<class>``: the chosen method's cross-fitted OOF blend, or for ``single`` the
    submitted member's OOF, from which its scores and the decision can be reproduced), ``test_blend.csv`` (``test = (ids, probs)``: the blended test
    probabilities before the decision), ``slices.csv``/``.png`` (the blend's scores per slice
    value, when ``oof_df`` has the ``slice_<column>`` columns of ``folds.csv``) and ``report.md``. Every file is written atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    cols = tasks.prob_columns(comp)
    metric = summary["metric"]
    members = pd.DataFrame(summary["experiments"])
    methods = pd.DataFrame([{"method": m, **r["scores"], "note": r.get("error", "")}
                            for m, r in summary["methods"].items()])
    corr = prediction_correlation(member_probs, comp)
    corr_df = pd.DataFrame(corr, index=experiments, columns=experiments).reset_index(names="experiment")
    blend_df = oof_df[["id", "fold", "target"]].copy()
    blend_df[cols] = blend_oof
    paths = {name: folder / name for name in ("members.csv", "methods.csv", "correlation.csv", "oof_blend.csv")}
    write_csv(paths["members.csv"], members)
    write_csv(paths["methods.csv"], methods)
    write_csv(paths["correlation.csv"], corr_df)
    write_csv(paths["oof_blend.csv"], blend_df)
    if test is not None:
        test_df = pd.DataFrame({"id": list(test[0])})
        test_df[cols] = test[1]
        paths["test_blend.csv"] = folder / "test_blend.csv"
        write_csv(paths["test_blend.csv"], test_df)
    pictures = _plots(folder, corr, experiments, methods, members, metric, summary["method"])
    d = summary["decision"]
    dec_scores = ", ".join(f"{k} {v:.4f}" for k, v in d.get("scores", {}).items())
    plain = {"multiclass": "the most probable class", "multilabel": "every class at p > 0.5"}.get(
        comp["task"], "the most probable class (p > 0.5)")
    text = [f"# Ensemble of {len(experiments)} experiment(s)", "",
            f"Used: **{summary['method']}** ({summary['note']}); competition metric **{metric}**.", "",
            "## Members (OOF scores; weights of the used method fitted on every OOF row)", "",
            markdown_table(members), "",
            "## Blending methods (cross-fitted OOF scores: fitted on the other folds)", "", markdown_table(methods), "",
            "![methods](methods.png)", "", "## Correlation of the members' OOF predictions", "",
            "![correlation](correlation.png)", "", "## Decision", "",
            (f"{d.get('how')}: {decision_words(d['decision'], comp)}" if d.get("decision") else
             f"the default decision, {plain}") + (f"; OOF {d['metric']}: {dec_scores}" if d.get("metric") else "")
            + f" ({d.get('note', '')})", ""]
    if summary.get("rows_masked"):
        text += [f"Label masks changed {summary['rows_masked']} OOF row(s).", ""]
    if summary.get("slice_prior"):
        text += _slice_prior_text(summary["slice_prior"], comp)
    y = with_slices(tasks.class_index(oof_df["target"].fillna(""), comp), oof_df)
    text += slice_section(y, blend_oof, comp, d.get("decision"), folder, "blend", paths)
    paths["report.md"] = folder / "report.md"
    with atomic_path(paths["report.md"]) as tmp:
        tmp.write_text("\n".join(text))
    return [*paths.values(), *pictures]


def _slice_prior_text(priors: dict, comp: dict) -> list[str]:
    """The report's lines on ``decision.slice_prior``: each value's training rows and class
    priors against the pooled ones (what the members' probabilities were shifted by)."""
    rows = [{priors["column"]: value, "training rows": priors["rows"][value],
             **{f"prior {c}": "-" if c in priors.get("unknown", {}).get(value, ()) else round(v, 4)
                for c, v in zip(comp["classes"], prior)}}  # unknown there: not shifted by
            for value, prior in priors["slices"].items()]
    rows.append({priors["column"]: "(pooled)", "training rows": sum(priors["rows"].values()),
                 **{f"prior {c}": round(v, 4) for c, v in zip(comp["classes"], priors["pooled"])}})
    return ["## Slice prior shift", "",
            f"`decision.slice_prior: {priors['column']}`: every member's probabilities were re-expressed as if each "
            f"{priors['column']} had the pooled class ratio (OOF rows with the priors of their other folds, test "
            f"rows with these, from every training row), before blending and deciding:", "",
            markdown_table(pd.DataFrame(rows)), "",
            "The blend 04 chooses with and without the shift (OOF scores, a blend's cross-fitted, at the default decision "
            "or a fixed decision.threshold; "
            "keep the shift only where the worst slice gains):", "",
            markdown_table(pd.DataFrame([{"shift": k, **v} for k, v in priors["compare"].items()])), ""] + (
        ["Test rows left unshifted (values no training row has): "
         + counts_text(priors["test_unknown"]), ""]
        if priors.get("test_unknown") else []) + (
        [f"**OOF rows left unshifted** ({counts_text(priors['oof_unshifted'])}): no other fold holds their "
         f"{priors['column']} (folds grouped by it), so these OOF scores cannot judge the shift, which still "
         "changes the test rows.", ""]
        if priors.get("oof_unshifted") else []) + [f"{line}.\n" for line in unknown_prior_notes(priors, comp)]
