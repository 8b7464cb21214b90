"""Segments of recordings from an annotation source: respiratory cycles (ICBHI 2017), syllable
tokens (MAIC 2021), or any list of intervals.

A competition's ``segments`` section (docs/competition.md, "Segments") says where they are:

* ``format: icbhi``: one whitespace table per recording (``file``: a path template over the
  recording's row, e.g. ``"{id}.txt"``), lines ``start end crackles wheezes`` in seconds, the
  two 0/1 columns named by ``labels`` (Rocha et al. 2019, the ICBHI 2017 challenge database);
* ``format: json``: one JSON document per recording (``file``); ``key`` is the dotted path to its
  list of intervals (``"tokens"``, ``"annotation.0.tokens"``; none: the document is the list),
  each a mapping with the ``start`` and ``end`` keys, optionally a ``skip`` flag and labels;
* ``format: csv``: one table (``csv``) for every recording of both splits, a row per segment:
  ``id_column``, ``start``, ``end`` and optionally ``skip`` and label columns.

``units``: ``seconds``, or ``frames`` of the rows' matrices (``matrix.frames_per_second``).
Segments with a true ``skip`` flag are left out (and counted). A segment's labels are its own
(``labels``: 0/1 columns or keys, the class being the names of those set joined by ``+``, or
``none_label`` when none is; ``label_column``: a column or key holding the class) or, with
neither, its recording's. Every problem (an unreadable file, a non-numeric cell, a segment of
zero or negative length, shorter than ``min_seconds``, starting before 0 or after its recording, a
training segment ending after it, a recording left without segments) names the file and line; a
test segment may end after its recording (a last, shorter chunk), read to the recording's end.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.config import format_row_id
from ..core.schema import DEFAULT_ROW_ID
from ..core.config import segment_unit as unit
from ..core.errors import ConfigError, InputError
from ..core.utils import read_text, read_text_table, row_lines

COLUMNS = ["id", "segment", "start_s", "end_s", "written_end_s", "label", "where"]
"""The segment table: recording ``id``, ``segment`` (its index in the annotation, skipped ones
counted), ``start_s``/``end_s`` (seconds; ``end_s`` at most the recording's length),
``written_end_s`` (the end as annotated, in seconds, which a row id names), ``label`` (the
class, labels joined by ``+``, or ``None`` when the recording's label applies) and ``where``
(file and line, for messages)."""
TOLERANCE_S = 0.01
"""How far past its recording's end (seconds) a segment may end and be clipped to the end
(annotations rounded to 10 ms); further is an error."""


def frames_per_second(comp: dict) -> float | None:
    """Frames per second of the rows' matrices (``matrix.frames_per_second``, else
    ``sample_rate / hop_length``), ``None`` for audio."""
    m = comp.get("matrix")
    if not m:
        return None
    return float(m["frames_per_second"] or m["sample_rate"] / m["hop_length"])


def _number(value, what: str, where: str, problems: list[str]) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        problems.append(f"{where}: {what} is {value!r}; expected a number")
        return None
    if not np.isfinite(x):
        problems.append(f"{where}: {what} is {value!r}; expected a finite number")
        return None
    return x


def _truthy(value) -> bool:
    return str(value).strip().lower() not in ("", "0", "0.0", "false", "no", "none", "null")


def _icbhi(path: Path, seg: dict, problems: list[str]) -> list[dict]:
    out = []
    try:
        text = read_text(path)
    except InputError as exc:
        problems.extend(exc.problems)
        return []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        cells = line.split()
        where = f"{path} line {n}"
        if len(cells) != 4:
            problems.append(f"{where}: {len(cells)} fields; expected 4 (start end "
                            f"{' '.join(seg['labels']) or 'and two 0/1 columns, not read with unit: recording'})")
            continue
        flags = []
        for name, cell in zip(seg["labels"], cells[2:]):
            if cell not in ("0", "1"):
                problems.append(f"{where}: {name} is {cell!r}; expected 0 or 1")
            flags.append(cell == "1")
        out.append({"start": cells[0], "end": cells[1], "flags": flags, "where": where})
    return out


def _json(path: Path, seg: dict, problems: list[str]) -> list[dict]:
    try:
        node = json.loads(read_text(path))
    except InputError as exc:
        problems.extend(exc.problems)
        return []
    except (OSError, json.JSONDecodeError) as exc:
        problems.append(f"{path}: unreadable JSON ({exc})")
        return []
    for part in (seg["key"] or "").split(".") if seg["key"] else []:
        if isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            problems.append(f"{path}: no {part!r} along segments.key {seg['key']!r}")
            return []
    if not isinstance(node, list):
        problems.append(f"{path}: segments.key {seg['key']!r} leads to a {type(node).__name__}, not a list of intervals")
        return []
    out = []
    for n, item in enumerate(node):
        where = f"{path} item {n}"
        if not isinstance(item, dict):
            problems.append(f"{where}: {item!r} is not a mapping with {seg['start']!r} and {seg['end']!r}")
            continue
        missing = [k for k in (seg["start"], seg["end"]) if k not in item]  # a label key left out: empty, as a
        # test token's usually is (a training one's is refused by read_segments, naming the item; probe)
        if missing:
            problems.append(f"{where}: missing key(s) {missing}; found {sorted(item)}")
            continue
        out.append(_entry(item, seg, where, problems))
    return out


def _entry(item: dict, seg: dict, where: str, problems: list[str]) -> dict:
    """A JSON item or CSV row as ``{start, end, flags, label, skip, where}``."""
    flags = []
    for name in seg["labels"]:
        value = str(item.get(name, "")).strip()
        if value == "":  # unknown: a test segment's may be (read_segments refuses a training one's)
            flags.append(None)
            continue
        if value not in ("0", "1", "0.0", "1.0", "True", "False", "true", "false"):
            problems.append(f"{where}: {name} is {item[name]!r}; expected 0 or 1")
        flags.append(_truthy(value))
    label = item.get(seg["label_column"]) if seg["label_column"] else None
    return {"start": item[seg["start"]], "end": item[seg["end"]], "flags": flags, "where": where,
            "label": "" if label is None else str(label).strip(),
            "skip": bool(seg["skip"]) and _truthy(item.get(seg["skip"], ""))}


def _csv_entries(root: Path, seg: dict, problems: list[str]) -> dict[str, list[dict]] | None:
    """The ``csv`` table's entries per recording id; ``None`` (its problem appended) when the table
    cannot be read at all, so that no recording is then also reported as having no segment."""
    path = root / seg["csv"]
    if not path.is_file():
        problems.append(f"{path}: file not found")
        return None
    try:
        df = read_text_table(path)
    except InputError as exc:
        problems += exc.problems
        return None
    needed = [seg["id_column"], seg["start"], seg["end"], *seg["labels"],
              *[c for c in (seg["label_column"], seg["skip"]) if c]]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        problems.append(f"{path}: missing column(s) {missing}; found {list(df.columns)}")
        return None
    out: dict[str, list[dict]] = {}
    for line, row in zip(row_lines(path, len(df)), df.to_dict("records")):
        out.setdefault(row[seg["id_column"]], []).append(_entry(row, seg, f"{path} line {line}", problems))
    return out


def _segment(e: dict, k: int, r: dict, seg: dict, fps: float | None, split: str, problems: list[str]) -> dict | None:
    """One annotation entry ``e`` (the ``k``-th of recording row ``r``) as a :data:`COLUMNS` row,
    or ``None`` with its problem appended (:func:`read_segments` lists them)."""
    start = _number(e["start"], seg["start"], e["where"], problems)
    end = _number(e["end"], seg["end"], e["where"], problems)
    if start is None or end is None:
        return None
    span = f"{start:g}-{end:g} s"
    if fps:  # the frames as written, beside the seconds they make
        span = f"frames {start:g}-{end:g} ({start / fps:g}-{end / fps:g} s)"
        start, end = start / fps, end / fps
    duration = float(r["duration_s"]) if r.get("duration_s") is not None else np.inf
    if end <= start or end - start < seg["min_seconds"]:
        problems.append(f"{e['where']}: segment {span} is "
                        + ("empty or reversed" if end <= start else f"shorter than min_seconds {seg['min_seconds']}"))
        return None
    past = end > duration + TOLERANCE_S  # a test set's last chunk may (BirdCLEF's 45-50 s of 47)
    if start < 0 or start >= duration or (past and split != "test"):
        frames = f", {duration * fps:g} frames" if fps else ""
        hint = (f"; a training segment may end at most {TOLERANCE_S * 1000:g} ms after its recording: write its "
                f"exact end, not a rounded one" if past and 0 <= start < duration else "")
        problems.append(f"{e['where']}: segment {span} lies outside its recording {r['id']!r} (0-{duration:g} s{frames}){hint}")
        return None
    if seg["label_column"] and not e.get("label") and split == "train":
        problems.append(f"{e['where']}: empty {seg['label_column']!r} (the segment's class)")
        return None
    if None in (e.get("flags") or []) and split == "train":
        empty = [n for n, f in zip(seg["labels"], e["flags"]) if f is None]
        problems.append(f"{e['where']}: empty {empty} (a training segment's labels: 0 or 1)")
        return None
    flags = e.get("flags") or []
    label = e.get("label") or ("+".join(n for n, f in zip(seg["labels"], flags) if f) or seg["none_label"]
                               if seg["labels"] else None)
    return {"id": r["id"], "segment": k, "start_s": start, "end_s": min(end, duration), "written_end_s": end,
            "label": label, "where": e["where"]}


def read_segments(comp: dict, tables: dict[str, pd.DataFrame], problems: list[str],
                  every_split: bool = True) -> dict[str, pd.DataFrame]:
    """The segments of every recording of ``tables`` (``{split: rows}`` of stage 00: ``id``,
    ``path``, ``duration_s`` and the CSV's columns), as one :data:`COLUMNS` table per split
    (``attrs["skipped"]``: how many segments its ``skip`` flags left out; ``attrs["past_end"]``: how
    many test segments end after their recording, read to its end).

    Problems are appended to ``problems`` (file and line each): unreadable or malformed
    annotations, non-numeric or non-finite times, a segment of zero or negative length (or
    shorter than ``segments.min_seconds``), starting before 0 or after its recording, a training
    segment ending more than :data:`TOLERANCE_S` after it (a segment ending within that is
    clipped to the end; a test segment that starts inside its recording, e.g. the last 5-s
    chunk of a 47-s soundscape, is clipped whatever its end, its row id keeping the end as written),
    a recording with no segment left, and (``every_split``: ``tables`` holds both splits) CSV
    rows naming a recording of neither split.
    """
    seg, root = comp["segments"], Path(comp["data_dir"])
    fps = frames_per_second(comp) if seg["units"] == "frames" else None
    table_entries = _csv_entries(root, seg, problems) if seg["format"] == "csv" else None
    if seg["format"] == "csv" and table_entries is None:  # (its one problem said; not one per recording: probe)
        return {split: pd.DataFrame(columns=COLUMNS) for split in tables}
    if table_entries is not None and every_split:
        known = set().union(*(set(t["id"]) for t in tables.values()))
        for rec in sorted(set(table_entries) - known):
            problems.append(f"{table_entries[rec][0]['where']}: recording {rec!r} is in neither split")
    out, skipped = {}, {}
    for split, table in tables.items():
        rows = []
        for r in table.to_dict("records"):
            if table_entries is not None:
                entries = table_entries.get(r["id"], [])
            else:
                try:
                    path = root / seg["file"].format(**{**r, "id": r["id"]})
                except KeyError as exc:
                    raise ConfigError(f"segments.file {seg['file']!r} names column {exc.args[0]!r}, which "
                                      f"[{split}] lacks; found {sorted(r)}") from None
                if not path.is_file():
                    problems.append(f"{r['where']}: annotation file {path} not found")
                    continue
                entries = (_icbhi if seg["format"] == "icbhi" else _json)(path, seg, problems)
            kept, flagged = 0, 0
            for k, e in enumerate(entries):
                if e.get("skip"):
                    flagged += 1
                    continue
                row = _segment(e, k, r, seg, fps, split, problems)
                if row is not None:
                    rows.append(row)
                    kept += 1
            skipped[split] = skipped.get(split, 0) + flagged
            if not kept:
                why = [f"{flagged} flagged to skip"] * bool(flagged) + [f"{len(entries) - flagged} with a problem "
                                                                        f"above"] * bool(len(entries) - flagged)
                problems.append(f"{r['where']}: recording {r['id']!r} has no segment"
                                + (f" left ({', '.join(why)})" if entries else ""))
        out[split] = pd.DataFrame(rows, columns=COLUMNS)
        out[split].attrs["skipped"] = skipped.get(split, 0)
        out[split].attrs["past_end"] = int((out[split]["written_end_s"] > out[split]["end_s"] + TOLERANCE_S).sum())
    return out


def repeats(segments: pd.DataFrame) -> dict[str, list[str]]:
    """The segments of a :data:`COLUMNS` table listed twice and those overlapping an earlier one
    of their recording by more than :data:`TOLERANCE_S` (touching cycles do not): ``{"repeats":
    ["<where> repeats <where>", ...], "overlaps": ["<where> overlaps <where>", ...]}``."""
    out = {"repeats": [], "overlaps": []}
    for _, g in segments.sort_values(["id", "start_s", "end_s"], kind="stable").groupby("id", sort=False):
        last, reach = None, None  # the segment before; the one reaching furthest so far
        for r in g.itertuples():
            if last is not None and (r.start_s, r.end_s) == (last.start_s, last.end_s):
                out["repeats"].append(f"{r.where} repeats {last.where}")
            elif reach is not None and r.start_s < reach.end_s - TOLERANCE_S:
                out["overlaps"].append(f"{r.where} overlaps {reach.where}")
            reach = r if reach is None or r.end_s > reach.end_s else reach
            last = r
    return out


def segment_rows(rows: pd.DataFrame, segments: pd.DataFrame, row_id: str = DEFAULT_ROW_ID) -> pd.DataFrame:
    """Rows of a split turned into one row per segment (``unit: segment``): each segment takes
    its recording's columns, ``id`` from the template ``row_id`` (:func:`format_row_id`:
    ``<recording>#<segment>`` by default, ``{stem}_{end}`` for BirdCLEF's ``soundscape_5``; the
    end as annotated, also where the recording is a few samples shorter),
    ``recording``, ``start_s``, ``end_s``, ``duration_s`` (of the segment), ``segment_label``,
    its annotation's ``where`` and its recording's row's ``recording_where``. Raises ``ConfigError`` for a template that does not fit."""
    base = rows.set_index("id").loc[segments["id"]].reset_index()
    base["recording"] = segments["id"].to_numpy()
    base["id"] = [format_row_id(row_id, r, k, a, b) for r, k, a, b in  # the end as written: 600, not the 599.9995
                  zip(segments["id"], segments["segment"], segments["start_s"], segments["written_end_s"])]  # read
    base["start_s"], base["end_s"] = segments["start_s"].to_numpy(), segments["end_s"].to_numpy()
    base["duration_s"] = base["end_s"] - base["start_s"]
    base["segment_label"] = segments["label"].to_numpy()
    base["recording_where"] = base["where"]  # its recording's row (the split's table), for the recording's own cells
    base["where"] = segments["where"].to_numpy()
    return base


def regions(table: pd.DataFrame) -> np.ndarray:
    """The stretches of audio (or matrix frames) that make up each row of a split table
    (``folds.csv``/``test.csv``) ``(regions, 3)`` float64: row index, start and end in seconds,
    rows in order.

    A row with a ``segments`` cell (``unit: recording``: ``start:end`` pairs in seconds, space
    separated) has one region per segment; a row with ``start_s``/``end_s`` (``unit: segment``)
    is that one stretch; any other row is its whole recording, ``[0, duration_s]``."""
    if "segments" in table:
        parts = [(i, *map(float, pair.split(":"))) for i, cell in enumerate(table["segments"]) for pair in str(cell).split()]
        return np.asarray(parts, dtype=np.float64).reshape(-1, 3)
    start = table["start_s"].to_numpy(float) if "start_s" in table else np.zeros(len(table))
    end = table["end_s"].to_numpy(float) if "end_s" in table else table["duration_s"].to_numpy(float)
    return np.column_stack([np.arange(len(table)), start, end]).astype(np.float64)
