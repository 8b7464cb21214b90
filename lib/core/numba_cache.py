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
``~/.cache/audio-pipeline/numba/<host>/`` that no running process holds (an exclusive ``flock`` on
its ``.lock`` for the life of the process) and points numba at it: a process reuses what an
earlier one compiled there, and never shares a folder with one that runs at the same time.
"""
from __future__ import annotations

import atexit
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

try:
    import fcntl
except ImportError:  # not a POSIX system: every process gets a temporary folder
    fcntl = None

SLOTS = 32
"""How many processes at once on one machine get a lasting cache folder; the next ones a temporary one."""

_HELD: list[int] = []  # the open lock files; closed by the process's end


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/audio-pipeline/numba/<host name>`` (``~/.cache/...`` without it): one set of
    folders per machine, since a home folder shared over NFS may not lock across machines. Raises
    ``RuntimeError`` or ``KeyError`` when there is no home folder to find."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "audio-pipeline" / "numba" / socket.gethostname()


def claim_numba_cache(root: str | os.PathLike | None = None) -> Path | None:
    """Point numba's cache (``NUMBA_CACHE_DIR``) at a folder no other running process holds.

    Input: ``root``, the folder of the numbered cache folders (default :func:`cache_root`).
    Output: the folder claimed: ``root/<k>`` for the lowest ``k`` below :data:`SLOTS` that no
    running process holds and that can be written and locked, held until this process ends
    (forked children share it, as they share the lock); else (every slot held, a read-only or
    missing home, no ``flock``) a new temporary folder of this process alone, which only costs
    compiling librosa's functions again. ``None``, and nothing changed, when ``NUMBA_CACHE_DIR``
    is already set (a user's or a test's choice, kept), when numba is already imported (it has
    read its configuration) or when this process has claimed a folder before. Raises nothing.
    """
    if os.environ.get("NUMBA_CACHE_DIR") or "numba" in sys.modules or _HELD:
        return None
    folder = None
    try:
        root = Path(root) if root is not None else cache_root()
        for k in range(SLOTS if fcntl else 0):
            if _lock(root / str(k)):
                folder = root / str(k)
                break
    except (RuntimeError, KeyError, OSError):  # no home folder to find
        pass
    if folder is None:
        folder = Path(tempfile.mkdtemp(prefix="numba-cache-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ["NUMBA_CACHE_DIR"] = str(folder)
    return folder


def _lock(folder: Path) -> bool:
    """Take ``folder`` (made if missing) for this process: an exclusive ``flock`` on its ``.lock``,
    kept open in :data:`_HELD`. ``False`` when another process holds it or it cannot be written or
    locked."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held by a running process (BlockingIOError), or a file system without locks
        os.close(fd)
        return False
    _HELD.append(fd)
    return True
