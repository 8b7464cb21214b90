"""Batch augmentations on device: Mixup, CutMix and SpecAugment-style masking.

All take and return ``spec (batch, channels, freq, frames)``, ``scalars (batch, n_scalars)`` and
soft targets ``target (batch, n_outputs)`` in [0, 1]; mixing returns new tensors.
"""
from __future__ import annotations

import numpy as np
import torch

from .transforms import mask_along_axis


def mixup(spec, scalars, target, alpha: float, rng: np.random.Generator):
    """Mixup (Zhang et al. 2018): ``x = lam x + (1 - lam) x[perm]``, the same for targets and scalars.

    ``lam ~ Beta(alpha, alpha)``, one per batch; ``perm`` a random permutation of the batch.
    Returns ``(spec, scalars, target, lam)``.
    """
    lam = float(rng.beta(alpha, alpha))
    perm = torch.as_tensor(rng.permutation(len(spec)), device=spec.device)
    mix = lambda a: lam * a + (1 - lam) * a[perm]  # noqa: E731
    return mix(spec), mix(scalars), mix(target), lam


def cutmix(spec, scalars, target, alpha: float, rng: np.random.Generator):
    """CutMix (Yun et al. 2019) on spectrograms: paste a random (freq x time) box from a permuted batch.

    The box's sides are ``sqrt(1 - lam0)`` of each axis with ``lam0 ~ Beta(alpha, alpha)``;
    ``lam`` is then recomputed from the box actually pasted (clipped at the edges) as
    ``1 - box_area / (freq * frames)``, and targets and scalars are mixed with that ``lam``.
    Returns ``(spec, scalars, target, lam)``.
    """
    n_freq, n_time = spec.shape[2], spec.shape[3]
    lam0 = float(rng.beta(alpha, alpha))
    cut = np.sqrt(1.0 - lam0)
    h, w = int(round(n_freq * cut)), int(round(n_time * cut))
    cy, cx = rng.integers(n_freq), rng.integers(n_time)
    y0, y1 = np.clip([cy - h // 2, cy - h // 2 + h], 0, n_freq)
    x0, x1 = np.clip([cx - w // 2, cx - w // 2 + w], 0, n_time)
    lam = 1.0 - (y1 - y0) * (x1 - x0) / (n_freq * n_time)
    perm = torch.as_tensor(rng.permutation(len(spec)), device=spec.device)
    out = spec.clone()
    out[:, :, y0:y1, x0:x1] = spec[perm][:, :, y0:y1, x0:x1]
    mix = lambda a: lam * a + (1 - lam) * a[perm]  # noqa: E731
    return out, mix(scalars), mix(target), lam


def spec_augment(spec, freq_mask: int, time_mask: int, n_masks: int = 1):
    """SpecAugment masking (Park et al. 2019): ``n_masks`` frequency bands of up to ``freq_mask``
    bins and time bands of up to ``time_mask`` frames, drawn independently per example and channel."""
    for _ in range(n_masks):
        spec = mask_along_axis(mask_along_axis(spec, freq_mask, axis=2), time_mask, axis=3)
    return spec


class Augmenter:
    """Applies an experiment's ``augment`` section to a training batch.

    Per batch: Mixup with probability ``mixup.p``, otherwise CutMix with probability
    ``cutmix.p`` (never both), then SpecAugment masking with probability ``spec_augment.p``.
    """

    def __init__(self, cfg: dict, seed: int = 0):
        self.cfg = cfg
        self.rng = np.random.default_rng(seed)

    def __call__(self, spec, scalars, target):
        """Augment one batch; returns ``(spec, scalars, target)``."""
        mx, cm, sa = self.cfg["mixup"], self.cfg["cutmix"], self.cfg["spec_augment"]
        u = self.rng.random()
        if u < mx["p"]:
            spec, scalars, target, _ = mixup(spec, scalars, target, mx["alpha"], self.rng)
        elif u < mx["p"] + cm["p"]:
            spec, scalars, target, _ = cutmix(spec, scalars, target, cm["alpha"], self.rng)
        if self.rng.random() < sa["p"]:
            spec = spec_augment(spec, sa["freq_mask"], sa["time_mask"], sa.get("n_masks", 1))
        return spec, scalars, target
