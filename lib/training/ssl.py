"""Self-supervised learning of a network's trunk from unlabelled audio: BYOL-A and SimCLR.

**BYOL-A** (Niizumi et al. 2021, "BYOL for Audio: Self-Supervised Learning for General-Purpose
Audio Representation", IJCNN; github.com/nttcslab/byol-a), built on BYOL (Grill et al. 2020,
"Bootstrap Your Own Latent", NeurIPS): two views of a recording (two random crops), each
augmented by :class:`ViewMaker` (mixup with another recording of the batch as background in the
log domain, random resize crop of the log-mel, optionally the experiment's SpecAugment), then
normalised per batch (BYOL-A's post-normalisation). The *online* network is the experiment's
model up to its embedding (front end, trunk, pooling) followed by a projector and a predictor
(:class:`MLP`); the *target* is an exponential moving average of the online model and projector
(:func:`lib.training.ema.ema_multi_avg_fn`, the pipeline's EMA with its warm-up of the decay). The loss
is ``2 - 2 cos(prediction of one view, target projection of the other)``, summed over both orders
(:func:`byol_loss`; 0 when they agree, at most 8).

**SimCLR** (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual
Representations", ICML): the same views and online model and projector, no predictor and no
target; the NT-Xent loss (:func:`nt_xent`) pulls a recording's two views together and pushes the
other ``2B - 2`` views of the batch apart.

Shapes: spectrogram batches ``(batch, channels, n_mels, frames)`` (``(B, C, F, T)``), embeddings
``(B, D)``.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models.base import AudioClassifier
from .augment import spec_augment
from .ema import ema_multi_avg_fn

METHODS = ("byol_a", "simclr")
"""The self-supervised methods of :class:`SSLLearner` (``pretrain.method``)."""


class MLP(nn.Module):
    """BYOL's projector and predictor: ``Linear(in_dim, hidden) -> BatchNorm1d -> ReLU ->
    Linear(hidden, out_dim)`` (Grill et al. 2020, section 3.3; BYOL-A: 4096 and 256).
    ``(B, in_dim) -> (B, out_dim)``; needs ``B >= 2`` in training mode (BatchNorm)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL's regression loss per example, averaged: ``2 - 2 cos(p, z)`` between online predictions
    ``p (B, D)`` and target projections ``z (B, D)`` (no gradient through ``z``). A scalar in
    [0, 4] (Grill et al. 2020, eq. 2)."""
    return (2 - 2 * F.cosine_similarity(p.float(), z.detach().float(), dim=-1)).mean()


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SimCLR's NT-Xent loss (Chen et al. 2020, eq. 1) of the projections of two views ``z1, z2
    (B, D)``: cross-entropy of each view's cosine similarities (divided by ``temperature``) to the
    other ``2B - 1`` views, the positive being the other view of its recording. A scalar >= 0."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    b = len(z1)
    positives = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(sim, positives)


def log_mixup_exp(spec: torch.Tensor, ratio: float, rng: np.random.Generator) -> torch.Tensor:
    """BYOL-A's mixup (Niizumi et al. 2021, section 3.2.1): each example of ``spec (B, C, F, T)``
    (log-scale, normalised) gets another example of the batch (a random cyclic permutation, never
    itself) as background, ``log((1 - lam) exp(x) + lam exp(background))`` with ``lam`` uniform in
    ``[0, ratio)`` per example. BYOL-A draws backgrounds from a memory of past batches; the batch
    itself serves here. Same shape out; ``ratio = 0`` returns ``spec``."""
    b = len(spec)
    if ratio <= 0 or b < 2:
        return spec
    order = rng.permutation(b)
    perm = np.empty(b, dtype=np.int64)
    perm[order] = np.roll(order, 1)
    lam = torch.as_tensor(rng.uniform(0, ratio, b), dtype=spec.dtype, device=spec.device).view(-1, 1, 1, 1)
    background = spec[torch.as_tensor(perm, device=spec.device)]
    return torch.logaddexp(spec + torch.log1p(-lam), background + torch.log(lam.clamp_min(1e-12)))


def random_resize_crop(spec: torch.Tensor, scale: tuple[float, float], rng: np.random.Generator,
                       virtual: tuple[float, float] = (1.0, 1.5)) -> torch.Tensor:
    """BYOL-A's random resize crop (section 3.2.2): the spectrogram ``(B, C, F, T)`` is placed at
    the centre of a zero canvas ``virtual`` times its size (frequency, time; BYOL-A: 1.0 and 1.5),
    a box of ``F * u`` bins by ``T * v`` frames (``u, v`` uniform in ``scale``, BYOL-A: 0.6-1.5;
    clipped to the canvas) is cut at a random place of the canvas, and resized back to ``(F, T)``
    (bicubic). Per example, one ``grid_sample`` for the batch. Same shape out."""
    b, _, n_f, n_t = spec.shape
    out = []
    for size, canvas in ((n_t, virtual[1] * n_t), (n_f, virtual[0] * n_f)):  # x (time), then y (frequency)
        w = np.minimum(size * rng.uniform(scale[0], scale[1], b), canvas)
        start = rng.uniform(0, 1, b) * (canvas - w) - (canvas - size) / 2  # in the spectrogram's own units
        out.append((w / size, (2 * start + w) / size - 1))  # affine scale and shift (align_corners=False)
    (ax, bx), (ay, by) = out
    theta = np.zeros((b, 2, 3), dtype=np.float32)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = ax, bx, ay, by
    theta = torch.as_tensor(theta, device=spec.device)
    grid = F.affine_grid(theta, list(spec.shape), align_corners=False)
    return F.grid_sample(spec.float(), grid, mode="bicubic", padding_mode="zeros", align_corners=False)


def post_norm(spec: torch.Tensor) -> torch.Tensor:
    """BYOL-A's post-normalisation: standardise a batch ``(B, C, F, T)`` per channel over batch,
    bins and frames (``NormalizeBatch``). Same shape out."""
    mean = spec.mean(dim=(0, 2, 3), keepdim=True)
    std = spec.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return (spec - mean) / std


class ViewMaker:
    """BYOL-A's augmentation of normalised log-mel crops ``(B, C, F, T)``: :func:`log_mixup_exp`
    (``mixup``: the background's largest share), :func:`random_resize_crop` (``crop_scale``),
    then SpecAugment (``spec_augment``: an experiment's ``augment.spec_augment`` section, applied to
    a batch with its probability ``p``; ``None``: none). Draws from its own numpy Generator
    ``rng`` (seeded by ``seed``; SpecAugment's masks from torch's generator)."""

    def __init__(self, mixup: float = 0.4, crop_scale=(0.6, 1.5), spec_augment: dict | None = None, seed: int = 0):
        self.mixup, self.crop_scale, self.spec_augment = mixup, tuple(crop_scale), spec_augment
        self.rng = np.random.default_rng(seed)

    def __call__(self, spec: torch.Tensor) -> torch.Tensor:
        """One augmented view of ``spec (B, C, F, T)``, same shape, float32."""
        x = random_resize_crop(log_mixup_exp(spec.float(), self.mixup, self.rng), self.crop_scale, self.rng)
        sa = self.spec_augment
        if sa and self.rng.random() < sa["p"]:
            x = spec_augment(x, sa["freq_mask"], sa["time_mask"], sa.get("n_masks", 1))
        return x


class SSLLearner(nn.Module):
    """The networks of a self-supervised method around ``encoder`` (an :class:`AudioClassifier`
    built with no scalar input; its ``embedding (B, D)`` is what is learnt; its head is unused).

    ``online``: ``{"encoder", "projector"}`` (:class:`MLP` ``D -> projector_hidden -> projector_dim``);
    ``byol_a`` adds ``predictor`` (``projector_dim -> predictor_hidden -> projector_dim``) and
    ``target``, an ``AveragedModel`` of ``online`` with decay ``ema`` (:func:`ema_multi_avg_fn`).
    :meth:`forward` takes two views (model inputs ``(B, C, F, T)``) and returns the loss;
    :meth:`trainable` the parameters to optimise; :meth:`update_target` follows a step.
    Raises ``ValueError`` for an unknown ``method``."""

    def __init__(self, encoder: AudioClassifier, embedding_dim: int, method: str = "byol_a",
                 projector_hidden: int = 4096, projector_dim: int = 256, predictor_hidden: int = 4096,
                 ema: float = 0.99, temperature: float = 0.1):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"self-supervised method {method!r} is not one of {', '.join(METHODS)}")
        self.method, self.temperature = method, temperature
        self.online = nn.ModuleDict({"encoder": encoder, "projector": MLP(embedding_dim, projector_hidden, projector_dim)})
        self.predictor = MLP(projector_dim, predictor_hidden, projector_dim) if method == "byol_a" else None
        self.target = None
        if method == "byol_a":
            self.target = torch.optim.swa_utils.AveragedModel(self.online, multi_avg_fn=ema_multi_avg_fn(ema), use_buffers=True)
            self.target.requires_grad_(False)

    def trainable(self) -> list[nn.Parameter]:
        """The parameters the optimiser updates: the encoder's but its head's, the projector's, the predictor's."""
        enc = self.online["encoder"]
        head = {id(p) for m in (enc.head, getattr(enc, "scalar_logits", None)) if m is not None for p in m.parameters()}
        parts = [p for p in self.online.parameters() if id(p) not in head]
        return parts + (list(self.predictor.parameters()) if self.predictor is not None else [])

    def forward(self, v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
        """The loss of two views ``v1, v2 (B, C, F, T)`` (model inputs) of the same recordings:
        BYOL-A's ``byol_loss(p1, t2) + byol_loss(p2, t1)`` or SimCLR's NT-Xent. Both views go
        through each network as one batch of ``2B``. A scalar tensor."""
        b = len(v1)
        x = torch.cat([v1, v2])
        z = self.online["projector"](self.online["encoder"](x)["embedding"])
        if self.method == "simclr":
            return nt_xent(z[:b], z[b:], self.temperature)
        p = self.predictor(z)
        with torch.no_grad():
            target = self.target.module
            t = target["projector"](target["encoder"](x)["embedding"])
        return byol_loss(p[:b], t[b:]) + byol_loss(p[b:], t[:b])

    @torch.no_grad()
    def update_target(self) -> None:
        """Move the target towards the online networks (BYOL-A only; after each optimiser step)."""
        if self.target is not None:
            self.target.update_parameters(self.online)
