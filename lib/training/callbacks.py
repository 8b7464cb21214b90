"""What a fold's training does besides learning: callbacks of :class:`lib.training.loop.FoldTrainer`
at its natural points, in the style of Lightning callbacks and SpeechBrain's ``Brain`` hooks.

The hooks, in the order the trainer calls them (every one optional; ``trainer`` is the
:class:`~lib.training.loop.FoldTrainer`, whose ``parts``, ``state``, ``good`` and ``log`` they may
read):

* ``on_setup(trainer)``: the fold's parts are built, nothing is trained yet; a callback whose
  own state must survive a retry or a resume returns it from ``state_parts()`` (name -> object
  with ``state_dict``/``load_state_dict``), snapshotted with the model after every epoch;
* ``on_fold_start(trainer)``: the state to start from is restored (fresh, or resumed);
* ``on_validation_end(trainer, scores, valid_loss, improved)``: an epoch is validated
  (``scores``: metric name -> value over the validation recordings; ``improved``: the epoch is
  the best so far);
* ``on_epoch_end(trainer, row)``: the epoch is recorded (``row``: its history row) and
  ``trainer.good`` is the snapshot to resume from;
* ``stop_reason(trainer)``: a message when training should stop before ``train.epochs``;
* ``on_fold_end(trainer, extra)``: training is over; ``extra`` (a dict) goes into the fold's info.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..core.device import training_dtype
from ..core.errors import TrainingError
from ..core.utils import atomic_path, load_tensors_only
from ..evaluation.metrics import is_better


class Callback:
    """A no-op at every hook of :class:`lib.training.loop.FoldTrainer`; subclasses override what they need."""

    def state_parts(self) -> dict:
        """Objects with ``state_dict``/``load_state_dict`` to snapshot with the fold (name -> object)."""
        return {}

    def on_setup(self, trainer) -> None:
        """The fold's parts are built (:class:`lib.training.loop.FoldParts`); nothing is restored yet."""

    def on_fold_start(self, trainer) -> None:
        """The fold's state is restored (fresh or resumed); the first epoch comes next."""

    def on_validation_end(self, trainer, scores: dict, valid_loss: float, improved: bool) -> None:
        """An epoch was validated; ``improved``: it is the best so far."""

    def on_epoch_end(self, trainer, row: dict) -> None:
        """An epoch was recorded (``row``: its history row); ``trainer.good`` is its snapshot."""

    def stop_reason(self, trainer) -> str | None:
        """Why training should stop now, or ``None``."""
        return None

    def on_fold_end(self, trainer, extra: dict) -> None:
        """Training is over; add what the fold's info should say to ``extra``."""


class EarlyStopping(Callback):
    """Stop after ``patience`` validated epochs in a row without a new best epoch (the best:
    the competition metric, smoothed by :func:`smoothed`, ties broken by the lower validation
    loss: :func:`improves`), but never before epoch ``min_epochs``: on small, noisy validation
    folds an early lucky epoch would otherwise end a fold whose neighbours still improve. Its
    counter ``wait`` is snapshotted with the fold, so a resumed or retried fold counts on.
    ``patience`` and ``min_epochs`` are epochs (int) or fractions of ``epochs`` (float in (0, 1),
    rounded up): :func:`epochs_of`."""

    def __init__(self, patience: float, monitor: str, min_epochs: float = 0, epochs: int | None = None):
        self.patience, self.min_epochs = epochs_of(patience, epochs), epochs_of(min_epochs, epochs)
        self.monitor, self.wait = monitor, 0

    def state_parts(self) -> dict:
        return {"early_stopping": self}

    def state_dict(self) -> dict:
        return {"wait": self.wait}

    def load_state_dict(self, state: dict) -> None:
        self.wait = state["wait"]

    def on_validation_end(self, trainer, scores, valid_loss, improved) -> None:
        self.wait = 0 if improved else self.wait + 1

    def stop_reason(self, trainer) -> str | None:
        if self.wait < self.patience or trainer.state.epoch < self.min_epochs:
            return None
        return f"early stop after epoch {trainer.state.epoch} (no {self.monitor} gain for {self.wait} epochs)"


def epochs_of(value: float, epochs: int | None) -> int:
    """A number of epochs given as an int, or as a fraction in (0, 1) of ``epochs`` (rounded up).
    Raises ``ValueError`` for a fraction without ``epochs``."""
    if isinstance(value, float) and 0 < value < 1:
        if epochs is None:
            raise ValueError(f"a fraction of the epochs ({value}) needs the number of epochs")
        return math.ceil(value * epochs)
    return int(value)


def smoothed(history: list[dict], value: float, monitor: str, window: int) -> float:
    """The monitored metric of an epoch for choosing the best one: the mean of its ``value`` and
    the previous ``window - 1`` epochs' ``monitor`` values in ``history`` (fewer at the start;
    ``window`` 1: ``value`` itself). A trailing mean, so the decision is known when the epoch
    ends and the kept weights are that epoch's: one lucky epoch on a small fold no longer wins
    alone. Undefined (NaN) values of the window are left out; NaN when all are."""
    recent = [h[monitor] for h in history[len(history) - (window - 1):]] if window > 1 else []
    defined = [v for v in recent + [value] if not math.isnan(v)]
    return float(np.mean(defined)) if defined else float("nan")


def improves(best: dict | None, scores: dict, valid_loss: float, monitor: str, comp: dict, full: bool = True) -> bool:
    """Whether an epoch with ``scores`` (metric -> value, the ``monitor`` one smoothed when the
    trainer smooths) and ``valid_loss`` beats ``best`` (the best epoch so far: ``{"scores",
    "valid_loss"}`` and, when smoothed, ``"monitor"``: its smoothed value, and ``"full"``; ``None``
    before the first): a better ``monitor`` value in its own direction, or an equal one (within
    :func:`lib.evaluation.metrics.is_better`'s tolerance: a mean of the same values in another
    order may differ in the last bit) with a lower validation loss. An undefined (NaN) value never
    beats a defined one and is beaten by any; two undefined ones compare on the loss. ``full``:
    whether the epoch's smoothing window is full (:func:`smoothed`); the first epoch with a full
    window beats a best epoch whose window was not (``best["full"]`` false), since a mean of fewer
    epochs is noisier and the maximum over noisy values favours it: an untrained network's lucky
    first epoch on a small fold must not be kept, nor end the fold at ``min_epochs``."""
    if best is None:
        return True
    if full and not best.get("full", True):
        return True
    value, ref = scores[monitor], best.get("monitor", best["scores"][monitor])
    if math.isnan(value) or math.isnan(ref):
        return math.isnan(ref) and (not math.isnan(value) or valid_loss < best["valid_loss"])
    if is_better(monitor, value, ref, comp):
        return True
    return not is_better(monitor, ref, value, comp) and valid_loss < best["valid_loss"]


class ResumeState(Callback):
    """The per-epoch resume state: ``trainer.good`` (weights, optimiser, scheduler, scaler, EMA,
    callbacks' states, best so far, history, every RNG) written atomically to ``path`` after each
    finished epoch, tagged with ``key``; at set-up a file with the same key is what the fold
    starts from (bit-identical to an uninterrupted run on the same machine), one with another key
    is ignored. A file of the same key saved under other :meth:`numerics` (device, training
    precision, CPU threads: ``train.compile`` or ``OMP_NUM_THREADS`` changed between the runs) is
    not resumed either: the fold starts over, said so, since the mix would equal no single run.
    Only ``writes`` (rank 0 under DDP) writes. The caller deletes the file when the
    fold is done. A file holding anything but tensors and plain values (a pickle that could run
    code) or an unreadable one is a ``TrainingError`` naming it (:func:`load_tensors_only`)."""

    def __init__(self, path: Path, key: str, writes: bool = True):
        self.path, self.key, self.writes = Path(path), key, writes

    @staticmethod
    def numerics(trainer) -> dict:
        """What a fold's numbers depend on besides its settings, the same on every rank of a DDP run:
        ``{"device": "cpu" or the GPU's model name (never its index), "precision": the training
        dtype (:func:`lib.core.device.training_dtype`), "threads": torch's CPU threads (``None``
        on a GPU, whose results do not depend on them)}``."""
        device = trainer.device
        cpu = device.type == "cpu"
        return {"device": "cpu" if cpu else torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
                "precision": training_dtype(device, trainer.parts.amp), "threads": torch.get_num_threads() if cpu else None}

    def on_setup(self, trainer) -> None:
        saved = load_tensors_only(self.path, TrainingError) if self.path.exists() else None  # never runs code
        now = self.numerics(trainer)
        if saved is not None and saved.get("key") == self.key and saved.get("numerics", now) != now:
            was = saved["numerics"]
            trainer.log(f"fold {trainer.fold}: starting over: its {saved['epoch']} saved epoch(s) were trained with "
                        f"{_numerics_text(was)}, this run trains with {_numerics_text(now)} (resumed, the fold would "
                        f"equal no uninterrupted run)")
        elif saved is not None and saved.get("key") == self.key:
            trainer.resume_from = saved
            trainer.log(f"fold {trainer.fold}: resuming after epoch {saved['epoch']} from {self.path}")
        elif saved is not None:
            trainer.log(f"fold {trainer.fold}: ignoring {self.path} (another run's state)")

    def on_epoch_end(self, trainer, row) -> None:
        if self.writes:
            with atomic_path(self.path) as tmp:
                torch.save(dict(trainer.good, key=self.key, numerics=self.numerics(trainer)), tmp)


def _numerics_text(n: dict) -> str:
    """``{"device": "cpu", "precision": "bfloat16", "threads": 2}`` as "cpu, bfloat16, 2 thread(s)"."""
    return f"{n['device']}, {n['precision']}" + (f", {n['threads']} thread(s)" if n["threads"] is not None else "")


class TensorBoard(Callback):
    """Every epoch's losses, metrics and learning rate in a TensorBoard folder ``log_dir``
    (when the ``tensorboard`` package is installed: :func:`tensorboard_writer`); a resumed fold
    rewrites the epochs of its history first, so each epoch shows once."""

    def __init__(self, log_dir: Path):
        self.log_dir, self.writer = log_dir, None

    def on_fold_start(self, trainer) -> None:
        self.writer = tensorboard_writer(self.log_dir, trainer.state.history)

    def on_epoch_end(self, trainer, row) -> None:
        tensorboard_epoch(self.writer, row)

    def on_fold_end(self, trainer, extra) -> None:
        if self.writer is not None:
            self.writer.close()


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


class SWA(Callback):
    """Stochastic weight averaging (Izmailov et al. 2018, "Averaging Weights Leads to Wider Optima
    and Better Generalization"; ``torch.optim.swa_utils``): an equal average of the weights after
    each validated epoch from epoch ``ceil(start * epochs)`` (at least 1) on; when training is over
    its BatchNorm statistics are recomputed on one window per training recording, and it replaces
    the best epoch when it scores at least as well on the competition metric."""

    def __init__(self, start: float, epochs: int):
        self.start_epoch = max(1, math.ceil(start * epochs))
        self.average = None

    def on_setup(self, trainer) -> None:
        self.average = torch.optim.swa_utils.AveragedModel(trainer.parts.model)

    def state_parts(self) -> dict:
        return {"swa": self.average}

    def on_validation_end(self, trainer, scores, valid_loss, improved) -> None:
        if trainer.epoch >= self.start_epoch:
            self.average.update_parameters(trainer.parts.model)

    def on_fold_end(self, trainer, extra) -> None:
        if int(self.average.n_averaged) > 0:
            extra["swa"] = self.result(trainer)
        else:  # early stopping ended the fold before the averaging began: never unsaid
            trainer.log(f"fold {trainer.fold}: WARNING: no SWA: training stopped at epoch {trainer.epoch}, before "
                        f"train.swa.start's epoch {self.start_epoch}; lower train.swa.start or raise train.patience")
            extra["swa"] = {"epochs_averaged": 0, "kept": False}

    def result(self, trainer) -> dict:
        """Validate the average; when it scores at least as well as the best epoch, it replaces it
        in ``trainer.state.best`` (weights, probabilities, scores and validation loss). Returns
        ``{"epochs_averaged", "scores", "kept"}``."""
        swa, best, p, comp, fold = self.average, trainer.state.best, trainer.parts, trainer.comp, trainer.fold
        update_bn(swa.module, trainer.data, trainer.data.sample_windows(p.tr_rec, p.rng), trainer.cfg["train"]["batch_size"])
        probs, scores, valid_loss = trainer.evaluate(swa.module)
        monitor = comp["metric"]
        kept = np.isfinite(valid_loss) and np.isfinite(scores[monitor]) \
            and not is_better(monitor, best["scores"][monitor], scores[monitor], comp)  # at least as good, never NaN
        trainer.log(f"fold {fold}: SWA of {int(swa.n_averaged)} epochs: {monitor} {scores[monitor]:.4f} against "
                    f"{best['scores'][monitor]:.4f} for epoch {best['epoch']}: " + ("kept" if kept else "not kept"))
        if kept:
            best.update(scores=scores, valid_loss=valid_loss, probs=torch.from_numpy(probs),
                        state={k: v.detach().cpu().clone() for k, v in swa.module.state_dict().items()})
        return {"epochs_averaged": int(swa.n_averaged), "scores": scores, "kept": bool(kept)}


@torch.no_grad()
def update_bn(model, data, items: np.ndarray, batch_size: int) -> None:
    """Recompute the BatchNorm statistics of ``model`` as the plain average over the batches of
    ``items`` of ``data`` (:class:`lib.inputs.SplitInputs`; momentum ``None``), as
    ``torch.optim.swa_utils.update_bn`` does for a DataLoader; modules that stay in eval mode
    under ``train()`` (frozen pretrained blocks) keep theirs."""
    model.train()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    device = next(model.parameters()).device
    for i in range(0, len(items), batch_size):
        x, scalars = data.batch(items[i:i + batch_size], device)
        model(x, scalars)
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    model.eval()
