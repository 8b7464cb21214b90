"""The frame every model shares: an optional front end, input normalisation, a trunk, a time pooling, scalar branch, head."""
from __future__ import annotations

import torch
from torch import nn

from .heads import POOLINGS


class AudioClassifier(nn.Module):
    """Shared frame: an optional front end, input normalisation, a conv trunk, a time pooling,
    scalar branch, head.

    ``self.frontend`` (``None``, or a :mod:`lib.models.frontend` module set by
    :func:`lib.models.build_model`) turns waveform input into the spectrogram stack inside the
    model, so its settings and per-band statistics travel in the checkpoint.

    Subclasses build ``self.trunk`` (``(B, C, F, T) -> (B, trunk_channels, F', T')``). The trunk
    output is averaged over frequency, then pooled over time by ``POOLINGS[pooling]``
    (:mod:`lib.models.heads`; default ``mean_max``, PANNs' max + mean: Kong et al. 2020).
    ``pooling=None``: the trunk pools itself and returns the embedding ``(B, trunk_channels)``
    (PANNs CNN14, whose pretrained ``fc1`` follows its own pooling).
    The scalar branch (``n_scalars > 0``) is ``Linear(n_scalars, scalar_hidden) -> GELU`` and is
    concatenated with the pooled trunk output into the embedding, which feeds the classifier: per
    width in ``head_hidden`` (an int or a list; ``[]``: a linear classifier) ``Dropout ->
    Linear(., width) -> GELU``, then ``Dropout -> Linear(., n_outputs)``.

    Transfer: modules listed in ``self.frozen`` have no trainable parameters and stay in eval mode
    (BatchNorm statistics kept) under ``train()``; :meth:`param_groups` gives the optimiser its
    parameter groups, each with an ``lr_scale`` (1 here; pretrained parts override it).

    A pooling that gives logits itself (``attention``) replaces that classifier (``self.head`` is
    ``None``); the scalar branch then adds ``self.scalar_logits = Linear(scalar_hidden, n_outputs)``
    of its features to the clip and frame logits, so metadata still counts.
    """

    def __init__(self, in_channels: int, n_scalars: int, n_outputs: int, trunk: nn.Module, trunk_channels: int,
                 scalar_hidden: int = 64, head_hidden: int | list[int] = 256, dropout: float = 0.3,
                 pooling: str | None = "mean_max"):
        super().__init__()
        self.n_outputs = n_outputs
        self.frontend: nn.Module | None = None  # set by lib.models.build_model for waveform input
        self.register_buffer("spec_mean", torch.zeros(1, in_channels, 1, 1))
        self.register_buffer("spec_std", torch.ones(1, in_channels, 1, 1))
        self.register_buffer("scalar_mean", torch.zeros(1, n_scalars))
        self.register_buffer("scalar_std", torch.ones(1, n_scalars))
        self.trunk = trunk
        self.n_scalars = n_scalars
        self.scalar_branch = nn.Sequential(nn.Linear(n_scalars, scalar_hidden), nn.GELU()) if n_scalars else None
        self.frozen: list[nn.Module] = []
        self.transfer_blocks: list[list[nn.Parameter]] = []  # lib.models.pretrained_weights sets them
        self.pool = None if pooling is None else POOLINGS.get(pooling)(trunk_channels, n_outputs, dropout)
        if self.pool is not None and self.pool.gives_logits:
            self.head = None
            self.scalar_logits = nn.Linear(scalar_hidden, n_outputs) if n_scalars else None
        else:
            width = (self.pool.out_dim if self.pool is not None else trunk_channels) + (scalar_hidden if n_scalars else 0)
            layers = []
            for hidden in [head_hidden] if isinstance(head_hidden, int) else head_hidden:
                layers += [nn.Dropout(dropout), nn.Linear(width, hidden), nn.GELU()]
                width = hidden
            self.head = nn.Sequential(*layers, nn.Dropout(dropout), nn.Linear(width, n_outputs))

    def train(self, mode: bool = True):
        """As ``nn.Module.train``, but the modules in ``self.frozen`` stay in eval mode."""
        super().train(mode)
        for m in self.frozen:
            m.eval()
        return self

    def freeze(self, modules: list[nn.Module]) -> None:
        """Freeze ``modules``: no gradients, BatchNorm statistics kept (see :meth:`train`)."""
        for m in modules:
            m.requires_grad_(False)
        self.frozen += modules

    backbone_lr, layer_decay = 1.0, 1.0

    def pretrained_blocks(self) -> list[list[nn.Parameter]]:
        """The parameters of the pretrained blocks, input side first: ``transfer_blocks`` (none
        unless :func:`lib.models.pretrained_weights.apply` set them: a ``pretrain.py`` checkpoint
        or transfer options; ``cnn14`` and ``timm`` override this)."""
        return self.transfer_blocks

    def param_groups(self) -> list[dict]:
        """The optimiser's parameter groups: ``[{"params": [...], "lr_scale": float}, ...]``, trainable
        parameters only; the training loop multiplies each group's learning rate by its
        ``lr_scale`` (timm's name for it). One group per pretrained block with the scales of
        :func:`lib.models.transfer.block_groups` (``backbone_lr``, ``layer_decay``), then the rest
        at scale 1."""
        from .transfer import block_groups

        blocks = self.pretrained_blocks()
        backbone = {id(p) for ps in blocks for p in ps}
        return block_groups(blocks, [p for p in self.parameters() if id(p) not in backbone], self.backbone_lr,
                            self.layer_decay)

    @torch.no_grad()
    def set_normalisation(self, spec_mean, spec_std, scalar_mean=None, scalar_std=None) -> None:
        """Store per-channel ``(channels,)`` and per-scalar ``(n_scalars,)`` mean and std."""
        self.spec_mean.copy_(torch.as_tensor(spec_mean).view_as(self.spec_mean))
        self.spec_std.copy_(torch.as_tensor(spec_std).view_as(self.spec_std).clamp_min(1e-6))
        if self.n_scalars:
            self.scalar_mean.copy_(torch.as_tensor(scalar_mean).view_as(self.scalar_mean))
            self.scalar_std.copy_(torch.as_tensor(scalar_std).view_as(self.scalar_std).clamp_min(1e-6))

    def to_spec(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk's input from a model input: a waveform ``(B, samples)`` goes through the front
        end (:mod:`lib.models.frontend`) to ``(B, C, F, T)`` float32 (channels-last); a
        spectrogram stack ``(B, C, F, T)`` is returned as is. Raises ``ValueError`` for a
        waveform when the model has no front end, and for any other number of dimensions (one
        clip ``(samples,)`` without its batch axis, a stereo ``(B, 2, samples)``), which would
        otherwise reach the trunk as if it were a spectrogram."""
        if x.dim() == 4:
            return x
        if x.dim() != 2:
            raise ValueError(f"model input of shape {tuple(x.shape)}: expected a waveform batch (batch, samples) "
                             f"or a spectrogram stack (batch, channels, freq, frames); one mono clip y: y[None]; "
                             f"stereo: average its channels or pick one first")
        if self.frontend is None:
            raise ValueError(f"a waveform input {tuple(x.shape)} needs a model with a front end (frontend: section)")
        return self.frontend(x).contiguous(memory_format=torch.channels_last)

    def forward(self, spec: torch.Tensor, scalars: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``spec (B, C, F, T)`` (or, with a front end, a waveform ``(B, samples)``: :meth:`to_spec`),
        ``scalars (B, S)`` -> ``{"logits": (B, n_outputs), "embedding":
        (B, pool.out_dim [+ scalar_hidden])}``: the pooled trunk output joined with the scalar
        branch (the MLP head's input), for stacking, distillation or nearest-neighbour checks.
        The ``attention`` pooling adds ``"frame_logits"`` and ``"attention"`` ``(B, T', n_outputs)``
        (``logits == (attention * frame_logits).sum(1)``)."""
        spec = self.to_spec(spec)
        x = self.trunk((spec - self.spec_mean) / self.spec_std)
        # over frequency -> (B, C', T'), then over time (a trunk without pooling returned the embedding)
        pooled = self.pool(x.mean(dim=2)) if self.pool is not None else {"embedding": x}
        parts = [pooled["embedding"]]
        if self.n_scalars:
            parts.append(self.scalar_branch((scalars - self.scalar_mean) / self.scalar_std))
        embedding = torch.cat(parts, dim=1)
        if self.head is not None:
            return {"logits": self.head(embedding), "embedding": embedding}
        logits, frames = pooled["clip_logits"], pooled["frame_logits"]
        if self.n_scalars:
            extra = self.scalar_logits(parts[1])
            logits, frames = logits + extra, frames + extra.unsqueeze(1)
        return {"logits": logits, "embedding": embedding, "frame_logits": frames, "attention": pooled["attention"]}


def conv_bn(c_in: int, c_out: int, act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """3x3 convolution (no bias) -> BatchNorm2d -> activation; keeps ``(F, T)``."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), act())


