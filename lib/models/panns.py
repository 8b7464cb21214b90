"""PANNs CNN14 (Kong et al. 2020, "PANNs: Large-Scale Pretrained Audio Neural Networks for Audio
Pattern Recognition", qiuqiangkong/audioset_tagging_cnn ``pytorch/models.py`` ``Cnn14``), with
the public code's parameter names, so that a user's own AudioSet checkpoint loads.

The weights only mean something on the input they were trained on, so the model computes PANNs'
own log-mel from the waveform (torchlibrosa's ``Spectrogram`` + ``LogmelFilterBank`` as the
PANNs code sets them: Hann window, centred STFT with reflection padding, power spectrogram, Slaney
mel filterbank, ``10 log10(max(x, 1e-10))`` with no ``top_db`` floor) and normalises it with the
pretrained ``bn0``, not with the training fold's statistics. Settings per sample rate
(:data:`VARIANTS`): 32 kHz (``Cnn14_mAP=0.431.pth``): window 1024, hop 320, 64 mel bins,
50-14000 Hz; 16 kHz (``Cnn14_16k_mAP=0.438.pth``): window 512, hop 160, 64 bins, 50-8000 Hz.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ConfigError
from ..core.utils import load_tensors_only
from .base import AudioClassifier
from .frontend import LogMelFrontEnd
from .transfer import check_freeze, load_error_detail, pretrained_file

VARIANTS = {32000: {"n_fft": 1024, "hop_length": 320, "n_mels": 64, "fmin": 50.0, "fmax": 14000.0},
            16000: {"n_fft": 512, "hop_length": 160, "n_mels": 64, "fmin": 50.0, "fmax": 8000.0}}
"""PANNs' front-end settings of CNN14 per sample rate (Hz): its ``main.py`` and ``Cnn14_16k``."""
WHERE_FROM = ("PANNs checkpoints (Cnn14_mAP=0.431.pth for 32 kHz, Cnn14_16k_mAP=0.438.pth for 16 kHz) are published "
              "with qiuqiangkong/audioset_tagging_cnn (Zenodo record 3987831); download one where you have internet "
              "(e.g. as a Kaggle dataset) and give its path")
FRONT_END_KEYS = ("spectrogram_extractor.", "logmel_extractor.")
"""Checkpoint keys of PANNs' front end (torchlibrosa constants): checked against ours, not loaded."""
DROPPED_KEYS = ("fc_audioset.",)
"""The AudioSet classifier, replaced by the competition's head."""


class ConvBlock(nn.Module):
    """PANNs' ``ConvBlock``: (3x3 conv, no bias -> BN -> ReLU) x 2, then average pooling of
    ``pool_size``. ``(B, c_in, T, F) -> (B, c_out, T / p, F / p)``. Names ``conv1, bn1, conv2, bn2``."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.bn2 = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor, pool_size=(2, 2)) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, pool_size)


class Cnn14Trunk(nn.Module):
    """CNN14 from ``bn0`` to ``fc1``, names as PANNs' ``Cnn14`` (``bn0``, ``conv_block1..6``,
    ``fc1``): log-mel ``(B, 1, 64, T)`` (our frequency-first layout; turned into PANNs'
    ``(B, 1, T, 64)`` so the pretrained kernels see their own orientation) -> ``bn0`` over the mel
    bins -> six blocks of 64..2048 channels (2x2 average pooling, none after the last), dropout
    0.2 after each -> mean over frequency -> max + mean over time (summed) -> dropout 0.5 ->
    ``relu(fc1)`` -> embedding ``(B, 2048)``, PANNs' ``embedding`` before its last dropout."""

    widths = (64, 128, 256, 512, 1024, 2048)

    def __init__(self, mel_bins: int = 64):
        super().__init__()
        self.bn0 = nn.BatchNorm2d(mel_bins)
        c = 1
        for i, w in enumerate(self.widths, 1):
            setattr(self, f"conv_block{i}", ConvBlock(c, w))
            c = w
        self.fc1 = nn.Linear(2048, 2048)

    def blocks(self) -> list[nn.Module]:
        """The pretrained parts in input order: ``bn0`` with ``conv_block1``, ``conv_block2..6``, ``fc1``."""
        return [nn.ModuleList([self.bn0, self.conv_block1])] + [getattr(self, f"conv_block{i}") for i in range(2, 7)] \
            + [self.fc1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(2, 3)  # (B, 1, T, F), PANNs' layout
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        for i in range(1, 7):
            x = getattr(self, f"conv_block{i}")(x, (2, 2) if i < 6 else (1, 1))
            x = F.dropout(x, 0.2, self.training)
        x = x.mean(dim=3)
        x = x.amax(dim=2) + x.mean(dim=2)
        return F.relu(self.fc1(F.dropout(x, 0.5, self.training)))


class Cnn14(AudioClassifier):
    """PANNs CNN14 for the competition's classes: PANNs' front end (:data:`VARIANTS`, chosen by the
    waveforms' sample rate), :class:`Cnn14Trunk`, then the scalar branch (metadata) joined with
    the 2048-d embedding and a new classifier (``head_hidden: []``: one linear layer after dropout
    ``dropout``, as PANNs' fine-tuning template's ``fc_transfer``) in place of ``fc_audioset``.
    About 79.7 M parameters (80.8 M with the AudioSet head).

    ``pretrained``: a local PANNs checkpoint (``{"model": state_dict}`` as PANNs saves it, or the
    state dict itself); its front-end constants are compared with ours (a checkpoint of the other
    sample rate, or other mel settings, is an error), ``fc_audioset`` is dropped, every other key
    must match. ``freeze_blocks``: the first k of the 7 parts of :meth:`Cnn14Trunk.blocks` are
    frozen; ``backbone_lr``/``layer_decay``: their learning-rate scales (:func:`block_groups`).

    Needs waveform input (``features: {name: waveform, params: {sample_rate: 32000}}`` and no
    ``frontend`` section: the model brings its own). Raises ``ConfigError`` for another sample
    rate, a missing checkpoint file or one that does not fit, a bad ``freeze_blocks``.
    """

    owns_frontend = True

    def __init__(self, in_channels: int, n_scalars: int, n_outputs: int, sample_rate: int, pretrained: str | None = None,
                 freeze_blocks: int = 0, backbone_lr: float = 1.0, layer_decay: float = 1.0, dropout: float = 0.5,
                 head_hidden: int | list[int] = ()):
        if sample_rate not in VARIANTS:
            raise ConfigError(f"cnn14 exists for 32000 and 16000 Hz audio (PANNs' checkpoints), the waveforms are at "
                              f"{sample_rate} Hz: set features.params.sample_rate: 32000 (or 16000) in the experiment")
        check_freeze(freeze_blocks, 7, "cnn14")
        super().__init__(1, n_scalars, n_outputs, Cnn14Trunk(VARIANTS[sample_rate]["n_mels"]), 2048,
                         head_hidden=head_hidden, dropout=dropout, pooling=None)
        self.frontend = LogMelFrontEnd(sample_rate, **VARIANTS[sample_rate], top_db=None, pad_mode="reflect")
        self.frontend.normalise = False  # bn0 normalises, with its pretrained statistics
        self.backbone_lr, self.layer_decay = backbone_lr, layer_decay
        if pretrained:
            self.load_panns(pretrained_file(pretrained, "cnn14", WHERE_FROM))
        self.freeze(self.trunk.blocks()[:freeze_blocks])

    def load_panns(self, path) -> None:
        """Load a PANNs-format checkpoint into the trunk (see the class docstring), tensors and
        plain values only (:func:`load_tensors_only`: nothing in the file is ever run). Raises
        ``ConfigError`` naming the file when it does not fit or holds other objects."""
        ckpt = load_tensors_only(path, ConfigError)
        sd = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
        if not isinstance(sd, dict):
            raise ConfigError(f"{path}: not a PANNs checkpoint (expected a dict with a 'model' state dict)")
        mel_w = sd.get("logmel_extractor.melW")
        ours = self.frontend.mel_basis.T
        if mel_w is not None and (mel_w.shape != ours.shape or not torch.allclose(mel_w.float(), ours, atol=1e-4)):
            raise ConfigError(f"{path}: its log-mel front end (filterbank {tuple(mel_w.shape)}) is not PANNs' "
                              f"{self.frontend.sample_rate} Hz one ({tuple(ours.shape)}, {VARIANTS[self.frontend.sample_rate]}); "
                              f"use the checkpoint of this sample rate or set features.params.sample_rate to the checkpoint's")
        sd = {k: v for k, v in sd.items() if not k.startswith(FRONT_END_KEYS + DROPPED_KEYS)}
        try:
            missing, unexpected = self.trunk.load_state_dict(sd, strict=False)
        except RuntimeError as exc:  # tensors of other shapes: another architecture (Cnn10) or front end
            raise ConfigError(f"{path}: not a PANNs Cnn14 checkpoint: {load_error_detail(exc)}") from exc
        if missing or unexpected:
            raise ConfigError(f"{path}: not a PANNs Cnn14 checkpoint: missing {missing[:5]}, unexpected {unexpected[:5]}")

    def pretrained_blocks(self) -> list[list[nn.Parameter]]:
        """The parameters of the 7 parts of :meth:`Cnn14Trunk.blocks`."""
        return [list(b.parameters()) for b in self.trunk.blocks()]
