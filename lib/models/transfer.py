"""Shared pieces of the models that start from pretrained weights (``cnn14``, ``timm``): the
local-file check, freezing the first blocks, and per-block learning-rate scales."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from ..core.errors import ConfigError


def load_error_detail(exc: Exception, limit: int = 300) -> str:
    """The telling line of an error raised while loading weights: its last non-blank line (torch's
    "size mismatch for fc1.weight ..." under "Error(s) in loading state_dict"), at most ``limit``
    characters."""
    return [line.strip() for line in str(exc).splitlines() if line.strip()][-1][:limit]


def pretrained_file(path, model: str, where_from: str) -> Path:
    """The local checkpoint ``path`` as a ``Path``. Nothing is downloaded at run time, so a
    missing file is a ``ConfigError`` naming ``model.params.pretrained`` and where such
    checkpoints come from (``where_from``)."""
    p = Path(path).expanduser()
    if not p.is_file() and p.with_name(f"{p.stem}.state.pt").is_file():  # pretrain.py's state after an epoch
        raise ConfigError(f"model.params.pretrained: {str(path)!r} is not there, but {p.stem}.state.pt beside it is: "
                          f"its pretrain.py run stopped before the end; run the same pretrain.py command again "
                          f"(it resumes after its last finished epoch)")
    if not p.is_file():
        raise ConfigError(f"model.params.pretrained: {model} checkpoint {str(path)!r} is not a file (looked for "
                          f"{p.resolve()}: a relative path is taken from the folder the stage runs in, the project folder under "
                          f"run_all.sh; an absolute path is safest). Nothing is "
                          f"downloaded at run time: {where_from}")
    return p


def block_groups(blocks: list[list[nn.Parameter]], rest: list[nn.Parameter], backbone_lr: float,
                 layer_decay: float) -> list[dict]:
    """Optimiser parameter groups with ``lr_scale``: block ``i`` of the ``n`` pretrained
    ``blocks`` (input side first) gets ``backbone_lr * layer_decay ** (n - 1 - i)``
    (layer-wise learning-rate decay: the deeper a block, the closer its rate to the head's;
    Howard & Ruder 2018, ULMFiT's discriminative fine-tuning, as in timm's
    ``param_groups_layer_decay``); ``rest`` (the new head and scalar branch) gets 1. Frozen
    parameters are left out. Raises ``ConfigError`` for a non-positive ``backbone_lr`` or a
    ``layer_decay`` outside (0, 1]."""
    if backbone_lr <= 0:
        raise ConfigError(f"model.params.backbone_lr={backbone_lr!r} must be positive (use freeze_blocks to freeze)")
    if not 0 < layer_decay <= 1:
        raise ConfigError(f"model.params.layer_decay={layer_decay!r} must be in (0, 1]")
    n = len(blocks)
    groups = [{"params": [p for p in ps if p.requires_grad], "lr_scale": backbone_lr * layer_decay ** (n - 1 - i)}
              for i, ps in enumerate(blocks)]
    groups.append({"params": [p for p in rest if p.requires_grad], "lr_scale": 1.0})
    return [g for g in groups if g["params"]]


def check_freeze(freeze_blocks: int, n_blocks: int, model: str) -> None:
    """Raise ``ConfigError`` unless ``0 <= freeze_blocks <= n_blocks``."""
    if not 0 <= freeze_blocks <= n_blocks:
        raise ConfigError(f"model.params.freeze_blocks={freeze_blocks!r}: {model} has {n_blocks} blocks")
