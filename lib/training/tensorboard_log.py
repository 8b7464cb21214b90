"""Optional TensorBoard logging of a fold's epochs (when the ``tensorboard`` package is installed)."""
from __future__ import annotations

import math
from pathlib import Path


def tensorboard_writer(log_dir: Path | None, history: list[dict]):
    """A ``torch.utils.tensorboard.SummaryWriter`` on ``log_dir`` with the epochs of ``history``
    already written (:func:`tensorboard_epoch`), or ``None`` without ``log_dir`` or when the
    ``tensorboard`` package is not installed (an optional convenience). Every earlier event of
    that folder at step 1 or later is purged (``purge_step=1``: TensorBoard hides it), so a
    resumed or retrained fold shows each epoch once, from the history it continues."""
    if log_dir is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    writer = SummaryWriter(str(log_dir), purge_step=1)
    for row in history:
        tensorboard_epoch(writer, row)
    return writer


def tensorboard_epoch(writer, row: dict) -> None:
    """Write one history row (an epoch) as scalars at step ``row['epoch']``: ``loss/train``,
    ``loss/valid``, ``metric/<name>`` for each metric, ``lr``; then flush (a killed run keeps its
    finished epochs). No-op for ``writer=None``."""
    if writer is None:
        return
    tags = {"train_loss": "loss/train", "valid_loss": "loss/valid", "lr": "lr"}
    for key, value in row.items():
        if key not in ("fold", "epoch", "bad_steps", "seconds") and math.isfinite(value):
            writer.add_scalar(tags.get(key, f"metric/{key}"), value, row["epoch"])
    writer.flush()
