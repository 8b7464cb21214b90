"""Progress bars: tqdm's, drawn where someone watches them, kept out of log files.

A bar redraws itself with carriage returns up to ten times a second. On a terminal or in a
notebook (a Jupyter or Kaggle kernel, its ``!python ...`` cells included) that is one line that
moves; in a file (``bash run_all.sh > run.log``) every redraw stays, fragments glued to the next
message. So where stderr is a file, or a pipe outside a notebook (``2>&1 | tee log``), a bar that
erases itself when done (``leave=False``: an epoch's batches, a stage's file checks) is not drawn
at all, since the lines printed after it say what it did, and a bar that stays is redrawn at most
once a minute.
"""

from __future__ import annotations

import os
import stat
import sys

from tqdm.auto import tqdm

LOG_MININTERVAL = 60.0
"""Seconds between two redraws of a lasting bar in a log file (tqdm's own default: 0.1)."""


def watched() -> bool:
    """True when stderr is drawn live: a terminal, or a Jupyter kernel or one of its ``!``
    commands (the kernel's ``JPY_PARENT_PID``, or Kaggle's ``KAGGLE_KERNEL_RUN_TYPE``, are
    inherited by the processes it starts); False for a file (in a notebook too: ``!bash
    run_all.sh > run.log 2>&1``) and for a pipe outside a notebook."""
    try:  # (a kernel's own stream is no file even where the server logs to one: only a process's stderr)
        if sys.stderr is sys.__stderr__ and stat.S_ISREG(os.fstat(sys.stderr.fileno()).st_mode):
            return False
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError, OSError):  # replaced (no file number) or closed stderr
        tty = False
    return tty or "JPY_PARENT_PID" in os.environ or "KAGGLE_KERNEL_RUN_TYPE" in os.environ


def progress(iterable=None, **kwargs) -> tqdm:
    """``tqdm(iterable, **kwargs)`` (same arguments and result) as :mod:`this module <lib.core.progress>`
    says: where stderr is not :func:`watched`, ``leave=False`` bars are disabled and lasting ones
    redraw every :data:`LOG_MININTERVAL` seconds at most. tqdm's ``TQDM_*`` environment variables
    (``TQDM_DISABLE=1``: no bars at all, whatever ``disable`` says) still apply."""
    if os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes"):
        kwargs["disable"] = True
    elif not watched():
        if kwargs.get("leave", True) is False:
            kwargs["disable"] = True
        elif "TQDM_MININTERVAL" not in os.environ:
            kwargs.setdefault("mininterval", LOG_MININTERVAL)
    return tqdm(iterable, **kwargs)
