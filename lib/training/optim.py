"""Optimisers and learning-rate schedules, by name (``optimizer:`` / ``scheduler:`` sections).

Optimisers (torch's own): ``adamw``, ``adam``, ``sgd`` (``momentum``, ``nesterov`` as in
``torch.optim.SGD``). They get the model's parameter groups (:meth:`AudioClassifier.param_groups`);
:func:`build_optimizer` multiplies each group's learning rate by its ``lr_scale`` (pretrained
parts may learn slower than the new head), before any schedule records its base rates.

Schedules: ``warmup_cosine`` and ``one_cycle`` step after every optimisation step;
``plateau`` (``ReduceLROnPlateau``) steps once an epoch on a validation figure: the loop reads
its ``per_epoch`` attribute and calls ``step(value)`` with the validation loss (``on:
valid_loss``) or the competition metric (``on: metric``).
"""
from __future__ import annotations

import math

import torch

from ..core.errors import ConfigError
from ..core.registry import Registry

OPTIMIZERS = Registry("optimizer")
OPTIMIZERS.register("adamw")(torch.optim.AdamW)
OPTIMIZERS.register("adam")(torch.optim.Adam)
OPTIMIZERS.register("sgd")(torch.optim.SGD)
SCHEDULERS = Registry("scheduler")


def build_optimizer(section: dict, groups: list[dict]) -> torch.optim.Optimizer:
    """The optimiser of an ``optimizer`` section over parameter ``groups`` (dicts with
    ``params`` and ``lr_scale``); each group's learning rate becomes the section's (or the
    optimiser's default) times its ``lr_scale``."""
    opt = OPTIMIZERS.build(section, params=groups)
    for g in opt.param_groups:
        g["lr"] = g["lr"] * g.get("lr_scale", 1.0)
    return opt


@SCHEDULERS.register("warmup_cosine")
def warmup_cosine(optimizer, steps_per_epoch: int, epochs: int, warmup_epochs: float = 1.0, min_lr_ratio: float = 0.01):
    """Per-step LR: linear warm-up from 0 over ``warmup_epochs``, then cosine decay to
    ``min_lr_ratio`` x the base LR at the last step (Loshchilov & Hutter 2017, SGDR, without
    restarts). Returns a ``LambdaLR``."""
    total, warm = max(1, steps_per_epoch * epochs), int(steps_per_epoch * warmup_epochs)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, total - warm)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@SCHEDULERS.register("one_cycle")
def one_cycle(optimizer, steps_per_epoch: int, epochs: int, pct_start: float = 0.3, div_factor: float = 25.0,
              final_div_factor: float = 1e4, anneal_strategy: str = "cos"):
    """Per-step one-cycle policy (Smith & Topin 2019, "Super-Convergence"), torch's ``OneCycleLR``:
    from ``lr / div_factor`` up to each group's ``lr`` over ``pct_start`` of the steps, then down
    to ``lr / (div_factor * final_div_factor)``. Momentum cycling is off (it would override
    AdamW's betas per step). Raises ``ConfigError`` for ``pct_start`` outside (0, 1)."""
    if not 0 < pct_start < 1:
        raise ConfigError(f"scheduler.params.pct_start={pct_start!r} must be in (0, 1)")
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=max(1, steps_per_epoch * epochs),
        pct_start=pct_start, div_factor=div_factor, final_div_factor=final_div_factor,
        anneal_strategy=anneal_strategy, cycle_momentum=False)


@SCHEDULERS.register("plateau")
def plateau(optimizer, steps_per_epoch: int, epochs: int, on: str = "valid_loss", factor: float = 0.3,
            patience: int = 5, min_lr: float = 1e-6, threshold: float = 1e-4):
    """Once an epoch: the learning rates times ``factor`` after ``patience`` epochs without a
    better ``on`` (``valid_loss``, lower is better, or ``metric``, the competition metric; the
    loop passes it times :func:`lib.evaluation.metrics.sign`, so higher is better), never below ``min_lr``; torch's ``ReduceLROnPlateau``. Defaults as the
    voice-pathology winner's (factor 0.3, patience 5). Returns it with ``per_epoch = True`` and
    ``on``. Raises ``ConfigError`` for another ``on`` or a ``factor`` outside (0, 1)."""
    if on not in ("valid_loss", "metric"):
        raise ConfigError(f"scheduler.params.on={on!r} must be 'valid_loss' or 'metric'")
    if not 0 < factor < 1:
        raise ConfigError(f"scheduler.params.factor={factor!r} must be in (0, 1)")
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min" if on == "valid_loss" else "max",
                                                       factor=factor, patience=patience, min_lr=min_lr,
                                                       threshold=threshold)
    sched.per_epoch, sched.on = True, on
    return sched
