"""What every stage script shares: common arguments, error handling, timing.

Kept light (no torch, pandas or numpy at import) so that every stage's ``--help`` is instant:
stages import their heavy modules inside ``main()``.
"""
from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from .core.config import ROOT, RUN_ONLY_KEYS, changing_overrides, check_no_name_override, config_name, variant_name
from .core.errors import ConfigError, PipelineError  # noqa: F401  (ConfigError: raised by stages as cli.ConfigError)
from .core.numba_cache import claim_numba_cache

EXPECTED_ERRORS = (PipelineError,)
"""Errors printed as a one-paragraph message (exit 1); anything else is a bug and keeps its traceback
(but for the file-system errors of :func:`file_system_message`)."""
_FS_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR}


def parser(description: str) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` with the shared ``--output-dir`` option; ``description`` (the stage's
    docstring, with its usage example) is shown with its line breaks kept."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", default=str(default_output()), help="artifact folder (default: %(default)s)")
    return p


def positive_int(text: str) -> int:
    """An ``argparse`` type: an integer of 1 or more (``--workers``), else argparse's one-line error."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return value


def default_output() -> Path:
    """``output/`` in the project folder, or in the working directory when the project folder is
    read-only (code mounted from a dataset in a notebook)."""
    return ROOT / "output" if os.access(ROOT, os.W_OK) else Path.cwd() / "output"


def add_experiment_args(p: argparse.ArgumentParser, many: bool = False) -> None:
    """Add the experiment config argument(s), ``--set key=value`` overrides and ``--force``, and
    for a single config ``--name`` (the experiment name; see :func:`experiment`)."""
    p.add_argument("configs" if many else "config", nargs="+" if many else None,
                   help=f"experiment config{'(s)' if many else ''}, e.g. configs/cnn_small.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=3 (repeatable)")
    if not many:
        p.add_argument("--name", help="experiment name (default: the config's; with --set overrides of other keys "
                                      f"than {', '.join(RUN_ONLY_KEYS)}: NAME+<hash of them>, a variant of its own)")
    p.add_argument("--force", action="store_true", help="rebuild even when an up-to-date result exists")


def parse_experiment(description: str):
    """Parse ``CONFIG [--set ...] [--name ...] [--force] [--output-dir ...]``; print the
    experiment name when it is not the config's own. Returns ``(args, Outputs, config)``; raises
    ``ConfigError`` for a bad config or override."""
    p = parser(description)
    add_experiment_args(p)
    args = p.parse_args()
    out = outputs(args)
    return args, out, experiment(args.config, args.set, args.name, announce=True, out=out)


def experiment(path: str, overrides: list[str], name: str | None = None, announce: bool = False,
               out=None) -> dict:
    """Load and check an experiment config with ``--set`` overrides, and name the run: ``name``
    if given, else :func:`lib.core.config.variant_name` of the config's name. ``announce``
    prints the name and why when it differs from the config's. ``out`` (the run's
    ``lib.core.paths.Outputs``): its folder must be writable, and the config is checked against
    its prepared competition when stage 00 has run (``train.folds``). Returns the config; raises
    ``ConfigError``."""
    from .components import resolve_experiment  # the registries: torch and the model zoo
    from .core.schema import check_folder_name

    if name is not None:
        check_folder_name(name, "--name")
    if out is not None:
        out.check_writable()
    comp = out.prepared_competition() if out is not None else None
    cfg, overrides, unused = resolve_experiment(path, overrides, comp)
    if unused and announce:  # a run's --set train.epochs=5 given to a scikit-learn member too
        print(f"{cfg['name']}: --set {', '.join(unused)} passed over (the scikit-learn member "
              f"{cfg['model']['name']!r} has no use for {'it' if len(unused) == 1 else 'them'}: docs/zoo.md)")
    own, cfg["name"] = cfg["name"], name or variant_name(cfg["name"], overrides)
    if announce and name:
        print(f"experiment {name} (--name)")
    elif announce and cfg["name"] != own:
        sets = " ".join(f"--set {o}" for o in changing_overrides(overrides))
        print(f"variant of {own} ({sets}): experiment {cfg['name']}; use --name to choose")
    return cfg


RESUME = "run the same command again: it redoes only what did not finish"


def _terminated(signum, frame) -> None:
    """SIGTERM (what Kaggle, a cluster's time limit or ``kill`` send) as Ctrl-C; a second one during
    the cleanup ends the process at once (the default action again)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise KeyboardInterrupt("SIGTERM")


def run(stage: str, main, resume: str = RESUME) -> None:
    """Run ``main()`` for a stage: print the wall time at the end, and turn a ``PipelineError``
    into a one-paragraph message and exit code 1 (no traceback unless ``PIPELINE_DEBUG=1``); other
    errors are bugs and keep their traceback (exit 1); Ctrl-C exits 130 and SIGTERM 143 (handled
    as Ctrl-C where nothing else handles it: the same message, no artifact left half-written; not
    in a torchrun rank, which SIGTERM ends at once, as torchrun expects),
    saying ``resume`` (how a rerun carries on); a stage whose stdout's
    reader went away (``leaderboard.py | head``) ends quietly with 141. A torchrun rank
    (``WORLD_SIZE`` > 1) that succeeded ends without the interpreter's teardown (:func:`_exit_at_once`).
    A full disk met in a library's own thread (tensorboard's event writer) is reported once, by
    the main thread's line, not also by the thread's traceback. Numba's cache is first pointed at
    a folder of this process's own (:func:`lib.core.numba_cache.claim_numba_cache`), and glibc
    told to keep freed memory for reuse (:func:`lib.core.utils.keep_freed_memory`)."""
    from .core.utils import format_seconds, keep_freed_memory

    t0 = time.time()
    claim_numba_cache()
    keep_freed_memory()
    threading.excepthook = _quiet_disk_full
    if (threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
            and "WORLD_SIZE" not in os.environ):  # (a torchrun rank: torchrun forwards signals and must end it at once)
        signal.signal(signal.SIGTERM, _terminated)
    try:
        main()
    except EXPECTED_ERRORS as exc:
        if os.environ.get("PIPELINE_DEBUG"):
            traceback.print_exc()
        print(f"\n{stage}: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as exc:
        term = exc.args == ("SIGTERM",)
        print(f"\n{stage}: {'terminated (SIGTERM)' if term else 'interrupted'}; finished artifacts are intact"
              + (f"; {resume}" if resume else ""), file=sys.stderr)
        code = 128 + signal.SIGTERM if term else 130
        _exit_now_if_threads_linger(code)
        sys.exit(code)
    except Exception as exc:
        if isinstance(exc, BrokenPipeError) and _stdout_gone():
            _end_on_closed_pipe()
        message = file_system_message(exc)
        if message:
            if os.environ.get("PIPELINE_DEBUG"):
                traceback.print_exc()
            print(f"\n{stage}: error: {message}", file=sys.stderr)
            sys.exit(1)
        traceback.print_exc()
        print(f"\n{stage}: failed (see the traceback above)", file=sys.stderr)
        sys.exit(1)
    try:
        print(f"{stage}: done in {format_seconds(time.time() - t0)}", flush=True)
    except BrokenPipeError:
        _end_on_closed_pipe()
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        _exit_at_once(0)


def _stdout_gone() -> bool:
    """Whether the reader of this process's stdout has gone away: a pipe's write end polls with
    ``POLLERR`` then (Linux); ``False`` where stdout is no file descriptor (a notebook, a test)."""
    import select

    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & select.POLLERR for _, event in poll.poll(0))
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is both of the first two
        return False


def _end_on_closed_pipe() -> None:
    """End quietly, as ``ls | head`` does, when the reader of stdout went away (``leaderboard.py |
    head``): exit code 141 (128 + SIGPIPE, what a shell shows for a program the signal ended), with
    stdout pointed at ``/dev/null`` so that the interpreter's own flush at exit says nothing either
    (the Python documentation's note on SIGPIPE, module ``signal``)."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        _exit_at_once(141)  # a torchrun rank: without the teardown, as after success
    _exit_now_if_threads_linger(141)
    sys.exit(141)


def _quiet_disk_full(args) -> None:
    """``threading.excepthook`` that says nothing of a full disk (the stage's line says it)."""
    if not (isinstance(args.exc_value, OSError) and args.exc_value.errno in (errno.ENOSPC, errno.EDQUOT)):
        threading.__excepthook__(args)


def _exit_at_once(code: int) -> None:
    """Flush stdout and stderr and end the process with ``code`` without the interpreter's
    teardown (``os._exit``). For a torchrun rank that has left its process group
    (:func:`lib.runs.distributed.finish`): at exit, C++ destructors of torch.distributed's gloo
    transport now and then met a thread still running and aborted the finished rank ("terminate
    called without an active exception", SIGABRT after "done"; seen in the two-launcher test), and
    the other machine's launcher then waited 300 s at torchrun's exit barrier before failing too.
    Every artifact is written atomically and its record last, so nothing is lost."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _exit_now_if_threads_linger(code: int) -> None:
    """Exit with ``code`` at once (:func:`_exit_at_once`) when a thread that is not a daemon
    is still alive, since the interpreter would wait for it forever: a Ctrl-C that lands while a
    library starts a worker thread can leave it behind (Optuna's trial heartbeat thread is stopped
    by a ``with`` block that an interrupted ``Thread.start()`` never enters; a sweep worker on
    PostgreSQL was seen to hang after its "interrupted" line). Every artifact is written
    atomically, so nothing is lost."""
    if any(t is not threading.main_thread() and t.is_alive() and not t.daemon for t in threading.enumerate()):
        _exit_at_once(code)


def file_system_message(exc: BaseException) -> str | None:
    """One line for an ``OSError`` of the file system around a path (a read-only or unwritable
    folder, a file where a folder should be, a full disk), naming the folder or file at fault;
    ``None`` for any other error (a bug: :func:`run` keeps its traceback)."""
    if not isinstance(exc, OSError) or exc.errno not in _FS_ERRNOS:
        return None
    if not exc.filename:  # a full disk met by a library that does not say where (tensorboard's writer)
        return (f"no space left on the disk while writing ({exc.strerror}; the library did not say which file): "
                f"free some space where the output folder is and run it again" if exc.errno in (errno.ENOSPC, errno.EDQUOT)
                else None)
    path = Path(os.fsdecode(exc.filename))
    if exc.errno == errno.ENOTDIR:
        blocker = next((p for p in (path, *path.parents) if p.is_file()), path)
        return f"{blocker} is a file, not a folder (needed for {path})"
    folder = next((p for p in (path.parent, *path.parent.parents) if p.is_dir()), path.parent)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left for {path} (folder {folder}): {exc.strerror}"
    if path.exists():
        return f"cannot access {path}: {exc.strerror}"
    return f"cannot write in folder {folder} (to create {path.name}): {exc.strerror}; give a writable folder"


def outputs(args):
    """The ``lib.core.paths.Outputs`` layout for ``--output-dir``."""
    from .core.paths import Outputs

    return Outputs(Path(args.output_dir).resolve())


def run_name(path: str, overrides: list[str]) -> str:
    """The experiment name that 02 and 03 give a run of config ``path`` with ``--set``
    ``overrides`` (no ``--name``): :func:`lib.core.config.variant_name`, without the overrides a
    scikit-learn member passes over (:func:`experiment`; the model zoo is imported only when an
    override could be one of them). Raises ``ConfigError``."""
    from .core.schema import NOT_FOR_CLASSICAL, under

    if any(under(o.partition("=")[0].strip(), NOT_FOR_CLASSICAL) for o in changing_overrides(overrides)):
        return experiment(path, overrides)["name"]
    check_no_name_override(overrides)
    return variant_name(config_name(path), overrides)


if __name__ == "__main__":  # python -m lib.cli name CONFIG [--set KEY=VALUE ...] (for run_all.sh)
    p = argparse.ArgumentParser(prog="python -m lib.cli", description="print the experiment name of a run")
    p.add_argument("command", choices=["name"])
    p.add_argument("config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    try:
        print(run_name(args.config, args.set))
    except ConfigError as exc:
        sys.exit(f"error: {exc}")
