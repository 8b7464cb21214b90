"""Small helpers shared by every stage: atomic writes, fingerprints, seeding, durations
(devices and precision: :mod:`lib.core.device`)."""
from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import random
import re
import shutil
import tempfile
from decimal import Decimal
from pathlib import Path

import numpy as np

from .errors import InputError, PipelineError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A finished artifact is therefore never replaced by a half-written one: on an exception the
    temporary file is removed and ``path`` keeps its previous content. An error of a full disk
    that names no file (or a writer's own error while the disk has no space left) is raised as
    ``OSError`` ENOSPC naming ``path``, which the stages turn into one line.

    Input: the final file path. Yields: a ``pathlib.Path`` in the same folder (same file system,
    so the rename is atomic) that keeps the final suffix, so writers that choose a format by
    extension (``np.save``, matplotlib) behave as for the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the writer's pid in the name lets lib.core.artifacts remove what a killed writer left behind
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.{os.getpid()}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make artifacts private to their writer
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    except Exception as exc:
        full = _no_space_error(exc, path)
        if full is None:
            raise
        raise full from exc
    finally:
        if tmp.exists():
            tmp.unlink()


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _no_space_error(exc: Exception, path: Path) -> OSError | None:
    """A full disk's error naming ``path`` for an error raised while writing it: an ``OSError``
    ENOSPC or EDQUOT (which pandas and ``os.posix_fallocate`` raise without a file name), or a
    library's ``RuntimeError`` (torch.save's "unexpected pos") while the file system holding
    ``path`` has no block left for this user. ``None`` otherwise: the pipeline's own errors and
    any other error keep their message."""
    if isinstance(exc, OSError) and exc.errno in _NO_SPACE:  # the final name, not a temporary one
        return OSError(exc.errno, exc.strerror, str(path))
    if not isinstance(exc, RuntimeError) or isinstance(exc, PipelineError):
        return None
    try:
        st = os.statvfs(path.parent)
    except OSError:
        return None
    free = st.f_bfree if os.geteuid() == 0 else st.f_bavail  # root may write into the reserved blocks
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) if free == 0 else None


def open_memmap(path: str | os.PathLike, dtype: str, shape: tuple) -> None:
    """Create the ``.npy`` file ``path`` of ``shape`` and ``dtype`` for writers that map it
    (``np.load(path, mmap_mode="r+")``), with its whole size allocated on disk now: a sparse file
    would take its blocks when pages are written, and a full disk then kills the writer with
    SIGBUS and no message. Raises ``OSError`` ENOSPC when the space is not there (inside
    :func:`atomic_path`, as its callers are, naming the final file); a file system without
    ``posix_fallocate`` is left sparse."""
    np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape).flush()
    with open(path, "r+b") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise


_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)")


def plain_number(text: str) -> Decimal | None:
    """``text`` as an exact number when it is written in plain decimal digits (``7``, ``007``,
    ``3.0``, ``-.5``; spaces around it allowed), else ``None``. ``1_12``, ``1e3``, ``inf`` and
    ``nan`` are text here, though Python's ``float`` reads them as numbers (``1_12`` and ``11_2``
    both as 112), and ids longer than 15 digits stay apart (floats round them together)."""
    text = str(text).strip()
    return Decimal(text) if _DECIMAL.fullmatch(text) else None


def write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=json_default) + "\n")


def read_json(path: str | os.PathLike):
    """Read a JSON file; returns ``None`` when it does not exist."""
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else None


def write_csv(path: str | os.PathLike, df) -> None:
    """Write a pandas DataFrame to ``path`` as CSV without its index, atomically; lines end with
    ``df.attrs["lineterminator"]`` when set (a submission keeps its sample's), else ``\\n``, encoded
    as ``df.attrs["encoding"]`` (``utf-8-sig``: with a byte-order mark, as its sample), else UTF-8."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, lineterminator=df.attrs.get("lineterminator", "\n"),
                  encoding=df.attrs.get("encoding", "utf-8"))


def read_text(path: str | os.PathLike) -> str:
    """A text file's content, decoded as UTF-8 (a BOM allowed and dropped, as Notepad and Excel
    write it). Raises ``InputError`` naming the file and line for bytes that are not UTF-8 (e.g.
    cp1252 from a Windows editor: save it as UTF-8), ``OSError`` when it cannot be read."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError([f"{path} line {line}: not UTF-8 text (byte {exc.start}: {exc.reason}); save the file "
                          f"as UTF-8"]) from None


TEXT_COLUMNS = ("id", "target", "group")
"""The text columns of the pipeline's own CSVs (``folds.csv``, ``test.csv``, OOF and prediction
files), besides the ``slice_<column>`` ones."""


def read_artifact_csv(path: str | os.PathLike):
    """One of the pipeline's own CSVs (``folds.csv``, ``test.csv``, ``oof/<exp>.csv``,
    ``preds/<exp>.csv``, a blend) as a DataFrame: ids, targets, groups and ``slice_<column>``
    cells as written, as text (a "3" next to "1.0" stays "3"), and only an empty cell read as
    missing (NaN): pandas' default missing-value words ("None", "NA", "nan", "null", "N/A", ...)
    are ordinary labels and ids (a class "None" became NaN and a traceback). An empty ``target``
    is ``""``: a multi-label row without labels."""
    import pandas as pd

    text = [c for c in pd.read_csv(path, nrows=0).columns if c in TEXT_COLUMNS or c.startswith("slice_")]
    df = pd.read_csv(path, dtype=dict.fromkeys(text, str), keep_default_na=False, na_values=[""])
    if "target" in df:
        df["target"] = df["target"].fillna("")
    return df


def read_text_table(path: str | os.PathLike):
    """A competition's CSV as a pandas DataFrame of text cells (``dtype=str``, empty cells ``""``;
    UTF-8, a BOM allowed). Raises ``InputError`` naming the file for text that is not UTF-8 (e.g.
    an Excel export in cp1252: save it as UTF-8) and for a malformed table (with pandas' line,
    e.g. a row with more fields than the header), for an empty file (``<path>: no rows``) and for
    a header of one column holding a ``;``, a tab or a ``|`` (another separator than the comma)."""
    import pandas as pd

    def other_separator(header: str):  # (else every column was "missing", the whole header its did-you-mean: probe)
        sep = next((s for s in (";", "\t", "|") if s in header and "," not in header), None)
        return sep and InputError([f"{path}: the header {header!r} is separated by {sep!r}, not by commas: save the "
                                   f"file as comma-separated values"])
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        if len(df.columns) == 1 and (exc := other_separator(str(df.columns[0]))):
            raise exc
        return df
    except UnicodeDecodeError:  # pandas decodes in chunks: read_text finds the first bad byte in the whole file
        read_text(path)
        raise
    except pd.errors.EmptyDataError:
        raise InputError([f"{path}: no rows"]) from None
    except pd.errors.ParserError as exc:  # (a ';' file with decimal commas: a ragged table to pandas)
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            raise (other_separator(f.readline().rstrip("\r\n")) or
                   InputError([f"{path}: not a well-formed CSV table ({str(exc).strip()})"])) from None


def row_lines(path: str | os.PathLike, n_rows: int) -> list[int]:
    """The line of file ``path`` (1-based, the header on line 1) on which each of the ``n_rows``
    data rows that :func:`read_text_table` read starts: quoted cells that span lines and blank
    lines (which pandas skips) counted, as an editor numbers them. Falls back to ``row index + 2``
    if Python's ``csv`` module splits the file into another number of rows than pandas did."""
    import csv

    starts, previous = [], 0
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        for row in reader:
            if row and not (len(row) == 1 and not row[0].strip()):  # blank lines: [] or ['  ']; pandas skips them
                starts.append(previous + 1)
            previous = reader.line_num
    return starts[1:] if len(starts) == n_rows + 1 else [i + 2 for i in range(n_rows)]


def json_default(obj):
    """``json.dumps``'s ``default`` for what the pipeline's records hold: numpy scalars and arrays, paths."""
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def fingerprint(*parts) -> str:
    """Return a short, stable SHA-1 hex digest (16 characters) of JSON-serialisable ``parts``.

    Used to decide whether an artifact was built from the same inputs and settings.
    """
    text = json.dumps(parts, sort_keys=True, default=json_default)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (CPU and CUDA) with ``seed``."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def format_seconds(seconds: float) -> str:
    """Format a duration in seconds as ``"1h02m03s"``, ``"2m03s"`` or ``"4.2s"``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def replace_folder(new: Path, dest: Path) -> None:
    """Put the finished folder ``new`` in place of ``dest`` (made beside it, on the same file
    system): the old ``dest`` is first renamed aside to ``.<name>.old``, then ``new`` renamed in,
    then the old one removed, so a kill at any point leaves either the old folder or the new one
    whole at ``dest`` (or, between the two renames, nothing there and both beside it, which the
    next call clears), never a half-deleted one that a check for the folder's own files refuses."""
    dest = Path(dest)
    old = dest.with_name(f".{dest.name}.old")
    shutil.rmtree(old, ignore_errors=True)  # a killed call's
    if dest.exists():
        dest.rename(old)
    Path(new).rename(dest)
    shutil.rmtree(old, ignore_errors=True)


def format_count(n: float) -> str:
    """Format a parameter count as ``"0.33 M"`` (from 100 000), ``"18.3 k"`` (from 1000) or ``"321"``."""
    return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{n / 1e3:.1f} k" if n >= 1e3 else f"{int(n)}"


def _numpy_globals() -> list:
    """The numpy types a checkpoint's arrays and scalars unpickle through (data, no code): what
    PANNs' released files hold besides tensors (e.g. their sampler's state). Files pickled under
    numpy 1 name them ``numpy.core.multiarray.*`` (numpy 2: ``numpy._core``); both are allowed."""
    core = getattr(np, "_core", None) or np.core
    return [core.multiarray._reconstruct, core.multiarray.scalar, np.ndarray, np.dtype,
            (core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
            (core.multiarray.scalar, "numpy.core.multiarray.scalar"),
            *{type(np.dtype(t)) for t in ("f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "?")}]


def load_tensors_only(path, error=ValueError):
    """``torch.load(path, weights_only=True)`` with numpy arrays and scalars allowed
    (:func:`_numpy_globals`), on the CPU: a pickle that would build any other object (and so could
    run code) is refused, never executed. Raises ``error`` (an exception class taking one message)
    naming the file and what it holds, or that it is not a readable checkpoint."""
    import pickle
    import re

    import torch

    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL\s+([\w.]+)", str(exc))
        if not found:
            raise error(f"{path}: not a readable PyTorch checkpoint ({str(exc).splitlines()[0]})") from None
        what = f"the global {found.group(1)}"
        raise error(f"{path}: refused: it pickles {what}, which could run code when loaded; only tensors, "
                    f"plain values and numpy arrays are loaded (if you trust the file, save its tensors alone, "
                    f"e.g. torch.save(checkpoint['model'], 'weights.pth'), and use that)") from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise error(f"{path}: not a readable PyTorch checkpoint ({exc})") from None


def keep_freed_memory() -> None:
    """Make glibc's malloc keep freed memory in the process for reuse (a no-op elsewhere).

    Tensors and arrays of a few MB to a few hundred MB are allocated and freed again for every
    batch (a 256-clip inference batch of ``wave_cnn`` holds a 66-MB activation). By default glibc
    maps each allocation over its dynamic threshold (at most 32 MB) afresh from the kernel and
    unmaps it on free, so every reuse page-faults it in again: 03 of ``wave_cnn`` on the
    breathing data took 14.2 s, 11.4 s of it system time (7.9 s with this); a training fold of
    four epochs took about 8% longer. seed9's feature workers: 18,000 page faults per chunk of
    32 clips, 1,000 with this. Serving allocations up to 256 MB from the heap and trimming the heap only when 1 GB at
    its top is free avoids that; the price is memory held after a peak until the process ends
    (03's peak 1.17 -> 1.34 GiB), so every stage (``lib.cli.run``) and feature worker calls this,
    and a notebook may. Sets ``mallopt`` M_MMAP_THRESHOLD and M_TRIM_THRESHOLD (glibc only;
    nothing elsewhere); returns nothing, raises nothing.
    """
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 256 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError, TypeError):  # not glibc (Windows: no CDLL(None))
        pass


def end_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when its parent dies (``prctl`` PR_SET_PDEATHSIG):
    a worker process (a torchrun rank, a stage-01 feature worker) must not live on after a
    ``kill -9`` of the process that started it, beside a re-run, blocked or holding memory. When
    the parent died before the request was made, this process ends at once. Elsewhere than Linux,
    nothing."""
    try:
        import ctypes
        import signal

        parent = os.getppid()
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # 1: PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)
    except (OSError, AttributeError):
        pass
