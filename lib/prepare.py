"""Stage 00: check a competition's input and build ``folds.csv``, ``test.csv`` and ``competition.yaml``.

Every problem found (missing or unreadable audio, duplicate ids, unknown labels, empty cells,
mixed sample rates, a sample submission that does not match the test set) is collected and
reported together, by file and line, and nothing is written then.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import yaml
from tqdm.auto import tqdm

from . import audio
from .config import ConfigError
from .folds import fold_table, groups_crossing_folds, make_folds
from .utils import atomic_path, write_csv


class InputError(ValueError):
    """The competition's input has problems; ``problems`` lists each one (file, line, what)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        shown = problems[:50] + ([f"... and {len(problems) - 50} more"] if len(problems) > 50 else [])
        super().__init__(f"{len(problems)} problem(s) in the input:\n  " + "\n  ".join(shown))


def id_to_file(sample_id: str, spec: dict) -> str:
    """Map an id to its audio path, relative to the data folder.

    ``spec`` holds ``template`` (a ``str.format`` pattern with ``{id}``), and optionally
    ``pattern`` and ``replace``: a regular expression substitution applied to the id first.
    Example (breathing train set): ``{pattern: "_[IE]_", replace: "_", template:
    "train/{id}.wav"}`` maps ``steth_20180814_09_37_11_I_004`` to
    ``train/steth_20180814_09_37_11_004.wav``.
    """
    if spec.get("pattern"):
        sample_id = re.sub(spec["pattern"], spec.get("replace", ""), sample_id)
    return spec["template"].format(id=sample_id)


def group_of(sample_id: str, spec: dict) -> str:
    """Group key of an id from ``spec['regex']``: the first capture group (or the whole match).

    Returns the id itself when the regex does not match (the row is then its own group).
    """
    m = re.search(spec["regex"], sample_id)
    if not m:
        return sample_id
    return m.group(1) if m.groups() else m.group(0)


def _read_csv(path: Path, columns: list[str], problems: list[str]) -> pd.DataFrame | None:
    if not path.is_file():
        problems.append(f"{path}: file not found")
        return None
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        problems.append(f"{path}: missing column(s) {missing}; found {list(df.columns)}")
        return None
    for col in columns:
        for i in df.index[df[col].str.strip() == ""]:
            problems.append(f"{path} line {i + 2}: empty {col!r}")
    for i in df.index[df.duplicated(columns[0], keep="first")]:
        problems.append(f"{path} line {i + 2}: duplicate id {df.at[i, columns[0]]!r}")
    return df


def _resolve_audio(df: pd.DataFrame, csv: Path, id_col: str, spec: dict, root: Path, problems: list[str], desc: str):
    paths, rates, durations = [], [], []
    for i, sample_id in enumerate(tqdm(df[id_col], desc=f"checking {desc} audio", unit="file", leave=False)):
        path = root / id_to_file(sample_id, spec)
        sr = frames = None
        try:
            sr, frames, _ = audio.info(path)
            if frames == 0:
                problems.append(f"{csv} line {i + 2}: {path} has no samples")
        except audio.AudioError as exc:
            problems.append(f"{csv} line {i + 2} (id {sample_id!r}): {exc}")
        paths.append(str(path))
        rates.append(sr)
        durations.append(frames / sr if sr else None)
    df["path"], df["sample_rate"], df["duration_s"] = paths, rates, durations


def _check_rates(tables: list[pd.DataFrame], wanted: int | None, problems: list[str]) -> int | None:
    """With no explicit rate every file must share one native rate; returns the rate in Hz."""
    rates = pd.concat([t[["path", "sample_rate"]] for t in tables]).dropna()
    counts = rates["sample_rate"].value_counts()
    if wanted or counts.empty:
        return wanted
    if len(counts) > 1:
        main = counts.index[0]
        odd = rates[rates["sample_rate"] != main]
        examples = ", ".join(f"{p} ({int(r)} Hz)" for p, r in odd.head(10).itertuples(index=False))
        problems.append(
            f"files have different sample rates {dict(counts.astype(int))} and the config sets no "
            f"'audio.sample_rate' to resample them to; e.g. {examples}")
    return int(counts.index[0])


def prepare(cfg: dict, out_dir: str | Path) -> dict:
    """Validate the input described by competition config ``cfg``; write the stage-00 artifacts.

    Writes ``out_dir/folds.csv`` (id, path, target, group, fold, sample_rate, duration_s),
    ``out_dir/test.csv`` (id, path, sample_rate, duration_s; when the config has a test set) and
    ``out_dir/competition.yaml`` (the resolved config that later stages read).
    Returns a summary dict. Raises ``InputError`` listing every problem; nothing is written then.
    """
    out_dir = Path(out_dir)
    root = Path(cfg["data_dir"])
    problems: list[str] = []
    if not root.is_dir():
        raise InputError([f"{root}: data folder not found (set data_dir in the config or pass --data-dir)"])

    tr = cfg["train"]
    train_csv = root / tr["csv"]
    train = _read_csv(train_csv, [tr["id_column"], tr["target_column"]], problems)
    if train is not None:
        unknown = ~train[tr["target_column"]].isin(cfg["classes"]) & (train[tr["target_column"]].str.strip() != "")
        for i in train.index[unknown]:
            problems.append(f"{train_csv} line {i + 2}: unknown label {train.at[i, tr['target_column']]!r}; "
                            f"expected one of {cfg['classes']}")
        _resolve_audio(train, train_csv, tr["id_column"], tr["audio"], root, problems, "train")

    test = None
    if cfg.get("test"):
        te = cfg["test"]
        test_csv = root / te["csv"]
        test = _read_csv(test_csv, [te["id_column"]], problems)
        if test is not None:
            _resolve_audio(test, test_csv, te["id_column"], te["audio"], root, problems, "test")

    sub = cfg.get("submission")
    if sub and test is not None:
        sample_csv = root / sub["sample"]
        sample = _read_csv(sample_csv, [sub["id_column"], sub["target_column"]], problems)
        if sample is not None:
            missing = set(test[cfg["test"]["id_column"]]) ^ set(sample[sub["id_column"]])
            if missing:
                problems.append(f"{sample_csv}: ids differ from {test_csv} in {len(missing)} row(s), "
                                f"e.g. {sorted(missing)[:5]}")

    tables = [t for t in (train, test) if t is not None]
    rate = _check_rates(tables, cfg["audio"]["sample_rate"], problems)
    if problems:
        raise InputError(problems)

    folds = pd.DataFrame({
        "id": train[tr["id_column"]], "path": train["path"], "target": train[tr["target_column"]],
    })
    folds["group"] = [group_of(i, cfg["groups"]) for i in folds["id"]] if cfg.get("groups") else folds["id"]
    fc = cfg["folds"]
    try:
        folds["fold"] = make_folds(folds["target"], folds["group"], fc["n_folds"], fc["scheme"], fc["seed"])
    except ValueError as exc:
        raise ConfigError(f"folds: {exc}") from exc
    folds["sample_rate"], folds["duration_s"] = train["sample_rate"].astype(int), train["duration_s"]
    crossing = groups_crossing_folds(folds)
    assert not crossing, f"groups split across folds: {crossing[:5]}"  # sklearn guarantees this

    write_csv(out_dir / "folds.csv", folds)
    if test is not None:
        test_out = pd.DataFrame({"id": test[cfg["test"]["id_column"]], "path": test["path"],
                                 "sample_rate": test["sample_rate"].astype(int), "duration_s": test["duration_s"]})
        write_csv(out_dir / "test.csv", test_out)
    resolved = dict(cfg, native_sample_rate=rate)
    with atomic_path(out_dir / "competition.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(resolved, sort_keys=False))
    return {
        "train_rows": len(folds), "test_rows": 0 if test is None else len(test),
        "groups": folds["group"].nunique(), "sample_rate": rate,
        "duration_s": (float(folds["duration_s"].min()), float(folds["duration_s"].max())),
        "fold_table": fold_table(folds),
    }
