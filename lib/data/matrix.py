"""Precomputed inputs: a per-recording matrix (a mel-spectrogram table, or any features over time)
read from a competition's files instead of audio.

The competition's ``matrix`` section (docs/competition.md, "Spectrogram tables") says how to read
them: ``format`` (``csv``, ``tsv``, ``npy``, ``npz``; default from the file's extension),
``axes`` (``bins_frames``: a row per frequency bin, as the voice-pathology challenge MAIC 2021
ships its 128-row mel tables; ``frames_bins``: a row per frame), ``n_bins`` (checked: a table
of the other orientation is an error, not silently transposed), ``header`` and, for ``npz``,
``key``; the frame rate (``frames_per_second``, or ``hop_length`` and ``sample_rate``) turns
frames into seconds for windows, segments and test-time shifts.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import AudioError, InputError
from ..core.utils import read_text


def _format(path: Path, spec: dict) -> str:
    fmt = spec.get("format") or path.suffix.lower().lstrip(".")
    if fmt not in ("csv", "tsv", "npy", "npz"):
        raise AudioError(f"{path}: cannot tell the matrix format from the extension {path.suffix!r}; "
                         f"set matrix.format (csv, tsv, npy or npz)")
    return fmt


def _table(path: Path, spec: dict, sep: str) -> np.ndarray:
    """A CSV/TSV table as float32 (one fast parse; when it fails, :func:`_table_checked` finds
    the line)."""
    try:
        x = pd.read_csv(path, sep=sep, header=0 if spec.get("header") else None, dtype=np.float32,
                        skip_blank_lines=True).to_numpy()
        if x.size and np.isfinite(x).all():  # else short rows (padded with NaN) or NaN cells: find the line
            return x
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError, OSError, UnicodeDecodeError):
        pass
    return _table_checked(path, spec, sep)


def _table_checked(path: Path, spec: dict, sep: str) -> np.ndarray:
    """A CSV/TSV table as float32, each row checked: ragged rows and non-numeric or empty cells
    name the line (and column)."""
    try:
        lines = read_text(path).splitlines()  # a BOM allowed, as for CSVs
    except InputError as exc:  # not UTF-8: the file and line
        raise AudioError(exc.problems[0]) from None
    except OSError as exc:
        raise AudioError(f"{path}: unreadable matrix ({exc})") from exc
    first = 1 if spec.get("header") else 0
    rows = [(n, line) for n, line in enumerate(lines[first:], first + 1) if line.strip()]
    if not rows:
        raise AudioError(f"{path}: no rows")
    width = None
    out = []
    for n, line in rows:
        cells = line.split(sep)
        if width is None:
            width = len(cells)
        elif len(cells) != width:
            raise AudioError(f"{path} line {n}: {len(cells)} values; the first row has {width} (ragged rows)")
        values = pd.to_numeric(pd.Series(cells).str.strip(), errors="coerce").to_numpy(np.float64)
        bad = np.flatnonzero(np.isnan(values) & ~pd.Series(cells).str.strip().str.lower().isin(["nan"]).to_numpy())
        if len(bad):
            pandas_default = n == first + 1 and bad[0] == 0 and not cells[0].strip()  # to_csv(path): header + index
            hint = ("; a header row and an index column, as pandas' to_csv writes by default? write the files with "
                    "to_csv(path, header=False, index=False)") if pandas_default else ""
            raise AudioError(f"{path} line {n} column {bad[0] + 1}: {cells[bad[0]]!r} is not a number{hint}")
        out.append(values)
    return np.asarray(out, dtype=np.float32)


def read_matrix(path: str | Path, spec: dict) -> np.ndarray:
    """The matrix of one recording as ``(n_bins, frames)`` float32, whatever the file's axis order.

    ``spec``: the competition's ``matrix`` section. Raises ``AudioError`` naming the file (and
    line) when it is missing or unreadable, has ragged rows or non-numeric cells, a first row or
    column 0, 1, 2, ... (a header or index that pandas wrote), holds NaN or infinite values, is
    not 2-D, has no frames, or has no axis of ``n_bins`` where ``axes`` says (the message says
    when the other axis has it: the table is transposed).
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: file not found")
    fmt = _format(path, spec)
    try:
        if fmt in ("csv", "tsv"):
            x = _table(path, spec, "," if fmt == "csv" else "\t")
        elif fmt == "npy":
            x = np.load(path, allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as z:
                names = list(z.files)
                key = spec.get("key") or (names[0] if len(names) == 1 else None)
                if key not in names:
                    raise AudioError(f"{path}: arrays {names}; set matrix.key to the one to read")
                x = z[key]
    except AudioError:
        raise
    except (OSError, ValueError) as exc:
        raise AudioError(f"{path}: unreadable matrix ({exc})") from exc
    if x.ndim != 2:
        raise AudioError(f"{path}: a {x.ndim}-D array {x.shape}; expected a 2-D matrix")
    if np.iscomplexobj(x):  # a saved STFT: casting would drop the imaginary part
        raise AudioError(f"{path}: complex values ({x.dtype}); expected real numbers (e.g. the magnitude or power: "
                         f"np.abs(x) or np.abs(x) ** 2, as the features should be)")
    x = np.asarray(x, dtype=np.float32)
    if fmt in ("csv", "tsv") and min(x.shape) > 2:  # what pandas' to_csv adds unless told not to: never data
        if not spec.get("header") and np.array_equal(x[0], np.arange(x.shape[1])):
            raise AudioError(f"{path} line 1: 0, 1, ..., {x.shape[1] - 1}, a header row (pandas' to_csv writes one)? "
                             f"set matrix.header: true, or write the files without it")
        if np.array_equal(x[:, 0], np.arange(x.shape[0])):
            raise AudioError(f"{path} column 1: 0, 1, ..., {x.shape[0] - 1}, an index column (pandas' to_csv writes "
                             f"one unless index=False)? write the files without it")
    if spec["axes"] == "frames_bins":
        x = x.T
    n = spec["n_bins"]
    if x.shape[0] != n:
        other = "frames_bins" if spec["axes"] == "bins_frames" else "bins_frames"
        hint = (f" (its other axis has {n}: this file is transposed; if every file is, set matrix.axes: {other})"
                if x.shape[1] == n else "")
        raise AudioError(f"{path}: {x.shape[0]} bins where matrix.n_bins is {n}, with axes "
                         f"{spec['axes']}{hint}")
    if x.shape[1] == 0:
        raise AudioError(f"{path}: no frames ({n} bins x 0 frames); expected at least one frame")
    if not np.isfinite(x).all():
        rows, cols = np.nonzero(~np.isfinite(x))
        line = (cols[0] if spec["axes"] == "frames_bins" else rows[0]) + 1 + bool(spec.get("header"))
        at = f"line {line} (bin {rows[0]}, frame {cols[0]})" if fmt in ("csv", "tsv") else f"bin {rows[0]}, frame {cols[0]}"
        raise AudioError(f"{path}: NaN or infinite value at {at}")
    return x


def window_frames(seconds: float, fps: float) -> int:
    """Frames in ``seconds`` at ``fps`` frames per second (rounded, at least 1)."""
    return max(1, int(round(seconds * fps)))
