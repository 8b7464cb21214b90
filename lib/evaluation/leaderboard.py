"""Compare experiments: the leaderboard of an output folder (scoring a submission against a
labelled holdout: :mod:`lib.evaluation.scoring`).

* :func:`leaderboard`: one row per experiment of an output folder, every metric recomputed from
  its OOF file (``oof/<exp>.csv``) and the competition config, so a metric added to the
  competition later, or any registered one, can be shown and sorted by; with the training status
  from the records (:mod:`lib.core.artifacts`). :func:`format_leaderboard` prints it,
  :func:`blend_summary` the blend of ``ensemble.json``.

Decisions (for accuracy, F1, ...) are the defaults of :func:`lib.data.tasks.decide`: the most
probable class (binary: p(positive) > 0.5), every class with p > 0.5 for multi-label tasks.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..core.artifacts import FOLDS, blend_problem, folds_id, retrain_stages, trained_problem
from ..core.paths import Outputs
from ..core.utils import format_count, format_seconds, read_artifact_csv, read_json
from ..data import tasks
from ..data.slices import slices_of, with_slices
from ..models.pretrained_weights import pretrained_changed
from .decisions import in_sample_note, postprocess
from .metrics import base_metric, get_metric, metrics_with_worst_slice, score_all, score_slices
from .reports import pyplot, save_figure


def training_status(out: Outputs, exp: str, config: dict | None) -> tuple[str, str]:
    """``(status, why)`` of an experiment's training, from its record (sizes checked, and the
    hash of the OOF file the leaderboard scores): ``complete``; ``partial`` (folds missing);
    ``stale`` (its feature set was rebuilt or removed since, or it and 00 read other audio); ``incomplete`` (no record: never
    finished, or a file of it changed). A complete experiment's ``why`` notes weights it was
    fine-tuned from that changed since (:func:`lib.models.pretrained_weights.pretrained_changed`)."""
    record = out.trained(exp)
    rec, why = record.check(hashes=frozenset({out.oof(exp).relative_to(record.root).as_posix()}))
    if rec is None:
        return "incomplete", why
    if rec["info"].get("partial"):
        return "partial", f"folds {rec['info'].get('missing_folds')} missing"
    fset = ((config or {}).get("features") or {}).get("set")
    if fset and (since := out.features_since(fset, rec)):
        return "stale", (f"feature set {fset!r} has no finished build: run 01_features.py" if since == "unfinished"
                         else f"feature set {fset!r} {since} since training")
    return "complete", pretrained_changed(out, exp, config=config or None) or ""  # (a note: said by 02 alone before: probe)


def _fold_records(out: Outputs, exp: str, n_folds: int) -> int:
    """How many of experiment ``exp``'s ``n_folds`` folds have a complete fold record (sizes
    checked): the folds finished of a run without a merged record (interrupted, or pruned)."""
    return sum(out.fold_record(exp, k).check(hashes=False)[0] is not None for k in range(n_folds))


def _read_oof(path, comp: dict, cols: list[str]) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """An OOF file, its encoded targets and its probabilities ``(rows, n_classes)``. Raises as
    :func:`lib.core.utils.read_artifact_csv`, ``KeyError`` for a missing class or target column and
    ``ValueError`` for a NaN or infinite probability (a damaged or hand-edited file)."""
    oof = read_artifact_csv(path)
    y, probs = tasks.class_index(oof["target"], comp), oof[cols].to_numpy(dtype=float)
    if not np.isfinite(probs).all():
        raise ValueError(f"{int((~np.isfinite(probs)).any(1).sum())} row(s) hold NaN or infinite probabilities")
    return oof, y, probs


def leaderboard(out: Outputs | str | Path, sort: str | None = None, include_all: bool = False) -> pd.DataFrame:
    """One row per experiment in ``models/``, best first by ``sort`` in its own direction (:func:`_ranked`).

    ``sort``: any registered metric or competition custom metric (default: the competition's
    ``metric``); scores are recomputed from ``oof/<exp>.csv`` for the competition's ``metrics``
    and ``sort`` (a partial experiment: over its finished folds' rows) as 04 scores each member
    (:func:`lib.evaluation.decisions.postprocess`: masks, slice prior, groups; decisions at a fixed
    ``decision.threshold``). Experiments without
    a complete training record are left out (``df.attrs["skipped"]``: ``{exp: why}``) unless
    ``include_all``, as are OOF files whose ``models/<exp>/`` was removed. Columns: ``rank`` (NA
    when the sort score is NaN, and for partial and incomplete experiments, listed last),
    ``experiment``, ``model``, ``input`` (feature set), one per
    metric, ``fold_mean``/``fold_std`` (the competition metric over each fold's OOF rows, folds
    where it is undefined left out), ``folds`` ("done/total"; a stale experiment's own count, "3
    (other folds)"), ``status`` (:func:`training_status`, plus ``stale`` when the OOF rows no
    longer match ``folds.csv`` or the model was trained under other audio settings than
    ``competition.yaml``'s), ``parameters``, ``seconds`` (training time, all folds), ``note``.
    ``df.attrs`` also holds ``sort``, ``higher_is_better``, ``metrics``, ``fold_metric`` and
    ``slices`` (``{exp: table}``, :func:`lib.evaluation.metrics.score_slices`, when the competition
    declares ``slices``; the table then also has ``worst_<metric>``, the competition metric on
    its worst slice). Raises ``MissingArtifact`` without stage 00's output, ``ConfigError`` for an
    unknown metric."""
    out = out if isinstance(out, Outputs) else Outputs(Path(out).resolve())
    comp = out.load_competition()
    fixed, sort = tasks.fixed_decision(comp), sort or comp["metric"]  # (a fixed decision.threshold: as 04 scores)
    higher = get_metric(sort, comp, "sort").higher_is_better
    names = list(dict.fromkeys([*metrics_with_worst_slice(comp), sort]))
    sliced = [n for n in names if base_metric(n) != n]  # NaN for an OOF file whose rows folds.csv lacks
    table = out.load_split("train")
    current, folds_df = folds_id(table), table.set_index("id")
    n_folds = folds_df.loc[folds_df["fold"] >= 0, "fold"].nunique()  # -1: pseudo-labelled rows, no fold
    cols = tasks.prob_columns(comp)
    rows, skipped, per_slice = [], {}, {}
    for folder in sorted(p for p in (out.root / "models").glob("*") if p.is_dir()):
        exp = folder.name
        scores = read_json(folder / "scores.json") or {}
        config = scores.get("config") or {}
        status, note = training_status(out, exp, config)
        if status == "incomplete" and not include_all:
            skipped[exp] = f"{note} (--all shows it)"
            continue
        row = {"experiment": exp, "model": (config.get("model") or {}).get("name"),
               "input": (config.get("features") or {}).get("set"), **dict.fromkeys(names, np.nan),
               "fold_mean": np.nan, "fold_std": np.nan, "status": status, "folds": f"{_fold_records(out, exp, n_folds)}/{n_folds}",
               "parameters": scores.get("n_parameters"), "seconds": scores.get("seconds"), "note": note,
               "whole": status in ("complete", "stale")}  # (before _stale hides a partial one: review)
        try:
            oof, y, probs = _read_oof(out.oof(exp), comp, cols)
        except FileNotFoundError:
            oof = None
        except (OSError, KeyError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            oof = None  # only an incomplete experiment (--all) can get here
            row["note"] = f"{note}; OOF file unreadable: {exc}".strip("; ")
        if oof is not None:
            if oof["id"].isin(folds_df.index).all():
                y = with_slices(y, table, oof["id"])
                probs = postprocess([oof], table, comp, "folds")[0][0]  # masks, slice prior, groups: as 04 scores
                per_slice[exp] = score_slices(comp["metrics"], y, probs, comp, fixed)
            scored = names if slices_of(y) else [n for n in names if n not in sliced]
            row.update(score_all(scored, y, probs, comp, fixed))
            per_fold = [score_all([comp["metric"]], y[oof.fold == f], probs[oof.fold == f], comp, fixed)[comp["metric"]]
                        if comp["metric"] in scored else np.nan for f in sorted(oof["fold"].unique())]
            defined = [v for v in per_fold if np.isfinite(v)]  # as 02's summary: a fold of one class has no AUROC
            row.update(fold_mean=np.mean(defined) if defined else np.nan,
                       fold_std=np.std(defined, ddof=1) if len(defined) > 1 else np.nan, folds=f"{len(per_fold)}/{n_folds}")
            stale = _stale(out, exp, oof, folds_df, current, comp)
            if stale:
                row.update(status="stale", note=stale)
            if _other_rows(oof, folds_df):  # a count against folds.csv's would mislead ("3/4" for 3 of 3)
                row.update(folds=f"{len(per_fold)} (other folds)")
        rows.append(row)
    oof_files = {p.stem for p in (out.root / "oof").glob("*.csv") if not p.name.endswith(".segments.csv")}
    for gone in sorted(oof_files - {r["experiment"] for r in rows} - set(skipped)):
        skipped[gone] = f"models/{gone}/ is gone, only oof/{gone}.csv is left (02_train.py trains it again)"
    df = pd.DataFrame(rows, columns=["experiment", "model", "input", *names, "fold_mean", "fold_std", "folds",
                                     "status", "parameters", "seconds", "note", "whole"])
    df = _ranked(df, sort, higher)
    df.attrs.update(sort=sort, higher_is_better=higher, metrics=names, fold_metric=comp["metric"], skipped=skipped,
                    slices=per_slice)
    return df


def _ranked(df: pd.DataFrame, sort: str, higher: bool) -> pd.DataFrame:
    """The leaderboard rows best first by ``sort``, with a ``rank`` column in front: the rows of
    experiments trained on every fold (column ``whole``, dropped here; stale ones too) ranked
    first, then the others (``partial``, ``incomplete``: scored on fewer rows) without a rank;
    rows whose score is NaN last in each."""
    df = df.assign(_nan=df[sort].isna(), _key=df[sort] if higher else -df[sort])
    df = df.sort_values(["whole", "_nan", "_key"], ascending=[False, True, False], kind="stable")
    ranked = df["whole"] & ~df["_nan"]
    df = df.drop(columns=["whole", "_nan", "_key"]).reset_index(drop=True)
    df.insert(0, "rank", pd.array([i + 1 if r else pd.NA for i, r in enumerate(ranked)], dtype="Int64"))
    return df


def _stale(out: Outputs, exp: str, oof: pd.DataFrame, folds_df: pd.DataFrame, current: str, comp: dict) -> str | None:
    """Why experiment ``exp``'s OOF file ``oof`` or training no longer fits stage 00's output
    (``folds_df``: ``folds.csv`` indexed by id; ``current``: its :func:`folds_id`; ``comp``: the
    competition config, :func:`lib.core.artifacts.trained_problem`), or ``None``."""
    if _other_rows(oof, folds_df):
        return "its OOF rows no longer match folds.csv (00_prepare.py ran since)"
    trained = out.trained(exp).check(hashes=False)[0] or {}
    inputs = trained.get("inputs", {})
    if inputs.get(FOLDS) not in (None, current):
        return ("trained on other rows than folds.csv's (e.g. other pseudo-labelled rows: pseudo_label.py ran "
                "since): run 02_train.py")
    if why := trained_problem(trained, comp):
        return f"{why}: run {' and '.join(retrain_stages(trained, comp))}"
    return None


def _other_rows(oof: pd.DataFrame, folds_df: pd.DataFrame) -> bool:
    """Whether the OOF file's rows, folds or targets are not those of ``folds.csv`` (``folds_df``, indexed by id)."""
    now = folds_df.reindex(oof["id"])
    return bool(now["fold"].isna().any() or not (now["fold"].to_numpy() == oof["fold"].to_numpy()).all()
                or not (now["target"].to_numpy() == oof["target"].to_numpy()).all())


def slice_leaderboard(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """:func:`leaderboard`'s per-slice scores (``df.attrs["slices"]``) as one table: a row per
    experiment (in ``df``'s order), a column ``<slice>=<value> (n=N)`` per slice value with the
    experiment's OOF ``metric`` over those rows (a per-slice name: its base metric; N the most
    rows any experiment scored there, a partial one's fewer rows in the same column), and
    ``worst``. Empty without slices."""
    metric, rows, n = base_metric(metric), [], {}
    for exp in df["experiment"]:
        t = df.attrs.get("slices", {}).get(exp)
        if t is None or t.empty or metric not in t:
            continue
        cells = {(f"{r.slice}={r.value}" if r.value != "worst" else f"worst {r.slice}"): getattr(r, metric)
                 for r in t.itertuples()}
        for r in t[t["value"] != "worst"].itertuples():  # a partial experiment's fewer rows: the same column
            n[f"{r.slice}={r.value}"] = max(n.get(f"{r.slice}={r.value}", 0), int(r.n))
        rows.append({"experiment": exp, **cells})
    return pd.DataFrame(rows).rename(columns={k: f"{k} (n={v})" for k, v in n.items()})


def plot_slice_leaderboard(table: pd.DataFrame, metric: str, path: Path) -> Path:
    """Grouped bars of :func:`slice_leaderboard`'s ``table``: one group per slice value, one bar
    per experiment, the OOF ``metric``; saved to ``path``."""
    plt = pyplot()
    cols = [c for c in table.columns if c != "experiment" and not c.startswith("worst ")]
    width = 0.8 / max(1, len(table))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(cols) + 2), 4.5))
    for i, (exp, values) in enumerate(zip(table["experiment"], table[cols].to_numpy(dtype=float))):
        ax.bar(np.arange(len(cols)) + i * width, values, width, label=exp)
    ax.set_xticks(np.arange(len(cols)) + width * (len(table) - 1) / 2, cols, fontsize=8)
    ax.set(ylabel=f"OOF {base_metric(metric)}", title=f"OOF {base_metric(metric)} per slice")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def format_leaderboard(df: pd.DataFrame) -> str:
    """:func:`leaderboard`'s table as text: scores to 4 decimals, the fold scores as mean ± std,
    parameters in millions (``M``) or thousands (``k``), training time as ``11m24s``."""
    def num(v, fmt):
        return "-" if v is None or pd.isna(v) else fmt(v)

    shown = pd.DataFrame({"rank": df["rank"].astype(object).where(df["rank"].notna(), "-"),
                          "experiment": df["experiment"], "model": df["model"].fillna("-"),
                          "input": df["input"].fillna("-")})
    for m in df.attrs.get("metrics", []):
        arrow = "" if m != df.attrs.get("sort") else (" ↓" if df.attrs.get("higher_is_better") else " ↑")
        shown[m + arrow] = [num(v, lambda v: f"{v:.4f}") for v in df[m]]
    shown[f"{df.attrs.get('fold_metric', '')} by fold"] = [
        num(a, "{:.4f}".format) + (f" ± {b:.4f}" if pd.notna(a) and pd.notna(b) else "")
        for a, b in zip(df["fold_mean"], df["fold_std"])]
    shown["folds"], shown["status"] = df["folds"], df["status"]
    shown["params"] = [num(v, format_count) for v in df["parameters"]]
    shown["train time"] = [num(v, format_seconds) for v in df["seconds"]]
    shown["note"] = df["note"].fillna("")
    if not shown["note"].str.len().any():
        shown = shown.drop(columns="note")
    return shown.to_string(index=False)


def blend_summary(out: Outputs) -> str | None:
    """One line for the blend in ``ensemble.json``: its method, OOF scores and the members'
    weights of 0.005 and more (methods without weights, e.g. stacking: the members), marked when
    its record is not complete, was made on other folds than ``folds.csv``'s, blended a
    training run of a member that is no longer its current complete one (trained again, files
    changed or removed), or a member is ``stale`` (:func:`training_status`: its feature set
    changed since it trained); ``None`` without ``ensemble.json``."""
    ens = read_json(out.root / "ensemble.json")
    if not ens:
        return None
    method = str(ens.get("method", "?")) + (f", T={ens['temperature']}" if ens.get("method") == "softmax" else "")
    members = ens.get("experiments") or []
    weighted = sorted((e for e in members if isinstance(e.get("weight"), (int, float))), key=lambda e: -e["weight"])
    big = [e for e in weighted if e["weight"] >= 0.005]
    if weighted:
        weights = "weights: " + ", ".join(f"{e['experiment']} {e['weight']:.2f}" for e in big)
        weights += f", {len(weighted) - len(big)} more below 0.005" if len(big) < len(weighted) else ""
    else:
        weights = "members: " + ", ".join(str(e.get("experiment")) for e in members)
    scores = "  ".join(f"{k} {v:.4f}" for k, v in (ens.get("blend") or {}).items() if isinstance(v, (int, float)))
    rec, why = out.ensembled.check(hashes=False)
    problem = rec and blend_problem(rec, out.load_split("train"), out.load_competition())
    if problem:
        rec, why = None, f"{problem}: run 04_ensemble.py"
    stale = out.changed_members(rec) if rec else []
    if stale:
        rec, why = None, (f"member(s) {', '.join(stale)} trained or predicted again, changed or removed since, or "
                          f"a new test set: run 03_infer.py and 04_ensemble.py")
    status = {e["experiment"]: training_status(out, e["experiment"], (read_json(out.model_dir(e["experiment"]) /
                                                                        "scores.json") or {}).get("config"))
              for e in members} if rec else {}
    rebuilt = {e: why for e, (s, why) in status.items() if s == "stale"}  # its feature set rebuilt, removed, ...
    if rebuilt:
        rec, why = None, (f"member(s) {', '.join(rebuilt)} stale ({next(iter(rebuilt.values()))}): run 02_train.py, "
                          f"03_infer.py and 04_ensemble.py")
    return (f"blend ({method}) of {len(members)}: OOF {scores}{in_sample_note(ens.get('decision'))}  ({weights})"
            + ("" if rec else f"  [ensemble.json is not current: {why}]"))
