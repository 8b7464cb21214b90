"""Configuration: YAML loading with ``base:`` inheritance, defaults, validation, and name registries.

Two kinds of YAML file (see README.md, "Configuring"):

* a *competition* file (``configs/data/*.yaml``) says what the data is: where the CSVs and audio
  are, id and target columns, classes, groups, folds, metric, submission format;
* an *experiment* file (``configs/*.yaml``) says how to model it: every component is a
  ``{name, params}`` section resolved through a :class:`Registry` (the style of
  koukyo1994/kaggle-rfcx), and ``base: other.yaml`` inherits from another experiment.

Both are validated when loaded, before any work starts: unknown keys (with the closest valid
one), wrong types, impossible values, unknown registry names and component parameters are
:class:`ConfigError` naming the file (or ``--set`` override) and the key. The schemas are the
pydantic models of :mod:`lib.core.schema`; they only check, the configs stay dicts.
"""
from __future__ import annotations

import copy
import hashlib
import inspect
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .registry import Registry, did_you_mean  # noqa: F401  (Registry: imported from here by the component modules)
from .schema import Competition, Experiment, source_of, validate

ROOT = Path(__file__).resolve().parents[2]
"""The project folder (the parent of ``lib/``)."""

TASKS = ("binary", "multiclass", "multilabel")
AGGREGATIONS = ("mean", "max", "vote")
RUN_ONLY_KEYS = ("train.folds", "train.device", "train.compile", "train.distributed", "train.sync_bn")
"""Keys that change how a run goes, not what it trains: ``--set`` on them keeps the experiment's
name, and the training key leaves them out, so folds trained with different values merge (a
DDP run over several ranks puts its number of ranks and ``sync_bn`` in its key instead:
:func:`lib.training.experiment.experiment_key`)."""


def deep_merge(base: dict, override: dict) -> dict:
    """Return ``base`` updated recursively by ``override`` (dicts merge, other values replace)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# --- YAML ----------------------------------------------------------------------------------------

class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, plus YAML 1.2 floats without a dot (``1e-3``, ``5E+2``), which
    YAML 1.1 reads as strings."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def parse_yaml(text: str, where: str):
    """Parse YAML ``text`` (a file's content or a ``--set`` value) with the project's loader.

    Returns the parsed object; raises ``ConfigError`` naming ``where`` and, for a syntax error,
    the line and column.
    """
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{where}: YAML syntax error{at}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: cannot read YAML: {exc}") from None


def _load_chain(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[Path, dict]]:
    """``[(file, its own mapping without 'base')]`` along the ``base:`` chain, the root base first."""
    if path.resolve() in [s.resolve() for s in seen]:
        raise ConfigError(f"{seen[-1]}: 'base' chain loops back to {path}: " + " -> ".join(map(str, (*seen, path))))
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}" + (f" (the base of {seen[-1]})" if seen else ""))
    cfg = parse_yaml(path.read_text(), str(path))
    cfg = {} if cfg is None else cfg
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: expected a YAML mapping at the top level")
    base = cfg.pop("base", None)
    if base is None:
        return [(path, cfg)]
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'base' must be the path of another config file, got {base!r}")
    return [*_load_chain(path.parent / base, (*seen, path)), (path, cfg)]


def load_yaml(path: str | Path) -> dict:
    """Load a YAML mapping, following ``base:`` (a path relative to the file) recursively.

    Returns the merged mapping (without ``base``). Raises ``ConfigError`` naming the file when
    it is not found, not valid YAML (with the line), not a mapping, or when the ``base`` chain
    loops.
    """
    return _merge(_load_chain(Path(path)))


def _merge(chain: list[tuple[Path, dict]], cfg: dict | None = None) -> dict:
    """``cfg`` (default empty) updated by each mapping of a ``base:`` chain in turn; a new dict.
    A component section (``model``, ``optimizer``, ...) naming another component than the one it
    inherits replaces it whole: the inherited ``params`` belong to the other component."""
    cfg = cfg or {}
    for _, raw in chain:
        for key in COMPONENTS:
            new, old = raw.get(key), cfg.get(key)
            if isinstance(new, dict) and isinstance(old, dict) and new.get("name", old.get("name")) != old.get("name"):
                cfg = {**cfg, key: {}}
        cfg = deep_merge(cfg, raw)
    return copy.deepcopy(cfg)


def _parse_override(item: str) -> tuple[list[str], Any]:
    """``"a.b=3"`` -> ``(["a", "b"], 3)``; raises ``ConfigError`` for a malformed item."""
    key, sep, value = item.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise ConfigError(f"override {item!r} is not of the form key.sub=value")
    return parts, parse_yaml(value, f"--set {item}")


def apply_overrides(cfg: dict, overrides: list[str] | None) -> dict:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a config; returns a new dict.

    Example: ``["train.epochs=3", "train.folds=[0]"]``. Raises ``ConfigError`` for a malformed
    item or one that descends into a value that is not a mapping. Keys are not checked here
    (:func:`load_experiment` does).
    """
    cfg = copy.deepcopy(cfg)
    for item in overrides or []:
        (*parents, last), value = _parse_override(item)
        node = cfg
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item}: {part!r} is not a mapping")
        node[last] = value
    return cfg


def _override_sources(overrides: list[str] | None) -> list[tuple[str, dict]]:
    """Each override as a source for :func:`lib.core.schema.source_of`: ``("--set a.b=3", {"a": {"b": 3}})``."""
    return [(f"--set {item}", apply_overrides({}, [item])) for item in overrides or []]


# --- experiments ---------------------------------------------------------------------------------

EXPERIMENT_DEFAULTS = {
    "features": {"name": "log_mel", "params": {}},
    "frontend": None,
    "model": {"name": "cnn", "params": {}},
    "optimizer": {"name": "adamw", "params": {"lr": 1e-3, "weight_decay": 1e-2}},
    "scheduler": {"name": "warmup_cosine", "params": {"warmup_epochs": 1}},
    "loss": {"name": "auto", "params": {}},
    "inputs": {"audio_scalars": True, "metadata": True},
    "augment": {
        "waveform": [],
        "mixup": {"p": 0.0, "alpha": 0.4},
        "cutmix": {"p": 0.0, "alpha": 1.0},
        "spec_augment": {"p": 0.0, "freq_mask": 8, "time_mask": 8, "n_masks": 1},
    },
    "tta": {"shifts": [0.0], "hop_seconds": None},
    "train": {
        "epochs": 25, "batch_size": 64, "patience": 8, "grad_clip": 5.0, "seed": 42,
        "device": "auto", "amp": True, "folds": None, "ema": None, "swa": None, "distill": None, "class_weights": None, "sampler": None,
        "compile": False, "max_bad_steps": 5, "distributed": "folds", "sync_bn": False,
    },
}
COMPONENTS = ("features", "frontend", "model", "optimizer", "scheduler", "loss")
CODE_SUPPLIED = {"model": {"in_channels", "n_scalars", "n_outputs", "n_bins", "sample_rate"}, "optimizer": {"params"},
                 "scheduler": {"optimizer", "steps_per_epoch", "epochs"}, "loss": {"class_weight"},
                 "frontend": {"sample_rate"}, "augment.waveform": {"sample_rate"}}
"""Arguments the code passes to a component (lib.models.build_model, lib.training.loop,
lib.training.losses.build_loss, lib.training.wave_augment.WaveAugmenter): not settable under
``params``; a sample rate is always the data's."""
_PLAIN_TYPES = {"int": int, "float": float, "bool": bool, "str": str}


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> dict:
    """Load an experiment config, fill defaults, apply ``--set`` ``overrides``, and check it
    (:func:`check_experiment`); ``name`` defaults to the file's stem.

    Returns a dict with keys ``name, features, frontend, model, optimizer, scheduler, loss, inputs,
    augment, tta, train`` (``frontend`` ``None`` unless the experiment hears the waveform);
    every component section has ``params`` (a dict), and ``features`` gains ``set``: the cache
    folder name under ``output/features/`` (default: the feature's name). Raises ``ConfigError``
    naming the file (or override) and the key for anything wrong.
    """
    path = Path(path)
    chain = _load_chain(path)
    cfg = _merge(chain, EXPERIMENT_DEFAULTS)
    cfg.setdefault("name", path.stem)
    for key in COMPONENTS:
        if isinstance(cfg[key], dict):
            cfg[key]["params"] = cfg[key].get("params") or {}
    cfg = apply_overrides(cfg, overrides)
    check_experiment(cfg, str(path), [(str(p), raw) for p, raw in chain] + _override_sources(overrides))
    cfg["features"].setdefault("set", cfg["features"]["name"])
    return cfg


def check_experiment(cfg: dict, where: str, sources: list[tuple[str, dict]] | None = None) -> None:
    """Check an experiment config (defaults filled) before any work starts.

    ``where`` names the config (its file); ``sources`` (``[(file or "--set ...", its mapping)]``,
    later ones overriding earlier ones) lets each error name the file or override that set the
    key. Checks: unknown keys (with the closest valid key), types and ranges, ``train.device``
    ``cuda`` without a GPU, registry names (features, model, optimizer, scheduler, loss; ``loss``
    may be ``auto``) and each component's ``params`` against the registered callable's signature
    (unknown names unless it takes ``**kwargs``; types where the annotation is a plain
    int/float/bool/str or, without one, the default is a float; values that name an entry of
    another registry, :attr:`Registry.choices`, e.g. ``model.params.pooling``). Returns ``None``; raises
    ``ConfigError``. Imports torch (through the registries).
    """
    sources = sources or [(where, cfg)]
    validate(Experiment, cfg, sources, where)
    device = cfg["train"]["device"]
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"{source_of(sources, ['train', 'device'], where)}: train.device is {device!r}, but torch "
                              f"finds no CUDA GPU here; use auto or cpu")
    from ..features import FEATURES
    from ..models import MODELS
    from ..models.frontend import FRONTENDS
    from ..training.losses import LOSSES
    from ..training.optim import OPTIMIZERS, SCHEDULERS
    from ..training.wave_augment import WAVE_AUGMENTS

    _check_waveform_path(cfg, sources, where)
    registries = {"features": FEATURES, "model": MODELS, "optimizer": OPTIMIZERS, "scheduler": SCHEDULERS,
                  "loss": LOSSES, **({"frontend": FRONTENDS} if cfg.get("frontend") else {})}
    for i, entry in enumerate(cfg["augment"]["waveform"]):
        key = f"augment.waveform[{i}]"
        obj = WAVE_AUGMENTS.get(entry["name"], f"{where} ({key}.name)")
        _check_params([obj], entry.get("params") or {}, CODE_SUPPLIED["augment.waveform"], key, sources, where)
    for key, registry in registries.items():
        name = cfg[key]["name"]
        names = ["bce", "ce"] if key == "loss" and name == "auto" else [name]
        objs = [registry.get(n, f"{source_of(sources, [key, 'name'], where)} ({key}.name)") for n in names]
        _check_params(objs, cfg[key]["params"], CODE_SUPPLIED.get(key, set()), key, sources, where)
        for name, choices in registry.choices.items():
            if name in cfg[key]["params"]:
                choices.get(cfg[key]["params"][name], f"{source_of(sources, [key, 'params', name], where)} "
                                                        f"({key}.params.{name})")
        for obj in objs:  # a component's own check of its values (e.g. a timm architecture name)
            if hasattr(obj, "check_params"):
                try:
                    obj.check_params(cfg[key]["params"])
                except ConfigError as exc:
                    raise ConfigError(f"{source_of(sources, [key, 'params'], where)}: {exc}") from None


def _check_waveform_path(cfg: dict, sources, where: str) -> None:
    """The waveform path's sections go together: ``features.name: waveform`` if and only if a
    ``frontend`` section is given (or the model brings its own front end, ``cnn14``: then waveform
    features and no ``frontend``); ``augment.waveform`` and ``tta.hop_seconds`` only with it.
    Raises ``ConfigError`` naming the file and key."""
    from ..models import owns_frontend

    waveform = cfg["features"]["name"] == "waveform"
    origin = lambda *keys: source_of(sources, list(keys), where)  # noqa: E731
    if owns_frontend(cfg["model"], f"{origin('model', 'name')} (model.name)"):
        if not waveform or cfg.get("frontend"):
            raise ConfigError(f"{origin('model', 'name')}: model {cfg['model']['name']!r} computes its own front end "
                              f"from the waveform: use features: {{name: waveform, params: {{sample_rate: ...}}}} and no "
                              f"frontend section")
        return
    if waveform and not cfg.get("frontend"):
        raise ConfigError(f"{origin('features', 'name')}: features.name waveform caches raw audio; the model then "
                          f"needs a front end: add e.g. frontend: {{name: log_mel, params: {{n_mels: 64}}}}")
    if not waveform:
        for keys, value, what in ((("frontend",), cfg.get("frontend"), "a frontend section"),
                                  (("augment", "waveform"), cfg["augment"]["waveform"], "augment.waveform entries"),
                                  (("tta", "hop_seconds"), cfg["tta"]["hop_seconds"], "tta.hop_seconds")):
            if value:
                raise ConfigError(f"{origin(*keys)}: {what} need(s) waveform input, but features.name is "
                                  f"{cfg['features']['name']!r}; use features: {{name: waveform}}"
                                  + (" (or set audio.hop_seconds in the competition config)" if keys[0] == "tta" else ""))


def _check_params(objs: list, params: dict, supplied: set, key: str, sources, where: str) -> None:
    """Check ``params`` against the signatures of ``objs`` (see :func:`check_experiment`)."""
    settable, open_ended = {}, False
    for obj in objs:
        try:
            sig = inspect.signature(obj)
        except (TypeError, ValueError):  # a builtin without a signature: nothing to check against
            return
        for name, p in sig.parameters.items():
            open_ended |= p.kind is p.VAR_KEYWORD
            if name not in supplied and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                settable.setdefault(name, p)
    for name, value in params.items():
        origin = source_of(sources, [key, "params", name], where)
        if name not in settable:
            if open_ended:
                continue
            raise ConfigError(f"unknown parameter {key}.params.{name} in {origin} ({key} {_names(objs)} takes: "
                              f"{', '.join(settable) or 'none'}){did_you_mean(name, settable)}")
        p = settable[name]
        ann = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", "")
        expected = _PLAIN_TYPES.get(ann) or (float if type(p.default) is float else None)
        if expected and not (value is None and p.default is None) and not _is_a(value, expected):
            raise ConfigError(f"{origin}: {key}.params.{name} must be a {expected.__name__}, got {value!r}")


def _names(objs: list) -> str:
    """The names of the callables ``objs``, for messages."""
    return " / ".join(getattr(o, "__name__", str(o)) for o in objs)


def _is_a(value, expected: type) -> bool:
    """``isinstance`` where bool is no number and an int is a float."""
    if isinstance(value, bool):
        return expected is bool
    return isinstance(value, (int, float) if expected is float else expected)


def changing_overrides(overrides: list[str] | None) -> list[str]:
    """The ``--set`` items that change what an experiment trains: all but :data:`RUN_ONLY_KEYS`
    (and ``name``, which is the name chosen), as ``key=value`` with spaces around both trimmed.
    Raises nothing (malformed items are :func:`apply_overrides`'s to report)."""
    out = []
    for item in overrides or []:
        key, _, value = item.partition("=")
        if key.strip() not in (*RUN_ONLY_KEYS, "name"):
            out.append(f"{key.strip()}={value.strip()}")
    return out


def variant_name(stem: str, overrides: list[str] | None) -> str:
    """The experiment name of a run of the config named ``stem`` with ``--set`` ``overrides``.

    ``stem`` itself when no override changes what is trained (see :func:`changing_overrides`),
    so that folds trained in separate runs merge; else ``stem+<8 hex of sha1 of the sorted
    changing overrides>``, so that a variant never overwrites the base experiment. Raises nothing.
    """
    changes = sorted(changing_overrides(overrides))
    if not changes:
        return stem
    return f"{stem}+{hashlib.sha1(chr(10).join(changes).encode()).hexdigest()[:8]}"


# --- competitions --------------------------------------------------------------------------------

def _require(cfg: dict, key: str, where: str):
    if cfg.get(key) in (None, ""):
        raise ConfigError(f"{where}: missing required key {key!r}")
    return cfg[key]


def load_competition(path: str | Path, data_dir: str | Path | None = None) -> dict:
    """Load and check a competition config; resolve ``data_dir`` to an absolute path.

    ``data_dir`` (e.g. from ``--data-dir``, relative to the working directory) overrides the
    file's ``data_dir``, which is relative to the project folder (default ``input``).
    Returns the config with defaults filled in (README.md, "Configuring a competition", lists
    every key); raises ``ConfigError`` naming the file and the missing, unknown (with the closest
    valid key) or wrong key, an unknown metric or fold scheme. ``classes`` may be left out:
    stage 00 then takes the sorted labels found in the training data.
    """
    path = Path(path)
    chain = _load_chain(path)
    cfg = _merge(chain)
    where = str(path)
    validate(Competition, cfg, [(str(p), raw) for p, raw in chain], where)
    cfg.setdefault("name", path.stem)
    cfg["data_dir"] = str(Path(data_dir).resolve() if data_dir else (ROOT / cfg.get("data_dir", "input")).resolve())
    task = cfg.setdefault("task", "binary")
    if task not in TASKS:
        raise ConfigError(f"{where}: task {task!r} is not one of {TASKS}")
    train = cfg["train"]
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
    _metrics_section(cfg, path, where)
    if cfg.get("test"):
        _split_section(cfg["test"], f"{where} [test]", labelled=False)
    audio = cfg["audio"]
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
    folds = cfg["folds"] = cfg.get("folds") or {}
    folds.setdefault("n_folds", 5)
    default_scheme = ("predefined" if folds.get("column") else ("multilabel_stratified" if task == "multilabel"
                      else "stratified") + ("_group" if groups else ""))
    folds.setdefault("scheme", default_scheme)
    folds.setdefault("seed", 42)
    from ..data.folds import SCHEMES

    if folds["scheme"] not in SCHEMES:
        raise ConfigError(f"{where} [folds]: scheme {folds['scheme']!r} is not one of {', '.join(SCHEMES)}"
                          f"{did_you_mean(folds['scheme'], SCHEMES)}")
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


def _metrics_section(cfg: dict, path: Path, where: str) -> None:
    """Check ``metric``/``metrics`` (known, defined for the task, the classes or ``normal_class``
    they need), load ``custom_metrics`` (their files resolved against the config's folder), and
    fill the ``decision`` and ``ensemble`` defaults. Raises ``ConfigError`` naming the file and key."""
    from ..evaluation.blending import METHODS
    from ..evaluation.metrics import get_metric, load_custom

    for name, spec in (cfg.get("custom_metrics") or {}).items():
        file, _, func = spec["function"].rpartition(":")
        spec["function"] = f"{(path.parent / file).resolve()}:{func}" if file else spec["function"]
        spec.setdefault("higher_is_better", True)
        spec.setdefault("uses", "probs")
        load_custom(name, spec, f"{where} [custom_metrics]")  # even one that no metric uses yet
    normal = cfg.get("normal_class")
    if normal is not None and cfg.get("classes") and str(normal) not in cfg["classes"]:
        raise ConfigError(f"{where}: normal_class {normal!r} is not in classes {cfg['classes']}")
    for name in cfg["metrics"]:  # also each metric's own check (normal_class, the 2022 challenge's class names)
        get_metric(name, cfg, f"{where} (metric/metrics)")
    decision = cfg["decision"] = dict(cfg.get("decision") or {})
    for key, default in (("threshold", "auto"), ("class_bias", False), ("mask", []), ("group_aggregate", None)):
        decision.setdefault(key, default)
    if decision["class_bias"] and cfg["task"] != "multiclass":
        raise ConfigError(f"{where} [decision]: class_bias is for multiclass tasks, this one is {cfg['task']}")
    if isinstance(decision["threshold"], list) and cfg["task"] != "multilabel":
        raise ConfigError(f"{where} [decision]: a list of thresholds is for multi-label tasks (one per class)")
    if decision["group_aggregate"] and not cfg.get("groups"):
        raise ConfigError(f"{where} [decision]: group_aggregate needs a groups section (which recordings form a group)")
    known = set(cfg.get("classes") or [])
    for rule in decision["mask"]:
        rule["classes"] = [str(c) for c in rule["classes"]]
        bad = [c for c in rule["classes"] if known and c not in known]
        if bad:
            raise ConfigError(f"{where} [decision.mask]: classes {bad} of rule {rule['where']!r} are not in {sorted(known)}")
    ens = cfg["ensemble"] = dict(cfg.get("ensemble") or {})
    ens.setdefault("method", "best")
    ens.setdefault("temperature", 0.01)
    if ens["method"] not in METHODS:
        raise ConfigError(f"{where} [ensemble]: method {ens['method']!r} is not one of {', '.join(METHODS)}"
                          f"{did_you_mean(ens['method'], METHODS)}")


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


if __name__ == "__main__":  # python -m lib.core.config name CONFIG [--set KEY=VALUE ...] (for run_all.sh)
    import argparse

    p = argparse.ArgumentParser(prog="python -m lib.core.config", description="print the experiment name of a run")
    p.add_argument("command", choices=["name"])
    p.add_argument("config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    try:
        print(variant_name(load_yaml(args.config).get("name") or Path(args.config).stem, args.set))
    except ConfigError as exc:
        sys.exit(f"error: {exc}")
