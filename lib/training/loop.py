"""The training loop of one fold: early stopping on the competition metric, best epoch kept.

One model per fold: AdamW, linear warm-up then cosine decay (per step), the loss on logits,
Mixup/CutMix/SpecAugment from the config, gradient clipping, an exponential moving average (EMA)
of the weights (``train.ema``, the decay per step; ``null`` turns it off) that is what gets
validated and kept, early stopping on the validation fold's competition metric (ties broken by
the lower validation loss), the best epoch's weights kept; a fixed seed per fold; automatic
mixed precision on CUDA. Each epoch sees one fresh random window of every training recording
(on the waveform path a crop at a random offset, augmented as a waveform and turned into a
spectrogram by the model's front end: :func:`training_batch`); validation predicts every window
and scores recordings (:mod:`lib.data.windows`), and the best epoch predicts its validation rows
again with the experiment's test-time augmentation when it has one. Optional class weights in
the loss or a class-balanced sampler (``train.class_weights``, ``train.sampler``). A non-finite
step is skipped, a fold can resume from its last finished epoch (:func:`train_fold`).

Why the guard (the heart-sound run that stopped in fold 1, epoch 15 on NaN probabilities; its
data was not available). Facts, checked on torch 2.11 / this code:
* ``clip_grad_norm_`` does not check its norm: one NaN gradient entry makes every gradient NaN,
  one inf entry zeroes the others and makes itself NaN; AdamW then writes NaN into the weights.
* The EMA (``AveragedModel``, ``d * avg + (1 - d) * w``) keeps a NaN forever once it has seen
  one, and the EMA is what is validated: hence NaN probabilities and sklearn's error.
* ``num_batches_tracked`` (int64) under ``ema_avg_fn``: the decay casts to 0, so it is copied
  exactly; the float BatchNorm buffers are convex combinations. Harmless.
* CPU bfloat16 autocast runs conv, BatchNorm, activations, pooling, dropout and linear layers
  in bfloat16 (logits are bfloat16; the losses cast them to float32). bfloat16 has float32's
  exponent range: coarse, but it overflows no sooner than float32.
* Balanced class weights are finite (absent classes get 1); a rare class only scales its
  gradients, which are clipped.
* Fold 1 after fold 0 in one process was bit-identical to fold 1 first (probabilities, history,
  weights; heart-valve subset, 1.5-s windows, balanced weights, EMA, bfloat16 on AMX, 25
  epochs): global RNGs are re-seeded per fold, the shared ``WindowData`` is only read (its
  ``meta`` is replaced per fold; batches are copies), configs are not mutated, every generator
  of the loop is seeded from ``train.seed + fold``.
Hypotheses (not reproduced): a rare non-finite gradient (bfloat16 rounding on a near-degenerate
batch, a large ``pos_weight``) on a trajectory that differed from the solo run in its last bits
(figures equal to 4 decimals are not bit-identical; e.g. a different number of usable cores
changes torch's thread count and so the reduction order), then spread by the two facts above.
"""
from __future__ import annotations

import copy
import math
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..core.errors import ConfigError, TrainingError
from ..core.utils import atomic_path, seed_everything
from ..data import tasks
from ..data.metadata import metadata_encoder
from ..data.windows import SplitInputs
from ..evaluation.metrics import is_better, score_all, sign
from ..inference.predict import predict_recordings, tta_active
from ..models import build_model, count_parameters
from .augment import Augmenter
from .distributed import Ranks, all_sum, all_true, broadcast_buffers, check_ddp, gather, rank_seed, shard
from .ema import ema_avg_fn
from .losses import balanced_class_weight, build_loss
from .optim import SCHEDULERS, build_optimizer
from .precision import autocast, place_model
from .tensorboard_log import tensorboard_epoch, tensorboard_writer
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


def epoch_recordings(recs: np.ndarray, y: np.ndarray, sampler: str | None, rng: np.random.Generator) -> np.ndarray:
    """The training recordings of one epoch, in order: a permutation of ``recs`` (``sampler:
    null``), or for ``balanced`` as many draws with replacement, each recording drawn with
    probability proportional to 1 / the size of its class (multi-label: of its rarest label;
    rows without labels form a class of their own). Raises ``ConfigError`` for another sampler."""
    if sampler is None:
        return rng.permutation(recs)
    if sampler != "balanced":
        raise ConfigError(f"train.sampler {sampler!r} is not null or balanced")
    onehot = y[recs] if y.ndim == 2 else np.eye(y.max() + 1)[y[recs]]
    onehot = np.column_stack([onehot, onehot.sum(1) == 0]).astype(float)
    w = (onehot / np.maximum(onehot.sum(0), 1)).max(1)
    return rng.choice(recs, size=len(recs), replace=True, p=w / w.sum())


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
               grad_clip: float = 5.0, weight: float = 1.0, ranks: Ranks = Ranks()) -> tuple[torch.Tensor, bool]:
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
    every window of the global batch, and the step is taken only when it is finite on every rank."""
    with autocast(device, amp):
        loss = loss_fn(forward(spec, scalars)["logits"], target)
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
    copy of the loop's values (everything but ``parts`` and ``rng``); ``state`` itself is left
    untouched (optimisers would otherwise keep its tensors as their own)."""
    state = copy.deepcopy(state)
    for k, p in parts.items():
        if p is not None:
            p.load_state_dict(state["parts"][k])
    if gens is not None:
        _set_rng_state(state["rng"], gens)
    return {k: v for k, v in state.items() if k not in ("parts", "rng", "key")}


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
    model = build_model(cfg["model"], data.manifest, tasks.n_outputs(comp), data.n_scalars, cfg.get("frontend"))
    return tr_rec, va_rec, encoder, model


@torch.no_grad()
def update_bn(model, data: SplitInputs, items: np.ndarray, batch_size: int) -> None:
    """Recompute the BatchNorm statistics of ``model`` as the plain average over the batches of
    ``items`` (momentum ``None``), as ``torch.optim.swa_utils.update_bn`` does for a DataLoader;
    modules that stay in eval mode under ``train()`` (frozen pretrained blocks) keep theirs."""
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


def _swa_result(swa, best: dict, data: SplitInputs, tr_rec, va_rec, comp: dict, tc: dict, rng, log, fold: int) -> dict:
    """Validate the stochastic weight average (Izmailov et al. 2018, "Averaging Weights Leads to
    Wider Optima and Better Generalization"; torch.optim.swa_utils) after recomputing its
    BatchNorm statistics on one window per training recording; when it scores at least as well
    as the best epoch on the competition metric it replaces it in ``best`` (weights and
    probabilities). Returns ``{"epochs_averaged", "scores", "kept"}``."""
    update_bn(swa.module, data, data.sample_windows(tr_rec, rng), tc["batch_size"])
    probs = predict_recordings(swa.module, data, va_rec, comp)[0]
    scores = {k: float(v) for k, v in score_all(comp["metrics"], data.y[va_rec], probs, comp).items()}
    monitor = comp["metric"]
    kept = not is_better(monitor, best["scores"][monitor], scores[monitor], comp)  # at least as good
    log(f"fold {fold}: SWA of {int(swa.n_averaged)} epochs: {monitor} {scores[monitor]:.4f} against "
        f"{best['scores'][monitor]:.4f} for epoch {best['epoch']}: " + ("kept" if kept else "not kept"))
    if kept:
        best.update(scores=scores, probs=torch.from_numpy(probs),
                    state={k: v.detach().cpu().clone() for k, v in swa.module.state_dict().items()})
    return {"epochs_averaged": int(swa.n_averaged), "scores": scores, "kept": bool(kept)}


def _predict_validation(model, data: SplitInputs, va_rec: np.ndarray, comp: dict, ranks: Ranks):
    """:func:`predict_recordings` of ``va_rec``; under DDP each rank predicts its share (with
    rank 0's BatchNorm statistics) and every rank gets all of them, in order."""
    if ranks.world == 1 or len(va_rec) < ranks.world:
        return predict_recordings(model, data, va_rec, comp)
    broadcast_buffers(model, ranks)
    parts = gather(predict_recordings(model, data, shard(va_rec, ranks), comp), ranks)
    return (np.concatenate([p[0] for p in parts]), torch.cat([p[1] for p in parts], 1),
            np.concatenate([p[2] for p in parts]))


def train_fold(cfg: dict, comp: dict, data: SplitInputs, table: pd.DataFrame, fold: int, device, log=print,
               state_path: Path | None = None, state_key: str = "", tensorboard_dir: Path | None = None,
               ranks: Ranks = Ranks()):
    """Train one fold; returns ``(checkpoint, best_epoch_info, oof_probs (valid_recordings, n_classes), history)``.

    ``table`` is ``folds.csv``; its recordings of ``fold`` are the validation set. Each epoch
    draws one window per training recording (:func:`epoch_recordings` chooses the recordings);
    validation predicts every window and scores the aggregated recording probabilities.
    ``checkpoint`` holds the best weights, the metadata encoder's :meth:`MetadataEncoder.state`
    (or ``None``) and the input width: plain values and tensors, so it loads with
    ``torch.load(weights_only=True)``. ``history`` is a list of per-epoch dicts (fold, epoch, lr,
    train_loss, valid_loss (per window), metrics (per recording), bad_steps, seconds).
    ``best_epoch_info`` also gives ``resumed_from_epoch`` (0 when started fresh) and
    ``bad_steps`` (training steps skipped as non-finite).

    Non-finite steps: a step whose loss or gradient norm is not finite is skipped (no optimiser,
    scheduler or EMA update) and logged with fold, epoch and step. ``train.max_bad_steps``
    consecutive ones, or non-finite validation predictions (never scored; the epoch does not
    count), restore the state after the last finished epoch and retry; the same fault again
    before another epoch finishes raises ``TrainingError`` naming fold, epoch (and step).

    Resuming: with ``state_path``, the whole training state (weights, optimiser, scheduler,
    scaler, EMA, best so far, history, patience, every RNG) is written there atomically after
    each finished epoch, tagged with ``state_key``; a later call with the same file and key goes
    on from that epoch and gives bit-identical results to an uninterrupted run on the same
    machine. A file with another key is ignored (the caller deletes the file when the fold is
    done). Raises ``ConfigError`` for unknown ``class_weights``/``sampler`` values.

    ``tensorboard_dir``: also log every epoch's losses, metrics and learning rate there for
    TensorBoard when the ``tensorboard`` package is installed (:func:`tensorboard_writer`).

    ``ranks`` (:mod:`lib.training.distributed`): with more than one rank, every rank of the run
    calls this for the same fold and they train it together with ``DistributedDataParallel``:
    each step takes ``batch_size`` windows on every rank (a global batch of ``batch_size x
    world``, drawn in the same order as one rank would draw it; a last batch smaller than the
    number of ranks is skipped), each rank augments its share with its own generators, validation
    recordings are shared out and gathered, and only rank 0 writes the resume state (callers give
    the other ranks no ``tensorboard_dir`` and a silent ``log``). ``train.sync_bn`` converts
    BatchNorm to ``SyncBatchNorm`` (CUDA only). Every rank returns the same result.
    Raises ``ConfigError`` when DDP cannot run as configured (:func:`check_ddp`).
    """
    tc = cfg["train"]
    ddp = ranks.world > 1
    tr_rec, va_rec, encoder, model = fold_setup(cfg, comp, data, table, fold)
    if ddp:
        check_ddp(ranks, device, tc.get("sync_bn", False))
        if ranks.rank:  # dropout and other draws of their own (the weights are rank 0's: DDP broadcasts them)
            torch.manual_seed(rank_seed(tc["seed"] + fold, ranks))
    stats_items = data.windows_of(tr_rec)[0]
    if model.frontend is not None:  # a front end's statistics from at most about 4096 windows (evenly spaced)
        stats_items = stats_items[::max(1, len(stats_items) // 4096)]
    mean, std, sc_mean, sc_std = input_stats(data, stats_items, model.frontend)
    if model.frontend is not None:  # per band inside the front end; the trunk's input is then standard
        if model.frontend.normalise:  # (not for a model that normalises itself: CNN14's pretrained bn0)
            model.frontend.set_normalisation(mean[:, :, None], std[:, :, None].clamp_min(1e-6))
        mean, std = torch.zeros(len(mean)), torch.ones(len(mean))
    model.set_normalisation(mean, std, sc_mean, sc_std)
    if ddp and tc.get("sync_bn"):
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    forward = place_model(model, device, tc.get("compile", False), ddp=ddp)
    class_weight = None
    if tc.get("class_weights") not in (None, "balanced"):
        raise ConfigError(f"train.class_weights {tc['class_weights']!r} is not null or balanced")
    if tc.get("class_weights"):
        class_weight = balanced_class_weight(data.target[torch.as_tensor(tr_rec)].cpu().numpy(), comp["task"])
    loss_fn = build_loss(cfg["loss"], comp["task"], class_weight).to(device)
    opt = build_optimizer(cfg["optimizer"], model.param_groups())
    global_batch = tc["batch_size"] * ranks.world
    steps = math.ceil(len(tr_rec) / global_batch)
    sched = SCHEDULERS.build(cfg["scheduler"], optimizer=opt, steps_per_epoch=steps, epochs=tc["epochs"])
    per_epoch = getattr(sched, "per_epoch", False)  # ReduceLROnPlateau: once an epoch on a validation figure
    use_scaler = device.type == "cuda" and tc["amp"] and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    augment = Augmenter(cfg["augment"], seed=rank_seed(tc["seed"] + fold, ranks))
    wave_augment = WaveAugmenter(cfg["augment"].get("waveform"), seed=rank_seed(tc["seed"] + fold, ranks),
                                 sample_rate=data.manifest["sample_rate"])
    ema = None
    if tc.get("ema"):  # validated and saved instead of the raw weights: smoother, usually better
        ema = torch.optim.swa_utils.AveragedModel(model, avg_fn=ema_avg_fn(tc["ema"]), use_buffers=True)
    kept = ema.module if ema is not None else model
    swa, swa_from = None, None
    if tc.get("swa"):  # an equal average of the weights after each epoch from swa_from on (BN statistics recomputed)
        swa = torch.optim.swa_utils.AveragedModel(model)
        swa_from = max(1, math.ceil(tc["swa"].get("start", 0.75) * tc["epochs"]))
    rng = np.random.default_rng(tc["seed"] + fold)
    monitor = comp["metric"]
    max_bad = tc["max_bad_steps"]
    parts = {"model": model, "optimizer": opt, "scheduler": sched, "scaler": scaler, "ema": ema, "swa": swa}
    gens = {"epochs": rng, "augment": augment.rng, "wave_augment": wave_augment.rng}
    good = _snapshot(parts, gens, epoch=0, best=None, history=[], wait=0, bad_steps=0)  # the last good state
    saved = torch.load(state_path, map_location="cpu", weights_only=True) if state_path and Path(state_path).exists() else None
    if saved is not None and saved.get("key") == state_key:
        good = saved
        log(f"fold {fold}: resuming after epoch {saved['epoch']} from {state_path}")
    elif saved is not None:
        log(f"fold {fold}: ignoring {state_path} (another run's state)")
    resumed_from = good["epoch"]
    run = _restore(good, parts, gens)  # epoch, best, history, wait, bad_steps
    if ranks.rank and resumed_from:  # the saved generators are rank 0's: draw this rank's own from here
        for g in (augment.rng, wave_augment.rng):
            g.bit_generator.state = np.random.default_rng(rank_seed(tc["seed"] + fold, ranks, resumed_from)
                                                          ).bit_generator.state
        torch.manual_seed(rank_seed(tc["seed"] + fold, ranks, resumed_from))
    retried_epoch, streak = -1, 0
    y_va = data.y[va_rec]
    writer = tensorboard_writer(tensorboard_dir, run["history"])
    while run["epoch"] < tc["epochs"] and run["wait"] < tc["patience"]:
        epoch = run["epoch"] + 1
        t0 = time.time()
        try:
            model.train()
            order = data.sample_windows(epoch_recordings(tr_rec, data.y, tc.get("sampler"), rng), rng)
            total, seen, bad = 0.0, 0, 0
            for step, i in enumerate(tqdm(range(0, len(order), global_batch), desc=f"fold {fold} epoch {epoch}",
                                          leave=False, unit="batch"), 1):
                w = order[i:i + global_batch]
                if len(w) < ranks.world:  # DDP: too few windows left to give every rank one
                    continue
                weight = 1.0
                if ddp:  # this rank's share of the global batch, weighted so that DDP's mean is the batch mean
                    mine = shard(w, ranks)
                    w, weight = mine, len(mine) * ranks.world / len(w)
                spec, scalars, target = training_batch(data, w, device, model, wave_augment, augment)
                loss, finite = train_step(forward, model, opt, loss_fn, scaler, spec, scalars, target, device,
                                          tc["amp"], tc["grad_clip"], weight, ranks)
                if not finite:
                    bad, streak = bad + 1, streak + 1
                    run["bad_steps"] += 1
                    log(f"fold {fold} epoch {epoch} step {step}/{steps}: non-finite loss or gradient norm "
                        f"(loss {float(loss):.4g}); step skipped")
                    if streak >= max_bad:
                        raise _Fault(f"fold {fold} epoch {epoch} step {step}: {streak} consecutive non-finite steps")
                    continue
                streak = 0
                if not per_epoch:
                    sched.step()
                if ema is not None:
                    ema.update_parameters(model)
                total += loss * len(w)  # stays on the device: read once when the epoch ends
                seen += len(w)
            probs, logits, windows = _predict_validation(kept, data, va_rec, comp, ranks)
            logits = logits[0]  # (windows, n_outputs): no test-time augmentation while training
            if not (torch.isfinite(logits).all() and np.isfinite(probs).all()):
                raise _Fault(f"fold {fold} epoch {epoch}: non-finite validation predictions in "
                             f"{int((~torch.isfinite(logits)).any(1).sum())} of {len(logits)} windows (not scored)")
        except _Fault as fault:
            if retried_epoch == good["epoch"]:
                raise TrainingError(f"{fault}, again after restoring the state after epoch {good['epoch']}; "
                                    f"training of fold {fold} stopped") from None
            log(f"{fault}: restoring the state after epoch {good['epoch']} and retrying")
            run = _restore(good, parts, None) | {"bad_steps": run["bad_steps"]}
            retried_epoch, streak = good["epoch"], 0
            continue
        valid_loss = float(loss_fn(logits.to(device), data.targets(windows).to(device)))
        total, seen = all_sum([total, seen], ranks, device)  # every rank's training windows
        scores = {k: float(v) for k, v in score_all(comp["metrics"], y_va, probs, comp).items()}
        if per_epoch:
            sched.step(valid_loss if sched.on == "valid_loss" else sign(monitor, comp) * scores[monitor])
        if swa is not None and epoch >= swa_from:
            swa.update_parameters(model)
        row = {"fold": fold, "epoch": epoch, "lr": opt.param_groups[-1]["lr"],  # the head's (scale 1)
               "train_loss": total / seen if seen else float("nan"), "valid_loss": valid_loss, **scores,
               "bad_steps": bad, "seconds": time.time() - t0}
        best = run["best"]
        improved = best is None or is_better(monitor, scores[monitor], best["scores"][monitor], comp) or (
            scores[monitor] == best["scores"][monitor] and valid_loss < best["valid_loss"])
        if improved:
            run["best"] = {"epoch": epoch, "scores": scores, "valid_loss": valid_loss, "probs": torch.from_numpy(probs),
                           "state": {k: v.detach().cpu().clone() for k, v in kept.state_dict().items()}}
        run.update(epoch=epoch, history=run["history"] + [row], wait=0 if improved else run["wait"] + 1)
        tensorboard_epoch(writer, row)
        good = _snapshot(parts, gens, **run)
        if state_path and ranks.main:
            with atomic_path(state_path) as tmp:
                torch.save(dict(good, key=state_key), tmp)
        log(f"fold {fold} epoch {epoch:>2}/{tc['epochs']}  train_loss {row['train_loss']:.4f}  "
            f"valid_loss {valid_loss:.4f}  " + "  ".join(f"{k} {v:.4f}" for k, v in scores.items())
            + f"  lr {row['lr']:.2e}  {row['seconds']:.1f}s" + (f"  {bad} steps skipped" if bad else "")
            + ("  *" if improved else ""))
        if run["wait"] >= tc["patience"]:
            log(f"fold {fold}: early stop after epoch {epoch} (no {monitor} gain for {run['wait']} epochs)")
    best, history = run["best"], run["history"]
    if writer is not None:
        writer.close()
    extra = {}
    if swa is not None and int(swa.n_averaged) > 0:
        extra["swa"] = _swa_result(swa, best, data, tr_rec, va_rec, comp, tc, rng, log, fold)
    probs, scores = best["probs"].numpy(), best["scores"]
    if tta_active(cfg.get("tta")):  # the OOF predictions made as the test set's will be
        kept.load_state_dict(best["state"])
        probs = predict_recordings(kept, data, va_rec, comp, cfg["tta"])[0]
        scores = {k: float(v) for k, v in score_all(comp["metrics"], y_va, probs, comp).items()}
        extra["without_tta"] = best["scores"]
        log(f"fold {fold}: with test-time augmentation {cfg['tta']}: " + "  ".join(
            f"{k} {v:.4f} ({best['scores'][k]:.4f} without)" for k, v in scores.items()))
    info = {"fold": fold, "best_epoch": best["epoch"], "epochs_run": len(history), "valid_loss": best["valid_loss"],
            **scores, "seconds": sum(h["seconds"] for h in history), "n_valid": len(va_rec),
            "resumed_from_epoch": resumed_from, "bad_steps": run["bad_steps"], **extra}
    ckpt = {"state_dict": best["state"], "n_scalars": data.n_scalars,
            "metadata_encoder": None if encoder is None else encoder.state(),
            "n_parameters": count_parameters(model),
            "class_weight": None if class_weight is None else class_weight.tolist()}
    return ckpt, info, probs, history
