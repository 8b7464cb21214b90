"""A numba cache folder per running process, so that two stages started at once never write one
cache together.

librosa compiles its numba functions on first use and caches them on disk (by default in its own
``__pycache__`` folders in site-packages). Two processes that compile the same ``guvectorize``
function into one fresh cache at the same time can leave a kernel and its wrapper from different
compilations: every later call of it, in any process, ends in a segmentation fault, with no
message, until the cache is deleted (numba issue #10128, open at numba 0.68; librosa's pitch
tuning, peak picking and zero crossings are such functions). That happens with two feature
stages in two terminals, a Makefile run with ``-j``, or jobs of a cluster sharing one
environment. Each stage therefore takes one of the numbered folders under
``~/.cache/audio-pipeline/numba/`` that no running process holds (an exclusive ``flock`` on its
``.lock`` for the life of the process) and points numba at it: a process reuses what an earlier
one compiled there, and never shares a folder with one that runs at the same time.
"""
from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

SLOTS = 32
"""How many processes at once get a cache folder of their own; the next ones leave numba as it is."""

_HELD: list[int] = []  # the open lock files; closed by the process's end


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/audio-pipeline/numba`` (``~/.cache/...`` without it)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "audio-pipeline" / "numba"


def claim_numba_cache(root: str | os.PathLike | None = None) -> Path | None:
    """Point numba's cache (``NUMBA_CACHE_DIR``) at a folder no other running process holds.

    Input: ``root``, the folder of the numbered cache folders (default :func:`cache_root`).
    Output: the folder claimed, ``root/<k>`` for the lowest free ``k`` below :data:`SLOTS`, held
    until this process ends (forked children share it, as they share the lock); ``None`` when
    ``NUMBA_CACHE_DIR`` is already set (a user's or a test's choice, kept), when numba is already
    imported (it has read its configuration), when all :data:`SLOTS` are held, or when ``root``
    cannot be written or locked (a read-only home): numba then caches as it would without us.
    Raises nothing.
    """
    if os.environ.get("NUMBA_CACHE_DIR") or "numba" in sys.modules or _HELD:
        return None
    root = Path(root) if root is not None else cache_root()
    for k in range(SLOTS):
        folder = root / str(k)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another running process holds this folder
            os.close(fd)
            continue
        except OSError:  # a file system without locks
            os.close(fd)
            return None
        _HELD.append(fd)
        os.environ["NUMBA_CACHE_DIR"] = str(folder)
        return folder
    return None
