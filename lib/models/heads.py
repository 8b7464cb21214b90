"""Time poolings: what turns the trunk's feature map into a clip-level vector (or clip logits).

Every pooling is built as ``POOLINGS.get(name)(channels, n_outputs, dropout)`` and maps the
trunk output *after the mean over frequency*, ``x (B, C, T')``, to a dict:

* ``"embedding" (B, out_dim)``: always; the pooled features;
* ``"clip_logits" (B, n_outputs)``, ``"frame_logits" (B, T', n_outputs)``, ``"attention"
  (B, T', n_outputs)``: only from poolings that classify themselves (``gives_logits = True``).

Interface choice: a pooling that produces logits (the attention head) replaces
:class:`~lib.models.base.AudioClassifier`'s MLP head, which is then not built; the scalar branch
still counts through a linear layer from its features to the logits, added to ``clip_logits``
(and to each frame's logits). Poolings that give only an embedding feed the MLP head as before.

Registered: ``mean_max`` (the default; PANNs' pooling), ``mean``, ``gem``, ``attention``.
"""
from __future__ import annotations

import torch
from torch import nn

from ..core.registry import Registry

POOLINGS = Registry("pooling")


@POOLINGS.register("mean_max")
class MeanMaxPool(nn.Module):
    """Max + mean over time, concatenated: ``(B, C, T') -> embedding (B, 2C)`` (max first).

    PANNs' clip pooling (Kong et al. 2020, "PANNs: Large-Scale Pretrained Audio Neural Networks
    for Audio Pattern Recognition", qiuqiangkong/audioset_tagging_cnn ``Cnn14``), without its
    1-frame smoothing. No parameters, so the default models' state-dict names are unchanged.
    """

    gives_logits = False

    def __init__(self, channels: int, n_outputs: int = 0, dropout: float = 0.0):
        super().__init__()
        self.out_dim = 2 * channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"embedding": torch.cat([x.amax(dim=2), x.mean(dim=2)], dim=1)}


@POOLINGS.register("mean")
class MeanPool(nn.Module):
    """Mean over time: ``(B, C, T') -> embedding (B, C)`` (global average pooling). No parameters."""

    gives_logits = False

    def __init__(self, channels: int, n_outputs: int = 0, dropout: float = 0.0):
        super().__init__()
        self.out_dim = channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"embedding": x.mean(dim=2)}


@POOLINGS.register("gem")
class GeMPool(nn.Module):
    """Generalised mean over time: ``(mean_t clamp(x, eps)^p)^(1/p)``, ``(B, C, T') -> (B, C)``.

    Learnable ``p`` (one scalar, initialised at 3; ``p = 1`` is the mean, ``p -> inf`` the max),
    ``eps = 1e-6`` keeps the power defined for non-positive features. Radenović, Tolias & Chum
    2018, "Fine-tuning CNN Image Retrieval with No Human Annotation" (TPAMI).
    """

    gives_logits = False

    def __init__(self, channels: int, n_outputs: int = 0, dropout: float = 0.0, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps
        self.out_dim = channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"embedding": x.clamp_min(self.eps).pow(self.p).mean(dim=2).pow(1.0 / self.p)}


@POOLINGS.register("attention")
class AttentionPool(nn.Module):
    """PANNs' ``AttBlock`` (decision-level attention), as in the BirdCLEF sound-event-detection models.

    ``x (B, C, T')`` -> dropout -> two 1x1 ``Conv1d(C, n_outputs)``: attention logits, squashed by
    ``tanh`` and softmaxed over time (``attention``, sums to 1 over ``T'`` per output), and frame-wise
    logits ``frame_logits``; ``clip_logits = sum_t attention * frame_logits`` ``(B, n_outputs)``.
    The embedding is the mean over time ``(B, C)`` (the block has no single pooled vector: its
    attention is per output). Frame and clip outputs are logits (PANNs' ``activation='linear'``),
    so the losses apply their own sigmoid/softmax.

    Sources: Kong et al. 2020, qiuqiangkong/audioset_tagging_cnn ``pytorch/models.py`` ``AttBlock``
    (which bounds the attention logits with ``clamp(-10, 10)``); the BirdCLEF 2020-2021 SED
    models (Arai's "Introduction to Sound Event Detection" notebook and the winners built on it)
    use ``tanh`` as here. Tensors are returned time-second, ``(B, T', n_outputs)``.
    """

    gives_logits = True

    def __init__(self, channels: int, n_outputs: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.att = nn.Conv1d(channels, n_outputs, 1)
        self.cla = nn.Conv1d(channels, n_outputs, 1)
        self.out_dim = channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.dropout(x)
        att = torch.softmax(torch.tanh(self.att(h)), dim=2)  # (B, n_outputs, T')
        frame = self.cla(h)
        return {"embedding": x.mean(dim=2), "clip_logits": (att * frame).sum(dim=2),
                "frame_logits": frame.transpose(1, 2), "attention": att.transpose(1, 2)}
