"""Audio-classification competition pipeline: the reusable parts behind the numbered stages.

Import from a notebook with the project folder on ``sys.path`` (no install, no side effects)::

    import sys; sys.path.insert(0, "/path/to/project")
    from lib import audio, features, models
    y, sr = audio.load("clip.wav")               # native sample rate, mono float32

The packages are layers; each imports only from the ones before it (``docs/architecture.md``):

* ``lib.core``: errors, registries, the config schema and its defaults, reading configs, the
  artifact layout and records, devices and precision;
* ``lib.data``: audio I/O, stage 00 (checks, folds), tasks, metadata encoding;
* ``lib.features``: feature sets (``log_mel``, ``seed9``, ``waveform``) and their cache (stage 01);
* ``lib.inputs``: batches of a split for training, inference and bundles, one module per input kind;
* ``lib.models``: the networks, one file per family, their heads and on-device front ends;
* ``lib.evaluation``: metrics, decisions, reports, blending (stage 04), leaderboard, submission scores;
* ``lib.inference``: predictions per recording, test-time augmentation (stage 03);
* ``lib.training``: one fold's training (:class:`lib.training.loop.FoldTrainer` and its
  callbacks) and its parts: optimisers, losses, augmentation, EMA, DDP collectives;
* ``lib.components``: which config section is looked up in which registry; configs loaded and
  checked (``load_experiment``, ``load_competition``);
* ``lib.runs``: what orchestrates runs: experiments (stage 02), torchrun ranks, sweeps, self-training;
* ``lib.shipping``: bundles, ONNX export, the offline kit (stage 05);
* ``lib.cli``: what the stage scripts share.

:data:`NOTEBOOK_NAMES` are the short names ``from lib import <name>`` gives (loaded on first use).
"""
from __future__ import annotations

import importlib
import sys
import warnings
from pathlib import Path

__version__ = "0.4.0"

NOTEBOOK_NAMES = {
    "audio": "data.audio", "folds": "data.folds", "tasks": "data.tasks", "seed9": "features.seed9",
    "metrics": "evaluation.metrics", "train": "runs.experiment", "infer": "inference.infer",
    "ensemble": "evaluation.ensemble",
}
"""``from lib import audio`` (and the others): short name -> module under ``lib``, imported on first use."""


def other_libs(path: list[str] | None = None) -> list[str]:
    """Other importable modules named ``lib`` on ``path`` (default ``sys.path``): a ``lib``
    package (with ``__init__.py``) or ``lib.py`` anywhere but here. A notebook's own ``lib``
    folder or another dataset's could be the one ``import lib`` finds, depending on the order of
    ``sys.path``; this one is ``Path(__file__).parent``."""
    here = Path(__file__).resolve().parent
    found = []
    for entry in path if path is not None else sys.path:
        for candidate in (Path(entry or ".") / "lib" / "__init__.py", Path(entry or ".") / "lib.py"):
            try:
                if candidate.is_file() and candidate.resolve().parent != here and candidate.resolve() != here:
                    found.append(str(candidate.parent if candidate.name == "__init__.py" else candidate))
            except OSError:  # an unreadable sys.path entry
                continue
    return list(dict.fromkeys(found))


if _others := other_libs():  # never silently: the other one could win in the next process or notebook cell
    warnings.warn(f"another module named 'lib' is on sys.path: {', '.join(_others)}; this pipeline's lib is "
                  f"{Path(__file__).resolve().parent} (first on sys.path wins: put this project's folder first)",
                  stacklevel=2)


def __getattr__(name: str):
    """``from lib import audio`` and the other :data:`NOTEBOOK_NAMES`: the module, imported on first use."""
    if name in NOTEBOOK_NAMES:
        return importlib.import_module(f"{__name__}.{NOTEBOOK_NAMES[name]}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
