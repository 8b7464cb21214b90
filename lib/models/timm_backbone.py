"""Any 2-D timm architecture (Wightman, huggingface/pytorch-image-models) as the trunk:
EfficientNet, ConvNeXt, RegNet, NFNet, MobileNetV2, ResNet50, ... on spectrogram stacks."""
from __future__ import annotations

import os

import torch
from torch import nn

from ..core.errors import ConfigError
from ..core.registry import did_you_mean
from .base import AudioClassifier
from .transfer import check_freeze, load_error_detail, pretrained_file

WHERE_FROM = ("timm's ImageNet weights are published on the Hugging Face hub (timm/<arch>.<tag>, "
              "model.safetensors or pytorch_model.bin); download the file where you have internet (e.g. as a Kaggle "
              "dataset) and give its path")


class _FeatureMap(nn.Module):
    """A timm model's ``forward_features``: ``(B, C, F, T) -> (B, num_features, F', T')`` (an
    architecture that gives no feature map is refused when built: :func:`_check_feature_map`)."""

    def __init__(self, backbone: nn.Module, arch: str):
        super().__init__()
        self.backbone, self.arch = backbone, arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        try:
            return self.backbone.forward_features(x)
        except AssertionError as exc:  # timm's input-size checks (a vision transformer's fixed 224 x 224)
            raise ConfigError(f"model.params.arch: timm {self.arch!r} cannot take a spectrogram of "
                              f"{tuple(x.shape[2:])} ({exc}): use a convolutional one (efficientnet_b0, "
                              f"convnext_tiny, ...)") from exc


def _check_feature_map(backbone: nn.Module, arch: str, in_channels: int) -> None:
    """Raise ``ConfigError`` naming ``model.params.arch`` when timm architecture ``arch`` turns a
    spectrogram ``(1, in_channels, 64, 64)`` into tokens, not a ``(B, C, F, T)`` feature map (a
    vision transformer with dynamic sizes), at build time, not at the first training step. An
    architecture that cannot take 64 x 64 at all (a window size, a fixed 224 x 224) is left to
    the real input (:class:`_FeatureMap` says so in one line for timm's size checks)."""
    was = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            y = backbone.forward_features(torch.zeros(1, in_channels, 64, 64))
    except Exception:  # e.g. maxvit's window needs larger inputs; the real ones may fit
        return
    finally:
        backbone.train(was)
    if y.dim() != 4:
        raise ConfigError(f"model.params.arch: timm {arch!r} returns {tuple(y.shape)}, not a (B, C, F, T) feature map: "
                          f"use a convolutional one (efficientnet_b0, convnext_tiny, regnety_008, ...)")


class TimmBackbone(AudioClassifier):
    """A timm architecture by name (``arch``) with ``in_chans`` set from the input's channel count,
    its classifier and global pooling removed (``num_classes=0, global_pool=""``), its feature map
    then going through the shared frequency mean, time pooling and head.

    ``pretrained``: a local weights file (``.safetensors``, ``.bin``, ``.pth``) loaded by timm's own
    mechanism for one (``pretrained_cfg_overlay={"file": path}``), which also adapts the first
    convolution to ``in_chans`` (summing or repeating the RGB kernels) and drops the ImageNet
    classifier; ``HF_HUB_OFFLINE=1`` is set, so nothing is ever fetched. ``freeze_blocks``: the
    first k of timm's coarse parameter groups (``group_matcher(coarse=True)``: stem, stages, ...)
    are frozen; ``backbone_lr``/``layer_decay`` scale their learning rates (:func:`block_groups`).
    ``drop_rate``/``drop_path_rate`` go to timm; ``model_args`` passes any other ``create_model``
    argument. Raises ``ConfigError`` for an unknown architecture (with the closest name), one
    that gives no feature map of a spectrogram (a vision transformer), a missing file or weights
    timm cannot load into ``arch`` (truncated, another network's), a bad ``freeze_blocks``.
    """

    def __init__(self, in_channels: int, n_scalars: int, n_outputs: int, arch: str = "efficientnet_b0",
                 pretrained: str | None = None, freeze_blocks: int = 0, backbone_lr: float = 1.0,
                 layer_decay: float = 1.0, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 model_args: dict | None = None, dropout: float = 0.3, head_hidden: int | list[int] = (),
                 pooling: str = "mean_max"):
        self.check_params({"arch": arch})
        import timm
        from timm.models import group_parameters

        kwargs = dict(model_args or {}, in_chans=in_channels, num_classes=0, global_pool="", drop_rate=drop_rate,
                      drop_path_rate=drop_path_rate)
        if pretrained:
            kwargs.update(pretrained=True, pretrained_cfg_overlay={
                "file": str(pretrained_file(pretrained, f"timm {arch}", WHERE_FROM))})
        try:
            backbone = timm.create_model(arch, **kwargs)
        except Exception as exc:  # timm's and safetensors' own errors: a truncated file, another network's weights
            if not pretrained:
                raise
            raise ConfigError(f"model.params.pretrained: {kwargs['pretrained_cfg_overlay']['file']}: not weights timm "
                              f"can load into {arch} ({type(exc).__name__}: {load_error_detail(exc)})") from exc
        _check_feature_map(backbone, arch, in_channels)
        super().__init__(in_channels, n_scalars, n_outputs, _FeatureMap(backbone, arch), backbone.num_features,
                         head_hidden=head_hidden,
                         dropout=dropout, pooling=pooling)
        names = group_parameters(backbone, backbone.group_matcher(coarse=True))
        params = dict(backbone.named_parameters())
        self._blocks = [[params[n] for n in names[k]] for k in sorted(names)]
        check_freeze(freeze_blocks, len(self._blocks), f"timm {arch}")
        frozen = {id(p) for ps in self._blocks[:freeze_blocks] for p in ps}
        self.freeze([m for m in backbone.modules() if (own := list(m.parameters(recurse=False)))
                     and all(id(p) in frozen for p in own)])
        self.backbone_lr, self.layer_decay = backbone_lr, layer_decay

    @staticmethod
    def check_params(params: dict) -> None:
        """Raise ``ConfigError`` (with the closest name) when ``params["arch"]`` is not a timm
        architecture; called when a config is loaded, before any work. Sets ``HF_HUB_OFFLINE=1``."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the network, whatever timm decides
        import timm

        arch = params.get("arch", "efficientnet_b0")
        if not timm.is_model(arch):
            raise ConfigError(f"model.params.arch: unknown timm architecture {arch!r}"
                              f"{did_you_mean(arch, timm.list_models())}")

    def pretrained_blocks(self) -> list[list[nn.Parameter]]:
        """The parameters of timm's coarse groups, stem first."""
        return self._blocks
