"""Configuration: YAML loading with ``base:`` inheritance, defaults, and name registries.

Two kinds of YAML file (see README.md, "Configuring"):

* a *competition* file (``configs/data/*.yaml``) says what the data is: where the CSVs and audio
  are, id and target columns, classes, groups, folds, metric, submission format;
* an *experiment* file (``configs/*.yaml``) says how to model it: every component is a
  ``{name, params}`` section resolved through a :class:`Registry` (the style of
  koukyo1994/kaggle-rfcx), and ``base: other.yaml`` inherits from another experiment.
"""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
"""The project folder (the parent of ``lib/``)."""

TASKS = ("binary", "multiclass")


class ConfigError(ValueError):
    """A configuration file is missing a key or has a value of the wrong kind."""


class Registry:
    """A name -> callable table, so that configs pick components by name.

    >>> MODELS = Registry("model")
    >>> @MODELS.register("cnn")
    ... class CNN: ...
    >>> MODELS.build({"name": "cnn", "params": {}})  # doctest: +ELLIPSIS
    <...CNN object at ...>
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, object] = {}

    def register(self, name: str):
        """Decorator that registers a class or function under ``name``."""
        def deco(obj):
            self._items[name] = obj
            return obj
        return deco

    def get(self, name: str):
        """Return the registered object; raises ``ConfigError`` listing the known names."""
        if name not in self._items:
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._items))}")
        return self._items[name]

    def build(self, section: dict, **kwargs):
        """Call the object named by ``section['name']`` with ``section['params']`` and ``kwargs``."""
        return self.get(section["name"])(**(section.get("params") or {}), **kwargs)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._items)


def deep_merge(base: dict, override: dict) -> dict:
    """Return ``base`` updated recursively by ``override`` (dicts merge, other values replace)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_yaml(path: str | Path) -> dict:
    """Load a YAML mapping, following ``base:`` (a path relative to the file) recursively.

    Raises ``FileNotFoundError`` naming the file, or ``ConfigError`` if it is not a mapping.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file not found: {path}")
    cfg = yaml.safe_load(path.read_text()) or {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: expected a YAML mapping at the top level")
    base = cfg.pop("base", None)
    if base:
        cfg = deep_merge(load_yaml(path.parent / base), cfg)
    return cfg


EXPERIMENT_DEFAULTS = {
    "features": {"name": "log_mel", "params": {}},
    "model": {"name": "cnn", "params": {}},
    "optimizer": {"name": "adamw", "params": {"lr": 1e-3, "weight_decay": 1e-2}},
    "scheduler": {"name": "warmup_cosine", "params": {"warmup_epochs": 1}},
    "loss": {"name": "bce", "params": {}},
    "augment": {
        "mixup": {"p": 0.0, "alpha": 0.4},
        "cutmix": {"p": 0.0, "alpha": 1.0},
        "spec_augment": {"p": 0.0, "freq_mask": 8, "time_mask": 8, "n_masks": 1},
    },
    "train": {
        "epochs": 25, "batch_size": 64, "patience": 8, "grad_clip": 5.0, "seed": 42,
        "device": "auto", "amp": True, "folds": None, "ema": None,
    },
}


def load_experiment(path: str | Path) -> dict:
    """Load an experiment config, fill defaults, and set ``name`` (default: the file's stem).

    Returns a dict with keys ``name, features, model, optimizer, scheduler, loss, augment, train``.
    ``features`` gains ``set``: the cache folder name under ``output/features/`` (default: the
    feature's name). Raises ``ConfigError`` for sections that are not ``{name, params}``.
    """
    path = Path(path)
    cfg = deep_merge(EXPERIMENT_DEFAULTS, load_yaml(path))
    cfg.setdefault("name", path.stem)
    for key in ("features", "model", "optimizer", "scheduler", "loss"):
        if not isinstance(cfg[key], dict) or "name" not in cfg[key]:
            raise ConfigError(f"{path}: section {key!r} must be a mapping with 'name' (and optional 'params')")
        cfg[key].setdefault("params", {})
        cfg[key]["params"] = cfg[key]["params"] or {}
    cfg["features"].setdefault("set", cfg["features"]["name"])
    return cfg


def _require(cfg: dict, key: str, where: str):
    if cfg.get(key) in (None, ""):
        raise ConfigError(f"{where}: missing required key {key!r}")
    return cfg[key]


def load_competition(path: str | Path, data_dir: str | Path | None = None) -> dict:
    """Load and check a competition config; resolve ``data_dir`` to an absolute path.

    ``data_dir`` (e.g. from ``--data-dir``, relative to the working directory) overrides the
    file's ``data_dir``, which is relative to the project folder (default ``input``).
    Returns the config with defaults filled in; raises ``ConfigError`` naming the missing key.
    """
    path = Path(path)
    cfg = load_yaml(path)
    where = str(path)
    cfg.setdefault("name", path.stem)
    cfg["data_dir"] = str(Path(data_dir).resolve() if data_dir else (ROOT / cfg.get("data_dir", "input")).resolve())
    task = cfg.setdefault("task", "binary")
    if task not in TASKS:
        raise ConfigError(f"{where}: task {task!r} is not one of {TASKS}")
    classes = [str(c) for c in _require(cfg, "classes", where)]
    cfg["classes"] = classes
    if task == "binary":
        if len(classes) != 2:
            raise ConfigError(f"{where}: a binary task needs exactly 2 classes, got {classes}")
        pos = str(cfg.setdefault("positive", classes[1]))
        if pos not in classes:
            raise ConfigError(f"{where}: positive class {pos!r} is not in classes {classes}")
        cfg["positive"] = pos
    cfg.setdefault("metric", "accuracy")
    cfg.setdefault("metrics", [cfg["metric"]])
    if cfg["metric"] not in cfg["metrics"]:
        cfg["metrics"] = [cfg["metric"], *cfg["metrics"]]
    train = _require(cfg, "train", where)
    for key in ("csv", "id_column", "target_column", "audio"):
        _require(train, key, f"{where} [train]")
    if cfg.get("test"):
        for key in ("csv", "id_column", "audio"):
            _require(cfg["test"], key, f"{where} [test]")
    audio = cfg.setdefault("audio", {})
    _require(audio, "clip_seconds", f"{where} [audio]")
    audio.setdefault("sample_rate", None)
    audio.setdefault("pad", "zero")
    folds = cfg.setdefault("folds", {})
    folds.setdefault("n_folds", 5)
    folds.setdefault("scheme", "stratified_group" if cfg.get("groups") else "stratified")
    folds.setdefault("seed", 42)
    sub = cfg.get("submission")
    if sub:
        for key in ("sample", "id_column", "target_column"):
            _require(sub, key, f"{where} [submission]")
        sub.setdefault("format", "label")
    return cfg


def apply_overrides(cfg: dict, overrides: list[str] | None) -> dict:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a config; returns a new dict.

    Example: ``["train.epochs=3", "train.folds=[0]"]``. Raises ``ConfigError`` for a malformed item.
    """
    cfg = copy.deepcopy(cfg)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        key, value = item.split("=", 1)
        node = cfg
        *parents, last = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = yaml.safe_load(value)
    return cfg
