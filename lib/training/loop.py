"""The training of one fold: :class:`FoldTrainer` (set-up, epochs, validation, finish) and its steps.

Each epoch sees one fresh random window of every training recording, of each of its segments
when it has several (``train.epoch_repeats`` of them; :func:`epoch_recordings`; on the waveform path a crop at a random offset, augmented as
a waveform and turned into a spectrogram by the model's front end: :func:`training_batch`), one
optimisation step per batch (:func:`train_step`: autocast, gradient clipping, the optimiser,
the scheduler per step, the EMA of the weights, ``train.ema``, which is what gets validated and
kept); validation predicts every window and scores recordings (:mod:`lib.inputs`); the best
epoch on the competition metric (ties broken by the lower validation loss) is kept and, with
test-time augmentation, predicts its validation rows again as the test set will be. A
non-finite step is skipped; repeated ones, or non-finite validation predictions, restore the
last good state and retry once (``docs/notes/non-finite-training.md``). Fixed seeds per fold;
mixed precision where it is fast (:mod:`lib.core.device`). Early stopping, the resume state,
TensorBoard and SWA are callbacks (:mod:`lib.training.callbacks`); :func:`train_fold` wires the
standard ones.
"""
from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..core.device import autocast, inference_dtype, place_model, training_amp, training_dtype
from ..core.errors import ConfigError, TrainingError
from ..core.schema import SAMPLERS
from ..core.utils import seed_everything
from ..core.progress import progress
from ..data import tasks
from ..data.metadata import metadata_encoder
from ..data.slices import slices_of
from ..evaluation.metrics import score_all, sign
from ..inference.predict import predict_recordings, tta_active
from ..inputs import SplitInputs
from ..models import build_model, count_parameters
from .augment import Augmenter
from .callbacks import SWA, EarlyStopping, ResumeState, TensorBoard, improves, smoothed
from .ddp import Ranks, all_sum, all_true, broadcast_buffers, check_ddp, gather, rank_seed, shard
from .ema import ema_multi_avg_fn
from .losses import SupConLoss, balanced_class_weight, build_loss
from .optim import SCHEDULERS, build_optimizer
from .wave_augment import WaveAugmenter


def input_stats(data: SplitInputs, items: np.ndarray, frontend=None, chunk: int = 512):
    """Input statistics over ``items`` of ``data``, accumulated in chunks (float64) so memory stays
    small: the mean and std of the spectrograms per channel ``(C,)`` (with a ``frontend``, of its
    output per channel and band ``(C, F)``, before its own normalisation) and of the scalar inputs
    per column ``(S,)`` (``None`` when there are none). Returns ``(mean, std, scalar_mean,
    scalar_std)`` float32."""
    s = s2 = 0.0
    n = 0
    scalars = []
    dims = (0, 3) if frontend is not None else (0, 2, 3)
    for i in range(0, len(items), chunk):
        x, sc = data.batch(items[i:i + chunk], data.device)
        if frontend is not None:
            with torch.no_grad():
                x = frontend.to(x.device).transform(x)
        x = x.double()
        s = s + x.sum(dims)
        s2 = s2 + (x * x).sum(dims)
        n += x.numel() // s.numel()
        scalars.append(sc.double())
    mean = s / n
    std = (s2 / n - mean ** 2).clamp_min(0).sqrt()
    sc = torch.cat(scalars)
    if sc.shape[1] == 0:
        return mean.float(), std.float(), None, None
    return mean.float(), std.float(), sc.mean(0).float(), sc.std(0).nan_to_num(1.0).float()


def epoch_recordings(recs: np.ndarray, y: np.ndarray, sampler: str | None, rng: np.random.Generator,
                     repeats: int = 1) -> np.ndarray:
    """The training recordings of one epoch, in order, ``(repeats * len(recs),)``: ``repeats``
    permutations of ``recs`` one after the other (``sampler: null``), or as many draws with
    replacement for a balanced sampler. ``balanced``: each recording drawn with probability
    proportional to 1 / the size of its class (multi-label: of its rarest label; rows without
    labels form a class of their own), so every class is drawn equally often. ``balanced_slices``:
    the same within each combination of slice values (``y`` carries them:
    :class:`lib.data.slices.SlicedLabels`), so every (slice, class) cell is drawn equally often
    and no slice's class ratio is left for the model to learn: group balancing for worst-group
    accuracy (Idrissi et al. 2022, "Simple data balancing achieves competitive worst-group
    accuracy"; the groups of Sagawa et al. 2020's group DRO). Each occurrence gets its own random
    window (``train.epoch_repeats``: more crops of long recordings per epoch). Raises
    ``ConfigError`` for another sampler, or ``balanced_slices`` without slices."""
    if sampler is None:
        return np.concatenate([rng.permutation(recs) for _ in range(repeats)])
    if sampler not in SAMPLERS:
        raise ConfigError(f"train.sampler {sampler!r} is not null or one of {', '.join(SAMPLERS)}")
    onehot = y[recs] if y.ndim == 2 else np.eye(y.max() + 1)[y[recs]]
    onehot = np.column_stack([onehot, onehot.sum(1) == 0]).astype(float)
    cells = np.zeros(len(recs), dtype=int)
    if sampler == "balanced_slices":
        slices = slices_of(y)
        if not slices:
            raise ConfigError("train.sampler balanced_slices balances classes within each slice: the competition "
                              "config needs `slices: [COLUMN, ...]`")
        keys = ["\x1f".join(values) for values in zip(*(v[recs] for v in slices.values()))]
        cells = np.unique(keys, return_inverse=True)[1].ravel()
    w = np.zeros(len(recs))
    for cell in np.unique(cells):
        rows = cells == cell
        w[rows] = (onehot[rows] / np.maximum(onehot[rows].sum(0), 1)).max(1)
    return rng.choice(recs, size=repeats * len(recs), replace=True, p=w / w.sum())


def training_batch(data: SplitInputs, items: np.ndarray, device, model, wave_augment: WaveAugmenter,
                   augment: Augmenter) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One training batch of ``items`` on ``device``: the inputs, the waveform augmentations
    (waveform input only), the model's front end (:meth:`AudioClassifier.to_spec`, no gradient),
    then Mixup/CutMix/SpecAugment on the spectrograms. Returns ``spec (B, C, F, T)``, ``scalars
    (B, S)``, ``target (B, n_outputs)``."""
    x, scalars = data.batch(items, device)
    x, target = wave_augment(x, data.targets(items, training=True).to(device, non_blocking=True))
    with torch.no_grad():
        spec = model.to_spec(x)
    return augment(spec, scalars, target)


def train_step(forward, model, opt, loss_fn, scaler, spec, scalars, target, device, amp: bool = True,
               grad_clip: float = 5.0, weight: float = 1.0, ranks: Ranks = Ranks(), supcon=None
               ) -> tuple[torch.Tensor, bool]:
    """One optimisation step on a batch (``spec (B, C, F, T)``, ``scalars (B, S)``, ``target
    (B, n_outputs)``): autocast forward through ``forward`` (``model`` or its compiled form),
    backward through the (possibly no-op) ``GradScaler``, gradient clipping of ``model``'s
    parameters to norm ``grad_clip``, optimiser step. Returns ``(detached loss on the device,
    finite)``: when the loss or the gradient norm is not finite the optimiser step is not taken
    (``finite`` False; with an enabled ``GradScaler`` a non-finite gradient of a finite loss is
    the scaler's own skip and counts as finite). Reading that flag is the step's one host
    synchronisation. Under DDP (``forward`` a ``DistributedDataParallel`` of ``model`` over
    ``ranks``) the loss is multiplied by ``weight`` (this rank's share of the global batch times
    the number of ranks) before the backward pass, so that DDP's mean over ranks is the mean over
    every window of the global batch, and the step is taken only when it is finite on every rank.
    ``supcon``: ``(weight, SupConLoss)`` (``train.supcon``): that auxiliary loss on the model's
    embedding is added, times its weight."""
    with autocast(device, amp):
        out = forward(spec, scalars)
        loss = loss_fn(out["logits"], target)
        if supcon is not None:
            loss = loss + supcon[0] * supcon[1](out["embedding"], target)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss * weight if weight != 1.0 else loss).backward()
    scaler.unscale_(opt)
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    finite = torch.isfinite(loss) if scaler.is_enabled() else torch.isfinite(loss) & torch.isfinite(norm)
    finite = all_true(bool(finite), ranks, device)
    if finite:
        scaler.step(opt)
    scaler.update()
    return loss.detach(), finite


class _Fault(Exception):
    """A fault that the last good state may cure: ``max_bad_steps`` consecutive non-finite steps,
    or non-finite validation predictions. The message names fold, epoch (and step)."""


def _check_finite(probs: np.ndarray, logits: torch.Tensor, what: str, kind: str = "OOF",
                  error: type = TrainingError) -> None:
    """Raise ``error`` naming ``what`` and ``kind`` unless the recording ``probs`` and the window
    ``logits (windows, n_outputs)`` are all finite (a metric fed NaN would raise, or score it
    silently)."""
    if not (torch.isfinite(logits).all() and np.isfinite(probs).all()):
        raise error(f"{what}: non-finite {kind} predictions in {int((~torch.isfinite(logits)).any(1).sum())} of "
                    f"{len(logits)} windows (not scored)")


def _rng_state(gens: dict) -> dict:
    """Every random generator the loop draws from, as plain values and tensors: the numpy
    Generators ``gens`` (name -> ``np.random.Generator``), torch (CPU, CUDA), ``random``, numpy's
    global RNG."""
    version, internal, gauss = random.getstate()
    legacy = np.random.get_state(legacy=False)
    legacy["state"]["key"] = legacy["state"]["key"].tolist()
    return {"gens": {k: g.bit_generator.state for k, g in gens.items()}, "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "random": [version, list(internal), gauss], "numpy": legacy}


def _set_rng_state(state: dict, gens: dict) -> None:
    """Restore what :func:`_rng_state` returned (``gens`` are set in place)."""
    for k, g in gens.items():
        g.bit_generator.state = state["gens"][k]
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss = state["random"]
    random.setstate((version, tuple(internal), gauss))
    legacy = copy.deepcopy(state["numpy"])
    legacy["state"]["key"] = np.asarray(legacy["state"]["key"], dtype=np.uint32)
    np.random.set_state(legacy)


def _snapshot(parts: dict, gens: dict, **loop) -> dict:
    """A deep copy of the fold's training state after a finished epoch: ``parts`` (name ->
    model, optimiser, scheduler, scaler, EMA: anything with ``state_dict``; ``None`` skipped),
    the RNG states (:func:`_rng_state`) and the loop's own values ``loop`` (epoch, best, history,
    wait, bad_steps). Plain types and tensors only: it loads with ``torch.load(weights_only=True)``."""
    return copy.deepcopy({"parts": {k: p.state_dict() for k, p in parts.items() if p is not None},
                          "rng": _rng_state(gens), **loop})


def _restore(state: dict, parts: dict, gens: dict | None) -> dict:
    """Load a :func:`_snapshot` into ``parts`` (and the RNGs when ``gens`` is given: resuming;
    ``None`` keeps them running, so a retry after a fault draws other batches). Returns a deep
    copy of the loop's values (the fields of :class:`FoldState`; not the parts, generators or what
    :class:`ResumeState` adds); ``state`` itself is left untouched (optimisers would otherwise keep
    its tensors as their own)."""
    state = copy.deepcopy(state)
    for k, p in parts.items():
        if p is not None:
            p.load_state_dict(state["parts"][k])
    if gens is not None:
        _set_rng_state(state["rng"], gens)
    return {f.name: state[f.name] for f in fields(FoldState) if f.name in state}


def fold_setup(cfg: dict, comp: dict, data: SplitInputs, table: pd.DataFrame, fold: int):
    """The start of every fold: seed everything with ``train.seed + fold``, split the recordings of
    ``table`` (``folds.csv``) into training and validation ones, fit the metadata encoder on the
    training rows (``inputs.metadata``) and give it to ``data``, build the model. Returns
    ``(train_recordings, valid_recordings, encoder or None, model)``."""
    seed_everything(cfg["train"]["seed"] + fold)
    folds = table["fold"].to_numpy()
    tr_rec, va_rec = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
    encoder = metadata_encoder(comp, table, tr_rec) if cfg["inputs"]["metadata"] else None
    data.set_metadata(encoder, table)
    model = build_model(cfg["model"], data.manifest, tasks.n_outputs(comp), data.n_scalars, cfg["frontend"])
    return tr_rec, va_rec, encoder, model


def _predict_validation(model, data: SplitInputs, va_rec: np.ndarray, comp: dict, ranks: Ranks, amp: bool | None):
    """:func:`predict_recordings` of ``va_rec`` in the training steps' precision under ``amp``
    (the fold's :attr:`FoldParts.amp`), or the inference precision (``None``); under DDP each
    rank predicts its share (with rank 0's BatchNorm statistics) and every rank gets all of
    them, in order."""
    if ranks.world == 1 or len(va_rec) < ranks.world:
        return predict_recordings(model, data, va_rec, comp, amp=amp)
    broadcast_buffers(model, ranks)
    parts = gather(predict_recordings(model, data, shard(va_rec, ranks), comp, amp=amp), ranks)
    return (np.concatenate([p[0] for p in parts]), torch.cat([p[1] for p in parts], 1),
            np.concatenate([p[2] for p in parts]))


def epoch_items(data, recs: np.ndarray, sampler: str | None, rng: np.random.Generator, repeats: int = 1) -> np.ndarray:
    """The training items of one epoch of ``data`` (:class:`lib.inputs.base.SplitInputs`): a random
    crop of every region (segment) of the recordings of :func:`epoch_recordings`, in random order
    (``data.sample_windows``), exactly ``repeats`` x the regions of ``recs`` of them, the steps the
    schedule was made for: a balanced sampler's draws, whose recordings may have many or few
    segments, are cut or topped up with further draws (else they overran the schedule or ended
    it early). Items ``(n,)`` or ``(n, 2)`` as ``data.sample_windows`` gives them."""
    crops = repeats * int(data.region_count[recs].sum())
    order = data.sample_windows(epoch_recordings(recs, data.y, sampler, rng, repeats), rng)
    while len(order) < crops:  # (only a balanced sampler over recordings of unequal segment counts)
        order = np.concatenate([order, data.sample_windows(epoch_recordings(recs, data.y, sampler, rng, repeats), rng)])
    return order[:crops]


@dataclass
class FoldParts:
    """What :meth:`FoldTrainer.setup` builds for one fold: the training and validation recordings
    (rows of ``folds.csv``, ``(n,)``), the fitted metadata encoder (or ``None``), the model and the
    callable that trains it (``forward``: the model, its DDP wrapper or its compiled form), the
    module that is validated and kept (``kept``: the EMA's average or the model), the class weights
    of the loss ``(n_outputs,)`` or ``None``, the loss, optimiser, scheduler (``per_epoch``:
    stepped once an epoch on a validation figure), gradient scaler, spectrogram and waveform
    augmenters, the EMA (or ``None``), the generator of the epochs' recordings and windows, the
    optimiser steps per epoch and the global batch (``batch_size`` x ranks)."""

    tr_rec: np.ndarray
    va_rec: np.ndarray
    encoder: object
    model: torch.nn.Module
    forward: object
    kept: torch.nn.Module
    class_weight: np.ndarray | None
    loss_fn: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    per_epoch: bool
    scaler: torch.amp.GradScaler
    augment: Augmenter
    wave_augment: WaveAugmenter
    ema: torch.optim.swa_utils.AveragedModel | None
    rng: np.random.Generator
    steps: int
    global_batch: int
    supcon: tuple[float, SupConLoss] | None = None
    amp: bool = True  # autocast in training steps (lib.core.device.training_amp)

    def stateful(self) -> dict:
        """The parts whose state a snapshot holds (name -> object with ``state_dict``; ``None`` skipped)."""
        return {"model": self.model, "optimizer": self.optimizer, "scheduler": self.scheduler, "scaler": self.scaler,
                "ema": self.ema}

    def generators(self) -> dict:
        """The loop's own numpy generators (name -> ``np.random.Generator``)."""
        return {"epochs": self.rng, "augment": self.augment.rng, "wave_augment": self.wave_augment.rng}


@dataclass
class FoldState:
    """Where a fold's training is: the last finished ``epoch``, the ``best`` epoch so far
    (``{"epoch", "scores", "valid_loss", "probs" (valid_recordings, n_classes), "state"}``, ``None``
    before the first), the ``history`` (one dict per epoch) and the non-finite steps skipped."""

    epoch: int = 0
    best: dict | None = None
    history: list = field(default_factory=list)
    bad_steps: int = 0


class FoldTrainer:
    """Train one fold of experiment ``cfg`` on ``data`` (:class:`lib.inputs.SplitInputs`) with
    ``table`` (``folds.csv``: its recordings of ``fold`` are the validation set) on ``device``.

    :meth:`fit` runs :meth:`setup` (the parts, :class:`FoldParts`), then epochs of
    :meth:`train_epoch` and :meth:`validate` until ``train.epochs`` or a callback's
    ``stop_reason`` (:mod:`lib.training.callbacks`), then :meth:`finish`. ``callbacks`` are called
    at the hooks that module lists, in order. ``ranks`` (:mod:`lib.training.ddp`): with more than
    one rank, every rank of the run trains the same fold with ``DistributedDataParallel``: each
    step takes ``batch_size`` windows on every rank (a global batch of ``batch_size x world``,
    drawn in the same order as one rank would draw it; a last batch smaller than the number of
    ranks is skipped), each rank augments its share with its own generators, validation
    recordings are shared out and gathered, and every rank returns the same result.
    """

    def __init__(self, cfg: dict, comp: dict, data: SplitInputs, table: pd.DataFrame, fold: int, device,
                 callbacks: list | None = None, log=print, ranks: Ranks = Ranks()):
        self.cfg, self.comp, self.data, self.table, self.fold, self.device = cfg, comp, data, table, fold, device
        self.callbacks, self.log, self.ranks = list(callbacks or []), log, ranks
        self.parts: FoldParts | None = None
        self.state = FoldState()
        self.good: dict | None = None  # the snapshot after the last finished epoch
        self.resume_from: dict | None = None  # a saved snapshot to start from (ResumeState)
        self.epoch = 0  # the epoch being trained
        self._retried_epoch, self._streak = -1, 0  # the epoch last restored to after a fault; non-finite steps in a row

    def _call(self, hook: str, *args) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    def _stateful(self) -> dict:
        return {**self.parts.stateful(), **{k: v for cb in self.callbacks for k, v in cb.state_parts().items()}}

    def snapshot(self) -> dict:
        """A deep copy of the fold's state now (:func:`_snapshot`); under DDP with every rank's
        generators as ``rng_ranks`` (a collective: every rank calls it at the same points), so
        that a resumed fold draws what each rank would have drawn uninterrupted."""
        snap = _snapshot(self._stateful(), self.parts.generators(), **vars(self.state))
        if self.ranks.world > 1:
            snap["rng_ranks"] = gather(snap["rng"], self.ranks)
        return snap

    def restore(self, snapshot: dict, rngs: bool) -> None:
        """Load ``snapshot`` into the parts and the state; ``rngs``: the generators too (resuming;
        not after a fault, so that the retry draws other batches)."""
        self.state = FoldState(**_restore(snapshot, self._stateful(), self.parts.generators() if rngs else None))

    def setup(self) -> FoldParts:
        """The start of the fold: seeds, the recordings, the model with its input normalisation
        (statistics of the training windows: :func:`input_stats`), placed on the device, the
        loss, optimiser, scheduler, scaler, augmenters, EMA and generators. Raises ``ConfigError``
        for unknown ``class_weights`` values or DDP that cannot run as configured (:func:`check_ddp`)."""
        cfg, tc, data, ranks, fold, device = self.cfg, self.cfg["train"], self.data, self.ranks, self.fold, self.device
        ddp = ranks.world > 1
        tr_rec, va_rec, encoder, model = fold_setup(cfg, self.comp, data, self.table, fold)
        if ddp:
            check_ddp(ranks, device, tc["sync_bn"])
            if ranks.rank:  # dropout and other draws of their own (the weights are rank 0's: DDP broadcasts them)
                torch.manual_seed(rank_seed(tc["seed"] + fold, ranks))
        _normalise_inputs(model, data, tr_rec)
        if ddp and tc["sync_bn"]:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        forward = place_model(model, device, tc["compile"], ddp=ddp)
        if tc["class_weights"] not in (None, "balanced"):
            raise ConfigError(f"train.class_weights {tc['class_weights']!r} is not null or balanced")
        class_weight = None
        if tc["class_weights"]:
            class_weight = balanced_class_weight(data.target[torch.as_tensor(tr_rec)].cpu().numpy(), self.comp)
        loss_fn = build_loss(cfg["loss"], self.comp, class_weight).to(device)
        opt = build_optimizer(cfg["optimizer"], model.param_groups())
        global_batch = tc["batch_size"] * ranks.world
        # an epoch holds a crop of every region (segment) of the training recordings, not one per recording
        steps = math.ceil(tc["epoch_repeats"] * int(data.region_count[tr_rec].sum()) / global_batch)
        sched = SCHEDULERS.build(cfg["scheduler"], optimizer=opt, steps_per_epoch=steps, epochs=tc["epochs"])
        use_scaler = device.type == "cuda" and tc["amp"] and not torch.cuda.is_bf16_supported()
        seed = rank_seed(tc["seed"] + fold, ranks)
        ema = None
        augment = Augmenter(cfg["augment"], seed=seed)
        wave_augment = WaveAugmenter(cfg["augment"]["waveform"], seed=seed, sample_rate=data.manifest["sample_rate"])
        if tc["ema"]:  # validated and saved instead of the raw weights: smoother, usually better
            ema = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=ema_multi_avg_fn(tc["ema"]), use_buffers=True)
        return FoldParts(tr_rec, va_rec, encoder, model, forward, ema.module if ema is not None else model, class_weight,
                         loss_fn, opt, sched, getattr(sched, "per_epoch", False),  # ReduceLROnPlateau: once an epoch
                         torch.amp.GradScaler("cuda", enabled=use_scaler), augment, wave_augment, ema,
                         np.random.default_rng(tc["seed"] + fold), steps, global_batch,
                         (tc["supcon"]["weight"], SupConLoss(tc["supcon"]["temperature"])) if tc["supcon"] else None,
                         training_amp(device, tc["amp"], tc["compile"]))

    def start(self) -> int:
        """Build the parts, let the callbacks set up, restore the state to start from (a resume
        state's, else the fresh one). Returns the epoch resumed after (0 when started fresh)."""
        self.parts = self.setup()
        self._call("on_setup")
        self.good = self.snapshot()  # the last good state
        if self.resume_from is not None:
            self.good = self.resume_from
        resumed_from = self.good["epoch"]
        self.restore(self.good, rngs=True)
        tc = self.cfg["train"]
        own = self.good.get("rng_ranks") or []
        if self.ranks.rank and resumed_from and len(own) == self.ranks.world:  # the saved generators are rank 0's
            _set_rng_state(own[self.ranks.rank], self.parts.generators())
        elif self.ranks.rank and resumed_from:  # a state without every rank's (older, or another world size):
            for g in (self.parts.augment.rng, self.parts.wave_augment.rng):  # this rank's own from here
                g.bit_generator.state = np.random.default_rng(rank_seed(tc["seed"] + self.fold, self.ranks, resumed_from)
                                                              ).bit_generator.state
            torch.manual_seed(rank_seed(tc["seed"] + self.fold, self.ranks, resumed_from))
        self._call("on_fold_start")
        return resumed_from

    def stop_reason(self) -> str | None:
        """The first callback's reason to stop before ``train.epochs``, or ``None``."""
        return next((r for cb in self.callbacks if (r := cb.stop_reason(self))), None)

    def fit(self) -> tuple[dict, dict, np.ndarray, list[dict]]:
        """Train the fold; returns ``(checkpoint, best_epoch_info, oof_probs (valid_recordings,
        n_classes), history)`` (see :func:`train_fold`). Raises ``TrainingError`` when a fault
        comes back after a retry (:meth:`run_epoch`)."""
        resumed_from = self.start()
        while self.state.epoch < self.cfg["train"]["epochs"] and not self.stop_reason():
            self.run_epoch()
        return self.finish(resumed_from)

    def run_epoch(self) -> None:
        """One epoch: :meth:`train_epoch`, :meth:`validate` and :meth:`record`. A fault (``max_bad_steps``
        non-finite steps in a row, non-finite validation predictions) restores the state after
        the last finished epoch and the epoch is tried again; the same fault again before another
        epoch finishes raises ``TrainingError`` naming fold, epoch (and step)."""
        self.epoch, t0 = self.state.epoch + 1, time.time()
        try:
            total, seen, bad = self.train_epoch()
            probs, logits, windows = self.validate()
        except _Fault as fault:
            if self._retried_epoch == self.good["epoch"]:
                raise TrainingError(f"{fault}, again after restoring the state after epoch {self.good['epoch']}; "
                                    f"training of fold {self.fold} stopped") from None
            self.log(f"{fault}: restoring the state after epoch {self.good['epoch']} and retrying")
            bad_steps = self.state.bad_steps
            self.restore(self.good, rngs=False)
            self.state.bad_steps = bad_steps
            self._retried_epoch, self._streak = self.good["epoch"], 0
            return
        self.record(total, seen, bad, probs, logits, windows, t0)

    def train_epoch(self) -> tuple[torch.Tensor | float, int, int]:
        """One pass over one window of every region of the training recordings (each segment, or
        the recording when it is one), ``train.epoch_repeats`` times (DDP: this rank's share of each
        global batch: :func:`epoch_items`). Returns ``(summed loss on the device, windows seen, steps
        skipped)``. Raises ``_Fault`` after ``train.max_bad_steps`` non-finite steps in a row."""
        p, tc, ranks, data = self.parts, self.cfg["train"], self.ranks, self.data
        p.model.train()
        order = epoch_items(data, p.tr_rec, tc["sampler"], p.rng, tc["epoch_repeats"])
        total, seen, bad = 0.0, 0, 0
        for step, i in enumerate(progress(range(0, len(order), p.global_batch), desc=f"fold {self.fold} epoch {self.epoch}",
                                      leave=False, unit="batch"), 1):
            w = order[i:i + p.global_batch]
            if len(w) < ranks.world:  # DDP: too few windows left to give every rank one
                continue
            weight = 1.0
            if ranks.world > 1:  # this rank's share of the global batch, weighted so that DDP's mean is the batch mean
                mine = shard(w, ranks)
                w, weight = mine, len(mine) * ranks.world / len(w)
            spec, scalars, target = training_batch(data, w, self.device, p.model, p.wave_augment, p.augment)
            loss, finite = train_step(p.forward, p.model, p.optimizer, p.loss_fn, p.scaler, spec, scalars, target,
                                      self.device, p.amp, tc["grad_clip"], weight, ranks, p.supcon)
            if not finite:
                bad, self._streak = bad + 1, self._streak + 1
                self.state.bad_steps += 1
                self.log(f"fold {self.fold} epoch {self.epoch} step {step}/{p.steps}: non-finite loss or gradient "
                         f"norm (loss {float(loss):.4g}); step skipped")
                if self._streak >= tc["max_bad_steps"]:
                    raise _Fault(f"fold {self.fold} epoch {self.epoch} step {step}: {self._streak} consecutive "
                                 f"non-finite steps")
                continue
            self._streak = 0
            if not p.per_epoch:
                p.scheduler.step()
            if p.ema is not None:
                p.ema.update_parameters(p.model)
            total += loss * len(w)  # stays on the device: read once when the epoch ends
            seen += len(w)
        return total, seen, bad

    def validate(self) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
        """Predict the validation recordings with the kept module (no test-time augmentation), in
        the training steps' precision (bfloat16 on a CPU that trains in it: a third of float32's
        cost; :meth:`finish` predicts the kept epoch again as 03 predicts the test set). Returns
        ``(probs (valid_recordings, n_classes), logits (windows, n_outputs), windows)``. Raises
        ``_Fault`` for non-finite predictions (never scored)."""
        p = self.parts
        probs, logits, windows = _predict_validation(p.kept, self.data, p.va_rec, self.comp, self.ranks, p.amp)
        _check_finite(probs, logits[0], f"fold {self.fold} epoch {self.epoch}", "validation", _Fault)
        return probs, logits[0], windows

    def scored(self, probs: np.ndarray, logits: torch.Tensor, windows: np.ndarray) -> tuple[dict, float]:
        """The metrics of validation ``probs (valid_recordings, n_classes)`` and the loss of their
        ``logits (windows, n_outputs)`` against the ``windows``' targets: ``(scores, valid_loss)``."""
        p, device = self.parts, self.device
        valid_loss = float(p.loss_fn(logits.to(device), self.data.targets(windows).to(device)))
        scores = {k: float(v) for k, v in score_all(self.comp["metrics"], self.data.y[p.va_rec], probs, self.comp).items()}
        return scores, valid_loss

    def evaluate(self, module) -> tuple[np.ndarray, dict, float]:
        """Validate ``module`` as an epoch is (no test-time augmentation): ``(probs, scores, valid_loss)``."""
        probs, logits, windows = _predict_validation(module, self.data, self.parts.va_rec, self.comp, self.ranks,
                                                     self.parts.amp)
        return (probs, *self.scored(probs, logits[0], windows))

    def record(self, total, seen: int, bad: int, probs: np.ndarray, logits: torch.Tensor, windows, t0: float) -> None:
        """Score a validated epoch, step a per-epoch scheduler, keep the best epoch, add the
        history row, take the snapshot ``good`` and log; the callbacks' ``on_validation_end`` and
        ``on_epoch_end`` around it, and an early stop's reason."""
        p, comp, monitor, device = self.parts, self.comp, self.comp["metric"], self.device
        scores, valid_loss = self.scored(probs, logits, windows)
        total, seen = all_sum([total, seen], self.ranks, device)  # every rank's training windows
        if p.per_epoch:
            p.scheduler.step(valid_loss if p.scheduler.on == "valid_loss" else sign(monitor, comp) * scores[monitor])
        window = self.cfg["train"]["smooth_epochs"]
        value = smoothed(self.state.history, scores[monitor], monitor, window)
        full = len(self.state.history) + 1 >= window  # a mean of `window` epochs (the first ones have fewer)
        improved = improves(self.state.best, {**scores, monitor: value}, valid_loss, monitor, comp, full)
        self._call("on_validation_end", scores, valid_loss, improved)
        row = {"fold": self.fold, "epoch": self.epoch, "lr": p.optimizer.param_groups[-1]["lr"],  # the head's (scale 1)
               "train_loss": total / seen if seen else float("nan"), "valid_loss": valid_loss, **scores,
               "bad_steps": bad, "seconds": time.time() - t0}
        if improved:
            self.state.best = {"epoch": self.epoch, "scores": scores, "valid_loss": valid_loss, "monitor": value,
                               "full": full, "probs": torch.from_numpy(probs),
                               "state": {k: v.detach().cpu().clone() for k, v in p.kept.state_dict().items()}}
        self.state.epoch, self.state.history = self.epoch, self.state.history + [row]
        self.good = self.snapshot()
        self._call("on_epoch_end", row)
        self.log(f"fold {self.fold} epoch {self.epoch:>2}/{self.cfg['train']['epochs']}  train_loss "
                 f"{row['train_loss']:.4f}  valid_loss {valid_loss:.4f}  " + "  ".join(f"{k} {v:.4f}" for k, v in scores.items())
                 + f"  lr {row['lr']:.2e}  {row['seconds']:.1f}s" + (f"  {bad} steps skipped" if bad else "")
                 + ("  *" if improved else ""))
        if reason := self.stop_reason():
            self.log(f"fold {self.fold}: {reason}")

    def finish(self, resumed_from: int) -> tuple[dict, dict, np.ndarray, list[dict]]:
        """The callbacks' ``on_fold_end`` (SWA may replace the best epoch), the best epoch's
        validation predictions again as the test set's are made (in the inference precision when
        the epochs were validated in another, then with the experiment's test-time augmentation
        when it has one), and the fold's checkpoint and info (see :func:`train_fold`). Raises
        ``TrainingError`` for non-finite predictions made again."""
        p, cfg, comp, best, history = self.parts, self.cfg, self.comp, self.state.best, self.state.history
        extra = {}
        self._call("on_fold_end", extra)
        probs, scores, valid_loss = best["probs"].numpy(), best["scores"], best["valid_loss"]
        validated, infers, tta = training_dtype(self.device, p.amp), inference_dtype(self.device), cfg["tta"]
        kept = "the SWA average" if (extra.get("swa") or {}).get("kept") else f"epoch {best['epoch']}"
        what = f"fold {self.fold}: {kept} predicted again"
        if validated != infers or tta_active(tta):
            p.kept.load_state_dict(best["state"])
        if validated != infers:  # as 03 predicts the test set: same precision (DDP: each rank a share)
            again, logits, windows = _predict_validation(p.kept, self.data, p.va_rec, comp, self.ranks, None)
            _check_finite(again, logits[0], f"{what} in {infers}")
            again_scores, valid_loss = self.scored(again, logits[0], windows)
            self.log(f"{what} in {infers}, as 03 predicts (its epochs were validated in {validated}): " + "  ".join(
                f"{k} {v:.4f} ({scores[k]:.4f})" for k, v in again_scores.items()))
            probs, scores = again, again_scores
        if tta_active(tta):  # the OOF predictions made as the test set's will be
            again, logits, _ = predict_recordings(p.kept, self.data, p.va_rec, comp, tta)
            _check_finite(again, logits.sum(0), f"{what} with test-time augmentation")  # any shift's NaN or inf
            extra["without_tta"] = scores
            again_scores = {k: float(v) for k, v in score_all(comp["metrics"], self.data.y[p.va_rec], again, comp).items()}
            self.log(f"fold {self.fold}: with test-time augmentation {tta}: " + "  ".join(
                f"{k} {v:.4f} ({scores[k]:.4f} without)" for k, v in again_scores.items()))
            probs, scores = again, again_scores
        info = {"fold": self.fold, "best_epoch": best["epoch"], "epochs_run": len(history),
                "valid_loss": valid_loss, **scores, "seconds": sum(h["seconds"] for h in history),
                "n_valid": len(p.va_rec), "resumed_from_epoch": resumed_from, "bad_steps": self.state.bad_steps, **extra}
        ckpt = {"state_dict": best["state"], "n_scalars": self.data.n_scalars,
                "metadata_encoder": None if p.encoder is None else p.encoder.state(),
                "n_parameters": count_parameters(p.model),
                "class_weight": None if p.class_weight is None else p.class_weight.tolist()}
        return ckpt, info, probs, history


def _normalise_inputs(model, data: SplitInputs, tr_rec: np.ndarray) -> None:
    """Give ``model`` the input statistics of the training recordings ``tr_rec`` (:func:`input_stats`;
    a front end's from at most about 4096 evenly spaced windows, per band inside the front end,
    so that the trunk's input is then standard)."""
    stats_items = data.windows_of(tr_rec)[0]
    if model.frontend is not None:
        stats_items = stats_items[::max(1, len(stats_items) // 4096)]
    mean, std, sc_mean, sc_std = input_stats(data, stats_items, model.frontend)
    if model.frontend is not None:
        if model.frontend.normalise:  # (not for a model that normalises itself: CNN14's pretrained bn0)
            model.frontend.set_normalisation(mean[:, :, None], std[:, :, None].clamp_min(1e-6))
        mean, std = torch.zeros(len(mean)), torch.ones(len(mean))
    model.set_normalisation(mean, std, sc_mean, sc_std)


def monitored(comp: dict, monitor: str | None) -> dict:
    """The competition config as a fold's training sees it: with ``train.monitor`` (a metric
    name) that metric is the one early stopping, the best epoch, a plateau scheduler and SWA's
    choice follow, and it is scored every epoch beside ``comp['metrics']``; ``None`` or the
    competition metric itself: ``comp`` unchanged. On small folds a thresholded metric (MAcc,
    accuracy, F1 at p = 0.5) moves in steps of one recording while the ranking still improves:
    ``auroc`` is a smoother guide there. OOF scores, blends and decisions keep ``comp['metric']``."""
    if monitor is None or monitor == comp["metric"]:
        return comp
    return {**comp, "metric": monitor, "metrics": list(dict.fromkeys([*comp["metrics"], monitor]))}


def train_fold(cfg: dict, comp: dict, data: SplitInputs, table: pd.DataFrame, fold: int, device, log=print,
               state_path: Path | None = None, state_key: str = "", tensorboard_dir: Path | None = None,
               ranks: Ranks = Ranks()):
    """Train one fold with the standard callbacks; returns ``(checkpoint, best_epoch_info, oof_probs
    (valid_recordings, n_classes), history)``.

    ``table`` is ``folds.csv``; its recordings of ``fold`` are the validation set
    (:class:`FoldTrainer`). ``checkpoint`` holds the best weights, the metadata encoder's
    :meth:`MetadataEncoder.state` (or ``None``) and the input width: plain values and tensors, so
    it loads with ``torch.load(weights_only=True)``. ``history`` is a list of per-epoch dicts
    (fold, epoch, lr, train_loss, valid_loss (per window), metrics (per recording), bad_steps,
    seconds). ``best_epoch_info`` also gives ``resumed_from_epoch`` (0 when started fresh),
    ``bad_steps`` (training steps skipped as non-finite) and, with them, ``swa`` and ``without_tta``.

    Callbacks (:mod:`lib.training.callbacks`): :class:`EarlyStopping` after ``train.patience``
    epochs without gain, not before ``train.min_epochs``; the best epoch is chosen on the metric
    (``train.monitor``, default the competition's: :func:`monitored`) averaged over
    ``train.smooth_epochs`` epochs (:func:`lib.training.callbacks.smoothed`); :class:`SWA` with
    ``train.swa``; :class:`ResumeState` with ``state_path``
    (the whole training state written after each finished epoch, tagged with ``state_key``; only
    rank 0 writes; a later call with the same file and key goes on from that epoch and gives
    bit-identical results); :class:`TensorBoard` with ``tensorboard_dir`` (callers give the other
    ranks none and a silent ``log``). ``ranks``: DDP over several ranks (:class:`FoldTrainer`;
    ``train.sync_bn`` converts BatchNorm to ``SyncBatchNorm``, CUDA only). Raises ``ConfigError``
    for unknown ``class_weights``/``sampler`` values or DDP that cannot run as configured,
    ``TrainingError`` for a fault that comes back after a retry.
    """
    tc = cfg["train"]
    comp = monitored(comp, tc["monitor"])
    callbacks = [EarlyStopping(tc["patience"], comp["metric"], tc["min_epochs"], tc["epochs"])]
    if tc["swa"]:
        callbacks.append(SWA(tc["swa"]["start"], tc["epochs"]))
    if tensorboard_dir is not None:
        callbacks.append(TensorBoard(tensorboard_dir))
    if state_path:
        callbacks.append(ResumeState(state_path, state_key, writes=ranks.main))
    return FoldTrainer(cfg, comp, data, table, fold, device, callbacks, log, ranks).fit()
