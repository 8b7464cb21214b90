"""Stage 00: check a competition's input and build ``folds.csv``, ``test.csv`` and ``competition.yaml``.

Every problem found (missing, unreadable or truncated audio, NaN or infinite samples, duplicate
ids, two ids resolving to one file, an id whose path leaves the data folder, unknown labels, empty
cells, non-numeric metadata, mixed sample rates, a missing audio channel, a sample submission
that does not match the test set, a group split across folds, a table with a header and no rows,
a class of a binary task without training rows) is collected and reported together, by file and
line, and nothing is written then. Doubtful but possible input (a class of a multiclass or
multi-label task declared in ``classes`` without training rows) is a warning, returned in the summary.
"""
from __future__ import annotations

import ast
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import yaml

from ..core.artifacts import TEST, audio_fingerprint, blend_problem
from ..core.config import check_classes, check_loaded, row_id
from ..core.errors import AudioError, ConfigError, InputError
from ..core.paths import PSEUDO_LABEL_COMMAND, Outputs
from ..core.registry import did_you_mean
from ..core.utils import atomic_path, fingerprint, plain_number, read_text_table, row_lines, write_csv, read_artifact_csv
from ..core.progress import progress
from . import audio, matrix, segments, tasks
from .folds import KEEPS_GROUPS, fold_table, groups_crossing_folds, make_folds, small_strata
from .slices import PREFIX as SLICE_PREFIX
from .slices import category_text, slice_values, slice_warnings, unmatched_slice_values

META_PREFIX = "meta_"
"""Metadata columns are copied to ``folds.csv``/``test.csv`` as ``meta_<column>``."""
SEGMENT_COLUMNS = ["recording", "start_s", "end_s", "segments"]
"""Columns of ``folds.csv``/``test.csv`` with segments (:func:`lib.data.segments.regions` reads
them): a segment row's ``recording``, ``start_s`` and ``end_s``, or a recording's ``segments``."""


def id_to_file(sample_id: str, spec: dict, row: dict | None = None) -> str:
    """Map an id to its audio path, relative to the data folder.

    ``spec`` holds ``template`` (a ``str.format`` pattern with ``{id}`` and optionally other
    columns of the CSV ``row``, e.g. ``"{site}/{id}.wav"``), and optionally ``pattern`` and
    ``replace``: a regular expression substitution applied to the id first.
    Example (breathing train set): ``{pattern: "_[IE]_", replace: "_", template:
    "train/{id}.wav"}`` maps ``steth_20180814_09_37_11_I_004`` to
    ``train/steth_20180814_09_37_11_004.wav``.
    """
    if spec.get("pattern"):
        sample_id = re.sub(spec["pattern"], spec.get("replace", ""), sample_id)
    return spec["template"].format(**{**(row or {}), "id": sample_id})


def group_of(text: str, regex: str) -> str:
    """Group key of a text (an id or a path) from ``regex``: the first capture group (or the whole
    match). Returns the text itself when the regex does not match (the row is then its own group)."""
    m = re.search(regex, text)
    if not m:
        return text
    return m.group(1) if m.groups() else m.group(0)


def _case_variants(root: Path, pattern: str, files: list[Path]) -> list[Path]:
    """The files under ``root`` that glob ``pattern`` matches only when case is ignored (not in
    ``files``, what it matched; the same file counts once, by its inode, however a case-insensitive
    file system spells its folders). ``[]`` for a pattern with ``[..]`` classes, which chose its
    cases itself."""
    if "[" in pattern:
        return []
    anycase = "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in pattern)
    known = {_inode(p) for p in files}
    return sorted(p for p in root.glob(anycase) if p.is_file() and _inode(p) not in known)


def _inode(path: Path) -> tuple[int, int]:
    """``(device, inode)`` of a file: the same file however it is spelt."""
    s = path.stat()
    return s.st_dev, s.st_ino


def _read_rows(sec: dict, root: Path, columns: dict[str, str], problems: list[str], merge: str | None = None
               ) -> pd.DataFrame | None:
    """The rows of a split: ``id``, ``path``, ``where`` (file and line, for messages) and the
    ``columns`` (``{column: the config key that names it}``, said when the column is missing).

    From ``csv`` + ``id_column`` (paths by :func:`id_to_file`) or from the ``files`` glob (ids are
    file names, stems or paths relative to the data folder, as ``id_from`` says). ``merge``: a
    label column whose rows with the same id are merged into one (a multi-label table in long
    form, one row per label); other repeated ids are errors.
    """
    if not sec.get("csv"):
        files = sorted(p for p in root.glob(sec["files"]) if p.is_file())
        if not files:
            problems.append(f"{root / sec['files']}: no files match")
            return None
        if other := _case_variants(root, sec["files"], files):  # never dropped unsaid: a .WAV beside .wav files
            problems.append(f"{root / sec['files']}: {len(other)} file(s) match only when case is ignored, e.g. "
                            f"{other[0]} (globs are case-sensitive): write the pattern with classes such as "
                            f"'*.[wW][aA][vV]' to take them, or move them out of the folder")
        rel = [p.relative_to(root) for p in files]
        ids = [str(r) if sec["id_from"] == "path" else r.stem if sec["id_from"] == "stem" else r.name for r in rel]
        df = pd.DataFrame({"id": ids, "path": [str(p) for p in files], "where": [str(p) for p in files]})
        for i in df.index[df.duplicated("id")]:
            problems.append(f"{df.at[i, 'path']}: duplicate id {df.at[i, 'id']!r} (files of one name in two folders: set "
                            f"id_from: path in the competition config; with predict_bundle.py, whose config is the "
                            f"bundle's, rename one or list the files with ids of your own in a --test-csv)")
        return df
    path = root / sec["csv"]
    if not path.is_file():
        problems.append(f"{path}: file not found")
        return None
    try:
        df = read_text_table(path)
    except InputError as exc:  # not UTF-8, malformed, empty
        problems += exc.problems
        return None
    if df.empty:
        problems.append(f"{path}: no rows (only the header {list(df.columns)})")
        return None
    needed = {sec["id_column"]: "id_column", **columns}
    missing = [f"{c!r} ({key}{did_you_mean(c, df.columns)})" for c, key in needed.items() if c not in df.columns]
    if missing:
        problems.append(f"{path}: missing column(s) {', '.join(missing)}; found {list(df.columns)}")
        return None
    df = df.rename(columns={sec["id_column"]: "id"}) if sec["id_column"] not in columns else df.assign(id=df[sec["id_column"]])
    df["where"] = [f"{path} line {line}" for line in row_lines(path, len(df))]
    if merge:
        sep = sec["label_separator"]
        df = df.groupby("id", sort=False, as_index=False).agg(
            {c: (lambda v: sep.join(v)) if c == merge else "first" for c in df.columns if c != "id"})
    for i in df.index[df["id"].str.strip() == ""]:
        problems.append(f"{df.at[i, 'where']}: empty {sec['id_column']!r}")
    for i in df.index[df.duplicated("id", keep="first") & (df["id"] != "")]:
        problems.append(f"{df.at[i, 'where']}: duplicate id {df.at[i, 'id']!r}")
    try:
        df["path"] = [str(root / id_to_file(r["id"], sec["audio"], r)) for r in df.to_dict("records")]
    except KeyError as exc:
        usable = [c for c in df.columns if c != "where"]  # {id} is the id column, whatever its name
        problems.append(f"{path}: audio template {sec['audio']['template']!r} names column {exc.args[0]!r}, "
                        f"which the table lacks; it can name {usable}"
                        + (f" ({{id}}: the id column {sec['id_column']!r})" if sec["id_column"] != "id" else "")
                        + did_you_mean(exc.args[0], usable))
        return None
    return df


def _check_paths(df: pd.DataFrame, root: Path, problems: list[str]) -> None:
    """Report rows whose path leaves the data folder ``root`` (e.g. an id ``../../etc/x`` or an
    absolute path through the template) and different ids that resolve to the same file. Paths are
    compared lexically normalised (``os.path.abspath``, ``normcase``), not with symlinks resolved:
    audio linked into the data folder is fine."""
    top = os.path.normcase(os.path.abspath(root))
    norm = pd.Series([os.path.normcase(os.path.abspath(p)) for p in df["path"]], index=df.index)
    for i in df.index[~norm.map(lambda p: p == top or p.startswith(top.rstrip(os.sep) + os.sep))]:
        problems.append(f"{df.at[i, 'where']}: id {df.at[i, 'id']!r} maps to {df.at[i, 'path']}, outside the data folder {root}")
    named = (df["id"].str.strip() != "") & ~df.duplicated("id")  # empty and repeated ids are reported already
    for path, rows in df[named].groupby(norm[named], sort=False):
        if len(rows) > 1:
            problems.append(" and ".join(f"{w} (id {i!r})" for w, i in zip(rows["where"], rows["id"]))
                            + f": different ids resolve to the same file {path}")


def _labels(df: pd.DataFrame, sec: dict, task: str, problems: list[str]) -> list[list[str]]:
    """Each row's labels (a list: one label, or for multi-label tasks any number)."""
    if sec.get("target_from") == "folder":
        return [[Path(p).parent.name] for p in df["path"]]
    if sec.get("target_columns"):
        out = []
        for i in df.index:
            row = []
            for col in sec["target_columns"]:
                value = df.at[i, col].strip()
                if value not in ("0", "1", "0.0", "1.0"):
                    problems.append(f"{df.at[i, 'where']}: {col!r} is {value!r}; expected 0 or 1")
                elif float(value) == 1:
                    row.append(col)
            out.append(row)
        return out
    col = sec["target_column"]
    out = []
    for i in df.index:
        value = df.at[i, col].strip()
        if task == "multilabel":
            if value.startswith("[") and value.endswith("]"):  # a Python list literal: "['a', 'b']"
                if re.search(r"""['"]\s+['"]""", value):  # Python would join "['a' 'b']" into 'ab'
                    problems.append(f"{df.at[i, 'where']}: {col!r} is {value!r}, a list without commas (as numpy "
                                    f"prints one); expected e.g. ['a', 'b']")
                    out.append([])
                    continue
                try:
                    out.append([str(v) for v in ast.literal_eval(value)])
                    continue
                except (ValueError, SyntaxError):
                    problems.append(f"{df.at[i, 'where']}: {col!r} is {value!r}, not a readable list of labels")
            out.append([v.strip() for v in value.split(sec["label_separator"]) if v.strip()])
        else:
            if value == "":
                problems.append(f"{df.at[i, 'where']}: empty {col!r}")
            out.append([value] if value else [])  # an empty cell is reported once, not also as a label
    return out


def _at(where: str, problem: str) -> str:
    """``problem`` prefixed by its row's ``where`` (``test.csv line 5``), unless it begins with it
    already (a table of files, ``--test-files``, whose ``where`` is the path the problem names)."""
    return problem if problem.startswith(f"{where}: ") or problem.startswith(f"{where} ") else f"{where}: {problem}"


def _resolve_audio(df: pd.DataFrame, channel: int | None, problems: list[str], desc: str,
                   lenient: bool = False, silence_hint: str = "audio.bad_test_files: silence") -> None:
    """Add ``sample_rate``, ``duration_s`` and ``channels`` from each file's header. A file that
    exists but cannot be used (unreadable, truncated, no samples, NaN samples, too few channels)
    is a problem, or with ``lenient`` (``audio.bad_test_files: silence``, test rows) the reason
    in the row's ``bad_audio`` column (``""`` for a sound file), left for :func:`_silence_bad_files`;
    a test file's problem names ``silence_hint``, the setting that would predict it from silence."""
    rates, durations, channels, bad = [], [], [], []
    for where, path in progress(list(zip(df["where"], df["path"])), desc=f"checking {desc} audio", unit="file", leave=False):
        sr = frames = n_channels = None
        found = []
        try:
            h = audio.header(path)
            sr, frames, n_channels = int(h.samplerate), int(h.frames), int(h.channels)
            found += audio.defects(path, h)
            if frames == 0:
                found.append(f"{path} has no samples")
            if channel is not None and channel >= n_channels:
                found.append(f"{path} has {n_channels} channel(s); audio.channel {channel} does not exist")
        except audio.AudioError as exc:
            if not Path(path).is_file():  # a missing file is a wrong template or id, never silenced
                problems.append(_at(where, str(exc)))
            else:
                found.append(str(exc))
        if found and lenient:
            sr = frames = n_channels = None
        else:
            hint = f" ({silence_hint} predicts such a test file from silence)" if desc == "test" else ""
            problems.extend(_at(where, f) + hint for f in found)
        bad.append("; ".join(found) if lenient else "")
        rates.append(sr)
        durations.append(frames / sr if sr else None)
        channels.append(n_channels)
    df["sample_rate"], df["duration_s"], df["channels"] = rates, durations, channels
    if lenient:
        df["bad_audio"] = bad


def _silence_bad_files(test: pd.DataFrame | None, folder: Path, rate: int, seconds: float,
                       channel: int | None = None) -> list[str]:
    """Point each test row whose file cannot be used (``bad_audio``, :func:`_resolve_audio` with
    ``lenient``) at a silent WAV of ``seconds`` at ``rate`` Hz (``channel + 1`` channels, so that
    ``audio.channel`` exists in it) written into ``folder`` (the output folder's ``silence/``; the
    data folder is never written to), so that every test row gets a prediction; removes ``folder``
    when none is needed (also without a test set). Returns one warning per such row."""
    shutil.rmtree(folder, ignore_errors=True)
    bad = [] if test is None or "bad_audio" not in test else test.index[test["bad_audio"] != ""]
    if not len(bad):
        return []
    folder.mkdir(parents=True)
    out, channels = [], (channel or 0) + 1
    for k, i in enumerate(bad):
        path = folder / f"{k}.wav"
        sf.write(path, np.zeros((max(1, int(round(seconds * rate))), channels), np.float32), rate, subtype="PCM_16")
        out.append(f"{_at(test.at[i, 'where'], test.at[i, 'bad_audio'])}: predicted from silence "
                   f"(audio.bad_test_files: silence; {path})")
        test.loc[i, ["path", "sample_rate", "duration_s", "channels"]] = [str(path), rate, seconds, channels]
    test[["sample_rate", "channels"]] = test[["sample_rate", "channels"]].astype(int)  # (the bad rows' None: floats)
    return out


def _resolve_matrices(df: pd.DataFrame, spec: dict, fps: float, problems: list[str], desc: str) -> None:
    """Add ``sample_rate`` (none), ``duration_s`` (frames / ``fps``) and ``channels`` (1) from each
    row's matrix (:func:`lib.data.matrix.read_matrix`: every cell checked)."""
    durations = []
    for where, path in progress(list(zip(df["where"], df["path"])), desc=f"checking {desc} matrices", unit="file", leave=False):
        try:
            durations.append(matrix.read_matrix(path, spec).shape[1] / fps)
        except AudioError as exc:
            problems.append(f"{where}: {exc}")
            durations.append(None)
    df["sample_rate"], df["duration_s"], df["channels"] = None, durations, 1


def _resolve_inputs(df: pd.DataFrame, cfg: dict, problems: list[str], desc: str,
                    silence_hint: str = "audio.bad_test_files: silence") -> None:
    """:func:`_resolve_matrices` when the competition ships matrices (``matrix`` section), else
    :func:`_resolve_audio` (lenient for test rows with ``audio.bad_test_files: silence``)."""
    if cfg.get("matrix"):
        _resolve_matrices(df, cfg["matrix"], segments.frames_per_second(cfg), problems, desc)
    else:
        _resolve_audio(df, cfg["audio"]["channel"], problems, desc, silence_hint=silence_hint,
                       lenient=desc == "test" and cfg["audio"].get("bad_test_files") == "silence")  # (older bundles: none)


def _check_rates(tables: list[pd.DataFrame], wanted: int | None, problems: list[str], fix: str = "") -> int | None:
    """With no explicit rate every file must share one native rate; returns the rate in Hz.
    ``fix``: what to do, added to the problem (default: set ``audio.sample_rate``)."""
    rates = pd.concat([t[["path", "sample_rate"]] for t in tables]).drop_duplicates("path").dropna()  # files
    counts = rates["sample_rate"].value_counts()
    if wanted or counts.empty:
        return wanted
    if len(counts) > 1:
        main = counts.index[0]
        odd = rates[rates["sample_rate"] != main]
        examples = ", ".join(f"{p} ({int(r)} Hz)" for p, r in odd.head(10).itertuples(index=False))
        problems.append(
            f"files have different sample rates ({', '.join(f'{int(r)} Hz: {n} files' for r, n in counts.items())}) "
            f"and the config sets no "
            f"'audio.sample_rate' to resample them to; e.g. {examples}{fix}")
    return int(counts.index[0])


def audio_notes(tables: list[pd.DataFrame], audio_cfg: dict) -> list[str]:
    """What stage 00 (and a bundle's test set) says about how the audio files of ``tables`` are
    read under the competition's ``audio`` section: the files read resampled to
    ``audio.sample_rate``, by native rate, the files of several channels (averaged, or
    ``audio.channel`` taken) and those shorter than a tenth of ``audio.clip_seconds``; each file
    once, however many segment rows it has. ``[]`` when
    neither (matrices: no audio)."""
    files = pd.concat([t for t in tables if t is not None and "sample_rate" in t]).drop_duplicates("path")
    notes, wanted = [], audio_cfg["sample_rate"]
    other = files["sample_rate"].dropna()
    other = other[other != wanted] if wanted else other.iloc[:0]
    if len(other):
        notes.append(f"{len(other)} files are read resampled to {wanted} Hz ({audio_cfg['resample_type']}), from "
                     + ", ".join(f"{int(r)} Hz ({n})" for r, n in other.value_counts().items()))
    several = int((files["channels"] > 1).sum()) if "channels" in files else 0
    if several:
        notes.append(f"{several} recordings have several channels: " + (
            "averaged to mono (audio.channel: N takes channel N instead)" if audio_cfg.get("channel") is None
            else f"channel {audio_cfg['channel']} taken"))
    clip = audio_cfg.get("clip_seconds")
    tiny = files[files["duration_s"] < clip / 10] if clip and "duration_s" in files else files.iloc[:0]
    if len(tiny):  # (a 1-sample file became a 1.5-s constant, unsaid: probe)
        first = tiny.iloc[0]
        notes.append(f"{len(tiny)} recordings are shorter than a tenth of the {clip:g}-s window, padded to it "
                     f"({audio_cfg['pad']}): e.g. {first['path']} ({first['duration_s']:.3g} s)")
    return notes


def _metadata(df: pd.DataFrame, meta: dict, problems: list[str]) -> pd.DataFrame:
    """The ``meta_<column>`` table: numeric columns as floats (empty cells NaN, imputed at training
    time), categorical ones as text (empty cells ``""``, a category of their own)."""
    out = pd.DataFrame(index=df.index)
    for col in meta["numeric"]:
        text = df[col].str.strip()
        values = pd.to_numeric(text, errors="coerce")
        for i in df.index[values.isna() & (text != "")]:
            problems.append(f"{df.at[i, 'where']}: metadata {col!r} is {df.at[i, col]!r}; expected a number "
                            f"(an empty cell for a missing value)")
        out[META_PREFIX + col] = values
    for col in meta["categorical"]:
        out[META_PREFIX + col] = category_text(df[col])
    return out


def _groups(df: pd.DataFrame, spec: dict | None, root: Path, problems: list[str],
            warnings: list[str] | None = None) -> list[str]:
    """Each row's group: by the ``groups`` section, else the row's recording (segment rows of one
    recording are one group), else the row itself. A ``regex`` that matches none of the rows'
    texts is a problem (a typo would make every row its own group); one that misses some rows is
    a warning naming how many and a few, when ``warnings`` is given (those rows are their own group)."""
    if not spec:
        return list(df["recording"] if "recording" in df else df["id"])
    if spec.get("column") and spec["column"] not in df:  # (a folder of test files: predict_bundle --test-files)
        problems.append(f"{df['where'].iloc[0]}: no column {spec['column']!r} for the rows' groups (groups.column; "
                        f"a folder of files has no columns: list them in a CSV with it, e.g. --test-csv)")
        return list(df["id"])
    if spec.get("column"):  # (segment rows: their recording's row holds the cell, said once)
        where = df["recording_where"] if "recording_where" in df else df["where"]
        for w in dict.fromkeys(where[df[spec["column"]].str.strip() == ""]):
            problems.append(f"{w}: empty group column {spec['column']!r}")
        return list(df[spec["column"]])
    on = spec.get("on", "id")
    texts = list(df["id"] if on == "id" else [str(Path(p).relative_to(root)) for p in df["path"]])
    missed = [t for t in texts if not re.search(spec["regex"], t)]
    what = f"groups.regex {spec['regex']!r} matches no {'id' if on == 'id' else 'path'} of"
    examples = ", ".join(map(repr, missed[:3]))
    if len(missed) == len(texts):
        first = df["where"].iloc[0]
        source = first.split(" line ")[0] if " line " in first else "the audio files"
        problems.append(f"{what} the {len(texts)} rows of {source} (e.g. {examples}): "
                        f"every row would be its own group")
    elif missed and warnings is not None:
        warnings.append(f"{what} {len(missed)} of {len(texts)} rows (e.g. {examples}): each of them is its own group")
    return [group_of(t, spec["regex"]) for t in texts]


def _test_table(test: pd.DataFrame, meta: pd.DataFrame, groups: list[str] | None, cfg: dict) -> pd.DataFrame:
    """``test.csv``'s rows: id, path, (group,) sample_rate, duration_s, channels, metadata, and the
    ``slice_<column>`` of ``decision.slice_prior`` (its test rows' priors, lib.evaluation.decisions)."""
    slice_col = (cfg.get("decision") or {}).get("slice_prior")
    table = pd.concat([test[["id", "path", "sample_rate", "duration_s", "channels"]], meta,
                       test[[c for c in SEGMENT_COLUMNS if c in test]],
                       slice_values(test, [slice_col] if slice_col else [])], axis=1)
    if groups is not None:  # 04 aggregates test recordings by group too
        table.insert(2, "group", groups)
    return table


def prepare_test(cfg: dict, out_dir: str | Path, ids_hint: str | None = None) -> dict:
    """Stage 00 for a test set alone (prediction from a model bundle, :mod:`lib.shipping`):
    validate the audio of ``cfg['test']`` under ``cfg['data_dir']`` and write ``out_dir/test.csv``
    and ``competition.yaml`` under the stage-00 record (no ``folds.csv``).

    ``cfg`` is the bundle's resolved competition config (``native_sample_rate``: the rate the
    models were trained at). Returns ``{"test_rows", "recordings", "sample_rate", "warnings"}``
    (the sample submission's columns that are no class, the test files predicted from silence:
    :func:`_silence_bad_files`) and ``"notes"`` (:func:`audio_notes`). Raises ``InputError``
    listing every problem: the problems stage 00 reports (the sample submission's too, when
    ``cfg`` has a ``submission`` section; ``ids_hint`` added after sample ids that differ from
    the test set's), and test audio at another native rate than the training audio when the
    config resamples nothing (never resampled silently).
    """
    root = Path(cfg["data_dir"])
    if not root.is_dir():
        raise InputError([f"{root}: test data folder not found"])
    problems: list[str] = []
    te = cfg["test"]
    test = _read_rows(te, root, _test_columns(cfg), problems)
    if test is not None:
        _check_paths(test, root, problems)
        hint = "predict_bundle.py --bad-test-files silence, or in a notebook predict_bundle(..., bad_test_files='silence'),"
        _resolve_inputs(test, cfg, problems, "test", silence_hint=hint)
        tables, segment_counts = _with_segments(cfg, {"test": test}, problems)
        test = tables["test"]
        native = cfg["native_sample_rate"]
        fix = (f"; a bundle reads test audio as its competition config says: audio.sample_rate: {native} there "
               f"(then 00-05 again) makes a bundle that resamples such files")
        rate = _check_rates([test], cfg["audio"]["sample_rate"], problems, fix)
        if not cfg["audio"]["sample_rate"] and rate and rate != native:
            problems.append(f"{root}: test audio at {rate} Hz, but the models were trained on {native} Hz "
                            f"and the competition config resamples nothing{fix}")
        meta = _metadata(test, cfg["metadata"], problems)
        groups = _groups(test, cfg["groups"], root, problems) if test_groups_key(cfg) else None
    warnings: list[str] = _segment_warnings(segment_counts) if test is not None else []
    _check_sample_submission(cfg, root, test, problems, warnings, ids_hint)  # before any prediction, not after all of it
    if problems or test is None:
        raise InputError(problems)
    out = Outputs(Path(out_dir))
    record = out.prepared()
    record.begin(out.root)
    silenced = _silence_bad_files(test, out.root / "silence", rate or cfg["native_sample_rate"],
                                  cfg["audio"]["clip_seconds"], cfg["audio"]["channel"])
    write_csv(out.test, _test_table(test, meta, groups, cfg))
    with atomic_path(out.competition) as tmp:
        tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
    record.commit([out.competition, out.test, *sorted((out.root / "silence").glob("*.wav"))],
                  fingerprint(cfg, list(test["id"])))
    notes = [] if cfg.get("matrix") else audio_notes([test], cfg["audio"])
    longer = 0 if cfg["audio"]["hop_seconds"] else _longer_than_window(test, cfg["audio"])
    if longer:  # as stage 00 says it (probe: a hidden test set of longer recordings was predicted from their start, unsaid)
        notes.append(f"{longer} test {'segments' if cfg.get('segments') else 'recordings'} are longer than the "
                     f"{cfg['audio']['clip_seconds']:g}-s "
                     f"window: each is predicted from its start (unless its experiment sets tta.hop_seconds), since "
                     f"the bundle's competition config cuts no windows (audio.hop_seconds unset)")
    return {"test_rows": len(test), "recordings": test["path"].nunique(), "sample_rate": rate,
            "warnings": warnings + silenced, "notes": notes}


def _longer_than_window(table: pd.DataFrame, audio_cfg: dict) -> int:
    """How many stretches (recordings or their segments) of a split table are longer than the
    window ``audio_cfg["clip_seconds"]``: without ``audio.hop_seconds`` only their start is heard."""
    return int((np.diff(segments.regions(table)[:, 1:]) > audio_cfg["clip_seconds"] + 1e-6).sum())


def _earlier_folds(out: Outputs, folds: pd.DataFrame, scheme: str) -> list[str]:
    """What 00 says of the ``folds.csv`` it replaces: the pseudo-labelled rows it held
    (``pseudo_label.py``'s, fold -1, which 00 does not write) and how many of the rows it shares
    with ``folds`` moved to another fold (drawn again: a label fixed in ``train.csv`` reshuffles a
    stratified scheme's folds, and every model is then trained again); an unreadable one: nothing."""
    if not out.folds.is_file():
        return []
    try:
        old = pd.read_csv(out.folds, usecols=["id", "fold"], dtype={"id": str})
    except (ValueError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError):  # replaced anyway
        return []
    said, pseudo = [], int((old["fold"] < 0).sum())
    if pseudo:  # pseudo_label.py's rows: stage 00 writes the labelled rows alone
        said.append(f"{out.folds} held {pseudo} pseudo-labelled rows (fold -1, pseudo_label.py); the folds.csv "
                    f"written now has the labelled rows alone: to add them again, run pseudo_label.py "
                    f"--output-dir PARENT --to {out.root} --force")
    both = old[old["fold"] >= 0].drop_duplicates("id").merge(folds[["id", "fold"]].astype({"id": str}), on="id")
    moved = int((both["fold_x"] != both["fold_y"]).sum())
    if moved and scheme != "predefined":
        said.append(f"the folds differ from the earlier folds.csv's: {moved} of the {len(both)} rows both hold are in "
                    f"another fold now ({scheme} folds are drawn from the labels, groups and rows, so one changed "
                    f"label can move many rows); 02 trains every model again, and OOF scores before and after are "
                    f"on other folds. To keep folds fixed, copy folds.csv's fold column into train.csv and set "
                    f"folds.column to it")
    return said


def _write_prepared(out: Outputs, folds: pd.DataFrame, test: pd.DataFrame | None, resolved: dict) -> list[str]:
    """Write ``folds.csv``, ``test.csv`` (removed when the competition has none) and
    ``competition.yaml`` under one record (:mod:`lib.core.artifacts`): removed first, written last,
    its info the audio read (``{"audio": {split: audio_fingerprint}}``, which feature caches are
    checked against: :meth:`lib.core.paths.Outputs.audio_changed`).
    Then remove stage 04's blend when it was not made from what was just written
    (:func:`drop_stale_blend`); returns the names of the files removed."""
    record = out.prepared()
    test_before = out.test_id()
    record.begin(out.root)
    (out.root / PSEUDO_LABEL_COMMAND).unlink(missing_ok=True)  # 00's tables now, not pseudo_label.py's
    write_csv(out.folds, folds)
    if test is None:
        out.test.unlink(missing_ok=True)
    else:
        write_csv(out.test, test)
    with atomic_path(out.competition) as tmp:
        tmp.write_text(yaml.safe_dump(resolved, sort_keys=False))
    record.commit([out.folds, out.competition, *sorted((out.root / "silence").glob("*.wav"))]
                  + ([out.test] if test is not None else []), fingerprint(resolved),
                  info={"audio": tables_audio(out, test is not None)})
    return drop_stale_blend(out, test_changed=out.test_id() != test_before)


def tables_audio(out: Outputs, with_test: bool) -> dict[str, str]:
    """``{split: audio_fingerprint}`` of the ``folds.csv`` (and ``test.csv``) just written in
    ``out``, read back as 01 reads them (ids as text): what stage 00's record holds under
    ``info["audio"]`` (feature caches, predictions and blends are checked against it)."""
    return {split: audio_fingerprint(read_artifact_csv(path))
            for split, path in (("train", out.folds), ("test", out.test)) if split == "train" or with_test}


def drop_stale_blend(out: Outputs, test_changed: bool, stage: str = "00_prepare.py") -> list[str]:
    """Remove stage 04's results (its record first, then ``submission.csv``, ``ensemble.json`` and
    the ``ensemble/`` report) when they were not made from the ``folds.csv``, ``competition.yaml``
    and test table just written (other folds or classes, another decision or submission section,
    another test set: the one its record names, :meth:`lib.core.paths.Outputs.test_id`, else
    ``test_changed`` for blends of earlier versions), or when their record is not complete. Left in place, a
    ``submission.csv`` of the earlier folds looked like this run's. Without 04's record or
    ``ensemble.json`` nothing is removed. ``stage``: the command removing it, in the reason left
    beside the record (:meth:`lib.core.artifacts.Record.retire`). Returns the names removed."""
    files = [out.root / "ensemble.record.json", out.submission, out.root / "ensemble.json", out.root / "ensemble"]
    if not (files[0].exists() or files[2].exists()):  # no blend of 04's: a submission.csv beside is not its
        return []
    rec, _ = out.ensembled.check(hashes=False)
    if rec is not None and TEST in rec["inputs"]:  # the test set it was made from (since this version): also a
        test_changed = rec["inputs"][TEST] != out.test_id()  # file replaced under its name, or a 00 interrupted
    if rec is not None and not test_changed and not blend_problem(rec, out.load_split("train"), out.load_competition()):
        return []
    removed = [f.name for f in files if f.exists()]
    # the record first (an interrupted removal leaves no current blend), its reason left for the stages that need it
    out.ensembled.retire(f"removed by {stage}: made from other folds, competition config or test set than the "
                         f"current ones, or left unfinished")
    for f in files[1:]:
        shutil.rmtree(f) if f.is_dir() else f.unlink(missing_ok=True)
    return removed


def _read_train(cfg: dict, root: Path, problems: list[str]
                ) -> tuple[pd.DataFrame | None, list[list[str]] | None]:
    """Read the training split of ``cfg`` under the data folder ``root``: its rows
    (:func:`_read_rows`, with the target, group, fold, slice and metadata columns), each
    row's labels (``None`` when segments carry their own: :func:`_segment_labels` gives them
    later), the paths checked (:func:`_check_paths`) and the files' durations added
    (:func:`_resolve_inputs`). Returns ``(rows, labels)``, or ``(None, None)`` when the rows cannot
    be read. Problems are added to ``problems``."""
    tr = cfg["train"]
    named = [("train.target_column", tr.get("target_column")),
             *(("train.target_columns", c) for c in tr.get("target_columns") or []),
             ("groups.column", (cfg.get("groups") or {}).get("column")), ("folds.column", cfg["folds"].get("column")),
             *(("slices", c) for c in cfg.get("slices", [])),
             *(("folds.stratify_by", c) for c in cfg["folds"].get("stratify_by", []))]
    columns: dict[str, str] = {}
    for key, c in [*named, *((k, c) for c, k in _metadata_columns(cfg).items())]:
        if c:
            columns.setdefault(c, key)  # said with the first key that names it
    merge = tr.get("target_column") if cfg["task"] == "multilabel" else None
    train = _read_rows(tr, root, columns, problems, merge)
    if train is None:
        return None, None
    labels = None if segments.unit(cfg) == "segment" else _labels(train, tr, cfg["task"], problems)
    column = cfg["folds"].get("column")
    if column and column in train:  # an empty cell would become a fold of its own
        problems += [f"{w}: empty fold column {column!r}" for w in train["where"][train[column].str.strip() == ""]]
    _check_paths(train, root, problems)
    _resolve_inputs(train, cfg, problems, "train")
    return train, labels


def _segment_labels(rows: pd.DataFrame, cfg: dict) -> list[list[str]]:
    """The labels of segment rows (:func:`lib.data.segments.segment_rows`): their class, or for a
    multi-label task the labels joined by ``+`` in it (none for ``segments.none_label``)."""
    if cfg["task"] == "multilabel":
        none = cfg["segments"]["none_label"]
        return [[] if str(v) == none else str(v).split("+") for v in rows["segment_label"]]
    return [[str(v)] for v in rows["segment_label"]]


def _check_labels(cfg: dict, root: Path, train: pd.DataFrame, labels: list[list[str]], problems: list[str],
                  warnings: list[str], check_found_classes) -> None:
    """Fill ``cfg['classes']`` from the ``labels`` when the config lists none (then checked by
    ``check_classes`` and ``check_found_classes``) and check every row's labels against the
    classes. Problems are added to ``problems`` (also a class of a binary task without training
    rows), other classes without training rows to ``warnings``; raises ``ConfigError`` when
    classes taken from the data do not fit the config."""
    tr = cfg["train"]
    source = root / (cfg["segments"]["csv"] or cfg["segments"]["file"] if segments.unit(cfg) == "segment"
                     else tr.get("csv") or tr["files"])
    if cfg["task"] == "multilabel":  # folds.csv joins a row's labels with LABEL_SEP: a class holding it would split
        sep = tasks.LABEL_SEP
        named = sorted(c for c in cfg.get("classes") or [] if sep in c)
        found = sorted({label for row in labels for label in row if sep in label})
        if named or found:
            fix = ("rename them" if named else "rename those columns" if tr.get("target_columns") else
                   "segment labels are split on '+' only: rename them" if segments.unit(cfg) == "segment" else
                   f"if that column lists several labels a row separated by {sep!r}, set train.label_separator: "
                   f"{sep!r} (it is {tr['label_separator']!r})")
            raise ConfigError(f"{'classes' if named else source}: label(s) {(named or found)[:5]} contain {sep!r}, "
                              f"which a multi-label class name cannot hold; {fix}")
    if cfg["task"] == "multilabel" and not tr.get("target_columns") and (hint := _separator_hint(cfg, labels)):
        raise ConfigError(f"{source}: {hint}")
    if cfg.get("classes") is None:
        cfg["classes"] = sorted({label for row in labels for label in row})
        where = f"classes found in {source}"
        if variants := _spelling_variants(cfg["classes"]):  # (each its own class, unsaid: probe)
            warnings.append(f"classes taken from {source} that differ only in case or number format are separate "
                            f"classes: {'; '.join(variants[:5])}: list `classes:` in the config to have such rows "
                            f"refused, or write them alike in the CSV")
        check_classes(cfg, where)
        if check_found_classes is not None:  # the metrics that need class names can check them only now
            check_found_classes(cfg, where)
    unknown = [f"{where}: unknown label {label!r}" for where, row in zip(train["where"], labels)
               for label in row if label not in cfg["classes"]]
    if unknown:
        problems.append("; ".join(unknown[:10]) + (f"; and {len(unknown) - 10} more" if len(unknown) > 10 else "")
                        + f"; expected one of {cfg['classes']}")
    repeated = [where for where, row in zip(train["where"], labels) if len(set(row)) < len(row)]
    if repeated:
        warnings.append(f"{len(repeated)} row(s) name a label twice, e.g. {repeated[0]}: counted once")
    found = {label for row in labels for label in row}
    absent = [c for c in cfg["classes"] if c not in found]
    if absent and cfg["task"] == "binary":  # a model cannot learn a binary task from one class
        problems.append(f"{source}: class(es) {absent} of the binary task "
                        f"{cfg['classes']} have no training rows; both classes need rows")
    elif absent:
        warnings.append(f"class(es) {absent} in classes have no training rows: no model learns them "
                        f"(their submission columns are still written)")


def _label_key(label: str):
    """What two spellings of one label share: its number (``3``, ``3.0``) or its letters in one
    case without the spaces around them."""
    number = plain_number(label)  # (digits only: '1_12' and '11_2' are two labels, as floats they were one)
    return label.strip().casefold() if number is None else number


def _spelling_warnings(cfg: dict, folds: pd.DataFrame) -> list[str]:
    """00's warnings for values of one training column of ``folds`` (``folds.csv``'s table) that
    read as one (:func:`_spelling_variants`: ``P001`` and ``p001`` or ``P001 ``) but are separate
    values: groups (one patient spelt two ways can cross folds), categorical metadata and slices
    (a slice of one row can be the worst); they went unsaid (probe)."""
    columns = {"group": "groups"} if cfg.get("groups") else {}
    columns.update({META_PREFIX + c: f"metadata.categorical {c!r}" for c in cfg["metadata"]["categorical"]})
    columns.update({SLICE_PREFIX + c: f"slices column {c!r}" for c in cfg.get("slices", [])})
    return [f"{what}: values that differ only in case, spaces or number format are separate values: "
            f"{'; '.join(variants[:5])}{f' ... ({len(variants)} in all)' if len(variants) > 5 else ''}: write each "
            f"alike in the CSV if it is one"
            for col, what in columns.items() if (variants := _spelling_variants(folds[col].astype(str).unique()))]


def _spelling_variants(classes: list[str]) -> list[str]:
    """Groups of ``classes`` that read as one label (:func:`_label_key`: ``Normal``, ``normal``;
    ``3``, ``3.0``), each as ``'a' / 'b'``."""
    groups: dict = {}
    for c in classes:
        groups.setdefault(_label_key(c), []).append(c)
    return [" / ".join(map(repr, g)) for g in groups.values() if len(g) > 1]


def _separator_hint(cfg: dict, labels: list[list[str]]) -> str | None:
    """For a multi-label training table none of whose rows has two labels: when its labels hold
    another common separator (``,``, ``|``) between labels that stand alone elsewhere or are
    classes (``owl,robin`` beside ``owl``; a class listed in ``classes`` is taken as named), what
    to set instead of ``train.label_separator``."""
    if any(len(set(row)) > 1 for row in labels):
        return None
    sep, found, declared = cfg["train"]["label_separator"], {label for row in labels for label in row}, \
        set(cfg.get("classes") or [])
    for c in ",|":  # (';' joins folds.csv's labels: refused above)
        joined = sorted(label for label in found - declared if c in label and c != sep)
        if joined and all(part.strip() in found | declared for label in joined for part in label.split(c) if part.strip()):
            return (f"no row has two labels, but {len(joined)} label(s) join classes with {c!r} (e.g. {joined[0]!r}): "
                    f"set train.label_separator: {c!r} (it is {sep!r})")
    return None


def _with_segments(cfg: dict, tables: dict[str, pd.DataFrame | None], problems: list[str]
                   ) -> tuple[dict[str, pd.DataFrame | None], dict]:
    """The split tables with the competition's segments (:mod:`lib.data.segments`): one row per
    segment (``unit: segment``) or a ``segments`` column listing each recording's segments as
    ``start:end`` seconds (``unit: recording``), and per split ``{recordings, segments,
    skipped}``. Unchanged (and ``{}``) without segments or after problems."""
    if not cfg.get("segments") or any(t is None for t in tables.values()):
        return tables, {}
    found = segments.read_segments(cfg, {s: t for s, t in tables.items() if t is not None}, problems,
                                   every_split="train" in tables)
    if problems:
        return tables, {}
    out, counts = {}, {}
    for split, rows in tables.items():
        segs = found[split]
        counts[split] = {"recordings": len(rows), "segments": len(segs), "skipped": segs.attrs["skipped"],
                         "past_end": segs.attrs["past_end"], **segments.repeats(segs)}
        if segments.unit(cfg) == "segment":
            template = row_id(cfg["segments"])
            out[split] = segments.segment_rows(rows, segs, template)
            for i in out[split].index[out[split]["id"].duplicated()]:  # a row_id template that is not unique
                problems.append(f"{out[split].at[i, 'where']}: segment id {out[split].at[i, 'id']!r} (segments.row_id "
                                f"{template!r}) is another segment's too")
        else:
            listed = {rec: " ".join(f"{a:.6f}:{b:.6f}" for a, b in zip(g["start_s"], g["end_s"]))
                      for rec, g in segs.groupby("id", sort=False)}
            out[split] = rows.assign(segments=[listed[i] for i in rows["id"]])
    return out, counts


def _segment_warnings(counts: dict) -> list[str]:
    """Warnings on the segments :func:`_with_segments` read (``counts``): segments listed twice
    and segments overlapping another of their recording, each kept as a row, a few named."""
    out = []
    for split, c in counts.items():
        for key, what in (("repeats", "listed twice (the same recording, start and end)"),
                          ("overlaps", "overlapping an earlier one of their recording")):
            if c[key]:
                out.append(f"segments ({split}): {len(c[key])} segment(s) {what}, each kept as a row of its own: "
                           + "; ".join(c[key][:3]) + (" ..." if len(c[key]) > 3 else ""))
        if c.get("past_end"):
            out.append(f"segments ({split}): {c['past_end']} segment(s) end after their recording (a last, shorter "
                       f"chunk): each is read to the recording's end and padded as audio.pad says; its row id keeps "
                       f"the end as written")
    return out


def _warn_unknown_test_values(cfg: dict, folds: pd.DataFrame, test: pd.DataFrame | None, warnings: list[str]) -> None:
    """Add to ``warnings`` the test rows' values that no training row has, with counts, in the
    categorical metadata columns (encoded as all zeros) and the ``decision.slice_prior`` column
    (left unshifted by 04: no prior is known for them)."""
    if test is None:
        return
    column = (cfg.get("decision") or {}).get("slice_prior")
    checks = [(META_PREFIX + c, f"metadata {c!r}", "they are encoded as no category (all zeros)")
              for c in cfg["metadata"]["categorical"]]
    checks += [(SLICE_PREFIX + column, f"decision.slice_prior column {column!r}",
                "04 leaves their probabilities unshifted")] if column else []
    where = Path(cfg["data_dir"]) / cfg["test"]["csv"] if cfg["test"].get("csv") else Path(cfg["data_dir"])
    for key, what, effect in checks:
        line = unknown_values_line(test[key], folds[key], what, effect)
        if line:
            warnings.append(f"{where}: {line}")


def unknown_values_line(values, known, what: str, effect: str) -> str | None:
    """The message for test rows whose ``values`` (``(rows,)``) no training row has (``known``,
    compared as :func:`lib.data.slices.unmatched_slice_values`), with their counts, naming
    ``what`` (the setting) and ``effect``; ``None`` when every value is known. Stage 00 and
    ``predict_bundle`` say it alike."""
    unknown = unmatched_slice_values(values, known)
    if not unknown:
        return None
    listed = ", ".join(f"{v!r} ({n} rows)" for v, n in list(unknown.items())[:10])
    return f"{what}: {sum(unknown.values())} test row(s) have values no training row has: {listed}; {effect}"


def _metadata_columns(cfg: dict) -> dict[str, str]:
    """The ``metadata`` section's columns, ``{column: its key}``."""
    return {c: f"metadata.{kind}" for kind in ("numeric", "categorical") for c in cfg["metadata"][kind]}


def test_groups_key(cfg: dict) -> str | None:
    """The competition key for which ``test.csv`` holds each test row's ``group`` (``groups.test``,
    for ``inputs.group_norm``, or ``decision.group_aggregate``), or ``None``: test rows have none."""
    if (cfg.get("groups") or {}).get("test"):
        return "groups.test"
    return "decision.group_aggregate" if (cfg.get("decision") or {}).get("group_aggregate") else None


def _test_columns(cfg: dict) -> dict[str, str]:
    """The test CSV's columns that the stages read, ``{column: the key that names it}``: the
    metadata, the group column when test rows need their groups (:func:`test_groups_key`), the
    ``decision.slice_prior`` column."""
    decision = cfg.get("decision") or {}
    cols = _metadata_columns(cfg)
    if (key := test_groups_key(cfg)) and cfg["groups"].get("column"):  # else groups from the ids or file paths
        cols.setdefault(cfg["groups"]["column"], f"groups.column ({key})")
    if decision.get("slice_prior"):
        cols.setdefault(decision["slice_prior"], "decision.slice_prior")
    return cols


def _read_test(cfg: dict, root: Path, problems: list[str]) -> pd.DataFrame | None:
    """The test split's rows (:func:`_read_rows`, with the columns of :func:`_test_columns`),
    their paths checked and audio headers added (:func:`_resolve_inputs`). ``None`` when the
    config has no test set or its rows cannot be read (a problem is added to ``problems`` then)."""
    if not cfg.get("test"):
        return None
    te = cfg["test"]
    test = _read_rows(te, root, _test_columns(cfg), problems)
    if test is not None:
        _check_paths(test, root, problems)
        _resolve_inputs(test, cfg, problems, "test")
    return test


def _check_sample_submission(cfg: dict, root: Path, test: pd.DataFrame | None, problems: list[str],
                             warnings: list[str], ids_hint: str | None = None) -> None:
    """When the config has a ``submission`` section and a test set was read, add to ``problems``
    a missing sample submission, a sample lacking the columns of the submission format, or one
    whose ids differ from the test rows' ``test['id']`` (``submission.unit: group``: their groups)
    or repeat; to ``warnings`` the columns of a class-column sample (``probabilities``,
    ``indicators``) that are no class, whose sample values the submission keeps. Nothing is checked for segment rows once ``problems`` holds any: the rows are then
    still recordings, whose ids are not the sample's ``<recording>#<k>``. ``ids_hint``: a problem
    added after those of ids that differ (what the caller's option changes)."""
    sub = cfg.get("submission")
    if not sub or test is None or (segments.unit(cfg) == "segment" and problems):
        return  # (segment rows: after problems the rows are still recordings, not segments)
    sample_csv = root / sub["sample"]
    if not sample_csv.is_file():
        problems.append(f"{sample_csv}: file not found (submission.sample: the sample submission, whose ids and "
                        f"order submission.csv follows; without one, remove the submission section for 00_prepare.py, "
                        f"or pass --no-submission to predict_bundle.py, which then writes test_blend.csv only)")
        return
    try:
        sample = read_text_table(sample_csv)
    except InputError as exc:
        problems += exc.problems
        return
    # classes None: the labels could not be read, which is reported already
    needed = [sub["id_column"]] + ([sub["target_column"]] if sub.get("target_column") else []) + (
        list(cfg["classes"] or []) if sub["format"] in ("probabilities", "indicators") else [])
    missing_cols = [c for c in needed if c not in sample.columns]
    extra = [c for c in sample.columns if c not in needed] if sub["format"] in ("probabilities", "indicators") else []
    if extra and cfg["classes"]:  # (a class of the sample that training lacks is typical of bird competitions)
        warnings.append(f"{sample_csv}: column(s) {extra[:10]}{' ...' if len(extra) > 10 else ''} are no classes of "
                        f"the competition: the submission keeps the sample's values there; list them in `classes:` "
                        f"if they are classes without training rows (then predicted near 0)")
    if missing_cols:
        hints = "".join(did_you_mean(c, sample.columns) for c in missing_cols)
        problems.append(f"{sample_csv}: missing column(s) {missing_cols} for submission format {sub['format']!r}; "
                        f"found {list(sample.columns)}{hints}")
    else:
        _check_sample_values(sample[sub["target_column"]] if sub.get("target_column") else None, cfg, sample_csv,
                             problems, warnings)
        ids = _groups(test, cfg["groups"], root, []) if sub.get("unit") == "group" else test["id"]
        repeated = sample[sub["id_column"]][sample[sub["id_column"]].duplicated()]
        if len(repeated):
            line = row_lines(sample_csv, len(sample))[int(repeated.index[0])]
            problems.append(f"{sample_csv}: {len(repeated)} repeated id(s) in {sub['id_column']!r}, e.g. "
                            f"{sorted(set(repeated))[:5]} (line {line}); a submission has one row per id")
        ours, theirs = set(map(str, ids)), set(sample[sub["id_column"]])
        what = "groups" if sub.get("unit") == "group" else "ids"
        if segments.unit(cfg) == "segment":  # (a probe: test.csv named, where the ids come from the segments)
            seg = cfg["segments"]
            table = f" (its segments, {root / seg['csv']})" if seg["format"] == "csv" else " (its segments)"
        else:
            table = f" ({root / cfg['test']['csv']})" if cfg["test"].get("csv") else ""
        for kept, other, said in ((ours, theirs, f"test set {what} not in the sample"),
                                  (theirs, ours, f"sample ids not among the test set's {what}{table}")):
            if kept - other:
                segment = (f" (segment ids are {row_id(cfg['segments'])}: "
                           f"segments.row_id)"
                           if segments.unit(cfg) == "segment" else "")
                problems.append(f"{sample_csv}: {len(kept - other)} {said}, e.g. {sorted(kept - other)[:5]}{segment}")
        if ids_hint and ours != theirs:
            problems.append(ids_hint)


def _check_sample_values(cells: pd.Series | None, cfg: dict, sample_csv: Path, problems: list[str],
                         warnings: list[str]) -> None:
    """The sample submission's target column ``cells`` against ``submission.format``: to
    ``warnings`` numbers where ``label`` writes class names, class names where ``probability``
    writes p(positive) (numbers are no evidence when the class names are numbers), a sample that
    joins labels with a space where ``label_separator`` is another; to ``problems`` a multi-label
    ``label`` submission whose classes hold its ``label_separator`` (the labels of a row could not
    be told apart)."""
    sub, classes = cfg["submission"], [str(c) for c in cfg["classes"] or []]
    sep = sub["label_separator"]
    if cfg["task"] == "multilabel" and sub["format"] == "label" and (joined := [c for c in classes if sep in c]):
        problems.append(f"submission.label_separator {sep!r} joins a row's labels, but the classes {joined[:5]} hold it: "
                        f"the submission could not be read back; set submission.label_separator to what the "
                        f"competition's sample uses between labels")
    if cells is None or not classes or sub["format"] not in ("label", "probability"):
        return
    cells = cells.astype(str).str.strip()
    cells = cells[cells != ""]
    split = cells.str.split(sep) if cfg["task"] == "multilabel" else cells.map(lambda c: [c])
    names = {v.strip() for row in split for v in row if v.strip()}
    numeric = bool(len(cells)) and pd.to_numeric(cells, errors="coerce").notna().all()
    col, e_g = sub["target_column"], cells.iloc[0] if len(cells) else ""
    numeric_classes = pd.to_numeric(pd.Series(classes), errors="coerce").notna().all()  # a 0 is a placeholder there
    if sub["format"] == "label" and numeric and not names & set(classes) and not numeric_classes:
        warnings.append(f"{sample_csv}: column {col!r} holds numbers (e.g. {e_g}) where submission.format label writes "
                        f"class names ({', '.join(classes[:5])}): if the competition wants "
                        + ("p(positive) there, set format: probability" if cfg["task"] == "binary" else
                           "a probability per class, set format: probabilities (a column per class)"))
    keys = {_label_key(c): c for c in classes}  # ('5' where training wrote '5.0', 'normal' for 'Normal': probe)
    if sub["format"] == "label" and (other := sorted(n for n in names - set(classes) if _label_key(n) in keys)):
        warnings.append(f"{sample_csv}: column {col!r} writes classes otherwise than train.csv (e.g. {other[0]!r} for "
                        f"{keys[_label_key(other[0])]!r}); the submission writes them as train.csv does: if the "
                        f"competition compares the text, write train.csv's labels as the sample does")
    spaced = {v for c in cells for v in c.split(" ") if v}
    if cfg["task"] == "multilabel" and sub["format"] == "label" and sep != " " and not names <= set(classes) \
            and spaced and spaced <= set(classes):
        warnings.append(f"{sample_csv}: column {col!r} joins labels with a space (e.g. {e_g!r}) where "
                        f"submission.label_separator is {sep!r} (by default train.label_separator): set "
                        f"submission.label_separator: ' ' if the competition wants spaces")
    elif sub["format"] == "label" and not numeric and cells.nunique() > 1 and (unknown := sorted(
            n for n in names - set(classes) if _label_key(n) not in keys)):  # (unsaid: probe; one value: a placeholder)
        joined = [n for n in unknown if set(re.split(r"[,;| ]+", n)) - {""} <= set(classes)]
        warnings.append(f"{sample_csv}: column {col!r} holds label(s) that are no class of the competition "
                        f"({', '.join(map(repr, unknown[:5]))}{' ...' if len(unknown) > 5 else ''}): the submission "
                        + (f"joins a row's labels with {sep!r}: set submission.label_separator to what the sample joins "
                           f"them with" if joined else
                           "never writes them; list them in `classes:` if they are classes without training rows"))
    if sub["format"] == "probability" and names & set(classes) and not numeric:
        warnings.append(f"{sample_csv}: column {col!r} holds class names (e.g. {e_g}) where submission.format "
                        f"probability writes p({cfg.get('positive') or 'positive'}): if the competition wants the label, set "
                        f"format: label")


def fine_targets(targets, meta: pd.DataFrame, comp: dict) -> list[str]:
    """Each row's fine class under the competition's ``subdivide`` section (docs/competition.md,
    "Subdivided classes"): ``<class>|<column>=<value>|...`` over ``subdivide.by`` in order
    (:data:`lib.data.tasks.FINE_SEP` between the parts); a numeric column gives its band of
    ``subdivide.bands`` (edges ``[40, 60]``: ``age<40``, ``40<=age<60``, ``age>=60``); an empty
    cell is the value ``?`` (``sex=?``, ``age=?``).

    ``targets (rows,)``: the rows' labels (binary or multiclass); ``meta``: a table with the
    rows' ``meta_<column>`` columns (stage 00's metadata table, or ``folds.csv``/``test.csv``
    read back). Returns the ``rows`` fine classes (strings). Raises ``KeyError`` for a ``by``
    column missing from ``meta``.
    """
    sub = comp["subdivide"]
    numeric = set(comp["metadata"]["numeric"])
    parts = [[str(t)] for t in targets]
    for col in sub["by"]:
        values = meta[META_PREFIX + col]
        if col in numeric:
            edges = [float(e) for e in sub["bands"][col]]
            shown = [str(int(e)) if e.is_integer() else str(e) for e in edges]
            bands = [f"{col}<{shown[0]}"] + [f"{a}<={col}<{b}" for a, b in zip(shown, shown[1:])] + [f"{col}>={shown[-1]}"]
            numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
            named = [f"{col}=?" if np.isnan(v) else bands[int(np.searchsorted(edges, v, side="right"))]
                     for v in numbers]
        else:
            named = [f"{col}={v if v != '' else '?'}" for v in category_text(values)]
        for row, name in zip(parts, named):
            row.append(name)
    return [tasks.FINE_SEP.join(row) for row in parts]


def fine_mask(table: pd.DataFrame, comp: dict) -> np.ndarray | None:
    """With ``subdivide.mask: true``, the fine classes each row of ``table`` (``folds.csv`` or
    ``test.csv``, with its ``meta_<column>`` columns) may be predicted as, ``(rows, n_fine)`` bool:
    those of its own metadata values (a woman of 45: the fine classes ``<class>|sex=F|40<=age<60``),
    every other one being impossible for it, as the voice-pathology winner masked the classes
    impossible for a patient's sex and age (MAIC 2021). A row of fold k of ``folds.csv`` (with its
    ``fold`` and ``fine_target`` columns) may only be one of the fine classes of the rows outside
    fold k, what fold k's model learnt from: its own fine class, when no other fold has it, is not
    given away to its OOF prediction. A row whose values no training row had keeps every fine class
    (of the other folds, for a row of a fold). ``None`` without ``subdivide.mask`` or
    ``fine_classes``. Raises ``KeyError`` for a ``by`` column missing from ``table``."""
    if not (comp.get("subdivide") or {}).get("mask") or not comp.get("fine_classes"):
        return None
    own = np.array([f.split(tasks.FINE_SEP, 1)[1] for f in fine_targets([""] * len(table), table, comp)])
    parents = [comp["classes"][p] for p in tasks.fine_parent(comp)]
    values = np.array([f[len(c) + len(tasks.FINE_SEP):] for f, c in zip(comp["fine_classes"], parents)])
    known = np.ones((len(table), len(values)), bool)  # the fine classes a row's model learnt from
    if {"fold", "fine_target"} <= set(table):
        fold, fine = table["fold"].astype(int).to_numpy(), table["fine_target"].astype(str).to_numpy()
        for k in np.unique(fold[fold >= 0]):
            known[fold == k] = np.isin(comp["fine_classes"], fine[fold != k])
    allowed = (own[:, None] == values[None, :]) & known
    none = ~allowed.any(1)
    allowed[none] = known[none]
    return allowed


def _strata(cfg: dict, train: pd.DataFrame) -> pd.Series | None:
    """The ``folds.stratify_by`` values of each training row joined by ``|`` (``(rows,)`` str),
    or ``None`` without the setting."""
    by = cfg["folds"].get("stratify_by")
    return train[by].astype(str).agg("|".join, axis=1) if by else None


def _build_folds(cfg: dict, train: pd.DataFrame, labels: list[list[str]], groups: list[str],
                 meta: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """``folds.csv``'s table from the checked training rows ``train``, their ``labels``, ``groups``
    and metadata table ``meta``, and the encoded targets ``y`` (:func:`lib.data.tasks.class_index`:
    ``(rows,)`` class indices, or ``(rows, n_classes)`` 0/1 for multi-label tasks).

    With ``subdivide`` the table gets each row's fine class (:func:`fine_targets`) as
    ``fine_target`` and ``cfg['fine_classes']`` the sorted fine classes found. Sets
    ``cfg['folds']['n_folds']`` to the number of folds made. Raises ``ConfigError`` when the
    folds cannot be made, ``InputError`` when a group has rows in several folds.
    """
    target = [tasks.LABEL_SEP.join(row) if cfg["task"] == "multilabel" else row[0] for row in labels]
    folds = pd.DataFrame({"id": train["id"], "path": train["path"], "target": target, "group": groups})
    y = tasks.class_index(folds["target"], cfg)
    if cfg.get("subdivide"):  # trained on the fine classes, merged back to these (lib.data.tasks)
        folds["fine_target"] = fine_targets(target, meta.set_axis(folds.index), cfg)
        cfg["fine_classes"] = sorted(set(folds["fine_target"]))
    fc = cfg["folds"]
    try:
        folds["fold"] = make_folds(y, folds["group"], fc["n_folds"], fc["scheme"], fc["seed"],
                                   train[fc["column"]] if fc.get("column") else None, _strata(cfg, train),
                                   cfg["classes"])
    except ValueError as exc:
        made = f"n_folds {fc['n_folds']}, " if fc["n_folds"] is not None else ""
        raise ConfigError(f"folds ({made}scheme {fc['scheme']}): {exc}") from exc
    made = int(folds["fold"].nunique())
    if fc["n_folds"] not in (None, made):  # predefined or leave_one_group_out: it was ignored, unsaid
        what = (f"column {fc['column']!r} holds {made} fold values" if fc["scheme"] == "predefined" else
                f"scheme leave_one_group_out makes one fold per group, {made} here")
        raise ConfigError(f"folds: n_folds is {fc['n_folds']}, but {what}: remove n_folds (the "
                          f"{'column' if fc['scheme'] == 'predefined' else 'groups'} decide(s) the folds)")
    fc["n_folds"] = made
    for col in ("sample_rate", "duration_s", "channels"):
        folds[col] = train[col].to_numpy()
    folds = pd.concat([folds, meta, slice_values(train, cfg.get("slices", [])).set_axis(folds.index)], axis=1)
    crossing = groups_crossing_folds(folds) if cfg.get("groups") or segments.unit(cfg) == "segment" else []
    if crossing and fc["scheme"] == "predefined":
        shipped = train[fc["column"]].astype(str).groupby(folds["group"].to_numpy())
        raise InputError([f"group {g!r} has rows in several of the predefined folds: column {fc['column']!r} holds "
                          + ", ".join(f"{v!r} ({n})" for v, n in shipped.get_group(g).value_counts().items())
                          for g in crossing])
    if crossing:  # a scheme that splits rows, not groups
        raise InputError([f"{len(crossing)} group(s) have rows in several folds, e.g. {crossing[:5]}: folds.scheme "
                          f"{fc['scheme']!r} ignores groups; use {KEEPS_GROUPS.get(fc['scheme'], 'group')!r} "
                          f"(or 'group') to keep each group in one fold"])
    return folds, y


def _summary(cfg: dict, folds: pd.DataFrame, y: np.ndarray, test: pd.DataFrame | None, rate: int | None,
             metas: dict[str, pd.DataFrame], warnings: list[str]) -> dict:
    """:func:`prepare`'s summary of the written ``folds`` table (``y``: its encoded targets), the
    ``test`` rows, the sample ``rate`` (Hz), the metadata tables ``metas`` of each split (their
    empty cells counted per column: ``{column: {split: n}}``) and the ``warnings``; with
    ``subdivide``, ``fine_classes`` (their number) and ``smallest_fine_class`` (``(fine class,
    training rows)``), else ``None`` both."""
    durations = folds["duration_s"].astype(float)
    fine = (folds["fine_target"].value_counts().sort_index().sort_values(kind="stable")  # smallest first
            if "fine_target" in folds else None)
    rare = [] if fine is None else [f"{k} ({v})" for k, v in fine.items() if v < cfg["folds"]["n_folds"]]
    if rare:  # printed by 00_prepare.py; the fine classes themselves are in competition.yaml
        warnings = [*warnings, f"subdivide: {len(rare)} of the {len(fine)} fine classes have fewer training rows "
                               f"than folds, so some folds train without them: {', '.join(rare[:10])}"
                               + (" ..." if len(rare) > 10 else "")]
    if fine is not None and (cfg["subdivide"] or {}).get("mask"):  # a cell of one class decides its test rows
        parent = [cfg["classes"][p] for p in tasks.fine_parent(dict(cfg, fine_classes=list(fine.index)))]
        cell = [f[len(c) + len(tasks.FINE_SEP):] for f, c in zip(fine.index, parent)]  # (a class may hold "|")
        by_cell = pd.DataFrame({"cell": cell, "parent": parent, "rows": fine.to_numpy()})
        one = [f"{r.cell} ({r.parent}, {r.rows} rows)"
               for r in by_cell.groupby("cell").filter(lambda g: len(g) == 1).sort_values("cell").itertuples()]
        if one:
            warnings = [*warnings, f"subdivide.mask: the training rows of {len(one)} value combination(s) hold one "
                                   f"class, so every test row with those values is predicted that class: "
                                   f"{', '.join(one[:10])}" + (" ..." if len(one) > 10 else "")]
    warnings = [*warnings, *slice_warnings(folds), *_spelling_warnings(cfg, folds)]
    fold = folds["fold"].to_numpy()
    n_folds = fold.max() + 1
    in_folds = {c: len(set(fold[y[:, k] == 1])) for k, c in enumerate(cfg["classes"])} if y.ndim == 2 else {}
    absent = [f"{c} ({int(y[:, k].sum())} rows, in {in_folds[c]} of {n_folds} folds)"
              for k, c in enumerate(cfg["classes"]) if in_folds.get(c, n_folds) < n_folds]
    alone = [c for c, n in in_folds.items() if n <= 1]  # every positive in one fold, or none at all
    if absent:  # single-label classes this rare are refused by make_folds
        warnings = [*warnings, f"{len(absent)} class(es) have no positive row in the validation rows of some folds "
                               f"(the class's AUROC and AP there are undefined)"
                               + (f"; {len(alone)} of them in one fold or none, whose model(s) train without them"
                                  if alone else "") + f": {', '.join(absent[:10])}" + (" ..." if len(absent) > 10 else "")]
    return {
        "train_rows": len(folds), "test_rows": 0 if test is None else len(test),
        "groups": folds["group"].nunique(), "sample_rate": rate, "classes": cfg["classes"],
        "duration_s": (float(durations.min()), float(np.median(durations)), float(durations.max())),
        "test_duration_s": None if test is None or not len(test) else tuple(
            float(f(test["duration_s"].astype(float))) for f in (np.min, np.median, np.max)),
        "fold_table": fold_table(folds["fold"].to_numpy(), y, cfg["classes"]),
        "trimmed": {split: _longer_than_window(t, cfg["audio"])
                    for split, t in (("train", folds), ("test", test)) if t is not None and not cfg["audio"]["hop_seconds"]},
        "metadata": {c: {split: int(m[c].isna().sum() + (m[c] == "").sum()) for split, m in metas.items()}
                     for c in metas["train"]},
        "audio_notes": [] if cfg.get("matrix") else audio_notes([folds, test], cfg["audio"]),
        "without_labels": int((folds["target"] == "").sum()) if cfg["task"] == "multilabel" else 0,
        "warnings": warnings,
        # subdivide: the number of fine classes and the smallest one, (fine class, training rows)
        "fine_classes": None if fine is None else len(fine),
        "smallest_fine_class": None if fine is None else (str(fine.index[0]), int(fine.iloc[0])),
    }


def prepare(cfg: dict, out_dir: str | Path | Outputs, check_found_classes=None) -> dict:
    """Validate the input described by competition config ``cfg``; write the stage-00 artifacts
    into ``out_dir`` (a folder, or an :class:`lib.core.paths.Outputs` as the other stages take).

    ``check_found_classes(cfg, where)``: when the config lists no ``classes`` and they are taken
    from the data, what checks the settings that depend on them (the metrics' own checks:
    :func:`lib.components.check_found_classes`, which ``00_prepare.py`` passes); raises
    ``ConfigError``. ``None``: only :func:`lib.core.config.check_classes`.

    Writes ``out_dir/folds.csv`` (id, path, target, group, fold, sample_rate, duration_s,
    channels, ``meta_<column>`` ..., ``slice_<column>`` for each of ``slices``; multi-label targets joined by ``lib.data.tasks.LABEL_SEP``),
    ``out_dir/test.csv`` (id, path, sample_rate, duration_s, channels, metadata; when the config
    has a test set) and ``out_dir/competition.yaml`` (the resolved config that later stages read,
    with ``classes`` filled in from the data when the config leaves them out).
    Returns a summary dict, with ``warnings``: messages about doubtful input that is kept (a
    class in ``classes`` without training rows), and ``segments``: per split ``{recordings,
    segments, skipped}`` (``{}`` without segments), and ``removed_blend``: the files of stage 04's
    blend removed because it was made from other folds, config or test set
    (:func:`drop_stale_blend`), and ``fold_values``: with the ``predefined`` scheme, ``{fold: the
    fold column's value}`` (``None`` otherwise). Raises ``InputError`` listing every problem (nothing is written
    then), or ``ConfigError`` when the classes or folds do not fit the data or ``out_dir`` is not
    writable.
    """
    check_loaded(cfg, "prepare's cfg", "lib.components.load_competition")
    out_dir = out_dir.root if isinstance(out_dir, Outputs) else Path(out_dir)
    Outputs(out_dir).check_writable()  # before the audio is read
    root = Path(cfg["data_dir"])
    problems: list[str] = []
    warnings: list[str] = []
    if not root.is_dir():
        raise InputError([f"{root}: data folder not found (set data_dir in the config or pass --data-dir)"])
    train, labels = _read_train(cfg, root, problems)
    test = _read_test(cfg, root, problems)
    tables, segment_counts = _with_segments(cfg, {"train": train, **({"test": test} if cfg.get("test") else {})},
                                            problems)
    train, test = tables["train"], tables.get("test")
    if train is not None and segments.unit(cfg) == "segment":
        labels = None if problems else _segment_labels(train, cfg)
    if labels is not None:
        _check_labels(cfg, root, train, labels, problems, warnings, check_found_classes)
    _check_sample_submission(cfg, root, test, problems, warnings)
    warnings += _segment_warnings(segment_counts)

    tables = [t for t in (train, test) if t is not None]
    rate = _check_rates(tables, cfg["audio"]["sample_rate"], problems) if tables else None
    metas = {name: _metadata(t, cfg["metadata"], problems) for name, t in (("train", train), ("test", test))
             if t is not None}
    groups = _groups(train, cfg.get("groups"), root, problems, warnings) if train is not None else None
    test_groups = (_groups(test, cfg["groups"], root, problems, warnings)
                   if test is not None and test_groups_key(cfg) else None)
    if problems:
        raise InputError(problems)

    folds, y = _build_folds(cfg, train, labels, groups, metas["train"])
    small = small_strata(y, _strata(cfg, train), cfg["folds"]["n_folds"], cfg["classes"])
    if small:
        warnings.append(f"folds.stratify_by: {len(small)} class x value cell(s) have fewer rows than the "
                        f"{cfg['folds']['n_folds']} folds, each spread over as many folds as it has rows (or groups, "
                        f"with groups; the other folds validate none of it): {'; '.join(small[:5])}{' ...' if len(small) > 5 else ''}")
    shipped = (dict(zip(folds["fold"].to_numpy(), train[cfg["folds"]["column"]].astype(str).str.strip().to_numpy()))
               if cfg["folds"]["scheme"] == "predefined" else {})  # which shipped value became which fold
    folds = pd.concat([folds, train[[c for c in SEGMENT_COLUMNS if c in train]].set_axis(folds.index)], axis=1)
    warnings += _silence_bad_files(test, Outputs(out_dir).root / "silence", rate, cfg["audio"]["clip_seconds"],
                                   cfg["audio"]["channel"])
    test_out = None if test is None else _test_table(test, metas["test"], test_groups, cfg)
    _warn_unknown_test_values(cfg, folds, test_out, warnings)
    warnings += _earlier_folds(Outputs(out_dir), folds, cfg["folds"]["scheme"])
    removed = _write_prepared(Outputs(out_dir), folds, test_out, dict(cfg, native_sample_rate=rate))
    return dict(_summary(cfg, folds, y, test, rate, metas, warnings), segments=segment_counts,
                removed_blend=removed, fold_values={int(k): shipped[k] for k in sorted(shipped)} or None)
