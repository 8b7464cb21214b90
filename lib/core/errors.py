"""The errors a user is meant to read: each stage prints their message (no traceback) and exits 1.

Anything else that escapes a stage is a bug and keeps its traceback (:func:`lib.cli.run`).
Every class here derives from :class:`PipelineError`; those that replaced a built-in error keep
it as a second base (``ConfigError`` is still a ``ValueError``) so that older callers that
caught the built-in still do.
"""
from __future__ import annotations


class PipelineError(Exception):
    """An expected failure: bad configuration, bad input, a missing or stale artifact, a training
    run that cannot go on. The message names the file, row or key and what was expected."""


class ConfigError(PipelineError, ValueError):
    """A configuration file or ``--set`` override is missing a key, has an unknown key, or has a
    value of the wrong type or range."""


class InputError(PipelineError, ValueError):
    """The competition's input has problems; ``problems`` lists each one (file, line, what)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        shown = problems[:50] + ([f"... and {len(problems) - 50} more"] if len(problems) > 50 else [])
        super().__init__(f"{len(problems)} problem(s) in the input:\n  " + "\n  ".join(shown))


class AudioError(PipelineError, ValueError):
    """An audio file is missing, unreadable, empty, or not at the expected sample rate."""


class MissingArtifact(PipelineError, FileNotFoundError):
    """An earlier stage's artifact is missing, incomplete or stale; the message names the stage to
    run (again)."""


class TrainingError(PipelineError, RuntimeError):
    """Training cannot go on (e.g. repeated non-finite losses); the message names fold, epoch, step."""
