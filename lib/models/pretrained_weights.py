"""Pretrained weights for every network of the zoo without a ``pretrained`` parameter of its own
(``cnn``, ``cnn8``, ``vgg``, ``esc_cnn4``, ``esc_cnn8``, ``resnet``, ``mini_resnet``, ``wavenet``):
a ``pretrain.py`` checkpoint (self-supervised on the competition's own audio, BYOL-A or SimCLR:
``docs/self-supervised.md``) loaded into the front end and trunk, the head (and scalar branch)
left new, with the transfer options of ``cnn14`` and ``timm`` (``freeze_blocks``, ``backbone_lr``,
``layer_decay``: :mod:`lib.models.transfer`). One place for every family:
:func:`lib.models.build_model` calls :func:`split_params` and :func:`apply`.

A checkpoint is a dict of tensors and plain values (``torch.load(weights_only=True)``):
``format`` (:data:`FORMAT`), ``state_dict`` (:func:`backbone_state`: the model's state dict
without head and scalar branch), ``compat`` (:func:`describe`: architecture, feature set, front
end, input channels and bins), ``method``, ``epochs``, ``losses``. It is loaded only when its
record (:func:`lib.core.paths.pretrained_record`, written last by ``pretrain.py``) says it is
complete and unchanged, so an interrupted pretraining is never taken for a finished one.
"""
from __future__ import annotations

import functools
import inspect
from pathlib import Path

import torch
from torch import nn

from ..core.artifacts import file_hash
from ..core.errors import ConfigError
from ..core.paths import pretrained_record
from ..core.utils import fingerprint, load_tensors_only
from .base import AudioClassifier
from .frontend import FRONTENDS
from .transfer import check_freeze, pretrained_file

FORMAT = "audio-pipeline-ssl-v1"
"""The ``format`` entry of a ``pretrain.py`` checkpoint."""
TRANSFER_PARAMS = {"pretrained": None, "freeze_blocks": 0, "backbone_lr": 1.0, "layer_decay": 1.0}
"""The ``model.params`` this module adds to the networks without their own, with their defaults."""
NOT_ARCHITECTURE = {"in_channels", "n_scalars", "n_outputs", "n_bins", "sample_rate", "dropout", "head_hidden",
                    "pooling", *TRANSFER_PARAMS}
"""Model parameters that leave the front end and trunk's weights as they are (left out of the
compatibility check): the code-supplied sizes, the head's, the pooling, the transfer options."""
WHERE_FROM = ("such checkpoints are made by pretrain.py on the competition's own audio (docs/self-supervised.md): "
              "python pretrain.py CONFIG --output-dir OUT writes OUT/pretrained/<experiment>.pt")
_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def takes_generic(cls) -> bool:
    """Whether the model class ``cls`` gets :data:`TRANSFER_PARAMS` from here: a network
    (:class:`AudioClassifier`) without a ``pretrained`` parameter of its own (not ``cnn14``,
    ``timm``, which load their published checkpoints themselves; not the scikit-learn members)."""
    return isinstance(cls, type) and issubclass(cls, AudioClassifier) and \
        "pretrained" not in inspect.signature(cls).parameters


def transfer_options(pretrained: str | None = None, freeze_blocks: int = 0, backbone_lr: float = 1.0,
                     layer_decay: float = 1.0) -> None:
    """The signature of :data:`TRANSFER_PARAMS`, for the check of ``model.params`` when a config
    is loaded (:func:`lib.components.check_experiment`): ``pretrained`` a checkpoint path,
    ``freeze_blocks`` the first blocks frozen, ``backbone_lr`` > 0 and ``layer_decay`` in (0, 1]
    scales of their learning rates. Does nothing."""


def split_params(cls, params: dict) -> tuple[dict, dict]:
    """``model.params`` -> ``(the class's own params, transfer options)``: for a class that
    :func:`takes_generic`, the :data:`TRANSFER_PARAMS` given are taken out; otherwise
    ``(params, {})``. Raises ``ConfigError`` for a ``pretrained`` that is not a path (text) or null."""
    if not takes_generic(cls):
        return params, {}
    own = {k: v for k, v in params.items() if k not in TRANSFER_PARAMS}
    transfer = {k: v for k, v in params.items() if k in TRANSFER_PARAMS}
    if transfer.get("pretrained") is not None and not isinstance(transfer["pretrained"], str):
        raise ConfigError(f"model.params.pretrained must be the path of a pretrain.py checkpoint (text) or null, "
                          f"got {transfer['pretrained']!r}")
    return own, transfer


def _resolved(cls, params: dict) -> dict:
    """``params`` with the defaults of ``cls``'s signature filled, without :data:`NOT_ARCHITECTURE`."""
    sig = inspect.signature(cls).parameters
    full = {k: p.default for k, p in sig.items() if p.default is not inspect.Parameter.empty}
    full.update(params)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(full.items()) if k not in NOT_ARCHITECTURE}


def describe(model: AudioClassifier, cls, section: dict, manifest: dict, frontend: dict | None) -> dict:
    """What a checkpoint's weights fit, as plain values: ``model`` (name and the parameters that
    shape the trunk, defaults filled), ``features`` (the cached feature set's name and settings,
    from the feature ``manifest``), ``frontend`` (name and parameters, defaults filled; ``None``
    for cached spectrograms) and ``input`` (kind, ``channels`` and ``bins`` of the trunk's input,
    ``sample_rate`` in Hz). Frame counts are left out: the trunks take any length. ``cls``: the
    model's registered class (``MODELS.get(section["name"])``)."""
    fe = None
    if frontend:
        fe = {"name": frontend["name"], "params": _resolved(FRONTENDS.get(frontend["name"]), frontend.get("params") or {})}
    shape = manifest.get("spec_shape") or [None, None]
    channels, bins = (model.frontend.channels, model.frontend.n_bins) if model.frontend is not None else shape[:2]
    return {"model": {"name": section["name"], "params": _resolved(cls, split_params(cls, section.get("params") or {})[0])},
            "input": {"kind": manifest.get("kind", "spectrogram"), "channels": channels, "bins": bins,
                      "sample_rate": manifest.get("sample_rate")},
            "features": {"name": manifest.get("name"), "settings": manifest.get("settings")}, "frontend": fe}


def backbone_state(model: AudioClassifier) -> dict:
    """The state dict of what pretraining trains: front end (its per-band statistics), input
    normalisation, trunk and pooling (a pooling that classifies itself, ``attention``, left out), without the
    head and scalar branch. Tensors, detached, on the CPU."""
    head = ("head.", "scalar_branch.", "scalar_logits.", "scalar_mean", "scalar_std")
    if model.pool is not None and model.pool.gives_logits:
        head += ("pool.",)
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if not k.startswith(head)}


def _first_difference(saved, current, key: str):
    """The first dotted key (under ``key``) where ``saved`` and ``current`` differ, with both values, or ``None``."""
    if isinstance(saved, dict) and isinstance(current, dict):
        for k in list(saved) + [k for k in current if k not in saved]:  # model, input, features, frontend first
            found = _first_difference(saved.get(k), current.get(k), f"{key}.{k}")
            if found:
                return found
        return None
    return None if saved == current else (key, saved, current)


def load(model: AudioClassifier, path: str, expected: dict) -> dict:
    """Load the ``pretrain.py`` checkpoint at ``path`` into ``model`` (exactly: every tensor of
    :func:`backbone_state`; the head stays as built) after checking its record (complete, its
    members unchanged) and that it fits ``expected`` (:func:`describe` of ``model``). Returns the
    checkpoint's summary (method, epochs, final loss). Raises ``ConfigError`` naming
    ``model.params.pretrained`` for a missing file (nothing is downloaded), another format (e.g.
    a fold model of 02), a checkpoint without its record (copied alone), an unfinished or changed
    result, non-finite values, and for another architecture, feature set, front end or input:
    the key and both sides."""
    p = pretrained_file(path, "pretrain.py", WHERE_FROM)
    ckpt = load_tensors_only(p, ConfigError)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        what = " (a fold model of 02_train.py)" if isinstance(ckpt, dict) and {"fold", "manifest"} <= set(ckpt) else ""
        raise ConfigError(f"model.params.pretrained: {p} is not a pretrain.py checkpoint ({FORMAT}){what}; {WHERE_FROM}")
    record = pretrained_record(p)
    rec, why = record.check()
    if rec is None and not record.path.exists() and not p.with_name(f"{p.stem}.state.pt").exists():  # not a killed run
        raise ConfigError(f"model.params.pretrained: {p} has no record beside it ({record.path.name}, which "
                          f"pretrain.py writes last): copy the two together, or run pretrain.py again (a run of it "
                          f"stopped before its first epoch ended also leaves the .pt of the run before alone)")
    if rec is None:
        raise ConfigError(f"model.params.pretrained: {p} is not a finished pretraining result ({why}; "
                          f"{record.path.name}): run pretrain.py to the end for it again")
    diff = _first_difference(ckpt["compat"], expected, "")
    if diff:
        key, saved, current = diff
        raise ConfigError(f"model.params.pretrained: {p} does not fit this model: {key.lstrip('.')} is {saved!r} in "
                          f"the checkpoint but {current!r} in this experiment; pretrain this experiment's network "
                          f"(pretrain.py with its config) or use the checkpoint's settings")
    own = model.state_dict()
    wanted = backbone_state(model)
    pooled = ((ckpt.get("config") or {}).get("model") or {}).get("params", {}).get("pooling")
    pooling = (f": the pooling differs (the checkpoint's model.params.pooling is {pooled or 'its model default'}); "
               f"use that pooling, or pretrain with this one")
    for k, v in ckpt["state_dict"].items():
        if k not in own or own[k].shape != v.shape:
            raise ConfigError(f"model.params.pretrained: {p}: tensor {k} {tuple(v.shape)} does not fit the model "
                              f"({tuple(own[k].shape) if k in own else 'no such tensor'})"
                              + (pooling if k.startswith("pool.") else ""))
    missing = sorted(set(wanted) - set(ckpt["state_dict"]))
    if missing:
        raise ConfigError(f"model.params.pretrained: {p} lacks tensors of this model: {missing[:5]}"
                          + (pooling if all(k.startswith("pool.") for k in missing) else ""))
    bad = [k for k, v in ckpt["state_dict"].items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ConfigError(f"model.params.pretrained: {p} holds non-finite values in {len(bad)} tensors (e.g. "
                          f"{', '.join(bad[:3])}): a diverged pretraining; run pretrain.py again with a lower pretrain.lr")
    model.load_state_dict(ckpt["state_dict"], strict=False)
    return {k: ckpt.get(k) for k in ("method", "epochs")} | {"loss": (ckpt.get("losses") or [None])[-1]}


def trunk_blocks(model: AudioClassifier) -> list[list[nn.Module]]:
    """The blocks that ``freeze_blocks``, ``backbone_lr`` and ``layer_decay`` count, input side
    first: the trunk's top-level modules that hold parameters (a ``ModuleList``'s items each), a
    normalisation layer joining the block before it. ``cnn``/``cnn8``/``esc_cnn*``: each conv +
    BatchNorm; ``resnet``: the stem, then each residual block; ``vgg``: each residual VGG block;
    ``wavenet``: the input projection, each gated layer, the output convolution."""
    children = []
    for child in model.trunk.children():
        children += list(child) if isinstance(child, nn.ModuleList) else [child]
    blocks: list[list[nn.Module]] = []
    for child in children:
        if not any(True for _ in child.parameters()):
            continue
        if isinstance(child, _NORMS) and blocks:
            blocks[-1].append(child)
        else:
            blocks.append([child])
    return blocks


def apply(model: AudioClassifier, cls, section: dict, manifest: dict, frontend: dict | None, transfer: dict) -> None:
    """Apply the transfer options ``transfer`` (from :func:`split_params`) to a freshly built
    ``model`` of class ``cls``: load ``pretrained`` (:func:`load`), freeze the first ``freeze_blocks`` of
    :func:`trunk_blocks` (no gradients, BatchNorm statistics kept) and give every block its
    learning-rate scale (``backbone_lr * layer_decay ** (n - 1 - i)``: :func:`lib.models.transfer.block_groups`).
    Without any option the model is left exactly as built. Raises ``ConfigError`` as :func:`load`,
    for a ``freeze_blocks`` beyond the trunk's blocks, and for ``freeze_blocks``, ``backbone_lr`` or
    ``layer_decay`` without ``pretrained`` (a model built to train; prediction builds without them)."""
    opts = {k: transfer.get(k, d) for k, d in TRANSFER_PARAMS.items()}
    if opts == TRANSFER_PARAMS:
        return
    if not opts["pretrained"]:  # frozen or slowed blocks of a random start: never what was meant
        given = [k for k, d in TRANSFER_PARAMS.items() if opts[k] != d]
        raise ConfigError(f"model.params {', '.join(given)} act on pretrained blocks, but model.params.pretrained is "
                          f"not set: give the pretrain.py checkpoint (pretrain.py itself ignores these options), or "
                          f"remove them")
    blocks = trunk_blocks(model)
    check_freeze(opts["freeze_blocks"], len(blocks), section["name"])
    if opts["pretrained"]:
        model.pretrained_from = load(model, opts["pretrained"], describe(model, cls, section, manifest, frontend))
    model.freeze([m for b in blocks[:opts["freeze_blocks"]] for m in b])
    model.transfer_blocks = [[p for m in b for p in m.parameters()] for b in blocks]
    model.backbone_lr, model.layer_decay = float(opts["backbone_lr"]), float(opts["layer_decay"])


def pretrained_id(section: dict) -> str | None:
    """What identifies the weights a ``model`` section starts from (``model.params.pretrained``),
    so that a model fine-tuned from them is trained again when they change: the record id of a
    ``pretrain.py`` checkpoint; the SHA-256 of any other file (PANNs CNN14, timm); the SHA-256 of
    every file of a folder (a Hugging Face model). ``None`` when nothing is given or found (the
    model's loader then says why)."""
    path = (section.get("params") or {}).get("pretrained")
    p = Path(path).expanduser() if isinstance(path, str) else None
    if p is not None and p.is_file():  # a pretrain.py record that still describes the file's bytes (another
        rec, _ = pretrained_record(p).check(hashes=frozenset({p.name}))  # file copied over it: its own bytes, probe)
        return rec["id"] if rec else f"sha256:{file_hash(p)}"
    if p is not None and p.is_dir():
        files = tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(p.iterdir()) if f.is_file())
        return _folder_id(str(p.resolve()), files)
    return None


@functools.lru_cache(maxsize=16)
def _folder_id(folder: str, files: tuple) -> str:
    """The fingerprint of every file of a folder (``files``: name, size, modification time, the
    cache's key: a folder of a few GB is hashed once per process, not once per experiment)."""
    return fingerprint({name: file_hash(Path(folder) / name) for name, _, _ in files})


def pretrained_changed(out, exp: str, only: str | Path | None = None, config: dict | None = None) -> str | None:
    """Why experiment ``exp``'s trained models (``out``: an :class:`lib.core.paths.Outputs`) are
    no longer what 02 would train, through the weights they were fine-tuned from: the file or
    folder of their ``model.params.pretrained`` holds other weights now (:func:`pretrained_id`;
    ``pretrain.py`` run again, or another file copied there), in words; ``None`` when it is the
    same, the models started from none (or, with ``only``, from another path than ``only``), or
    the path is nothing here (given relative to another folder, or moved: 02 says so when it
    runs). Their predictions stay consistent (the fold models hold their own weights); 02 trains
    them again. ``config``: the experiment's resolved config when the caller has it (else its
    ``config.yaml`` is read)."""
    made = out.trained(exp).read()
    was = ((made or {}).get("inputs") or {}).get("pretrained")
    path_yaml = out.model_dir(exp) / "config.yaml"
    if not was or config is None and not path_yaml.is_file():
        return None
    if config is None:
        import yaml

        config = yaml.safe_load(path_yaml.read_text()) or {}
    model = config.get("model") or {}
    path = (model.get("params") or {}).get("pretrained")
    p = Path(path).expanduser() if isinstance(path, str) else None
    if p is None or not p.exists() or only is not None and p.resolve() != Path(only).resolve():
        return None
    if pretrained_id(model) == was:
        return None
    return (f"its pretrained weights {path} changed since it was trained (pretrain.py again, "
            f"or another file there): 02_train.py trains it again")
