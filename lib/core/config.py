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

from .errors import ConfigError  # noqa: F401  (raised here, imported from here by older callers)

ROOT = Path(__file__).resolve().parents[2]
"""The project folder (the parent of ``lib/``)."""

TASKS = ("binary", "multiclass", "multilabel")
AGGREGATIONS = ("mean", "max", "vote")


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
    "loss": {"name": "auto", "params": {}},
    "inputs": {"audio_scalars": True, "metadata": True},
    "augment": {
        "mixup": {"p": 0.0, "alpha": 0.4},
        "cutmix": {"p": 0.0, "alpha": 1.0},
        "spec_augment": {"p": 0.0, "freq_mask": 8, "time_mask": 8, "n_masks": 1},
    },
    "train": {
        "epochs": 25, "batch_size": 64, "patience": 8, "grad_clip": 5.0, "seed": 42,
        "device": "auto", "amp": True, "folds": None, "ema": None, "class_weights": None, "sampler": None,
        "compile": False, "max_bad_steps": 5,
    },
}


def load_experiment(path: str | Path) -> dict:
    """Load an experiment config, fill defaults, and set ``name`` (default: the file's stem).

    Returns a dict with keys ``name, features, model, optimizer, scheduler, loss, inputs, augment, train``.
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
    Returns the config with defaults filled in (README.md, "Configuring a competition", lists
    every key); raises ``ConfigError`` naming the file and the missing or wrong key. ``classes``
    may be left out: stage 00 then takes the sorted labels found in the training data.
    """
    path = Path(path)
    cfg = load_yaml(path)
    where = str(path)
    cfg.setdefault("name", path.stem)
    cfg["data_dir"] = str(Path(data_dir).resolve() if data_dir else (ROOT / cfg.get("data_dir", "input")).resolve())
    task = cfg.setdefault("task", "binary")
    if task not in TASKS:
        raise ConfigError(f"{where}: task {task!r} is not one of {TASKS}")
    train = _require(cfg, "train", where)
    _split_section(train, f"{where} [train]", labelled=True)
    if train.get("target_columns") and task != "multilabel":
        raise ConfigError(f"{where} [train]: 'target_columns' (one 0/1 column per class) needs task: multilabel")
    if train.get("target_columns") and not cfg.get("classes"):
        cfg["classes"] = list(train["target_columns"])
    if cfg.get("classes") is not None:
        cfg["classes"] = [str(c) for c in cfg["classes"]]
        check_classes(cfg, where)
    cfg.setdefault("metric", "average_precision" if task == "multilabel" else "accuracy")
    cfg.setdefault("metrics", [cfg["metric"]])
    if cfg["metric"] not in cfg["metrics"]:
        cfg["metrics"] = [cfg["metric"], *cfg["metrics"]]
    if cfg.get("test"):
        _split_section(cfg["test"], f"{where} [test]", labelled=False)
    audio = cfg.setdefault("audio", {})
    _require(audio, "clip_seconds", f"{where} [audio]")
    for key, default in (("hop_seconds", None), ("aggregate", "mean"), ("sample_rate", None),
                         ("resample_type", "soxr_hq"), ("channel", None), ("pad", "zero")):
        audio.setdefault(key, default)
    from ..data.audio import PAD_MODES, RESAMPLERS

    for key, allowed in (("resample_type", RESAMPLERS), ("pad", PAD_MODES)):
        if audio[key] not in allowed:
            raise ConfigError(f"{where} [audio]: {key} {audio[key]!r} is not one of {allowed}")
    if audio["aggregate"] not in AGGREGATIONS:
        raise ConfigError(f"{where} [audio]: aggregate {audio['aggregate']!r} is not one of {AGGREGATIONS}")
    groups = cfg.get("groups")
    if groups and not (groups.get("column") or groups.get("regex")):
        raise ConfigError(f"{where} [groups]: give 'column' (a CSV column) or 'regex' (over the id or path)")
    meta = cfg.setdefault("metadata", {}) or {}
    cfg["metadata"] = {"numeric": list(meta.get("numeric") or []), "categorical": list(meta.get("categorical") or [])}
    uses_columns = [k for k, v in (("groups.column", (groups or {}).get("column")), ("metadata", any(cfg["metadata"].values())),
                                   ("folds.column", (cfg.get("folds") or {}).get("column"))) if v]
    for split, needs in (("train", uses_columns), ("test", [k for k in uses_columns if k == "metadata"])):
        if cfg.get(split) and not cfg[split].get("csv") and needs:
            raise ConfigError(f"{where}: {', '.join(needs)} read(s) CSV columns, but [{split}] has no 'csv'")
    folds = cfg.setdefault("folds", {})
    folds.setdefault("n_folds", 5)
    default_scheme = ("predefined" if folds.get("column") else ("multilabel_stratified" if task == "multilabel"
                      else "stratified") + ("_group" if groups else ""))
    folds.setdefault("scheme", default_scheme)
    folds.setdefault("seed", 42)
    if folds["scheme"] == "predefined" and not folds.get("column"):
        raise ConfigError(f"{where} [folds]: scheme predefined needs 'column', the CSV column holding each row's fold")
    sub = cfg.get("submission")
    if sub:
        sub.setdefault("format", "label")
        keys = ("sample", "id_column") + (("target_column",) if sub["format"] in ("label", "probability") else ())
        for key in keys:
            _require(sub, key, f"{where} [submission]")
        sub.setdefault("label_separator", " ")
    return cfg


def _split_section(sec: dict, where: str, labelled: bool) -> None:
    """Check a ``train``/``test`` section: rows from ``csv`` + ``id_column``, or from ``files``."""
    if not sec.get("csv") and not sec.get("files"):
        raise ConfigError(f"{where}: give 'csv' (a table of ids) or 'files' (a glob of audio files under data_dir)")
    if sec.get("csv"):
        _require(sec, "id_column", where)
        sec.setdefault("audio", {"template": "{id}"})
        sec["audio"].setdefault("template", "{id}")
    else:
        sec.setdefault("id_from", "name")
        if sec["id_from"] not in ("name", "stem", "path"):
            raise ConfigError(f"{where}: id_from {sec['id_from']!r} is not one of name, stem, path")
    if labelled:
        sources = [k for k in ("target_column", "target_columns", "target_from") if sec.get(k)]
        if len(sources) != 1:
            raise ConfigError(f"{where}: give exactly one label source: target_column, target_columns "
                              f"(multi-label 0/1 columns) or target_from: folder; got {sources or 'none'}")
        if sec.get("target_from") not in (None, "folder"):
            raise ConfigError(f"{where}: target_from {sec['target_from']!r} must be 'folder'")
        if not sec.get("csv") and not sec.get("target_from"):
            raise ConfigError(f"{where}: rows from 'files' have no label column; use target_from: folder")
        sec.setdefault("label_separator", " ")


def check_classes(cfg: dict, where: str) -> None:
    """Check ``classes`` against the task (binary: exactly two, and ``positive`` among them)."""
    classes = cfg["classes"]
    if len(set(classes)) != len(classes) or len(classes) < 2:
        raise ConfigError(f"{where}: classes must be at least 2 distinct labels, got {classes}")
    if cfg["task"] == "binary":
        if len(classes) != 2:
            raise ConfigError(f"{where}: a binary task needs exactly 2 classes, got {classes}; "
                              f"use task: multiclass for more")
        pos = str(cfg.setdefault("positive", classes[1]))
        if pos not in classes:
            raise ConfigError(f"{where}: positive class {pos!r} is not in classes {classes}")
        cfg["positive"] = pos


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
