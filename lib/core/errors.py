"""The errors a user is meant to read: each stage prints their message (no traceback) and exits 1.

Anything else that escapes a stage is a bug and keeps its traceback (:func:`lib.cli.run`).
Every class here derives from :class:`PipelineError`; those that replaced a built-in error keep
it as a second base (``ConfigError`` is still a ``ValueError``) so that older callers that
caught the built-in still do.
"""
from __future__ import annotations

import collections
import re


class PipelineError(Exception):
    """An expected failure: bad configuration, bad input, a missing or stale artifact, a training
    run that cannot go on. The message names the file, row or key and what was expected."""


class ConfigError(PipelineError, ValueError):
    """A configuration file or ``--set`` override is missing a key, has an unknown key, or has a
    value of the wrong type or range."""


class InputError(PipelineError, ValueError):
    """The competition's input has problems; ``problems`` lists each one (file, line, what). The
    message lists at most :data:`SHOWN` of them, the first of every kind among them
    (:func:`problem_kind`) so that no kind is hidden behind many of another, and counts the rest
    by kind."""

    SHOWN = 50

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) in the input:\n  " + "\n  ".join(_shown(problems, self.SHOWN)))


def problem_kind(problem: str) -> str:
    """What a problem says without where: quoted values shown as ``'...'``, file names and paths as
    ``<file>``, numbers as ``N``, and the leading ``": "``-separated parts that name a file or a
    CSV line dropped (``"train.csv line 10: /data/train/a.wav: file not found"`` -> ``"file not
    found"``; ``"a.csv line 5: empty 'ID'"`` -> ``"empty '...'"``)."""
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'...'", problem)
    text = re.sub(r"[^\s:'\"(),]*[/\\][^\s:'\"(),]*|[^\s:'\"(),/\\]+\.[A-Za-z][A-Za-z0-9]{0,4}\b", "<file>", text)
    parts = re.sub(r"\d+(\.\d+)?", "N", text).split(": ")
    while len(parts) > 1 and parts[0].startswith("<file>"):
        parts.pop(0)
    return ": ".join(parts)


def _shown(problems: list[str], limit: int) -> list[str]:
    """The lines of :class:`InputError`'s message: every problem when there are at most ``limit``;
    else ``limit`` of them in their order, the first of each kind before the others (a kind
    beyond ``limit`` kinds is counted only), then one line counting the rest by kind (the ten
    most frequent kinds, then how many other kinds)."""
    if len(problems) <= limit:
        return problems
    kinds = [problem_kind(p) for p in problems]
    first = sorted({k: i for i, k in reversed(list(enumerate(kinds)))}.values())[:limit]
    others = [i for i in range(len(problems)) if i not in set(first)]
    keep = set(first) | set(others[:limit - len(first)])
    rest = collections.Counter(k for i, k in enumerate(kinds) if i not in keep)
    counts = "; ".join([f"{n} x {k}" for k, n in rest.most_common(10)]
                       + ([f"{len(rest) - 10} other kinds"] if len(rest) > 10 else []))
    return [problems[i] for i in sorted(keep)] + [f"... and {len(problems) - len(keep)} more: {counts}"]


class AudioError(PipelineError, ValueError):
    """An audio file is missing, unreadable, empty, or not at the expected sample rate."""


class MissingArtifact(PipelineError, FileNotFoundError):
    """An earlier stage's artifact is missing, incomplete or stale; the message names the stage to
    run (again)."""


class TrainingError(PipelineError, RuntimeError):
    """Training cannot go on (e.g. repeated non-finite losses); the message names fold, epoch, step."""
